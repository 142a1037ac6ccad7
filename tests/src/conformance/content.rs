//! Conformance cases for content that crosses the two APIs only in part (issue 14): documents, interleaved
//! parallel tool calls and reasoning. Each kind either carries them (checked in what the upstream received
//! and what the caller got) or refuses them with the README's 400 naming the part.

use serde_json::{json, Value};

use crate::mock_upstream::{pieces, signature_for, DEFAULT_REPLY};
use crate::{anthropic_text, dropped_params, read_events, Event, Harness, Script};

/// The route's target speaks Anthropic (the others speak OpenAI).
fn anthropic_kind(model: &str) -> bool {
    model.contains("anthropic")
}

/// The route runs through the HTTP mock, whose requests can be inspected.
fn behind_mock(model: &str) -> bool {
    !model.contains("builtin")
}

/// A 400 in the caller's shape whose message names `at`.
async fn assert_refused(response: reqwest::Response, at: &str) {
    assert_eq!(response.status(), 400);
    let out: Value = response.json().await.unwrap();
    let message = out["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(at), "the 400 names {at}: {out}");
}

const PDF: &str =
    "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoKdHJhaWxlcgo8PC9Sb290IDEgMCBSPj4KJSVFT0YK";

/// Documents from both callers: inline PDFs and text documents map (OpenAI `file` part ⇄ Anthropic
/// `document`); what the target cannot read (an OpenAI `file_id` for Anthropic, a document by URL for
/// OpenAI-compatible servers) is a 400 naming `messages[0].content[1]`, and never reaches the upstream.
pub async fn documents(h: &Harness, model: &str) {
    let file = json!({"type": "file", "file": {"filename": "q3.pdf", "file_data": format!("data:application/pdf;base64,{PDF}")}});
    let body = json!({"model": model, "messages": [{"role": "user", "content": [{"type": "text", "text": "Summarise."}, file]}]});
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200, "OpenAI caller, inline PDF, {model}");
    let out: Value = response.json().await.unwrap();
    assert!(!out["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
    let pdf_document = json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}, "title": "q3.pdf"});
    if behind_mock(model) {
        let expected = if anthropic_kind(model) { pdf_document.clone() } else { file.clone() };
        assert_eq!(h.mock.last_body()["messages"][0]["content"][1], expected, "{model}");
    }
    let mut by_id = body.clone();
    by_id["messages"][0]["content"][1] = json!({"type": "file", "file": {"file_id": "file-abc123"}});
    let before = h.mock.request_count();
    let response = h.openai("/v1/chat/completions", &by_id).await;
    if anthropic_kind(model) {
        assert_refused(response, "messages[0].content[1]").await;
        assert_eq!(h.mock.request_count(), before, "a refused request does not reach the upstream");
    } else {
        assert_eq!(response.status(), 200, "same protocol: the file_id passes through, {model}");
    }

    if anthropic_kind(model) {
        openai_files_anthropic_reads_only_as_pdf_or_text(h, model, &body).await;
    }

    let text_document =
        json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Revenue grew 4%."}});
    for document in [pdf_document.clone(), text_document] {
        let body = json!({"model": model, "max_tokens": 100,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Summarise."}, document.clone()]}]});
        let response = h.anthropic("/v1/messages", &body).await;
        assert_eq!(response.status(), 200, "Anthropic caller, {document}, {model}");
        let out: Value = response.json().await.unwrap();
        assert!(!out["content"][0]["text"].as_str().unwrap().is_empty());
        if behind_mock(model) {
            let sent = h.mock.last_body()["messages"][0]["content"].clone();
            let expected = match (anthropic_kind(model), document["source"]["type"].as_str()) {
                (true, _) => json!([{"type": "text", "text": "Summarise."}, document]),
                (false, Some("base64")) => json!([{"type": "text", "text": "Summarise."},
                    {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "q3.pdf"}}]),
                (false, _) => json!("Summarise.\nRevenue grew 4%."),
            };
            assert_eq!(sent, expected, "{model}");
        }
    }
    let by_url = json!({"type": "document", "source": {"type": "url", "url": "https://example.com/q3.pdf"}});
    let body = json!({"model": model, "max_tokens": 100,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Summarise."}, by_url]}]});
    let response = h.anthropic("/v1/messages", &body).await;
    if anthropic_kind(model) {
        assert_eq!(response.status(), 200, "same protocol: the URL passes through, {model}");
    } else {
        assert_refused(response, "messages[0].content[1]").await;
    }
}

/// An OpenAI caller's plain-text file reaches Anthropic as a `text` document (Anthropic refuses base64
/// text); a file type Anthropic cannot read is a 400 naming the part.
async fn openai_files_anthropic_reads_only_as_pdf_or_text(h: &Harness, model: &str, body: &Value) {
    let mut text_file = body.clone();
    text_file["messages"][0]["content"][1] = json!({"type": "file",
        "file": {"filename": "notes.txt", "file_data": "data:text/plain;base64,UmV2ZW51ZSBncmV3IDQlLg=="}});
    let response = h.openai("/v1/chat/completions", &text_file).await;
    assert_eq!(response.status(), 200, "OpenAI caller, text file, {model}");
    if behind_mock(model) {
        let expected = json!({"type": "document", "title": "notes.txt",
            "source": {"type": "text", "media_type": "text/plain", "data": "Revenue grew 4%."}});
        assert_eq!(h.mock.last_body()["messages"][0]["content"][1], expected);
    }
    let mut docx = body.clone();
    docx["messages"][0]["content"][1] = json!({"type": "file", "file": {"filename": "q3.docx",
        "file_data": "data:application/vnd.openxmlformats-officedocument.wordprocessingml.document;base64,UEsDBA=="}});
    assert_refused(h.openai("/v1/chat/completions", &docx).await, "messages[0].content[1]").await;
}

/// Two parallel tool calls, streamed with alternating argument chunks by OpenAI-compatible servers:
/// OpenAI callers get both calls whole (by index), Anthropic callers one contiguous `tool_use` block each.
pub async fn interleaved_tool_calls(h: &Harness, model: &str) {
    let script = || Script {
        tool_call: Some(("lookup".into(), r#"{"q":"rust"}"#.into())),
        second_tool_call: Some(("clock".into(), r#"{"zone":"CET"}"#.into())),
        ..Default::default()
    };
    let expected = [("lookup", json!({"q": "rust"})), ("clock", json!({"zone": "CET"}))];
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}]);
    for stream in [false, true] {
        h.mock.push(script());
        let body = json!({"model": model, "stream": stream, "tools": tools,
            "messages": [{"role": "user", "content": "Look up rust and the time."}]});
        let response = h.openai("/v1/chat/completions", &body).await;
        assert_eq!(response.status(), 200);
        let calls = if stream {
            streamed_openai_calls(&read_events(response).await)
        } else {
            let out: Value = response.json().await.unwrap();
            assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
            let calls = out["choices"][0]["message"]["tool_calls"].as_array().unwrap().clone();
            calls
                .iter()
                .map(|c| {
                    (
                        c["function"]["name"].as_str().unwrap().to_owned(),
                        c["function"]["arguments"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let calls: Vec<(&str, Value)> =
            calls.iter().map(|(n, a)| (n.as_str(), serde_json::from_str(a).unwrap())).collect();
        assert_eq!(calls, expected, "OpenAI caller, stream {stream}, {model}");
    }
    let tools = json!([{"name": "lookup", "input_schema": {"type": "object"}}, {"name": "clock", "input_schema": {"type": "object"}}]);
    for stream in [false, true] {
        h.mock.push(script());
        let body = json!({"model": model, "max_tokens": 200, "stream": stream, "tools": tools,
            "messages": [{"role": "user", "content": "Look up rust and the time."}]});
        let response = h.anthropic("/v1/messages", &body).await;
        assert_eq!(response.status(), 200);
        let blocks = if stream {
            streamed_anthropic_blocks(&read_events(response).await)
        } else {
            let out: Value = response.json().await.unwrap();
            assert_eq!(out["stop_reason"], "tool_use");
            out["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| (b["name"].as_str().unwrap().to_owned(), b["input"].clone()))
                .collect()
        };
        let blocks: Vec<(&str, Value)> = blocks.iter().map(|(n, i)| (n.as_str(), i.clone())).collect();
        assert_eq!(blocks, expected, "Anthropic caller, stream {stream}, {model}");
    }
}

/// (name, arguments) of each streamed OpenAI tool call, by index; ids appear once per call.
fn streamed_openai_calls(events: &[Event]) -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = Vec::new();
    for call in
        events.iter().filter_map(|e| e.json()["choices"][0]["delta"]["tool_calls"].as_array().cloned()).flatten()
    {
        let index = call["index"].as_u64().unwrap() as usize;
        if call.get("id").is_some_and(Value::is_string) {
            assert_eq!(index, calls.len(), "a call is announced once, in index order");
            calls.push((call["function"]["name"].as_str().unwrap().to_owned(), String::new()));
        }
        calls[index].1.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
    }
    calls
}

/// (name, input) of each streamed Anthropic tool_use block, checking the blocks are contiguous: every
/// delta belongs to the open block, and each block is closed before the next starts.
fn streamed_anthropic_blocks(events: &[Event]) -> Vec<(String, Value)> {
    let mut blocks = Vec::new();
    let mut open: Option<(u64, String, String)> = None;
    for event in events.iter().map(Event::json) {
        match event["type"].as_str().unwrap_or("") {
            "content_block_start" => {
                assert!(open.is_none(), "a block starts while another is open: {event}");
                let block = &event["content_block"];
                assert_eq!(block["type"], "tool_use", "{event}");
                open =
                    Some((event["index"].as_u64().unwrap(), block["name"].as_str().unwrap().to_owned(), String::new()));
            }
            "content_block_delta" => {
                let (index, _, json) = open.as_mut().expect("a delta inside a block");
                assert_eq!(event["index"], *index);
                json.push_str(event["delta"]["partial_json"].as_str().unwrap());
            }
            "content_block_stop" => {
                let (index, name, json) = open.take().expect("a stop closes an open block");
                assert_eq!(event["index"], index);
                blocks.push((name, serde_json::from_str(&json).unwrap()));
            }
            _ => {}
        }
    }
    blocks
}

const THOUGHT: &str = "Six times seven is 42.";

/// Reasoning from both callers against a model that reasons (scripted). OpenAI callers set
/// `reasoning_effort` and get `reasoning_content`; Anthropic callers enable `thinking` and get a leading
/// thinking block — signed when Anthropic made it (and accepted back in a tool loop), unsigned when an
/// OpenAI-compatible server's reasoning was carried over. Output tokens include the reasoning.
pub async fn reasoning(h: &Harness, model: &str) {
    let thinks = || Script { reasoning: Some(THOUGHT.into()), ..Default::default() };
    let billed = (pieces(THOUGHT).len() + pieces(DEFAULT_REPLY).len()) as u64;
    for stream in [false, true] {
        h.mock.push(thinks());
        let body = json!({"model": model, "stream": stream, "reasoning_effort": "low", "max_completion_tokens": 3000,
            "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
            "messages": [{"role": "user", "content": "What is 6 x 7?"}]});
        let response = h.openai("/v1/chat/completions", &body).await;
        assert_eq!(response.status(), 200, "OpenAI caller, stream {stream}, {model}");
        let (reasoning, text, usage) = if stream {
            let events = read_events(response).await;
            let field = |name: &str| -> String {
                events
                    .iter()
                    .filter_map(|e| e.json()["choices"][0]["delta"][name].as_str().map(str::to_owned))
                    .collect()
            };
            (field("reasoning_content"), field("content"), events[events.len() - 2].json()["usage"].clone())
        } else {
            let out: Value = response.json().await.unwrap();
            let message = &out["choices"][0]["message"];
            (
                message["reasoning_content"].as_str().unwrap_or("").to_owned(),
                message["content"].as_str().unwrap().to_owned(),
                out["usage"].clone(),
            )
        };
        assert_eq!((reasoning.as_str(), text.as_str()), (THOUGHT, DEFAULT_REPLY), "stream {stream}, {model}");
        assert_eq!(usage["completion_tokens"], billed, "stream {stream}, {model}");
    }
    for stream in [false, true] {
        h.mock.push(thinks());
        let body = json!({"model": model, "stream": stream, "max_tokens": 3000,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [{"role": "user", "content": "What is 6 x 7?"}]});
        let response = h.anthropic("/v1/messages", &body).await;
        assert_eq!(response.status(), 200, "Anthropic caller, stream {stream}, {model}");
        let (content, output_tokens) = if stream {
            let events = read_events(response).await;
            let usage = events[events.len() - 2].json()["usage"]["output_tokens"].clone();
            (streamed_content(&events), usage)
        } else {
            let out: Value = response.json().await.unwrap();
            (out["content"].clone(), out["usage"]["output_tokens"].clone())
        };
        let signature = if anthropic_kind(model) { signature_for(THOUGHT) } else { String::new() };
        let expected = json!([{"type": "thinking", "thinking": THOUGHT, "signature": signature},
            {"type": "text", "text": DEFAULT_REPLY}]);
        assert_eq!(content, expected, "stream {stream}, {model}");
        assert_eq!(output_tokens, billed, "stream {stream}, {model}");
    }
    reasoning_refused(h, model).await;
}

/// What cannot think says so by name: an effort Anthropic has no budget for is the gateway's 400; a model
/// of an OpenAI-compatible server that does not reason refuses `reasoning_effort` itself, and its 400
/// reaches the caller naming the parameter.
async fn reasoning_refused(h: &Harness, model: &str) {
    let body = |effort: &str| {
        json!({"model": model, "reasoning_effort": effort, "max_completion_tokens": 3000,
            "messages": [{"role": "user", "content": "What is 6 x 7?"}]})
    };
    let before = h.mock.request_count();
    let response = h.openai("/v1/chat/completions", &body(if anthropic_kind(model) { "max" } else { "low" })).await;
    assert_eq!(response.status(), 400, "{model}");
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["error"]["param"], "reasoning_effort", "{out}");
    let reached = h.mock.request_count() - before;
    assert_eq!(reached, usize::from(!anthropic_kind(model)), "only the model itself can refuse what it is sent");
}

/// The content blocks an Anthropic SDK assembles from a stream (deltas appended, the signature set).
fn streamed_content(events: &[Event]) -> Value {
    let mut blocks: Vec<Value> = Vec::new();
    for event in events.iter().map(Event::json) {
        match event["type"].as_str().unwrap_or("") {
            "content_block_start" => blocks.push(event["content_block"].clone()),
            "content_block_delta" => {
                let block = blocks.last_mut().expect("a delta after its block's start");
                let delta = &event["delta"];
                match delta["type"].as_str().unwrap_or("") {
                    "thinking_delta" => append(block, "thinking", delta),
                    "text_delta" => append(block, "text", delta),
                    "signature_delta" => block["signature"] = delta["signature"].clone(),
                    other => panic!("unexpected delta {other}"),
                }
            }
            _ => {}
        }
    }
    assert!(!anthropic_text(events).is_empty());
    Value::Array(blocks)
}

fn append(block: &mut Value, field: &str, delta: &Value) {
    let joined = format!("{}{}", block[field].as_str().unwrap_or(""), delta[field].as_str().unwrap_or(""));
    block[field] = json!(joined);
}

/// The built-in mock provider does not reason: reasoning requests from both callers are answered with the
/// text alone (a translated `thinking` named as dropped, as for any model that is no OpenAI reasoning
/// model), and an effort Anthropic has no budget for is still the gateway's 400 when translated.
pub async fn reasoning_without_a_reasoning_model(h: &Harness, model: &str) {
    let body = |effort: &str| {
        json!({"model": model, "reasoning_effort": effort, "max_completion_tokens": 3000,
            "messages": [{"role": "user", "content": "What is 6 x 7?"}]})
    };
    let response = h.openai("/v1/chat/completions", &body("low")).await;
    assert_eq!(response.status(), 200, "{model}");
    let out: Value = response.json().await.unwrap();
    let message = &out["choices"][0]["message"];
    assert!(message.get("reasoning_content").is_none() && message["content"].is_string(), "{out}");
    let response = h.openai("/v1/chat/completions", &body("max")).await;
    if anthropic_kind(model) {
        assert_refused(response, "reasoning_effort").await;
    } else {
        assert_eq!(response.status(), 200, "same protocol: the effort passes through, {model}");
    }
    let body = json!({"model": model, "max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "What is 6 x 7?"}]});
    let response = h.anthropic("/v1/messages", &body).await;
    assert_eq!(response.status(), 200, "{model}");
    let dropped = dropped_params(&response);
    assert_eq!(dropped.as_deref(), (!anthropic_kind(model)).then_some("thinking"), "{model}");
    let out: Value = response.json().await.unwrap();
    let kinds: Vec<&str> = out["content"].as_array().unwrap().iter().filter_map(|b| b["type"].as_str()).collect();
    assert_eq!(kinds, ["text"], "{model}");
}
