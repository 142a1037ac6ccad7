//! Faults above the network, applied by `faults.rs`: a node restarted with a skewed clock, a budget
//! lowered under load, upstream faults scripted into the mocks, and config clients retrying slow admin
//! writes with the same `Idempotency-Key`. Each records what it did in the history (process `nemesis`).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tollgate_tests::Script;

use super::setup::normal_script;
use super::workers::{Shared, ADMIN_TIMEOUT};
use crate::history::OpType;
use crate::http;
use crate::regions::{self, procs, state::RegionsState, NODE_MARKER};

/// One `day` budget period in milliseconds: a node skewed by this much asks for the other day's grants.
pub const DAY_MS: i64 = 86_400_000;

/// The clock skew a `clock-skew` fault applies: ± one `day` period (the node's period differs from the
/// leader's), or ± 2-9 s (inside or outside the ledger's 5 s allowance; harmless to periods unless a
/// boundary is near).
pub fn skew_for(choice: u64) -> i64 {
    let seconds = 2_000 + (choice / 4 % 7_000) as i64;
    match choice % 4 {
        0 => DAY_MS,
        1 => -DAY_MS,
        2 => seconds,
        _ => -seconds,
    }
}

fn record(shared: &Shared, f: &str, value: serde_json::Value) {
    shared.history.record("nemesis", OpType::Info, f, value);
}

/// Stops `node` (SIGTERM, SIGKILL after 3 s) and starts it again on its data directory, its clock off by
/// `skew_ms` from the cluster's when given (`TOLLGATE_CLOCK_SKEW_MS` = the cluster's skew + `skew_ms`).
/// Returns the new pid.
pub async fn restart_with_skew(state: &mut RegionsState, node: u64, skew_ms: Option<i64>) -> anyhow::Result<u32> {
    let index = state.nodes.iter().position(|record| record.id == node).with_context(|| format!("no node {node}"))?;
    if let Some(pid) = state.nodes[index].pid {
        tokio::task::spawn_blocking(move || procs::stop(pid, NODE_MARKER, Duration::from_secs(3)))
            .await
            .context("stopping the node")?;
    }
    // On top of the cluster's own shift (period-rollover runs), if any.
    let skew_text = skew_ms.map(|skew| (skew + state.clock_skew_ms).to_string());
    let env: Vec<(&str, &str)> =
        skew_text.as_deref().map(|text| vec![("TOLLGATE_CLOCK_SKEW_MS", text)]).unwrap_or_default();
    regions::spawn_node_with_env(state, index, &env)
}

fn budget_body(org: &str, limit: u64) -> String {
    json!({"scope": {"org": org, "team": null, "key_id": null}, "limit_tokens": limit, "period": "day",
        "tokens_per_minute": null, "requests_per_minute": null})
    .to_string()
}

/// Lowers `org`'s limit to what it has used plus 0-20 % of what was left. Records `budget-lower` (the
/// intent, with the ledger read before) and, once a PUT answered 200, `budget-lowered` with the mock's
/// count at that moment (S1 bounds what may be served after it); `budget-lower-indeterminate` when no
/// PUT answered within 10 s (the limit may or may not bind later).
pub async fn lower_budget(shared: &Shared, org: &str, choice: u64) -> anyhow::Result<String> {
    let regions = shared.state.nodes.len() as u64;
    let region = choice % regions + 1;
    let url = format!("{}/admin/v1/budgets?org={org}", shared.admin_url(region));
    let answer = http::request("GET", &url, Some(&shared.token), None, ADMIN_TIMEOUT).await?;
    if answer.status != 200 {
        bail!("GET {url} answered {}: {}", answer.status, answer.body);
    }
    let budget = answer.json()?;
    let (Some(limit), Some(used)) = (budget["limit"].as_u64(), budget["used"].as_u64()) else {
        bail!("GET {url}: no limit/used in {budget}");
    };
    let held = budget["held"].as_u64().unwrap_or(0);
    let fraction = [0.0, 0.05, 0.1, 0.2][(choice / 8 % 4) as usize];
    let new_limit = used + (limit.saturating_sub(used) as f64 * fraction) as u64;
    if new_limit >= limit {
        return Ok(format!("{org} already used {used} of {limit}: nothing to lower"));
    }
    record(
        shared,
        "budget-lower",
        json!({"org": org, "from": limit, "to": new_limit, "used_before": used, "held_before": held}),
    );
    let body = budget_body(org, new_limit);
    let idempotency = format!("jepsen-budget-lower-{choice}");
    let headers = [("Idempotency-Key", idempotency.as_str())];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0u64;
    let mut last_error = String::new();
    while Instant::now() < deadline {
        let region = (region - 1 + attempt) % regions + 1;
        attempt += 1;
        let url = format!("{}/admin/v1/budgets", shared.admin_url(region));
        match http::request_with_headers("PUT", &url, Some(&shared.token), Some(&body), &headers, ADMIN_TIMEOUT).await {
            Ok(response) if response.status == 200 => {
                // Read the ground truth first, then record: a request admitted in between counts as in flight.
                let served = shared.served(org);
                let pending = response.json().ok().map(|value| value["pending_on"].clone());
                record(
                    shared,
                    "budget-lowered",
                    json!({"org": org, "limit": new_limit, "from": limit, "served_at_answer": served,
                        "held_before": held, "pending_on": pending, "region": region}),
                );
                return Ok(format!(
                    "{org} limit {limit} → {new_limit} (used {used}, held {held}) on region {region}, served then {}",
                    served.unwrap_or(0)
                ));
            }
            Ok(response) => last_error = format!("{} {}", response.status, response.body),
            Err(err) => last_error = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    record(shared, "budget-lower-indeterminate", json!({"org": org, "limit": new_limit, "last_error": last_error}));
    Ok(format!("{org} limit {limit} → {new_limit}: no PUT answered 200 within 10 s ({last_error})"))
}

/// The fault scripts of `upstream-faults`, by variant: abort the stream, stall it, omit usage, answer late.
fn fault_script(variant: u64, rng: &mut StdRng, token_delay: Duration) -> (Script, String) {
    let mut script = normal_script(token_delay);
    let events = rng.random_range(2..30);
    let name = match variant {
        0 => {
            script.abort_after_events = Some(events);
            format!("abort after {events} events")
        }
        1 => {
            script.stall_after_events = Some(events);
            format!("stall after {events} events")
        }
        2 => {
            script.omit_usage = true;
            "omit usage".to_owned()
        }
        _ => {
            let delay = Duration::from_millis(rng.random_range(500..3000));
            script.delay_headers = Some(delay);
            format!("headers after {} ms", delay.as_millis())
        }
    };
    (script, name)
}

/// Until `end`: every 0.7-2 s every mock switches to another fault script (drawn from `choice`); then
/// all behave again.
pub async fn upstream_faults(shared: &Shared, choice: u64, end: Instant) -> String {
    let mut rng = StdRng::seed_from_u64(choice);
    let mut applied = Vec::new();
    while Instant::now() < end {
        let variant = rng.random_range(0..4);
        let (script, name) = fault_script(variant, &mut rng, shared.token_delay);
        for mock in shared.mocks.iter() {
            mock.set_default(script.clone());
        }
        record(shared, "upstream-script", json!({"script": name}));
        applied.push(name);
        let pause = Duration::from_millis(rng.random_range(700..2000));
        tokio::time::sleep(pause.min(end.saturating_duration_since(Instant::now()))).await;
    }
    restore_upstreams(shared);
    format!("mock upstreams: {}", applied.join(", "))
}

/// Every mock back to its normal behaviour.
pub fn restore_upstreams(shared: &Shared) {
    for mock in shared.mocks.iter() {
        mock.set_default(normal_script(shared.token_delay));
    }
}

/// Until `end`: config writes start with a 40-120 ms timeout (a forwarded write over the WAN takes
/// ~110-160 ms) and are retried with the same `Idempotency-Key` on the other regions.
pub async fn idempotent_retry(shared: &Shared, choice: u64, end: Instant) -> String {
    let first_ms = 40 + choice % 81;
    shared.retry.first_timeout_ms.store(first_ms, Ordering::SeqCst);
    shared.retry.on.store(true, Ordering::SeqCst);
    tokio::time::sleep_until(end.into()).await;
    shared.retry.on.store(false, Ordering::SeqCst);
    format!("config writes retried with the same Idempotency-Key, first timeout {first_ms} ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skews_cover_both_directions_and_sizes() {
        let skews: Vec<i64> = (0..8).map(skew_for).collect();
        assert!(skews.contains(&DAY_MS) && skews.contains(&-DAY_MS));
        assert!(skews.iter().any(|skew| (2_000..9_000).contains(skew)));
        assert!(skews.iter().any(|skew| (-9_000..=-2_000).contains(skew)));
    }

    #[test]
    fn fault_scripts_fault() {
        let mut rng = StdRng::seed_from_u64(3);
        for variant in 0..4 {
            let (script, name) = fault_script(variant, &mut rng, Duration::from_millis(5));
            let faulty = script.abort_after_events.is_some()
                || script.stall_after_events.is_some()
                || script.omit_usage
                || script.delay_headers.is_some();
            assert!(faulty && !name.is_empty(), "{name}");
        }
    }
}
