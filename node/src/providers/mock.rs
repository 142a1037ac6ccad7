//! The built-in `mock` provider: deterministic answers in OpenAI or Anthropic form, streamed with
//! configurable delays, with no network and no keys — so `tollgate dev` works out of the box.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{json, Value};

use super::{BoxError, Operation, UpstreamBody, UpstreamRequest};
use crate::api::Protocol;
use crate::config::{MockConfig, MockStyle};
use crate::error::{GatewayError, GatewayResult};
use crate::tokens::{count_prompt, Encoding};

pub struct MockProvider {
    config: MockConfig,
}

impl MockProvider {
    pub fn new(config: MockConfig) -> Self {
        MockProvider { config }
    }

    pub fn protocol(&self) -> Protocol {
        match self.config.style {
            MockStyle::Openai => Protocol::OpenAi,
            MockStyle::Anthropic => Protocol::Anthropic,
        }
    }

    pub async fn respond(&self, request: UpstreamRequest<'_>) -> GatewayResult<Response<UpstreamBody>> {
        if self.config.first_token_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.first_token_delay_ms)).await;
        }
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|err| GatewayError::internal(format!("mock provider got invalid JSON: {err}")))?;
        let model = body.get("model").and_then(Value::as_str).unwrap_or("mock").to_owned();
        match request.operation {
            Operation::Embeddings => return Ok(json_response(embeddings(&body, &model))),
            Operation::CountTokens => {
                return Ok(json_response(json!({"input_tokens": count_prompt(Encoding::Cl100k, &request.body)})));
            }
            Operation::Chat => {}
        }
        let answer = Answer::new(&self.config, &body, &request.body);
        let protocol = self.protocol();
        if !request.stream {
            return Ok(json_response(match protocol {
                Protocol::OpenAi => answer.openai_completion(&model),
                Protocol::Anthropic => answer.anthropic_message(&model),
            }));
        }
        let events = match protocol {
            Protocol::OpenAi => answer.openai_events(&model),
            Protocol::Anthropic => answer.anthropic_events(&model),
        };
        let delay = Duration::from_millis(self.config.token_delay_ms);
        let stream =
            futures_util::stream::iter(events.into_iter().enumerate()).then(move |(index, event)| async move {
                if index > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, BoxError>(Frame::data(event))
            });
        let body = StreamBody::new(stream).boxed_unsync();
        Response::builder()
            .header(http::header::CONTENT_TYPE, "text/event-stream")
            .body(body)
            .map_err(|err| GatewayError::internal(err.to_string()))
    }
}

fn json_response(value: Value) -> Response<UpstreamBody> {
    let body = Full::new(Bytes::from(value.to_string())).map_err(|never| match never {}).boxed_unsync();
    let mut response = Response::new(body);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn embeddings(body: &Value, model: &str) -> Value {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items.iter().map(|item| item.to_string()).collect(),
        _ => vec![String::new()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            // A deterministic unit-ish vector derived from the bytes of the input.
            let mut vector = [0f64; 8];
            for (position, byte) in text.bytes().enumerate() {
                vector[position % 8] += f64::from(byte) / 255.0;
            }
            let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
            json!({"object": "embedding", "index": index, "embedding": vector.iter().map(|x| x / norm).collect::<Vec<_>>()})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|text| text.len().div_ceil(4)).sum();
    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

/// The reply to one request, split into word pieces that stream as tokens.
struct Answer {
    pieces: Vec<String>,
    input_tokens: u64,
    truncated: bool,
}

impl Answer {
    fn new(config: &MockConfig, body: &Value, raw: &[u8]) -> Answer {
        let text = config.reply.clone().unwrap_or_else(|| {
            let last_user = last_user_text(body);
            let excerpt: String = last_user.chars().take(120).collect();
            format!("This is a mock reply from Tollgate. You said: {excerpt}")
        });
        let mut pieces = split_pieces(&text);
        let limit = body
            .get("max_tokens")
            .or_else(|| body.get("max_completion_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX) as usize;
        let truncated = pieces.len() > limit;
        pieces.truncate(limit);
        Answer { pieces, input_tokens: count_prompt(Encoding::Cl100k, raw), truncated }
    }

    fn text(&self) -> String {
        self.pieces.concat()
    }

    fn output_tokens(&self) -> u64 {
        self.pieces.len() as u64
    }

    fn openai_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens(),
            "total_tokens": self.input_tokens + self.output_tokens(),
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        })
    }

    fn openai_completion(&self, model: &str) -> Value {
        json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text(), "refusal": null},
                         "logprobs": null, "finish_reason": if self.truncated { "length" } else { "stop" }}],
            "usage": self.openai_usage(),
        })
    }

    fn openai_events(&self, model: &str) -> Vec<Bytes> {
        let chunk = |delta: Value, finish: Value| {
            let value = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
            Bytes::from(format!("data: {value}\n\n"))
        };
        let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
        events.extend(self.pieces.iter().map(|piece| chunk(json!({"content": piece}), Value::Null)));
        events.push(chunk(json!({}), json!(if self.truncated { "length" } else { "stop" })));
        let usage = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [], "usage": self.openai_usage()});
        events.push(Bytes::from(format!("data: {usage}\n\n")));
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        events
    }

    fn anthropic_message(&self, model: &str) -> Value {
        json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": self.text()}],
            "stop_reason": if self.truncated { "max_tokens" } else { "end_turn" }, "stop_sequence": null,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens(),
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        })
    }

    fn anthropic_events(&self, model: &str) -> Vec<Bytes> {
        let event = |name: &str, value: Value| Bytes::from(format!("event: {name}\ndata: {value}\n\n"));
        let mut events = vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 1,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
        ];
        events.extend(self.pieces.iter().map(|piece| {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            )
        }));
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        events.push(event(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": if self.truncated { "max_tokens" } else { "end_turn" }, "stop_sequence": null},
            "usage": {"output_tokens": self.output_tokens()}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        events
    }
}

fn last_user_text(body: &Value) -> String {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(message) = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")) else {
        return String::new();
    };
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// "Hello big world" → ["Hello", " big", " world"]: each piece is one streamed token.
fn split_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    for ch in text.chars() {
        if ch == ' ' && !current.trim().is_empty() {
            pieces.push(std::mem::take(&mut current));
        }
        current.push(ch);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_concatenate_back_to_the_text() {
        let text = "Hello big  world!";
        assert_eq!(split_pieces(text).concat(), text);
        assert_eq!(split_pieces("Hello big world"), ["Hello", " big", " world"]);
    }

    #[test]
    fn max_tokens_truncates_with_length_reason() {
        let body =
            json!({"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "one two three four"}]});
        let answer = Answer::new(&MockConfig::default(), &body, body.to_string().as_bytes());
        assert_eq!(answer.output_tokens(), 2);
        assert_eq!(answer.openai_completion("m")["choices"][0]["finish_reason"], "length");
        assert_eq!(answer.anthropic_message("m")["stop_reason"], "max_tokens");
    }
}
