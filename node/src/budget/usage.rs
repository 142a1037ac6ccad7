//! Usage rows for reports: aggregated per hour, org, team, key and model on each node (a short lock per
//! request end, cluster mode only) and sent to the replicated log about once a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tollgate_consensus::{Command, ConsensusNode, Request, UsageKey, UsageTotals};

use crate::api::Usage;
use crate::auth::Principal;
use crate::clock::ledger_ms as now_ms;
use crate::command::new_request_id;
use crate::config::Price;
use crate::metrics::cost_usd;

/// A batch of rows and the request id it is (re)sent under.
type PendingBatch = (String, Vec<(UsageKey, UsageTotals)>);

pub struct UsageAggregator {
    node_id: u64,
    consensus: ConsensusNode,
    rows: Mutex<HashMap<UsageKey, UsageTotals>>,
    /// A batch sent but not confirmed: retried with the same request id.
    pending: Mutex<Option<PendingBatch>>,
}

/// Who to attribute one request's usage to.
#[derive(Clone)]
pub struct UsageSink {
    pub aggregator: Arc<UsageAggregator>,
    pub principal: Arc<Principal>,
    pub model: Arc<str>,
}

impl UsageSink {
    pub fn record(&self, completed: bool, usage: &Usage, price: &Price) {
        let now = now_ms();
        let key = UsageKey {
            hour_ms: now - now % 3_600_000,
            org: self.principal.org.clone(),
            team: self.principal.team.clone(),
            key_id: self.principal.key_id.clone(),
            model: self.model.to_string(),
        };
        let totals = UsageTotals {
            requests: u64::from(completed),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_micro_usd: (cost_usd(usage, price) * 1e6).round() as u64,
        };
        if let Ok(mut rows) = self.aggregator.rows.lock() {
            rows.entry(key).or_default().add(&totals);
        }
    }
}

impl UsageAggregator {
    pub fn new(node_id: u64, consensus: ConsensusNode) -> Arc<Self> {
        let aggregator = Arc::new(UsageAggregator {
            node_id,
            consensus,
            rows: Mutex::new(HashMap::new()),
            pending: Mutex::new(None),
        });
        crate::background::every(
            &aggregator,
            Duration::from_secs(1),
            |aggregator| async move { aggregator.flush().await },
        );
        aggregator
    }

    pub async fn flush(&self) {
        let consensus = &self.consensus;
        let batch = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_none() {
                let rows: Vec<_> = self.rows.lock().map(|mut rows| rows.drain().collect()).unwrap_or_default();
                if !rows.is_empty() {
                    *pending = Some((new_request_id(), rows));
                }
            }
            pending.clone()
        };
        let Some((request_id, rows)) = batch else {
            return;
        };
        let request = Request {
            request_id,
            actor: format!("node-{}", self.node_id),
            at_ms: now_ms(),
            command: Command::RecordUsage { node: self.node_id, rows },
        };
        if consensus.write(request).await.is_ok() {
            if let Ok(mut pending) = self.pending.lock() {
                *pending = None;
            }
        }
    }
}
