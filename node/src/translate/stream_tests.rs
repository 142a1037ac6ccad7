use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use super::*;
use crate::sse::SseParser;

fn no_estimate(_: &str) -> Usage {
    Usage { input_tokens: 1, output_tokens: 1, estimated: true, ..Default::default() }
}

/// Runs raw upstream SSE through a translator; returns the caller's events as (name, json-or-string).
fn run(
    upstream: Protocol,
    caller: Protocol,
    include_usage: bool,
    raw: &str,
) -> (Vec<(String, Value)>, StreamTranslator, Option<GatewayError>) {
    let mut translator = StreamTranslator::new(upstream, caller, include_usage);
    let mut parser = SseParser::new();
    parser.push(raw.as_bytes());
    let mut out = BytesMut::new();
    let mut error = None;
    while let Ok(Some(event)) = parser.next_event() {
        if let Err(err) = translator.on_event(&event, &mut out, &no_estimate) {
            error = Some(err);
            break;
        }
    }
    let mut reparse = SseParser::new();
    reparse.push(&out);
    let mut events = Vec::new();
    while let Ok(Some(event)) = reparse.next_event() {
        let name = String::from_utf8_lossy(event.event_name()).into_owned();
        let value = serde_json::from_slice(&event.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&event.data).into_owned()));
        events.push((name, value));
    }
    (events, translator, error)
}

fn sse(events: &[(Option<&str>, Value)]) -> String {
    events
        .iter()
        .map(|(name, data)| match name {
            Some(name) => format!("event: {name}\ndata: {data}\n\n"),
            None => format!("data: {data}\n\n"),
        })
        .collect()
}

fn anthropic_stream() -> String {
    sse(&[
        (
            Some("message_start"),
            json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        (Some("ping"), json!({"type":"ping"})),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}),
        ),
        (Some("content_block_stop"), json!({"type":"content_block_stop","index":0})),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}),
        ),
        (Some("content_block_stop"), json!({"type":"content_block_stop","index":1})),
        (
            Some("message_delta"),
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9}}),
        ),
        (Some("message_stop"), json!({"type":"message_stop"})),
    ])
}

#[test]
fn anthropic_stream_becomes_openai_chunks_with_summed_usage() {
    let (events, translator, error) = run(Protocol::Anthropic, Protocol::OpenAi, true, &anthropic_stream());
    assert!(error.is_none());
    let facts = translator.facts();
    assert!(facts.complete);
    assert_eq!(facts.text, "Hello{\"a\":1}", "tool input is generated output too");
    assert_eq!(facts.final_usage().map(|u| (u.input_tokens, u.output_tokens)), Some((12, 9)));
    let data: Vec<&Value> = events.iter().map(|(_, v)| v).collect();
    assert_eq!(data[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(data[1]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(data[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "f");
    assert_eq!(data[5]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "1}");
    assert_eq!(data[6]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(data[7]["usage"]["prompt_tokens"], 12);
    assert_eq!(data[7]["usage"]["completion_tokens"], 9);
    assert_eq!(data[8], &Value::String("[DONE]".into()));
    assert_eq!(events.len(), 9);
}

#[test]
fn usage_chunk_is_only_sent_when_asked_for() {
    let (events, translator, _) = run(Protocol::Anthropic, Protocol::OpenAi, false, &anthropic_stream());
    assert!(events.iter().all(|(_, v)| v.get("usage").is_none()));
    assert!(translator.facts().usage.is_some());
}

fn openai_stream(with_usage: bool, done: bool) -> String {
    let mut events = vec![
        (
            None,
            json!({"id":"chatcmpl-7","object":"chat.completion.chunk","model":"gpt","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}),
        ),
        (
            None,
            json!({"id":"chatcmpl-7","object":"chat.completion.chunk","model":"gpt","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}),
        ),
        (
            None,
            json!({"id":"chatcmpl-7","object":"chat.completion.chunk","model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}),
        ),
        (
            None,
            json!({"id":"chatcmpl-7","object":"chat.completion.chunk","model":"gpt","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":null}]}),
        ),
        (
            None,
            json!({"id":"chatcmpl-7","object":"chat.completion.chunk","model":"gpt","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
        ),
    ];
    if with_usage {
        events.push((None, json!({"id":"chatcmpl-7","object":"chat.completion.chunk","model":"gpt","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}})));
    }
    let mut out = sse(&events);
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    out
}

#[test]
fn openai_stream_becomes_the_exact_anthropic_event_order() {
    let (events, translator, error) = run(Protocol::OpenAi, Protocol::Anthropic, false, &openai_stream(true, true));
    assert!(error.is_none());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(events[4].1["content_block"]["name"], "f");
    assert_eq!(events[4].1["index"], 1);
    assert_eq!(events[7].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[7].1["usage"]["output_tokens"], 4);
    assert_eq!(events[7].1["usage"]["input_tokens"], 5);
    assert!(translator.facts().complete);
}

#[test]
fn missing_done_is_not_complete_and_missing_usage_is_estimated() {
    let (events, translator, _) = run(Protocol::OpenAi, Protocol::Anthropic, false, &openai_stream(true, false));
    assert!(!translator.facts().complete);
    assert!(events.iter().all(|(n, _)| n != "message_stop"));
    let (events, _, _) = run(Protocol::OpenAi, Protocol::Anthropic, false, &openai_stream(false, true));
    let delta = events.iter().find(|(n, _)| n == "message_delta").map(|(_, v)| v.clone()).unwrap_or_default();
    assert_eq!(delta["usage"]["output_tokens"], 1, "estimated usage is used");
}

#[test]
fn openai_passthrough_strips_the_usage_chunk_the_client_did_not_ask_for() {
    let (events, translator, _) = run(Protocol::OpenAi, Protocol::OpenAi, false, &openai_stream(true, true));
    assert!(events.iter().all(|(_, v)| v.get("usage").is_none()));
    assert_eq!(translator.facts().usage.map(|u| u.output_tokens), Some(4));
    let (events, _, _) = run(Protocol::OpenAi, Protocol::OpenAi, true, &openai_stream(true, true));
    assert!(events.iter().any(|(_, v)| v.get("usage").is_some()));
}

#[test]
fn malformed_and_error_events_stop_the_stream() {
    let raw = "data: {\"choices\":[]}\n\ndata: {not json\n\n";
    let (_, _, error) = run(Protocol::OpenAi, Protocol::OpenAi, false, raw);
    assert_eq!(error.map(|e| e.kind), Some(crate::error::ErrorKind::UpstreamInvalidResponse));
    let raw =
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}\n\n";
    let (_, _, error) = run(Protocol::Anthropic, Protocol::OpenAi, false, raw);
    let error = error.unwrap_or_else(|| GatewayError::internal("none"));
    assert_eq!(error.kind, crate::error::ErrorKind::UpstreamStatus(529));
    let body: Value = serde_json::from_slice(&error.body(Protocol::OpenAi)).unwrap_or_default();
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("busy"));
    let passthrough = error.body(Protocol::Anthropic);
    assert_eq!(
        passthrough,
        Bytes::from_static(b"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}")
    );
}

#[test]
fn anthropic_passthrough_keeps_events_and_sums_usage() {
    let (events, translator, _) = run(Protocol::Anthropic, Protocol::Anthropic, false, &anthropic_stream());
    assert_eq!(events.len(), 12);
    assert_eq!(events[2].0, "ping");
    let usage = translator.facts().usage.unwrap_or_default();
    assert_eq!((usage.input_tokens, usage.output_tokens), (12, 9));
}

#[test]
fn openai_passthrough_stops_on_an_error_chunk_and_keeps_escaped_text() {
    // Text with escapes cannot be borrowed from the event: it must still be collected for estimates.
    let raw = "data: {\"choices\":[{\"delta\":{\"content\":\"a \\\"quoted\\\" \\u00e9\"}}],\"error\":null}\n\n\
               data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":null}}\n\n";
    let (events, translator, error) = run(Protocol::OpenAi, Protocol::OpenAi, false, raw);
    assert_eq!(events.len(), 1, "the first chunk is passed on: {events:?}");
    assert_eq!(translator.facts().text, "a \"quoted\" é");
    let error = error.unwrap_or_else(|| GatewayError::internal("none"));
    let body: Value = serde_json::from_slice(&error.body(Protocol::OpenAi)).unwrap_or_default();
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("overloaded"), "{body}");
}

/// The events of `anthropic_stream()` up to (not including) the one whose type is `until`.
fn anthropic_stream_until(until: &str) -> String {
    let full = anthropic_stream();
    let cut = full.find(&format!("event: {until}\n")).unwrap_or(full.len());
    full[..cut].to_owned()
}

#[test]
fn message_start_usage_is_not_final_until_message_delta() {
    for caller in [Protocol::Anthropic, Protocol::OpenAi] {
        let (_, translator, error) = run(Protocol::Anthropic, caller, true, &anthropic_stream_until("message_delta"));
        assert!(error.is_none());
        let facts = translator.facts();
        assert!(!facts.complete);
        assert_eq!(facts.final_usage(), None, "{caller:?}: a cut stream's output count is unknown");
        assert_eq!(facts.usage.map(|u| u.input_tokens), Some(12), "{caller:?}: the input count is kept");
        assert_eq!(facts.text, "Hello{\"a\":1}");
        let (_, translator, _) = run(Protocol::Anthropic, caller, true, &anthropic_stream_until("message_stop"));
        assert_eq!(translator.facts().final_usage().map(|u| u.output_tokens), Some(9), "{caller:?}");
    }
}

#[test]
fn tool_arguments_and_reasoning_count_as_generated_output() {
    let raw = sse(&[
        (
            None,
            json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"think "}}]}),
        ),
        (None, json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"hi "}}]})),
        (
            None,
            json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t","type":"function","function":{"name":"f","arguments":"{\"x\":"}}]}}]}),
        ),
        (
            None,
            json!({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"2}"}}]}}]}),
        ),
    ]);
    let (_, to_anthropic, _) = run(Protocol::OpenAi, Protocol::Anthropic, false, &raw);
    assert_eq!(to_anthropic.facts().text, "think hi {\"x\":2}");
    assert_eq!(to_anthropic.facts().final_usage(), None);
    let (_, passthrough, _) = run(Protocol::OpenAi, Protocol::OpenAi, false, &raw);
    assert_eq!(passthrough.facts().text, "think hi f{\"x\":2}");
}

/// Issue 14.1: an OpenAI stream may alternate argument chunks of two tool calls (index 0, 1, 0, 1). The
/// Anthropic caller must get exactly one contiguous `tool_use` block per call, with its id, its name and
/// its whole JSON input — not a block per chunk with empty names and split JSON.
#[test]
fn interleaved_tool_call_streams_keep_one_block_per_call() {
    let chunk = |delta: Value| (None, json!({"id":"c","model":"m","choices":[{"index":0,"delta":delta}]}));
    let raw = sse(&[
        chunk(json!({"role":"assistant","content":"Checking both. "})),
        chunk(json!({"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]})),
        chunk(json!({"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":""}}]})),
        chunk(json!({"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]})),
        chunk(json!({"tool_calls":[{"index":1,"function":{"arguments":"{\"zone\":"}}]})),
        chunk(json!({"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]})),
        chunk(json!({"tool_calls":[{"index":1,"function":{"arguments":"\"CET\"}"}}]})),
        (None, json!({"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})),
        (None, json!({"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":18,"total_tokens":38}})),
        (None, Value::String("[DONE]".into())),
    ])
    .replace("data: \"[DONE]\"", "data: [DONE]");
    let (events, _, error) = run(Protocol::OpenAi, Protocol::Anthropic, false, &raw);
    assert!(error.is_none(), "{error:?}");
    // Rebuild the content blocks the way the Anthropic SDK does, checking contiguity as it goes.
    let mut blocks: Vec<Value> = Vec::new();
    let mut inputs: Vec<String> = Vec::new();
    let mut open: Option<u64> = None;
    for (name, data) in &events {
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(open, None, "a block started while another was open: {events:?}");
                let index = data["index"].as_u64().unwrap_or(u64::MAX);
                assert_eq!(index as usize, blocks.len(), "indexes count up from 0");
                open = Some(index);
                blocks.push(data["content_block"].clone());
                inputs.push(String::new());
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(u64::MAX);
                assert_eq!(open, Some(index), "a delta for a block that is not open: {events:?}");
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("input_json_delta") => {
                        inputs[index as usize].push_str(delta["partial_json"].as_str().unwrap_or_default())
                    }
                    Some("text_delta") => inputs[index as usize].push_str(delta["text"].as_str().unwrap_or_default()),
                    other => panic!("unexpected delta {other:?}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(open, data["index"].as_u64(), "stop for the open block");
                open = None;
            }
            _ => {}
        }
    }
    assert_eq!(blocks.len(), 3, "a text block and one tool_use block per call: {blocks:?}");
    assert_eq!(blocks[0]["type"], "text");
    assert_eq!(inputs[0], "Checking both. ");
    let tools: Vec<(String, String, Value)> = blocks[1..]
        .iter()
        .zip(&inputs[1..])
        .map(|(block, input)| {
            assert_eq!(block["type"], "tool_use");
            let parsed: Value = serde_json::from_str(input).unwrap_or_else(|e| panic!("whole JSON input {input}: {e}"));
            (
                block["id"].as_str().unwrap_or_default().to_owned(),
                block["name"].as_str().unwrap_or_default().to_owned(),
                parsed,
            )
        })
        .collect();
    assert_eq!(
        tools,
        vec![
            ("call_a".to_owned(), "weather".to_owned(), json!({"city": "Paris"})),
            ("call_b".to_owned(), "time".to_owned(), json!({"zone": "CET"})),
        ]
    );
    let stop =
        events.iter().find(|(name, _)| name == "message_delta").map(|(_, data)| data.clone()).unwrap_or_default();
    assert_eq!(stop["delta"]["stop_reason"], "tool_use");
}

/// Issue 14.8: a streamed refusal reaches Anthropic callers as the answer's text (the non-streamed path
/// already did so), and counts as generated output.
#[test]
fn streamed_refusals_reach_anthropic_callers() {
    let chunk = |delta: Value| (None, json!({"id":"c","model":"m","choices":[{"index":0,"delta":delta}]}));
    let raw = sse(&[
        chunk(json!({"role":"assistant","content":null,"refusal":""})),
        chunk(json!({"refusal":"I can't help "})),
        chunk(json!({"refusal":"with that."})),
        (None, json!({"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})),
    ]) + "data: [DONE]\n\n";
    let (events, translator, error) = run(Protocol::OpenAi, Protocol::Anthropic, false, &raw);
    assert!(error.is_none(), "{error:?}");
    let text: String =
        events.iter().filter_map(|(_, data)| data["delta"]["text"].as_str().map(str::to_owned)).collect();
    assert_eq!(text, "I can't help with that.");
    assert_eq!(translator.facts().text, "I can't help with that.");
}

/// Issue 14.11: an upstream that splits one event's JSON over several `data:` lines (legal SSE) reached
/// OpenAI clients as one `data:` line with raw newlines, which ends the field early: the client saw
/// broken JSON. Each line keeps its own `data:` field, so the client reassembles the same JSON.
#[test]
fn multi_line_data_stays_valid_sse_in_passthrough() {
    let raw = "data: {\"id\":\"c\",\"model\":\"m\",\ndata: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
    let (events, translator, error) = run(Protocol::OpenAi, Protocol::OpenAi, false, raw);
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].1["choices"][0]["delta"]["content"], "Hi", "the client parses the same JSON");
    assert_eq!(translator.facts().text, "Hi");
}

/// Runs raw upstream SSE through `translator`; returns what the caller receives, as text.
fn run_text(mut translator: StreamTranslator, raw: &str) -> String {
    let mut parser = SseParser::new();
    parser.push(raw.as_bytes());
    let mut out = BytesMut::new();
    while let Ok(Some(event)) = parser.next_event() {
        if let Err(err) = translator.on_event(&event, &mut out, &no_estimate) {
            panic!("{err:?}");
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Issue 14.6: reasoning is carried both ways, as each API shows it.
#[test]
fn thinking_and_reasoning_content_cross_over() {
    let anthropic = sse(&[
        (
            Some("message_start"),
            json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"c","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}),
        ),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"step one"}}),
        ),
        (Some("content_block_stop"), json!({"type":"content_block_stop","index":0})),
        (
            Some("content_block_start"),
            json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"42"}}),
        ),
        (Some("content_block_stop"), json!({"type":"content_block_stop","index":1})),
        (
            Some("message_delta"),
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}),
        ),
        (Some("message_stop"), json!({"type":"message_stop"})),
    ]);
    let text = run_text(StreamTranslator::new(Protocol::Anthropic, Protocol::OpenAi, true), &anthropic);
    assert!(text.contains(r#""reasoning_content":"step one""#), "{text}");
    let openai = sse(&[
        (None, json!({"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"step one"}}]})),
        (None, json!({"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"42"},"finish_reason":"stop"}]})),
        (None, json!("[DONE]")),
    ])
    .replace("\"[DONE]\"", "[DONE]");
    let translator = StreamTranslator::new(Protocol::OpenAi, Protocol::Anthropic, false);
    let shown = run_text(translator.with_reasoning(true), &openai);
    let thinking_at = shown.find(r#""thinking":"step one","type":"thinking_delta""#);
    let text_at = shown.find(r#""text":"42","type":"text_delta""#);
    assert!(thinking_at.is_some() && thinking_at < text_at, "a thinking block, then the text: {shown}");
    let hidden = run_text(StreamTranslator::new(Protocol::OpenAi, Protocol::Anthropic, false), &openai);
    assert!(!hidden.contains("thinking") && hidden.contains("42"), "not asked for: not shown: {hidden}");
}
