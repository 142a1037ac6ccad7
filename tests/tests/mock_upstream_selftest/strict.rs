//! The mock is as strict as the real APIs about tool-call pairing and served models, and emits what they
//! emit: parallel tool calls, text and tool calls in one message, cache token counts in `message_delta`,
//! and an error event in the middle of a stream.

use serde_json::{json, Value};
use tollgate_tests::mock_upstream::{parse_sse, pieces, MockUpstream};

use super::{anthropic_body, chat_body, chat_url, json_events, messages_url, parts, post, post_json, post_text, sc};

fn anthropic_turns(messages: Value) -> Value {
    json!({"model": "mock-claude", "max_tokens": 50, "messages": messages})
}

fn openai_turns(messages: Value) -> Value {
    json!({"model": "mock-gpt", "messages": messages})
}

#[tokio::test]
async fn a_tool_result_without_its_tool_use_is_refused_like_the_messages_api() {
    let m = MockUpstream::start().await;
    let call =
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]});
    let answer =
        |id: &str| json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "ok"}]});
    let ask = json!({"role": "user", "content": "go"});
    let (status, _) = parts(post(messages_url(&m), anthropic_turns(json!([ask, call, answer("toolu_1")]))).await).await;
    assert_eq!(status, 200, "a matched pair is served");
    for (messages, words) in [
        (
            json!([ask, call, {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "ok"}]}]),
            "messages.2.content.1: unexpected `tool_use_id` found in `tool_result` blocks: toolu_2",
        ),
        (json!([ask, answer("toolu_1")]), "messages.1.content.0: unexpected `tool_use_id`"),
        (
            json!([ask, call, {"role": "user", "content": "never mind"}]),
            "messages.1: `tool_use` ids were found without",
        ),
    ] {
        let (status, error) = parts(post(messages_url(&m), anthropic_turns(messages.clone())).await).await;
        assert_eq!(status, 400, "{messages}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(words), "{message}");
    }
    assert_eq!(m.output_tokens_served(), 12, "only the matched pair generated anything");
}

#[tokio::test]
async fn a_tool_message_without_its_tool_call_is_refused_like_chat_completions() {
    let m = MockUpstream::start().await;
    let calls = json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
    let tool = |id: &str| json!({"role": "tool", "tool_call_id": id, "content": "ok"});
    let ask = json!({"role": "user", "content": "go"});
    let served = post(chat_url(&m), openai_turns(json!([ask, calls, tool("call_2"), tool("call_1")]))).await;
    assert_eq!(served.status(), 200, "answers in any order are served");
    for (messages, param, words) in [
        (json!([ask, tool("call_1")]), "messages.[1].role", "Invalid parameter: messages with role 'tool'"),
        (
            json!([ask, calls, tool("call_1"), tool("call_3")]),
            "messages.[3].tool_call_id",
            "Invalid parameter: 'tool_call_id' of 'call_3'",
        ),
        (
            json!([ask, calls, tool("call_1"), ask]),
            "messages.[1].role",
            "An assistant message with 'tool_calls' must be followed",
        ),
        (json!([ask, calls]), "messages.[1].role", "An assistant message with 'tool_calls' must be followed"),
    ] {
        let (status, error) = parts(post(chat_url(&m), openai_turns(messages.clone())).await).await;
        assert_eq!(status, 400, "{messages}");
        assert_eq!(error["error"]["param"], param, "{error}");
        assert!(error["error"]["message"].as_str().unwrap().starts_with(words), "{error}");
    }
}

#[tokio::test]
async fn with_a_model_list_other_models_are_not_found() {
    let m = MockUpstream::start().await;
    m.set_served_models(Some(&["mock-gpt", "mock-claude"]));
    assert_eq!(post(chat_url(&m), chat_body(false)).await.status(), 200);
    assert_eq!(post(messages_url(&m), anthropic_body(false)).await.status(), 200);
    let mut body = chat_body(false);
    body["model"] = json!("gpt-nope");
    let (status, error) = parts(post(chat_url(&m), body).await).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "model_not_found", "{error}");
    let mut body = anthropic_body(false);
    body["model"] = json!("claude-nope");
    let (status, error) = parts(post(messages_url(&m), body).await).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"], json!({"type": "not_found_error", "message": "model: claude-nope"}));
    let (status, _) =
        parts(post(format!("{}/embeddings", m.openai_base_url()), json!({"model": "x", "input": "a"})).await).await;
    assert_eq!(status, 404);
    m.set_served_models(None);
    assert_eq!(
        post(chat_url(&m), json!({"model": "any", "messages": [{"role": "user", "content": "hi"}]})).await.status(),
        200
    );
}

#[tokio::test]
async fn anthropic_says_text_then_two_tool_calls_in_one_message() {
    let m = MockUpstream::start().await;
    let script = || {
        sc(|s| {
            s.preamble = Some("Let me check both.".into());
            s.tool_call = Some(("weather".into(), r#"{"city":"Oslo"}"#.into()));
            s.second_tool_call = Some(("time".into(), r#"{"zone":"CET"}"#.into()));
        })
    };
    m.push(script());
    let message = post_json(messages_url(&m), anthropic_body(false)).await;
    let content = message["content"].as_array().unwrap();
    assert_eq!(content[0], json!({"type": "text", "text": "Let me check both."}));
    assert_eq!((content[1]["name"].as_str(), &content[1]["input"]), (Some("weather"), &json!({"city": "Oslo"})));
    assert_eq!((content[2]["name"].as_str(), &content[2]["input"]), (Some("time"), &json!({"zone": "CET"})));
    assert_ne!(content[1]["id"], content[2]["id"]);
    assert_eq!(message["stop_reason"], "tool_use");
    // Output tokens: the text's pieces plus each call's argument pieces.
    assert_eq!(message["usage"]["output_tokens"], pieces("Let me check both.").len() + 3 + 3);

    m.push(script());
    let events = json_events(&post_text(messages_url(&m), anthropic_body(true)).await);
    let starts: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e["type"] == "content_block_start")
        .map(|e| (e["index"].as_u64().unwrap(), e["content_block"]["type"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(starts, [(0, "text".into()), (1, "tool_use".into()), (2, "tool_use".into())]);
    let stops = events.iter().filter(|e| e["type"] == "content_block_stop").count();
    assert_eq!(stops, 3, "every block is closed");
}

#[tokio::test]
async fn openai_says_text_next_to_its_tool_call() {
    let m = MockUpstream::start().await;
    let script = || {
        sc(|s| {
            s.preamble = Some("Checking.".into());
            s.tool_call = Some(("weather".into(), r#"{"city":"Oslo"}"#.into()));
        })
    };
    m.push(script());
    let out = post_json(chat_url(&m), chat_body(false)).await;
    assert_eq!(out["choices"][0]["message"]["content"], "Checking.");
    assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "weather");
    assert_eq!(out["usage"]["completion_tokens"], 2 + 3);
    m.push(script());
    let events = json_events(&post_text(chat_url(&m), chat_body(true)).await);
    let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Checking.");
    let first_call = events.iter().position(|e| e["choices"][0]["delta"]["tool_calls"].is_array()).unwrap();
    let last_text = events.iter().rposition(|e| e["choices"][0]["delta"]["content"].is_string()).unwrap();
    assert!(last_text < first_call, "the text comes before the call");
}

#[tokio::test]
async fn message_delta_carries_input_and_cache_counts() {
    let m = MockUpstream::start().await;
    let prompt = 7; // anthropic_body's prompt
    m.push(sc(|s| s.cache_tokens = Some((2, 3))));
    let message = post_json(messages_url(&m), anthropic_body(false)).await;
    let expected = json!({"input_tokens": prompt - 5, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 3});
    for field in ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"] {
        assert_eq!(message["usage"][field], expected[field], "{message}");
    }
    m.push(sc(|s| s.cache_tokens = Some((2, 3))));
    let events = json_events(&post_text(messages_url(&m), anthropic_body(true)).await);
    let delta = events.iter().find(|e| e["type"] == "message_delta").unwrap();
    let mut usage = expected.clone();
    usage["output_tokens"] = json!(12);
    assert_eq!(delta["usage"], usage);
    assert_eq!(m.input_tokens_served(), 2 * prompt, "the bill is the whole prompt, cached or not");
}

#[tokio::test]
async fn an_error_event_ends_a_stream_midway() {
    let m = MockUpstream::start().await;
    m.push(sc(|s| s.error_after_events = Some(5)));
    let text = post_text(messages_url(&m), anthropic_body(true)).await;
    let events = parse_sse(&text);
    assert_eq!(events.len(), 6);
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    assert_eq!(m.output_tokens_served(), 2, "two text deltas went out before the error");

    m.push(sc(|s| s.error_after_events = Some(3)));
    let text = post_text(chat_url(&m), chat_body(true)).await;
    let events = json_events(&text);
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["error"]["type"], "server_error");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn documents_and_files_are_checked_like_the_real_apis() {
    let m = MockUpstream::start().await;
    let with_part = |part: Value| json!([{"role": "user", "content": [{"type": "text", "text": "Read this."}, part]}]);
    let pdf = json!({"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="});
    let text = json!({"type": "text", "media_type": "text/plain", "data": "Revenue grew."});
    for source in [pdf, text, json!({"type": "url", "url": "https://example.com/a.pdf"})] {
        let body = anthropic_turns(with_part(json!({"type": "document", "source": source})));
        assert_eq!(post(messages_url(&m), body).await.status(), 200, "{source}");
    }
    let refused = [
        (
            json!({"type": "base64", "media_type": "text/plain", "data": "UmV2ZW51ZQ=="}),
            "messages.0.content.1.document.source.base64.media_type: Input should be 'application/pdf'",
        ),
        (
            json!({"type": "text", "media_type": "text/plain"}),
            "messages.0.content.1.document.source.text.data: Field required",
        ),
        (json!({"type": "path", "path": "/a.pdf"}), "messages.0.content.1.document.source: Input tag 'path'"),
    ];
    for (source, expected) in refused {
        let body = anthropic_turns(with_part(json!({"type": "document", "source": source})));
        let (status, out) = parts(post(messages_url(&m), body).await).await;
        assert_eq!(status, 400);
        assert!(out["error"]["message"].as_str().unwrap().starts_with(expected), "{out}");
    }

    let data = "data:application/pdf;base64,JVBERi0=";
    for file in [json!({"file_id": "file-1"}), json!({"file_data": data, "filename": "a.pdf"})] {
        let body = openai_turns(with_part(json!({"type": "file", "file": file})));
        assert_eq!(post(chat_url(&m), body).await.status(), 200, "{file}");
    }
    let refused = [
        (json!({"file_data": data}), "messages[0].content[1].file.file_id"),
        (json!({"file_data": "JVBERi0=", "filename": "a.pdf"}), "messages[0].content[1].file.file_data"),
    ];
    for (file, param) in refused {
        let body = openai_turns(with_part(json!({"type": "file", "file": file})));
        let (status, out) = parts(post(chat_url(&m), body).await).await;
        assert_eq!((status, out["error"]["param"].as_str()), (400, Some(param)), "{out}");
    }
}
