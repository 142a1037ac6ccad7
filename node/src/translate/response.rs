//! Non-streamed response handling: validate and meter a same-protocol body without rewriting it, or
//! translate a complete response to the caller's protocol.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::api::anthropic::{self, Block, MessageResponse};
use crate::api::openai::{self, ChatCompletion};
use crate::api::{FinishReason, Usage};
use crate::error::{GatewayError, GatewayResult};

/// What the gateway learned from a complete response.
#[derive(Debug, Default)]
pub struct ResponseFacts {
    /// Provider-reported usage, if any.
    pub usage: Option<Usage>,
    /// Why the model stopped, as the provider said it (`stop`, `end_turn`, `tool_calls`…).
    pub finish_reason: Option<String>,
    /// The generated text, for a local token estimate when usage is missing.
    pub text: String,
}

fn invalid(err: serde_json::Error) -> GatewayError {
    GatewayError::upstream_invalid(format!("upstream returned an invalid response body: {err}"))
}

/// Validates an OpenAI chat response and reads its usage (and, only when that is missing, the reply
/// text to estimate it from).
pub fn probe_openai(body: &[u8]) -> GatewayResult<ResponseFacts> {
    let probe: openai::ResponseProbe = serde_json::from_slice(body).map_err(invalid)?;
    let usage = probe.usage.map(|u| u.to_usage());
    let text = match usage {
        Some(_) => String::new(),
        None => probe.choices.iter().filter_map(|c| c.message.as_ref()?.content.as_deref()).collect(),
    };
    let finish_reason = probe.choices.first().and_then(|c| c.finish_reason.clone());
    Ok(ResponseFacts { usage, finish_reason, text })
}

/// Validates an Anthropic message response and reads its usage.
pub fn probe_anthropic(body: &[u8]) -> GatewayResult<ResponseFacts> {
    let probe: anthropic::ResponseProbe = serde_json::from_slice(body).map_err(invalid)?;
    if probe.kind != "message" {
        return Err(GatewayError::upstream_invalid(format!(
            "upstream returned an object of type `{}` where a message was expected",
            probe.kind
        )));
    }
    Ok(ResponseFacts {
        usage: probe.usage.map(|u| u.to_usage()),
        finish_reason: probe.stop_reason,
        text: anthropic_text(&probe.content),
    })
}

fn anthropic_text(blocks: &[Block]) -> String {
    blocks
        .iter()
        .filter_map(|block| match block {
            Block::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Anthropic message → OpenAI `chat.completion`.
pub fn anthropic_to_openai(body: &[u8]) -> GatewayResult<(Bytes, ResponseFacts)> {
    let message: MessageResponse = serde_json::from_slice(body).map_err(invalid)?;
    let text = anthropic_text(&message.content);
    let tool_calls: Vec<Value> = message
        .content
        .iter()
        .filter_map(|block| match block {
            Block::ToolUse { id, name, input } => Some(json!({
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            })),
            _ => None,
        })
        .collect();
    let finish_reason = message.stop_reason.clone();
    let finish = message.stop_reason.as_deref().map(FinishReason::from_anthropic).unwrap_or(FinishReason::Stop);
    let usage = message.usage.map(|u| u.to_usage());
    let mut assistant = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    // Extended thinking (on when the caller set `reasoning_effort`) as OpenAI-compatible servers return
    // reasoning: `reasoning_content` next to the content.
    let reasoning: String = message
        .content
        .iter()
        .filter_map(|block| match block {
            Block::Thinking { thinking } => Some(thinking.as_str()),
            _ => None,
        })
        .collect();
    if !reasoning.is_empty() {
        assistant["reasoning_content"] = json!(reasoning);
    }
    if !tool_calls.is_empty() {
        assistant["tool_calls"] = Value::Array(tool_calls);
    }
    let mut out = json!({
        "id": openai_id(&message.id),
        "object": "chat.completion",
        "created": unix_now(),
        "model": message.model,
        "choices": [{"index": 0, "message": assistant, "logprobs": null, "finish_reason": finish.openai()}],
    });
    if let Some(usage) = usage {
        out["usage"] = openai_usage_json(&usage);
    }
    Ok((Bytes::from(out.to_string()), ResponseFacts { usage, finish_reason, text }))
}

/// OpenAI `chat.completion` → Anthropic message; the server's reasoning text (`reasoning_content`) becomes
/// a leading thinking block when `show_reasoning` (the caller enabled thinking).
pub fn openai_to_anthropic(body: &[u8], show_reasoning: bool) -> GatewayResult<(Bytes, ResponseFacts)> {
    let completion: ChatCompletion = serde_json::from_slice(body).map_err(invalid)?;
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| GatewayError::upstream_invalid("upstream returned a completion without choices"))?;
    let message = choice.message.unwrap_or_default();
    let text = message.content.or(message.refusal).unwrap_or_default();
    let mut content = Vec::new();
    if let Some(reasoning) = message.reasoning_content.or(message.reasoning).filter(|r| show_reasoning && !r.is_empty())
    {
        // No signature: it was not produced by Anthropic, and the gateway cannot make one.
        content.push(json!({"type": "thinking", "thinking": reasoning, "signature": ""}));
    }
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    for call in message.tool_calls.unwrap_or_default() {
        let input: Value = serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
    }
    let finish_reason = choice.finish_reason.clone();
    let finish = choice.finish_reason.as_deref().map(FinishReason::from_openai).unwrap_or(FinishReason::Stop);
    let usage = completion.usage.map(|u| u.to_usage());
    let out = json!({
        "id": anthropic_id(&completion.id),
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": finish.anthropic(),
        "stop_sequence": null,
        "usage": anthropic_usage_json(usage.as_ref()),
    });
    Ok((Bytes::from(out.to_string()), ResponseFacts { usage, finish_reason, text }))
}

pub fn openai_usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    })
}

/// Anthropic's `input_tokens` excludes cache reads, so cached tokens move to `cache_read_input_tokens`.
pub fn anthropic_usage_json(usage: Option<&Usage>) -> Value {
    let usage = usage.copied().unwrap_or_default();
    json!({
        "input_tokens": usage.input_tokens.saturating_sub(usage.cached_input_tokens),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_input_tokens,
    })
}

pub fn openai_id(id: &str) -> String {
    if id.starts_with("chatcmpl-") {
        id.to_owned()
    } else {
        format!("chatcmpl-{}", id.trim_start_matches("msg_"))
    }
}

pub fn anthropic_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{}", id.trim_start_matches("chatcmpl-"))
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_message_becomes_a_chat_completion() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[
            {"type":"text","text":"Let me check."},
            {"type":"tool_use","id":"toolu_1","name":"weather","input":{"city":"Oslo"}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":4}}"#;
        let (out, facts) = anthropic_to_openai(body).unwrap_or_else(|e| panic!("{e}"));
        let out: Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(out["id"], "chatcmpl-1");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(out["usage"]["prompt_tokens"], 14);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(facts.usage.map(|u| u.output_tokens), Some(5));
    }

    #[test]
    fn chat_completion_becomes_an_anthropic_message() {
        let body = br#"{"id":"chatcmpl-9","object":"chat.completion","model":"gpt","choices":[{"index":0,
            "message":{"role":"assistant","content":"Hi","tool_calls":[{"id":"call_1","type":"function",
            "function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"length"}],
            "usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        let (out, _) = openai_to_anthropic(body, false).unwrap_or_else(|e| panic!("{e}"));
        let out: Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(out["id"], "msg_9");
        assert_eq!(out["stop_reason"], "max_tokens");
        assert_eq!(out["content"][1], json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}}));
        assert_eq!(out["usage"]["input_tokens"], 7);
        assert_eq!(out["usage"]["output_tokens"], 3);
    }

    #[test]
    fn openai_probe_reads_usage_and_the_text_only_when_usage_is_missing() {
        let with_usage = br#"{"choices":[{"message":{"role":"assistant","content":"Hi"}}],
            "usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        let facts = probe_openai(with_usage).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(facts.usage.map(|u| (u.input_tokens, u.output_tokens)), Some((7, 3)));
        assert_eq!(facts.text, "", "no text collected when the provider reported usage");
        let without = br#"{"choices":[{"message":{"content":"say \"hi\"\n"}},{"message":{"content":null}},{}]}"#;
        let facts = probe_openai(without).unwrap_or_else(|e| panic!("{e}"));
        assert!(facts.usage.is_none());
        assert_eq!(facts.text, "say \"hi\"\n", "escaped text is decoded for the estimate");
        assert!(probe_openai(br#"{"choices":[{"message":{"content":5}}]}"#).is_err(), "wrong type");
    }

    #[test]
    fn garbage_is_an_upstream_error() {
        assert!(probe_openai(b"<html>").is_err());
        assert!(probe_anthropic(br#"{"type":"error"}"#).is_err());
        assert!(openai_to_anthropic(br#"{"choices":[]}"#, false).is_err());
    }
}
