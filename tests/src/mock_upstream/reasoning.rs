//! Reasoning as each real API does it.
//!
//! * Anthropic: a model thinks only when the request enables `thinking`; the answer then starts with a
//!   `thinking` block carrying an opaque `signature` (streamed: `thinking_delta`s, then one
//!   `signature_delta`, then `content_block_stop`). Thinking tokens are output tokens and count against
//!   `max_tokens`. The request checks are the API's: a budget of at least 1,024 below `max_tokens`, no
//!   temperature (other than 1), `top_p` below 0.95, `top_k` or forced tool next to thinking; thinking
//!   blocks sent back must carry the signature the API gave them; with thinking on, a final assistant turn
//!   that calls tools must start with its thinking block; with thinking off, a final assistant turn (a
//!   prefill) cannot hold thinking.
//! * OpenAI-compatible servers of reasoning models (vLLM or SGLang with a reasoning parser, DeepSeek):
//!   `message.reasoning_content` next to the content; streamed, `delta.reasoning_content` chunks before the
//!   content ones (DeepSeek's shape: the other field `null`). Reasoning tokens are completion tokens,
//!   reported in `completion_tokens_details.reasoning_tokens`.
//! * OpenAI's own reasoning models (o1, o3, o4, gpt-5): the reasoning stays hidden and is only billed
//!   (`reasoning_tokens`); they refuse a temperature or `top_p` other than 1. Models that do not reason
//!   refuse `reasoning_effort`.

use serde_json::Value;

use super::text::pieces;
use super::Script;

/// What the model thinks when it thinks and the script does not say what (9 pieces).
pub const DEFAULT_THINKING: &str = "The user greets me; a short, friendly answer fits.";

/// OpenAI's reasoning families, by the model name's last path segment (they refuse `max_tokens`).
pub fn is_openai_reasoning_family(model: &str) -> bool {
    let family = model.rsplit('/').next().unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5"].iter().any(|f| {
        family.strip_prefix(f).is_some_and(|rest| rest.is_empty() || rest.starts_with('-') || rest.starts_with('.'))
    })
}

/// How an OpenAI-flavoured server shows the model's reasoning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenAiReasoning {
    /// The model does not reason.
    None,
    /// OpenAI's reasoning models: billed as `reasoning_tokens`, never shown.
    Hidden(Vec<String>),
    /// vLLM / SGLang / DeepSeek: `reasoning_content`.
    Shown(Vec<String>),
}

impl OpenAiReasoning {
    /// A model reasons when it is one of OpenAI's reasoning families (hidden reasoning, the script's text or
    /// [`DEFAULT_THINKING`]) or when the script makes it a reasoning model of an OpenAI-compatible server.
    pub fn plan(model: &str, script: &Script) -> OpenAiReasoning {
        if is_openai_reasoning_family(model) {
            return OpenAiReasoning::Hidden(pieces(script.reasoning.as_deref().unwrap_or(DEFAULT_THINKING)));
        }
        match &script.reasoning {
            Some(text) => OpenAiReasoning::Shown(pieces(text)),
            None => OpenAiReasoning::None,
        }
    }

    /// Reasoning tokens (billed as completion tokens).
    pub fn tokens(&self) -> u64 {
        match self {
            OpenAiReasoning::None => 0,
            OpenAiReasoning::Hidden(p) | OpenAiReasoning::Shown(p) => p.len() as u64,
        }
    }

    /// The pieces a client sees as `reasoning_content`.
    pub fn shown(&self) -> Option<&[String]> {
        match self {
            OpenAiReasoning::Shown(p) => Some(p),
            _ => None,
        }
    }

    /// OpenAI's checks: `reasoning_effort` only for models that reason; OpenAI's own reasoning models take
    /// only the default sampling (temperature 1, no `top_p` other than 1).
    pub fn check_params(&self, body: &Value) -> Result<(), (String, String)> {
        if body.get("reasoning_effort").is_some() && *self == OpenAiReasoning::None {
            return Err((
                "Unsupported parameter: 'reasoning_effort' is not supported with this model.".to_owned(),
                "reasoning_effort".to_owned(),
            ));
        }
        if !matches!(self, OpenAiReasoning::Hidden(_)) {
            return Ok(());
        }
        for param in ["temperature", "top_p"] {
            match body.get(param).and_then(Value::as_f64) {
                Some(value) if value != 1.0 => {
                    return Err((
                        format!("Unsupported value: '{param}' does not support {value} with this model. Only the default (1) value is supported."),
                        param.to_owned(),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The thinking budget when the request enables thinking.
pub fn thinking_budget(body: &Value) -> Option<u64> {
    let thinking = body.get("thinking").filter(|t| t["type"] == "enabled")?;
    Some(thinking.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0))
}

/// The thinking pieces of an Anthropic answer: none without thinking; else the script's reasoning (or
/// [`DEFAULT_THINKING`]), at most the budget and `max_tokens`.
pub fn anthropic_thinking(body: &Value, script: &Script, max_tokens: u64) -> Option<Vec<String>> {
    let budget = thinking_budget(body)?;
    let mut thought = pieces(script.reasoning.as_deref().unwrap_or(DEFAULT_THINKING));
    thought.truncate(usize::try_from(budget.min(max_tokens)).unwrap_or(usize::MAX));
    Some(thought)
}

/// The signature the mock gives a thinking text: opaque, and checkable when the block comes back.
pub fn signature_for(thinking: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in thinking.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("EqQBCkgIBxABGAIqQ{hash:016x}{:08x}", thinking.len())
}

/// Extended thinking as the real API checks a request (see the module docs).
pub fn anthropic_thinking_checks(body: &Value, messages: &[Value]) -> Result<(), String> {
    returned_signatures(messages)?;
    let Some(budget) = thinking_budget(body) else {
        return final_prefill_without_thinking(messages);
    };
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
    if budget < 1024 {
        return Err("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024".to_owned());
    }
    if budget >= max_tokens {
        return Err("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-window-size".to_owned());
    }
    if body.get("temperature").is_some_and(|t| t.as_f64() != Some(1.0)) {
        return Err("`temperature` may only be set to 1 when thinking is enabled. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#feature-compatibility".to_owned());
    }
    if body.get("top_p").and_then(Value::as_f64).is_some_and(|p| p < 0.95) {
        return Err("`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#feature-compatibility".to_owned());
    }
    if body.get("top_k").is_some() {
        return Err("`top_k` must be unset when thinking is enabled. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking#feature-compatibility".to_owned());
    }
    if matches!(body.pointer("/tool_choice/type").and_then(Value::as_str), Some("any" | "tool")) {
        return Err("Thinking may not be enabled when tool_choice forces tool use.".to_owned());
    }
    final_tool_turn_starts_with_thinking(messages)
}

fn blocks(message: &Value) -> &[Value] {
    message.get("content").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn block_type(block: &Value) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Thinking blocks sent back must be the API's own, signature and all.
fn returned_signatures(messages: &[Value]) -> Result<(), String> {
    for (index, message) in messages.iter().enumerate() {
        for (block_index, block) in blocks(message).iter().enumerate() {
            if block_type(block) != "thinking" {
                continue;
            }
            let thinking = block.get("thinking").and_then(Value::as_str).unwrap_or("");
            if block.get("signature").and_then(Value::as_str) != Some(signature_for(thinking).as_str()) {
                return Err(format!("messages.{index}.content.{block_index}: Invalid `signature` in `thinking` block"));
            }
        }
    }
    Ok(())
}

/// With thinking on, the last assistant turn, when it calls tools, must start with its thinking block.
fn final_tool_turn_starts_with_thinking(messages: &[Value]) -> Result<(), String> {
    let Some((index, last)) = messages.iter().enumerate().rev().find(|(_, m)| m["role"] == "assistant") else {
        return Ok(());
    };
    let content = blocks(last);
    if !content.iter().any(|b| block_type(b) == "tool_use") {
        return Ok(());
    }
    match content.first().map(block_type) {
        Some("thinking" | "redacted_thinking") => Ok(()),
        found => Err(format!(
            "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking",
            found.unwrap_or("")
        )),
    }
}

/// With thinking off, an assistant turn in the final position (a prefill) cannot hold thinking.
fn final_prefill_without_thinking(messages: &[Value]) -> Result<(), String> {
    let Some(last) = messages.last().filter(|m| m["role"] == "assistant") else { return Ok(()) };
    match blocks(last).iter().position(|b| matches!(block_type(b), "thinking" | "redacted_thinking")) {
        Some(block_index) => Err(format!(
            "messages.{}.content.{block_index}: When thinking is disabled, an `assistant` message in the final position cannot contain `thinking`. To use thinking blocks, enable `thinking` in your request.",
            messages.len() - 1
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_depend_on_the_text() {
        assert_eq!(signature_for("a"), signature_for("a"));
        assert_ne!(signature_for("a"), signature_for("b"));
    }
}
