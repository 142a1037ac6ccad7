//! The provider conformance matrix: the same checks (non-stream, stream, usage, max_tokens, tools,
#![allow(clippy::unwrap_used, clippy::expect_used)]
//! upstream errors) run for every provider kind, from both caller protocols. `conformance!` instantiates it.

use serde_json::{json, Value};

use crate::{anthropic_text, dropped_params, openai_text, read_events, Harness, Script};

mod content;
pub use content::{documents, interleaved_tool_calls, reasoning, reasoning_without_a_reasoning_model};

fn openai_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "conformance check"}]})
}

fn anthropic_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 200, "stream": stream, "system": "terse", "messages": [{"role": "user", "content": "conformance check"}]})
}

pub async fn openai_non_stream(h: &Harness, model: &str) -> String {
    let response = h.openai("/v1/chat/completions", &openai_body(model, false)).await;
    assert_eq!(response.status(), 200);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["role"], "assistant");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    let usage = &out["usage"];
    let (input, output) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert!(input > 0 && output > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), input + output);
    let text = out["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(!text.is_empty());
    text
}

pub async fn openai_stream(h: &Harness, model: &str, expected_text: &str) {
    let mut body = openai_body(model, true);
    body["stream_options"] = json!({"include_usage": true});
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    assert_eq!(openai_text(&events), expected_text, "stream and non-stream answers match");
    let n = events.len();
    assert!(events[n - 1].is_done());
    let usage = events[n - 2].json();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let finishes: Vec<Value> = events[..n - 1]
        .iter()
        .map(|e| e.json()["choices"][0]["finish_reason"].clone())
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [json!("stop")]);
}

pub async fn anthropic_non_stream(h: &Harness, model: &str) -> String {
    let response = h.anthropic("/v1/messages", &anthropic_body(model, false)).await;
    assert_eq!(response.status(), 200);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["type"], "message");
    assert_eq!(out["stop_reason"], "end_turn");
    assert!(out["usage"]["input_tokens"].as_u64().unwrap() > 0 && out["usage"]["output_tokens"].as_u64().unwrap() > 0);
    out["content"][0]["text"].as_str().unwrap().to_owned()
}

pub async fn anthropic_stream(h: &Harness, model: &str, expected_text: &str) {
    let events = read_events(h.anthropic("/v1/messages", &anthropic_body(model, true)).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap_or("")).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[1], "content_block_start");
    assert_eq!(&names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    assert!(names.iter().all(|n| [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop"
    ]
    .contains(n)));
    assert_eq!(anthropic_text(&events), expected_text);
    // Usage is split: input in message_start (or repeated in message_delta), output in message_delta.
    let start = events[0].json()["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0);
    let delta = events[events.len() - 2].json();
    let input = delta["usage"]["input_tokens"].as_u64().unwrap_or(start);
    assert!(input > 0, "input tokens reported");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
}

pub async fn max_tokens_stop(h: &Harness, model: &str) {
    let mut body = openai_body(model, false);
    body["max_tokens"] = json!(2);
    let out: Value = h.openai("/v1/chat/completions", &body).await.json().await.unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "length", "{out}");
    let mut body = anthropic_body(model, false);
    body["max_tokens"] = json!(2);
    let out: Value = h.anthropic("/v1/messages", &body).await.json().await.unwrap();
    assert_eq!(out["stop_reason"], "max_tokens", "{out}");
}

pub async fn tools(h: &Harness, model: &str) {
    let tool_call = Some(("lookup".to_owned(), r#"{"q":"rust"}"#.to_owned()));
    for _ in 0..4 {
        h.mock.push(Script { tool_call: tool_call.clone(), ..Default::default() });
    }
    let mut body = openai_body(model, false);
    body["tools"] = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    let out: Value = h.openai("/v1/chat/completions", &body).await.json().await.unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "lookup");
    body["stream"] = json!(true);
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    let arguments: String = events
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"q": "rust"}));

    let mut body = anthropic_body(model, false);
    body["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    let out: Value = h.anthropic("/v1/messages", &body).await.json().await.unwrap();
    assert_eq!(out["stop_reason"], "tool_use");
    let block = out["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();
    assert_eq!(block["input"], json!({"q": "rust"}));
    body["stream"] = json!(true);
    let events = read_events(h.anthropic("/v1/messages", &body).await).await;
    let partial: String =
        events.iter().filter_map(|e| e.json()["delta"]["partial_json"].as_str().map(str::to_owned)).collect();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), json!({"q": "rust"}));
}

pub async fn upstream_errors(h: &Harness, model: &str) {
    for status in [429u16, 500] {
        h.mock.push(Script { status: Some(status), ..Default::default() });
        let response = h.openai("/v1/chat/completions", &openai_body(model, false)).await;
        assert_eq!(response.status().as_u16(), status);
        let out: Value = response.json().await.unwrap();
        assert!(out["error"]["message"].is_string() && out["error"]["type"].is_string(), "{out}");

        h.mock.push(Script { status: Some(status), ..Default::default() });
        let response = h.anthropic("/v1/messages", &anthropic_body(model, true)).await;
        assert_eq!(response.status().as_u16(), status);
        let out: Value = response.json().await.unwrap();
        assert_eq!(out["type"], "error", "{out}");
        let expected = if status == 429 { "rate_limit_error" } else { "api_error" };
        assert_eq!(out["error"]["type"], expected);
    }
}

/// Issue 14.6: a parameter the upstream's API has no equivalent for is named in
/// `x-tollgate-dropped-params` when translated, and passes untouched when not.
pub async fn parameters_without_an_equivalent(h: &Harness, model: &str) {
    let anthropic_upstream = model.contains("anthropic");
    let mut body = openai_body(model, false);
    body["seed"] = json!(7);
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(dropped_params(&response).as_deref(), anthropic_upstream.then_some("seed"), "OpenAI caller, {model}");
    let mut body = anthropic_body(model, true);
    body["top_k"] = json!(40);
    let response = h.anthropic("/v1/messages", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        dropped_params(&response).as_deref(),
        (!anthropic_upstream).then_some("top_k"),
        "Anthropic caller, {model}"
    );
    let events = read_events(response).await;
    assert!(!anthropic_text(&events).is_empty(), "the stream still answers");
}

/// Instantiates the matrix for one provider route. Scriptable providers (behind the HTTP mock) also run
/// the tool, upstream-error and reasoning cases; the built-in mock provider cannot be scripted to call tools,
/// fail or reason, and runs the case of a model that does not reason instead.
#[macro_export]
macro_rules! conformance {
    ($name:ident, $model:expr) => {
        $crate::conformance!(@base $name, $model, {
            #[tokio::test]
            async fn reasoning_answered_without_reasoning() {
                let h = Harness::start().await;
                reasoning_without_a_reasoning_model(&h, $model).await;
            }
        });
    };
    ($name:ident, $model:expr, scriptable) => {
        $crate::conformance!(@base $name, $model, {
            #[tokio::test]
            async fn tools_both_callers() {
                let h = Harness::start().await;
                tools(&h, $model).await;
            }

            #[tokio::test]
            async fn upstream_errors_in_caller_shape() {
                let h = Harness::start().await;
                upstream_errors(&h, $model).await;
            }

            #[tokio::test]
            async fn interleaved_parallel_tool_calls_both_callers() {
                let h = Harness::start().await;
                interleaved_tool_calls(&h, $model).await;
            }

            #[tokio::test]
            async fn reasoning_both_callers() {
                let h = Harness::start().await;
                reasoning(&h, $model).await;
            }
        });
    };
    (@base $name:ident, $model:expr, { $($extra:tt)* }) => {
        mod $name {
            #[allow(unused_imports)]
            use $crate::conformance::*;
            use $crate::Harness;

            #[tokio::test]
            async fn openai_caller_non_stream_and_stream_agree() {
                let h = Harness::start().await;
                let text = openai_non_stream(&h, $model).await;
                openai_stream(&h, $model, &text).await;
            }

            #[tokio::test]
            async fn anthropic_caller_non_stream_and_stream_agree() {
                let h = Harness::start().await;
                let text = anthropic_non_stream(&h, $model).await;
                anthropic_stream(&h, $model, &text).await;
            }

            #[tokio::test]
            async fn max_tokens_reported_as_length() {
                let h = Harness::start().await;
                max_tokens_stop(&h, $model).await;
            }

            #[tokio::test]
            async fn parameters_without_an_equivalent_are_named() {
                let h = Harness::start().await;
                parameters_without_an_equivalent(&h, $model).await;
            }

            #[tokio::test]
            async fn documents_mapped_or_refused_by_name() {
                let h = Harness::start().await;
                documents(&h, $model).await;
            }

            $($extra)*
        }
    };
}
