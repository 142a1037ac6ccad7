//! The trace span of one gateway request and of each of its upstream attempts, built directly on the
//! OpenTelemetry SDK (no `tracing` span, no `tracing-opentelemetry` layer: issue 19 measured that path at
//! 1.5× the gateway's CPU per request).
//!
//! A [`TraceSpan`] is a shared handle (cloning it is a reference count): the phases record what they learn
//! into one plain list of attributes, and when the last handle is dropped the span ends — the SDK span gets
//! its name, status and attributes in one go and goes to the export queue, and the access log (when on)
//! gets its line from the same attributes. The SDK span itself is started with the request, so its ids
//! exist early: attempts are its children, and each attempt's `traceparent` goes to the upstream.
//!
//! With neither OTLP export nor the access log on, every constructor returns [`TraceSpan::none`] and
//! every method returns at once.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceFlags, Tracer as _};
use opentelemetry::{Context, Key, KeyValue, Value};

/// The name a request span keeps when no phase names it (it was refused before it was routed).
pub const REQUEST_SPAN: &str = "gen_ai.request";

/// A request's or an attempt's span; `TraceSpan::none()` when nothing is traced or logged.
#[derive(Clone, Default)]
pub struct TraceSpan(Option<Arc<Shared>>);

struct Shared(Mutex<State>);

struct State {
    /// The SDK span (`None` with OTLP off); it may be non-recording (not sampled), and still has ids.
    otel: Option<opentelemetry_sdk::trace::Span>,
    attributes: Vec<KeyValue>,
    /// A bit per key of `attributes` ([`key_bit`]): a key whose bit is clear is new, and is pushed without
    /// looking through the list.
    keys: u64,
    /// Prompt and completion text (routes with `trace_content`): exported, never in the access log.
    content: Vec<KeyValue>,
    name: Option<String>,
    failed: bool,
    /// Set for a request span while the access log is on: when it started.
    access: Option<(Instant, SystemTime)>,
}

/// A target's names as span values, made once with the route table: recording one is a reference count,
/// not a copy.
#[derive(Debug, Clone)]
pub struct TargetNames {
    pub provider: Arc<str>,
    pub model: Arc<str>,
    pub server_address: Arc<str>,
    /// `provider/model`.
    pub label: Arc<str>,
}

impl TargetNames {
    pub fn new(provider: &str, model: &str, server_address: &str) -> TargetNames {
        TargetNames {
            provider: provider.into(),
            model: model.into(),
            server_address: server_address.into(),
            label: format!("{provider}/{model}").into(),
        }
    }
}

/// The attributes a request span has room for from its start (it records about 20).
const ATTRIBUTES: usize = 24;

impl State {
    /// The state of a span nothing is recorded into (not sampled, and no access log).
    fn unrecorded(otel: Option<opentelemetry_sdk::trace::Span>) -> State {
        State { otel, attributes: Vec::new(), keys: 0, content: Vec::new(), name: None, failed: false, access: None }
    }
}

/// A key's bit in [`State::keys`]: from its length and two of its bytes, so equal keys always share it.
fn key_bit(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let (middle, last) = (bytes.get(bytes.len() / 2).copied(), bytes.last().copied());
    let hash = bytes.len().wrapping_mul(31)
        ^ usize::from(middle.unwrap_or(0)).wrapping_mul(7)
        ^ usize::from(last.unwrap_or(0));
    1 << (hash % 64)
}

fn key_bits(attributes: &[KeyValue]) -> u64 {
    attributes.iter().fold(0, |bits, kv| bits | key_bit(kv.key.as_str()))
}

/// `http.request.method`: the standard methods as static strings (no copy).
fn method_value(method: &http::Method) -> Value {
    let known = [
        (http::Method::GET, "GET"),
        (http::Method::POST, "POST"),
        (http::Method::PUT, "PUT"),
        (http::Method::DELETE, "DELETE"),
        (http::Method::HEAD, "HEAD"),
        (http::Method::OPTIONS, "OPTIONS"),
        (http::Method::PATCH, "PATCH"),
    ];
    match known.into_iter().find(|(known, _)| known == method) {
        Some((_, name)) => Value::String(name.into()),
        None => Value::String(method.as_str().to_owned().into()),
    }
}

/// A value recorded on a span: strings are copied (a shared `Arc<str>` is not), integers and floats kept as
/// OTLP numbers.
pub trait AttributeValue {
    fn into_value(self) -> Value;
}

impl AttributeValue for &str {
    fn into_value(self) -> Value {
        Value::String(self.to_owned().into())
    }
}

impl AttributeValue for &Arc<str> {
    fn into_value(self) -> Value {
        Value::String(Arc::clone(self).into())
    }
}

impl AttributeValue for String {
    fn into_value(self) -> Value {
        Value::String(self.into())
    }
}

impl AttributeValue for u64 {
    fn into_value(self) -> Value {
        i64::try_from(self).map_or_else(|_| Value::String(self.to_string().into()), Value::I64)
    }
}

impl AttributeValue for u16 {
    fn into_value(self) -> Value {
        Value::I64(self.into())
    }
}

impl AttributeValue for f64 {
    fn into_value(self) -> Value {
        Value::F64(self)
    }
}

impl AttributeValue for bool {
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}

impl TraceSpan {
    pub fn none() -> TraceSpan {
        TraceSpan(None)
    }

    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// The span of one gateway request, continuing the caller's W3C trace context (`traceparent`,
    /// `tracestate`).
    pub fn request(method: &http::Method, path: &str, headers: &http::HeaderMap) -> TraceSpan {
        let (exporting, logging) = (crate::telemetry::enabled(), crate::access_log::enabled());
        if !exporting && !logging {
            return TraceSpan::none();
        }
        let otel = crate::telemetry::tracer().map(|tracer| {
            let parent = caller_context(headers);
            // Room for every attribute the phases record, so ending the span never grows the SDK's list.
            let builder = tracer
                .span_builder(REQUEST_SPAN)
                .with_kind(SpanKind::Server)
                .with_attributes(Vec::with_capacity(ATTRIBUTES));
            tracer.build_with_context(builder, &parent)
        });
        // Sampled out and no access log: nothing will be recorded, so nothing is prepared.
        if !logging && !otel.as_ref().is_some_and(|span| span.is_recording()) {
            return TraceSpan::new(State::unrecorded(otel));
        }
        let mut attributes = Vec::with_capacity(ATTRIBUTES);
        attributes.push(KeyValue::new("http.request.method", method_value(method)));
        attributes.push(KeyValue::new("url.path", path.to_owned()));
        // The caller's trace id (with OTLP on, this span continues that trace).
        if let Some(trace_id) = caller_trace_id(headers) {
            attributes.push(KeyValue::new("trace_id", trace_id.to_owned()));
        }
        let access = logging.then(|| (Instant::now(), SystemTime::now()));
        TraceSpan::new(State {
            otel,
            keys: key_bits(&attributes),
            attributes,
            content: Vec::new(),
            name: None,
            failed: false,
            access,
        })
    }

    /// The child span of one upstream attempt (fallbacks and retries show as siblings). Exported only: the
    /// access log has one line per request.
    pub fn attempt(&self, target: &TargetNames) -> TraceSpan {
        let Some(parent) = self.lock().and_then(|state| state.otel.as_ref().map(|s| s.span_context().clone())) else {
            return TraceSpan::none();
        };
        let Some(tracer) = crate::telemetry::tracer() else { return TraceSpan::none() };
        let parent = Context::new().with_remote_span_context(parent);
        let builder =
            tracer.span_builder("gen_ai.attempt").with_kind(SpanKind::Client).with_attributes(Vec::with_capacity(6));
        let otel = tracer.build_with_context(builder, &parent);
        if !otel.is_recording() {
            return TraceSpan::new(State::unrecorded(Some(otel)));
        }
        let mut attributes = Vec::with_capacity(6);
        attributes.push(KeyValue::new("gen_ai.provider.name", (&target.provider).into_value()));
        attributes.push(KeyValue::new("gen_ai.request.model", (&target.model).into_value()));
        attributes.push(KeyValue::new("server.address", (&target.server_address).into_value()));
        let mut name = String::with_capacity("attempt ".len() + target.label.len());
        name.push_str("attempt ");
        name.push_str(&target.label);
        let keys = key_bits(&attributes);
        TraceSpan::new(State {
            otel: Some(otel),
            attributes,
            keys,
            content: Vec::new(),
            name: Some(name),
            failed: false,
            access: None,
        })
    }

    fn new(state: State) -> TraceSpan {
        TraceSpan(Some(Arc::new(Shared(Mutex::new(state)))))
    }

    /// The state (`None` for `TraceSpan::none()`).
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        let shared = self.0.as_ref()?;
        Some(shared.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The state, when there is something to record into: a recording SDK span or an access log line.
    fn recording(&self) -> Option<MutexGuard<'_, State>> {
        self.lock().filter(|state| state.access.is_some() || state.otel.as_ref().is_some_and(|s| s.is_recording()))
    }

    /// Sets `key` (a later value replaces an earlier one).
    pub fn record(&self, key: &'static str, value: impl AttributeValue) {
        let Some(mut state) = self.recording() else { return };
        let value = value.into_value();
        let bit = key_bit(key);
        let existing =
            if state.keys & bit == 0 { None } else { state.attributes.iter_mut().find(|kv| kv.key.as_str() == key) };
        match existing {
            Some(existing) => existing.value = value,
            None => {
                state.keys |= bit;
                state.attributes.push(KeyValue::new(Key::from_static_str(key), value));
            }
        }
    }

    /// Whether this span is exported (a sampled span with OTLP on), as opposed to absent, not sampled, or
    /// only feeding the access log.
    pub fn exports(&self) -> bool {
        self.lock().is_some_and(|state| state.otel.as_ref().is_some_and(|s| s.is_recording()))
    }

    /// Sets `key` on the exported span only: the access log never gets it (prompt and completion text).
    pub fn record_exported(&self, key: &'static str, value: String) {
        let Some(mut state) = self.lock() else { return };
        if state.otel.as_ref().is_some_and(|s| s.is_recording()) {
            state.content.retain(|kv| kv.key.as_str() != key);
            state.content.push(KeyValue::new(Key::from_static_str(key), value));
        }
    }

    /// The span's name (OTLP's span name; not an attribute).
    pub fn set_name(&self, name: impl FnOnce() -> String) {
        if let Some(mut state) = self.recording() {
            state.name = Some(name());
        }
    }

    /// Marks the span failed (status ERROR) with `error.type`.
    pub fn fail(&self, error_type: &str) {
        self.record("error.type", error_type);
        if let Some(mut state) = self.recording() {
            state.failed = true;
        }
    }

    /// A timestamped event on the exported span (e.g. a stream's first token).
    pub fn add_event(&self, name: &'static str) {
        if let Some(mut state) = self.lock() {
            if let Some(span) = state.otel.as_mut().filter(|span| span.is_recording()) {
                span.add_event(name, Vec::new());
            }
        }
    }

    /// This span's W3C trace context as headers for an upstream request; `None` with OTLP off.
    pub fn trace_headers(&self) -> Option<http::HeaderMap> {
        let state = self.lock()?;
        let context = state.otel.as_ref()?.span_context();
        Some(traceparent(context))
    }
}

impl Drop for Shared {
    /// The last handle is gone: the span ends, to the export queue and the access log.
    fn drop(&mut self) {
        let state = self.0.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((started, at)) = state.access {
            let trace_id = state.otel.as_ref().map(|span| span.span_context().trace_id());
            crate::access_log::write(&state.attributes, state.failed, trace_id, started, at);
        }
        let Some(mut span) = state.otel.take() else { return };
        if !span.is_recording() {
            return;
        }
        if let Some(name) = state.name.take() {
            span.update_name(name);
        }
        if state.failed {
            span.set_status(Status::error(""));
        }
        let mut attributes = std::mem::take(&mut state.attributes);
        attributes.append(&mut state.content);
        span.set_attributes(attributes);
        span.end();
    }
}

/// The caller's trace context, when its `traceparent` is valid; else a new trace.
fn caller_context(headers: &http::HeaderMap) -> Context {
    if !headers.contains_key("traceparent") {
        return Context::new();
    }
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&Headers(headers)))
}

/// The trace id of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn caller_trace_id(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()) && trace_id.bytes().any(|b| b != b'0'))
        .then_some(trace_id)
}

/// `traceparent` (and `tracestate` when there is one) for `context`, as the W3C propagator writes them.
fn traceparent(context: &SpanContext) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if !context.is_valid() {
        return headers;
    }
    // `00-<trace id>-<span id>-<flags>`, in hex written here (through `format!` it cost more than the rest
    // of the attempt span).
    let flags = (context.trace_flags() & TraceFlags::SAMPLED).to_u8();
    let mut value = [b'-'; 55];
    value[..2].copy_from_slice(b"00");
    write_hex(&mut value[3..35], &context.trace_id().to_bytes());
    write_hex(&mut value[36..52], &context.span_id().to_bytes());
    write_hex(&mut value[53..], &[flags]);
    if let Ok(value) = http::HeaderValue::from_bytes(&value) {
        headers.insert("traceparent", value);
    }
    let state = context.trace_state().header();
    if let (false, Ok(value)) = (state.is_empty(), http::HeaderValue::from_str(&state)) {
        headers.insert("tracestate", value);
    }
    headers
}

/// `bytes` in lowercase hex into `out` (twice as long).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// The caller's headers, read by the W3C trace-context propagator.
struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId, TraceState};

    #[test]
    fn traceparent_is_written_as_the_w3c_propagator_writes_it() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let span_id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        let state = TraceState::from_key_value([("vendor", "value")]).unwrap();
        let sampled = SpanContext::new(trace_id, span_id, TraceFlags::SAMPLED, false, state);
        let headers = traceparent(&sampled);
        assert_eq!(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(headers["tracestate"], "vendor=value");
        let unsampled = SpanContext::new(trace_id, span_id, TraceFlags::default(), false, TraceState::default());
        let headers = traceparent(&unsampled);
        assert_eq!(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert!(!headers.contains_key("tracestate"));
        assert!(traceparent(&SpanContext::empty_context()).is_empty());
    }

    #[test]
    fn only_a_valid_callers_trace_id_is_taken() {
        let with = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", http::HeaderValue::from_str(value).unwrap());
            caller_trace_id(&headers).map(str::to_owned)
        };
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(with(&format!("00-{id}-00f067aa0ba902b7-01")).as_deref(), Some(id));
        assert_eq!(with(&format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32))), None);
        assert_eq!(with("00-4bf92f35-00f067aa0ba902b7-01"), None);
        assert_eq!(caller_trace_id(&http::HeaderMap::new()), None);
    }

    #[test]
    fn a_key_recorded_again_replaces_its_value() {
        let span = TraceSpan::new(State::unrecorded(None));
        span.lock().unwrap().access = Some((Instant::now(), SystemTime::now()));
        let keys = ["tollgate.org", "error.type", "gen_ai.usage.input_tokens", "http.response.status_code"];
        for (round, key) in keys.iter().cycle().take(3 * keys.len()).enumerate() {
            span.record(key, round as u64);
        }
        let state = span.lock().unwrap();
        let recorded: Vec<(&str, &Value)> = state.attributes.iter().map(|kv| (kv.key.as_str(), &kv.value)).collect();
        assert_eq!(recorded.len(), keys.len(), "{recorded:?}");
        assert_eq!(recorded[1], ("error.type", &Value::I64(9)));
        assert_eq!(key_bit("error.type"), key_bit(&String::from("error.type")));
    }

    #[test]
    fn with_nothing_on_no_span_is_made_and_recording_is_a_no_op() {
        let span = TraceSpan::request(&http::Method::POST, "/v1/chat/completions", &http::HeaderMap::new());
        assert!(span.is_none());
        span.record("tollgate.org", "acme");
        span.fail("boom");
        assert!(span.attempt(&TargetNames::new("p", "m", "host:1")).is_none());
        assert!(span.trace_headers().is_none());
    }
}
