//! The access log (`[node] access_log = "stderr"` or a file path): one JSON line per gateway request, with
//! the fields of the request's trace span (GenAI and `tollgate.*` attributes: org, key id — never the key —,
//! route, target, tokens, cost, TTFT, budget decision, guardrails, error), its HTTP method, path and status,
//! the trace id, the node, and when it started and how long it took.
//!
//! It is a `tracing` layer over the request span (the telemetry module's `request_span`), which exists whenever OTLP
//! export or the access log is on: the layer collects the span's fields as the phases record them and
//! writes the line when the span closes — after the response for a complete answer, after the stream's end
//! for a stream (the meter holds the span until then), so usage is in it. Lines go through a bounded queue
//! to a writer thread: a slow disk never holds a request; lines beyond the queue are dropped and counted
//! (`tollgate_access_log_dropped_total`). A file is created 0600 and appended to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

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
/// Once per process (a second call is an error); the layer must be installed (`telemetry::init`).
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

/// The layer: install it once with the subscriber; it does nothing until [`start`]. It follows the spans
/// of one target and name (the gateway's request span).
pub struct AccessLogLayer {
    pub target: &'static str,
    pub span_name: &'static str,
}

struct Entry {
    fields: Map<String, Value>,
    started: Instant,
    at: SystemTime,
}

struct Collect<'a>(&'a mut Map<String, Value>);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::Bool(value));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for AccessLogLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let metadata = attrs.metadata();
        if !enabled() || metadata.target() != self.target || metadata.name() != self.span_name {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut Collect(&mut fields));
        span.extensions_mut().insert(Entry { fields, started: Instant::now(), at: SystemTime::now() });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(entry) = extensions.get_mut::<Entry>() {
            values.record(&mut Collect(&mut entry.fields));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(entry) = span.extensions_mut().remove::<Entry>() else { return };
        drop(span);
        let Some(sink) = SINK.get() else { return };
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(crate::clock::rfc3339_ms(entry.at)));
        line.insert("node".into(), Value::from(sink.node));
        line.insert("duration_ms".into(), Value::from(entry.started.elapsed().as_secs_f64() * 1e3));
        // The span's own bookkeeping fields are not request facts.
        line.extend(entry.fields.into_iter().filter(|(name, _)| !matches!(name.as_str(), "otel.kind" | "otel.name")));
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sink.lines.try_send(text) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
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
