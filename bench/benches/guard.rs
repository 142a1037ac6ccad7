//! Criterion benchmarks of the guardrail detectors (injection scan, PII redaction, streaming redaction), each against a trivial baseline (copying the same text),
//! plus a per-prompt latency distribution over the whole labelled corpus in tests/data/guard.
//!
//! Run: `cargo bench -p tollgate-bench --bench guard` (quick: `-- --warm-up-time 1 --measurement-time 2`).
//! The corpus section runs after the criterion groups, skipped under a name filter or `--test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tollgate::guard::{InjectionDetector, PiiDetector, Replacement, StreamRedactor};

const SHORT: &str = "Where is my order #48213? It was supposed to arrive on Monday and the tracking page has not changed since. Can you check with the carrier and tell me what happened, and whether I can still cancel it?";

/// About 2 KB of ordinary prose with a few numbers, like a long user turn.
fn long_prompt() -> String {
    let sentences = [
        "The quarterly report shows revenue growth of 14 percent, driven mostly by the new subscription tier.",
        "Customer churn fell slightly, but support tickets about billing doubled after the pricing page changed.",
        "Can you summarise the three biggest risks for next quarter and suggest one concrete action for each?",
        "Please keep the answer under two hundred words and use plain language for the whole company.",
        "Also mention whether the hiring plan still fits the budget, given two senior engineers joined early.",
    ];
    let mut text = String::new();
    while text.len() < 2000 {
        for sentence in sentences {
            text.push_str(sentence);
            text.push(' ');
        }
    }
    text
}

fn corpus() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/guard");
    let mut texts = Vec::new();
    for file in ["injection_tune.jsonl", "injection_eval.jsonl"] {
        let Ok(content) = std::fs::read_to_string(dir.join(file)) else { continue };
        for line in content.lines() {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
                if let Some(text) = value.get("text").and_then(|text| text.as_str()) {
                    texts.push(text.to_string());
                }
            }
        }
    }
    texts
}

fn bench_injection(criterion: &mut Criterion) {
    let detector = InjectionDetector::default();
    let long = long_prompt();
    let mut group = criterion.benchmark_group("guard/injection");
    for (name, text) in [("short", SHORT), ("2KB", long.as_str())] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("copy/{name}"), |b| b.iter(|| black_box(black_box(text).to_string())));
        group.bench_function(format!("scan/{name}"), |b| b.iter(|| black_box(detector.scan(black_box(text)))));
    }
    group.finish();
}

/// The 2 KB prompt with an email, a phone number, a card and an API key spread through it.
fn long_prompt_with_pii() -> String {
    let mut text = long_prompt();
    for (at, value) in [
        (300, " mail maria.garcia@example.org "),
        (800, " call +44 20 7946 0958 "),
        (1300, " card 4111 1111 1111 1111 "),
        (1800, " key sk-proj-Abc123Def456Ghi789Jkl012Mno345 "),
    ] {
        let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.insert_str(at, value);
    }
    text
}

fn bench_pii(criterion: &mut Criterion) {
    let detector = PiiDetector::new(&[], Replacement::Label).expect("detector");
    let text = long_prompt_with_pii();
    let mut group = criterion.benchmark_group("guard/pii");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("copy/2KB", |b| b.iter(|| black_box(black_box(text.as_str()).to_string())));
    group.bench_function("redact/2KB", |b| b.iter(|| black_box(detector.redact(black_box(&text)))));
    // As a stream of 16-byte deltas (about four tokens each), the usual shape of SSE content.
    let chunks: Vec<&str> = {
        let bounds: Vec<usize> =
            (0..text.len()).step_by(16).filter(|&i| text.is_char_boundary(i)).chain([text.len()]).collect();
        bounds.windows(2).map(|pair| &text[pair[0]..pair[1]]).collect()
    };
    group.bench_function("stream/2KB in 16-byte chunks", |b| {
        b.iter(|| {
            let mut redactor = StreamRedactor::new(detector.clone());
            let mut out = 0;
            for chunk in &chunks {
                out += redactor.push(black_box(chunk)).len();
            }
            black_box(out + redactor.finish().len())
        })
    });
    group.finish();
}

/// The best of `runs` timings of `work`, in nanoseconds.
fn best_of(runs: usize, mut work: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .min()
        .unwrap_or(Duration::ZERO)
        .as_nanos() as f64
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted.get(index).copied().unwrap_or(0.0)
}

fn print_corpus_latency() {
    let texts = corpus();
    if texts.is_empty() {
        println!("corpus not found; skipping the per-prompt latency table");
        return;
    }
    let detector = InjectionDetector::default();
    let pii = PiiDetector::new(&[], Replacement::Label).expect("detector");
    let mut scan: Vec<f64> = Vec::with_capacity(texts.len());
    let mut redact: Vec<f64> = Vec::with_capacity(texts.len());
    let mut copy: Vec<f64> = Vec::with_capacity(texts.len());
    for text in &texts {
        scan.push(best_of(5, || {
            black_box(detector.scan(black_box(text)));
        }));
        redact.push(best_of(5, || {
            black_box(pii.redact(black_box(text)));
        }));
        copy.push(best_of(5, || {
            black_box(black_box(text.as_str()).to_string());
        }));
    }
    let totals: Vec<f64> = [&scan, &redact, &copy].iter().map(|timings| timings.iter().sum()).collect();
    for timings in [&mut scan, &mut redact, &mut copy] {
        timings.sort_by(f64::total_cmp);
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    println!("\nper-prompt latency over the corpus ({} prompts, median {} bytes):", texts.len(), {
        let mut lengths: Vec<usize> = texts.iter().map(String::len).collect();
        lengths.sort_unstable();
        lengths[lengths.len() / 2]
    });
    for (name, timings) in [("injection scan", &scan), ("pii redact", &redact), ("copy (baseline)", &copy)] {
        println!(
            "  {name:<16} p50 {:>8.1} us  p95 {:>8.1} us  p99 {:>8.1} us  max {:>8.1} us",
            percentile(timings, 0.5) / 1e3,
            percentile(timings, 0.95) / 1e3,
            percentile(timings, 0.99) / 1e3,
            percentile(timings, 1.0) / 1e3
        );
    }
    for (name, total) in [("injection scan", totals[0]), ("pii redact", totals[1])] {
        println!(
            "  {name}: {:.0} MB/s overall, {:.0}x the cost of copying the same text",
            bytes as f64 / total * 1e3,
            total / totals[2]
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut criterion = Criterion::default().configure_from_args();
    bench_injection(&mut criterion);
    bench_pii(&mut criterion);
    criterion.final_summary();
    let bench_mode = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list" || a == "--test");
    let filtered = args.iter().skip(1).any(|a| !a.starts_with('-') && !a.chars().all(|c| c.is_ascii_digit()));
    if bench_mode && !filtered {
        print_corpus_latency();
    }
}
