//! The gateway against a mock as strict as the real APIs, over real sockets: tool results without their
//! calls and unknown models are refused in the caller's shape; what the real APIs emit and the other tests
//! never sent — parallel tool calls, text and tool calls in one message, cache counts in `message_delta`,
//! an `error` event mid-stream — reaches callers of either protocol intact and is metered right.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use tollgate_tests::mock_upstream::pieces;
use tollgate_tests::*;

const PREAMBLE: &str = "Let me check both.";

fn text_and_two_calls() -> Script {
    Script {
        preamble: Some(PREAMBLE.into()),
        tool_call: Some(("weather".into(), r#"{"city":"Oslo"}"#.into())),
        second_tool_call: Some(("time".into(), r#"{"zone":"CET"}"#.into())),
        ..Default::default()
    }
}

fn openai_tools() -> Value {
    json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}},
           {"type": "function", "function": {"name": "time", "parameters": {"type": "object"}}}])
}

fn anthropic_tools() -> Value {
    json!([{"name": "weather", "input_schema": {"type": "object"}}, {"name": "time", "input_schema": {"type": "object"}}])
}

#[tokio::test]
async fn a_tool_result_without_its_call_is_refused_in_the_callers_shape() {
    let h = Harness::start().await;
    // OpenAI caller, Anthropic upstream: a tool message answering a call nobody made.
    let body = json!({"model": "gpt-via-claude", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_9", "content": "cold"}]});
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    // The upstream's own words reach the caller.
    assert!(error["error"]["message"].as_str().unwrap().contains("`tool_result`"), "{error}");
    // Anthropic caller, OpenAI upstream: a tool_result whose tool_use is not in the turn before.
    let body = json!({"model": "claude-via-gpt", "max_tokens": 50, "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "cold"}]}]});
    let response = h.anthropic("/v1/messages", &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert_eq!(h.mock.output_tokens_served(), 0, "nothing was generated");
}

#[tokio::test]
async fn a_model_the_upstream_does_not_serve_is_a_404_for_the_caller() {
    let h = Harness::start_with(
        r#"
[[models]]
name = "renamed"
targets = [ { provider = "up-openai", model = "mock-gpt-retired" } ]
"#,
    )
    .await;
    h.mock.set_served_models(Some(&["mock-gpt", "mock-claude", "mock-embed"]));
    assert_eq!(
        h.openai(
            "/v1/chat/completions",
            &json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "hi"}]})
        )
        .await
        .status(),
        200
    );
    let response = h
        .openai("/v1/chat/completions", &json!({"model": "renamed", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    let status = response.status().as_u16();
    let error: Value = response.json().await.unwrap();
    assert_eq!(status, 404, "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("mock-gpt-retired"), "{error}");
    assert_eq!(h.mock.requests().iter().filter(|r| r.body["model"] == "mock-gpt-retired").count(), 1, "not retried");
}

#[tokio::test]
async fn text_and_parallel_tool_calls_from_anthropic_reach_openai_callers() {
    let h = Harness::start().await;
    h.mock.push(text_and_two_calls());
    let body =
        json!({"model": "gpt-via-claude", "tools": openai_tools(), "messages": [{"role": "user", "content": "both?"}]});
    let out: Value = h.openai("/v1/chat/completions", &body).await.json().await.unwrap();
    let message = &out["choices"][0]["message"];
    assert_eq!(message["content"], PREAMBLE, "{out}");
    let calls = message["tool_calls"].as_array().unwrap();
    let named: Vec<(&str, Value)> = calls
        .iter()
        .map(|c| {
            (
                c["function"]["name"].as_str().unwrap(),
                serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(named, [("weather", json!({"city": "Oslo"})), ("time", json!({"zone": "CET"}))]);
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out["usage"]["completion_tokens"], pieces(PREAMBLE).len() + 6);

    // Streamed: the text first, then each call under its own index, then one finish reason.
    h.mock.push(text_and_two_calls());
    let mut body = body.clone();
    body["stream"] = json!(true);
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    assert_eq!(openai_text(&events), PREAMBLE);
    let mut arguments = [String::new(), String::new()];
    let mut names = Vec::new();
    for event in &events {
        for call in event.json()["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap() as usize;
            if let Some(name) = call["function"]["name"].as_str() {
                names.push((index, name.to_owned(), call["id"].as_str().unwrap().to_owned()));
            }
            arguments[index].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(names.iter().map(|(i, n, _)| (*i, n.as_str())).collect::<Vec<_>>(), [(0, "weather"), (1, "time")]);
    assert_ne!(names[0].2, names[1].2, "each call has its own id");
    assert_eq!(arguments, [r#"{"city":"Oslo"}"#.to_owned(), r#"{"zone":"CET"}"#.to_owned()]);
    let finishes: Vec<Value> =
        events.iter().map(|e| e.json()["choices"][0]["finish_reason"].clone()).filter(|f| !f.is_null()).collect();
    assert_eq!(finishes, [json!("tool_calls")]);
    assert!(events.last().unwrap().is_done());
}

#[tokio::test]
async fn text_next_to_a_tool_call_from_openai_reaches_anthropic_callers_as_two_blocks() {
    let h = Harness::start().await;
    let script = || Script { second_tool_call: None, ..text_and_two_calls() };
    h.mock.push(script());
    let body = json!({"model": "claude-via-gpt", "max_tokens": 100, "tools": anthropic_tools(), "messages": [{"role": "user", "content": "weather?"}]});
    let out: Value = h.anthropic("/v1/messages", &body).await.json().await.unwrap();
    assert_eq!(out["content"][0], json!({"type": "text", "text": PREAMBLE}), "{out}");
    assert_eq!(out["content"][1]["type"], "tool_use", "{out}");
    assert_eq!(out["content"][1]["input"], json!({"city": "Oslo"}));
    assert_eq!(out["stop_reason"], "tool_use");

    h.mock.push(script());
    let mut body = body.clone();
    body["stream"] = json!(true);
    let events = read_events(h.anthropic("/v1/messages", &body).await).await;
    assert_eq!(anthropic_text(&events), PREAMBLE);
    let blocks: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_start"))
        .map(|e| (e.json()["index"].as_u64().unwrap(), e.json()["content_block"]["type"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(blocks, [(0, "text".to_owned()), (1, "tool_use".to_owned())]);
    let closed = events.iter().filter(|e| e.name.as_deref() == Some("content_block_stop")).count();
    assert_eq!(closed, 2);
}

/// A prompt cache splits the prompt into uncached, written and read tokens; the bill and the OpenAI
/// caller's `prompt_tokens` are the whole prompt, `cached_tokens` what was read.
#[tokio::test]
async fn cache_counts_in_message_delta_are_billed_as_prompt_tokens() {
    let h = Harness::start().await;
    let (written, read) = (1, 2);
    let cached = || Script { cache_tokens: Some((written, read)), ..Default::default() };
    // The prompt the mock bills: "Say hello" (9 bytes → 3 tokens) + 3 for one message.
    let prompt = 6;
    for stream in [false, true] {
        h.mock.push(cached());
        let mut body = json!({"model": "gpt-via-claude", "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]});
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        let response = h.openai("/v1/chat/completions", &body).await;
        let usage = if stream {
            let events = read_events(response).await;
            events[events.len() - 2].json()["usage"].clone()
        } else {
            response.json::<Value>().await.unwrap()["usage"].clone()
        };
        assert_eq!(usage["prompt_tokens"], prompt, "stream {stream}: {usage}");
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], read, "stream {stream}: {usage}");
        assert_eq!(usage["completion_tokens"], 12);
    }
    // Anthropic callers get the upstream's split as it was sent.
    h.mock.push(cached());
    let body = json!({"model": "claude-direct", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "Say hello"}]});
    let events = read_events(h.anthropic("/v1/messages", &body).await).await;
    let delta = events.iter().find(|e| e.name.as_deref() == Some("message_delta")).unwrap().json();
    assert_eq!(delta["usage"]["cache_read_input_tokens"], read, "{delta}");
    assert_eq!(delta["usage"]["input_tokens"], prompt - written - read, "{delta}");
    // Metered: every prompt token the mock billed, on both routes.
    let metrics = h.metrics().await;
    let input = |route: &str| {
        metric_value(&metrics, "gen_ai_client_token_usage_total", &[&format!("route=\"{route}\""), "input"]).unwrap()
    };
    assert_eq!(input("gpt-via-claude"), 2.0 * prompt as f64);
    assert_eq!(input("claude-direct"), prompt as f64);
    assert_eq!(h.mock.input_tokens_served(), 3 * prompt);
}

/// Anthropic fails a stream it has started with an `error` event: the caller gets the text so far and one
/// error in its own shape, never a finish it was not sent; what was generated is metered.
#[tokio::test]
async fn an_error_event_mid_stream_reaches_both_callers_as_one_error() {
    let h = Harness::start().await;
    // message_start, content_block_start, ping, two deltas, then the error.
    let failing = || Script { error_after_events: Some(5), ..Default::default() };
    let first_two = pieces(mock_upstream::DEFAULT_REPLY)[..2].concat();

    h.mock.push(failing());
    let body =
        json!({"model": "gpt-via-claude", "stream": true, "messages": [{"role": "user", "content": "Say hello"}]});
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    assert_eq!(openai_text(&events), first_two);
    let last = events.last().unwrap().json();
    assert!(last["error"]["message"].as_str().unwrap().contains("Overloaded"), "{last}");
    assert!(events.iter().all(|e| !e.is_done() && e.json()["choices"][0]["finish_reason"].is_null()));
    assert_eq!(events.iter().filter(|e| e.json().get("error").is_some()).count(), 1);

    h.mock.push(failing());
    let body = json!({"model": "claude-direct", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "Say hello"}]});
    let events = read_events(h.anthropic("/v1/messages", &body).await).await;
    assert_eq!(anthropic_text(&events), first_two);
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("error"));
    assert_eq!(last.json()["error"]["type"], "overloaded_error", "{}", last.data);
    assert!(events.iter().all(|e| e.name.as_deref() != Some("message_stop")));

    let metrics = h.metrics().await;
    let output: f64 = ["gpt-via-claude", "claude-direct"]
        .iter()
        .map(|route| {
            metric_value(&metrics, "gen_ai_client_token_usage_total", &[&format!("route=\"{route}\""), "output"])
                .unwrap_or(0.0)
        })
        .sum();
    assert!(
        output >= h.mock.output_tokens_served() as f64,
        "metered {output} < generated {}",
        h.mock.output_tokens_served()
    );
}
