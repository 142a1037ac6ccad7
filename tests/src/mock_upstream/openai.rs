//! OpenAI flavour: `/v1/chat/completions` and `/v1/embeddings`.

use bytes::Bytes;
use hyper::Response;
use serde_json::{json, Value};

use super::documents::openai_file_parts;
use super::reasoning::{is_openai_reasoning_family, OpenAiReasoning};
use super::sse::{raw_stream_body, stream_body, CancelGuard, Event};
use super::strict::{openai_tool_pairs, served_model};
use super::text::{billed_input_tokens, bytes_to_tokens, pieces, plan_output, string_list, Finish, Output};
use super::{add_header, json_response, prelude, sse_response, text_response, unix_now, Api, Ctx, RespBody, Script};

fn invalid(message: &str, param: Option<&str>) -> Response<RespBody> {
    json_response(
        400,
        &json!({"error": {"message": message, "type": "invalid_request_error",
            "param": param, "code": null}}),
    )
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::StopSequence => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

/// `usage` as Chat Completions reports it; reasoning tokens are part of the completion tokens.
fn usage(p: u64, c: u64, reasoning: u64) -> Value {
    json!({
        "prompt_tokens": p,
        "completion_tokens": c,
        "total_tokens": p + c,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

/// Headers OpenAI sends on every successful response.
fn decorate(ctx: &Ctx, script: &Script, resp: &mut Response<RespBody>) {
    add_header(resp, "x-request-id", &format!("req_{}", ctx.shared.next_id()));
    add_header(resp, "openai-processing-ms", "1");
    add_header(resp, "openai-version", "2020-10-01");
    add_header(resp, "x-ratelimit-limit-requests", "10000");
    add_header(resp, "x-ratelimit-remaining-requests", "9999");
    add_header(resp, "x-ratelimit-reset-requests", "6ms");
    if let Some(secs) = script.retry_after {
        add_header(resp, "retry-after", &secs.to_string());
    }
}

/// Returns the messages array or a 400 response, mirroring OpenAI's checks.
fn validate_chat(body: &Value) -> Result<(&str, &Vec<Value>), Response<RespBody>> {
    if !body.is_object() {
        return Err(invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            None,
        ));
    }
    let model = match body.get("model") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => return Err(invalid("Invalid type for 'model': expected a string.", Some("model"))),
        None => return Err(invalid("you must provide a model parameter", None)),
    };
    let messages = match body.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
        )),
        Some(_) => return Err(invalid("Invalid type for 'messages': expected an array.", Some("messages"))),
        None => return Err(invalid("Missing required parameter: 'messages'.", Some("messages"))),
    };
    // Like OpenAI, reasoning models (o-series, gpt-5) refuse `max_tokens`.
    let reasoning = is_openai_reasoning_family(model);
    if reasoning && body.get("max_tokens").is_some() {
        return Err(invalid(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
            Some("max_tokens"),
        ));
    }
    openai_tool_pairs(messages).map_err(|(message, param)| invalid(&message, Some(&param)))?;
    openai_file_parts(messages).map_err(|(message, param)| invalid(&message, Some(&param)))?;
    Ok((model, messages))
}

pub async fn chat(ctx: Ctx) -> Response<RespBody> {
    let stream = ctx.req.body.get("stream").and_then(Value::as_bool) == Some(true);
    let mut guard = stream.then(|| CancelGuard::new(ctx.shared.clone()));
    let script = match prelude(&ctx, Api::OpenAi).await {
        Ok(s) => s,
        Err(r) => {
            guard.iter_mut().for_each(CancelGuard::disarm);
            return r;
        }
    };
    let body = &ctx.req.body;
    let valid = validate_chat(body).and_then(|v| served_model(&ctx, Api::OpenAi, v.0).map(|()| v)).and_then(|v| {
        let reasoning = OpenAiReasoning::plan(v.0, &script);
        reasoning.check_params(body).map_err(|(message, param)| invalid(&message, Some(&param)))?;
        Ok((v.0, v.1, reasoning))
    });
    let (model, messages, reasoning) = match valid {
        Ok(v) => v,
        Err(r) => {
            guard.iter_mut().for_each(CancelGuard::disarm);
            return r;
        }
    };
    let reply = Reply::plan(&ctx, &script, model, reasoning, billed_input_tokens(body, messages, None));
    let mut resp = match guard {
        None if script.garbage_body => text_response(200, "application/json", "<html>oops</html>"),
        None => {
            ctx.shared.serve_tokens(reply.prompt_tokens, reply.completion_tokens());
            json_response(200, &reply.completion(&script))
        }
        Some(g) if script.garbage_body => sse_response(raw_stream_body(
            ctx.shared.clone(),
            vec![
                Bytes::from_static(b"<html>oops</html>\n\n"),
                Bytes::from_static(b"data: <html>oops</html>\n\nthis is not an event stream\n\n"),
            ],
            g,
        )),
        Some(g) => {
            let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
            let events = reply.events(&script, include_usage && !script.omit_usage);
            sse_response(stream_body(ctx.shared.clone(), &script, events, reply.prompt_tokens, g))
        }
    };
    decorate(&ctx, &script, &mut resp);
    resp
}

/// What the model generates for one request: each of the `n` choices says the same.
struct Reply<'a> {
    id: String,
    call_id: String,
    second_id: String,
    created: u64,
    model: &'a str,
    n: u64,
    prompt_tokens: u64,
    reasoning: OpenAiReasoning,
    output: Output,
    /// A second, parallel tool call (name, arguments, argument pieces), billed and generated like the first.
    second: Option<(String, String, Vec<String>)>,
    /// Text said before the tool call(s), in the same message.
    preamble: Option<(String, Vec<String>)>,
}

impl<'a> Reply<'a> {
    fn plan(ctx: &Ctx, script: &Script, model: &'a str, reasoning: OpenAiReasoning, prompt_tokens: u64) -> Self {
        let body = &ctx.req.body;
        let json_mode = matches!(
            body.pointer("/response_format/type").and_then(Value::as_str),
            Some("json_object" | "json_schema")
        );
        // The output limit covers reasoning and answer alike.
        let max_tokens = body
            .get("max_completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| body.get("max_tokens").and_then(Value::as_u64))
            .map(|max| max.saturating_sub(reasoning.tokens()));
        let output = plan_output(script, json_mode, max_tokens, &string_list(body.get("stop")));
        let second = match (&output, &script.second_tool_call) {
            (Output::Tool { .. }, Some((name, arguments))) => {
                Some((name.clone(), arguments.clone(), super::text::split_args(arguments)))
            }
            _ => None,
        };
        let preamble = match (&output, &script.preamble) {
            (Output::Tool { .. }, Some(text)) => Some((text.clone(), pieces(text))),
            _ => None,
        };
        Reply {
            id: format!("chatcmpl-{}", ctx.shared.next_id()),
            call_id: format!("call_{}", ctx.shared.next_id()),
            second_id: format!("call_{}", ctx.shared.next_id()),
            created: unix_now(),
            model,
            // `n` choices, each generating up to max_tokens (and billed for it).
            n: body.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 128),
            prompt_tokens,
            reasoning,
            output,
            second,
            preamble,
        }
    }

    fn choice_tokens(&self) -> u64 {
        let second = self.second.as_ref().map_or(0, |(_, _, pieces)| pieces.len() as u64);
        let preamble = self.preamble.as_ref().map_or(0, |(_, p)| p.len() as u64);
        self.output.tokens() + second + preamble + self.reasoning.tokens()
    }

    fn completion_tokens(&self) -> u64 {
        self.choice_tokens() * self.n
    }

    fn usage(&self) -> Value {
        usage(self.prompt_tokens, self.completion_tokens(), self.reasoning.tokens() * self.n)
    }

    fn message(&self) -> Value {
        let mut message = match &self.output {
            Output::Text { pieces, .. } => {
                json!({"role": "assistant", "content": pieces.concat(), "refusal": null, "annotations": []})
            }
            Output::Tool { name, arguments, .. } => {
                let mut calls = vec![json!({"id": self.call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}})];
                if let Some((name, arguments, _)) = &self.second {
                    calls.push(json!({"id": self.second_id, "type": "function",
                        "function": {"name": name, "arguments": arguments}}));
                }
                let content = self.preamble.as_ref().map(|(text, _)| text.clone());
                json!({"role": "assistant", "content": content, "tool_calls": calls,
                    "refusal": null, "annotations": []})
            }
        };
        if let Some(reasoning) = self.reasoning.shown() {
            message["reasoning_content"] = json!(reasoning.concat());
        }
        message
    }

    fn completion(&self, script: &Script) -> Value {
        let message = self.message();
        let choices: Vec<Value> = (0..self.n)
            .map(|index| {
                json!({"index": index, "message": message, "logprobs": null,
                    "finish_reason": finish_reason(self.output.finish())})
            })
            .collect();
        let mut v = json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": choices, "service_tier": "default", "system_fingerprint": "fp_mock",
        });
        if !script.omit_usage {
            v["usage"] = self.usage();
        }
        v
    }

    fn chunk(&self, choices: Value, usage: Option<Value>, with_usage: bool) -> Value {
        let mut o = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "service_tier": "default", "system_fingerprint": "fp_mock", "choices": choices});
        if with_usage {
            o["usage"] = usage.unwrap_or(Value::Null);
        }
        o
    }

    fn events(&self, script: &Script, with_usage: bool) -> Vec<Event> {
        let mut events = Vec::new();
        for index in 0..self.n {
            let mut push = |delta: Value, finish: Value, tokens: u64| {
                let choice = json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
                events.push(Event::data(&self.chunk(choice, None, with_usage), tokens));
            };
            for (delta, tokens) in self.choice_deltas() {
                push(delta, Value::Null, tokens);
            }
            // Hidden reasoning is billed with the last chunk.
            let hidden = if self.reasoning.shown().is_some() { 0 } else { self.reasoning.tokens() };
            push(json!({}), json!(finish_reason(self.output.finish())), hidden);
        }
        if with_usage {
            events.push(Event::data(&self.chunk(json!([]), Some(self.usage()), true), 0));
        }
        events.push(Event::raw("data: [DONE]\n\n"));
        if let Some(n) = script.error_after_events {
            events.truncate(n);
            let error = json!({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error", "param": null, "code": null}});
            events.push(Event::data(&error, 0));
        }
        events
    }

    /// One choice's deltas (and the output tokens each carries), as the API streams them: the role, any
    /// shown reasoning (DeepSeek's shape: `content` null next to it, and the reverse after it), the text,
    /// then the tool calls, whose argument chunks alternate (index 0, 1, 0, 1…) when there are two.
    fn choice_deltas(&self) -> Vec<(Value, u64)> {
        let mut deltas = Vec::new();
        let reasoning = self.reasoning.shown();
        if let Some(thought) = reasoning {
            deltas.push((json!({"role": "assistant", "content": null, "reasoning_content": ""}), 0));
            deltas.extend(thought.iter().map(|p| (json!({"content": null, "reasoning_content": p}), 1)));
        }
        let said = match &self.output {
            Output::Text { pieces, .. } => Some(pieces),
            Output::Tool { .. } => self.preamble.as_ref().map(|(_, p)| p),
        };
        if let Some(said) = said {
            if reasoning.is_none() {
                deltas.push((json!({"role": "assistant", "content": "", "refusal": null}), 0));
            }
            let content = |p: &String| match reasoning {
                Some(_) => json!({"content": p, "reasoning_content": null}),
                None => json!({"content": p}),
            };
            deltas.extend(said.iter().map(|p| (content(p), 1)));
        }
        if let Output::Tool { name, pieces, .. } = &self.output {
            let call = json!([{"index": 0, "id": self.call_id, "type": "function",
                "function": {"name": name, "arguments": ""}}]);
            let opening = if deltas.is_empty() {
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": call})
            } else {
                json!({"tool_calls": call})
            };
            deltas.push((opening, 0));
            let mut calls = vec![pieces.as_slice()];
            if let Some((name, _, second_pieces)) = &self.second {
                deltas.push((
                    json!({"tool_calls": [{"index": 1, "id": self.second_id, "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    0,
                ));
                calls.push(second_pieces);
            }
            let rounds = calls.iter().map(|c| c.len()).max().unwrap_or(0);
            for round in 0..rounds {
                for (call, list) in calls.iter().enumerate() {
                    if let Some(p) = list.get(round) {
                        deltas.push((json!({"tool_calls": [{"index": call, "function": {"arguments": p}}]}), 1));
                    }
                }
            }
        }
        deltas
    }
}

/// 8 deterministic floats in [-1, 1) derived from the text (FNV-1a + splitmix64).
fn embedding(text: &str) -> Vec<f64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..8u64)
        .map(|k| {
            let mut z = h.wrapping_add(k.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
            ((unit * 2.0 - 1.0) * 1e6).round() / 1e6
        })
        .collect()
}

pub async fn embeddings(ctx: Ctx) -> Response<RespBody> {
    let script = match prelude(&ctx, Api::OpenAi).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = &ctx.req.body;
    if !body.is_object() {
        return invalid("We could not parse the JSON body of your request.", None);
    }
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return invalid("you must provide a model parameter", None);
    };
    if let Err(r) = served_model(&ctx, Api::OpenAi, model) {
        return r;
    }
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect()
        }
        None => return invalid("Missing required parameter: 'input'.", Some("input")),
        Some(_) => {
            return invalid("Invalid 'input': expected a string or a non-empty array of strings.", Some("input"))
        }
    };
    let mut resp = if script.garbage_body {
        text_response(200, "application/json", "<html>oops</html>")
    } else {
        let tokens: u64 = inputs.iter().map(|s| bytes_to_tokens(s.len()).max(1)).sum();
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": embedding(s)}))
            .collect();
        let mut v = json!({"object": "list", "data": data, "model": model});
        if !script.omit_usage {
            v["usage"] = json!({"prompt_tokens": tokens, "total_tokens": tokens});
        }
        ctx.shared.serve_tokens(tokens, 0);
        json_response(200, &v)
    };
    decorate(&ctx, &script, &mut resp);
    resp
}
