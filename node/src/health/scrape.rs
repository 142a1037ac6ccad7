//! GPU load from self-hosted engines: scrape each provider's `metrics_url` (Prometheus text) and read the
//! queue, batch and KV-cache gauges of vLLM, SGLang or TGI (the engine is recognised by its metric names).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{EndpointRegistry, GpuLoad};
use crate::clock::wall_ms;
use crate::providers::tls::{Alpn, UpstreamTls};

/// Largest metrics page read (vLLM with many models and histograms stays well below).
const MAX_METRICS_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Gauges {
    waiting: Option<f64>,
    running: Option<f64>,
    kv_use: Option<f64>,
}

/// Sums a gauge over all label sets (one engine may serve several models). Names: vLLM
/// `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc` (before late 2025
/// `vllm:gpu_cache_usage_perc`); SGLang `sglang:num_queue_reqs`, `sglang:num_running_reqs`,
/// `sglang:token_usage`; TGI `tgi_queue_size`, `tgi_batch_current_size`. KV use is a 0..1 fraction;
/// with several models the highest is kept.
pub fn parse_gpu_metrics(text: &str, at_ms: u64) -> Option<GpuLoad> {
    let mut gauges = Gauges::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = sample(line) else {
            continue;
        };
        let add = |slot: &mut Option<f64>| *slot = Some(slot.unwrap_or(0.0) + value);
        match name {
            "vllm:num_requests_waiting" | "sglang:num_queue_reqs" | "tgi_queue_size" => add(&mut gauges.waiting),
            "vllm:num_requests_running" | "sglang:num_running_reqs" | "tgi_batch_current_size" => {
                add(&mut gauges.running)
            }
            "vllm:kv_cache_usage_perc" | "vllm:gpu_cache_usage_perc" | "sglang:token_usage" => {
                gauges.kv_use = Some(gauges.kv_use.map_or(value, |kv: f64| kv.max(value)));
            }
            _ => {}
        }
    }
    if gauges == Gauges::default() {
        return None;
    }
    Some(GpuLoad {
        waiting: gauges.waiting.unwrap_or(0.0).max(0.0),
        running: gauges.running.unwrap_or(0.0).max(0.0),
        kv_use: gauges.kv_use.unwrap_or(0.0).clamp(0.0, 1.0),
        at_ms,
    })
}

/// `name{labels} value [timestamp]` → (name, value). Label values may contain spaces and braces.
fn sample(line: &str) -> Option<(&str, f64)> {
    let (name, rest) = match line.find(['{', ' ', '\t']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let rest = if rest.starts_with('{') {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = None;
        for (index, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    end = Some(index);
                    break;
                }
                _ => {}
            }
        }
        &rest[end? + 1..]
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value: f64 = value.parse().ok()?;
    value.is_finite().then_some((name, value))
}

type MetricsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

fn client(tls: &UpstreamTls) -> MetricsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_millis(500)));
    Client::builder(TokioExecutor::new()).build(tls.connector(http, Alpn::Http1))
}

async fn scrape(client: &MetricsClient, url: &str, timeout: Duration) -> anyhow::Result<Option<GpuLoad>> {
    // Never echo the URL: it may carry credentials (`user:password@host`).
    let uri: http::Uri = url.parse().map_err(|_| anyhow::anyhow!("the metrics_url is not a URL"))?;
    let response = tokio::time::timeout(timeout, client.get(uri))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} ms", timeout.as_millis()))??;
    if !response.status().is_success() {
        anyhow::bail!("HTTP {}", response.status());
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_METRICS_BYTES);
    let bytes = tokio::time::timeout(timeout, body.collect())
        .await
        .map_err(|_| anyhow::anyhow!("body not read within {} ms", timeout.as_millis()))?
        .map_err(|err| anyhow::anyhow!("reading the body: {err}"))?
        .to_bytes();
    Ok(parse_gpu_metrics(&String::from_utf8_lossy(&bytes), wall_ms()))
}

/// Scrapes every active endpoint with a `metrics_url` each `interval`, writing the result into the
/// registry (the gossip publisher spreads it). A failed scrape clears the sample rather than keeping
/// stale numbers.
/// Holds the registry weakly: it ends when the node is gone.
pub fn spawn_scraper(
    registry: std::sync::Weak<EndpointRegistry>,
    interval: Duration,
    tls: &UpstreamTls,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = client(tls);
    Ok(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            let targets: Vec<_> =
                registry.active().into_iter().filter_map(|e| e.metrics_url().map(|url| (e, url))).collect();
            let scrapes = targets.into_iter().map(|(endpoint, url)| {
                let client = client.clone();
                async move {
                    match scrape(&client, &url, interval.max(Duration::from_millis(500))).await {
                        Ok(load) => endpoint.set_local_gpu(load),
                        Err(err) => {
                            // The endpoint's name, not its metrics_url, which may carry credentials.
                            tracing::debug!(endpoint = %endpoint.name, %err, "GPU metrics scrape failed");
                            endpoint.set_local_gpu(None);
                        }
                    }
                }
            });
            drop(registry);
            futures_util::future::join_all(scrapes).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vllm_including_the_old_kv_name() {
        let text = "# HELP vllm:num_requests_waiting waiting\n# TYPE vllm:num_requests_waiting gauge\n\
            vllm:num_requests_waiting{model_name=\"a\"} 3.0\n\
            vllm:num_requests_waiting{model_name=\"b\"} 2.0\n\
            vllm:num_requests_running{model_name=\"a\",engine=\"0\"} 8\n\
            vllm:gpu_cache_usage_perc{model_name=\"a\"} 0.42\n\
            vllm:num_requests_waiting_total 99\n";
        let load = parse_gpu_metrics(text, 7).unwrap_or_else(|| panic!("parsed"));
        assert_eq!((load.waiting, load.running, load.kv_use, load.at_ms), (5.0, 8.0, 0.42, 7));
        let new = "vllm:kv_cache_usage_perc{model_name=\"a\"} 0.9 1700000000000\n";
        assert_eq!(parse_gpu_metrics(new, 0).map(|l| l.kv_use), Some(0.9));
    }

    #[test]
    fn reads_sglang_and_tgi() {
        let sglang = "sglang:num_queue_reqs{model_name=\"m\"} 4\nsglang:num_running_reqs{model_name=\"m\"} 6\nsglang:token_usage{model_name=\"m\"} 0.25\n";
        let load = parse_gpu_metrics(sglang, 0).unwrap_or_else(|| panic!("parsed"));
        assert_eq!((load.waiting, load.running, load.kv_use), (4.0, 6.0, 0.25));
        let tgi = "tgi_queue_size 11\ntgi_batch_current_size 32\n";
        let load = parse_gpu_metrics(tgi, 0).unwrap_or_else(|| panic!("parsed"));
        assert_eq!((load.waiting, load.running, load.kv_use), (11.0, 32.0, 0.0));
    }

    #[test]
    fn ignores_other_pages_and_garbage() {
        assert_eq!(parse_gpu_metrics("process_cpu_seconds_total 3\n", 0), None);
        assert_eq!(parse_gpu_metrics("vllm:num_requests_waiting{a=\"x} 1\n", 0), None, "unterminated labels");
        assert_eq!(parse_gpu_metrics("vllm:num_requests_waiting NaN\n", 0), None);
        let tricky = "vllm:num_requests_waiting{path=\"a} b\\\" {c\"} 2\n";
        assert_eq!(parse_gpu_metrics(tricky, 0).map(|l| l.waiting), Some(2.0));
    }
}
