//! The checkers of a run, each named after the invariant it checks (docs/ARCHITECTURE.md, "Budget invariants"):
//! - **S1** tokens the mock upstream served to a budgeted org ≤ its limit (the mock is the ground truth);
//! - **S2** the ledger as sampled during the run: `used + held ≤ limit`, `used` (total and per node)
//!   never decreases within a period;
//! - **S3** after heal and settling, billed (`used` in the ledger) ≥ served (the mock);
//! - **L1** after faults stop: one leader all agree on, applied indexes converge, a budgeted request with
//!   room succeeds on every region within 10 s (measured live by the run, judged here);
//! - **linearizability** of config writes and reads, register by register ([`linear`]);
//! - **valid-requests**: the clients' keys are valid and their requests well formed, so no answer may be a
//!   4xx other than a budget refusal (a 401 for a valid key from a node that has not caught up, say).

pub mod budget;
pub mod linear;
pub mod types;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use crate::history::{Event, Op, OpType};
pub use types::{CheckResult, Served, Verdict};

/// Fails when any chat answer was a 4xx other than a budget refusal (see `report::anomalies`).
pub fn valid_requests(anomalies: &Value) -> CheckResult {
    let counts = anomalies["counts"].as_object().cloned().unwrap_or_default();
    if counts.is_empty() {
        return CheckResult::new(
            "valid-requests",
            Verdict::Pass,
            "no valid request refused as invalid".into(),
            Vec::new(),
        );
    }
    let summary = counts.iter().map(|(answer, n)| format!("{n} × {answer}")).collect::<Vec<_>>().join(", ");
    let evidence = anomalies["examples"].as_array().cloned().unwrap_or_default();
    CheckResult::new("valid-requests", Verdict::Fail, format!("valid requests refused: {summary}"), evidence)
}

/// One ledger sample (`GET /admin/v1/budgets?org=`), recorded as an `ok` event of the `sampler`.
#[derive(Debug, Clone)]
struct Sample {
    event: Event,
    org: String,
    period_start: u64,
    limit: u64,
    used: u64,
    held: u64,
    used_by_node: BTreeMap<String, u64>,
    /// The mock's count for the org when the sample was taken.
    served: Option<u64>,
}

fn samples(events: &[Event]) -> Vec<Sample> {
    events
        .iter()
        .filter(|event| event.f == "budget" && event.kind == OpType::Ok)
        .filter_map(|event| {
            let value = &event.value;
            Some(Sample {
                event: event.clone(),
                org: value["org"].as_str()?.to_owned(),
                period_start: value["period_start"].as_u64().unwrap_or(0),
                limit: value["limit"].as_u64()?,
                used: value["used"].as_u64()?,
                held: value["held"].as_u64()?,
                used_by_node: value["used_by_node"]
                    .as_object()
                    .map(|map| map.iter().filter_map(|(node, used)| Some((node.clone(), used.as_u64()?))).collect())
                    .unwrap_or_default(),
                served: value["served"].as_u64(),
            })
        })
        .collect()
}

/// S1 per budgeted org; evidence: the first sample at which the mock had served more than the limit,
/// and the chat operations of that org completed just before it.
pub fn s1(served: &[Served], events: &[Event], ops: &[Op]) -> CheckResult {
    let mut parts = Vec::new();
    let mut evidence = Vec::new();
    for org in served {
        let Some(limit) = org.limit else {
            parts.push(format!("{} (no budget) served {}", org.org, org.total()));
            continue;
        };
        if let Some(boundary) = budget::boundary(events, ops, &org.org) {
            let (summary, found) = budget::s1_per_period(org, limit, &boundary, events, ops);
            parts.push(summary);
            evidence.extend(found);
            continue;
        }
        parts.push(format!("{} served {} of {limit}", org.org, org.total()));
        let (lowered_parts, lowered_evidence) = budget::s1_lowered(org, events, ops);
        parts.extend(lowered_parts);
        evidence.extend(lowered_evidence);
        if org.total() <= limit {
            continue;
        }
        evidence.push(json!({"org": org.org, "served_input": org.input, "served_output": org.output, "limit": limit}));
        let first_over = samples(events).into_iter().find(|s| s.org == org.org && s.served.is_some_and(|n| n > limit));
        let before_ms = first_over.as_ref().map_or(f64::INFINITY, |sample| sample.event.time_ms);
        if let Some(sample) = first_over {
            evidence.push(json!({"first_sample_over_limit": sample.event}));
        }
        let recent: Vec<&Op> = ops
            .iter()
            .filter(|op| op.f == "chat" && op.invoke.value["org"] == org.org.as_str())
            .filter(|op| matches!(op.outcome(), OpType::Ok | OpType::Info))
            .filter(|op| op.complete.as_ref().is_some_and(|c| c.time_ms <= before_ms))
            .collect();
        for op in recent.iter().rev().take(5).rev() {
            evidence.push(json!({"invoke": op.invoke, "complete": op.complete}));
        }
    }
    let verdict = if evidence.is_empty() { Verdict::Pass } else { Verdict::Fail };
    CheckResult::new("S1", verdict, parts.join("; "), evidence)
}

/// S2 over every ledger sample, in history order (the sampler reads one at a time, so each read
/// happened after the previous one returned: a linearizable ledger never shows `used` going down).
pub fn s2(events: &[Event]) -> CheckResult {
    let all = samples(events);
    let mut evidence = Vec::new();
    let mut last: BTreeMap<(String, u64), Sample> = BTreeMap::new();
    // Per org: the highest limit seen. Once a limit was lowered, outstanding allowance (used + held) may
    // stay above the new limit while nodes drain, but must not grow while above it.
    let mut highest_limit: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &all {
        let highest = highest_limit.entry(sample.org.clone()).or_insert(sample.limit);
        let lowered = sample.limit < *highest;
        *highest = (*highest).max(sample.limit);
        let outstanding = sample.used + sample.held;
        let previous = last.get(&(sample.org.clone(), sample.period_start));
        let grew_while_over = previous.is_none_or(|before| outstanding > before.used + before.held);
        if outstanding > sample.limit && (!lowered || grew_while_over) {
            evidence.push(json!({"violation": if lowered { "used + held grew above a lowered limit" }
                else { "used + held > limit" }, "sample": sample.event}));
        }
        let key = (sample.org.clone(), sample.period_start);
        if let Some(previous) = last.get(&key) {
            let node_went_down = sample
                .used_by_node
                .iter()
                .any(|(node, used)| previous.used_by_node.get(node).is_some_and(|before| used < before));
            if sample.used < previous.used || node_went_down {
                evidence.push(json!({"violation": "used decreased", "before": previous.event, "after": sample.event}));
            }
        }
        last.insert(key, sample.clone());
    }
    granted_monotone(&all, &mut evidence);
    let applied = applied_audit(&all, &mut evidence);
    let orgs: Vec<String> =
        last.values().map(|s| format!("{}: last used {} held {} of {}", s.org, s.used, s.held, s.limit)).collect();
    let granularity = format!("{}{applied}", index_granularity(events));
    let verdict = match (all.is_empty(), evidence.is_empty()) {
        (true, _) => Verdict::Unknown,
        (false, true) => Verdict::Pass,
        (false, false) => Verdict::Fail,
    };
    evidence.truncate(10);
    CheckResult::new("S2", verdict, format!("{} samples{granularity}; {}", all.len(), orgs.join("; ")), evidence)
}

/// S2 at **every** applied index, as the state machine checked it: each ledger change it applied was checked
/// (`Σ(granted − released) ≤ limit`, or not grown above a lowered limit; no node released more than it was
/// granted) and counted in `ledger_s2` of the budgets answer, replicated like the ledger. Any violation it
/// counted fails S2 (evidence: its first violation and the sample that showed it). Returns the summary's
/// clause; a tollgate without `ledger_s2` leaves S2 to the samples, and the summary says so.
fn applied_audit(all: &[Sample], evidence: &mut Vec<Value>) -> String {
    let audits: Vec<(&Sample, u64, u64)> = all
        .iter()
        .filter_map(|sample| {
            let audit = &sample.event.value["ledger_s2"];
            Some((sample, audit["checked"].as_u64()?, audit["violations"].as_u64()?))
        })
        .collect();
    if audits.is_empty() {
        return "; every applied index: not exposed by this tollgate (no ledger_s2)".to_owned();
    }
    if let Some((sample, _, violations)) = audits.iter().find(|(_, _, violations)| *violations > 0) {
        evidence.push(json!({"violation": "the state machine counted S2 violations at applied ledger changes",
            "violations": violations, "first_violation": sample.event.value["ledger_s2"]["first_violation"],
            "sample": sample.event}));
    }
    let checked = audits.iter().map(|(_, checked, _)| *checked).max().unwrap_or(0);
    let violations = audits.iter().map(|(_, _, violations)| *violations).max().unwrap_or(0);
    format!("; every applied index (state machine): {checked} ledger changes checked, {violations} violations")
}

/// Per org, period and node, `granted` (a running total in the ledger) never decreases.
fn granted_monotone(all: &[Sample], evidence: &mut Vec<Value>) {
    let mut last: BTreeMap<(String, u64, String), (u64, &Event)> = BTreeMap::new();
    for sample in all {
        let Some(granted) = sample.event.value["granted_by_node"].as_object() else { continue };
        for (node, total) in granted {
            let Some(total) = total.as_u64() else { continue };
            let key = (sample.org.clone(), sample.period_start, node.clone());
            if let Some((before, event)) = last.get(&key) {
                if total < *before {
                    evidence.push(json!({"violation": "granted decreased", "node": node, "before": event,
                        "after": sample.event}));
                }
            }
            last.insert(key, (total, &sample.event));
        }
    }
}

/// How close together the ledger states S2 saw are, in applied indexes: each sample is the state at some
/// index between the answering node's applied index just before and just after the read.
fn index_granularity(events: &[Event]) -> String {
    let mut brackets: Vec<(u64, u64)> = samples(events)
        .iter()
        .filter_map(|s| Some((s.event.value["applied_before"].as_u64()?, s.event.value["applied_after"].as_u64()?)))
        .collect();
    if brackets.len() < 2 {
        return String::new();
    }
    brackets.sort_unstable();
    let first = brackets[0].0;
    let last = brackets.iter().map(|b| b.1).max().unwrap_or(first);
    let mut gaps: Vec<u64> = brackets.windows(2).map(|pair| pair[1].0.saturating_sub(pair[0].0)).collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    let distinct: std::collections::BTreeSet<u64> = brackets.iter().map(|b| b.0).collect();
    format!(
        " (ledger states at applied indexes {first}..{last}: {} distinct, one per {median} indexes at the median)",
        distinct.len()
    )
}

/// S3 from the settled ledger (`billed`: org → used in the current period) against the mocks. After a
/// period rollover the admin API shows only the new period: its bill must cover at least what the new
/// period was certainly served (the total less what was served by the boundary and what the old period's
/// requests in flight then could still be served); the old period's bill can no longer be read.
pub fn s3(served: &[Served], billed: &BTreeMap<String, Option<u64>>, events: &[Event], ops: &[Op]) -> CheckResult {
    let mut parts = Vec::new();
    let mut evidence = Vec::new();
    let mut unknown = false;
    for org in served.iter().filter(|org| org.limit.is_some()) {
        let boundary = budget::boundary(events, ops, &org.org);
        let (must_cover, what) = match &boundary {
            Some(b) => (
                org.total().saturating_sub(b.served_then + b.in_flight_slack),
                format!(
                    "served in the new period (≥ {} − {} − {} in flight)",
                    org.total(),
                    b.served_then,
                    b.in_flight_slack
                ),
            ),
            None => (org.total(), "served".to_owned()),
        };
        if let Some(boundary) = &boundary {
            old_period_bill(events, &org.org, boundary.served_then, &mut parts, &mut evidence);
        }
        match billed.get(&org.org).copied().flatten() {
            Some(used) => {
                let relation = if used >= must_cover { "≥" } else { "<" };
                parts.push(format!("{} billed {used} {relation} {what} {must_cover}", org.org));
                if used < must_cover {
                    // What DESIGN §6 counts as spent after a crash: the allowance still held (a killed
                    // node's unreported rest). Context for the failure, not a pass.
                    let held = last_held(events, &org.org);
                    evidence.push(json!({"org": org.org, "billed": used, "served": must_cover,
                        "period_rollover": boundary.is_some(), "held_at_last_sample": held,
                        "billed_plus_held_covers_served": held.map(|held| used + held >= must_cover)}));
                }
            }
            None => {
                unknown = true;
                parts.push(format!("{}: no ledger reading after heal", org.org));
            }
        }
    }
    let verdict = if !evidence.is_empty() {
        Verdict::Fail
    } else if unknown {
        Verdict::Unknown
    } else {
        Verdict::Pass
    };
    CheckResult::new("S3", verdict, parts.join("; "), evidence)
}

/// After a rollover, the old period's bill (read after heal with `period_start`, event `budget-old-period`)
/// must cover what its mock served before the boundary: every one of those tokens belongs to the old period.
fn old_period_bill(events: &[Event], org: &str, served_then: u64, parts: &mut Vec<String>, evidence: &mut Vec<Value>) {
    let read = events
        .iter()
        .rev()
        .find(|event| event.f == "budget-old-period" && event.kind == OpType::Ok && event.value["org"] == org);
    match read.and_then(|event| event.value["used"].as_u64()) {
        Some(used) => {
            let relation = if used >= served_then { "≥" } else { "<" };
            parts.push(format!("{org} old period billed {used} {relation} served before the boundary {served_then}"));
            if used < served_then {
                evidence
                    .push(json!({"org": org, "period": "old", "billed": used, "served_before_boundary": served_then,
                    "read": read}));
            }
        }
        None => parts.push(format!("{org} old period: its bill was not read")),
    }
}

/// The org's `held` in the last ledger sample of the history.
fn last_held(events: &[Event], org: &str) -> Option<u64> {
    events
        .iter()
        .rev()
        .filter(|event| event.f == "budget" && event.kind == OpType::Ok && event.value["org"] == org)
        .find_map(|event| event.value["held"].as_u64())
}

/// What the run measured after the faults stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Convergence {
    /// Seconds from heal until every region named the same leader and their applied indexes matched.
    pub agreed_after_s: Option<f64>,
    pub leader: Option<u64>,
    pub applied_indexes: Vec<Option<u64>>,
    /// Per region: seconds from heal until a budgeted request with room succeeded (None: not within the
    /// deadline), and the last error seen.
    pub probes: Vec<(u64, Option<f64>, Option<String>)>,
}

pub fn l1(convergence: &Convergence, deadline_s: f64) -> CheckResult {
    let mut evidence = Vec::new();
    if convergence.agreed_after_s.is_none() {
        evidence.push(json!({"violation": "regions did not agree on one leader and applied index",
            "leader": convergence.leader, "applied_indexes": convergence.applied_indexes}));
    }
    for (region, after, error) in &convergence.probes {
        if after.is_none_or(|seconds| seconds > deadline_s) {
            evidence.push(json!({"violation": format!("no successful request within {deadline_s} s"),
                "region": region, "after_s": after, "last_error": error}));
        }
    }
    let probes: Vec<String> = convergence
        .probes
        .iter()
        .map(|(region, after, _)| format!("r{region} {}", after.map_or("-".into(), |s| format!("{s:.1}s"))))
        .collect();
    let summary = format!(
        "leader {} agreed after {}; first request ok: {}",
        convergence.leader.map_or("-".into(), |l| l.to_string()),
        convergence.agreed_after_s.map_or("never".into(), |s| format!("{s:.1} s")),
        probes.join(", ")
    );
    let verdict = if evidence.is_empty() { Verdict::Pass } else { Verdict::Fail };
    CheckResult::new("L1", verdict, summary, evidence)
}

/// Linearizability of the register operations (`write`/`read` ops of any process).
pub fn linearizability(ops: &[Op], max_steps: u64) -> CheckResult {
    let mut per_key: BTreeMap<u64, Vec<linear::TimedOp>> = BTreeMap::new();
    let mut by_id: BTreeMap<usize, &Op> = BTreeMap::new();
    let mut counted = 0;
    for op in ops.iter().filter(|op| op.f == "write" || op.f == "read") {
        let Some(key) = op.invoke.value["key"].as_u64() else { continue };
        let returned = op.complete.as_ref().map(|c| c.time_ms);
        let timed = match (op.f.as_str(), op.outcome()) {
            ("write", OpType::Ok) | ("write", OpType::Info) => {
                let Some(value) = op.invoke.value["value"].as_u64() else { continue };
                let return_ms =
                    if op.outcome() == OpType::Ok { returned.unwrap_or(f64::INFINITY) } else { f64::INFINITY };
                linear::TimedOp {
                    id: op.invoke.index,
                    op: linear::RegisterOp::Write(value),
                    call_ms: op.invoke.time_ms,
                    return_ms,
                }
            }
            ("read", OpType::Ok) => {
                let Some(complete) = &op.complete else { continue };
                let seen = complete.value["value"].as_u64();
                linear::TimedOp {
                    id: op.invoke.index,
                    op: linear::RegisterOp::Read(seen),
                    call_ms: op.invoke.time_ms,
                    return_ms: complete.time_ms,
                }
            }
            _ => continue,
        };
        counted += 1;
        by_id.insert(op.invoke.index, op);
        per_key.entry(key).or_default().push(timed);
    }
    let mut evidence = Vec::new();
    let mut verdict = Verdict::Pass;
    let mut parts = Vec::new();
    for (key, timed) in &per_key {
        match linear::check(timed, None, max_steps) {
            linear::Verdict::Linearizable => parts.push(format!("reg {key}: {} ops ok", timed.len())),
            linear::Verdict::Unknown { steps } => {
                if verdict == Verdict::Pass {
                    verdict = Verdict::Unknown;
                }
                parts.push(format!("reg {key}: gave up after {steps} steps"));
            }
            linear::Verdict::NotLinearizable { blocked, prefix } => {
                verdict = Verdict::Fail;
                parts.push(format!("reg {key}: NOT linearizable"));
                let show = |id: &usize| by_id.get(id).map(|op| json!({"invoke": op.invoke, "complete": op.complete}));
                evidence.push(json!({"register": key, "cannot_linearize": show(&blocked),
                    "after_linearizing_last": prefix.iter().rev().take(5).rev().filter_map(show).collect::<Vec<_>>()}));
            }
        }
    }
    if counted == 0 {
        verdict = Verdict::Unknown;
        parts.push("no completed register operations".into());
    }
    CheckResult::new("linearizability", verdict, parts.join("; "), evidence)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
