//! OpenAI upstream → Anthropic caller: chunks become Anthropic's event sequence (message_start, contiguous
//! content blocks, message_delta, message_stop), tool calls included.

use bytes::BytesMut;
use serde_json::{json, Value};

use super::{malformed, upstream_stream_error, write_named, StreamFacts};
use crate::api::openai::{self, Chunk};
use crate::api::{FinishReason, Protocol, Usage};
use crate::error::GatewayError;
use crate::sse::SseEvent;
use crate::translate::response::{anthropic_id, anthropic_usage_json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Thinking,
    Text,
    Tool(usize),
}

/// A tool call that cannot stream live yet: another tool's block is open, and Anthropic blocks must be
/// contiguous (an OpenAI stream may alternate argument chunks of calls 0, 1, 0, 1). Emitted whole, as one
/// block, when the stream ends.
#[derive(Debug)]
struct PendingTool {
    index: usize,
    id: String,
    name: String,
    arguments: String,
}

#[derive(Debug, Default)]
pub struct OpenAiToAnthropic {
    started: bool,
    id: String,
    model: String,
    next_block: usize,
    open: Option<OpenBlock>,
    /// OpenAI tool indexes that got a block of their own (live): never a second one.
    streamed_tools: Vec<usize>,
    pending_tools: Vec<PendingTool>,
    /// Text that arrived while a tool block was open: emitted as one text block at the end.
    pending_text: String,
    /// The prompt's count, announced in `message_start` (the provider's arrives only at the end).
    pub(super) input_tokens: u64,
    finish: Option<FinishReason>,
    /// The caller enabled thinking: reasoning text becomes thinking blocks.
    pub(super) show_reasoning: bool,
    pub(super) facts: StreamFacts,
}

impl OpenAiToAnthropic {
    pub(super) fn on_event(
        &mut self,
        event: &SseEvent,
        out: &mut BytesMut,
        estimate: &dyn Fn(&str) -> Usage,
    ) -> Result<(), GatewayError> {
        if &event.data[..] == b"[DONE]" {
            self.start(out);
            self.close_block(out);
            self.flush_pending(out);
            let usage = match self.facts.usage {
                Some(usage) => usage,
                None => estimate(&self.facts.text),
            };
            let finish = self.finish.unwrap_or(FinishReason::Stop);
            let mut usage_json = anthropic_usage_json(Some(&usage));
            if let Some(object) = usage_json.as_object_mut() {
                object.retain(|key, _| key != "cache_creation_input_tokens");
            }
            write_named(
                out,
                "message_delta",
                &json!({"type": "message_delta", "delta": {"stop_reason": finish.anthropic(), "stop_sequence": null}, "usage": usage_json}),
            );
            write_named(out, "message_stop", &json!({"type": "message_stop"}));
            self.facts.complete = true;
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_slice(&event.data).map_err(malformed)?;
        if let Some(error) = &chunk.error {
            return Err(upstream_stream_error(Protocol::OpenAi, &event.data, error));
        }
        if self.id.is_empty() {
            self.id = anthropic_id(chunk.id.as_deref().unwrap_or("gateway"));
            self.model = chunk.model.clone().unwrap_or_default();
        }
        self.start(out);
        if let Some(usage) = &chunk.usage {
            self.facts.set_final(usage.to_usage());
        }
        for choice in chunk.choices {
            for reasoning in [choice.delta.reasoning_content, choice.delta.reasoning].into_iter().flatten() {
                self.facts.text.push_str(&reasoning);
                if self.show_reasoning && !reasoning.is_empty() {
                    self.on_reasoning(out, &reasoning);
                }
            }
            for text in [choice.delta.content, choice.delta.refusal].into_iter().flatten().filter(|t| !t.is_empty()) {
                self.facts.text.push_str(&text);
                self.on_text(out, &text);
            }
            for call in choice.delta.tool_calls.unwrap_or_default() {
                self.on_tool_delta(out, call);
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(FinishReason::from_openai(&reason));
                self.facts.finish_reason = Some(reason.clone());
            }
        }
        Ok(())
    }

    /// Reasoning streams into a thinking block (with an empty signature: the gateway cannot sign). It comes
    /// before the answer; reasoning that arrives while a tool block is open is billed but not shown, as
    /// Anthropic blocks cannot interleave.
    fn on_reasoning(&mut self, out: &mut BytesMut, reasoning: &str) {
        match self.open {
            Some(OpenBlock::Tool(_)) => return,
            Some(OpenBlock::Thinking) => {}
            Some(OpenBlock::Text) | None => {
                self.close_block(out);
                self.open_block(out, OpenBlock::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}));
            }
        }
        let index = self.next_block - 1;
        write_named(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": reasoning}}),
        );
    }

    fn on_text(&mut self, out: &mut BytesMut, text: &str) {
        match self.open {
            Some(OpenBlock::Thinking) => {
                self.close_block(out);
                self.open_block(out, OpenBlock::Text, json!({"type": "text", "text": ""}));
            }
            Some(OpenBlock::Tool(_)) => self.pending_text.push_str(text),
            Some(OpenBlock::Text) => {}
            None => self.open_block(out, OpenBlock::Text, json!({"type": "text", "text": ""})),
        }
        if self.open == Some(OpenBlock::Text) {
            let index = self.next_block - 1;
            write_named(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            );
        }
    }

    /// One tool-call chunk: streamed live into its own block when that block is open or none is, else
    /// buffered whole until the end (see [`PendingTool`]).
    fn on_tool_delta(&mut self, out: &mut BytesMut, call: openai::ToolCallDelta) {
        let (name, arguments) = match call.function {
            Some(function) => (function.name, function.arguments.unwrap_or_default()),
            None => (None, String::new()),
        };
        self.facts.text.push_str(&arguments);
        let live = self.open == Some(OpenBlock::Tool(call.index));
        let can_open = !live
            && !matches!(self.open, Some(OpenBlock::Tool(_)))
            && !self.streamed_tools.contains(&call.index)
            && !self.pending_tools.iter().any(|p| p.index == call.index);
        if can_open {
            self.close_block(out);
            let id = call.id.clone().unwrap_or_else(|| format!("toolu_{}", call.index));
            let block = json!({"type": "tool_use", "id": id, "name": name.clone().unwrap_or_default(), "input": {}});
            self.open_block(out, OpenBlock::Tool(call.index), block);
            self.streamed_tools.push(call.index);
        }
        if live || can_open {
            if !arguments.is_empty() {
                let index = self.next_block - 1;
                write_named(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                );
            }
            return;
        }
        match self.pending_tools.iter_mut().find(|p| p.index == call.index) {
            Some(pending) => {
                pending.arguments.push_str(&arguments);
                if pending.name.is_empty() {
                    pending.name = name.unwrap_or_default();
                }
            }
            None => self.pending_tools.push(PendingTool {
                index: call.index,
                id: call.id.unwrap_or_else(|| format!("toolu_{}", call.index)),
                name: name.unwrap_or_default(),
                arguments,
            }),
        }
    }

    /// At the end of the stream: buffered text, then buffered tool calls in index order, each one block.
    fn flush_pending(&mut self, out: &mut BytesMut) {
        if !self.pending_text.is_empty() {
            let text = std::mem::take(&mut self.pending_text);
            self.open_block(out, OpenBlock::Text, json!({"type": "text", "text": ""}));
            let index = self.next_block - 1;
            write_named(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            );
            self.close_block(out);
        }
        let mut pending = std::mem::take(&mut self.pending_tools);
        pending.sort_by_key(|tool| tool.index);
        for tool in pending {
            let block = json!({"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}});
            self.open_block(out, OpenBlock::Tool(tool.index), block);
            if !tool.arguments.is_empty() {
                let index = self.next_block - 1;
                write_named(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": tool.arguments}}),
                );
            }
            self.close_block(out);
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "type": "message_start",
            "message": {
                "id": if self.id.is_empty() { "msg_gateway".to_owned() } else { self.id.clone() },
                "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
            },
        });
        write_named(out, "message_start", &message);
    }

    fn open_block(&mut self, out: &mut BytesMut, kind: OpenBlock, content_block: Value) {
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(kind);
        write_named(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": content_block}),
        );
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if self.open.take().is_some() {
            let index = self.next_block - 1;
            write_named(out, "content_block_stop", &json!({"type": "content_block_stop", "index": index}));
        }
    }
}
