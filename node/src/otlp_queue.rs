//! The OTLP export queue, made visible: the SDK's batch processor (a bounded channel drained by its own
//! thread) wrapped so that every span is accounted for — queued, exported, dropped because the queue was
//! full (a collector that is slow or stalled), or dropped because its export failed (a collector that is
//! down). Rendered on `/metrics` as `tollgate_otlp_*`.
//!
//! The bound is ours, at the batch processor's own queue size: a span is admitted only while fewer than that
//! many are waiting (in the channel or in the batch being assembled), so the SDK's channel never overflows
//! and no drop goes uncounted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

/// Spans accepted and not yet handed to the exporter.
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// The queue's bound (0 while export is off).
static CAPACITY: AtomicUsize = AtomicUsize::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);
static DROPPED_FULL: AtomicU64 = AtomicU64::new(0);
static DROPPED_FAILED: AtomicU64 = AtomicU64::new(0);

/// The batch processor, admitting spans only while the queue has room.
#[derive(Debug)]
pub struct CountingProcessor {
    inner: BatchSpanProcessor,
    capacity: usize,
}

impl CountingProcessor {
    /// `inner` must be built with a queue of `capacity` spans, exporting through a [`CountingExporter`].
    pub fn new(inner: BatchSpanProcessor, capacity: usize) -> CountingProcessor {
        CAPACITY.store(capacity, Ordering::Relaxed);
        CountingProcessor { inner, capacity }
    }
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if WAITING.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            WAITING.fetch_sub(1, Ordering::AcqRel);
            DROPPED_FULL.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what each batch became.
#[derive(Debug)]
pub struct CountingExporter<E>(pub E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        // The batch has left the queue (the processor's thread calls this, then waits for the result).
        let count = batch.len();
        WAITING.fetch_sub(count, Ordering::AcqRel);
        let export = self.0.export(batch);
        async move {
            let result = export.await;
            let counter = if result.is_ok() { &EXPORTED } else { &DROPPED_FAILED };
            counter.fetch_add(count as u64, Ordering::Relaxed);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// The queue's series, for `/metrics`.
pub fn collect(snapshot: &mut crate::metrics::Snapshot) {
    snapshot
        .counter("tollgate_otlp_spans_exported", "Trace spans the OTLP collector accepted.")
        .sample(&[], EXPORTED.load(Ordering::Relaxed));
    snapshot
        .counter(
            "tollgate_otlp_spans_dropped",
            "Trace spans lost: the export queue was full (collector slow or stalled), or their export failed (collector down).",
        )
        .sample(&[("reason", "queue_full")], DROPPED_FULL.load(Ordering::Relaxed))
        .sample(&[("reason", "export_failed")], DROPPED_FAILED.load(Ordering::Relaxed));
    snapshot
        .gauge("tollgate_otlp_queue_spans", "Trace spans waiting for export.")
        .sample(&[], WAITING.load(Ordering::Relaxed));
    snapshot
        .gauge("tollgate_otlp_queue_capacity", "The export queue's bound (0: OTLP export is off).")
        .sample(&[], CAPACITY.load(Ordering::Relaxed));
}
