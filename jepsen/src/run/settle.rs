//! After the faults stop: how fast the cluster converges (L1), final register reads on every region, and
//! the ledger settling until every report is in (S3).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::chat::{self, Api, ChatSpec};
use super::registers::REGISTERS;
use super::workers::{self, Shared};
use crate::checker::Convergence;
use crate::history::OpType;
use crate::http;

/// Seconds since `since`, to 0.1 s.
fn seconds(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

/// Polls every region until all name the same leader and report the same applied index (or `limit`),
/// while probing each region with a small budgeted request (org `beta`, which has room) until one succeeds.
pub async fn converge(shared: &Shared, healed: Instant, limit: Duration) -> Convergence {
    let agreement = async {
        let mut last = (None, Vec::new());
        while healed.elapsed() < limit {
            let mut leaders = Vec::new();
            let mut applied = Vec::new();
            for node in &shared.state.nodes {
                let url = format!("{}/admin/v1/cluster", node.admin_url);
                let answer = http::request("GET", &url, Some(&shared.token), None, Duration::from_secs(1)).await;
                let cluster = answer.ok().and_then(|response| response.json().ok());
                leaders.push(cluster.as_ref().and_then(|c| c["leader"].as_u64()));
                applied.push(cluster.as_ref().and_then(|c| c["applied_index"].as_u64()));
            }
            let one_leader = leaders[0].is_some() && leaders.iter().all(|leader| *leader == leaders[0]);
            let same_index = applied[0].is_some() && applied.iter().all(|index| *index == applied[0]);
            if one_leader && same_index {
                return (Some(seconds(healed)), leaders[0], applied);
            }
            last = (leaders[0], applied);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (None, last.0, last.1)
    };
    let probes = futures_probe(shared, healed, limit);
    let ((agreed_after_s, leader, applied_indexes), probes) = tokio::join!(agreement, probes);
    Convergence { agreed_after_s, leader, applied_indexes, probes }
}

async fn futures_probe(shared: &Shared, healed: Instant, limit: Duration) -> Vec<(u64, Option<f64>, Option<String>)> {
    let mut tasks = tokio::task::JoinSet::new();
    let Some(beta) = shared.orgs.iter().find(|org| org.name == "beta").cloned() else { return Vec::new() };
    for node in &shared.state.nodes {
        let region = node.id;
        let shared = shared.clone();
        let beta = beta.clone();
        tasks.spawn(async move {
            let process = format!("probe-{region}");
            let spec = ChatSpec {
                org: beta.name.clone(),
                region,
                model: beta.models()[0].clone(),
                api: Api::Openai,
                stream: false,
                max_tokens: Some(8),
                hangup_after: None,
                prompt_bytes: 16,
            };
            let mut last_error = None;
            while healed.elapsed() < limit {
                shared.history.record(&process, OpType::Invoke, "chat", json!(spec));
                let result = chat::perform(&shared.api_addr(region), &beta.key, &spec, Duration::from_secs(5)).await;
                let kind = result.kind;
                shared.history.record(&process, kind, "chat", result.value.clone());
                if kind == OpType::Ok {
                    return (region, Some(seconds(healed)), last_error);
                }
                last_error = Some(result.value.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (region, None, last_error)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(probe) = joined {
            out.push(probe);
        }
    }
    out.sort_by_key(|probe| probe.0);
    out
}

/// Every register read once on every region (recorded; part of the linearizability check).
pub async fn final_reads(shared: &Shared) {
    for node in &shared.state.nodes {
        for key in 0..REGISTERS {
            workers::read_register(shared, &format!("final-{}", node.id), node.id, key).await;
        }
    }
}

/// After a period rollover: the old period's bill of every budgeted org (`GET /admin/v1/budgets?org=…&
/// period_start=…`, the old period's start in the nodes' clock), recorded as `budget-old-period` (S3 reads
/// it: the old period must bill at least what was served before the boundary). Tried on each region in turn.
pub async fn old_period_bills(shared: &Shared, period_start: u64) {
    let budgeted = shared.orgs.iter().filter(|org| org.limit.is_some());
    for org in budgeted {
        let process = format!("settle-old-{}", org.name);
        shared.history.record(&process, OpType::Invoke, "budget-old-period", json!({"org": org.name}));
        let mut outcome = (OpType::Fail, json!({"org": org.name, "error": "no region answered"}));
        for node in &shared.state.nodes {
            let url = format!("{}/admin/v1/budgets?org={}&period_start={period_start}", node.admin_url, org.name);
            let answer = http::request("GET", &url, Some(&shared.token), None, workers::ADMIN_TIMEOUT).await;
            let Some(budget) = answer.ok().filter(|response| response.status == 200).and_then(|r| r.json().ok()) else {
                continue;
            };
            outcome = (
                OpType::Ok,
                json!({"org": org.name, "region": node.id, "period_start": budget["period_start"],
                "limit": budget["limit"], "used": budget["used"], "held": budget["held"]}),
            );
            break;
        }
        shared.history.record(&process, outcome.0, "budget-old-period", outcome.1);
    }
}

/// Waits (up to `limit`) until the ledger bills every budgeted org at least what its mock served (after a
/// period rollover: what it served since the boundary, less what the old period's requests in flight then
/// may account for, `since_boundary[org]` = served then + that slack), then samples every org on every
/// region once more. Returns org → settled `used` of the current period (None: no reading).
pub async fn settle_ledger(
    shared: &Shared,
    limit: Duration,
    since_boundary: &BTreeMap<String, u64>,
) -> BTreeMap<String, Option<u64>> {
    let started = Instant::now();
    let budgeted: Vec<String> =
        shared.orgs.iter().filter(|org| org.limit.is_some()).map(|org| org.name.clone()).collect();
    let mut billed: BTreeMap<String, Option<u64>> = budgeted.iter().map(|org| (org.clone(), None)).collect();
    let mut turn = 0u64;
    loop {
        let mut settled = true;
        for org in &budgeted {
            let region = turn % shared.state.nodes.len() as u64 + 1;
            turn += 1;
            let sample = workers::sample_budget(shared, "settle", org, region).await;
            let used = sample.as_ref().and_then(|value| value["used"].as_u64());
            if used.is_some() {
                billed.insert(org.clone(), used);
            }
            let served = shared.served(org).unwrap_or(0).saturating_sub(since_boundary.get(org).copied().unwrap_or(0));
            if used.is_none_or(|used| used < served) {
                settled = false;
            }
        }
        if settled || started.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in &shared.state.nodes {
        for org in &budgeted {
            workers::sample_budget(shared, "settle", org, node.id).await;
        }
    }
    billed
}
