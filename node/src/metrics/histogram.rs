//! A lock-free histogram that `prometheus-client` encodes. The crate's own `Histogram` takes a write
//! lock per observation and keeps its buckets private; the canary judge reads per-bucket counts of the
//! TTFT and pace histograms every second, so Tollgate keeps its atomics and implements the crate's
//! `EncodeMetric` for them (the exposition is the crate's).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

pub const LATENCY_BUCKETS_SECONDS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
pub const PER_TOKEN_BUCKETS_SECONDS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5];
pub const OVERHEAD_BUCKETS_SECONDS: [f64; 10] =
    [0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05];

/// A shared handle: clones observe into the same buckets.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram(Arc::new(Inner {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }))
    }

    pub fn latency() -> Self {
        Histogram::new(&LATENCY_BUCKETS_SECONDS)
    }

    pub fn per_token() -> Self {
        Histogram::new(&PER_TOKEN_BUCKETS_SECONDS)
    }

    pub fn observe(&self, value: Duration) {
        let inner = &self.0;
        let seconds = value.as_secs_f64();
        if let Some(index) = inner.bounds.iter().position(|bound| seconds <= *bound) {
            inner.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        inner.sum_micros.fetch_add(value.as_micros() as u64, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// The sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Bucket upper bounds in seconds (the last, implicit bucket is +Inf).
    pub fn bounds(&self) -> &'static [f64] {
        self.0.bounds
    }

    /// Per-bucket (not cumulative) counts, plus the +Inf overflow as the last element.
    pub fn bucket_counts(&self) -> Vec<u64> {
        let mut counts: Vec<u64> = self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let in_buckets: u64 = counts.iter().sum();
        counts.push(self.count().saturating_sub(in_buckets));
        counts
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // `f64::MAX` is the crate's spelling of the `+Inf` bucket.
        let buckets: Vec<(f64, u64)> =
            self.bounds().iter().copied().chain([f64::MAX]).zip(self.bucket_counts()).collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds(), self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn buckets_render_cumulative_with_inf() {
        let histogram = Histogram::latency();
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(200));
        histogram.observe(Duration::from_secs(500));
        let mut registry = Registry::default();
        registry.register("h", "A test histogram", histogram.clone());
        let mut out = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut out, &registry).is_ok());
        assert!(out.contains("h_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"0.25\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"120.0\"} 2\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("h_count 3\n"), "{out}");
        assert_eq!(histogram.bucket_counts().iter().sum::<u64>(), 3);
    }
}
