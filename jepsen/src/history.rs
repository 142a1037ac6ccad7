//! The operation history of a run, Jepsen-style: every client operation is recorded as an `invoke`
//! followed by exactly one completion — `ok` (it happened), `fail` (it certainly did not) or `info`
//! (indeterminate: it may or may not have taken effect, e.g. a timeout). Nemesis actions are recorded as
//! `info` events of the `nemesis` process. Written as JSON lines (`history.jsonl`).

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history (0, 1, 2, …).
    pub index: usize,
    /// Milliseconds since the run started (monotonic clock).
    pub time_ms: f64,
    /// `chat-2-1` (region 2, worker 1), `config-0`, `sampler`, `nemesis`, `checker`.
    pub process: String,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// `chat`, `write`, `read`, `budget`, or the nemesis action.
    pub f: String,
    /// The operation's argument on invoke and its result on completion.
    pub value: Value,
}

#[derive(Clone)]
pub struct History {
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl History {
    pub fn new(started: Instant) -> Self {
        History { started, events: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn elapsed_ms(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Appends an event and returns its index.
    pub fn record(&self, process: &str, kind: OpType, f: &str, value: Value) -> usize {
        let mut events = self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = events.len();
        let time_ms = self.elapsed_ms();
        events.push(Event { index, time_ms, process: process.to_owned(), kind, f: f.to_owned(), value });
        index
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Completions so far (ok, fail, info) of client operations, nemesis events left out.
    pub fn outcome_counts(&self) -> (u64, u64, u64) {
        let events = self.events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut counts = (0, 0, 0);
        for event in events.iter().filter(|event| event.process != "nemesis" && event.process != "sampler") {
            match event.kind {
                OpType::Ok => counts.0 += 1,
                OpType::Fail => counts.1 += 1,
                OpType::Info => counts.2 += 1,
                OpType::Invoke => {}
            }
        }
        counts
    }

    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        for event in self.events() {
            serde_json::to_writer(&mut out, &event)?;
            out.write_all(b"\n")?;
        }
        out.flush().with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// An invocation paired with its completion (`None`: the run ended first, i.e. indeterminate).
#[derive(Debug, Clone)]
pub struct Op {
    pub process: String,
    pub f: String,
    pub invoke: Event,
    pub complete: Option<Event>,
}

impl Op {
    pub fn outcome(&self) -> OpType {
        self.complete.as_ref().map_or(OpType::Info, |event| event.kind)
    }
}

/// Pairs each `invoke` with the next completion of the same process (a process runs one op at a time).
pub fn pair(events: &[Event]) -> Vec<Op> {
    let mut open: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut ops: Vec<Op> = Vec::new();
    for event in events {
        match event.kind {
            OpType::Invoke => {
                open.insert(&event.process, ops.len());
                ops.push(Op {
                    process: event.process.clone(),
                    f: event.f.clone(),
                    invoke: event.clone(),
                    complete: None,
                });
            }
            _ => {
                if let Some(position) = open.remove(event.process.as_str()) {
                    ops[position].complete = Some(event.clone());
                }
            }
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_invocations_with_their_completion_per_process() {
        let history = History::new(Instant::now());
        history.record("a", OpType::Invoke, "write", json!(1));
        history.record("b", OpType::Invoke, "read", json!(null));
        history.record("nemesis", OpType::Info, "isolate", json!({"node": 1}));
        history.record("b", OpType::Ok, "read", json!(1));
        history.record("a", OpType::Info, "write", json!("timeout"));
        history.record("a", OpType::Invoke, "read", json!(null));
        let ops = pair(&history.events());
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].outcome(), OpType::Info);
        assert_eq!(ops[1].outcome(), OpType::Ok);
        assert_eq!(ops[2].outcome(), OpType::Info, "never completed: indeterminate");
        let line = serde_json::to_string(&history.events()[0]).unwrap_or_default();
        assert!(line.contains(r#""type":"invoke""#), "{line}");
    }
}
