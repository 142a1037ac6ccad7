//! An interrupted run (SIGINT or SIGTERM): the history is already on disk (the journal, written as the run
//! goes), and this writes a `report.json` marked interrupted next to it — no checker verdicts (a history
//! cut short cannot say whether S1–S3 held: requests were in flight and nothing was healed or settled), the
//! operations so far and the faults injected so far. The regions are brought down by the caller as after
//! any run.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde_json::{json, Value};

use super::report;
use crate::history::{pair, History};

/// The checkers a complete run judges; an interrupted run reports each as `UNKNOWN`.
pub const CHECKERS: [&str; 7] = ["S1", "S2", "S3", "L1", "linearizability", "valid-requests", "utilisation"];

/// Where the run puts its history once the workload starts, so the signal handler can reach it.
#[derive(Clone, Default)]
pub struct HistorySlot(Arc<Mutex<Option<History>>>);

impl HistorySlot {
    pub fn set(&self, history: History) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(history);
    }

    pub fn get(&self) -> Option<History> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// SIGINT and SIGTERM, listened for from the start of the run (so neither kills the harness with the
/// regions up). A second signal while the regions are brought down is caught and ignored.
pub struct Signals {
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn install() -> Self {
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|err| tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C keeps the history"))
            .ok();
        Signals { terminate }
    }

    /// Waits for the first of SIGINT and SIGTERM; returns its name.
    pub async fn next(&mut self) -> &'static str {
        let terminate = async {
            match self.terminate.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = terminate => "SIGTERM",
        }
    }
}

/// Marks the moment of the signal in the history (process `nemesis`, `interrupted`), before the teardown.
pub fn record(slot: &HistorySlot, signal: &str) {
    if let Some(history) = slot.get() {
        history.record("nemesis", crate::history::OpType::Info, "interrupted", json!({"signal": signal}));
    }
}

/// What the run was asked to do (copied into the report).
pub struct RunMeta<'a> {
    pub seed: u64,
    pub nemesis: &'a str,
    pub time_limit_s: u64,
    pub tollgate: String,
}

/// The report of a run interrupted by `signal`: `valid` false, every checker `UNKNOWN`, the operations and
/// nemesis events of the history so far. `history` is `None` when the signal came before the workload.
pub fn report(history: Option<&History>, signal: &str, meta: &RunMeta<'_>) -> Value {
    let events = history.map(History::events).unwrap_or_default();
    let ops = pair(&events);
    let nemesis_events: Vec<&crate::history::Event> =
        events.iter().filter(|event| event.process == "nemesis").collect();
    let healed = nemesis_events.iter().any(|event| event.f == "heal");
    let phase = match (history, healed) {
        (None, _) => "setup (regions, mocks, budgets): no workload yet",
        (Some(_), false) => "workload",
        (Some(_), true) => "after the time limit: converging, settling or checking",
    };
    let in_flight = ops.iter().filter(|op| op.complete.is_none()).count();
    // When the signal came (recorded by [`record`]), not when the report is written after the teardown.
    let at_ms = events.iter().rev().find(|event| event.f == "interrupted").map(|event| event.time_ms);
    let checkers: serde_json::Map<String, Value> =
        CHECKERS.iter().map(|name| (name.to_string(), json!("UNKNOWN"))).collect();
    json!({
        "interrupted": {
            "signal": signal,
            "at_ms": at_ms.or(history.map(History::elapsed_ms)),
            "phase": phase,
            "events": events.len(),
            "ops_in_flight": in_flight,
            "why_no_verdicts": "the run was cut short: requests in flight, nothing healed or settled, so the \
                                checkers cannot judge S1-S3, L1 or linearizability",
        },
        "checkers": checkers,
        "valid": false,
        "ops": report::op_counts(&ops),
        "nemeses": nemesis_events,
        "seed": meta.seed,
        "nemesis": meta.nemesis,
        "time_limit_s": meta.time_limit_s,
        "tollgate": meta.tollgate,
    })
}

/// Syncs the history's journal and writes the interrupted report into `run_dir`.
pub fn write(run_dir: &Path, history: Option<&History>, signal: &str, meta: &RunMeta<'_>) -> anyhow::Result<()> {
    let synced = history.map_or(Ok(()), History::finish_journal);
    let path = run_dir.join("report.json");
    let text = serde_json::to_string_pretty(&report(history, signal, meta))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    synced
}

/// The end of an interrupted run, once the regions are down (`down`: how that went): the report written,
/// the run directory printed last, and an error naming the signal (exit 1).
pub fn finish(
    run_dir: &Path,
    slot: &HistorySlot,
    signal: &str,
    meta: &RunMeta<'_>,
    down: anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let written = write(run_dir, slot.get().as_ref(), signal, meta);
    println!("{}", run_dir.display());
    written?;
    down?;
    anyhow::bail!(
        "interrupted by {signal}: history.jsonl and report.json (marked interrupted) in {}",
        run_dir.display()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::time::Instant;

    use super::*;
    use crate::history::OpType;

    fn meta() -> RunMeta<'static> {
        RunMeta { seed: 7, nemesis: "kill", time_limit_s: 40, tollgate: "tollgate (test)".into() }
    }

    #[test]
    fn an_interrupted_report_has_no_verdicts_and_counts_what_happened() {
        let dir = std::env::temp_dir().join(format!("jepsen-interrupt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let history = History::with_journal(Instant::now(), &dir.join("history.jsonl")).unwrap();
        history.record("chat-1-0", OpType::Invoke, "chat", json!({"org": "acme"}));
        history.record("chat-1-0", OpType::Ok, "chat", json!({"status": 200}));
        history.record("nemesis", OpType::Info, "start", json!({"kind": "kill", "kill": 1}));
        history.record("chat-2-0", OpType::Invoke, "chat", json!({"org": "acme"}));
        let slot = HistorySlot::default();
        slot.set(history.clone());
        record(&slot, "SIGTERM");
        let signalled_ms = history.elapsed_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&dir, Some(&history), "SIGTERM", &meta()).unwrap();

        let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["valid"], json!(false));
        assert_eq!(report["interrupted"]["signal"], json!("SIGTERM"));
        assert_eq!(report["interrupted"]["phase"], json!("workload"));
        let at_ms = report["interrupted"]["at_ms"].as_f64().unwrap();
        assert!(at_ms <= signalled_ms, "the signal's time ({at_ms}), not the report's");
        assert_eq!(report["interrupted"]["ops_in_flight"], json!(1));
        assert_eq!(report["checkers"]["S1"], json!("UNKNOWN"));
        assert_eq!(report["checkers"].as_object().unwrap().len(), CHECKERS.len());
        assert_eq!(report["ops"]["chat"]["ok"], json!(1));
        assert_eq!(report["ops"]["chat"]["info"], json!(1), "the request in flight is indeterminate");
        assert_eq!(report["nemeses"][0]["f"], json!("start"));
        let history_lines = std::fs::read_to_string(dir.join("history.jsonl")).unwrap().lines().count();
        assert_eq!(history_lines, 5, "four events and the interruption");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_signal_before_the_workload_still_writes_a_report() {
        let report = report(None, "SIGINT", &meta());
        assert_eq!(report["valid"], json!(false));
        assert_eq!(report["interrupted"]["events"], json!(0));
        assert!(report["interrupted"]["phase"].as_str().unwrap().starts_with("setup"));
    }
}
