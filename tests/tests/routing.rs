//! Routing strategies over real sockets with several mock upstreams: least-load follows the engines'
//! `/metrics` queues (vLLM, SGLang and TGI names), least-cost picks the cheapest target that fits the
//! context window, weighted splits follow the weights, per-route fallback statuses and retry rounds.
//! Cluster behaviour (gossip-shared breakers, canary rollback) is in `routing_cluster.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::*;

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

fn target(response: &reqwest::Response) -> String {
    response.headers()["x-tollgate-target"].to_str().unwrap().to_owned()
}

async fn gossip_view(h: &Harness) -> Value {
    h.client
        .get(h.admin_url("/admin/v1/cluster/gossip"))
        .bearer_auth("tga-routing")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until this node's freshest GPU sample for `endpoint` reports `waiting`.
async fn wait_for_waiting(h: &Harness, endpoint: &str, waiting: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = gossip_view(h).await;
        if view["local"][endpoint]["gpu"]["waiting"].as_f64() == Some(waiting) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{endpoint} never reported waiting={waiting}: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn least_load_picks_the_shortest_queue_across_engines() {
    let gpus = [MockUpstream::start().await, MockUpstream::start().await, MockUpstream::start().await];
    gpus[1].set_engine(Engine::Sglang);
    gpus[2].set_engine(Engine::Tgi);
    let mut extra = String::new();
    for (index, gpu) in gpus.iter().enumerate() {
        extra.push_str(&format!(
            "[[providers]]\nname = \"gpu{index}\"\nkind = \"openai\"\nbase_url = \"{}\"\nmetrics_url = \"{}\"\n",
            gpu.openai_base_url(),
            gpu.metrics_url()
        ));
    }
    extra.push_str(
        r#"
[[models]]
name = "llama"
strategy = "least_load"
targets = [ { provider = "gpu0", model = "llama" }, { provider = "gpu1", model = "llama" }, { provider = "gpu2", model = "llama" } ]
"#,
    );
    let h = Harness::start_tweaked(&extra, |config| {
        config.node.health.gpu_scrape_interval_ms = 100;
        config.node.secrets.admin_token = Some("tga-routing".into());
    })
    .await;
    gpus[0].set_gpu_metrics(10, 4, 0.5);
    gpus[1].set_gpu_metrics(0, 2, 0.3);
    gpus[2].set_gpu_metrics(5, 1, 0.0);
    wait_for_waiting(&h, "gpu0", 10.0).await;
    wait_for_waiting(&h, "gpu2", 5.0).await;
    for _ in 0..10 {
        let response = h.openai("/v1/chat/completions", &chat("llama")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(target(&response), "gpu1/llama", "SGLang endpoint has the shortest queue");
    }
    let chats = |gpu: &MockUpstream| gpu.requests().iter().filter(|r| r.path == "/v1/chat/completions").count();
    assert_eq!((chats(&gpus[0]), chats(&gpus[1]), chats(&gpus[2])), (0, 10, 0));
    assert!(gpus.iter().all(|gpu| gpu.requests().iter().any(|r| r.path == "/metrics")), "every engine is scraped");

    // The queue moves: now the TGI endpoint is the least loaded.
    gpus[1].set_gpu_metrics(30, 8, 0.9);
    wait_for_waiting(&h, "gpu1", 30.0).await;
    let response = h.openai("/v1/chat/completions", &chat("llama")).await;
    assert_eq!(target(&response), "gpu2/llama");

    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tollgate_endpoint_gpu_queue", &["endpoint=\"gpu1\"", "kind=\"waiting\""]),
        Some(30.0)
    );
}

#[tokio::test]
async fn least_cost_picks_the_cheapest_target_that_fits_the_context_window() {
    let extra = r#"
[[models]]
name = "cheap"
strategy = "least_cost"
context_window = 100000
price_per_mtok = { input = 1.0, output = 4.0 }
targets = [
  { provider = "up-openai", model = "list-price" },
  { provider = "up-openai", model = "small-window", price_per_mtok = { input = 0.1, output = 0.2 }, context_window = 1000 },
  { provider = "up-openai", model = "mid-price", price_per_mtok = { input = 0.5, output = 1.0 } },
]
"#;
    let h = Harness::start_with(extra).await;
    let response = h.openai("/v1/chat/completions", &chat("cheap")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(target(&response), "up-openai/small-window");

    // ~2,500 prompt tokens: too big for the cheapest target's 1,000-token window.
    let long = "lorem ipsum dolor sit amet ".repeat(400);
    let body = json!({"model": "cheap", "max_tokens": 100, "messages": [{"role": "user", "content": long}]});
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(target(&response), "up-openai/mid-price");
    let models: Vec<String> =
        h.mock.requests().iter().map(|r| r.body["model"].as_str().unwrap_or("?").to_owned()).collect();
    assert_eq!(models, ["small-window", "mid-price"], "the overflowing target is never sent the request");
}

#[tokio::test]
async fn weighted_split_is_within_five_percent_over_two_thousand_requests() {
    let extra = r#"
[[models]]
name = "ab"
strategy = "weighted"
targets = [ { provider = "up-openai", model = "a", weight = 70 }, { provider = "up-openai", model = "b", weight = 30 } ]
"#;
    let h = std::sync::Arc::new(Harness::start_with(extra).await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, u32> = HashMap::new();
            for _ in 0..250 {
                let response = h.openai("/v1/chat/completions", &chat("ab")).await;
                assert_eq!(response.status(), 200);
                *counts.entry(target(&response)).or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: HashMap<String, u32> = HashMap::new();
    for task in tasks {
        for (name, n) in task.await.unwrap() {
            *counts.entry(name).or_default() += n;
        }
    }
    let a = counts.get("up-openai/a").copied().unwrap_or(0);
    let b = counts.get("up-openai/b").copied().unwrap_or(0);
    assert_eq!(a + b, 2000, "{counts:?}");
    // 70 % ± 5 % of 1,400 (3.4 standard deviations).
    assert!((1330..=1470).contains(&a), "a got {a} of 2000 ({counts:?})");
}

#[tokio::test]
async fn auth_failures_fall_back_only_where_configured() {
    let extra = r#"
[[models]]
name = "strict"
targets = [ { provider = "up-openai", model = "t0", priority = 0 }, { provider = "up-openai", model = "t1", priority = 1 } ]

[[models]]
name = "lenient"
fallback_on = [401, 402]
targets = [ { provider = "up-openai", model = "t0", priority = 0 }, { provider = "up-openai", model = "t1", priority = 1 } ]
"#;
    let h = Harness::start_with(extra).await;
    h.mock.push(Script { status: Some(401), ..Default::default() });
    let response = h.openai("/v1/chat/completions", &chat("strict")).await;
    assert_eq!(response.status(), 401, "401 is not a fallback reason by default");

    for code in [401, 402] {
        h.mock.push(Script { status: Some(code), ..Default::default() });
        let response = h.openai("/v1/chat/completions", &chat("lenient")).await;
        assert_eq!(response.status(), 200, "{code} falls back on this route");
        assert_eq!(target(&response), "up-openai/t1");
    }
    let metrics = h.metrics().await;
    let labels = "route=\"lenient\",gen_ai_provider_name=\"up-openai\",gen_ai_request_model=\"t0\"";
    assert_eq!(metric_value(&metrics, "tollgate_fallbacks_by_reason_total", &[labels, "reason=\"auth\""]), Some(2.0));
}

#[tokio::test]
async fn retry_rounds_back_off_and_honour_a_short_retry_after() {
    let extra = r#"
[[models]]
name = "retrying"
retry = { attempts = 2, backoff_ms = 20, max_backoff_ms = 1500 }
targets = [ { provider = "up-openai", model = "only" } ]
"#;
    let h = Harness::start_with(extra).await;
    h.mock.push(Script { status: Some(503), ..Default::default() });
    h.mock.push(Script { status: Some(429), retry_after: Some(1), ..Default::default() });
    let started = std::time::Instant::now();
    let response = h.openai("/v1/chat/completions", &chat("retrying")).await;
    assert_eq!(response.status(), 200, "third round succeeds");
    assert_eq!(h.mock.request_count(), 3);
    assert!(started.elapsed() >= Duration::from_millis(1000), "waited for Retry-After: 1");

    // A Retry-After beyond the cap is the caller's to honour: no retry, the header is passed on.
    h.mock.push(Script { status: Some(429), retry_after: Some(30), ..Default::default() });
    let response = h.openai("/v1/chat/completions", &chat("retrying")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(h.mock.request_count(), 4);
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_opens_its_breaker_and_is_skipped() {
    let h = Harness::start_tweaked("", |config| {
        config.node.health.breaker_failures = 3;
        config.node.health.breaker_cooldown_ms = 60_000;
    })
    .await;
    // `gpt-fallback`: the dead provider first, then up-openai.
    for _ in 0..3 {
        let response = h.openai("/v1/chat/completions", &chat("gpt-fallback")).await;
        assert_eq!(response.status(), 200);
    }
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tollgate_endpoint_breaker_state", &["endpoint=\"dead\"", "state=\"open\""]),
        Some(1.0)
    );
    let dead = "route=\"gpt-fallback\",gen_ai_provider_name=\"dead\",gen_ai_request_model=\"x\"";
    assert_eq!(metric_value(&metrics, "tollgate_fallbacks_by_reason_total", &[dead, "reason=\"connect\""]), Some(3.0));
    for _ in 0..5 {
        let response = h.openai("/v1/chat/completions", &chat("gpt-fallback")).await;
        assert_eq!(target(&response), "up-openai/mock-gpt");
    }
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tollgate_upstream_requests_total", &[dead, "outcome=\"error\""]),
        Some(3.0),
        "the open breaker keeps requests away from the dead endpoint"
    );
    let page = h.client.get(h.admin_url("/")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<tr><td>dead</td><td>open</td>"), "the status page shows the breaker: {page}");
}

#[tokio::test]
async fn latency_strategy_prefers_the_endpoint_with_the_lower_peak_ewma() {
    let slow = MockUpstream::start().await;
    // Slow by far more than a stall of a loaded machine could make the fast endpoint.
    slow.set_default(Script { delay_headers: Some(Duration::from_millis(600)), ..Default::default() });
    let fast = MockUpstream::start().await;
    let extra = format!(
        r#"
[[providers]]
name = "slow"
kind = "openai"
base_url = "{slow}"

[[providers]]
name = "fast"
kind = "openai"
base_url = "{fast}"

[[models]]
name = "quick"
strategy = "latency"
targets = [ {{ provider = "slow", model = "m" }}, {{ provider = "fast", model = "m" }} ]

# Endpoint statistics are per provider, whatever route measured them.
[[models]]
name = "slow-only"
targets = [ {{ provider = "slow", model = "m" }} ]

[[models]]
name = "fast-only"
targets = [ {{ provider = "fast", model = "m" }} ]
"#,
        slow = slow.openai_base_url(),
        fast = fast.openai_base_url()
    );
    let h = Harness::start_with(&extra).await;
    for model in ["slow-only", "fast-only"] {
        assert_eq!(h.openai("/v1/chat/completions", &chat(model)).await.status(), 200);
    }
    for _ in 0..10 {
        let response = h.openai("/v1/chat/completions", &chat("quick")).await;
        assert_eq!(target(&response), "fast/m");
    }
    assert_eq!(slow.request_count(), 1, "only the measuring request went to the slow endpoint");
    let metrics = h.metrics().await;
    let slow_latency = metric_value(&metrics, "tollgate_endpoint_latency_ewma_seconds", &["endpoint=\"slow\""]);
    assert!(slow_latency.is_some_and(|s| s >= 0.6), "{slow_latency:?}");
}

#[tokio::test]
async fn a_slow_canary_is_rolled_back_on_a_standalone_node() {
    let canary = MockUpstream::start().await;
    canary.set_default(Script { delay_headers: Some(Duration::from_millis(200)), ..Default::default() });
    let extra = canary_rollout(&canary, "max_p95_latency_ratio = 2.0, min_requests = 5");
    let h = Harness::start_with(&extra).await;
    // Both sides need `min_requests` in the window before the SLO is judged (a rollback that comes early
    // ends the canary's traffic: the deadline turns that into a failure, not a hang).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while canary.request_count() < 6 || h.mock.request_count() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "traffic did not reach both targets 6 times");
        assert_eq!(h.openai("/v1/chat/completions", &chat("rollout")).await.status(), 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = h.metrics().await;
        let rollbacks = metric_value(
            &metrics,
            "tollgate_canary_rollbacks_total",
            &["route=\"rollout\"", "target=\"next\"", "reason=\"p95_latency\""],
        );
        if rollbacks == Some(1.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no rollback:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = canary.request_count();
    for _ in 0..20 {
        let response = h.openai("/v1/chat/completions", &chat("rollout")).await;
        assert_eq!(target(&response), "up-openai/stable");
    }
    assert_eq!(canary.request_count(), before, "the rolled-back canary gets no traffic");
}

/// Waits (explicitly, not a guessed sleep) until the canary judge has reached two more verdicts: one may
/// have been under way while the test's traffic ran, the second has seen all of it.
async fn judged_twice_more(h: &Harness) {
    let judgements = |metrics: &str| metric_value(metrics, "tollgate_canary_judgements_total", &[]).unwrap_or(0.0);
    let start = judgements(&h.metrics().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = h.metrics().await;
        if judgements(&metrics) >= start + 2.0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the canary judge stopped judging:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 12.7: requests only the canary rejects (400: the caller's mistake) counted against its error
/// rate, so one tenant could force a rollback for everyone. They are counted as `rejected`, not errors.
#[tokio::test]
async fn requests_the_canary_rejects_as_invalid_do_not_roll_it_back() {
    let canary = MockUpstream::start().await;
    canary.set_default(Script { status: Some(400), ..Default::default() });
    let extra = canary_rollout(&canary, "max_error_rate_delta = 0.05, min_requests = 5");
    let h = Harness::start_with(&extra).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while canary.request_count() < 8 || h.mock.request_count() < 8 {
        let status = h.openai("/v1/chat/completions", &chat("rollout")).await.status();
        assert!(status == 200 || status == 400, "{status}");
        assert!(tokio::time::Instant::now() < deadline, "traffic did not reach both targets");
    }
    // Two more verdicts after the traffic: the judge has seen all of it.
    judged_twice_more(&h).await;
    let metrics = h.metrics().await;
    let rollbacks =
        metric_value(&metrics, "tollgate_canary_rollbacks_total", &["route=\"rollout\"", "target=\"next\""]);
    assert!(rollbacks.is_none_or(|n| n == 0.0), "rolled back for the caller's 400s:\n{metrics}");
    let rejected = metric_value(
        &metrics,
        "tollgate_upstream_requests_total",
        &["gen_ai_provider_name=\"next\"", "outcome=\"rejected\""],
    );
    assert!(rejected.is_some_and(|n| n >= 8.0), "{rejected:?}\n{metrics}");
}

/// Issue 12.7: the latency SLO judged whole-request duration, which grows with the output the caller asks
/// for, so long generations landing on the canary looked like a slow canary. It now judges time to first
/// token and time per output token: here the canary generates 20× more tokens per answer at the same pace.
#[tokio::test]
async fn long_outputs_on_the_canary_are_not_slowness() {
    let pace = Duration::from_millis(10);
    let canary = MockUpstream::start().await;
    canary.set_default(Script {
        reply: Some("word ".repeat(60)),
        delay_between_events: Some(pace),
        ..Default::default()
    });
    let extra = canary_rollout(&canary, "max_p95_latency_ratio = 2.0, min_requests = 5");
    let h = Harness::start_with(&extra).await;
    h.mock.set_default(Script {
        reply: Some("a short one".into()),
        delay_between_events: Some(pace),
        ..Default::default()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while canary.request_count() < 6 || h.mock.request_count() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "traffic did not reach both targets");
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (client, url) = (h.client.clone(), h.url("/v1/chat/completions"));
            let mut body = chat("rollout");
            body["stream"] = json!(true);
            batch.spawn(async move {
                let response = client.post(url).bearer_auth(tollgate_tests::KEY).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.text().await.unwrap()
            });
        }
        while let Some(text) = batch.join_next().await {
            assert!(text.unwrap().contains("[DONE]"));
        }
    }
    judged_twice_more(&h).await;
    let metrics = h.metrics().await;
    let mean_duration = |provider: &str| {
        let labels = ["route=\"rollout\"".to_owned(), format!("gen_ai_provider_name=\"{provider}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let sum = metric_value(&metrics, "gen_ai_server_request_duration_seconds_sum", &labels).unwrap();
        let count = metric_value(&metrics, "gen_ai_server_request_duration_seconds_count", &labels).unwrap();
        sum / count
    };
    let (canary_mean, stable_mean) = (mean_duration("next"), mean_duration("up-openai"));
    assert!(
        canary_mean > 3.0 * stable_mean,
        "the old whole-duration judge would have rolled back: {canary_mean} vs {stable_mean}"
    );
    let paced =
        metric_value(&metrics, "gen_ai_server_time_per_output_token_seconds_count", &["gen_ai_provider_name=\"next\""]);
    assert!(paced.is_some_and(|n| n >= 5.0), "{paced:?}\n{metrics}");
    let rollbacks =
        metric_value(&metrics, "tollgate_canary_rollbacks_total", &["route=\"rollout\"", "target=\"next\""]);
    assert!(rollbacks.is_none_or(|n| n == 0.0), "rolled back for long outputs:\n{metrics}");
}

/// Issue 13.2: a canary answering 500 opens its breaker after a few requests; from then on it only gets a
/// half-open probe per cooldown, so its error count would take minutes to reach `min_requests`. An open
/// breaker on the canary is a breach by itself: rolled back within seconds, reason `breaker_open`.
#[tokio::test]
async fn a_canary_whose_breaker_opens_is_rolled_back_without_waiting_for_min_requests() {
    let canary = MockUpstream::start().await;
    canary.set_default(Script { status: Some(500), ..Default::default() });
    let extra = canary_rollout(&canary, "max_error_rate_delta = 0.05, min_requests = 50");
    let h = Harness::start_with(&extra).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Clients never see the canary's errors (fallback to the stable target).
    while canary.request_count() < 5 {
        assert_eq!(h.openai("/v1/chat/completions", &chat("rollout")).await.status(), 200);
        assert!(tokio::time::Instant::now() < deadline, "the canary got no traffic");
    }
    let opened = tokio::time::Instant::now();
    loop {
        let metrics = h.metrics().await;
        let rollbacks = metric_value(
            &metrics,
            "tollgate_canary_rollbacks_total",
            &["route=\"rollout\"", "target=\"next\"", "reason=\"breaker_open\""],
        );
        if rollbacks == Some(1.0) {
            break;
        }
        assert!(opened.elapsed() < Duration::from_secs(5), "not rolled back 5 s after the breaker opened:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = canary.request_count();
    for _ in 0..10 {
        let response = h.openai("/v1/chat/completions", &chat("rollout")).await;
        assert_eq!(target(&response), "up-openai/stable");
    }
    assert_eq!(canary.request_count(), before, "the rolled-back canary gets no traffic, not even probes");
}

/// A `rollout` model splitting 50/50 between the harness's mock (`stable`) and `canary` (`next`), with the
/// canary's SLO given as TOML (`max_error_rate_delta = …` or `max_p95_latency_ratio = …`, `min_requests = …`).
fn canary_rollout(canary: &MockUpstream, slo: &str) -> String {
    format!(
        r#"
[[providers]]
name = "next"
kind = "openai"
base_url = "{}"

[[models]]
name = "rollout"
strategy = "weighted"
canary = {{ target = 1, {slo}, window_secs = 30 }}
targets = [ {{ provider = "up-openai", model = "stable", weight = 50 }}, {{ provider = "next", model = "next", weight = 50 }} ]
"#,
        canary.openai_base_url()
    )
}
