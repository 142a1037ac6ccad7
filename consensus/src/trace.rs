//! A write's trace across the cluster: a follower forwarding a write to the leader sends the W3C trace
//! context of the span it writes in (`traceparent` in the gRPC metadata), the leader continues that trace
//! with a span of its own, and the leader's Raft proposal is a child span carrying the log index and term
//! it committed at. So an admin change can be followed from the API call to its commit on the leader.
//!
//! The spans are `tracing` spans with the target [`TARGET`]: a node exporting traces (the gateway's
//! `telemetry.rs`) sends that target over OTLP through `tracing-opentelemetry`; any other subscriber sees
//! ordinary spans. A proposal made outside a sampled trace (a budget grant from the request path, a
//! membership change) gets no span at all, so an untraced write costs a look-up of the current span.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::state::Request;
use crate::types::NodeId;

/// The `tracing` target of the spans exported over OTLP (the gateway filters its OTLP layer on it).
pub const TARGET: &str = "tollgate::otel";

/// Adds the current span's trace context to an outgoing cluster RPC (nothing outside a trace, or with
/// export off: the global propagator is then a no-op).
pub(crate) fn inject<T>(request: &mut tonic::Request<T>) {
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut Metadata(request.metadata_mut()));
    });
}

/// On the leader: the span of a write a follower forwarded, continuing the follower's trace; `Span::none()`
/// when the RPC carried no trace context.
pub(crate) fn forwarded_write_span(metadata: &MetadataMap, request: &Request, forwarder: &str) -> Span {
    if !metadata.contains_key("traceparent") {
        return Span::none();
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&Readable(metadata)));
    if !parent.span().span_context().is_valid() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "raft.forwarded_write",
        otel.name = "raft forwarded write",
        otel.kind = "server",
        otel.status_code = Empty,
        tollgate.admin.change = request.command.summary(),
        tollgate.raft.forwarded_by = forwarder,
        error.type = Empty,
    );
    // Fails only when the span is disabled (no exporter): nothing to continue then.
    let _ = span.set_parent(parent);
    span
}

/// The span of one Raft proposal on the leader (`client_write`, which returns once the entry is committed
/// and applied here), a child of the current span; `Span::none()` outside a sampled trace.
pub(crate) fn proposal_span(node_id: NodeId, request: &Request) -> Span {
    let current = Span::current();
    if current.is_none() || !current.context().span().span_context().is_sampled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "raft.propose",
        otel.name = "raft propose",
        otel.kind = "internal",
        otel.status_code = Empty,
        tollgate.raft.command = request.command.summary(),
        tollgate.raft.leader = node_id,
        tollgate.raft.index = Empty,
        tollgate.raft.term = Empty,
        error.type = Empty,
    )
}

/// The proposal is committed and applied: at `index`, in `term`.
pub(crate) fn committed(span: &Span, index: u64, term: u64) {
    span.record("tollgate.raft.index", index);
    span.record("tollgate.raft.term", term);
}

/// The proposal or forwarded write failed with `error_type`.
pub(crate) fn failed(span: &Span, error_type: &str) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
}

/// gRPC metadata, written by the W3C trace-context propagator.
struct Metadata<'a>(&'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

/// gRPC metadata, read by the W3C trace-context propagator.
struct Readable<'a>(&'a MetadataMap);

impl Extractor for Readable<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|key| match key {
                tonic::metadata::KeyRef::Ascii(key) => Some(key.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}
