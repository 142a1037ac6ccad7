//! `kill-leader-granting`: `kill -9` the leader while allowance grants are in flight to it.
//!
//! Grants are requested on demand: a node whose local allowance cannot cover a request's reservation asks
//! the ledger for a chunk (a Raft write: forwarded to the leader, replicated to a follower and committed —
//! at least one WAN round trip, ~50 ms here, and two from a follower's region). So the fault makes the
//! grants happen: a burst of concurrent streaming requests on every region at once, each reserving ~364
//! tokens (300 prompt bytes and 64 of output): [`ACME_PER_REGION`] for `acme` (the budget under test:
//! near or past exhaustion, its grants are small and contended) and, for `beta` (room to spare: every
//! grant is real), enough to outrun what that region's node holds by the ledger read just before
//! ([`beta_requests`]: granted − used, so releases make it an over-estimate), so that every node must
//! ask for more while the burst runs. The leader is killed 15–60 ms
//! ([`kill_delay_ms`], seeded) after the burst is sent: after the requests reached the nodes and before a
//! grant can have committed and come back. Restarted on its data directory after the window.
//!
//! Evidence in the history (`grant-kill`): how many burst requests were answered before the kill (those a
//! node could serve from what it held; the rest were waiting on a grant), and the ledger's grants per node
//! for both orgs read before the burst and after the restart. The burst requests are ordinary `chat`
//! operations (process `burst-R-I`), so S1, S3 and valid-requests judge them like any other.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::chat::{self, Api, ChatSpec};
use super::faults::{leader, Nemesis};
use super::nemesis::Planned;
use super::workers::{Shared, ADMIN_TIMEOUT, CHAT_TIMEOUT};
use crate::history::OpType;
use crate::http;

/// Burst requests for `acme` per region.
pub const ACME_PER_REGION: u64 = 6;
/// Bounds of the burst requests for `beta` per region.
pub const BETA_PER_REGION: (u64, u64) = (6, 90);
/// Tokens one burst request reserves: prompt bytes (the input bound) plus `max_tokens`.
const RESERVATION: u64 = 300 + 64;
const BURST_ORGS: [&str; 2] = ["beta", "acme"];

/// Requests for `beta` on `region` to outrun what its node holds: (granted − used) / reservation + 6,
/// within [`BETA_PER_REGION`]; the minimum when the ledger read failed.
pub fn beta_requests(ledger: &Value, region: u64) -> u64 {
    let key = region.to_string();
    let granted = ledger["beta"]["granted_by_node"][&key].as_u64().unwrap_or(0);
    let used = ledger["beta"]["used_by_node"][&key].as_u64().unwrap_or(0);
    let held = granted.saturating_sub(used);
    (held / RESERVATION + 6).clamp(BETA_PER_REGION.0, BETA_PER_REGION.1)
}

/// Milliseconds between sending the burst and the kill: 15-60, from the fault's choice.
pub fn kill_delay_ms(choice: u64) -> u64 {
    15 + choice % 46
}

/// A burst request of `org` on `region`.
pub fn burst_spec(region: u64, org: &str) -> ChatSpec {
    ChatSpec {
        org: org.to_owned(),
        region,
        model: format!("{org}-gpt"),
        api: Api::Openai,
        stream: true,
        max_tokens: Some(64),
        hangup_after: None,
        prompt_bytes: 300,
    }
}

/// One burst request, recorded as a chat op; returns when it was answered (ms since the run started).
async fn burst_request(shared: Shared, region: u64, index: u64, org: &'static str) -> f64 {
    let spec = burst_spec(region, org);
    let process = format!("burst-{region}-{index}");
    let key = shared.orgs.iter().find(|org| org.name == spec.org).map(|org| org.key.clone()).unwrap_or_default();
    shared.history.record(&process, OpType::Invoke, "chat", json!(spec));
    let mut result = chat::perform(&shared.api_addr(region), &key, &spec, CHAT_TIMEOUT).await;
    if result.kind == OpType::Fail {
        result.value["served_then"] = json!(shared.served(&spec.org));
    }
    let answered_ms = shared.history.elapsed_ms();
    shared.history.record(&process, result.kind, "chat", result.value);
    answered_ms
}

/// The ledger of both burst orgs (`GET /admin/v1/budgets`, a linearizable read) on `region`; `null` for an
/// org whose read failed.
async fn ledger(shared: &Shared, region: u64) -> Value {
    let mut out = serde_json::Map::new();
    for org in BURST_ORGS {
        let url = format!("{}/admin/v1/budgets?org={org}", shared.admin_url(region));
        let answer = http::request("GET", &url, Some(&shared.token), None, ADMIN_TIMEOUT).await;
        let granted = answer
            .ok()
            .filter(|response| response.status == 200)
            .and_then(|response| response.json().ok())
            .unwrap_or(Value::Null);
        out.insert(org.to_owned(), granted);
    }
    Value::Object(out)
}

/// Total granted per org between two [`ledger`] reads (`None` when either read failed).
pub fn granted_delta(before: &Value, after: &Value) -> BTreeMap<String, Option<i64>> {
    let total = |value: &Value| -> Option<i64> {
        let nodes = value["granted_by_node"].as_object()?;
        Some(nodes.values().filter_map(Value::as_u64).map(|n| n as i64).sum())
    };
    BURST_ORGS
        .iter()
        .map(|org| {
            let delta = total(&before[*org]).zip(total(&after[*org])).map(|(before, after)| after - before);
            ((*org).to_owned(), delta)
        })
        .collect()
}

impl Nemesis {
    /// The fault; returns its target description (errors go to `errors`).
    pub(super) async fn kill_leader_granting(
        &mut self,
        planned: &Planned,
        end: Instant,
        errors: &mut Vec<String>,
    ) -> String {
        let Some(node) = leader(&self.state, &self.token).await else {
            errors.push("no leader to kill (no majority named one)".into());
            tokio::time::sleep_until(end.into()).await;
            return "no leader: nothing killed".into();
        };
        let before = ledger(&self.shared, node).await;
        let delay = kill_delay_ms(planned.choice);
        let mut burst = tokio::task::JoinSet::new();
        let regions: Vec<u64> = self.state.nodes.iter().map(|record| record.id).collect();
        let sizes: Vec<(u64, u64)> = regions.iter().map(|region| (*region, beta_requests(&before, *region))).collect();
        let sent_ms = self.history.elapsed_ms();
        for (region, beta) in &sizes {
            for index in 0..ACME_PER_REGION + beta {
                let org = if index < ACME_PER_REGION { "acme" } else { "beta" };
                burst.spawn(burst_request(self.shared.clone(), *region, index, org));
            }
        }
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let killed = self.kill(node).await;
        let killed_ms = self.history.elapsed_ms();
        self.record("start", json!({"kind": planned.kind, "kill": node, "burst_sent_ms": sent_ms, "delay_ms": delay}));
        super::faults::note(errors, killed);
        tokio::time::sleep_until(end.into()).await;
        let restarted = self.restart(node);
        self.record("restart", json!({"node": node, "pid": restarted.as_ref().ok()}));
        super::faults::note(errors, restarted.map(|_| ()));
        let mut answered = Vec::new();
        let drained = tokio::time::timeout(CHAT_TIMEOUT + Duration::from_secs(2), async {
            while let Some(joined) = burst.join_next().await {
                answered.extend(joined.ok());
            }
        });
        if drained.await.is_err() {
            burst.abort_all();
        }
        let before_kill = answered.iter().filter(|at| **at < killed_ms).count();
        let survivor = regions.iter().copied().find(|region| *region != node).unwrap_or(node);
        let after = ledger(&self.shared, survivor).await;
        let delta = granted_delta(&before, &after);
        let total: u64 = sizes.iter().map(|(_, beta)| ACME_PER_REGION + beta).sum();
        self.record(
            "grant-kill",
            json!({"node": node, "burst": total, "answered_before_kill": before_kill,
                "kill_after_burst_ms": (killed_ms - sent_ms).round(), "beta_requests_per_region": sizes,
                "ledger_before": before, "ledger_after": after, "granted_during": delta}),
        );
        format!(
            "kill -9 leader {node} {delay} ms after a burst of {total} budgeted streams on every region \
             ({ACME_PER_REGION} acme and beta {sizes:?} per region; {before_kill} answered before the kill); \
             granted meanwhile: {delta:?}; restarted after {:.1} s",
            planned.duration_s
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_beta_burst_outruns_what_the_node_holds() {
        let spec = burst_spec(2, "beta");
        assert!(spec.stream && spec.max_tokens == Some(64) && spec.hangup_after.is_none());
        assert_eq!(spec.prompt_bytes as u64 + 64, RESERVATION);
        let ledger = json!({"beta": {"granted_by_node": {"1": 20_000, "2": 1_000}, "used_by_node": {"1": 9_080}}});
        // Node 1 holds at most 10,920: 30 reservations, plus 6.
        assert_eq!(beta_requests(&ledger, 1), 36);
        assert!(beta_requests(&ledger, 1) * RESERVATION > 10_920);
        assert_eq!(beta_requests(&ledger, 2), 8);
        assert_eq!(beta_requests(&ledger, 3), 6, "holds nothing: the minimum");
        assert_eq!(beta_requests(&json!({"beta": null}), 1), 6, "a failed read: the minimum");
        let huge = json!({"beta": {"granted_by_node": {"1": 10_000_000}}});
        assert_eq!(beta_requests(&huge, 1), 90, "capped");
    }

    #[test]
    fn the_kill_lands_inside_one_wan_round_trip() {
        let delays: Vec<u64> = (0..500).map(kill_delay_ms).collect();
        assert!(delays.iter().all(|delay| (15..=60).contains(delay)));
        assert!(delays.contains(&15) && delays.contains(&60));
    }

    #[test]
    fn grants_during_the_fault_are_the_difference_of_the_totals() {
        let before =
            json!({"beta": {"granted_by_node": {"1": 1000, "2": 500}}, "acme": {"granted_by_node": {"1": 300}}});
        let after = json!({"beta": {"granted_by_node": {"1": 1000, "2": 1500, "3": 700}}, "acme": null});
        let delta = granted_delta(&before, &after);
        assert_eq!(delta["beta"], Some(1700));
        assert_eq!(delta["acme"], None, "a failed read is unknown, not zero");
    }
}
