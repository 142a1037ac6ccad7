//! OpenAI Chat Completions / Embeddings types: a cheap validating probe for the hot path, and typed
//! structs used only when a request or response must be translated to the other protocol.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RawObject, RequestProbe, Usage};
use crate::error::{GatewayError, GatewayResult};

#[derive(Deserialize)]
struct MessageProbe<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct StreamOptionsProbe {
    #[serde(default)]
    include_usage: Option<bool>,
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

/// Validates a chat completion request as OpenAI does.
pub fn probe_chat(body: &[u8]) -> GatewayResult<RequestProbe<'_>> {
    let object = RawObject::parse(body)?;
    let model: Cow<'_, str> = object.required("model")?;
    let messages_raw = object
        .get("messages")
        .ok_or_else(|| GatewayError::invalid_param("messages", "missing required parameter `messages`"))?;
    let messages: Vec<MessageProbe<'_>> = serde_json::from_str(messages_raw.get()).map_err(|err| {
        GatewayError::invalid_param(
            "messages",
            format!("invalid `messages`: expected an array of messages with a `role`: {err}"),
        )
    })?;
    if messages.is_empty() {
        return Err(GatewayError::invalid_param("messages", "`messages` must contain at least one message"));
    }
    if let Some((index, message)) = messages.iter().enumerate().find(|(_, m)| !ROLES.contains(&m.role.as_ref())) {
        return Err(GatewayError::invalid_param(
            "messages",
            format!("invalid `messages[{index}].role`: `{}` is not one of {ROLES:?}", message.role),
        ));
    }
    let stream = object.field::<bool>("stream")?.unwrap_or(false);
    let include_usage = object
        .field::<StreamOptionsProbe>("stream_options")?
        .and_then(|options| options.include_usage)
        .unwrap_or(false);
    let max_output_tokens = match object.field::<u64>("max_completion_tokens")? {
        Some(value) => Some(value),
        None => object.field::<u64>("max_tokens")?,
    };
    let choices = object.field::<u64>("n")?.unwrap_or(1);
    if choices == 0 || choices > 128 {
        return Err(GatewayError::invalid_param("n", format!("`n` must be between 1 and 128, got {choices}")));
    }
    Ok(RequestProbe {
        model,
        stream,
        include_usage,
        max_output_tokens,
        prompt_bytes: messages_raw.get().len(),
        message_count: messages.len(),
        choices,
        object,
    })
}

/// Validates an embeddings request: `model`, and `input` as a string, strings or token arrays.
pub fn probe_embeddings(body: &[u8]) -> GatewayResult<RequestProbe<'_>> {
    let object = RawObject::parse(body)?;
    let model: Cow<'_, str> = object.required("model")?;
    let input = object
        .get("input")
        .ok_or_else(|| GatewayError::invalid_param("input", "missing required parameter `input`"))?;
    let valid = serde_json::from_str::<OneOrMany>(input.get()).is_ok()
        || serde_json::from_str::<Vec<Vec<u32>>>(input.get()).is_ok()
        || serde_json::from_str::<Vec<u32>>(input.get()).is_ok();
    if !valid {
        return Err(GatewayError::invalid_param(
            "input",
            "`input` must be a string, an array of strings, or token arrays",
        ));
    }
    Ok(RequestProbe {
        model,
        stream: false,
        include_usage: false,
        max_output_tokens: None,
        prompt_bytes: input.get().len(),
        message_count: 0,
        choices: 1,
        object,
    })
}

// ---- typed request (translation only) ----

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Option<OneOrMany>,
    #[serde(default)]
    pub tools: Option<Vec<ToolDefinition>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub n: Option<u64>,
    /// `minimal`, `low`, `medium`, `high` (reasoning models); Anthropic targets get a thinking budget.
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Every other field the caller sent. A translation reports the ones the target's API has no
    /// equivalent for in `x-tollgate-dropped-params` (README, "Translation").
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// A participant name; Anthropic has no equivalent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content, parts on their own lines (`"Be terse."` and `"Answer in French."` must not
    /// become `"Be terse.Answer in French."`); images and audio are skipped.
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => {
                parts.iter().filter_map(|part| part.text.as_deref()).collect::<Vec<_>>().join("\n")
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub image_url: Option<ImageUrl>,
    /// `{"type": "file", "file": {"file_data": "data:application/pdf;base64,…", "filename": …}}` or a
    /// `file_id` of OpenAI's file store.
    #[serde(default)]
    pub file: Option<FilePart>,
}

#[derive(Debug, Deserialize)]
pub struct FilePart {
    #[serde(default)]
    pub file_data: Option<String>,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Deserialize)]
pub struct ToolDefinition {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionDefinition,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

// ---- responses ----

#[derive(Debug, Deserialize, Default)]
pub struct UsageWire {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize, Default)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

impl UsageWire {
    pub fn to_usage(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cached_input_tokens: self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0),
            reasoning_tokens: self.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0),
            estimated: false,
        }
    }
}

/// Just the usage of a non-streamed response (same-protocol passthrough validates and meters with this),
/// and the reply text (borrowed unless escaped) for an estimate when the usage is missing.
#[derive(Debug, Deserialize)]
pub struct ResponseProbe<'a> {
    #[serde(default)]
    pub usage: Option<UsageWire>,
    #[serde(default, borrow)]
    pub choices: Vec<ChoiceProbe<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ChoiceProbe<'a> {
    #[serde(default, borrow)]
    pub message: Option<ReplyProbe<'a>>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ReplyProbe<'a> {
    #[serde(default, borrow)]
    pub content: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<UsageWire>,
}

#[derive(Debug, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub message: Option<ResponseMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ResponseMessage {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub refusal: Option<String>,
    /// Reasoning text of OpenAI-compatible servers (`reasoning_content`, or `reasoning`).
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub reasoning: Option<String>,
}

/// One `chat.completion.chunk` (or an `error` object a provider sends mid-stream).
#[derive(Debug, Deserialize, Default)]
pub struct Chunk {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<UsageWire>,
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ChunkChoice {
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    /// A refusal streamed instead of content: shown to Anthropic callers as the answer's text, as the
    /// non-streamed path does.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Reasoning text of OpenAI-compatible servers (vLLM, SGLang, DeepSeek: `reasoning_content`; others
    /// `reasoning`). Billed as output; Anthropic callers that enabled `thinking` get it as thinking blocks.
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub reasoning: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: usize,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reads_what_routing_needs() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":5,"seed":3}"#;
        let probe = probe_chat(body).map_err(|e| e.message).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(probe.model, "m");
        assert!(probe.stream && probe.include_usage);
        assert_eq!(probe.max_output_tokens, Some(5));
        assert_eq!(probe.message_count, 1);
    }

    #[test]
    fn probe_rejects_bad_shapes_with_the_field_named() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (br#"{"model":"m"}"#, "messages"),
            (br#"{"model":"m","messages":[]}"#, "messages"),
            (br#"{"model":"m","messages":"hi"}"#, "messages"),
            (br#"{"model":"m","messages":[{"role":"wizard"}]}"#, "role"),
            (br#"{"model":5,"messages":[{"role":"user"}]}"#, "model"),
            (br#"{"model":"m","messages":[{"role":"user"}],"max_tokens":"ten"}"#, "max_tokens"),
            (br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#, "stream"),
        ];
        for (body, field) in cases {
            let err = probe_chat(body).err().map(|e| e.message).unwrap_or_default();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
