//! Prompt and completion text on the request's trace span, for routes that opt in (`trace_content = true`
//! on the model; issue 19). Without it no span and no log line carries a word of either.
//!
//! Attributes, as the OpenTelemetry GenAI conventions shape them (JSON strings): `gen_ai.input.messages`
//! (`[{"role", "parts": [{"type": "text", "content"}]}]`), `gen_ai.system_instructions` (an Anthropic
//! `system`), and `gen_ai.output.messages` (one assistant message with its `finish_reason`; for a stream, the
//! text assembled from its deltas, reasoning and tool-call arguments included). Parts that are not text
//! (images, tool calls) keep their type only.
//!
//! Every text goes through the secret detectors (API keys, secrets next to a key word, private keys, JWTs)
//! and through every PII guardrail that applies to the request (the route's and the org's, whatever their
//! action) before it is cut: a secret is never half-kept. Then each attribute's text is capped at
//! [`CAP_BYTES`] (the newest messages kept first), and a cut sets `tollgate.trace_content.truncated`. The
//! text goes to the exported span only, never to the access log.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use super::{guardrails, Endpoint, RequestContext, Routed};
use crate::api::Protocol;
use crate::guard::{Check, EntityKind, PiiDetector, Replacement};
use crate::trace_span::TraceSpan;

/// The most text bytes one attribute records.
pub const CAP_BYTES: usize = 16 * 1024;

/// What always comes out of recorded text, guardrail or not.
const SECRET_KINDS: [EntityKind; 4] = [EntityKind::ApiKey, EntityKind::Secret, EntityKind::PrivateKey, EntityKind::Jwt];

/// The span and the detectors of one opted-in request.
#[derive(Clone)]
pub(super) struct ContentCapture {
    span: TraceSpan,
    detectors: Arc<[PiiDetector]>,
}

/// One message: its role and its parts (text, or the type of a part that is not text).
struct Message {
    role: String,
    parts: Vec<Part>,
}

enum Part {
    Text(String),
    Other(String),
}

impl ContentCapture {
    /// `None` unless the route opted in, the span is exported and the request is a chat.
    pub fn for_request(context: &RequestContext, routed: &Routed<'_>) -> Option<ContentCapture> {
        if !routed.route.trace_content
            || !matches!(context.endpoint, Endpoint::ChatCompletions | Endpoint::Messages)
            || !context.span.exports()
        {
            return None;
        }
        // Fails closed: without the secret detector, nothing is recorded.
        let secrets = secret_detector()?;
        let mut detectors = vec![secrets.clone()];
        for guardrail in guardrails::applicable(context, routed) {
            if let Check::Pii(detector) = &guardrail.check {
                detectors.push(detector.clone());
            }
        }
        Some(ContentCapture { span: context.span.clone(), detectors: detectors.into() })
    }

    /// The prompt (`body` is what the provider gets: after input redaction).
    pub fn input(&self, caller_body: &[u8], endpoint: Endpoint) {
        let Ok(body) = serde_json::from_slice::<Value>(caller_body) else { return };
        let messages = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let messages: Vec<Message> = messages.iter().map(message).collect();
        self.record_messages("gen_ai.input.messages", messages, None);
        if endpoint == Endpoint::Messages {
            if let Some(system) = body.get("system").map(parts).filter(|parts| !parts.is_empty()) {
                let (kept, truncated) = self.capped(vec![Message { role: "system".into(), parts: system }]);
                let parts = kept.iter().flat_map(|message| message.parts.iter()).map(part_json).collect();
                self.record("gen_ai.system_instructions", parts, truncated);
            }
        }
    }

    /// A complete answer in the caller's shape (after output redaction).
    pub fn output_body(&self, caller: Protocol, body: &[u8]) {
        let Ok(body) = serde_json::from_slice::<Value>(body) else { return };
        let (parts, finish_reason) = match caller {
            Protocol::OpenAi => {
                let choice = body.pointer("/choices/0");
                let content = choice.and_then(|c| c.pointer("/message/content")).map(parts).unwrap_or_default();
                (content, choice.and_then(|c| c.get("finish_reason")).and_then(Value::as_str))
            }
            Protocol::Anthropic => {
                let content = body.get("content").map(parts).unwrap_or_default();
                (content, body.get("stop_reason").and_then(Value::as_str))
            }
        };
        let message = Message { role: "assistant".into(), parts };
        self.record_messages("gen_ai.output.messages", vec![message], finish_reason);
    }

    /// A stream's completion, assembled from its deltas.
    pub fn output_text(&self, text: &str, finish_reason: Option<&str>) {
        let message = Message { role: "assistant".into(), parts: vec![Part::Text(text.to_owned())] };
        self.record_messages("gen_ai.output.messages", vec![message], finish_reason);
    }

    fn record_messages(&self, key: &'static str, messages: Vec<Message>, finish_reason: Option<&str>) {
        let (messages, truncated) = self.capped(messages);
        let messages = messages
            .iter()
            .map(|message| {
                let mut value =
                    json!({"role": message.role, "parts": message.parts.iter().map(part_json).collect::<Vec<_>>()});
                if let Some(reason) = finish_reason {
                    value["finish_reason"] = json!(reason);
                }
                value
            })
            .collect();
        self.record(key, messages, truncated);
    }

    fn record(&self, key: &'static str, values: Vec<Value>, truncated: bool) {
        self.span.record_exported(key, Value::Array(values).to_string());
        if truncated {
            self.span.record("tollgate.trace_content.truncated", true);
        }
    }

    /// The messages with every text redacted, then cut to [`CAP_BYTES`] of text, newest first: older
    /// messages go when the budget is spent, the oldest one kept losing its end.
    fn capped(&self, messages: Vec<Message>) -> (Vec<Message>, bool) {
        let mut budget = CAP_BYTES;
        let mut truncated = false;
        let mut kept = Vec::with_capacity(messages.len());
        for mut message in messages.into_iter().rev() {
            if budget == 0 {
                truncated = true;
                break;
            }
            for part in &mut message.parts {
                if let Part::Text(text) = part {
                    *text = self.redact(std::mem::take(text));
                    if text.len() > budget {
                        text.truncate(floor_char_boundary(text, budget));
                        truncated = true;
                    }
                    budget -= text.len();
                }
            }
            kept.push(message);
        }
        kept.reverse();
        (kept, truncated)
    }

    fn redact(&self, text: String) -> String {
        self.detectors.iter().fold(text, |text, detector| {
            let found = detector.find(&text);
            if found.is_empty() {
                text
            } else {
                detector.rewrite(&text, &found)
            }
        })
    }
}

/// The detector of the secret kinds, built once (`None` if the patterns failed to build).
fn secret_detector() -> Option<&'static PiiDetector> {
    static DETECTOR: OnceLock<Option<PiiDetector>> = OnceLock::new();
    DETECTOR.get_or_init(|| PiiDetector::new(&SECRET_KINDS, Replacement::Label).ok()).as_ref()
}

/// An OpenAI or Anthropic message: its role and content.
fn message(value: &Value) -> Message {
    let role = value.get("role").and_then(Value::as_str).unwrap_or("user").to_owned();
    let mut parts = value.get("content").map(parts).unwrap_or_default();
    let tool_calls = value.get("tool_calls").and_then(Value::as_array).map_or(0, Vec::len);
    parts.extend((0..tool_calls).map(|_| Part::Other("tool_call".into())));
    Message { role, parts }
}

/// A content: a string, or a list of parts (`text` parts with their text, an Anthropic `tool_result` with
/// its content's text, anything else by its type).
fn parts(content: &Value) -> Vec<Part> {
    match content {
        Value::String(text) => vec![Part::Text(text.clone())],
        Value::Array(items) => items
            .iter()
            .flat_map(|item| match (item.get("type").and_then(Value::as_str), item.get("text")) {
                (Some("text") | None, Some(Value::String(text))) => vec![Part::Text(text.clone())],
                (Some("tool_result"), _) => item.get("content").map(parts).unwrap_or_default(),
                (kind, _) => vec![Part::Other(kind.unwrap_or("unknown").to_owned())],
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn part_json(part: &Part) -> Value {
    match part {
        Part::Text(text) => json!({"type": "text", "content": text}),
        Part::Other(kind) => json!({"type": kind}),
    }
}

/// The largest index ≤ `at` on a character boundary of `text`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0)
}

#[cfg(test)]
#[path = "trace_content_tests.rs"]
mod tests;
