//! Anthropic flavour: `/v1/messages` and `/v1/messages/count_tokens`.

use bytes::Bytes;
use hyper::Response;
use serde_json::{json, Value};

use super::documents::anthropic_documents;
use super::reasoning::{anthropic_thinking, anthropic_thinking_checks, signature_for};
use super::sse::{raw_stream_body, stream_body, CancelGuard, Event};
use super::strict::{anthropic_tool_pairs, served_model};
use super::text::{billed_input_tokens, pieces as text_pieces, plan_output, split_args, string_list, Finish, Output};
use super::{
    add_header, check_auth, error_response, json_response, prelude, sse_response, text_response, Api, Ctx, RespBody,
    Script,
};

fn invalid(message: &str) -> Response<RespBody> {
    error_response(Api::Anthropic, 400, Some(message), None)
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::StopSequence => "stop_sequence",
        Finish::ToolCalls => "tool_use",
    }
}

/// Headers Anthropic sends on every successful response.
fn decorate(ctx: &Ctx, script: &Script, resp: &mut Response<RespBody>) {
    add_header(resp, "request-id", &format!("req_{}", ctx.shared.next_id()));
    add_header(resp, "anthropic-ratelimit-requests-limit", "4000");
    add_header(resp, "anthropic-ratelimit-requests-remaining", "3999");
    add_header(resp, "anthropic-ratelimit-requests-reset", "2024-01-01T00:00:00Z");
    if let Some(secs) = script.retry_after {
        add_header(resp, "retry-after", &secs.to_string());
    }
}

struct Valid<'a> {
    model: &'a str,
    max_tokens: u64,
    messages: &'a Vec<Value>,
}

fn validate(body: &Value, need_max_tokens: bool) -> Result<Valid<'_>, Response<RespBody>> {
    if !body.is_object() {
        return Err(invalid("There was an issue with your request body: expected a JSON object"));
    }
    let max_tokens = match body.get("max_tokens") {
        Some(v) => match v.as_u64() {
            Some(n) => n,
            None => return Err(invalid("max_tokens: Input should be a valid integer")),
        },
        None if need_max_tokens => return Err(invalid("max_tokens: Field required")),
        None => u64::MAX,
    };
    let messages = match body.get("messages") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid("messages: Input should be a valid list")),
        None => return Err(invalid("messages: Field required")),
    };
    let model = match body.get("model") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => return Err(invalid("model: Input should be a valid string")),
        None => return Err(invalid("model: Field required")),
    };
    if let Some(sys) = body.get("system") {
        if !(sys.is_string() || sys.is_array()) {
            return Err(invalid("system: Input should be a valid string or list"));
        }
    }
    strict_anthropic_checks(body, messages)?;
    anthropic_tool_pairs(messages).map_err(|message| invalid(&message))?;
    anthropic_documents(messages).map_err(|message| invalid(&message))?;
    Ok(Valid { model, max_tokens, messages })
}

/// The real API refuses a request without `anthropic-version`.
fn versioned(version: Option<&str>) -> Result<(), Response<RespBody>> {
    match version {
        Some(_) => Ok(()),
        None => Err(invalid("anthropic-version: header is required")),
    }
}

/// What the real Messages API refuses and a translator could produce: a `system` role inside `messages`,
/// empty or whitespace-only text blocks, whitespace-only stop sequences, `temperature` with `top_p`.
fn strict_anthropic_checks(body: &Value, messages: &[Value]) -> Result<(), Response<RespBody>> {
    for (index, message) in messages.iter().enumerate() {
        match message.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            Some(other) => {
                return Err(invalid(&format!(
                    "messages.{index}.role: Input should be 'user' or 'assistant' (got '{other}')"
                )))
            }
            None => return Err(invalid(&format!("messages.{index}.role: Field required"))),
        }
        if let Some(blocks) = message.get("content").and_then(Value::as_array) {
            for (block_index, block) in blocks.iter().enumerate() {
                let blank = block.get("type").and_then(Value::as_str) == Some("text")
                    && block.get("text").and_then(Value::as_str).is_none_or(|t| t.trim().is_empty());
                if blank {
                    return Err(invalid(&format!(
                        "messages.{index}.content.{block_index}.text: text content blocks must contain non-whitespace text"
                    )));
                }
            }
        }
    }
    let stops = body.get("stop_sequences").and_then(Value::as_array).cloned().unwrap_or_default();
    if stops.iter().any(|s| s.as_str().is_none_or(|s| s.trim().is_empty())) {
        return Err(invalid("stop_sequences: each stop sequence must contain non-whitespace"));
    }
    if body.get("temperature").is_some() && body.get("top_p").is_some() {
        return Err(invalid("`temperature` and `top_p` cannot both be specified for this model. Please use only one."));
    }
    anthropic_thinking_checks(body, messages).map_err(|message| invalid(&message))
}

/// `usage` as the Messages API reports it: `input_tokens` excludes what the prompt cache wrote or read.
fn usage_full(prompt: &Prompt, output: u64) -> Value {
    json!({"input_tokens": prompt.input, "output_tokens": output,
        "cache_creation_input_tokens": prompt.cache_creation, "cache_read_input_tokens": prompt.cache_read,
        "service_tier": "standard"})
}

/// The prompt's tokens as billed: the uncached rest, what the cache wrote and what it read.
struct Prompt {
    input: u64,
    cache_creation: u64,
    cache_read: u64,
}

impl Prompt {
    fn split(total: u64, cache: Option<(u64, u64)>) -> Prompt {
        let (creation, read) = cache.unwrap_or((0, 0));
        let cache_creation = creation.min(total);
        let cache_read = read.min(total - cache_creation);
        Prompt { input: total - cache_creation - cache_read, cache_creation, cache_read }
    }

    fn total(&self) -> u64 {
        self.input + self.cache_creation + self.cache_read
    }
}

/// One generated content block: how it starts in a stream, its deltas (one output token each), the
/// signature delta that closes a thinking block, and the finished block.
struct Block {
    start: Value,
    deltas: Vec<Value>,
    signature: Option<String>,
    done: Value,
}

fn text_block(pieces: &[String]) -> Block {
    Block {
        start: json!({"type": "text", "text": ""}),
        deltas: pieces.iter().map(|p| json!({"type": "text_delta", "text": p})).collect(),
        signature: None,
        done: json!({"type": "text", "text": pieces.concat()}),
    }
}

/// A thinking block as the API streams it: empty thinking and signature at the start, `thinking_delta`s,
/// then the whole signature in one `signature_delta`.
fn thinking_block(pieces: &[String]) -> Block {
    let thinking = pieces.concat();
    let signature = signature_for(&thinking);
    Block {
        start: json!({"type": "thinking", "thinking": "", "signature": ""}),
        deltas: pieces.iter().map(|p| json!({"type": "thinking_delta", "thinking": p})).collect(),
        done: json!({"type": "thinking", "thinking": thinking, "signature": signature}),
        signature: Some(signature),
    }
}

fn tool_block(id: String, name: &str, arguments: &str, pieces: &[String]) -> Block {
    let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
    Block {
        start: json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
        deltas: pieces.iter().map(|p| json!({"type": "input_json_delta", "partial_json": p})).collect(),
        signature: None,
        done: json!({"type": "tool_use", "id": id, "name": name, "input": input}),
    }
}

/// The message's content: its text, or the `preamble` text (if any), the tool call and a parallel second
/// call (if any), in that order.
fn content_blocks(ctx: &Ctx, script: &Script, output: &Output) -> Vec<Block> {
    match output {
        Output::Text { pieces, .. } => vec![text_block(pieces)],
        Output::Tool { name, arguments, pieces } => {
            let mut blocks: Vec<Block> = script.preamble.iter().map(|text| text_block(&text_pieces(text))).collect();
            blocks.push(tool_block(format!("toolu_{}", ctx.shared.next_id()), name, arguments, pieces));
            if let Some((name, arguments)) = &script.second_tool_call {
                let id = format!("toolu_{}", ctx.shared.next_id());
                blocks.push(tool_block(id, name, arguments, &split_args(arguments)));
            }
            blocks
        }
    }
}

pub async fn messages(ctx: Ctx) -> Response<RespBody> {
    let stream = ctx.req.body.get("stream").and_then(Value::as_bool) == Some(true);
    let mut guard = stream.then(|| CancelGuard::new(ctx.shared.clone()));
    let script = match prelude(&ctx, Api::Anthropic).await {
        Ok(s) => s,
        Err(r) => {
            guard.iter_mut().for_each(CancelGuard::disarm);
            return r;
        }
    };
    let body = &ctx.req.body;
    let valid = versioned(ctx.req.header("anthropic-version"))
        .and_then(|()| validate(body, true))
        .and_then(|v| served_model(&ctx, Api::Anthropic, v.model).map(|()| v));
    let v = match valid {
        Ok(v) => v,
        Err(r) => {
            guard.iter_mut().for_each(CancelGuard::disarm);
            return r;
        }
    };
    let prompt = Prompt::split(billed_input_tokens(body, v.messages, body.get("system")), script.cache_tokens);
    let stops = string_list(body.get("stop_sequences"));
    // Thinking comes first and counts against max_tokens; the answer gets what is left.
    let thought = anthropic_thinking(body, &script, v.max_tokens);
    let thought_tokens = thought.as_ref().map_or(0, |t| t.len() as u64);
    let output = plan_output(&script, false, Some(v.max_tokens.saturating_sub(thought_tokens)), &stops);
    let stop_sequence = match &output {
        Output::Text { stop_sequence, .. } => stop_sequence.clone(),
        Output::Tool { .. } => None,
    };
    let mut blocks: Vec<Block> = thought.as_deref().map(thinking_block).into_iter().collect();
    blocks.extend(content_blocks(&ctx, &script, &output));
    let answer = Answer {
        id: format!("msg_{}", ctx.shared.next_id()),
        model: v.model,
        output_tokens: blocks.iter().map(|b| b.deltas.len() as u64).sum::<u64>(),
        blocks,
        stop_reason: stop_reason(output.finish()),
        stop_sequence,
        prompt,
    };
    let mut resp = match guard {
        None if script.garbage_body => text_response(200, "application/json", "<html>oops</html>"),
        None => {
            ctx.shared.serve_tokens(answer.prompt.total(), answer.output_tokens);
            json_response(200, &answer.message(&script))
        }
        Some(g) if script.garbage_body => sse_response(raw_stream_body(
            ctx.shared.clone(),
            vec![
                Bytes::from_static(b"<html>oops</html>\n\n"),
                Bytes::from_static(b"event: message_start\ndata: <html>oops</html>\n\nthis is not an event stream\n\n"),
            ],
            g,
        )),
        Some(g) => {
            let input = answer.prompt.total();
            sse_response(stream_body(ctx.shared.clone(), &script, answer.events(&script), input, g))
        }
    };
    decorate(&ctx, &script, &mut resp);
    resp
}

/// One generated message, ready to be sent whole or streamed.
struct Answer<'a> {
    id: String,
    model: &'a str,
    blocks: Vec<Block>,
    output_tokens: u64,
    stop_reason: &'static str,
    stop_sequence: Option<String>,
    prompt: Prompt,
}

impl Answer<'_> {
    fn message(self, script: &Script) -> Value {
        let content: Vec<Value> = self.blocks.into_iter().map(|b| b.done).collect();
        let mut m = json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content, "stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence,
        });
        if !script.omit_usage {
            m["usage"] = usage_full(&self.prompt, self.output_tokens);
        }
        m
    }

    /// The API's event order: message_start, each block (start, a ping after the first, deltas, a thinking
    /// block's signature_delta, stop), message_delta, message_stop.
    fn events(self, script: &Script) -> Vec<Event> {
        let mut events = Vec::new();
        let mut message = json!({"id": self.id, "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null});
        if !script.omit_usage {
            message["usage"] = usage_full(&self.prompt, 1);
        }
        events.push(Event::named("message_start", &json!({"type": "message_start", "message": message}), 0));
        for (index, block) in self.blocks.into_iter().enumerate() {
            let start = json!({"type": "content_block_start", "index": index, "content_block": block.start});
            events.push(Event::named("content_block_start", &start, 0));
            if index == 0 {
                events.push(Event::named("ping", &json!({"type": "ping"}), 0));
            }
            let delta = |d: Value| json!({"type": "content_block_delta", "index": index, "delta": d});
            for d in block.deltas {
                events.push(Event::named("content_block_delta", &delta(d), 1));
            }
            if let Some(signature) = block.signature {
                let d = delta(json!({"type": "signature_delta", "signature": signature}));
                events.push(Event::named("content_block_delta", &d, 0));
            }
            let stop = json!({"type": "content_block_stop", "index": index});
            events.push(Event::named("content_block_stop", &stop, 0));
        }
        let mut md = json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}});
        if !script.omit_usage {
            // As the API sends it today: the final input and cache counts next to the output tokens.
            let mut usage = usage_full(&self.prompt, self.output_tokens);
            usage.as_object_mut().map(|u| u.remove("service_tier"));
            md["usage"] = usage;
        }
        events.push(Event::named("message_delta", &md, 0));
        events.push(Event::named("message_stop", &json!({"type": "message_stop"}), 0));
        if let Some(n) = script.error_after_events {
            events.truncate(n);
            let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
            events.push(Event::named("error", &error, 0));
        }
        events
    }
}

/// `POST /v1/messages/count_tokens` -> `{"input_tokens": N}` (same formula as
/// messages). Does not consume a script.
pub fn count_tokens(ctx: &Ctx) -> Response<RespBody> {
    if let Err(r) = check_auth(ctx, Api::Anthropic) {
        return r;
    }
    let body = &ctx.req.body;
    let valid = versioned(ctx.req.header("anthropic-version"))
        .and_then(|()| validate(body, false))
        .and_then(|v| served_model(ctx, Api::Anthropic, v.model).map(|()| v));
    match valid {
        Ok(v) => {
            json_response(200, &json!({"input_tokens": billed_input_tokens(body, v.messages, body.get("system"))}))
        }
        Err(r) => r,
    }
}
