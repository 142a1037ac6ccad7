//! Cross-protocol traffic over real sockets: OpenAI callers on an Anthropic upstream and Anthropic
//! callers on an OpenAI upstream, streamed and not, with tools, stop reasons and usage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use tollgate_tests::*;

fn openai_chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello"}
        ]
    })
}

fn anthropic_messages(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 256,
        "stream": stream,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say hello"}]
    })
}

#[tokio::test]
async fn openai_caller_anthropic_upstream_non_stream() {
    let h = Harness::start().await;
    let response = h.openai("/v1/chat/completions", &openai_chat("gpt-via-claude", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tollgate-target"], "up-anthropic/mock-claude");
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["role"], "assistant");
    assert_eq!(out["choices"][0]["message"]["content"], mock_upstream::DEFAULT_REPLY);
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["usage"]["completion_tokens"], 12);
    assert_eq!(out["usage"]["total_tokens"].as_u64().unwrap(), out["usage"]["prompt_tokens"].as_u64().unwrap() + 12);

    let upstream = h.mock.requests().pop().unwrap();
    assert_eq!(upstream.path, "/v1/messages");
    assert_eq!(upstream.header("x-api-key"), Some(UPSTREAM_ANTHROPIC_KEY));
    assert_eq!(upstream.header("anthropic-version"), Some("2023-06-01"));
    assert!(upstream.header("authorization").is_none());
    assert_eq!(upstream.body["model"], "mock-claude");
    assert_eq!(upstream.body["system"], "You are terse.");
    assert_eq!(upstream.body["max_tokens"], 1000, "the model's max_output_tokens is the default max_tokens");
    assert_eq!(
        upstream.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}])
    );
}

#[tokio::test]
async fn openai_caller_anthropic_upstream_stream_with_usage() {
    let h = Harness::start().await;
    let mut body = openai_chat("gpt-via-claude", true);
    body["stream_options"] = json!({"include_usage": true});
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY);
    assert_eq!(events[0].json()["choices"][0]["delta"]["role"], "assistant");
    let n = events.len();
    assert!(events[n - 1].is_done());
    assert_eq!(events[n - 2].json()["usage"]["completion_tokens"], 12, "output usage from message_delta");
    assert!(
        events[n - 2].json()["usage"]["prompt_tokens"].as_u64().unwrap() > 0,
        "input usage from message_start is kept"
    );
    assert_eq!(events[n - 3].json()["choices"][0]["finish_reason"], "stop");
    assert!(events.iter().all(|e| e.is_done() || e.json()["object"] == "chat.completion.chunk"));
}

#[tokio::test]
async fn openai_caller_anthropic_upstream_tool_calls() {
    let h = Harness::start().await;
    h.mock.push(Script { tool_call: Some(("get_weather".into(), r#"{"city":"Oslo"}"#.into())), ..Default::default() });
    h.mock.push(Script { tool_call: Some(("get_weather".into(), r#"{"city":"Oslo"}"#.into())), ..Default::default() });
    let mut body = openai_chat("gpt-via-claude", false);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    body["tool_choice"] = json!("required");
    let out: Value = h.openai("/v1/chat/completions", &body).await.json().await.unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    let call = &out["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Oslo"})
    );
    let upstream = h.mock.requests().pop().unwrap();
    assert_eq!(upstream.body["tools"][0]["name"], "get_weather");
    assert_eq!(upstream.body["tools"][0]["input_schema"]["properties"]["city"]["type"], "string");
    assert_eq!(upstream.body["tool_choice"], json!({"type": "any"}));

    body["stream"] = json!(true);
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    let arguments: String = events
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "Oslo"}));
    let finish: Vec<String> =
        events.iter().filter_map(|e| e.json()["choices"][0]["finish_reason"].as_str().map(str::to_owned)).collect();
    assert_eq!(finish, ["tool_calls"]);
    assert!(events.last().unwrap().is_done());
}

#[tokio::test]
async fn openai_caller_sends_tool_results_back_to_anthropic() {
    let h = Harness::start().await;
    let body = json!({
        "model": "gpt-via-claude",
        "messages": [
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "w", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
            {"role": "tool", "tool_call_id": "call_2", "content": "warm"}
        ]
    });
    assert_eq!(h.openai("/v1/chat/completions", &body).await.status(), 200);
    let upstream = h.mock.requests().pop().unwrap();
    let messages = upstream.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "two tool results merge into one user turn");
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][1]["tool_use_id"], "call_2");
}

#[tokio::test]
async fn stop_reasons_translate_both_ways() {
    let h = Harness::start().await;
    h.mock.push(Script { finish_max_tokens: true, ..Default::default() });
    let out: Value =
        h.openai("/v1/chat/completions", &openai_chat("gpt-via-claude", false)).await.json().await.unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "length");

    h.mock.push(Script { finish_max_tokens: true, ..Default::default() });
    let out: Value =
        h.anthropic("/v1/messages", &anthropic_messages("claude-via-gpt", false)).await.json().await.unwrap();
    assert_eq!(out["stop_reason"], "max_tokens");

    // A stop sequence, end to end. The reply is cut before it in every direction.
    let cut = &mock_upstream::DEFAULT_REPLY[..mock_upstream::DEFAULT_REPLY.find("mock").unwrap()];
    let mut body = anthropic_messages("claude-direct", false);
    body["stop_sequences"] = json!(["mock"]);
    let out: Value = h.anthropic("/v1/messages", &body).await.json().await.unwrap();
    assert_eq!((&out["stop_reason"], &out["stop_sequence"]), (&json!("stop_sequence"), &json!("mock")), "{out}");
    assert_eq!(out["content"][0]["text"], cut);
    // OpenAI caller, Anthropic upstream: Anthropic's "stop_sequence" is OpenAI's "stop".
    let mut body = openai_chat("gpt-via-claude", false);
    body["stop"] = json!("mock");
    let out: Value = h.openai("/v1/chat/completions", &body).await.json().await.unwrap();
    assert_eq!(h.mock.requests().pop().unwrap().body["stop_sequences"], json!(["mock"]));
    assert_eq!(out["choices"][0]["finish_reason"], "stop", "{out}");
    assert_eq!(out["choices"][0]["message"]["content"], cut);
    // Anthropic caller, OpenAI upstream: Chat Completions reports a matched stop sequence as "stop", the
    // same as a natural end, so the gateway cannot say which sequence matched: "end_turn", no sequence.
    let mut body = anthropic_messages("claude-via-gpt", false);
    body["stop_sequences"] = json!(["mock"]);
    let out: Value = h.anthropic("/v1/messages", &body).await.json().await.unwrap();
    assert_eq!(h.mock.requests().pop().unwrap().body["stop"], json!(["mock"]));
    assert_eq!((&out["stop_reason"], &out["stop_sequence"]), (&json!("end_turn"), &Value::Null), "{out}");
    assert_eq!(out["content"][0]["text"], cut);
    // Streamed, through the translator: the same stop reason in message_delta.
    body["stream"] = json!(true);
    let events = read_events(h.anthropic("/v1/messages", &body).await).await;
    let delta = events.iter().find(|e| e.name.as_deref() == Some("message_delta")).unwrap().json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{delta}");
    assert_eq!(anthropic_text(&events), cut);
    let mut body = anthropic_messages("claude-direct", true);
    body["stop_sequences"] = json!(["mock"]);
    let events = read_events(h.anthropic("/v1/messages", &body).await).await;
    let delta = events.iter().find(|e| e.name.as_deref() == Some("message_delta")).unwrap().json();
    assert_eq!(delta["delta"], json!({"stop_reason": "stop_sequence", "stop_sequence": "mock"}));
}

#[tokio::test]
async fn anthropic_caller_openai_upstream_non_stream() {
    let h = Harness::start().await;
    let response = h.anthropic("/v1/messages", &anthropic_messages("claude-via-gpt", false)).await;
    assert_eq!(response.status(), 200);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["type"], "message");
    assert_eq!(out["role"], "assistant");
    assert!(out["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(out["content"][0], json!({"type": "text", "text": mock_upstream::DEFAULT_REPLY}));
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!(out["usage"]["output_tokens"], 12);
    assert!(out["usage"]["input_tokens"].as_u64().unwrap() > 0);

    let upstream = h.mock.requests().pop().unwrap();
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(upstream.header("authorization"), Some(format!("Bearer {UPSTREAM_OPENAI_KEY}").as_str()));
    assert_eq!(upstream.body["model"], "mock-gpt");
    assert_eq!(upstream.body["max_tokens"], 256);
    assert_eq!(upstream.body["messages"][0], json!({"role": "system", "content": "You are terse."}));
}

#[tokio::test]
async fn anthropic_caller_openai_upstream_stream_has_the_exact_event_order() {
    let h = Harness::start().await;
    let events = read_events(h.anthropic("/v1/messages", &anthropic_messages("claude-via-gpt", true)).await).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap_or("")).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[1], "content_block_start");
    assert!(names[2..names.len() - 3].iter().all(|n| *n == "content_block_delta"));
    assert_eq!(&names[names.len() - 3..], ["content_block_stop", "message_delta", "message_stop"]);
    assert!(events.iter().all(|e| e.json()["type"] == e.name.as_deref().unwrap()), "event name matches data.type");
    assert_eq!(anthropic_text(&events), mock_upstream::DEFAULT_REPLY);
    let delta = events[events.len() - 2].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 12);
    assert_eq!(h.mock.requests().pop().unwrap().body["stream_options"]["include_usage"], true);
    // Issue 14.10: message_start announces the prompt's tokens (older SDKs read them only there): the
    // gateway's count of this request, close to what the provider reports at the end.
    let announced = events[0].json()["message"]["usage"]["input_tokens"].as_u64().unwrap();
    let reported = delta["usage"]["input_tokens"].as_u64().unwrap();
    assert!(announced > 0 && announced <= 2 * reported && reported <= 2 * announced, "{announced} vs {reported}");
}

#[tokio::test]
async fn anthropic_caller_openai_upstream_tools_streamed() {
    let h = Harness::start().await;
    h.mock.push(Script { tool_call: Some(("lookup".into(), r#"{"q":"rust"}"#.into())), ..Default::default() });
    let mut body = anthropic_messages("claude-via-gpt", true);
    body["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    body["tool_choice"] = json!({"type": "tool", "name": "lookup"});
    let events = read_events(h.anthropic("/v1/messages", &body).await).await;
    let start = events.iter().find(|e| e.name.as_deref() == Some("content_block_start")).unwrap().json();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "lookup");
    let partial: String =
        events.iter().filter_map(|e| e.json()["delta"]["partial_json"].as_str().map(str::to_owned)).collect();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), json!({"q": "rust"}));
    let delta = events.iter().find(|e| e.name.as_deref() == Some("message_delta")).unwrap().json();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(events.last().unwrap().name.as_deref(), Some("message_stop"));
    let upstream = h.mock.requests().pop().unwrap();
    assert_eq!(upstream.body["tools"][0]["function"]["name"], "lookup");
    assert_eq!(upstream.body["tool_choice"], json!({"type": "function", "function": {"name": "lookup"}}));
}

/// Issue 14.1, end to end: the upstream streams two parallel tool calls with their argument chunks
/// alternating (index 0, 1, 0, 1…). The Anthropic caller gets one contiguous tool_use block per call, each
/// with its id, name and whole input; the non-streamed answer carries both calls too.
#[tokio::test]
async fn anthropic_caller_gets_one_block_per_interleaved_openai_tool_call() {
    let h = Harness::start().await;
    let script = || Script {
        tool_call: Some(("weather".into(), r#"{"city":"Paris","unit":"celsius"}"#.into())),
        second_tool_call: Some(("time".into(), r#"{"zone":"Europe/Paris"}"#.into())),
        ..Default::default()
    };
    h.mock.push(script());
    let mut body = anthropic_messages("claude-via-gpt", true);
    body["tools"] = json!([{"name": "weather", "input_schema": {"type": "object"}},
                           {"name": "time", "input_schema": {"type": "object"}}]);
    let events = read_events(h.anthropic("/v1/messages", &body).await).await;
    let mut blocks: Vec<(Value, String)> = Vec::new();
    let mut open = None;
    for event in &events {
        let data = event.json();
        match event.name.as_deref() {
            Some("content_block_start") => {
                assert_eq!(open, None, "blocks must not overlap: {events:?}");
                open = data["index"].as_u64();
                assert_eq!(open, Some(blocks.len() as u64));
                blocks.push((data["content_block"].clone(), String::new()));
            }
            Some("content_block_delta") => {
                assert_eq!(open, data["index"].as_u64(), "delta outside its block");
                if let Some(part) = data["delta"]["partial_json"].as_str() {
                    blocks.last_mut().unwrap().1.push_str(part);
                }
            }
            Some("content_block_stop") => open = None,
            _ => {}
        }
    }
    let calls: Vec<(String, Value)> = blocks
        .iter()
        .map(|(block, input)| {
            assert_eq!(block["type"], "tool_use", "{blocks:?}");
            assert!(block["id"].as_str().is_some_and(|id| id.starts_with("call_")), "{block}");
            (block["name"].as_str().unwrap().to_owned(), serde_json::from_str(input).unwrap())
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("weather".to_owned(), json!({"city": "Paris", "unit": "celsius"})),
            ("time".to_owned(), json!({"zone": "Europe/Paris"})),
        ]
    );
    assert_ne!(blocks[0].0["id"], blocks[1].0["id"]);
    // Not streamed: both calls as tool_use blocks.
    h.mock.push(script());
    let body = json!({"model": "claude-via-gpt", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
                      "tools": [{"name": "weather", "input_schema": {"type": "object"}}, {"name": "time", "input_schema": {"type": "object"}}]});
    let message: Value = h.anthropic("/v1/messages", &body).await.json().await.unwrap();
    let names: Vec<&str> = message["content"].as_array().unwrap().iter().filter_map(|b| b["name"].as_str()).collect();
    assert_eq!(names, ["weather", "time"], "{message}");
    assert_eq!(message["content"][1]["input"], json!({"zone": "Europe/Paris"}));
}

#[tokio::test]
async fn anthropic_caller_sends_tool_results_to_openai() {
    let h = Harness::start().await;
    let body = json!({
        "model": "claude-via-gpt",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Look it up"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"}]}
        ]
    });
    assert_eq!(h.anthropic("/v1/messages", &body).await.status(), 200);
    let upstream = h.mock.requests().pop().unwrap();
    let messages = upstream.body["messages"].as_array().unwrap();
    assert_eq!(messages[1]["tool_calls"][0]["id"], "toolu_1");
    assert_eq!(messages[2], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "found"}));
}

#[tokio::test]
async fn anthropic_same_protocol_passthrough_and_count_tokens() {
    let h = Harness::start().await;
    let mut body = anthropic_messages("claude-direct", true);
    body["metadata"] = json!({"user_id": "u-1"});
    let response = h
        .client
        .post(h.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = read_events(response).await;
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap_or("")).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(names.last(), Some(&"message_stop"));
    let upstream = h.mock.requests().pop().unwrap();
    assert_eq!(upstream.body["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(upstream.header("anthropic-beta"), Some("prompt-caching-2024-07-31"));
    // Issue 14.11: an OpenAI-compatible upstream never gets Anthropic's beta flags.
    let mut body = anthropic_messages("claude-via-gpt", false);
    body["metadata"] = json!({"user_id": "u-1"});
    let response = h
        .client
        .post(h.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let upstream = h.mock.requests().pop().unwrap();
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(upstream.header("anthropic-beta"), None);
    assert_eq!(upstream.header("traceparent"), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));

    let count: Value = h
        .anthropic(
            "/v1/messages/count_tokens",
            &json!({"model": "claude-direct", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    // The Anthropic upstream's count, unchanged: "hi" = 1 token + 3 for the message, by the mock's rule.
    assert_eq!(count["input_tokens"], 4, "{count}");
    assert_eq!(h.mock.requests().pop().unwrap().path, "/v1/messages/count_tokens");

    // No Anthropic target: counted locally with the tokenizer.
    let text = "The quick brown fox jumps over the lazy dog, then counts its tokens with tiktoken.";
    let local: Value = h
        .anthropic(
            "/v1/messages/count_tokens",
            &json!({"model": "claude-via-gpt", "messages": [{"role": "user", "content": text}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    // tiktoken's count of the text (cl100k for a model that is not GPT-4o-class) plus OpenAI's documented
    // overhead: 4 per message, 3 for the reply; at most one more token for the separator after the text.
    let expected = tiktoken_rs::cl100k_base_singleton().encode_ordinary(text).len() as u64 + 4 + 3;
    let counted = local["input_tokens"].as_u64().unwrap();
    assert!((expected..=expected + 1).contains(&counted), "counted {counted}, tiktoken says {expected}");
}

/// Issue 14.2, 14.4, 14.9 (OpenAI caller, Anthropic upstream), replayed against the mock: what real
/// Anthropic rejects is either shaped so it accepts it, or refused with a 400 that names the part; content
/// is never dropped silently.
#[tokio::test]
async fn openai_requests_anthropic_would_reject_are_shaped_or_refused_by_name() {
    let h = Harness::start().await;
    let pdf = "data:application/pdf;base64,JVBERi0xLjQK";
    let mut body = openai_chat("gpt-via-claude", false);
    body["messages"] = json!([
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": [{"type": "text", "text": "Summarise this."}, {"type": "text", "text": "  "},
                                      {"type": "file", "file": {"file_data": pdf, "filename": "report.pdf"}}]}
    ]);
    body["temperature"] = json!(0.5);
    body["top_p"] = json!(1.0);
    assert_eq!(h.openai("/v1/chat/completions", &body).await.status(), 200);
    let sent = h.mock.requests().pop().unwrap().body;
    assert_eq!(sent["system"], "Be terse.\nAnswer in French.", "parts keep their separation");
    assert_eq!(
        sent["messages"][0]["content"],
        json!([{"type": "text", "text": "Summarise this."},
               {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}, "title": "report.pdf"}]),
        "the PDF became a document block; the blank text part was left out"
    );
    assert_eq!(sent["temperature"], 0.5);
    assert!(sent.get("top_p").is_none(), "a top_p of 1 has no effect and is left out: {sent}");

    let refused = |mutate: &dyn Fn(&mut Value)| {
        let mut body = openai_chat("gpt-via-claude", false);
        mutate(&mut body);
        body
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (refused(&|b| b["stop"] = json!("\n")), "stop", "whitespace"),
        (
            refused(&|b| {
                b["temperature"] = json!(0.7);
                b["top_p"] = json!(0.9);
            }),
            "top_p",
            "not both",
        ),
        (
            refused(&|b| b["messages"][1]["content"] = json!("")),
            "messages",
            "messages[1]: a user message needs non-empty content",
        ),
        (
            refused(&|b| b["messages"][1]["content"] = json!([{"type": "file", "file": {"file_id": "file-abc"}}])),
            "messages",
            "messages[1].content[0]: a `file_id`",
        ),
        (
            refused(&|b| {
                b["messages"][1]["content"] =
                    json!([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}])
            }),
            "messages",
            "messages[1].content[0]: `input_audio` parts have no equivalent",
        ),
    ];
    let before = h.mock.request_count();
    for (body, param, says) in cases {
        let response = h.openai("/v1/chat/completions", &body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["param"], param, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(says), "{error}");
    }
    assert_eq!(h.mock.request_count(), before, "nothing refused reached the provider");
}

/// Issue 14.2 (Anthropic caller, OpenAI upstream): a turn holding only a PDF used to reach the upstream as
/// `"messages": []`. Documents become OpenAI file (PDF) or text parts; what has no equivalent (Files API
/// sources, images inside tool results, unknown blocks) is a 400 naming the block, never dropped.
#[tokio::test]
async fn anthropic_documents_reach_openai_upstreams_or_are_refused_by_name() {
    let h = Harness::start().await;
    let mut body = anthropic_messages("claude-via-gpt", false);
    body["messages"] = json!([{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}, "title": "q3.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Revenue rose 4%."}}
    ]}]);
    assert_eq!(h.anthropic("/v1/messages", &body).await.status(), 200);
    let sent = h.mock.requests().pop().unwrap().body;
    let user = sent["messages"].as_array().unwrap().iter().find(|m| m["role"] == "user").cloned().unwrap();
    assert_eq!(
        user["content"],
        json!([{"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0xLjQK", "filename": "q3.pdf"}},
               {"type": "text", "text": "Revenue rose 4%."}]),
        "{sent}"
    );
    let before = h.mock.request_count();
    let cases = [
        (
            json!([{"type": "image", "source": {"type": "file", "file_id": "file_011"}}]),
            "messages[0].content[0]: an image from Anthropic's Files API",
        ),
        (
            json!([{"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]),
            "messages[0].content[0]: a document by URL",
        ),
        (
            json!([{"type": "search_result", "source": "x", "title": "t", "content": []}]),
            "messages[0].content[0]: this content block type",
        ),
    ];
    for (content, says) in cases {
        let mut body = anthropic_messages("claude-via-gpt", false);
        body["messages"] = json!([{"role": "user", "content": content}]);
        let response = h.anthropic("/v1/messages", &body).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(says), "{error}");
    }
    // An image inside a tool result: OpenAI tool messages carry text only.
    let mut body = anthropic_messages("claude-via-gpt", false);
    body["messages"] = json!([
        {"role": "user", "content": "Take a screenshot"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]}
    ]);
    let response = h.anthropic("/v1/messages", &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("messages[2].content[0]: tool_result content"),
        "{error}"
    );
    assert_eq!(h.mock.request_count(), before, "nothing refused reached the provider");
}

/// Issue 14.3: reasoning models (o-series, gpt-5) refuse `max_tokens`. Whether the caller speaks Anthropic
/// (whose `max_tokens` is required) or OpenAI with `max_tokens`, the upstream gets `max_completion_tokens`.
#[tokio::test]
async fn reasoning_models_get_max_completion_tokens() {
    let h = Harness::start_with(
        r#"
[[models]]
name = "reasoner"
targets = [ { provider = "up-openai", model = "o3-mini" } ]
"#,
    )
    .await;
    let body = json!({"model": "reasoner", "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(h.anthropic("/v1/messages", &body).await.status(), 200);
    let sent = h.mock.requests().pop().unwrap().body;
    assert_eq!(sent["max_completion_tokens"], 300, "{sent}");
    assert!(sent.get("max_tokens").is_none(), "{sent}");
    assert_eq!(h.openai("/v1/chat/completions", &body).await.status(), 200);
    let sent = h.mock.requests().pop().unwrap().body;
    assert_eq!(sent["max_completion_tokens"], 300, "{sent}");
    assert!(sent.get("max_tokens").is_none(), "{sent}");
    // Other models keep the caller's field.
    let body = json!({"model": "gpt-direct", "max_tokens": 30, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(h.openai("/v1/chat/completions", &body).await.status(), 200);
    assert_eq!(h.mock.requests().pop().unwrap().body["max_tokens"], 30);
}

/// Issue 14.5 and 14.7: Anthropic server tools (a versioned `type`) pass through to Anthropic upstreams
/// untouched, and are refused by name for OpenAI-compatible ones (they used to become functions with an
/// empty schema that nothing could run); more than 4 stop sequences are refused for OpenAI-compatible
/// upstreams, which take at most 4.
#[tokio::test]
async fn server_tools_and_long_stop_lists_reach_only_upstreams_that_take_them() {
    let h = Harness::start().await;
    let web_search = json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 3});
    let mut body = anthropic_messages("claude-direct", false);
    body["tools"] = json!([web_search, {"name": "lookup", "input_schema": {"type": "object"}}]);
    assert_eq!(h.anthropic("/v1/messages", &body).await.status(), 200);
    assert_eq!(h.mock.requests().pop().unwrap().body["tools"][0], web_search, "passed through as sent");
    body["model"] = json!("claude-via-gpt");
    let response = h.anthropic("/v1/messages", &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("tools[0]") && message.contains("web_search_20250305"), "{error}");
    let mut body = anthropic_messages("claude-via-gpt", false);
    body["stop_sequences"] = json!(["a", "b", "c", "d", "e"]);
    let response = h.anthropic("/v1/messages", &body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("at most 4"), "{error}");
    body["stop_sequences"] = json!(["a", "b", "c", "d"]);
    assert_eq!(h.anthropic("/v1/messages", &body).await.status(), 200);
    assert_eq!(h.mock.requests().pop().unwrap().body["stop"], json!(["a", "b", "c", "d"]));
}
