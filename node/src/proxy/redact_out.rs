//! Guardrails on the way out: the PII guardrails with action `redact` that apply to a request (its route's
//! and its org's) rewrite the model's text before the caller sees it.
//!
//! - A complete response: every text the caller reads (OpenAI `choices[].message.content`, Anthropic
//!   `content[].text`) is redacted whole.
//! - A stream: the caller-shaped events are filtered as they leave. Each text stream (an OpenAI choice, an
//!   Anthropic content block) has its own [`StreamRedactor`], which holds back only a bounded tail (an
//!   entity may still be arriving) and releases it when the choice finishes (`finish_reason`) or the block
//!   stops (`content_block_stop`, preceded by one more `text_delta` with what was held). A match split
//!   across events is still caught; nothing beyond the tail is buffered.
//!
//! Metering counts what the model generated (before redaction), as the provider bills it.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::{guardrails, RequestContext, Routed};
use crate::api::Protocol;
use crate::guard::{Check, GuardrailAction, PiiDetector, StreamRedactor};
use crate::sse::{SseEvent, SseParser};

/// The redacting detectors for one request's output (in the order its guardrails are listed).
#[derive(Clone)]
pub(super) struct OutputRedaction {
    detectors: Vec<PiiDetector>,
}

impl OutputRedaction {
    /// `None` when no PII guardrail with action `redact` applies.
    pub fn for_request(context: &RequestContext, routed: &Routed<'_>) -> Option<OutputRedaction> {
        let detectors: Vec<PiiDetector> = guardrails::applicable(context, routed)
            .iter()
            .filter(|guardrail| guardrail.action == GuardrailAction::Redact)
            .filter_map(|guardrail| match &guardrail.check {
                Check::Pii(detector) => Some(detector.clone()),
                Check::Injection(_) => None,
            })
            .collect();
        (!detectors.is_empty()).then_some(OutputRedaction { detectors })
    }

    fn redact(&self, text: &str) -> String {
        self.detectors.iter().fold(text.to_owned(), |text, detector| detector.redact(&text).text)
    }

    /// A complete chat response in the caller's shape, its texts redacted. A body that is not the expected
    /// JSON is returned unchanged (the translators produced it; they do not produce anything else).
    pub fn complete(&self, caller: Protocol, body: Bytes) -> Bytes {
        let Ok(mut value) = serde_json::from_slice::<Value>(&body) else { return body };
        let texts: Vec<&mut Value> = match caller {
            Protocol::OpenAi => value
                .get_mut("choices")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(|choice| choice.pointer_mut("/message/content"))
                .collect(),
            Protocol::Anthropic => value
                .get_mut("content")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|block| block.get_mut("text"))
                .collect(),
        };
        for text in texts {
            if let Value::String(content) = text {
                *content = self.redact(content);
            }
        }
        serde_json::to_vec(&value).map(Bytes::from).unwrap_or(body)
    }

    pub fn stream(&self, caller: Protocol) -> SseRedaction {
        SseRedaction { caller, detectors: self.detectors.clone(), parser: SseParser::new(), open: HashMap::new() }
    }
}

/// Filters one response stream's caller-shaped SSE output; see the module docs.
pub(super) struct SseRedaction {
    caller: Protocol,
    detectors: Vec<PiiDetector>,
    /// Our own translated output, re-read event by event (it is always whole events).
    parser: SseParser,
    /// One chain of redactors per open text stream (choice or content block index).
    open: HashMap<u64, Vec<StreamRedactor>>,
}

impl SseRedaction {
    /// Rewrites the events in `input` into `out`.
    pub fn filter(&mut self, input: &[u8], out: &mut BytesMut) {
        self.parser.push(input);
        while let Ok(Some(event)) = self.parser.next_event() {
            match self.caller {
                Protocol::OpenAi => self.openai_event(event, out),
                Protocol::Anthropic => self.anthropic_event(event, out),
            }
        }
    }

    fn push(&mut self, index: u64, text: &str) -> String {
        let detectors = &self.detectors;
        let chain =
            self.open.entry(index).or_insert_with(|| detectors.iter().cloned().map(StreamRedactor::new).collect());
        chain.iter_mut().fold(text.to_owned(), |text, redactor| redactor.push(&text))
    }

    /// What the text stream `index` still holds, redacted (each redactor's rest goes through the next).
    fn finish(&mut self, index: u64) -> String {
        let Some(mut chain) = self.open.remove(&index) else { return String::new() };
        let mut carried = String::new();
        for redactor in &mut chain {
            let mut released = redactor.push(&carried);
            released.push_str(&redactor.finish());
            carried = released;
        }
        carried
    }

    fn openai_event(&mut self, event: SseEvent, out: &mut BytesMut) {
        let Ok(mut chunk) = serde_json::from_slice::<Value>(&event.data) else {
            return event.write_to(out); // `[DONE]`
        };
        let mut changed = false;
        for choice in chunk.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let content = choice.pointer("/delta/content").and_then(Value::as_str).map(str::to_owned);
            let finished = choice.get("finish_reason").is_some_and(|reason| !reason.is_null());
            if content.is_none() && !(finished && self.open.contains_key(&index)) {
                continue;
            }
            let mut text = content.map_or_else(String::new, |content| self.push(index, &content));
            if finished {
                text.push_str(&self.finish(index));
            }
            if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                delta.insert("content".into(), Value::String(text));
                changed = true;
            }
        }
        if !changed {
            return event.write_to(out);
        }
        // A chunk whose only news was text now held back says nothing: not sent.
        let said_nothing = chunk.get("usage").is_none_or(Value::is_null)
            && chunk["choices"].as_array().is_some_and(|choices| {
                choices.iter().all(|choice| {
                    choice["finish_reason"].is_null()
                        && choice["delta"].as_object().is_some_and(|delta| {
                            delta.len() == 1 && delta.get("content").and_then(Value::as_str) == Some("")
                        })
                })
            });
        if !said_nothing {
            write_json(event.event, &chunk, out);
        }
    }

    fn anthropic_event(&mut self, event: SseEvent, out: &mut BytesMut) {
        let Ok(mut value) = serde_json::from_slice::<Value>(&event.data) else { return event.write_to(out) };
        let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
        match value.get("type").and_then(Value::as_str) {
            Some("content_block_delta")
                if value.pointer("/delta/type").and_then(Value::as_str) == Some("text_delta") =>
            {
                let text = value.pointer("/delta/text").and_then(Value::as_str).unwrap_or_default().to_owned();
                let released = self.push(index, &text);
                // Everything still held back: nothing to send yet.
                if released.is_empty() {
                    return;
                }
                if let Some(slot) = value.pointer_mut("/delta/text") {
                    *slot = Value::String(released);
                }
                write_json(event.event, &value, out);
            }
            Some("content_block_stop") if self.open.contains_key(&index) => {
                let rest = self.finish(index);
                if !rest.is_empty() {
                    let delta = serde_json::json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": rest}});
                    write_json(Some(Bytes::from_static(b"content_block_delta")), &delta, out);
                }
                event.write_to(out);
            }
            _ => event.write_to(out),
        }
    }
}

fn write_json(name: Option<Bytes>, value: &Value, out: &mut BytesMut) {
    let data = serde_json::to_vec(value).map(Bytes::from).unwrap_or_default();
    SseEvent { event: name, data }.write_to(out);
}
