//! Series read at scrape time rather than counted as they happen: Raft's state, budgets, endpoint health
//! and gossip, the export queues. Each scrape gathers them into a [`Snapshot`], which `prometheus-client`
//! encodes as a `Collector` next to the node's long-lived families.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// A label set: names are fixed in the code, values are escaped when added.
type Labels = Vec<(&'static str, String)>;

/// The scrape-time series of one `/metrics` answer.
#[derive(Debug, Default)]
pub struct Snapshot {
    families: Vec<Family>,
}

/// One metric family: its descriptor and samples.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Labels, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// A sample's value: integers stay integers in the exposition.
#[derive(Debug, Clone)]
pub enum Value {
    Int(i64),
    Float(f64),
    /// A histogram: the sum (seconds), the count, and (upper bound, count within it) per finite bucket —
    /// not cumulative; the `+Inf` bucket is the count minus their sum.
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(value: usize) -> Self {
        Value::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<u8> for Value {
    fn from(value: u8) -> Self {
        Value::Int(value.into())
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(value.into())
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl Snapshot {
    /// A gauge family; `help` is written as given.
    pub fn gauge(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, Kind::Gauge)
    }

    /// A counter family; `name` is without the `_total` suffix, which the encoder adds.
    pub fn counter(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, Kind::Counter)
    }

    /// A histogram family (samples are [`Value::Histogram`]).
    pub fn histogram(&mut self, name: &'static str, help: &'static str) -> &mut Family {
        self.family(name, help, Kind::Histogram)
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: Kind) -> &mut Family {
        self.families.push(Family { name, help, kind, samples: Vec::new() });
        let last = self.families.len() - 1;
        &mut self.families[last]
    }
}

impl Family {
    pub fn sample(&mut self, labels: &[(&'static str, &str)], value: impl Into<Value>) -> &mut Self {
        let labels = labels.iter().map(|(name, value)| (*name, super::escape_label(value))).collect();
        self.samples.push((labels, value.into()));
        self
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let kind = match family.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
                Kind::Histogram => MetricType::Histogram,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                if labels.is_empty() {
                    encode_sample(&mut metric, family.kind, value)?;
                } else {
                    encode_sample(&mut metric.encode_family(labels)?, family.kind, value)?;
                }
            }
        }
        Ok(())
    }
}

fn encode_sample(sample: &mut MetricEncoder, kind: Kind, value: &Value) -> Result<(), std::fmt::Error> {
    match (kind, value) {
        (Kind::Counter, Value::Int(v)) => {
            sample.encode_counter::<NoLabelSet, _, u64>(&u64::try_from(*v).unwrap_or(0), None)
        }
        (Kind::Counter, Value::Float(v)) => sample.encode_counter::<NoLabelSet, _, f64>(v, None),
        (_, Value::Histogram { sum, count, buckets }) => {
            let finite: u64 = buckets.iter().map(|(_, n)| n).sum();
            // `f64::MAX` is the crate's spelling of the `+Inf` bucket.
            let mut all = buckets.clone();
            all.push((f64::MAX, count.saturating_sub(finite)));
            sample.encode_histogram::<NoLabelSet>(*sum, *count, &all, None)
        }
        (_, Value::Int(v)) => sample.encode_gauge(v),
        (_, Value::Float(v)) => sample.encode_gauge(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn encodes_gauges_counters_and_sums_with_escaped_labels() {
        let mut snapshot = Snapshot::default();
        snapshot.gauge("g", "A gauge.").sample(&[("scope", "org:\"a\"\n")], 3u64).sample(&[], 0.5);
        snapshot.counter("c", "A counter.").sample(&[("reason", "x")], 7u64);
        let latencies = Value::Histogram { sum: 1.5, count: 4, buckets: vec![(0.1, 1), (1.0, 2)] };
        snapshot.histogram("s_seconds", "A histogram.").sample(&[], latencies);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut out = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut out, &registry).is_ok());
        assert!(out.contains("# TYPE g gauge\ng{scope=\"org:\\\"a\\\"\\n\"} 3\ng 0.5\n"), "{out}");
        assert!(out.contains("# TYPE c counter\nc_total{reason=\"x\"} 7\n"), "{out}");
        assert!(out.contains("s_seconds_sum 1.5\ns_seconds_count 4\n"), "{out}");
        assert!(out.contains("s_seconds_bucket{le=\"0.1\"} 1\ns_seconds_bucket{le=\"1.0\"} 3\n"), "{out}");
        assert!(out.contains("s_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.ends_with("# EOF\n"));
    }
}
