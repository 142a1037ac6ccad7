//! OpenAI callers against an OpenAI-compatible upstream: the same-protocol path, over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use tollgate_tests::*;

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello there"}]})
}

#[tokio::test]
async fn non_stream_chat_passes_through_with_model_rewritten_and_upstream_key() {
    let h = Harness::start().await;
    let mut body = chat("gpt-direct");
    body["seed"] = json!(7);
    body["x_vendor_extension"] = json!({"keep": [1, 2, 3]});
    let response = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .header("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-target"], "up-openai/mock-gpt");
    assert_eq!(response.headers()["x-tollgate-node"], "1");
    assert!(response.headers()["x-tollgate-overhead-us"].to_str().unwrap().parse::<u64>().is_ok());
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["content"], mock_upstream::DEFAULT_REPLY);
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["usage"]["completion_tokens"], 12);

    let seen = h.mock.requests();
    let upstream = seen.last().unwrap();
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(upstream.body["model"], "mock-gpt");
    assert_eq!(upstream.body["seed"], 7, "unknown fields pass through untouched");
    assert_eq!(upstream.body["x_vendor_extension"], json!({"keep": [1, 2, 3]}));
    assert_eq!(upstream.body["messages"], body["messages"]);
    assert_eq!(upstream.header("authorization"), Some(format!("Bearer {UPSTREAM_OPENAI_KEY}").as_str()));
    assert!(!upstream.headers.iter().any(|(_, v)| v.contains(KEY)), "the client's gateway key never goes upstream");
    assert_eq!(upstream.header("traceparent"), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    assert_eq!(
        upstream.header("tracestate"),
        Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        "W3C tracestate passed on"
    );
    let host = h.mock.addr().to_string();
    assert_eq!(upstream.header("host"), Some(host.as_str()), "the upstream's own Host, not the gateway's");
    assert_eq!(upstream.headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("host")).count(), 1);
}

#[tokio::test]
async fn stream_without_include_usage_hides_the_usage_chunk_but_meters_it() {
    let h = Harness::start().await;
    let mut body = chat("gpt-direct");
    body["stream"] = json!(true);
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let events = read_events(response).await;
    assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY);
    assert!(events.last().unwrap().is_done());
    assert!(events.iter().all(|e| e.is_done() || !e.json()["usage"].is_object()), "no usage chunk was asked for");
    let finish: Vec<_> =
        events.iter().filter_map(|e| e.json()["choices"][0]["finish_reason"].as_str().map(str::to_owned)).collect();
    assert_eq!(finish, ["stop"]);
    // The gateway asked upstream for usage anyway, and metered it.
    assert_eq!(h.mock.requests().last().unwrap().body["stream_options"]["include_usage"], true);
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, "gen_ai_client_token_usage_total", &["route=\"gpt-direct\"", "output"]),
        Some(12.0)
    );
}

#[tokio::test]
async fn stream_with_include_usage_ends_with_usage_then_done() {
    let h = Harness::start().await;
    let mut body = chat("gpt-direct");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    let n = events.len();
    assert!(events[n - 1].is_done());
    let usage = events[n - 2].json();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 12);
}

#[tokio::test]
async fn streams_are_forwarded_event_by_event() {
    let h = Harness::start().await;
    h.mock.push(Script { delay_between_events: Some(std::time::Duration::from_millis(500)), ..Default::default() });
    let mut body = chat("gpt-direct");
    body["stream"] = json!(true);
    let mut response = h.openai("/v1/chat/completions", &body).await;
    let first = first_event(&mut response).await;
    assert!(first.contains("chat.completion.chunk"));
    // Causal, not timed: a gateway that buffered would hand over its first event only after the upstream
    // had sent all 12 tokens (500 ms apart).
    let sent = h.mock.output_tokens_served();
    assert!(sent < 12, "the first event came after the upstream had sent {sent} of 12 tokens: buffered");
    drop(response);
}

#[tokio::test]
async fn tools_and_response_format_pass_through() {
    let h = Harness::start().await;
    h.mock.push(Script { tool_call: Some(("get_weather".into(), r#"{"city":"Paris"}"#.into())), ..Default::default() });
    let mut body = chat("gpt-direct");
    body["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    body["response_format"] = json!({"type": "json_object"});
    let out: Value = h.openai("/v1/chat/completions", &body).await.json().await.unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    let upstream = h.mock.requests().pop().unwrap();
    assert_eq!(upstream.body["tools"], body["tools"]);
    assert_eq!(upstream.body["response_format"], body["response_format"]);
}

#[tokio::test]
async fn embeddings_and_models() {
    let h = Harness::start().await;
    let out: Value =
        h.openai("/v1/embeddings", &json!({"model": "embed", "input": ["a", "b"]})).await.json().await.unwrap();
    assert_eq!(out["data"].as_array().unwrap().len(), 2);
    assert_eq!(h.mock.requests().pop().unwrap().body["model"], "mock-embed");

    let models: Value = h.client.get(h.url("/v1/models")).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"gpt-direct") && ids.contains(&"claude-direct"));
    let limited: Value =
        h.client.get(h.url("/v1/models")).bearer_auth(LIMITED_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(limited["data"].as_array().unwrap().len(), 1);
    let anthropic: Value = h
        .client
        .get(h.url("/v1/models"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert_eq!(anthropic["has_more"], false);
}

#[tokio::test]
async fn limited_key_cannot_use_other_models() {
    let h = Harness::start().await;
    let response = h
        .client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(LIMITED_KEY)
        .json(&chat("claude-direct"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["error"]["type"], "permission_error");
    assert_eq!(h.mock.request_count(), 0);
}

/// Tokens and cost against what the mock billed (not the gateway's own count); latency series against a
/// known upstream delay: the upstream's wait shows in request duration and time to first token, never in
/// the gateway's overhead.
#[tokio::test]
async fn metrics_report_usage_cost_and_latency() {
    let h = Harness::start().await;
    let delay = std::time::Duration::from_millis(250);
    let mut overheads_us = Vec::new();
    for stream in [false, false, true] {
        h.mock.push(Script { delay_headers: Some(delay), ..Default::default() });
        let mut body = chat("gpt-direct");
        body["stream"] = json!(stream);
        let response = h.openai("/v1/chat/completions", &body).await;
        assert_eq!(response.status(), 200);
        overheads_us.push(response.headers()["x-tollgate-overhead-us"].to_str().unwrap().parse::<u64>().unwrap());
        let _ = response.bytes().await.unwrap();
    }
    // "be brief" + "Hello there" = 19 bytes → 5 tokens, + 3 per message: 11 per request, by the mock's rule.
    assert_eq!(h.mock.input_tokens_served(), 3 * 11);
    assert_eq!(h.mock.output_tokens_served(), 3 * 12);
    let metrics = h.metrics().await;
    let labels = "route=\"gpt-direct\",gen_ai_provider_name=\"up-openai\",gen_ai_request_model=\"mock-gpt\"";
    let value = |name: &str, parts: &[&str]| {
        let mut all = vec![labels];
        all.extend_from_slice(parts);
        metric_value(&metrics, name, &all).unwrap_or_else(|| panic!("{name} {parts:?} in:\n{metrics}"))
    };
    assert_eq!(value("tollgate_upstream_requests_total", &["outcome=\"ok\""]), 3.0);
    assert_eq!(value("gen_ai_client_token_usage_total", &["input"]), 33.0);
    assert_eq!(value("gen_ai_client_token_usage_total", &["output"]), 36.0);
    // $1 per million input tokens, $2 per million output tokens (config_toml's gpt-direct).
    let expected_cost = (33.0 * 1.0 + 36.0 * 2.0) / 1e6;
    let cost = value("tollgate_cost_usd_total", &[]);
    assert!((cost - expected_cost).abs() < 1e-12, "{cost} vs {expected_cost}");
    // Every request waited `delay` for the upstream's headers: in the duration, and in the stream's TTFT.
    assert_eq!(value("gen_ai_server_request_duration_seconds_count", &[]), 3.0);
    let duration = value("gen_ai_server_request_duration_seconds_sum", &[]);
    assert!(duration >= 3.0 * delay.as_secs_f64() && duration < 30.0, "duration sum {duration}");
    assert_eq!(value("gen_ai_server_time_to_first_token_seconds_count", &[]), 1.0, "one stream");
    let ttft = value("gen_ai_server_time_to_first_token_seconds_sum", &[]);
    assert!(ttft >= delay.as_secs_f64() && ttft < 10.0, "ttft {ttft}");
    // The gateway's overhead excludes the upstream's wait: each well under the delay it sat through.
    assert!(overheads_us.iter().all(|us| *us < delay.as_micros() as u64), "{overheads_us:?}");
    let overhead_count = metric_value(&metrics, "tollgate_gateway_overhead_seconds_count", &[]).unwrap();
    assert_eq!(overhead_count, 3.0);
    let overhead_sum = metric_value(&metrics, "tollgate_gateway_overhead_seconds_sum", &[]).unwrap();
    assert!(overhead_sum < 3.0 * delay.as_secs_f64(), "overhead sum {overhead_sum}");
    assert_eq!(metric_value(&metrics, "tollgate_http_responses_total", &["code=\"200\""]), Some(3.0));
}

#[tokio::test]
async fn missing_usage_is_estimated_locally_and_marked() {
    let h = Harness::start().await;
    h.mock.push(Script { omit_usage: true, ..Default::default() });
    let mut body = chat("gpt-direct");
    body["stream"] = json!(true);
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    assert!(events.last().unwrap().is_done());
    let metrics = h.metrics().await;
    assert_eq!(metric_value(&metrics, "tollgate_usage_estimated_total", &["route=\"gpt-direct\""]), Some(1.0));
    let output =
        metric_value(&metrics, "gen_ai_client_token_usage_total", &["route=\"gpt-direct\"", "output"]).unwrap();
    assert!(output > 5.0, "estimated output tokens: {output}");
}
