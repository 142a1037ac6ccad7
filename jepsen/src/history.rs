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
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    events: Vec<Event>,
    /// `history.jsonl` written as the run goes: each event is a line in the file (flushed to the
    /// kernel) when it is recorded, so an interrupted or crashed harness still leaves its history.
    journal: Option<Journal>,
}

struct Journal {
    path: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    /// The first write error (the run goes on; `finish_journal` reports it).
    error: Option<String>,
}

impl Journal {
    fn append(&mut self, event: &Event) {
        if self.error.is_some() {
            return;
        }
        let written = serde_json::to_writer(&mut self.out, event)
            .map_err(std::io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush());
        if let Err(err) = written {
            self.error = Some(format!("writing {}: {err}", self.path.display()));
        }
    }
}

impl History {
    pub fn new(started: Instant) -> Self {
        History { started, inner: Arc::new(Mutex::new(Inner { events: Vec::new(), journal: None })) }
    }

    /// A history that also appends every event to `path` (created or truncated) as it is recorded.
    pub fn with_journal(started: Instant, path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let journal = Journal { path: path.to_owned(), out: std::io::BufWriter::new(file), error: None };
        Ok(History { started, inner: Arc::new(Mutex::new(Inner { events: Vec::new(), journal: Some(journal) })) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Syncs the journal to disk; an error if any write to it failed during the run.
    pub fn finish_journal(&self) -> anyhow::Result<()> {
        let mut inner = self.lock();
        let Some(journal) = inner.journal.as_mut() else {
            return Ok(());
        };
        if let Some(error) = &journal.error {
            anyhow::bail!("{error}");
        }
        journal.out.flush().with_context(|| format!("writing {}", journal.path.display()))?;
        journal.out.get_ref().sync_all().with_context(|| format!("syncing {}", journal.path.display()))
    }

    pub fn elapsed_ms(&self) -> f64 {
        (self.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Appends an event and returns its index.
    pub fn record(&self, process: &str, kind: OpType, f: &str, value: Value) -> usize {
        let mut inner = self.lock();
        let index = inner.events.len();
        let time_ms = self.elapsed_ms();
        let event = Event { index, time_ms, process: process.to_owned(), kind, f: f.to_owned(), value };
        if let Some(journal) = inner.journal.as_mut() {
            journal.append(&event);
        }
        inner.events.push(event);
        index
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Completions so far (ok, fail, info) of client operations, nemesis events left out.
    pub fn outcome_counts(&self) -> (u64, u64, u64) {
        let inner = self.lock();
        let mut counts = (0, 0, 0);
        for event in inner.events.iter().filter(|event| event.process != "nemesis" && event.process != "sampler") {
            match event.kind {
                OpType::Ok => counts.0 += 1,
                OpType::Fail => counts.1 += 1,
                OpType::Info => counts.2 += 1,
                OpType::Invoke => {}
            }
        }
        counts
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]
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

    /// Every recorded event is in the file at once, before any flush at the end: what a run killed
    /// part-way (SIGKILL included) leaves behind is the history up to its last event.
    #[test]
    fn the_journal_holds_every_event_as_soon_as_it_is_recorded() {
        let path = std::env::temp_dir().join(format!("jepsen-journal-{}.jsonl", std::process::id()));
        let history = History::with_journal(Instant::now(), &path).expect("journal file");
        history.record("a", OpType::Invoke, "write", json!(1));
        history.record("nemesis", OpType::Info, "kill", json!({"node": 2}));
        history.record("a", OpType::Ok, "write", json!(1));
        // Read by another handle while the history is still open (no finish, no drop).
        let text = std::fs::read_to_string(&path).expect("journal readable");
        let lines: Vec<Event> = text.lines().map(|line| serde_json::from_str(line).expect("a JSON event")).collect();
        let recorded = history.events();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, event) in lines.iter().zip(&recorded) {
            assert_eq!(
                (line.index, &line.process, line.kind, &line.f),
                (event.index, &event.process, event.kind, &event.f)
            );
            assert_eq!(line.value, event.value);
        }
        history.record("a", OpType::Invoke, "read", json!(null));
        history.finish_journal().expect("synced");
        let text = std::fs::read_to_string(&path).expect("journal readable");
        assert_eq!(text.lines().count(), 4);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_journal_that_cannot_be_created_is_an_error() {
        let path = std::env::temp_dir().join("jepsen-no-such-dir-for-journal").join("history.jsonl");
        assert!(History::with_journal(Instant::now(), &path).is_err());
    }
}
