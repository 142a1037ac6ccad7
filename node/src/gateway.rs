//! The node's shared state: the current control snapshot (swapped atomically on config change), metrics,
//! limits and the shutdown flag.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderValue;

use tollgate_consensus::{ConsensusNode, ControlState};

use crate::budget::{BudgetConfig, BudgetManager, UsageAggregator};
use crate::config::{Config, LimitsConfig};

use crate::gossip::Gossip;
use crate::health::{BreakerConfig, EndpointRegistry};
use crate::metrics::Metrics;
use crate::providers::UpstreamTls;
use crate::routing::ControlSnapshot;

fn endpoint_registry(config: &Config) -> Arc<EndpointRegistry> {
    Arc::new(EndpointRegistry::new(
        BreakerConfig {
            failures: config.node.health.breaker_failures,
            cooldown: std::time::Duration::from_millis(config.node.health.breaker_cooldown_ms),
        },
        std::time::Duration::from_millis(config.node.health.gpu_scrape_interval_ms),
    ))
}

/// The roots trusted for upstream HTTPS: public ones plus `node.upstream_ca_file`.
fn upstream_tls(config: &Config) -> anyhow::Result<UpstreamTls> {
    let tls = UpstreamTls::with_ca_file(config.node.upstream_ca_file.as_deref())?;
    if tls.extra_roots() > 0 {
        tracing::info!(certificates = tls.extra_roots(), "upstream HTTPS also trusts node.upstream_ca_file");
    }
    Ok(tls)
}

pub struct Gateway {
    snapshot: ArcSwap<ControlSnapshot>,
    /// The Raft member, in cluster mode.
    pub consensus: Option<ConsensusNode>,
    /// Budget admission against the Raft ledger, in cluster mode.
    pub budget: Option<Arc<BudgetManager>>,
    /// Usage rows for reports, in cluster mode.
    pub usage: Option<Arc<UsageAggregator>>,
    pub admin_token: Option<String>,
    /// False until the first control state is loaded (cluster mode); `/readyz` reports it.
    loaded: AtomicBool,
    /// Clustered: false until one linearizable read barrier passed since start, so a restarted node never
    /// answers from a snapshot older than the cluster (keys created or revoked since).
    caught_up: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Per-endpoint health and load (this node's observations and the peers' merged view).
    pub endpoints: Arc<EndpointRegistry>,
    /// The roots every upstream HTTPS client trusts (providers and metrics scrapes).
    pub upstream_tls: UpstreamTls,
    /// Request rate, error rate and TTFT samples for the status page.
    pub status_history: crate::status_history::StatusHistory,
    /// Gossip, when enabled; set once at startup.
    pub gossip: std::sync::OnceLock<Gossip>,
    /// Why gossip is not running although it is on by default (it could not bind): shown in status.
    pub gossip_error: std::sync::OnceLock<String>,
    pub limits: LimitsConfig,
    pub node_id: u64,
    pub node_header: HeaderValue,
    shutting_down: AtomicBool,
    /// The control state the snapshot was last built from, to tell what an applied batch changed.
    loaded_state: Mutex<Option<Arc<ControlState>>>,
}

/// What an applied batch changed, as far as the data plane is concerned.
#[derive(Debug, PartialEq, Eq)]
enum StateChange {
    /// Only ledger accounts, usage rows, audit or de-duplication history: the data plane reads none of them.
    Nothing,
    /// Budget specs changed; routes and keys did not.
    Budgets,
    /// Providers, models, keys or the bootstrap flag changed: rebuild the routes.
    Config,
}

fn classify(previous: &ControlState, next: &ControlState) -> StateChange {
    // The state's maps are persistent: an unchanged map shares its root with the previous state, so these
    // checks are O(1) and most applied batches (grants, reports, usage) skip the rebuild entirely.
    let config_same = previous.config.providers.ptr_eq(&next.config.providers)
        && previous.config.models.ptr_eq(&next.config.models)
        && previous.config.keys.ptr_eq(&next.config.keys)
        && previous.config.bootstrapped == next.config.bootstrapped;
    if !config_same {
        StateChange::Config
    } else if !previous.config.ledger.budgets.ptr_eq(&next.config.ledger.budgets) {
        StateChange::Budgets
    } else {
        StateChange::Nothing
    }
}

impl Gateway {
    pub fn new(config: &Config) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(Metrics::default());
        let endpoints = endpoint_registry(config);
        let tls = upstream_tls(config)?;
        let snapshot = ControlSnapshot::build(config, &tls, &metrics, &endpoints)?;
        Self::assemble(config, metrics, endpoints, tls, snapshot, None)
    }

    /// A cluster-mode gateway: routes and keys come from the replicated state, not the file.
    pub fn clustered(config: &Config, consensus: ConsensusNode) -> anyhow::Result<Gateway> {
        let metrics = Arc::new(Metrics::default());
        let endpoints = endpoint_registry(config);
        let tls = upstream_tls(config)?;
        let snapshot =
            ControlSnapshot::from_state(&ControlState::default(), &config.limits, &tls, &metrics, &endpoints)?;
        Self::assemble(config, metrics, endpoints, tls, snapshot, Some(consensus))
    }

    /// Standalone (no consensus: loaded from the file at once) or clustered (budgets and usage reporting
    /// through Raft; loaded when the replicated state arrives).
    fn assemble(
        config: &Config,
        metrics: Arc<Metrics>,
        endpoints: Arc<EndpointRegistry>,
        upstream_tls: UpstreamTls,
        snapshot: ControlSnapshot,
        consensus: Option<ConsensusNode>,
    ) -> anyhow::Result<Gateway> {
        Ok(Gateway {
            endpoints,
            upstream_tls,
            status_history: Default::default(),
            gossip: std::sync::OnceLock::new(),
            gossip_error: std::sync::OnceLock::new(),
            snapshot: ArcSwap::from_pointee(snapshot),
            budget: consensus
                .as_ref()
                .map(|consensus| BudgetManager::new(config.node.id, consensus.clone(), BudgetConfig::default())),
            usage: consensus.as_ref().map(|consensus| UsageAggregator::new(config.node.id, consensus.clone())),
            loaded: AtomicBool::new(consensus.is_none()),
            caught_up: AtomicBool::new(consensus.is_none()),
            consensus,
            admin_token: config.admin_token()?,
            metrics,
            limits: config.limits.clone(),
            node_id: config.node.id,
            node_header: HeaderValue::from(config.node.id),
            shutting_down: AtomicBool::new(false),
            loaded_state: Mutex::new(None),
        })
    }

    /// Swaps in the data plane's view of a newly applied control state, rebuilding only what changed.
    pub fn reload_from_state(&self, state: &Arc<ControlState>) -> anyhow::Result<()> {
        let mut loaded = self.loaded_state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let change = loaded.as_deref().map_or(StateChange::Config, |previous| classify(previous, state));
        match change {
            StateChange::Nothing => {}
            StateChange::Budgets => {
                let mut snapshot = ControlSnapshot::clone(&self.snapshot.load());
                snapshot.budgets = ControlSnapshot::budgets_from(state);
                if let Some(budget) = &self.budget {
                    budget.budgets_changed(&snapshot.budgets);
                }
                self.snapshot.store(Arc::new(snapshot));
            }
            StateChange::Config => {
                let snapshot = ControlSnapshot::from_state(
                    state,
                    &self.limits,
                    &self.upstream_tls,
                    &self.metrics,
                    &self.endpoints,
                )?;
                self.snapshot.store(Arc::new(snapshot));
            }
        }
        *loaded = Some(state.clone());
        if state.config.bootstrapped {
            self.loaded.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// The control state is loaded and (clustered) caught up with the cluster: requests may be served.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed) && self.caught_up.load(Ordering::Relaxed)
    }

    /// A linearizable read barrier passed since start (see `control::spawn_catch_up`).
    pub fn mark_caught_up(&self) {
        self.caught_up.store(true, Ordering::SeqCst);
    }

    /// The control state as of now; requests hold it for their whole life, so a swap never tears one.
    pub fn snapshot(&self) -> Arc<ControlSnapshot> {
        self.snapshot.load_full()
    }

    /// Replaces routes, providers and keys without a restart (the Raft apply path calls this).
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        config.validate()?;
        let snapshot = ControlSnapshot::build(config, &self.upstream_tls, &self.metrics, &self.endpoints)?;
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use tollgate_consensus::resources::OrgConfig;
    use tollgate_consensus::{BudgetSpec, Command, Period, Request, Scope};

    use super::*;

    fn apply(state: &ControlState, index: u64, command: Command) -> ControlState {
        let mut next = state.clone();
        let request = Request { request_id: format!("r{index}"), actor: "test".into(), at_ms: 0, command };
        let response = next.apply(index, &request);
        assert!(!matches!(response, tollgate_consensus::Response::Rejected { .. }), "{response:?}");
        next
    }

    #[test]
    fn ledger_traffic_does_not_rebuild_the_data_plane() {
        let text = "[[providers]]\nname = \"p\"\nkind = \"mock\"\n[[models]]\nname = \"m\"\ntargets = [ { provider = \"p\" } ]\n";
        let config = Config::parse(text).unwrap_or_else(|e| panic!("{e:#}"));
        let mut state = ControlState::default();
        let mut index = 0;
        for command in crate::control::file_commands(&config) {
            index += 1;
            state = apply(&state, index, command);
        }
        state = apply(&state, 100, Command::PutOrg { org: OrgConfig::named("acme") });
        let scope = Scope { org: "acme".into(), team: None, key_id: None };
        let budget = BudgetSpec {
            scope,
            limit_tokens: Some(1000),
            limit_cost: None,
            period: Period::Total,
            tokens_per_minute: None,
            requests_per_minute: None,
            epoch: 0,
        };
        let budgeted = apply(&state, 101, Command::SetBudget { budget });
        assert_eq!(classify(&state, &budgeted), StateChange::Budgets);
        let granted = apply(
            &budgeted,
            102,
            Command::Grant { scope_id: "org:acme".into(), period_start: 0, node: 1, amount: 10, min_amount: 1 },
        );
        assert_eq!(classify(&budgeted, &granted), StateChange::Nothing);
        let reported =
            apply(&granted, 103, Command::Report { scope_id: "org:acme".into(), period_start: 0, node: 1, delta: 5 });
        assert_eq!(classify(&granted, &reported), StateChange::Nothing);
        let provider = granted.config.providers["p"].clone();
        let changed = apply(&reported, 104, Command::PutProvider { provider });
        assert_eq!(classify(&reported, &changed), StateChange::Config);
    }
}
