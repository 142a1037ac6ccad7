//! Budget checks beyond the plain limit: S1 against limits lowered during the run (`budget-lower`), and
//! the utilisation checker (a fault-free run serves ≥ 90 % of a budget before its first refusal).

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
