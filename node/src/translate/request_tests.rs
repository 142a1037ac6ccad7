use serde_json::json;

use super::*;
use crate::api::anthropic::MessagesRequest;

fn to_anthropic(value: Value) -> Value {
    let request: ChatRequest = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
    openai_to_anthropic(request, "claude-x", 1024).unwrap_or_else(|e| panic!("{e}")).body
}

fn to_openai(value: Value) -> Value {
    let request: MessagesRequest = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
    anthropic_to_openai(request, "gpt-x").unwrap_or_else(|e| panic!("{e}")).body
}

#[test]
fn system_messages_move_to_top_level_and_max_tokens_defaults() {
    let out = to_anthropic(json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "and kind"},
            {"role": "user", "content": "hi"}
        ],
        "temperature": 1.7,
        "stop": "END"
    }));
    assert_eq!(out["system"], "be brief\n\nand kind");
    assert_eq!(out["model"], "claude-x");
    assert_eq!(out["max_tokens"], 1024);
    assert_eq!(out["temperature"], 1.0);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]));
}

#[test]
fn tool_round_trip_merges_consecutive_tool_results() {
    let out = to_anthropic(json!({
        "model": "m",
        "max_completion_tokens": 50,
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": "rainy"}
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false
    }));
    assert_eq!(out["max_tokens"], 50);
    let messages = out["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1]["content"][1],
        json!({"type": "tool_use", "id": "c2", "name": "weather", "input": {"city": "Rome"}})
    );
    assert_eq!(messages[2]["role"], "user");
    assert_eq!(messages[2]["content"].as_array().map(Vec::len), Some(2));
    assert_eq!(messages[2]["content"][1]["tool_use_id"], "c2");
    assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(out["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
}

#[test]
fn bad_tool_arguments_and_n_are_rejected() {
    let request: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}
    ]}))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(openai_to_anthropic(request, "c", 10).is_err());
    let request: ChatRequest =
        serde_json::from_value(json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}))
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(openai_to_anthropic(request, "c", 10).is_err());
}

#[test]
fn images_translate_both_ways() {
    let out = to_anthropic(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]}]}));
    assert_eq!(
        out["messages"][0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
    );
    let back = to_openai(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "text", "text": "what is this"}
    ]}]}));
    assert_eq!(back["messages"][0]["content"][0]["image_url"]["url"], "data:image/png;base64,AAAA");
}

#[test]
fn anthropic_request_becomes_openai_with_tools_and_usage_chunk() {
    let out = to_openai(json!({
        "model": "claude",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "sys"}],
        "stop_sequences": ["###"],
        "stream": true,
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "weather"},
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "checking"},
                {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "cold"}]},
                {"type": "text", "text": "thanks"}
            ]}
        ]
    }));
    assert_eq!(out["model"], "gpt-x");
    assert_eq!(out["max_tokens"], 100);
    assert_eq!(out["stop"], json!(["###"]));
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    let messages = out["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(messages[0], json!({"role": "system", "content": "sys"}));
    assert_eq!(messages[2]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
    assert_eq!(messages[3], json!({"role": "tool", "tool_call_id": "t1", "content": "cold"}));
    assert_eq!(messages[4], json!({"role": "user", "content": "thanks"}));
    assert_eq!(out["tools"][0]["function"]["name"], "weather");
    assert_eq!(out["tool_choice"], json!({"type": "function", "function": {"name": "weather"}}));
}

#[test]
fn reasoning_models_take_max_completion_tokens() {
    for model in ["o1", "o3-mini", "o4-mini-2025-04-16", "gpt-5", "gpt-5.1", "openai/o3"] {
        assert_eq!(openai_output_field(model, false), "max_completion_tokens", "{model}");
    }
    for model in ["gpt-4o-mini", "o1x", "gpt-50", "meta-llama/Llama-3.1-8B-Instruct", "omni"] {
        assert_eq!(openai_output_field(model, false), "max_tokens", "{model}");
    }
    assert_eq!(openai_output_field("gpt-4o", true), "max_completion_tokens", "the caller's choice");
}

fn translated_to_anthropic(value: Value) -> Translated {
    let request: ChatRequest = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
    openai_to_anthropic(request, "claude-x", 1024).unwrap_or_else(|e| panic!("{e}"))
}

fn translated_to_openai(value: Value, model: &str) -> Translated {
    let request: MessagesRequest = serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"));
    anthropic_to_openai(request, model).unwrap_or_else(|e| panic!("{e}"))
}

/// Issue 14.6: what has no equivalent is named, never silently lost.
#[test]
fn parameters_without_an_equivalent_are_reported_as_dropped() {
    let out = translated_to_anthropic(json!({
        "model": "m", "seed": 7, "logprobs": true, "top_logprobs": 2, "frequency_penalty": 0.5,
        "stream_options": {"include_usage": true}, "presence_penalty": null,
        "messages": [{"role": "user", "name": "alice", "content": "hi"}],
    }));
    assert_eq!(out.dropped, ["frequency_penalty", "logprobs", "messages[].name", "seed", "top_logprobs"]);
    assert!(out.body.get("seed").is_none() && out.body.get("logprobs").is_none(), "{}", out.body);
    let out = translated_to_openai(
        json!({"model": "m", "max_tokens": 10, "top_k": 40, "messages": [{"role": "user", "content": "hi"}]}),
        "gpt-4o",
    );
    assert_eq!(out.dropped, ["top_k"]);
    assert!(out.body.get("top_k").is_none());
    let strict = translated_to_anthropic(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": true, "schema": {"type": "object"}}}}));
    assert_eq!(strict.dropped, ["response_format.json_schema.strict"], "asked for in words, not enforced");
    assert!(strict.body["system"].as_str().is_some_and(|s| s.contains("JSON Schema")), "{}", strict.body);
    let plain = translated_to_anthropic(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    assert!(plain.dropped.is_empty(), "{:?}", plain.dropped);
}

#[test]
fn reasoning_effort_becomes_a_thinking_budget_below_max_tokens() {
    let ask = |effort: &str, max: u64, extra: Value| {
        let mut request = json!({"model": "m", "reasoning_effort": effort, "max_completion_tokens": max,
            "messages": [{"role": "user", "content": "think"}]});
        if let (Some(object), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
            object.extend(extra.clone());
        }
        translated_to_anthropic(request)
    };
    let out = ask("medium", 20_000, json!({}));
    assert_eq!(out.body["thinking"], json!({"type": "enabled", "budget_tokens": 4096}));
    assert!(out.dropped.is_empty());
    assert_eq!(ask("high", 8000, json!({})).body["thinking"]["budget_tokens"], 7999, "always below max_tokens");
    assert_eq!(ask("low", 2000, json!({})).body["thinking"]["budget_tokens"], 1024);
    // Thinking excludes a temperature: dropped and said so.
    let out = ask("low", 4000, json!({"temperature": 0.2}));
    assert!(out.body.get("temperature").is_none() && out.body.get("thinking").is_some());
    assert_eq!(out.dropped, ["temperature"]);
    // Too small a max_tokens or a forced tool: no thinking, and the effort is reported dropped.
    let out = ask("high", 1000, json!({}));
    assert!(out.body.get("thinking").is_none());
    assert_eq!(out.dropped, ["reasoning_effort"]);
    let forced = json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"});
    assert_eq!(ask("low", 4000, forced).dropped, ["reasoning_effort"]);
    assert!(ask("none", 4000, json!({})).body.get("thinking").is_none());
    // A tool loop: Anthropic wants the final tool turn to start with signed thinking the caller never had.
    let tool_loop = json!({"messages": [
        {"role": "user", "content": "think"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "done"}]});
    let out = ask("low", 4000, tool_loop);
    assert_eq!((out.body.get("thinking"), out.dropped), (None, vec!["reasoning_effort".to_owned()]));
    let request: ChatRequest = serde_json::from_value(
        json!({"model": "m", "reasoning_effort": "max", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = openai_to_anthropic(request, "c", 4000).err().map(|e| e.message).unwrap_or_default();
    assert!(err.contains("reasoning_effort"), "{err}");
}

#[test]
fn thinking_becomes_reasoning_effort_only_for_reasoning_models() {
    let request = |budget: u64| {
        json!({"model": "m", "max_tokens": 20_000, "thinking": {"type": "enabled", "budget_tokens": budget},
            "messages": [{"role": "user", "content": "think"}]})
    };
    let out = translated_to_openai(request(2048), "o4-mini");
    assert_eq!((out.body["reasoning_effort"].as_str(), out.dropped.len()), (Some("low"), 0));
    assert_eq!(translated_to_openai(request(8000), "gpt-5").body["reasoning_effort"], "medium");
    assert_eq!(translated_to_openai(request(16_384), "o3").body["reasoning_effort"], "high");
    let out = translated_to_openai(request(2048), "gpt-4o");
    assert!(out.body.get("reasoning_effort").is_none());
    assert_eq!(out.dropped, ["thinking"], "a model that refuses reasoning_effort does not get it");
}

#[test]
fn reasoning_models_get_no_sampling_they_refuse() {
    let request = json!({"model": "m", "max_tokens": 100, "temperature": 0.2, "top_p": 0.5,
        "messages": [{"role": "user", "content": "hi"}]});
    let out = translated_to_openai(request.clone(), "o3");
    assert!(out.body.get("temperature").is_none() && out.body.get("top_p").is_none());
    assert_eq!(out.dropped, ["temperature", "top_p"]);
    let out = translated_to_openai(request, "gpt-4o");
    assert_eq!((out.body["temperature"].as_f64(), out.body["top_p"].as_f64()), (Some(0.2), Some(0.5)));
    let defaults = json!({"model": "m", "max_tokens": 100, "temperature": 1.0,
        "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(translated_to_openai(defaults, "o3").body["temperature"], 1.0, "the default is accepted");
}

/// Anthropic reads base64 PDFs and plain text as a `text` source (it refuses base64 text).
#[test]
fn openai_files_become_pdf_or_text_documents_and_other_types_are_refused() {
    let file = |data_url: &str| {
        json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"filename": "f", "file_data": data_url}}]}]})
    };
    let out = to_anthropic(file("data:text/plain;base64,UmV2ZW51ZSBncmV3Lg=="));
    assert_eq!(
        out["messages"][0]["content"][0],
        json!({"type": "document", "title": "f", "source": {"type": "text", "media_type": "text/plain", "data": "Revenue grew."}})
    );
    let out = to_anthropic(file("data:application/pdf;base64,JVBERi0="));
    assert_eq!(out["messages"][0]["content"][0]["source"]["type"], "base64");
    for refused in ["data:image/webp;base64,UklGRg==", "data:text/plain;base64,//79"] {
        let request: ChatRequest = serde_json::from_value(file(refused)).unwrap_or_else(|e| panic!("{e}"));
        let err = openai_to_anthropic(request, "c", 100).err().map(|e| e.message).unwrap_or_default();
        assert!(err.starts_with("messages[0].content[0]: "), "{refused}: {err}");
    }
}

/// The budget's output cap lowers `max_tokens`; Anthropic wants the thinking budget below it, and >= 1,024.
#[test]
fn a_thinking_budget_follows_the_output_cap() {
    let thinking = r#"{"type":"enabled","budget_tokens":2048}"#;
    assert_eq!(cap_thinking(Some(thinking), 3000), CappedThinking::AsSent);
    assert_eq!(
        cap_thinking(Some(thinking), 2048),
        CappedThinking::Lowered(json!({"type": "enabled", "budget_tokens": 2047}))
    );
    assert_eq!(
        cap_thinking(Some(thinking), 1025),
        CappedThinking::Lowered(json!({"type": "enabled", "budget_tokens": 1024}))
    );
    assert_eq!(cap_thinking(Some(thinking), 1024), CappedThinking::Off);
    assert_eq!(cap_thinking(Some(r#"{"type":"disabled"}"#), 10), CappedThinking::AsSent);
    assert_eq!(cap_thinking(None, 10), CappedThinking::AsSent);
}
