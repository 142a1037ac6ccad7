//! Logs and OTLP traces. Logs go to stderr (`RUST_LOG` filters them). Traces are on when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, or `[node.otlp]`: one span
//! per gateway request following the OpenTelemetry GenAI conventions and a child span per upstream attempt
//! (built on the SDK's tracer directly: `trace_span.rs`), and admin writes (a `tracing` span through
//! `tracing-opentelemetry`: rare, so its cost does not matter) with, on the leader, the forwarded write and
//! the Raft proposal (index, term) in the same trace (`tollgate_consensus::trace`). They are exported over gRPC (tonic) by the
//! SDK's batch processor — a bounded queue drained by its own thread, with the gRPC channel on a runtime of
//! its own, so a slow or absent collector never holds a request and exporting takes nothing from the
//! request workers; spans beyond the queue are dropped and counted (`otlp_queue.rs`). The SDK reads the
//! other standard variables itself: `OTEL_SERVICE_NAME` (default here: `tollgate`), `OTEL_TRACES_SAMPLER[_ARG]`,
//! `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`.
//!
//! With tracing off, the request path creates no span at all. Prompt and completion text are never recorded
//! unless a route opts in (`trace_content`, see `proxy/trace_content.rs`).

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// The `tracing` target of the spans exported over OTLP through `tracing-opentelemetry` (admin writes and
/// the consensus crate's forwarded-write and Raft proposal spans; only those: openraft's, hyper's and our
/// own log spans stay local).
pub const TARGET: &str = tollgate_consensus::trace::TARGET;

/// The tracer of the request spans, once export is set up.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether spans are exported.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The SDK tracer request spans are built with; `None` while export is off.
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
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
/// when an OTLP endpoint is configured, the trace exporter. A broken exporter setup is logged and leaves
/// tracing off; it never stops the node.
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
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tollgate"))
            .with_filter(tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO))
    });
    tracing_subscriber::registry().with(logs).with(traces).init();
    if let Some(err) = setup_error {
        tracing::warn!(%err, "OTLP trace export could not be set up; tracing is off");
    }
    if let Some(provider) = &provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let _ = TRACER.set(provider.tracer("tollgate"));
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
    // The gRPC channel's tasks (encoding, HTTP/2, reconnecting) run where it is built: on a runtime of its
    // own, not on the request workers.
    let exporter = {
        let _runtime = export_runtime()?.enter();
        builder.build()?
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name("tollgate");
    }
    let mut provider =
        SdkTracerProvider::builder().with_span_processor(counted_batches(exporter)).with_resource(resource.build());
    if let (Some(ratio), false) = (config.and_then(|c| c.sample_ratio), set("OTEL_TRACES_SAMPLER")) {
        use opentelemetry_sdk::trace::Sampler;
        let ratio = ratio.clamp(0.0, 1.0);
        provider = provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))));
    }
    Ok(provider.build())
}

/// The SDK's batch processor (configured by the `OTEL_BSP_*` variables) with its queue counted.
fn counted_batches(exporter: opentelemetry_otlp::SpanExporter) -> crate::otlp_queue::CountingProcessor {
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
    const DEFAULT_QUEUE: usize = 2048;
    let capacity = std::env::var("OTEL_BSP_MAX_QUEUE_SIZE")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .filter(|size| *size > 0)
        .unwrap_or(DEFAULT_QUEUE);
    let config = BatchConfigBuilder::default().with_max_queue_size(capacity).build();
    let batches =
        BatchSpanProcessor::builder(crate::otlp_queue::CountingExporter(exporter)).with_batch_config(config).build();
    crate::otlp_queue::CountingProcessor::new(batches, capacity)
}

/// A one-thread runtime for the exporter's gRPC channel, on its own thread for the life of the process.
fn export_runtime() -> anyhow::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
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
