//! Logs and OTLP traces. Logs go to stderr (`RUST_LOG` filters them). Traces are on when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: one span per gateway
//! request following the OpenTelemetry GenAI conventions, a child span per upstream attempt, exported over
//! gRPC (tonic) by the SDK's batch processor — a bounded queue on its own thread, so a slow or absent
//! collector never holds a request (spans beyond the queue are dropped). The SDK reads the other standard
//! variables itself: `OTEL_SERVICE_NAME` (default here: `tollgate`), `OTEL_TRACES_SAMPLER[_ARG]`,
//! `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`.
//!
//! With tracing off, the request path creates no span at all ([`request_span`] returns `Span::none()`).
//! Prompt and completion text are never recorded.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// The `tracing` target of the spans exported over OTLP (and only those: openraft's, hyper's and our own
/// log spans stay local).
pub const TARGET: &str = "tollgate::otel";

/// The name of the gateway request span (the access log writes one line per such span).
pub const REQUEST_SPAN: &str = "gen_ai.request";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter's handle: [`Telemetry::shutdown`] flushes what is queued before the process exits.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(err) = provider.shutdown() {
                tracing::warn!(%err, "flushing traces at exit failed");
            }
        }
    }
}

/// Installs the global subscriber: the log layer (filtered by `RUST_LOG`, else `default_filter`) and,
/// when an OTLP endpoint is configured, the trace exporter. Call inside the tokio runtime: the gRPC
/// channel is bound to it. A broken exporter setup is logged and leaves tracing off; it never stops the
/// node.
pub fn init(default_filter: &str, config: Option<&OtlpConfig>) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter);
    let (provider, setup_error) = match otlp_endpoint(config) {
        Some(endpoint) => match exporter(&endpoint, config) {
            Ok(provider) => (Some(provider), None),
            Err(err) => (None, Some(err)),
        },
        None => (None, None),
    };
    let traces = provider.as_ref().map(|provider| {
        let tracer = provider.tracer("tollgate");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .with(crate::access_log::AccessLogLayer { target: TARGET, span_name: REQUEST_SPAN })
        .init();
    if let Some(err) = setup_error {
        tracing::warn!(%err, "OTLP trace export could not be set up; tracing is off");
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        ENABLED.store(true, Ordering::Relaxed);
        tracing::info!(endpoint = otlp_endpoint(config).unwrap_or_default(), "exporting traces over OTLP/gRPC");
    }
    Telemetry { provider }
}

/// `[node.otlp]`: trace export from the config file. The standard `OTEL_*` variables win over it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's gRPC endpoint, e.g. `http://collector:4317` (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Sent with every export (`OTEL_EXPORTER_OTLP_HEADERS`), e.g. an API key for a hosted collector.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub timeout_ms: Option<u64>,
    /// The share of new traces recorded, 0 to 1 (a caller's sampled trace is always continued);
    /// `OTEL_TRACES_SAMPLER[_ARG]` win. Default 1.
    pub sample_ratio: Option<f64>,
}

fn set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

fn otlp_endpoint(config: Option<&OtlpConfig>) -> Option<String> {
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.trim().is_empty()))
        .or_else(|| config.and_then(|config| config.endpoint.clone()).filter(|e| !e.trim().is_empty()))
}

fn exporter(endpoint: &str, config: Option<&OtlpConfig>) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint);
    if let Some(config) = config {
        if let (Some(ms), false) = (config.timeout_ms, set("OTEL_EXPORTER_OTLP_TIMEOUT")) {
            builder = builder.with_timeout(std::time::Duration::from_millis(ms));
        }
        if !config.headers.is_empty() && !set("OTEL_EXPORTER_OTLP_HEADERS") {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (name, value) in &config.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| anyhow::anyhow!("node.otlp.headers: `{name}` is not a header name"))?;
                let value =
                    value.parse().map_err(|_| anyhow::anyhow!("node.otlp.headers.{name}: not a header value"))?;
                metadata.insert(key, value);
            }
            builder = builder.with_metadata(metadata);
        }
    }
    let exporter = builder.build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("tollgate");
    }
    let mut provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build());
    if let (Some(ratio), false) = (config.and_then(|c| c.sample_ratio), set("OTEL_TRACES_SAMPLER")) {
        use opentelemetry_sdk::trace::Sampler;
        let ratio = ratio.clamp(0.0, 1.0);
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))));
    }
    Ok(provider.build())
}

/// The span of one gateway request, continuing the caller's W3C trace context (`traceparent`,
/// `tracestate`). Its fields are filled in as the phases learn them; `Span::none()` when neither OTLP nor
/// the access log is on.
pub fn request_span(method: &http::Method, path: &str, headers: &http::HeaderMap) -> Span {
    if !enabled() && !crate::access_log::enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "gen_ai.request",
        http.request.method = method.as_str(),
        url.path = path,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = tracing::field::Empty,
        gen_ai.request.model = tracing::field::Empty,
        gen_ai.request.max_tokens = tracing::field::Empty,
        gen_ai.provider.name = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        error.type = tracing::field::Empty,
        server.address = tracing::field::Empty,
        tollgate.org = tracing::field::Empty,
        tollgate.team = tracing::field::Empty,
        tollgate.key_id = tracing::field::Empty,
        tollgate.route = tracing::field::Empty,
        tollgate.target = tracing::field::Empty,
        tollgate.cost_usd = tracing::field::Empty,
        tollgate.ttft_ms = tracing::field::Empty,
        tollgate.usage_estimated = tracing::field::Empty,
        tollgate.budget = tracing::field::Empty,
        tollgate.budget.output_cap = tracing::field::Empty,
        tollgate.guardrails.flagged = tracing::field::Empty,
        tollgate.guardrails.blocked = tracing::field::Empty,
    );
    if enabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&Headers(headers)));
        let _ = span.set_parent(parent);
    }
    // The caller's trace id (with OTLP on, our spans continue that trace). Not read back from the OTLP span:
    // asking tracing-opentelemetry for its context starts the span, and the name set later is then lost.
    if let Some(trace_id) = caller_trace_id(headers) {
        span.record("trace_id", trace_id);
    }
    span
}

/// The trace id of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn caller_trace_id(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()) && trace_id != "0".repeat(32))
        .then_some(trace_id)
}

/// `span`'s W3C trace context as headers for an upstream request; `None` with tracing off.
pub fn trace_headers(span: &Span) -> Option<http::HeaderMap> {
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let mut headers = http::HeaderMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeadersMut(&mut headers))
    });
    Some(headers)
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
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

/// The span of one admin write, from the API to its commit: the change, whether this node led (else
/// it forwarded to the leader; recorded when the write is through), and the Raft index it committed at (or
/// the error).
pub fn admin_write_span(change: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "admin.write",
        otel.name = "admin write",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        tollgate.admin.change = change,
        tollgate.raft.forwarded = tracing::field::Empty,
        tollgate.raft.index = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// The child span of one upstream attempt (fallbacks and retries show as siblings).
pub fn attempt_span(parent: &Span, provider: &str, upstream_model: &str, server_address: &str) -> Span {
    if parent.is_none() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        parent: parent,
        "gen_ai.attempt",
        otel.name = format!("attempt {provider}/{upstream_model}"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.provider.name = provider,
        gen_ai.request.model = upstream_model,
        server.address = server_address,
        error.type = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    )
}
