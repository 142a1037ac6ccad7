//! Anthropic Messages API types: the hot-path probe and the typed structs used for translation.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::{RawObject, RequestProbe, Usage};
use crate::error::{GatewayError, GatewayResult};

/// Version header sent to Anthropic upstreams when the client gave none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

#[derive(Deserialize)]
struct MessageProbe<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[allow(dead_code)]
    #[serde(borrow)]
    content: &'a serde_json::value::RawValue,
}

/// Validates a Messages request the way Anthropic does: `model`, `messages` and `max_tokens` are required.
pub fn probe_messages(body: &[u8]) -> GatewayResult<RequestProbe<'_>> {
    probe_inner(body, true)
}

/// `count_tokens` takes the same body without `max_tokens`.
pub fn probe_count_tokens(body: &[u8]) -> GatewayResult<RequestProbe<'_>> {
    probe_inner(body, false)
}

fn probe_inner(body: &[u8], require_max_tokens: bool) -> GatewayResult<RequestProbe<'_>> {
    let object = RawObject::parse(body)?;
    let model: Cow<'_, str> = object.required("model")?;
    let messages_raw =
        object.get("messages").ok_or_else(|| GatewayError::invalid_param("messages", "messages: Field required"))?;
    let messages: Vec<MessageProbe<'_>> = serde_json::from_str(messages_raw.get()).map_err(|err| {
        GatewayError::invalid_param(
            "messages",
            format!("messages: expected a list of {{role, content}} objects: {err}"),
        )
    })?;
    if messages.is_empty() {
        return Err(GatewayError::invalid_param("messages", "messages: at least one message is required"));
    }
    if let Some((index, message)) = messages.iter().enumerate().find(|(_, m)| m.role != "user" && m.role != "assistant")
    {
        return Err(GatewayError::invalid_param(
            "messages",
            format!("messages.{index}.role: Input should be 'user' or 'assistant', got `{}`", message.role),
        ));
    }
    let max_output_tokens = if require_max_tokens {
        Some(
            object
                .field::<u64>("max_tokens")?
                .ok_or_else(|| GatewayError::invalid_param("max_tokens", "max_tokens: Field required"))?,
        )
    } else {
        None
    };
    let system_bytes = object.get("system").map_or(0, |raw| raw.get().len());
    if let Some(system) = object.get("system") {
        serde_json::from_str::<System>(system.get()).map_err(|err| {
            GatewayError::invalid_param("system", format!("system: expected a string or a list of text blocks: {err}"))
        })?;
    }
    let stream = object.field::<bool>("stream")?.unwrap_or(false);
    Ok(RequestProbe {
        model,
        // count_tokens answers once, whatever the body says.
        stream: stream && require_max_tokens,
        include_usage: false,
        max_output_tokens,
        choices: 1,
        prompt_bytes: messages_raw.get().len() + system_bytes,
        message_count: messages.len(),
        object,
    })
}

// ---- typed request (translation only) ----

#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub system: Option<System>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Extended thinking: `{"type": "enabled", "budget_tokens": N}` or `{"type": "disabled"}`.
    #[serde(default)]
    pub thinking: Option<Thinking>,
    /// Every other field the caller sent (`top_k`, …): reported in `x-tollgate-dropped-params` when the
    /// target's API has no equivalent.
    #[serde(flatten)]
    pub other: serde_json::Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct Thinking {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub budget_tokens: Option<u64>,
}

impl Thinking {
    pub fn enabled(&self) -> bool {
        self.kind == "enabled"
    }
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub user_id: Option<String>,
}

/// A string or a list of content blocks, as `system` and `tool_result.content` accept.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TextOrBlocks {
    Text(String),
    Blocks(Vec<Block>),
}

impl TextOrBlocks {
    /// The text blocks joined by newlines (images and other blocks are skipped).
    pub fn text(&self) -> String {
        match self {
            TextOrBlocks::Text(text) => text.clone(),
            TextOrBlocks::Blocks(blocks) => blocks
                .iter()
                .filter_map(|block| match block {
                    Block::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

pub type System = TextOrBlocks;
pub type ToolResultContent = TextOrBlocks;

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Option<ToolResultContent>,
        #[serde(default)]
        is_error: Option<bool>,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    /// A PDF or plain-text document.
    Document {
        source: DocumentSource,
        #[serde(default)]
        title: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DocumentSource {
    Base64 {
        media_type: String,
        data: String,
    },
    Text {
        data: String,
    },
    Url {
        url: String,
    },
    /// `file` (Anthropic's Files API), `content` blocks and whatever comes next.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub struct Tool {
    pub name: String,
    /// Server tools (`web_search_20250305`, `bash_20250124`, `text_editor_…`) carry a versioned type and
    /// run at Anthropic; client tools have none (or `custom`).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Value>,
}

// ---- responses ----

#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub struct UsageWire {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

impl UsageWire {
    /// Anthropic's `input_tokens` excludes cache reads and writes; the gateway meters all billed input.
    pub fn to_usage(self) -> Usage {
        let cache_read = self.cache_read_input_tokens.unwrap_or(0);
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0) + cache_read + self.cache_creation_input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: cache_read,
            reasoning_tokens: 0,
            estimated: false,
        }
    }

    /// Streams split usage: input in `message_start`, cumulative output in `message_delta`. A later field
    /// that is present replaces the earlier one; an absent field keeps it (sum, never overwrite with zero).
    pub fn merge(&mut self, later: UsageWire) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later.cache_creation_input_tokens.or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later.cache_read_input_tokens.or(self.cache_read_input_tokens);
    }
}

#[derive(Debug, Deserialize)]
pub struct MessageResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<Block>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: Option<UsageWire>,
}

/// Just the usage, for metering a passthrough response.
#[derive(Debug, Deserialize)]
pub struct ResponseProbe {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub usage: Option<UsageWire>,
    #[serde(default)]
    pub content: Vec<Block>,
    #[serde(default)]
    pub stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: Block,
    },
    ContentBlockDelta {
        index: usize,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<UsageWire>,
    },
    MessageStop,
    Ping,
    Error {
        error: Value,
    },
    /// Event types added after this was written are skipped, as Anthropic asks clients to do.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Deserialize)]
pub struct StartMessage {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub usage: Option<UsageWire>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    /// Extended thinking: billed as output, not forwarded to OpenAI callers.
    ThinkingDelta {
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
pub struct MessageDeltaBody {
    #[serde(default)]
    pub stop_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_requires_max_tokens_like_anthropic() {
        let err = probe_messages(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(err.contains("max_tokens"));
        assert!(probe_count_tokens(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).is_ok());
    }

    #[test]
    fn probe_rejects_empty_messages() {
        assert!(probe_messages(br#"{"model":"m","max_tokens":5,"messages":[]}"#).is_err());
    }

    #[test]
    fn probe_rejects_system_role_in_messages() {
        let body = br#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#;
        assert!(probe_messages(body).is_err());
    }

    #[test]
    fn usage_merge_keeps_input_from_message_start() {
        let mut usage = UsageWire { input_tokens: Some(12), output_tokens: Some(1), ..Default::default() };
        usage.merge(UsageWire { output_tokens: Some(30), ..Default::default() });
        let total = usage.to_usage();
        assert_eq!((total.input_tokens, total.output_tokens), (12, 30));
    }

    #[test]
    fn unknown_block_types_are_tolerated() {
        let content: Content =
            serde_json::from_str(r#"[{"type":"text","text":"a"},{"type":"server_tool_use","id":"x"}]"#)
                .unwrap_or(Content::Text(String::new()));
        assert!(matches!(content, Content::Blocks(ref blocks) if blocks.len() == 2));
    }
}
