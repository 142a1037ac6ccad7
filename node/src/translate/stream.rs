//! Streaming translation, one SSE event at a time. Each translator sees complete upstream events (the
//! parser in `sse.rs` buffers partial ones) and writes complete events for the caller. It tracks whether the
//! upstream finished properly: only an upstream `[DONE]` / `message_stop` lets the caller's stream finish
//! normally; anything else ends it with an explicit error event (see `proxy::body`).

use bytes::BytesMut;
use serde_json::{json, Value};

use super::response::{openai_id, openai_usage_json, unix_now};
use crate::api::anthropic::{self, BlockDelta, StreamEvent};
use crate::api::{FinishReason, Protocol, Usage};
use crate::error::GatewayError;
use crate::sse::SseEvent;

/// What every translator learns while a stream passes through.
#[derive(Debug, Default)]
pub struct StreamFacts {
    /// Usage as far as the provider has reported it (Anthropic sends input in `message_start`, output in
    /// `message_delta`).
    pub usage: Option<Usage>,
    /// `usage` holds the provider's final counts. Until then the output count is only a lower bound: a
    /// stream that ends without them is settled as unknown (see `proxy::meter`).
    pub usage_final: bool,
    /// Everything generated so far — text, tool-call arguments, reasoning — kept for a local token count
    /// when the provider reports no final usage.
    pub text: String,
    /// The upstream sent its terminal event.
    pub complete: bool,
    /// Why the model stopped, as the provider said it (`stop`, `end_turn`, `tool_calls`…), once said.
    pub finish_reason: Option<String>,
}

#[derive(Debug)]
pub enum StreamTranslator {
    OpenAiPassthrough(OpenAiPassthrough),
    AnthropicPassthrough(AnthropicPassthrough),
    AnthropicToOpenAi(AnthropicToOpenAi),
    OpenAiToAnthropic(OpenAiToAnthropic),
}

impl StreamFacts {
    /// The provider's final usage, if the stream got that far.
    pub fn final_usage(&self) -> Option<Usage> {
        self.usage.filter(|_| self.usage_final)
    }

    fn set_final(&mut self, usage: Usage) {
        self.usage = Some(usage);
        self.usage_final = true;
    }
}

impl StreamTranslator {
    /// `include_usage`: the OpenAI caller asked for the final usage chunk.
    pub fn new(upstream: Protocol, caller: Protocol, include_usage: bool) -> Self {
        match (upstream, caller) {
            (Protocol::OpenAi, Protocol::OpenAi) => {
                StreamTranslator::OpenAiPassthrough(OpenAiPassthrough { include_usage, facts: StreamFacts::default() })
            }
            (Protocol::Anthropic, Protocol::Anthropic) => {
                StreamTranslator::AnthropicPassthrough(AnthropicPassthrough::default())
            }
            (Protocol::Anthropic, Protocol::OpenAi) => {
                StreamTranslator::AnthropicToOpenAi(AnthropicToOpenAi { include_usage, ..Default::default() })
            }
            (Protocol::OpenAi, Protocol::Anthropic) => {
                StreamTranslator::OpenAiToAnthropic(OpenAiToAnthropic::default())
            }
        }
    }

    /// Whether the upstream's reasoning reaches the caller: an OpenAI→Anthropic stream shows it as thinking
    /// blocks only to a caller that enabled thinking (Anthropic's own behaviour). Anthropic thinking always
    /// reaches OpenAI callers as `reasoning_content` (it is only on when they set `reasoning_effort`).
    pub fn with_reasoning(mut self, show: bool) -> Self {
        if let StreamTranslator::OpenAiToAnthropic(translator) = &mut self {
            translator.show_reasoning = show;
        }
        self
    }

    /// The prompt's token count by the gateway's tokenizer, for translators that must announce it before
    /// the provider reports its own: Anthropic's `message_start` carries `input_tokens`, and older SDKs
    /// read it only there.
    pub fn with_input_tokens(mut self, input_tokens: u64) -> Self {
        if let StreamTranslator::OpenAiToAnthropic(translator) = &mut self {
            translator.input_tokens = input_tokens;
        }
        self
    }

    /// Whether [`with_input_tokens`](Self::with_input_tokens) is used: only OpenAI upstream → Anthropic caller.
    pub fn announces_input_tokens(upstream: Protocol, caller: Protocol) -> bool {
        upstream == Protocol::OpenAi && caller == Protocol::Anthropic
    }

    /// Handles one upstream event, appending zero or more caller events to `out`.
    /// `estimate` fills in usage at the end of a stream whose provider reported none.
    pub fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut BytesMut,
        estimate: &dyn Fn(&str) -> Usage,
    ) -> Result<(), GatewayError> {
        if self.facts().complete {
            return Ok(()); // Nothing may follow the terminal event.
        }
        match self {
            StreamTranslator::OpenAiPassthrough(t) => t.on_event(event, out),
            StreamTranslator::AnthropicPassthrough(t) => t.on_event(event, out),
            StreamTranslator::AnthropicToOpenAi(t) => t.on_event(event, out),
            StreamTranslator::OpenAiToAnthropic(t) => t.on_event(event, out, estimate),
        }
    }

    pub fn facts(&self) -> &StreamFacts {
        match self {
            StreamTranslator::OpenAiPassthrough(t) => &t.facts,
            StreamTranslator::AnthropicPassthrough(t) => &t.facts,
            StreamTranslator::AnthropicToOpenAi(t) => &t.facts,
            StreamTranslator::OpenAiToAnthropic(t) => &t.facts,
        }
    }
}

fn malformed(err: serde_json::Error) -> GatewayError {
    GatewayError::upstream_invalid(format!("upstream sent a malformed stream event: {err}"))
}

/// An error the provider reported inside the stream, kept in its own shape for same-protocol callers.
fn upstream_stream_error(protocol: Protocol, data: &[u8], error: &Value) -> GatewayError {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("upstream reported an error mid-stream");
    let status = match error.get("type").and_then(Value::as_str) {
        Some("rate_limit_error") => 429,
        Some("overloaded_error") => 529,
        _ => 500,
    };
    let body = bytes::Bytes::copy_from_slice(data);
    GatewayError::upstream_status(status, format!("upstream error mid-stream: {message}"))
        .with_upstream_body(protocol, body)
}

/// One SSE event's data. An event whose data spans several lines (an upstream may split its JSON over
/// several `data:` lines, which the parser joins with newlines) keeps one `data:` field per line: a raw
/// newline inside a single field would end it, and the rest would reach the client as garbage.
fn write_data(out: &mut BytesMut, data: &[u8]) {
    for line in data.split(|byte| *byte == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

fn write_json_data(out: &mut BytesMut, value: &Value) {
    write_data(out, value.to_string().as_bytes());
}

fn write_named(out: &mut BytesMut, name: &str, value: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    write_json_data(out, value);
}

// ---- OpenAI → OpenAI ----

/// What the passthrough needs from a chunk. Text borrows from the event where it has no escapes, and
/// everything else (ids, model, tool-call deltas, logprobs) is skipped without allocating: the event itself
/// is forwarded byte for byte.
#[derive(serde::Deserialize)]
struct PassthroughChunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<PassthroughChoice<'a>>,
    #[serde(default)]
    usage: Option<crate::api::openai::UsageWire>,
    #[serde(default, borrow)]
    error: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct PassthroughChoice<'a> {
    #[serde(default, borrow)]
    delta: PassthroughDelta<'a>,
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize, Default)]
struct PassthroughDelta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    /// Reasoning text some OpenAI-compatible servers stream (vLLM, SGLang, DeepSeek: `reasoning_content`;
    /// others `reasoning`): generated and billed like content.
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<PassthroughToolCall<'a>>>,
}

#[derive(serde::Deserialize)]
struct PassthroughToolCall<'a> {
    #[serde(default, borrow)]
    function: Option<PassthroughFunction<'a>>,
}

#[derive(serde::Deserialize)]
struct PassthroughFunction<'a> {
    #[serde(default, borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Debug)]
pub struct OpenAiPassthrough {
    include_usage: bool,
    facts: StreamFacts,
}

impl OpenAiPassthrough {
    fn on_event(&mut self, event: &SseEvent, out: &mut BytesMut) -> Result<(), GatewayError> {
        if &event.data[..] == b"[DONE]" {
            self.facts.complete = true;
            write_data(out, b"[DONE]");
            return Ok(());
        }
        let chunk: PassthroughChunk<'_> = serde_json::from_slice(&event.data).map_err(malformed)?;
        if let Some(error) = chunk.error {
            let error: Value = serde_json::from_str(error.get()).map_err(malformed)?;
            if !error.is_null() {
                return Err(upstream_stream_error(Protocol::OpenAi, &event.data, &error));
            }
        }
        for choice in &chunk.choices {
            if let Some(reason) = &choice.finish_reason {
                self.facts.finish_reason = Some(reason.to_string());
            }
            let delta = &choice.delta;
            for text in [&delta.content, &delta.reasoning_content, &delta.reasoning].into_iter().flatten() {
                self.facts.text.push_str(text);
            }
            for call in delta.tool_calls.iter().flatten() {
                if let Some(function) = &call.function {
                    for text in [&function.name, &function.arguments].into_iter().flatten() {
                        self.facts.text.push_str(text);
                    }
                }
            }
        }
        if let Some(usage) = &chunk.usage {
            // OpenAI sends usage once, in the last chunk before `[DONE]`: it is final.
            self.facts.set_final(usage.to_usage());
            // The gateway always asks for usage; a client that did not gets no usage-only chunk.
            if chunk.choices.is_empty() && !self.include_usage {
                return Ok(());
            }
        }
        write_data(out, &event.data);
        Ok(())
    }
}

// ---- Anthropic → Anthropic ----

#[derive(Debug, Default)]
pub struct AnthropicPassthrough {
    usage: anthropic::UsageWire,
    saw_usage: bool,
    facts: StreamFacts,
}

impl AnthropicPassthrough {
    fn on_event(&mut self, event: &SseEvent, out: &mut BytesMut) -> Result<(), GatewayError> {
        let parsed: StreamEvent = serde_json::from_slice(&event.data).map_err(malformed)?;
        match &parsed {
            // `message_start` carries the input count and a placeholder output count (often 1): only
            // `message_delta` has the final output.
            StreamEvent::MessageStart { message } => self.merge_usage(message.usage, false),
            StreamEvent::MessageDelta { usage, delta } => {
                if let Some(reason) = &delta.stop_reason {
                    self.facts.finish_reason = Some(reason.clone());
                }
                self.merge_usage(*usage, true);
            }
            StreamEvent::ContentBlockDelta { delta, .. } => collect_generated(delta, &mut self.facts.text),
            StreamEvent::MessageStop => self.facts.complete = true,
            StreamEvent::Error { error } => {
                return Err(upstream_stream_error(Protocol::Anthropic, &event.data, error));
            }
            _ => {}
        }
        event.write_to(out);
        Ok(())
    }

    fn merge_usage(&mut self, usage: Option<anthropic::UsageWire>, last: bool) {
        if let Some(usage) = usage {
            self.usage.merge(usage);
            self.saw_usage = true;
            self.facts.usage = Some(self.usage.to_usage());
            self.facts.usage_final |= last;
        }
    }
}

/// Generated text of an Anthropic content delta (text, tool input, thinking), for a local count.
fn collect_generated(delta: &BlockDelta, text: &mut String) {
    match delta {
        BlockDelta::TextDelta { text: part } => text.push_str(part),
        BlockDelta::InputJsonDelta { partial_json } => text.push_str(partial_json),
        BlockDelta::ThinkingDelta { thinking } => text.push_str(thinking),
        BlockDelta::Other => {}
    }
}

// ---- Anthropic upstream → OpenAI caller ----

#[derive(Debug, Default)]
pub struct AnthropicToOpenAi {
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    usage: anthropic::UsageWire,
    saw_usage: bool,
    finish: Option<FinishReason>,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_indexes: Vec<(usize, usize)>,
    facts: StreamFacts,
}

impl AnthropicToOpenAi {
    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        })
    }

    fn on_event(&mut self, event: &SseEvent, out: &mut BytesMut) -> Result<(), GatewayError> {
        let parsed: StreamEvent = serde_json::from_slice(&event.data).map_err(malformed)?;
        match parsed {
            StreamEvent::MessageStart { message } => {
                self.id = openai_id(&message.id);
                self.model = message.model;
                self.created = unix_now();
                if let Some(usage) = message.usage {
                    self.usage.merge(usage);
                    self.saw_usage = true;
                    self.facts.usage = Some(self.usage.to_usage());
                }
                write_json_data(out, &self.chunk(json!({"role": "assistant", "content": ""}), Value::Null));
            }
            StreamEvent::ContentBlockStart { index, content_block: anthropic::Block::ToolUse { id, name, .. } } => {
                let tool_index = self.tool_indexes.len();
                self.tool_indexes.push((index, tool_index));
                let delta = json!({"tool_calls": [{
                    "index": tool_index, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""},
                }]});
                write_json_data(out, &self.chunk(delta, Value::Null));
            }
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => {
                    self.facts.text.push_str(&text);
                    write_json_data(out, &self.chunk(json!({"content": text}), Value::Null));
                }
                BlockDelta::ThinkingDelta { thinking } => {
                    self.facts.text.push_str(&thinking);
                    write_json_data(out, &self.chunk(json!({"reasoning_content": thinking}), Value::Null));
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    self.facts.text.push_str(&partial_json);
                    let tool_index =
                        self.tool_indexes.iter().find(|(block, _)| *block == index).map(|(_, tool)| *tool).ok_or_else(
                            || GatewayError::upstream_invalid("upstream sent tool input for an unknown content block"),
                        )?;
                    let delta = json!({"tool_calls": [{"index": tool_index, "function": {"arguments": partial_json}}]});
                    write_json_data(out, &self.chunk(delta, Value::Null));
                }
                BlockDelta::Other => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                self.finish = delta.stop_reason.as_deref().map(FinishReason::from_anthropic);
                self.facts.finish_reason.clone_from(&delta.stop_reason);
                if let Some(usage) = usage {
                    self.usage.merge(usage);
                    self.saw_usage = true;
                    self.facts.set_final(self.usage.to_usage());
                }
            }
            StreamEvent::MessageStop => {
                let finish = self.finish.unwrap_or(FinishReason::Stop);
                write_json_data(out, &self.chunk(json!({}), json!(finish.openai())));
                if self.saw_usage {
                    let usage = self.usage.to_usage();
                    if self.include_usage {
                        let chunk = json!({
                            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                            "model": self.model, "choices": [], "usage": openai_usage_json(&usage),
                        });
                        write_json_data(out, &chunk);
                    }
                }
                write_data(out, b"[DONE]");
                self.facts.complete = true;
            }
            StreamEvent::Error { error } => {
                return Err(upstream_stream_error(Protocol::Anthropic, &event.data, &error));
            }
            StreamEvent::ContentBlockStart { .. }
            | StreamEvent::ContentBlockStop { .. }
            | StreamEvent::Ping
            | StreamEvent::Unknown => {}
        }
        Ok(())
    }
}

#[path = "stream_to_anthropic.rs"]
mod to_anthropic;
pub use to_anthropic::OpenAiToAnthropic;

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
