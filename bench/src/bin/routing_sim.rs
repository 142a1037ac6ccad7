//! Least-load routing against round-robin on simulated GPU endpoints whose latency grows with their queue.
//!
//! Three mock vLLM endpoints of different capacity (GPU slots × service time, see `GpuSim`: requests beyond
//! the slots wait in a FIFO queue, and `/metrics` reports the live queue and KV use). One in-process
//! Tollgate node in front of them. The same open-loop stream of streaming chat requests (Poisson
//! arrivals) is sent twice: once round-robin (the client rotates over three single-target routes, so the
//! gateway adds nothing), once to a `least_load` route over the same three endpoints. It prints p50/p90/p99
//! time to first token (TTFT, measured by the client) for both and the p90 ratio.
//!
//! `cargo run -p tollgate-bench --bin routing_sim [-- SECONDS RATE]` (defaults: 15 s at 130 requests/s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_tests::{GpuSim, Harness, MockUpstream, KEY};

/// (GPU slots, service time) per endpoint: capacities of 100, 75 and 50 requests/s.
const ENDPOINTS: [(usize, u64); 3] = [(4, 40), (3, 40), (2, 40)];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(130.0);

    let mut gpus = Vec::new();
    let mut extra = String::new();
    for (index, (slots, service_ms)) in ENDPOINTS.iter().enumerate() {
        let gpu = MockUpstream::start().await;
        gpu.set_gpu_sim(Some(GpuSim { slots: *slots, service: Duration::from_millis(*service_ms) }));
        extra.push_str(&format!(
            "[[providers]]\nname = \"gpu{index}\"\nkind = \"openai\"\nbase_url = \"{}\"\nmetrics_url = \"{}\"\n\n\
             [[models]]\nname = \"rr{index}\"\ntargets = [ {{ provider = \"gpu{index}\", model = \"llama\" }} ]\n\n",
            gpu.openai_base_url(),
            gpu.metrics_url()
        ));
        gpus.push(gpu);
    }
    extra.push_str(
        "[[models]]\nname = \"least-load\"\nstrategy = \"least_load\"\n\
         targets = [ { provider = \"gpu0\", model = \"llama\" }, { provider = \"gpu1\", model = \"llama\" }, { provider = \"gpu2\", model = \"llama\" } ]\n",
    );
    let harness = Arc::new(
        Harness::start_tweaked(&extra, |config| {
            config.node.health.gpu_scrape_interval_ms = 200;
            config.limits.first_byte_timeout_ms = 60_000;
        })
        .await,
    );
    println!(
        "endpoints (slots × service): {:?}; offered load {rate} req/s for {seconds} s (capacity {:.0} req/s)",
        ENDPOINTS,
        ENDPOINTS.iter().map(|(slots, ms)| *slots as f64 * 1000.0 / *ms as f64).sum::<f64>()
    );

    let round_robin = run(&harness, seconds, rate, |n| format!("rr{}", n % 3)).await;
    report("round-robin", &round_robin);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let least_load = run(&harness, seconds, rate, |_| "least-load".to_owned()).await;
    report("least_load", &least_load);
    let share: Vec<usize> =
        gpus.iter().map(|gpu| gpu.requests().iter().filter(|r| r.path == "/v1/chat/completions").count()).collect();
    println!("requests per endpoint over both runs: {share:?}");
    if let (Some(rr), Some(ll)) = (percentile(&round_robin, 0.9), percentile(&least_load, 0.9)) {
        println!("p90 TTFT least_load / round-robin = {:.3} ({:.1} ms vs {:.1} ms)", ll / rr, ll, rr);
    }
}

/// Sends an open-loop Poisson stream; returns the TTFT (ms) of every successful request.
async fn run(harness: &Arc<Harness>, seconds: u64, rate: f64, model: impl Fn(u64) -> String) -> Vec<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut next = Duration::ZERO;
    let mut n = 0u64;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    while next < Duration::from_secs(seconds) {
        let wait = next.saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
        let harness = harness.clone();
        let model = model(n);
        tasks.push(tokio::spawn(async move { ttft(&harness, &model).await }));
        n += 1;
        // Exponential inter-arrival times from a xorshift draw (no extra dependency).
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let uniform = ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        next += Duration::from_secs_f64(-uniform.ln() / rate);
    }
    let mut out = Vec::new();
    let mut failed = 0;
    for task in tasks {
        match task.await {
            Ok(Some(ms)) => out.push(ms),
            _ => failed += 1,
        }
    }
    if failed > 0 {
        println!("  ({failed} requests failed)");
    }
    out.sort_by(f64::total_cmp);
    out
}

async fn ttft(harness: &Harness, model: &str) -> Option<f64> {
    let body = serde_json::json!({
        "model": model, "stream": true, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Tell me something."}]
    });
    let sent = Instant::now();
    let mut response =
        harness.client.post(harness.url("/v1/chat/completions")).bearer_auth(KEY).json(&body).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.chunk().await.ok()??;
    let first = sent.elapsed().as_secs_f64() * 1e3;
    while let Ok(Some(_)) = response.chunk().await {}
    Some(first)
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied()
}

fn report(name: &str, sorted: &[f64]) {
    let p = |q| percentile(sorted, q).map_or("-".to_owned(), |v| format!("{v:.1} ms"));
    println!("{name:>12}: {} requests, TTFT p50 {} p90 {} p99 {}", sorted.len(), p(0.5), p(0.9), p(0.99));
}
