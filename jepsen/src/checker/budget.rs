//! Budget checks beyond the plain limit: S1 against limits lowered during the run (`budget-lower`), S1
//! and S3 per period when the period rolls over during the run (`period-rollover`), and the utilisation
//! checker (a fault-free run serves ≥ 90 % of a budget before its first refusal).

use serde_json::{json, Value};

use super::types::{CheckResult, Served, Verdict};
use crate::history::{Event, Op, OpType};

/// The most one chat operation can be served by the mock: its prompt bytes (the mock counts no more input
/// tokens than bytes) plus a message overhead, plus the output cap of the jepsen models (64).
pub fn max_served_by(op: &Op) -> u64 {
    op.invoke.value["prompt_bytes"].as_u64().unwrap_or(400) + 16 + 64
}

/// One `budget-lowered` event: the PUT answered at `event.time_ms` with the mock at `served_at_answer`.
struct Lowering<'a> {
    event: &'a Event,
    limit: u64,
    served_at_answer: u64,
    /// Nodes that had not applied the new limit when the PUT answered may still spend what they held.
    pending_held: u64,
}

fn lowerings<'a>(events: &'a [Event], org: &str) -> Vec<Lowering<'a>> {
    events
        .iter()
        .filter(|event| event.process == "nemesis" && event.f == "budget-lowered" && event.value["org"] == org)
        .filter_map(|event| {
            let pending = event.value["pending_on"].as_array().is_some_and(|nodes| !nodes.is_empty());
            Some(Lowering {
                event,
                limit: event.value["limit"].as_u64()?,
                served_at_answer: event.value["served_at_answer"].as_u64()?,
                pending_held: if pending { event.value["held_before"].as_u64().unwrap_or(0) } else { 0 },
            })
        })
        .collect()
}

/// The org's chat operations in flight at `at_ms` (invoked before, not answered before), and the most the
/// mock can still serve them.
pub fn in_flight<'a>(ops: &'a [Op], org: &str, at_ms: f64) -> (Vec<&'a Op>, u64) {
    let ops: Vec<&Op> = ops
        .iter()
        .filter(|op| op.f == "chat" && op.invoke.value["org"] == org && op.invoke.time_ms < at_ms)
        .filter(|op| op.complete.as_ref().is_none_or(|complete| complete.time_ms > at_ms))
        .collect();
    let slack = ops.iter().map(|op| max_served_by(op)).sum();
    (ops, slack)
}

/// The budget period's rollover as seen by one org: when, what its mock had served then (all of it
/// belongs to the old period: a request is charged to the period of the node's clock when it is
/// admitted, and every node runs on the same shifted clock), and its requests in flight then (admitted
/// in the old period, possibly served in the new one).
#[derive(Debug, Clone)]
pub struct Boundary {
    pub at_ms: f64,
    pub served_then: u64,
    pub in_flight: usize,
    pub in_flight_slack: u64,
}

pub fn boundary(events: &[Event], ops: &[Op], org: &str) -> Option<Boundary> {
    let event = events.iter().find(|event| event.process == "nemesis" && event.f == "period-boundary")?;
    let served_then = event.value["served"][org].as_u64()?;
    let (flying, in_flight_slack) = in_flight(ops, org, event.time_ms);
    Some(Boundary { at_ms: event.time_ms, served_then, in_flight: flying.len(), in_flight_slack })
}

/// The bound one lowering puts on what is served from its answer on (see [`s1_lowered`]).
fn lowering_bound(lowering: &Lowering<'_>, ops: &[Op], org: &str) -> (u64, usize, u64) {
    let (flying, slack) = in_flight(ops, org, lowering.event.time_ms);
    (lowering.served_at_answer + slack + lowering.pending_held, flying.len(), slack)
}

/// S1 per period when the period rolled over during the run. The mock counts tokens, not periods, so
/// each period's share is bounded from below and checked against its limit (sound: a failure is a
/// certain over-spend; an over-spend smaller than the boundary's in-flight slack can go unseen):
/// - old period: served ≥ `served_then` (the mock's count at the boundary), which must be ≤ its limit
///   (or, after a lowering in that period, the lowering's bound);
/// - new period: served ≥ total − `served_then` − in-flight slack, which must be ≤ the limit in force at
///   the boundary, and after a lowering in the new period ≤ max(new limit, what the new period had been
///   served at the answer + that lowering's in-flight slack and pending holdings).
pub fn s1_per_period(
    org: &Served,
    limit: u64,
    boundary: &Boundary,
    events: &[Event],
    ops: &[Op],
) -> (String, Vec<Value>) {
    let mut evidence = Vec::new();
    let all = lowerings(events, &org.org);
    let (before, after): (Vec<&Lowering<'_>>, Vec<&Lowering<'_>>) =
        all.iter().partition(|lowering| lowering.event.time_ms <= boundary.at_ms);
    let mut bound_old = limit;
    for lowering in &before {
        let (bound, _, _) = lowering_bound(lowering, ops, &org.org);
        bound_old = bound_old.min(lowering.limit.max(bound));
    }
    let limit_new = before.last().map_or(limit, |lowering| lowering.limit);
    let served_old_min = boundary.served_then;
    let served_new_min = org.total().saturating_sub(boundary.served_then + boundary.in_flight_slack);
    let served_new_max = org.total().saturating_sub(boundary.served_then);
    if served_old_min > bound_old {
        evidence.push(json!({"violation": "the old period served more than its limit", "org": org.org,
            "served_by_the_boundary": served_old_min, "bound": bound_old, "boundary_at_ms": boundary.at_ms}));
    }
    let mut bound_new = limit_new;
    for lowering in &after {
        let (bound, flying, slack) = lowering_bound(lowering, ops, &org.org);
        let bound = lowering.limit.max(bound.saturating_sub(boundary.served_then));
        bound_new = bound_new.min(bound);
        if served_new_min > bound {
            evidence.push(json!({"violation": "the new period served more than its lowered limit allows",
                "org": org.org, "served_in_new_period_at_least": served_new_min, "bound": bound,
                "lowered": lowering.event, "in_flight": flying, "in_flight_slack": slack}));
        }
    }
    if served_new_min > limit_new {
        evidence.push(json!({"violation": "the new period served more than its limit", "org": org.org,
            "served_in_new_period_at_least": served_new_min, "limit": limit_new, "served_total": org.total(),
            "served_by_the_boundary": boundary.served_then, "in_flight_at_boundary": boundary.in_flight,
            "in_flight_slack": boundary.in_flight_slack}));
    }
    let summary = format!(
        "{} rolled over at {:.1} s: old period served ≥ {served_old_min} (≤ {bound_old} allowed), new period \
         served {served_new_min}..{served_new_max} (≤ {bound_new} allowed; {} requests in flight at the \
         boundary, ≤ {} tokens); {} in all",
        org.org,
        boundary.at_ms / 1000.0,
        boundary.in_flight,
        boundary.in_flight_slack,
        org.total()
    );
    (summary, evidence)
}

/// S1 after each lowering of `org`'s limit: from the moment the PUT answered, the mock may serve at most
/// `max(new limit, served then + what the requests in flight then can still be served + holdings of
/// nodes that had not applied it)`. Returns (summary parts, evidence).
pub fn s1_lowered(org: &Served, events: &[Event], ops: &[Op]) -> (Vec<String>, Vec<Value>) {
    let mut parts = Vec::new();
    let mut evidence = Vec::new();
    for lowering in lowerings(events, &org.org) {
        let at = lowering.event.time_ms;
        let in_flight: Vec<&Op> = ops
            .iter()
            .filter(|op| op.f == "chat" && op.invoke.value["org"] == org.org.as_str() && op.invoke.time_ms < at)
            .filter(|op| op.complete.as_ref().is_none_or(|complete| complete.time_ms > at))
            .collect();
        let slack: u64 = in_flight.iter().map(|op| max_served_by(op)).sum();
        let bound = lowering.limit.max(lowering.served_at_answer + slack + lowering.pending_held);
        parts.push(format!(
            "{} served {} ≤ {bound} after the limit went to {} at {:.1} s ({} in flight)",
            org.org,
            org.total(),
            lowering.limit,
            at / 1000.0,
            in_flight.len()
        ));
        if org.total() > bound {
            evidence.push(json!({"violation": "served more than the lowered limit allows", "org": org.org,
                "served": org.total(), "bound": bound, "lowered": lowering.event,
                "in_flight": in_flight.len(), "in_flight_slack": slack}));
        }
    }
    (parts, evidence)
}

/// The first budget refusal (429 `budget_exceeded` or 503 `budget_unavailable`) of `org`'s chat clients:
/// (time in ms, the mock's count then).
pub fn first_refusal(ops: &[Op], org: &str) -> Option<(f64, Option<u64>)> {
    ops.iter()
        .filter(|op| op.f == "chat" && op.invoke.value["org"] == org && op.outcome() == OpType::Fail)
        .filter_map(|op| op.complete.as_ref())
        .filter(|complete| matches!(complete.value["code"].as_str(), Some("budget_exceeded" | "budget_unavailable")))
        .min_by(|a, b| a.time_ms.total_cmp(&b.time_ms))
        .map(|complete| (complete.time_ms, complete.value["served_then"].as_u64()))
}

/// Utilisation: for each budgeted org that was refused, the share of its limit its mock had served when
/// the first refusal came must be ≥ `min_share` (a fault-free run without hang-ups must not refuse while
/// most of the budget is unspent). An org never refused passes.
pub fn utilisation(served: &[Served], ops: &[Op], min_share: f64) -> CheckResult {
    let mut parts = Vec::new();
    let mut evidence = Vec::new();
    let mut unknown = false;
    for org in served {
        let Some(limit) = org.limit else { continue };
        match first_refusal(ops, &org.org) {
            None => parts.push(format!("{}: never refused ({} of {limit} served)", org.org, org.total())),
            Some((at, Some(then))) => {
                let share = then as f64 / limit.max(1) as f64;
                parts.push(format!(
                    "{}: {:.1} % served at the first refusal ({:.1} s)",
                    org.org,
                    share * 100.0,
                    at / 1000.0
                ));
                if share < min_share {
                    evidence.push(json!({"org": org.org, "limit": limit, "served_at_first_refusal": then,
                        "share": share, "at_ms": at}));
                }
            }
            Some((at, None)) => {
                unknown = true;
                parts.push(format!("{}: refused at {:.1} s, served count unknown", org.org, at / 1000.0));
            }
        }
    }
    let verdict = match (evidence.is_empty(), unknown) {
        (false, _) => Verdict::Fail,
        (true, true) => Verdict::Unknown,
        (true, false) => Verdict::Pass,
    };
    CheckResult::new("utilisation", verdict, format!("min {:.0} %: {}", min_share * 100.0, parts.join("; ")), evidence)
}

/// How long after a fault ends before the cluster counts as calm again (a new leader, allowance
/// redistributed): a failover takes ≤ ~2 s at the harness's Raft timing.
pub const CALM_MARGIN_MS: f64 = 3_000.0;

/// The fault-free phases of a run: from the start to the first fault, between faults (from
/// `margin_ms` after one ends to the next one's start) and after the last one to `end_ms`; only those of
/// at least 2 s.
pub fn calm_windows(faults: &[(f64, f64)], end_ms: f64, margin_ms: f64) -> Vec<(f64, f64)> {
    let mut faults = faults.to_vec();
    faults.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut windows = Vec::new();
    let mut calm_from = 0.0_f64;
    for (start, end) in faults {
        if start > calm_from {
            windows.push((calm_from, start));
        }
        calm_from = calm_from.max(end + margin_ms);
    }
    if end_ms > calm_from {
        windows.push((calm_from, end_ms));
    }
    windows.retain(|(from, to)| to - from >= 2_000.0);
    windows
}

fn is_budget_refusal(op: &Op) -> bool {
    op.outcome() == OpType::Fail
        && op.complete.as_ref().is_some_and(|complete| {
            matches!(complete.value["code"].as_str(), Some("budget_exceeded" | "budget_unavailable"))
        })
}

/// Utilisation in the fault-free phases of a run with faults: in every calm window in which an org's
/// clients were refused for budget, the ledger must have handed out (billed or still held: `used + held`)
/// at least `min_share` of the limit in force by the window's last refusal — the budget is not left
/// unused while clients are turned away. Judged on the ledger samples from 1 s before that refusal to the
/// window's end (the highest share among them), not on the mock's count: a client hang-up or a node
/// killed mid-request bills tokens the upstream never served, by design. The mock's share at the last
/// refusal is reported beside it.
pub fn utilisation_calm(
    served: &[Served],
    events: &[Event],
    ops: &[Op],
    faults: &[(f64, f64)],
    end_ms: f64,
    min_share: f64,
) -> CheckResult {
    let windows = calm_windows(faults, end_ms, CALM_MARGIN_MS);
    let mut parts = Vec::new();
    let mut evidence = Vec::new();
    let mut unknown = false;
    for org in served {
        if org.limit.is_none() {
            continue;
        }
        let mut judged = Vec::new();
        for (from, to) in &windows {
            let refusals: Vec<&Op> = ops
                .iter()
                .filter(|op| op.f == "chat" && op.invoke.value["org"] == org.org.as_str() && is_budget_refusal(op))
                .filter(|op| op.invoke.time_ms >= *from && op.complete.as_ref().is_some_and(|c| c.time_ms <= *to))
                .collect();
            let Some(last) = refusals.iter().filter_map(|op| op.complete.as_ref()).map(|c| c.time_ms).reduce(f64::max)
            else {
                continue;
            };
            let shares: Vec<(f64, &Event)> = events
                .iter()
                .filter(|e| e.f == "budget" && e.kind == OpType::Ok && e.value["org"] == org.org.as_str())
                .filter(|e| e.time_ms >= last - 1_000.0 && e.time_ms <= *to)
                .filter_map(|e| {
                    let limit = e.value["limit"].as_u64()?.max(1) as f64;
                    Some(((e.value["used"].as_u64()? + e.value["held"].as_u64()?) as f64 / limit, e))
                })
                .collect();
            let Some((best, sample)) = shares.into_iter().max_by(|a, b| a.0.total_cmp(&b.0)) else {
                unknown = true;
                judged.push(format!("{:.0}-{:.0} s: no ledger sample", from / 1000.0, to / 1000.0));
                continue;
            };
            let served_then = refusals
                .iter()
                .filter_map(|op| op.complete.as_ref())
                .filter(|c| c.time_ms == last)
                .find_map(|c| c.value["served_then"].as_u64());
            judged.push(format!(
                "{:.0}-{:.0} s: {} refusals, ledger {:.0} % handed out",
                from / 1000.0,
                to / 1000.0,
                refusals.len(),
                best * 100.0
            ));
            if best < min_share {
                evidence.push(json!({"org": org.org, "calm_window_s": [from / 1000.0, to / 1000.0],
                    "refusals": refusals.len(), "last_refusal_ms": last, "ledger_share": best,
                    "sample": sample, "served_at_last_refusal": served_then,
                    "first_refusal": refusals.first().map(|op| json!({"invoke": op.invoke, "complete": op.complete}))}));
            }
        }
        if judged.is_empty() {
            parts.push(format!("{}: never refused in a calm phase", org.org));
        } else {
            parts.push(format!("{}: {}", org.org, judged.join(", ")));
        }
    }
    let verdict = match (evidence.is_empty(), unknown) {
        (false, _) => Verdict::Fail,
        (true, true) => Verdict::Unknown,
        (true, false) => Verdict::Pass,
    };
    let summary = format!(
        "min {:.0} % handed out when refused in calm phases ({} windows ≥ 2 s, {:.0} s after each fault): {}",
        min_share * 100.0,
        windows.len(),
        CALM_MARGIN_MS / 1000.0,
        parts.join("; ")
    );
    evidence.truncate(10);
    CheckResult::new("utilisation", verdict, summary, evidence)
}
