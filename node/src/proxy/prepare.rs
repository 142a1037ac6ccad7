//! Phases 4–5: parse and validate the request (only what routing, limits and metering need), pick the
//! route, enforce the model's `max_tokens` and context-window limits, and build each target's body.

use bytes::Bytes;

use std::sync::Arc;

use super::{Endpoint, PromptTokens, RequestContext, Routed};
use crate::api::{anthropic, openai, Protocol, RequestProbe};
use crate::auth::Principal;
use crate::error::{GatewayError, GatewayResult};
use crate::routing::{Route, Target};
use crate::tokens::chat_input_bound;
use crate::translate;
use crate::translate::request::CappedThinking;

/// The largest `max_tokens` accepted on a route that sets no `max_output_tokens`.
pub const MAX_OUTPUT_TOKENS_CEILING: u64 = 1 << 20;

/// The validated request. Borrows the body; untouched fields stay raw.
pub struct ParsedRequest<'a> {
    pub probe: RequestProbe<'a>,
    /// An upper bound on the input tokens the provider can bill (every field it tokenizes, media parts):
    /// what budget admission reserves and the context-window check starts from. See
    /// [`crate::tokens::chat_input_bound`].
    pub input_bound: u64,
}

/// Phase 4.
pub fn parse<'a>(endpoint: Endpoint, body: &'a [u8]) -> GatewayResult<ParsedRequest<'a>> {
    if body.is_empty() {
        return Err(GatewayError::invalid_request("request body is empty; send a JSON object"));
    }
    let probe = match endpoint {
        Endpoint::ChatCompletions => openai::probe_chat(body)?,
        Endpoint::Messages => anthropic::probe_messages(body)?,
        Endpoint::CountTokens => anthropic::probe_count_tokens(body)?,
        Endpoint::Embeddings => {
            let probe = openai::probe_embeddings(body)?;
            // Text bytes bound text tokens; token arrays spend at least a digit and a comma per token.
            let input_bound = probe.prompt_bytes as u64;
            return Ok(ParsedRequest { probe, input_bound });
        }
        Endpoint::Models | Endpoint::NotFound | Endpoint::MethodNotAllowed => {
            return Err(GatewayError::internal("parse called for an endpoint without a body"));
        }
    };
    let input_bound = chat_input_bound(body, probe.message_count as u64);
    Ok(ParsedRequest { probe, input_bound })
}

/// Phase 5: the route for the model, the key's model allowlist, and the model's limits.
pub async fn route<'a>(
    context: &RequestContext,
    principal: Arc<Principal>,
    request: ParsedRequest<'a>,
) -> GatewayResult<Routed<'a>> {
    let route = context
        .snapshot
        .routes
        .get(request.probe.model.as_ref())
        .cloned()
        .ok_or_else(|| GatewayError::model_not_found(&request.probe.model))?;
    if !principal.may_use(&route.name) {
        return Err(GatewayError::permission_denied(format!("this API key may not use the model `{}`", route.name)));
    }
    // A route without its own cap still has a ceiling: no model generates millions of tokens, and a value
    // near 2^64 must never reach arithmetic on budgets and windows.
    let cap = route.max_output_tokens.unwrap_or(MAX_OUTPUT_TOKENS_CEILING);
    if let Some(asked) = request.probe.max_output_tokens {
        if asked > cap {
            return Err(GatewayError::invalid_param(
                "max_tokens",
                format!("max_tokens: {asked} is more than the {cap} output tokens `{}` allows", route.name),
            ));
        }
    }
    // Before any counting: a prompt over the route's size cap costs no tokenizer CPU.
    if let Some(limit) = route.max_prompt_bytes {
        // The whole body: everything in it (messages, system, tools, schemas) is tokenized.
        let size = context.body.len() as u64;
        if size > limit {
            return Err(GatewayError::prompt_too_large(&route.name, size, limit));
        }
    }
    if let Some(limit) = route.max_messages {
        let count = request.probe.message_count as u64;
        if count > limit {
            return Err(GatewayError::invalid_param(
                "messages",
                format!("the request has {count} messages; the model `{}` accepts at most {limit}", route.name),
            ));
        }
    }
    let prompt_tokens = PromptTokens::new(route.encoding, context.body.clone());
    if let Some(limit) = route.max_prompt_tokens {
        // The free bound first; the exact count only when the bound does not fit.
        if request.input_bound > limit {
            let exact = prompt_tokens.count().await;
            if exact > limit {
                return Err(GatewayError::invalid_param(
                    "messages",
                    format!(
                        "the prompt has {exact} tokens; the model `{}` accepts prompts of at most {limit}",
                        route.name
                    ),
                ));
            }
        }
    }
    if let Some(window) = route.context_window {
        let output = request.probe.max_output_tokens.unwrap_or(0);
        // Only when the free bound does not fit do we pay for an exact count.
        if request.input_bound.saturating_add(output) > window {
            let exact = prompt_tokens.count().await;
            if exact.saturating_add(output) > window {
                return Err(GatewayError::context_window_exceeded(format!(
                    "This model's maximum context length is {window} tokens. However, you requested {} tokens ({exact} in the messages, {output} in the completion).",
                    exact + output
                )));
            }
        }
    }
    Ok(Routed { principal, request, route, prompt_tokens })
}

/// The request body for one target, in its provider's protocol.
pub fn target_body(
    endpoint: Endpoint,
    caller: Protocol,
    request: &ParsedRequest<'_>,
    raw: &[u8],
    route: &Route,
    target: &Target,
    output_cap: Option<u64>,
) -> GatewayResult<(Bytes, Vec<String>)> {
    let upstream = target.provider.protocol;
    let mut dropped = Vec::new();
    let mut out = Vec::with_capacity(raw.len() + 64);
    let cap_text = output_cap.map(|cap| cap.to_string());
    match (caller, upstream) {
        (Protocol::OpenAi, Protocol::OpenAi) => {
            // At most three overrides: kept on the stack.
            let mut overrides = [("model", target.upstream_model_json.as_str()), ("", ""), ("", "")];
            let mut count = 1;
            if request.probe.stream {
                // Always ask for usage so streams can be metered; the chunk is stripped for callers that
                // did not ask for it.
                overrides[count] = ("stream_options", r#"{"include_usage":true}"#);
                count += 1;
            }
            // The budget's output cap: the provider cannot generate past what was reserved. In the field the
            // target model takes (reasoning models refuse `max_tokens`); the other one is left out.
            let field = translate::request::openai_output_field(
                &target.upstream_model,
                request.probe.object.get("max_completion_tokens").is_some(),
            );
            let mut remove: &[&str] = &[];
            if let Some(cap) = &cap_text {
                overrides[count] = (field, cap.as_str());
                count += 1;
                remove = if field == "max_tokens" { &["max_completion_tokens"] } else { &["max_tokens"] };
            } else if field == "max_completion_tokens" {
                // A reasoning model and a caller's `max_tokens`: moved to the field the model accepts.
                if let Some(asked) = request.probe.object.get("max_tokens") {
                    overrides[count] = (field, asked.get());
                    count += 1;
                    remove = &["max_tokens"];
                }
            }
            request.probe.object.write_with(&overrides[..count], remove, &mut out);
        }
        (Protocol::Anthropic, Protocol::Anthropic) => {
            if let Some(name) = write_anthropic_passthrough(request, target, output_cap, &mut out) {
                dropped.push(name.to_owned());
            }
        }
        (Protocol::OpenAi, Protocol::Anthropic) => {
            if endpoint == Endpoint::Embeddings {
                return Err(GatewayError::invalid_request("Anthropic providers have no embeddings endpoint"));
            }
            let mut typed: openai::ChatRequest = serde_json::from_slice(raw)
                .map_err(|err| GatewayError::invalid_request(format!("invalid chat request: {err}")))?;
            if output_cap.is_some() {
                typed.max_completion_tokens = output_cap;
            }
            let translated =
                translate::request::openai_to_anthropic(typed, &target.upstream_model, route.default_max_tokens())?;
            serde_json::to_writer(&mut out, &translated.body).map_err(|err| GatewayError::internal(err.to_string()))?;
            dropped = translated.dropped;
        }
        (Protocol::Anthropic, Protocol::OpenAi) => {
            let mut typed: anthropic::MessagesRequest = serde_json::from_slice(raw)
                .map_err(|err| GatewayError::invalid_request(format!("invalid messages request: {err}")))?;
            if output_cap.is_some() {
                typed.max_tokens = output_cap;
            }
            let translated = translate::request::anthropic_to_openai(typed, &target.upstream_model)?;
            serde_json::to_writer(&mut out, &translated.body).map_err(|err| GatewayError::internal(err.to_string()))?;
            dropped = translated.dropped;
        }
    }
    Ok((Bytes::from(out), dropped))
}

/// An Anthropic request for an Anthropic target: the model and the budget's output cap replaced, the rest
/// copied byte for byte — except a thinking budget the cap would leave at or above `max_tokens`, which
/// Anthropic refuses: lowered below the cap, or left off when no 1,024 tokens fit. Returns the parameter
/// left off, if any.
fn write_anthropic_passthrough(
    request: &ParsedRequest<'_>,
    target: &Target,
    output_cap: Option<u64>,
    out: &mut Vec<u8>,
) -> Option<&'static str> {
    let object = &request.probe.object;
    let model = ("model", target.upstream_model_json.as_str());
    let Some(cap) = output_cap else {
        object.write_with(&[model], &[], out);
        return None;
    };
    let cap_text = cap.to_string();
    let max_tokens = ("max_tokens", cap_text.as_str());
    match translate::request::cap_thinking(object.get("thinking").map(|raw| raw.get()), cap) {
        CappedThinking::AsSent => object.write_with(&[model, max_tokens], &[], out),
        CappedThinking::Lowered(thinking) => {
            let thinking = thinking.to_string();
            object.write_with(&[model, max_tokens, ("thinking", thinking.as_str())], &[], out);
        }
        CappedThinking::Off => {
            object.write_with(&[model, max_tokens], &["thinking"], out);
            return Some("thinking");
        }
    }
    None
}
