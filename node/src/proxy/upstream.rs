//! Phases 6–7: try the route's targets in order (falling back on connect errors, timeouts, 429 and 5xx
//! before the first byte reaches the client), then answer in the caller's protocol and meter the request.
//!
//! Fallback and retry are written here rather than taken from tower's `retry` layer or a backoff crate:
//! each attempt must re-admit the budget for the next target's price, re-translate the body for its
//! protocol, record the endpoint's health and the fallback reason, and stop for good once a byte has
//! reached the client. A generic retry policy sees only a request and a result, not those steps.

use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::{ResponseBody, StreamingBody};
use super::meter::RequestMeter;
use super::prepare::target_body;
use super::{Endpoint, RequestContext, Routed};
use crate::api::Protocol;
use crate::auth::Principal;
use crate::budget::Admission;
use crate::clock::monotonic_ms;
use crate::error::{GatewayError, GatewayResult};
use crate::gateway::Gateway;
use crate::metrics::Outcome;
use crate::providers::{read_body, upstream_error, Operation, UpstreamBody, UpstreamRequest};
use crate::routing::{models_list_anthropic, models_list_openai, RequestHints, Target};
use crate::tokens::UsageEstimator;
use crate::trace_span::TraceSpan;
use crate::translate::{response as translate_response, stream::StreamTranslator};

/// `GET /v1/models`: the routes this key may use, in the caller's list shape.
pub fn list_models(context: &RequestContext, principal: &Principal) -> Response<ResponseBody> {
    let snapshot = &context.snapshot;
    let principal = Some(principal);
    let restricted = principal.is_some_and(|p| p.allowed_models.is_some());
    let body = match (context.caller, restricted) {
        (Protocol::OpenAi, false) => snapshot.models_openai_json.clone(),
        (Protocol::OpenAi, true) => Bytes::from(
            models_list_openai(&snapshot.model_names, |m| principal.is_none_or(|p| p.may_use(m))).to_string(),
        ),
        (Protocol::Anthropic, _) => Bytes::from(
            models_list_anthropic(&snapshot.model_names, |m| principal.is_none_or(|p| p.may_use(m))).to_string(),
        ),
    };
    json_response(StatusCode::OK, body)
}

fn json_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Phase 6: the route's targets in order, with fallback and retry rounds.
pub async fn forward(
    gateway: &Gateway,
    context: &mut RequestContext,
    routed: &Routed<'_>,
) -> GatewayResult<Response<ResponseBody>> {
    let (request, route) = (&routed.request, &routed.route);
    let operation = match context.endpoint {
        Endpoint::Embeddings => Operation::Embeddings,
        Endpoint::CountTokens => Operation::CountTokens,
        _ => Operation::Chat,
    };
    if operation == Operation::CountTokens && !route.targets.iter().any(|t| t.provider.protocol == Protocol::Anthropic)
    {
        // No Anthropic upstream to ask: count locally with the model's tokenizer.
        let tokens = routed.prompt_tokens.count().await;
        return Ok(json_response(StatusCode::OK, Bytes::from(format!("{{\"input_tokens\":{tokens}}}"))));
    }

    // Routing asks for the exact count only when a target's context window is tight; for a large prompt
    // that count is done here, off the runtime workers, instead of inside the (synchronous) strategy.
    let reserved_output = request.probe.max_output_tokens.unwrap_or(0);
    let tight = route
        .targets
        .iter()
        .any(|t| t.context_window.is_some_and(|window| request.input_bound.saturating_add(reserved_output) > window));
    if tight && context.body.len() >= 64 * 1024 {
        routed.prompt_tokens.count().await;
    }
    let exact_prompt = || routed.prompt_tokens.count_now();
    let output = match operation {
        Operation::Embeddings | Operation::CountTokens => 0,
        Operation::Chat => request.probe.max_output_tokens.unwrap_or_else(|| route.default_max_tokens()),
    };
    let reserved = match operation {
        Operation::Chat => request.probe.max_output_tokens.unwrap_or(0),
        _ => 0,
    };
    let hints = RequestHints::new(
        request.probe.prompt_bytes as u64,
        request.probe.message_count as u64,
        request.input_bound,
        output,
        reserved,
        &exact_prompt,
    );
    let rounds = 1 + route.retry.map_or(0, |policy| policy.attempts);
    let mut last_error: Option<GatewayError> = None;
    for round in 0..rounds {
        if round > 0 {
            let jitter = rand::random::<f64>();
            let Some(delay) = retry_delay(route.retry, round, last_error.as_ref(), jitter) else {
                break;
            };
            tracing::debug!(route = %route.name, round, delay_ms = delay.as_millis() as u64, "retrying the route");
            tokio::time::sleep(delay).await;
        }
        let order = route.attempt_order(&hints);
        if let Some(done) = try_targets(gateway, context, routed, order, operation, &mut last_error).await {
            return done;
        }
        if last_error.is_none() {
            break;
        }
    }
    Err(last_error.unwrap_or_else(|| {
        GatewayError::invalid_request(format!("model `{}` has no target that supports this endpoint", route.name))
    }))
}

/// One round over the route's targets in `order`. `Some` ends the request (served, or an error
/// that must not fall back); `None` when every target failed, the last failure in `last_error`.
/// Endpoints whose breaker refuses (open, or a half-open probe already out) are tried last, only when
/// everything else failed.
async fn try_targets(
    gateway: &Gateway,
    context: &mut RequestContext,
    routed: &Routed<'_>,
    order: Vec<usize>,
    operation: Operation,
    last_error: &mut Option<GatewayError>,
) -> Option<GatewayResult<Response<ResponseBody>>> {
    let route = &routed.route;
    let mut queue: std::collections::VecDeque<usize> = order.into();
    let mut deferred = Vec::new();
    let mut last_resort = false;
    loop {
        let Some(index) = queue.pop_front() else {
            if last_resort || deferred.is_empty() {
                return None;
            }
            last_resort = true;
            queue.extend(deferred.drain(..));
            continue;
        };
        let target = &route.targets[index];
        let capable = match operation {
            Operation::Embeddings => target.provider.protocol == Protocol::OpenAi,
            Operation::CountTokens => target.provider.protocol == Protocol::Anthropic,
            Operation::Chat => true,
        };
        if !capable {
            continue;
        }
        if !last_resort && !target.endpoint.admit(monotonic_ms()) {
            deferred.push(index);
            continue;
        }
        match attempt(gateway, context, routed, target, operation).await {
            Ok(mut response) => {
                target.endpoint.record_success();
                response.headers_mut().insert(crate::names::X_TOLLGATE_TARGET, target.header.clone());
                return Some(Ok(response));
            }
            Err(err) => {
                let reason = target.endpoint.record_failure(&err);
                if !route.falls_back_on(&err) {
                    return Some(Err(err));
                }
                target.metrics.fallbacks.inc();
                if let Some(reason) = reason {
                    target.metrics.record_fallback_reason(reason);
                }
                tracing::info!(route = %route.name, provider = %target.provider.name, model = %target.upstream_model, error = %err, "target failed; trying the next one");
                *last_error = Some(err);
            }
        }
    }
}

/// The pause before retry round `round` (1-based): exponential backoff with "equal jitter" (between half
/// and all of the step, so retries from many clients and nodes do not arrive in lockstep; `jitter` is
/// uniform in [0, 1)), or the upstream's `Retry-After` when longer. `None` when the wait would exceed
/// `max_backoff_ms`: the caller gets the error (with its `Retry-After`) instead of a request held open for
/// long.
fn retry_delay(
    policy: Option<crate::config::RetryPolicy>,
    round: u32,
    last_error: Option<&GatewayError>,
    jitter: f64,
) -> Option<std::time::Duration> {
    let policy = policy?;
    let last_error = last_error?;
    let step = policy.backoff_ms.saturating_mul(1u64 << round.saturating_sub(1).min(20)).min(policy.max_backoff_ms);
    let backoff = step / 2 + (step as f64 / 2.0 * jitter.clamp(0.0, 1.0)).round() as u64;
    let wanted = match last_error.retry_after {
        Some(seconds) => seconds.saturating_mul(1000).max(backoff),
        None => backoff,
    };
    (wanted <= policy.max_backoff_ms).then(|| std::time::Duration::from_millis(wanted))
}

/// One upstream attempt. An `Err` means nothing was sent to the client yet.
async fn attempt(
    gateway: &Gateway,
    context: &mut RequestContext,
    routed: &Routed<'_>,
    target: &Target,
    operation: Operation,
) -> GatewayResult<Response<ResponseBody>> {
    let (request, route) = (&routed.request, &*routed.route);
    let upstream_protocol = target.provider.protocol;
    // Every attempt is reserved separately: the provider bills each one.
    let admission = admit_noted(gateway, context, routed, operation).await?;
    let output_cap = admission.as_ref().map(|a| a.output_cap);
    let rate_headers = admission.as_ref().map(|a| (a.limit, a.remaining, a.reset_seconds));
    let (body, dropped) =
        target_body(context.endpoint, context.caller, request, &context.body, route, target, output_cap)?;
    let sent_at = Instant::now();
    let mut meter = meter_for(gateway, context, routed, target, admission, sent_at);
    let attempt_span = context.span.attempt(&target.names);
    let upstream_request = UpstreamRequest {
        operation,
        body,
        stream: request.probe.stream,
        client_headers: &context.headers,
        trace_context: attempt_span.trace_headers(),
    };
    note_target(&context.span, target, &mut meter);
    let result = target.provider.send(upstream_request).await;
    note_result(attempt_span, &result);
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            context.upstream_wait += sent_at.elapsed();
            if err.upstream_may_bill {
                // The request went out (a timeout, a connection lost after sending): the provider may be
                // generating and will bill it.
                meter.finish(Outcome::UpstreamError, None, "");
            } else {
                meter.finish_not_billed(Outcome::UpstreamError);
            }
            return Err(err);
        }
    };
    let (parts, upstream_body) = response.into_parts();
    let timeouts = target.provider.timeouts;

    if !parts.status.is_success() {
        let error_body = read_body(upstream_body, 1024 * 1024, timeouts.idle).await.unwrap_or_default();
        context.upstream_wait += sent_at.elapsed();
        return Err(refused_by_upstream(&mut meter, target, &parts, error_body));
    }

    // An Anthropic caller gets thinking blocks only when it asked for them, as from Anthropic itself.
    let show_reasoning = context.caller == Protocol::OpenAi || caller_enabled_thinking(request);
    let redaction = super::redact_out::OutputRedaction::for_request(context, routed);
    let content = super::trace_content::ContentCapture::for_request(context, routed);
    let mut response = if request.probe.stream {
        let mut translator = StreamTranslator::new(upstream_protocol, context.caller, request.probe.include_usage)
            .with_reasoning(show_reasoning);
        if StreamTranslator::announces_input_tokens(upstream_protocol, context.caller) {
            translator = translator.with_input_tokens(routed.prompt_tokens.count().await);
        }
        let redaction = redaction.map(|redaction| redaction.stream(context.caller));
        let body = StreamingBody::new(upstream_body, translator, context.caller, timeouts.idle, meter)
            .with_redaction(redaction)
            .with_content(content);
        stream_response(body, timeouts, sent_at).await
    } else {
        let translation = Translation { upstream: upstream_protocol, show_reasoning, redaction, content };
        complete_response(gateway, context, upstream_body, translation, operation, timeouts.idle, meter).await
    };
    context.upstream_wait += sent_at.elapsed();
    if let Ok(response) = &mut response {
        add_response_headers(response.headers_mut(), &parts.headers, rate_headers, &dropped);
    }
    response
}

/// Budget admission for one attempt, noted on the request's span (refused, or admitted with its output cap).
async fn admit_noted(
    gateway: &Gateway,
    context: &RequestContext,
    routed: &Routed<'_>,
    operation: Operation,
) -> GatewayResult<Option<Admission>> {
    let admission = admit(gateway, context, routed, operation).await.inspect_err(|err| {
        context.span.record("tollgate.budget", "refused");
        gateway.metrics.record_budget_refusal(&routed.principal.org, &err.kind.label());
    })?;
    if let Some(admission) = &admission {
        context.span.record("tollgate.budget", "admitted");
        context.span.record("tollgate.budget.output_cap", admission.output_cap);
    }
    Ok(admission)
}

/// The meter of one attempt: its reservation, the endpoint's in-flight count and the usage report sink.
fn meter_for(
    gateway: &Gateway,
    context: &RequestContext,
    routed: &Routed<'_>,
    target: &Target,
    admission: Option<Admission>,
    sent_at: Instant,
) -> RequestMeter {
    let route = &*routed.route;
    let estimator = UsageEstimator { encoding: route.encoding, request_body: context.body.clone() };
    let mut meter = RequestMeter::new(target.metrics.clone(), route.price, sent_at, estimator, route.name.clone());
    meter.set_admission(admission);
    meter.set_endpoint(target.endpoint.begin());
    if let Some(aggregator) = &gateway.usage {
        meter.set_usage_sink(Some(crate::budget::UsageSink {
            aggregator: aggregator.clone(),
            principal: routed.principal.clone(),
            model: route.name.clone(),
        }));
    }
    meter
}

/// The request's span names the attempt's target; the meter keeps the span open until the answer ends.
fn note_target(span: &TraceSpan, target: &Target, meter: &mut RequestMeter) {
    if span.is_none() {
        return;
    }
    let names = &target.names;
    span.record("gen_ai.provider.name", &names.provider);
    span.record("server.address", &names.server_address);
    span.record("tollgate.target", &names.label);
    span.record("gen_ai.response.model", &names.model);
    meter.set_span(span.clone());
}

/// The attempt's span gets the upstream's status, or the error; then it ends.
fn note_result(attempt_span: TraceSpan, result: &GatewayResult<Response<crate::providers::UpstreamBody>>) {
    match result {
        Ok(response) => {
            attempt_span.record("http.response.status_code", response.status().as_u16());
            if !response.status().is_success() {
                attempt_span.fail(response.status().as_str());
            }
        }
        Err(err) => {
            attempt_span.fail(err.kind.label().as_ref());
        }
    }
}

/// An error status from the upstream, metered: a request it refused as malformed is the caller's doing and
/// must not move the endpoint's error rate (a tenant could otherwise force a canary rollback for everyone).
fn refused_by_upstream(
    meter: &mut RequestMeter,
    target: &Target,
    parts: &http::response::Parts,
    error_body: Bytes,
) -> GatewayError {
    let status = parts.status.as_u16();
    let callers_fault = (400..500).contains(&status) && !matches!(status, 401 | 403 | 408 | 429);
    meter.finish_not_billed(if callers_fault { Outcome::Rejected } else { Outcome::UpstreamError });
    upstream_error(target.provider.protocol, &target.provider.name, status, &parts.headers, error_body)
}

/// The Anthropic caller's `thinking` is `{"type": "enabled", …}`.
fn caller_enabled_thinking(request: &super::prepare::ParsedRequest<'_>) -> bool {
    request.probe.object.get("thinking").is_some_and(|raw| {
        serde_json::from_str::<crate::api::anthropic::Thinking>(raw.get()).is_ok_and(|thinking| thinking.enabled())
    })
}

/// The upstream's request id (so callers can quote it to the provider), the provider's rate-limit headers,
/// and the budget's token headers.
fn add_response_headers(
    headers: &mut http::HeaderMap,
    upstream: &http::HeaderMap,
    rate: Option<(u64, u64, Option<u64>)>,
    dropped: &[String],
) {
    if !dropped.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&dropped.join(", ")) {
            headers.insert(crate::names::X_TOLLGATE_DROPPED_PARAMS, value);
        }
    }
    for name in [crate::names::X_REQUEST_ID, crate::names::REQUEST_ID] {
        if let Some(value) = upstream.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    // The provider's own limits (OpenAI `x-ratelimit-*`, Anthropic `anthropic-ratelimit-*`), as the SDKs
    // expose them; a budget's token headers below replace the provider's of the same name.
    for (name, value) in upstream {
        let name_text = name.as_str();
        if name_text.starts_with("x-ratelimit-") || name_text.starts_with("anthropic-ratelimit-") {
            headers.insert(name.clone(), value.clone());
        }
    }
    if let Some((limit, remaining, reset)) = rate {
        headers.insert(crate::names::X_RATELIMIT_LIMIT_TOKENS, HeaderValue::from(limit));
        headers.insert(crate::names::X_RATELIMIT_REMAINING_TOKENS, HeaderValue::from(remaining));
        if let Some(reset) = reset {
            if let Ok(value) = HeaderValue::from_str(&format!("{reset}s")) {
                headers.insert(crate::names::X_RATELIMIT_RESET_TOKENS, value);
            }
        }
    }
}

/// Budget admission for one attempt: the reservation is an upper bound of what the provider can bill — the
/// input at a free bound (every tokenized field, media parts, capped by the context window), and `n` ×
/// the output cap. Only when that does not fit is the prompt counted exactly (with a margin for tokenizer
/// differences), so near exhaustion no request is refused for a loose bound.
async fn admit(
    gateway: &Gateway,
    context: &RequestContext,
    routed: &Routed<'_>,
    operation: Operation,
) -> GatewayResult<Option<crate::budget::Admission>> {
    let Some(budget) = &gateway.budget else {
        return Ok(None);
    };
    let (principal, request, route) = (&routed.principal, &routed.request, &routed.route);
    if context.snapshot.budgets.is_empty() || operation == Operation::CountTokens {
        return Ok(None);
    }
    let wanted_output = match operation {
        Operation::Embeddings => 0,
        _ => request.probe.max_output_tokens.unwrap_or_else(|| route.default_max_tokens()),
    };
    // The provider refuses a prompt longer than the context window, so it never bills more input than that.
    let window = route.context_window.unwrap_or(u64::MAX);
    let bound = request.input_bound.min(window);
    let budgets = &context.snapshot.budgets;
    match budget.admit(budgets, principal, route.price, bound, wanted_output, request.probe.choices).await {
        Err(err) if err.kind == crate::error::ErrorKind::BudgetExhausted => {
            let exact = routed.prompt_tokens.count().await;
            let media = crate::tokens::MEDIA_PART_TOKENS * crate::tokens::media_parts(&context.body);
            let with_margin = exact.saturating_add(exact / 4).saturating_add(8).saturating_add(media).min(window);
            if with_margin >= bound {
                return Err(err);
            }
            budget.admit(budgets, principal, route.price, with_margin, wanted_output, request.probe.choices).await
        }
        other => other,
    }
}

async fn stream_response(
    mut body: StreamingBody,
    timeouts: crate::providers::Timeouts,
    sent_at: Instant,
) -> GatewayResult<Response<ResponseBody>> {
    // Wait for the first event within what is left of the first-byte budget, so a target that dies
    // before saying anything is replaced transparently.
    let remaining = timeouts.first_byte.saturating_sub(sent_at.elapsed());
    let primed = match tokio::time::timeout(remaining, body.prime()).await {
        Ok(result) => result,
        Err(_) => Err(GatewayError::upstream_timeout(format!(
            "upstream sent no event within {} ms",
            timeouts.first_byte.as_millis()
        ))),
    };
    if let Err(err) = primed {
        body.abandon(&err);
        return Err(err);
    }
    let mut response = Response::new(ResponseBody::Stream(Box::new(body)));
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(crate::names::X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    Ok(response)
}

/// How a complete response is carried to the caller: the upstream's protocol, and whether its reasoning
/// is shown (thinking blocks to an Anthropic caller that enabled thinking).
struct Translation {
    upstream: Protocol,
    show_reasoning: bool,
    /// PII guardrails with action `redact` rewrite the caller's texts.
    redaction: Option<super::redact_out::OutputRedaction>,
    /// The completion goes on the span (`trace_content` routes).
    content: Option<super::trace_content::ContentCapture>,
}

async fn complete_response(
    gateway: &Gateway,
    context: &RequestContext,
    upstream_body: UpstreamBody,
    translation: Translation,
    operation: Operation,
    idle: std::time::Duration,
    mut meter: RequestMeter,
) -> GatewayResult<Response<ResponseBody>> {
    let bytes = match read_body(upstream_body, gateway.limits.max_response_bytes, idle).await {
        Ok(bytes) => bytes,
        Err(err) => {
            meter.finish(Outcome::UpstreamError, None, "");
            return Err(err);
        }
    };
    let processed = match (operation, translation.upstream, context.caller) {
        (Operation::Embeddings, _, _) => embeddings_facts(&bytes).map(|usage| (bytes.clone(), facts(usage))),
        (Operation::CountTokens, _, _) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .filter(|v| v.get("input_tokens").is_some())
            .map(|_| (bytes.clone(), facts(Some(Default::default()))))
            .ok_or_else(|| GatewayError::upstream_invalid("upstream returned an invalid count_tokens response")),
        (Operation::Chat, Protocol::OpenAi, Protocol::OpenAi) => {
            translate_response::probe_openai(&bytes).map(|facts| (bytes.clone(), facts))
        }
        (Operation::Chat, Protocol::Anthropic, Protocol::Anthropic) => {
            translate_response::probe_anthropic(&bytes).map(|facts| (bytes.clone(), facts))
        }
        (Operation::Chat, Protocol::Anthropic, Protocol::OpenAi) => translate_response::anthropic_to_openai(&bytes),
        (Operation::Chat, Protocol::OpenAi, Protocol::Anthropic) => {
            translate_response::openai_to_anthropic(&bytes, translation.show_reasoning)
        }
    };
    match processed {
        Ok((out, facts)) => {
            meter.set_finish_reason(facts.finish_reason);
            meter.finish(Outcome::Ok, facts.usage, &facts.text);
            let out = match (&translation.redaction, operation) {
                (Some(redaction), Operation::Chat) => redaction.complete(context.caller, out),
                _ => out,
            };
            if let (Some(content), Operation::Chat) = (&translation.content, operation) {
                content.output_body(context.caller, &out);
            }
            Ok(json_response(StatusCode::OK, out))
        }
        Err(err) => {
            meter.finish(Outcome::UpstreamError, None, "");
            Err(err)
        }
    }
}

/// Facts of an answer that is not a chat (embeddings, token counts): its usage only.
fn facts(usage: Option<crate::api::Usage>) -> translate_response::ResponseFacts {
    translate_response::ResponseFacts { usage, finish_reason: None, text: String::new() }
}

fn embeddings_facts(bytes: &[u8]) -> GatewayResult<Option<crate::api::Usage>> {
    #[derive(serde::Deserialize)]
    struct EmbeddingsProbe {
        #[serde(default)]
        usage: Option<crate::api::openai::UsageWire>,
        #[allow(dead_code)]
        data: serde::de::IgnoredAny,
    }
    let probe: EmbeddingsProbe = serde_json::from_slice(bytes).map_err(|err| {
        GatewayError::upstream_invalid(format!("upstream returned an invalid embeddings response: {err}"))
    })?;
    Ok(probe.usage.map(|u| u.to_usage()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryPolicy;

    #[test]
    fn retry_delay_backs_off_exponentially_and_honours_retry_after_up_to_the_cap() {
        let policy = Some(RetryPolicy { attempts: 3, backoff_ms: 100, max_backoff_ms: 1_000 });
        let busy = GatewayError::upstream_status(503, "busy");
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
        assert_eq!(ms(retry_delay(policy, 1, Some(&busy), 1.0)), Some(100));
        assert_eq!(ms(retry_delay(policy, 2, Some(&busy), 1.0)), Some(200));
        assert_eq!(ms(retry_delay(policy, 2, Some(&busy), 0.0)), Some(100), "jitter takes up to half the step off");
        assert_eq!(ms(retry_delay(policy, 2, Some(&busy), 0.5)), Some(150));
        assert_eq!(ms(retry_delay(policy, 5, Some(&busy), 1.0)), Some(1_000), "capped");
        let later = GatewayError::upstream_status(429, "slow down").with_retry_after(Some(1));
        assert_eq!(ms(retry_delay(policy, 1, Some(&later), 0.3)), Some(1_000), "Retry-After wins over the backoff");
        let much_later = GatewayError::upstream_status(429, "slow down").with_retry_after(Some(30));
        assert_eq!(retry_delay(policy, 1, Some(&much_later), 0.3), None, "too long to hold the request");
        assert_eq!(retry_delay(None, 1, Some(&busy), 0.3), None);
    }
}
