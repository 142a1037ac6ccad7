//! Priority fallback over real sockets: connect errors, timeouts, 429 and 5xx before anything reached the
//! client move on to the next tier transparently; client errors (4xx) never do; when every tier fails the
//! client gets the last error (with its `Retry-After`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::*;

/// Models whose two tiers both live on the mock; the mock echoes the upstream model, so `requests()` shows
/// which tier each attempt went to.
const TIERS: &str = r#"
[[models]]
name = "two-tier"
targets = [ { provider = "up-openai", model = "tier0", priority = 0 }, { provider = "up-openai", model = "tier1", priority = 1 } ]

[[models]]
name = "openai-then-anthropic"
targets = [ { provider = "up-openai", model = "tier0", priority = 0 }, { provider = "up-anthropic", model = "tier1-claude", priority = 1 } ]

[[models]]
name = "anthropic-then-openai"
targets = [ { provider = "up-anthropic", model = "tier0-claude", priority = 0 }, { provider = "up-openai", model = "tier1", priority = 1 } ]
"#;

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

fn messages(model: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "Hello there"}]})
}

fn status(code: u16) -> Script {
    Script { status: Some(code), ..Default::default() }
}

/// The upstream model of every attempt, in order.
fn attempts(h: &Harness) -> Vec<String> {
    h.mock.requests().iter().map(|r| r.body["model"].as_str().unwrap_or("?").to_owned()).collect()
}

fn target(response: &reqwest::Response) -> String {
    response.headers()["x-tollgate-target"].to_str().unwrap().to_owned()
}

fn labels(route: &str, provider: &str, model: &str) -> String {
    format!("route=\"{route}\",gen_ai_provider_name=\"{provider}\",gen_ai_request_model=\"{model}\"")
}

async fn openai_ok(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["object"], "chat.completion", "{out}");
    assert_eq!(out["choices"][0]["message"]["content"], mock_upstream::DEFAULT_REPLY, "{out}");
    out
}

#[tokio::test]
async fn dead_first_target_falls_back_to_the_next_tier() {
    let h = Harness::start().await;
    let response = h.openai("/v1/chat/completions", &chat("gpt-fallback")).await;
    assert_eq!(target(&response), "up-openai/mock-gpt");
    openai_ok(response).await;
    assert_eq!(attempts(&h), ["mock-gpt"], "the dead target never answered; the mock saw one request");

    let metrics = h.metrics().await;
    let dead = labels("gpt-fallback", "dead", "x");
    let live = labels("gpt-fallback", "up-openai", "mock-gpt");
    assert_eq!(metric_value(&metrics, "tollgate_fallbacks_total", &[&dead]), Some(1.0));
    assert_eq!(metric_value(&metrics, "tollgate_fallbacks_total", &[&live]), Some(0.0));
    assert_eq!(metric_value(&metrics, "tollgate_upstream_requests_total", &[&dead, "outcome=\"error\""]), Some(1.0));
    assert_eq!(metric_value(&metrics, "tollgate_upstream_requests_total", &[&live, "outcome=\"ok\""]), Some(1.0));

    // Streams and Anthropic callers fall back the same way.
    let mut body = chat("gpt-fallback");
    body["stream"] = json!(true);
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(target(&response), "up-openai/mock-gpt");
    let events = read_events(response).await;
    assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY);
    assert!(events.last().unwrap().is_done());
    let response = h.anthropic("/v1/messages", &messages("gpt-fallback")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(target(&response), "up-openai/mock-gpt");
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["type"], "message");
    assert_eq!(out["content"][0]["text"], mock_upstream::DEFAULT_REPLY);

    let metrics = h.metrics().await;
    assert_eq!(metric_value(&metrics, "tollgate_fallbacks_total", &[&dead]), Some(3.0));
}

#[tokio::test]
async fn server_errors_and_rate_limits_fall_back() {
    let h = Harness::start_with(TIERS).await;
    let cases = [
        status(500),
        Script { status: Some(429), retry_after: Some(3), ..Default::default() },
        status(503),
        status(502),
    ];
    for (n, first) in cases.into_iter().enumerate() {
        let code = first.status.unwrap();
        h.mock.push(first);
        let response = h.openai("/v1/chat/completions", &chat("two-tier")).await;
        assert_eq!(response.status(), 200, "tier 0 answered {code}");
        assert_eq!(target(&response), "up-openai/tier1");
        assert!(response.headers().get("retry-after").is_none(), "a recovered request carries no Retry-After");
        openai_ok(response).await;
        let seen = attempts(&h);
        assert_eq!(seen.len(), 2 * (n + 1), "two upstream requests per call");
        assert_eq!(seen[2 * n..], ["tier0", "tier1"], "after {code}");
    }
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tollgate_fallbacks_total", &[&labels("two-tier", "up-openai", "tier0")]),
        Some(4.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "tollgate_upstream_requests_total",
            &[&labels("two-tier", "up-openai", "tier0"), "outcome=\"error\""]
        ),
        Some(4.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "tollgate_upstream_requests_total",
            &[&labels("two-tier", "up-openai", "tier1"), "outcome=\"ok\""]
        ),
        Some(4.0)
    );
    // With a healthy tier 0, tier 1 is never asked.
    let response = h.openai("/v1/chat/completions", &chat("two-tier")).await;
    assert_eq!(target(&response), "up-openai/tier0");
    openai_ok(response).await;
    assert_eq!(attempts(&h).len(), 9);
}

#[tokio::test]
async fn client_errors_do_not_fall_back() {
    let h = Harness::start_with(TIERS).await;
    for code in [400, 404, 422] {
        h.mock.push(status(code));
        let before = h.mock.request_count();
        let response = h.openai("/v1/chat/completions", &chat("two-tier")).await;
        assert_eq!(response.status(), code);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "invalid_request_error", "the provider's own error body: {body}");
        assert_eq!(h.mock.request_count(), before + 1, "{code} is the request's fault; no other tier is tried");
        assert_eq!(attempts(&h).last().unwrap(), "tier0");
    }
    // Anthropic caller, cross-protocol tier 0: the 400 arrives in the Anthropic shape.
    h.mock.push(status(400));
    let response = h.anthropic("/v1/messages", &messages("openai-then-anthropic")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(attempts(&h).len(), 4);
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tollgate_fallbacks_total", &[&labels("two-tier", "up-openai", "tier0")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn all_tiers_failing_returns_the_last_error_with_retry_after() {
    let h = Harness::start_with(TIERS).await;
    h.mock.push(Script { status: Some(429), retry_after: Some(5), ..Default::default() });
    h.mock.push(Script { status: Some(429), retry_after: Some(7), ..Default::default() });
    let response = h.openai("/v1/chat/completions", &chat("two-tier")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7", "the last tier's Retry-After");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Rate limit"), "{body}");
    assert_eq!(attempts(&h), ["tier0", "tier1"]);

    // Without Retry-After upstream, none is invented.
    h.mock.push(status(429));
    h.mock.push(status(429));
    let response = h.openai("/v1/chat/completions", &chat("two-tier")).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none());

    // Anthropic caller across protocols: 500 then 429 → the last error (429) in the Anthropic shape.
    h.mock.push(status(500));
    h.mock.push(Script { status: Some(429), retry_after: Some(2), ..Default::default() });
    let response = h.anthropic("/v1/messages", &messages("two-tier")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");

    // Streaming requests whose every tier refuses: a plain 429 with the last Retry-After, no event stream.
    h.mock.push(Script { status: Some(429), retry_after: Some(4), ..Default::default() });
    h.mock.push(Script { status: Some(429), retry_after: Some(9), ..Default::default() });
    let mut body = chat("two-tier");
    body["stream"] = json!(true);
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "9");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");

    // 429 then 503: the client sees the 503.
    h.mock.push(status(429));
    h.mock.push(status(503));
    let response = h.openai("/v1/chat/completions", &chat("two-tier")).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(attempts(&h).len(), 10);

    // The node keeps serving.
    openai_ok(h.openai("/v1/chat/completions", &chat("two-tier")).await).await;
}

#[tokio::test]
async fn streams_that_fail_before_any_event_fall_back_transparently() {
    let h = Harness::start_with(TIERS).await;
    let failures = [
        Script { abort_after_events: Some(0), ..Default::default() },
        Script { end_early_after_events: Some(0), ..Default::default() },
        Script { malformed_after_events: Some(0), ..Default::default() },
        Script { garbage_body: true, ..Default::default() },
        status(500),
    ];
    let mut body = chat("two-tier");
    body["stream"] = json!(true);
    for (n, failure) in failures.into_iter().enumerate() {
        let what = format!("{failure:?}");
        h.mock.push(failure);
        let response = h.openai("/v1/chat/completions", &body).await;
        assert_eq!(response.status(), 200, "{what}");
        assert_eq!(target(&response), "up-openai/tier1", "{what}");
        let events = read_events(response).await;
        assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY, "{what}");
        assert!(events.last().unwrap().is_done(), "{what}");
        assert!(events.iter().all(|e| e.json().get("error").is_none()), "no trace of the failed tier: {what}");
        let roles = events.iter().filter(|e| e.json()["choices"][0]["delta"]["role"].is_string()).count();
        assert_eq!(roles, 1, "one assistant message, not two: {what}");
        assert_eq!(attempts(&h)[2 * n..], ["tier0", "tier1"], "{what}");
    }

    // Anthropic caller on the same route (translated both tiers).
    h.mock.push(Script { abort_after_events: Some(0), ..Default::default() });
    let mut body = messages("two-tier");
    body["stream"] = json!(true);
    let response = h.anthropic("/v1/messages", &body).await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    assert_eq!(anthropic_text(&events), mock_upstream::DEFAULT_REPLY);
    assert_eq!(events.iter().filter(|e| e.name.as_deref() == Some("message_start")).count(), 1);
    assert_eq!(events.last().unwrap().name.as_deref(), Some("message_stop"));
}

#[tokio::test]
async fn a_stream_that_already_started_is_not_retried() {
    let h = Harness::start_with(TIERS).await;
    h.mock.push(Script { abort_after_events: Some(3), ..Default::default() });
    let mut body = chat("two-tier");
    body["stream"] = json!(true);
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(target(&response), "up-openai/tier0");
    let events = read_events(response).await;
    assert!(events.last().unwrap().json().get("error").is_some(), "ends with an error event: {events:#?}");
    assert!(!events.iter().any(Event::is_done));
    assert_eq!(attempts(&h), ["tier0"], "events were already sent; replaying another tier would duplicate them");
}

#[tokio::test]
async fn first_tier_timeout_falls_back() {
    let h = Harness::start_with(TIERS).await;
    // No headers within the 2 s first-byte budget.
    h.mock.push(Script { delay_headers: Some(Duration::from_secs(3)), ..Default::default() });
    let started = Instant::now();
    let response = h.openai("/v1/chat/completions", &chat("two-tier")).await;
    assert_eq!(target(&response), "up-openai/tier1");
    openai_ok(response).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(attempts(&h), ["tier0", "tier1"]);

    // Streaming: headers in time but no event before the first-byte budget runs out.
    h.mock.push(Script { stall_after_events: Some(0), ..Default::default() });
    let mut body = chat("two-tier");
    body["stream"] = json!(true);
    let started = Instant::now();
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(target(&response), "up-openai/tier1");
    let events = read_events(response).await;
    assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY);
    assert!(events.last().unwrap().is_done());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    // The abandoned tier-0 stream was cancelled, not left hanging.
    eventually("the silent tier-0 stream is cancelled", || h.mock.cancelled_streams() >= 1).await;

    // Streaming with slow headers.
    h.mock.push(Script { delay_headers: Some(Duration::from_secs(3)), ..Default::default() });
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(target(&response), "up-openai/tier1");
    let events = read_events(response).await;
    assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY);
    assert_eq!(attempts(&h).len(), 6);

    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tollgate_fallbacks_total", &[&labels("two-tier", "up-openai", "tier0")]),
        Some(3.0)
    );
}

#[tokio::test]
async fn fallback_across_protocols_keeps_the_callers_shape() {
    let h = Harness::start_with(TIERS).await;
    // OpenAI caller: tier 0 (OpenAI) fails, tier 1 is Anthropic → still an OpenAI answer.
    h.mock.push(status(500));
    let response = h.openai("/v1/chat/completions", &chat("openai-then-anthropic")).await;
    assert_eq!(target(&response), "up-anthropic/tier1-claude");
    let out = openai_ok(response).await;
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert!(out["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0), "{out}");
    let seen = h.mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[1].path, "/v1/messages");
    assert_eq!(seen[1].body["model"], "tier1-claude");
    assert_eq!(seen[1].header("x-api-key"), Some(UPSTREAM_ANTHROPIC_KEY));

    // The same, streaming.
    h.mock.push(status(503));
    let mut body = chat("openai-then-anthropic");
    body["stream"] = json!(true);
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(target(&response), "up-anthropic/tier1-claude");
    let events = read_events(response).await;
    assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY);
    assert!(events.last().unwrap().is_done());
    assert!(
        events.iter().all(|e| e.name.is_none() && e.json().get("type").is_none()),
        "OpenAI chunks only: {events:#?}"
    );

    // Anthropic caller: tier 0 (Anthropic) overloaded, tier 1 is OpenAI → still an Anthropic answer.
    h.mock.push(status(529));
    let response = h.anthropic("/v1/messages", &messages("anthropic-then-openai")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(target(&response), "up-openai/tier1");
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["type"], "message", "{out}");
    assert_eq!(out["content"][0]["text"], mock_upstream::DEFAULT_REPLY);
    assert_eq!(out["stop_reason"], "end_turn");

    // OpenAI caller whose every tier fails across protocols: the last error, in the OpenAI shape.
    h.mock.push(status(500));
    h.mock.push(status(529));
    let response = h.openai("/v1/chat/completions", &chat("openai-then-anthropic")).await;
    assert!(response.status().is_server_error(), "{}", response.status());
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "OpenAI shape: {body}");
    assert!(body.get("type").is_none(), "not the Anthropic shape: {body}");
    assert_eq!(h.mock.request_count(), 8);
}
