//! Issue 19: recording one request's metrics with Tollgate's `TargetMetrics` (`node/src/metrics/`: first
//! relaxed atomics on a per-target struct; since the migration, `prometheus-client` counter handles resolved
//! when the route table is built, and Tollgate's lock-free histograms encoded by the crate) against the
//! `prometheus-client` crate used alone (the same counters and three of its own histograms, with labels).
//!
//! Two ways to use `prometheus-client`: the idiomatic one (`Family::get_or_create` with the labels on every
//! request: a read lock and a hash of the labels) and the cheapest one (the label set resolved once, its
//! metric handles kept, as Tollgate keeps its `TargetMetrics`). Its `Histogram` takes a lock per
//! observation; two threads recording at once show what that costs under contention.
//!
//! Run: `cargo bench -p tollgate-bench --bench metrics`. After the criterion group, the two-thread loop and
//! the ratios are printed (skipped under a filter/`--test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use criterion::Criterion;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tollgate::api::Usage;
use tollgate::config::Price;
use tollgate::metrics::{Metrics, Outcome, TargetMetrics};

type Labels = Vec<(&'static str, String)>;

fn target_labels() -> Labels {
    vec![("route", "gpt-direct".into()), ("provider", "up-openai".into()), ("model", "mock-gpt".into())]
}

const LATENCY: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
const PER_TOKEN: [f64; 12] = [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY.iter().copied())
}

fn per_token_histogram() -> Histogram {
    Histogram::new(PER_TOKEN.iter().copied())
}

/// The same series as `TargetMetrics`, registered with `prometheus-client`.
struct Official {
    requests: Family<Labels, Counter>,
    tokens: Family<Labels, Counter>,
    cost: Family<Labels, Counter<f64, AtomicU64>>,
    duration: Family<Labels, Histogram>,
    ttft: Family<Labels, Histogram>,
    pace: Family<Labels, Histogram>,
    _registry: Registry,
}

impl Official {
    fn new() -> Self {
        let histograms = |make: fn() -> Histogram| Family::<Labels, Histogram>::new_with_constructor(make);
        let official = Official {
            requests: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            duration: histograms(latency_histogram),
            ttft: histograms(latency_histogram),
            pace: histograms(per_token_histogram),
            _registry: Registry::default(),
        };
        let mut registry = Registry::default();
        registry.register("tollgate_requests", "requests", official.requests.clone());
        registry.register("tollgate_tokens", "tokens", official.tokens.clone());
        registry.register("tollgate_cost_usd", "cost", official.cost.clone());
        registry.register("tollgate_request_duration_seconds", "duration", official.duration.clone());
        registry.register("tollgate_ttft_seconds", "ttft", official.ttft.clone());
        registry.register("tollgate_time_per_output_token_seconds", "pace", official.pace.clone());
        Official { _registry: registry, ..official }
    }

    /// The idiomatic way: every series looked up by its labels on every request.
    fn record_by_labels(&self, labels: &Labels, usage: &Usage, duration: Duration, ttft: Duration) {
        let with = |key: &'static str, value: &str| {
            let mut labels = labels.clone();
            labels.push((key, value.to_owned()));
            labels
        };
        self.requests.get_or_create(&with("outcome", "ok")).inc();
        self.tokens.get_or_create(&with("direction", "input")).inc_by(usage.input_tokens);
        self.tokens.get_or_create(&with("direction", "output")).inc_by(usage.output_tokens);
        self.cost.get_or_create(labels).inc_by(0.000_03);
        self.duration.get_or_create(labels).observe(duration.as_secs_f64());
        self.ttft.get_or_create(labels).observe(ttft.as_secs_f64());
        let pace = duration.saturating_sub(ttft) / u32::try_from(usage.output_tokens.max(2) - 1).unwrap_or(1);
        self.pace.get_or_create(labels).observe(pace.as_secs_f64());
    }
}

/// `prometheus-client` with the handles of one target resolved once (as Tollgate keeps its `TargetMetrics`).
#[derive(Clone)]
struct Handles {
    ok: Counter,
    input: Counter,
    output: Counter,
    cost: Counter<f64, AtomicU64>,
    duration: Histogram,
    ttft: Histogram,
    pace: Histogram,
}

impl Handles {
    fn new(official: &Official, labels: &Labels) -> Self {
        let with = |key: &'static str, value: &str| {
            let mut labels = labels.clone();
            labels.push((key, value.to_owned()));
            labels
        };
        // One statement each: `get_or_create` answers a read guard, and a guard still alive when the next
        // call must insert a new label set (a write lock) would deadlock.
        let ok = official.requests.get_or_create(&with("outcome", "ok")).clone();
        let input = official.tokens.get_or_create(&with("direction", "input")).clone();
        let output = official.tokens.get_or_create(&with("direction", "output")).clone();
        let cost = official.cost.get_or_create(labels).clone();
        let duration = official.duration.get_or_create(labels).clone();
        let ttft = official.ttft.get_or_create(labels).clone();
        let pace = official.pace.get_or_create(labels).clone();
        Handles { ok, input, output, cost, duration, ttft, pace }
    }

    fn record(&self, usage: &Usage, duration: Duration, ttft: Duration) {
        self.ok.inc();
        self.input.inc_by(usage.input_tokens);
        self.output.inc_by(usage.output_tokens);
        self.cost.inc_by(0.000_03);
        self.duration.observe(duration.as_secs_f64());
        self.ttft.observe(ttft.as_secs_f64());
        let pace = duration.saturating_sub(ttft) / u32::try_from(usage.output_tokens.max(2) - 1).unwrap_or(1);
        self.pace.observe(pace.as_secs_f64());
    }
}

fn usage() -> Usage {
    Usage { input_tokens: 42, output_tokens: 17, cached_input_tokens: 0, reasoning_tokens: 0, estimated: false }
}

const PRICE: Price = Price { input: 0.15, output: 0.6 };
const DURATION: Duration = Duration::from_millis(230);
const TTFT: Duration = Duration::from_millis(41);

fn ours_record(target: &TargetMetrics, usage: &Usage) {
    target.record(Outcome::Ok, Some(usage), &PRICE, DURATION, Some(TTFT));
}

/// One target's series, both ways, and a request's usage.
struct Setup {
    target: std::sync::Arc<TargetMetrics>,
    official: Official,
    labels: Labels,
    handles: Handles,
    usage: Usage,
}

impl Setup {
    fn new() -> Self {
        let target = Metrics::default().target("gpt-direct", "up-openai", "mock-gpt");
        let official = Official::new();
        let labels = target_labels();
        let handles = Handles::new(&official, &labels);
        Setup { target, official, labels, handles, usage: usage() }
    }
}

fn bench(c: &mut Criterion) {
    let Setup { target, official, labels, handles, usage } = Setup::new();
    let mut group = c.benchmark_group("metrics_per_request");
    group.bench_function("tollgate", |b| b.iter(|| ours_record(black_box(&target), black_box(&usage))));
    group.bench_function("prometheus_client_handles", |b| {
        b.iter(|| black_box(&handles).record(black_box(&usage), DURATION, TTFT))
    });
    group.bench_function("prometheus_client_by_labels", |b| {
        b.iter(|| official.record_by_labels(black_box(&labels), black_box(&usage), DURATION, TTFT))
    });
    group.finish();
}

/// Nanoseconds per recorded request with `threads` threads recording at once into the same series.
fn contended(threads: usize, record: impl Fn() + Sync) -> f64 {
    const EACH: u32 = 400_000;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..EACH {
                    record();
                }
            });
        }
    });
    started.elapsed().as_nanos() as f64 / (f64::from(EACH) * threads as f64)
}

fn ratios() {
    let Setup { target, official, labels, handles, usage } = Setup::new();
    println!("\nratios (plain loops, ns per recorded request; the machine's noise applies):");
    for threads in [1, 2] {
        let ours = contended(threads, || ours_record(&target, &usage));
        let kept = contended(threads, || handles.record(&usage, DURATION, TTFT));
        let looked_up = contended(threads, || official.record_by_labels(&labels, &usage, DURATION, TTFT));
        println!(
            "  {threads} thread(s): tollgate {ours:.0}, prometheus-client handles {kept:.0} ({:.1}x), by labels {looked_up:.0} ({:.1}x)",
            kept / ours,
            looked_up / ours
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    let filtered = std::env::args().skip(1).any(|arg| !arg.starts_with('-'));
    if !filtered && !std::env::args().any(|arg| arg == "--test") {
        ratios();
    }
}
