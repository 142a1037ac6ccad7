//! `report.json` (README, public interface: `{"checkers": {"S1": "PASS", ...}, "ops": {...}, "nemeses": [...]}` plus
//! details) and the terminal report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::faults::Applied;
use crate::checker::{CheckResult, Served, Verdict};
use crate::history::{Op, OpType};

/// ok / fail / info per operation kind, and for chat the refusal codes and hang-ups.
pub fn op_counts(ops: &[Op]) -> Value {
    let mut counts: BTreeMap<String, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut chat_detail: BTreeMap<String, u64> = BTreeMap::new();
    // Ledger samples are counted by S2, not here.
    for op in ops.iter().filter(|op| op.f != "budget") {
        let outcome = match op.outcome() {
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            _ => "info",
        };
        *counts.entry(op.f.clone()).or_default().entry(outcome).or_default() += 1;
        if op.f == "chat" {
            let value = op.complete.as_ref().map(|c| &c.value);
            let label = match (op.outcome(), value) {
                (OpType::Ok, _) => None,
                (_, Some(v)) if v.get("hung_up_after_bytes").is_some() => Some("client hung up".to_owned()),
                (_, Some(v)) if v["status"].is_u64() => {
                    Some(format!("{} {}", v["status"], v["code"].as_str().unwrap_or("")).trim().to_owned())
                }
                (_, Some(v)) => Some(v["error"].as_str().unwrap_or("?").split(':').next().unwrap_or("?").to_owned()),
                (_, None) => Some("never completed".to_owned()),
            };
            if let Some(label) = label {
                *chat_detail.entry(format!("{outcome}: {label}")).or_default() += 1;
            }
        }
    }
    let mut out = json!(counts);
    out["chat_not_ok"] = json!(chat_detail);
    out
}

/// Answers a correct gateway never gives our clients, whatever the faults: the keys are valid and the
/// requests well-formed all run, so any 4xx but a budget refusal (401 for a valid key, 400, 404) is a
/// product anomaly; the `valid-requests` checker fails on any.
pub fn anomalies(ops: &[Op]) -> Value {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut examples = Vec::new();
    for op in ops.iter().filter(|op| op.f == "chat") {
        let Some(complete) = &op.complete else { continue };
        let status = complete.value["status"].as_u64().unwrap_or(0);
        let code = complete.value["code"].as_str().unwrap_or("");
        let refusal = matches!(code, "budget_exceeded" | "budget_unavailable");
        if (400..500).contains(&status) && !refusal {
            *counts.entry(format!("{status} {code}")).or_default() += 1;
            if examples.len() < 5 {
                examples.push(json!({"invoke": op.invoke, "complete": complete}));
            }
        }
    }
    json!({"counts": counts, "examples": examples})
}

pub struct Report<'a> {
    pub seed: u64,
    pub nemeses_requested: String,
    pub time_limit_s: u64,
    pub tollgate: String,
    pub applied: &'a [Applied],
    pub ops: Value,
    pub checks: &'a [CheckResult],
    pub served: &'a [Served],
    pub utilisation: Value,
    pub heal_errors: &'a [String],
    pub anomalies: Value,
}

impl Report<'_> {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.verdict == Verdict::Pass)
    }

    pub fn to_json(&self) -> Value {
        let checkers: BTreeMap<&str, Verdict> = self.checks.iter().map(|c| (c.name.as_str(), c.verdict)).collect();
        json!({
            "checkers": checkers,
            "ops": self.ops,
            "nemeses": self.applied,
            "valid": self.passed(),
            "seed": self.seed,
            "nemesis": self.nemeses_requested,
            "time_limit_s": self.time_limit_s,
            "tollgate": self.tollgate,
            "details": self.checks,
            "served": self.served,
            "utilisation": self.utilisation,
            "heal_errors": self.heal_errors,
            "anomalies": self.anomalies,
        })
    }

    pub fn terminal(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n== jepsen run: nemesis {} seed {} time limit {} s ==",
            self.nemeses_requested, self.seed, self.time_limit_s
        );
        let _ = writeln!(out, "tollgate: {}", self.tollgate);
        let _ = writeln!(out, "\nfaults injected ({}):", self.applied.len());
        for fault in self.applied {
            let _ = writeln!(
                out,
                "  {:>7.1}s - {:>7.1}s  {:<18} {}{}",
                fault.start_ms / 1000.0,
                fault.end_ms / 1000.0,
                fault.kind.name(),
                fault.target,
                if fault.errors.is_empty() {
                    String::new()
                } else {
                    format!("  (errors: {})", fault.errors.join("; "))
                }
            );
        }
        for error in self.heal_errors {
            let _ = writeln!(out, "  heal error: {error}");
        }
        let _ = writeln!(out, "\noperations:");
        if let Some(kinds) = self.ops.as_object() {
            for (kind, counts) in kinds.iter().filter(|(kind, _)| *kind != "chat_not_ok") {
                let count = |name: &str| counts[name].as_u64().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "  {kind:<7} ok {:>6}  fail {:>6}  info {:>6}",
                    count("ok"),
                    count("fail"),
                    count("info")
                );
            }
            if let Some(detail) = kinds.get("chat_not_ok").and_then(Value::as_object) {
                for (label, count) in detail {
                    let _ = writeln!(out, "          {count:>6}  {label}");
                }
            }
        }
        let _ = writeln!(out, "\ntokens served (counted by the mock upstreams):");
        for org in self.served {
            let _ = writeln!(
                out,
                "  {:<5} input {:>7}  output {:>7}  total {:>7}  limit {}",
                org.org,
                org.input,
                org.output,
                org.total(),
                org.limit.map_or("none".into(), |l| l.to_string())
            );
        }
        let _ = writeln!(out, "utilisation (informational): {}", self.utilisation);
        if let Some(counts) = self.anomalies["counts"].as_object().filter(|counts| !counts.is_empty()) {
            let _ = writeln!(out, "\nANOMALIES (answers a correct gateway never gives these clients):");
            for (label, count) in counts {
                let _ = writeln!(out, "  {count:>6}  {label}");
            }
            for example in self.anomalies["examples"].as_array().into_iter().flatten().take(3) {
                let _ = writeln!(out, "      e.g. {example}");
            }
        }
        let _ = writeln!(out, "\ncheckers:");
        for check in self.checks {
            let verdict = match check.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Unknown => "UNKNOWN",
            };
            let _ = writeln!(out, "  {:<16} {verdict:<7} {}", check.name, check.summary);
            for evidence in check.evidence.iter().take(6) {
                let _ = writeln!(out, "      evidence: {evidence}");
            }
        }
        let _ =
            writeln!(out, "\n{}", if self.passed() { "every checker passed" } else { "SOME CHECKERS DID NOT PASS" });
        out
    }
}
