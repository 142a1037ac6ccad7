//! The access log (`[node] access_log = "stderr"` or a file path): one JSON line per gateway request, with
//! the fields of the request's trace span (GenAI and `tollgate.*` attributes: org, key id — never the key —,
//! route, target, tokens, cost, TTFT, budget decision, guardrails, error), its HTTP method, path and status,
//! the trace id, the node, and when it started and how long it took.
//!
//! The line is written from the request's trace span (`trace_span.rs`), which exists whenever OTLP export or
//! the access log is on, when the span ends — after the response for a complete answer, after the stream's
//! end for a stream (the meter holds the span until then), so usage is in it. Lines go through a bounded queue
//! to a writer thread: a slow disk never holds a request; lines beyond the queue are dropped and counted
//! (`tollgate_access_log_dropped_total`). A file is created 0600 and appended to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::TraceId;
use opentelemetry::KeyValue;
use serde_json::{Map, Value};

/// Lines waiting for the writer thread at most.
const QUEUE: usize = 16_384;

struct Sink {
    lines: SyncSender<String>,
    node: u64,
}

static SINK: OnceLock<Sink> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Whether the access log is on (the request span is then created even without OTLP).
pub fn enabled() -> bool {
    SINK.get().is_some()
}

/// Lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Turns the access log on for this process, writing to `stderr` or appending to the file at `target`.
/// Once per process (a second call is an error).
pub fn start(target: &str, node: u64) -> anyhow::Result<()> {
    let mut out: Box<dyn std::io::Write + Send> = if target == "stderr" {
        Box::new(std::io::stderr())
    } else {
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(target)
            .map_err(|err| anyhow::anyhow!("node.access_log: cannot open {target}: {err}"))?;
        Box::new(std::io::BufWriter::new(file))
    };
    let (lines, queue) = sync_channel::<String>(QUEUE);
    SINK.set(Sink { lines, node }).map_err(|_| anyhow::anyhow!("node.access_log: already on in this process"))?;
    std::thread::Builder::new().name("access-log".into()).spawn(move || {
        write_lines(&queue, &mut out);
    })?;
    Ok(())
}

/// The writer thread's loop, until every sender is gone: write everything queued, then flush once the queue
/// is drained, so lines reach the file promptly without a syscall per line under load. Each line taken
/// from the queue is written (peeking would consume one).
fn write_lines(queue: &std::sync::mpsc::Receiver<String>, out: &mut dyn std::io::Write) {
    while let Ok(first) = queue.recv() {
        let _ = out.write_all(first.as_bytes());
        for line in queue.try_iter() {
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }
}

/// Writes the line of a request span that ended: its attributes, `otel.status_code` when it failed, the
/// trace id (the caller's when it sent one — an attribute —, else the span's own with OTLP on), when it
/// started and how long it took. Never blocks: a full queue drops the line and counts it.
pub fn write(attributes: &[KeyValue], failed: bool, own_trace_id: Option<TraceId>, started: Instant, at: SystemTime) {
    let Some(sink) = SINK.get() else { return };
    let mut line = Map::new();
    line.insert("ts".into(), Value::String(crate::clock::rfc3339_ms(at)));
    line.insert("node".into(), Value::from(sink.node));
    line.insert("duration_ms".into(), Value::from(started.elapsed().as_secs_f64() * 1e3));
    for attribute in attributes {
        line.insert(attribute.key.as_str().to_owned(), json(&attribute.value));
    }
    if failed {
        line.insert("otel.status_code".into(), Value::String("ERROR".into()));
    }
    if let (false, Some(trace_id)) = (line.contains_key("trace_id"), own_trace_id.filter(|id| *id != TraceId::INVALID))
    {
        line.insert("trace_id".into(), Value::String(trace_id.to_string()));
    }
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sink.lines.try_send(text) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn json(value: &opentelemetry::Value) -> Value {
    match value {
        opentelemetry::Value::Bool(b) => Value::Bool(*b),
        opentelemetry::Value::I64(i) => Value::from(*i),
        opentelemetry::Value::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        opentelemetry::Value::String(s) => Value::String(s.as_str().to_owned()),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines queued while the writer was busy are all written, in order (the loop once dropped every line
    /// it peeked at when the queue held more than one).
    #[test]
    fn every_queued_line_is_written_in_order() {
        let (lines, queue) = sync_channel::<String>(QUEUE);
        for i in 0..100 {
            assert!(lines.send(format!("{i}\n")).is_ok());
        }
        drop(lines);
        let mut out = Vec::new();
        write_lines(&queue, &mut out);
        let expected: String = (0..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }
}
