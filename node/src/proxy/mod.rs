//! The request path, phase by phase (pingora-style). Each phase is one function that takes what it needs
//! and returns a typed result; [`run_phases`] lists them in order, so adding a phase (a guardrail, a cache
//! lookup, a tracing span) is one function and one line there:
//!
//! | # | phase | function | takes | returns |
//! |---|-------|----------|-------|---------|
//! | 1 | classify endpoint | `ingress::classify` | method, path, headers | `Endpoint`, caller `Protocol` |
//! | 2 | authenticate | `ingress::authenticate` | headers, `snapshot.keys` | `Arc<Principal>` |
//! | 3 | read body | `ingress::read_body` | headers, body stream, limits | `Bytes` (in the context) |
//! | 4 | parse + validate | `prepare::parse` | body | `ParsedRequest` (model, stream, limits, bounds) |
//! | 5 | route + limits | `prepare::route` | principal, parsed request, `snapshot.routes` | [`Routed`] |
//! | 5b | guardrails in | `guardrails::check_input` | `Routed`, `snapshot.org_guardrails` | block, flag, or a redacted body (parsed and routed again) |
//! | 5c | prompt on the span | `trace_content::ContentCapture::input` | `Routed` (`trace_content` routes only), body | span attribute |
//! | 6 | upstream attempts | `upstream::forward` | `Routed` | the response (fallback, retries, admission) |
//! | 7 | respond + meter | `upstream` (`stream_response`, `complete_response`), `body`, `meter` | upstream response | client response, metrics |
//!
//! [`RequestContext`] carries only what every phase may read (endpoint, caller, snapshot, headers, body,
//! upstream wait); its fields are private to this module tree. Errors from any phase become the caller's API error
//! shape in one place: [`error_response`].

mod body;
mod guardrails;
mod ingress;
mod meter;
mod prepare;
mod redact_out;
mod trace_content;
mod upstream;

pub use body::ResponseBody;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::api::Protocol;
use crate::auth::Principal;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::names;
use crate::routing::{ControlSnapshot, Route};
use crate::trace_span::TraceSpan;

pub use ingress::Endpoint;

/// What the phases share for one request.
pub struct RequestContext {
    endpoint: Endpoint,
    /// The protocol the caller speaks: errors and responses use its shape.
    caller: Protocol,
    snapshot: Arc<ControlSnapshot>,
    headers: HeaderMap,
    body: Bytes,
    /// Time spent waiting for the upstream, excluded from the gateway's overhead.
    upstream_wait: Duration,
    /// The request's trace span (`TraceSpan::none()` with tracing off); phases record what they learn on it.
    span: TraceSpan,
}

/// Phase 5's result: who asks, what they asked, the route it may take, and the prompt's exact token count
/// once some phase needed it (counted at most once per request).
pub struct Routed<'a> {
    principal: Arc<Principal>,
    request: prepare::ParsedRequest<'a>,
    route: Arc<Route>,
    prompt_tokens: PromptTokens,
}

/// The prompt's exact token count with the route's tokenizer: computed at most once, by whichever phase
/// needs it first (the context-window check, routing by context window, budget admission near
/// exhaustion), large prompts off the runtime's workers.
#[derive(Clone)]
struct PromptTokens {
    encoding: crate::tokens::Encoding,
    body: Bytes,
    count: Arc<std::sync::OnceLock<u64>>,
}

impl PromptTokens {
    fn new(encoding: crate::tokens::Encoding, body: Bytes) -> PromptTokens {
        PromptTokens { encoding, body, count: Arc::default() }
    }

    async fn count(&self) -> u64 {
        if let Some(count) = self.count.get() {
            return *count;
        }
        let counted = crate::tokens::count_prompt_off_reactor(self.encoding, &self.body).await;
        *self.count.get_or_init(|| counted)
    }

    /// On this thread: for the synchronous routing strategy, when no phase counted yet.
    fn count_now(&self) -> u64 {
        *self.count.get_or_init(|| crate::tokens::count_prompt(self.encoding, &self.body))
    }
}

/// Serves one request on the API listener.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    gateway.metrics.in_flight.inc();
    let started = Instant::now();
    let (parts, incoming) = request.into_parts();
    let (endpoint, caller) = ingress::classify(&parts.method, parts.uri.path(), &parts.headers);
    let span = TraceSpan::request(&parts.method, parts.uri.path(), &parts.headers);
    let mut context = RequestContext {
        endpoint,
        caller,
        snapshot: gateway.snapshot(),
        headers: parts.headers,
        body: Bytes::new(),
        upstream_wait: Duration::ZERO,
        span,
    };
    let mut response = match run_phases(&gateway, &mut context, incoming).await {
        Ok(response) => response,
        Err(err) => {
            context.span.fail(err.kind.label().as_ref());
            error_response(&err, context.caller)
        }
    };
    context.span.record("http.response.status_code", response.status().as_u16());
    let headers = response.headers_mut();
    headers.insert(names::X_TOLLGATE_NODE, gateway.node_header.clone());
    let overhead = started.elapsed().saturating_sub(context.upstream_wait);
    headers.insert(names::X_TOLLGATE_OVERHEAD_US, HeaderValue::from(overhead.as_micros() as u64));
    gateway.metrics.overhead.observe(overhead);
    gateway.metrics.record_response(response.status().as_u16());
    gateway.metrics.in_flight.dec();
    response
}

async fn run_phases(
    gateway: &Gateway,
    context: &mut RequestContext,
    incoming: Incoming,
) -> Result<Response<ResponseBody>, GatewayError> {
    if gateway.is_shutting_down() {
        return Err(GatewayError::shutting_down());
    }
    if !gateway.is_loaded() {
        // Before a key can be checked against a current state (see `control::spawn_catch_up`).
        return Err(GatewayError::not_ready());
    }
    if context.endpoint == Endpoint::NotFound {
        return Err(GatewayError::not_found(
            "no such endpoint; see /v1/chat/completions, /v1/messages, /v1/embeddings, /v1/models",
        ));
    }
    if context.endpoint == Endpoint::MethodNotAllowed {
        return Err(GatewayError::method_not_allowed());
    }
    let principal = ingress::authenticate(context)?;
    context.span.record("tollgate.org", principal.org.as_str());
    context.span.record("tollgate.key_id", principal.key_id.as_str());
    if let Some(team) = &principal.team {
        context.span.record("tollgate.team", team.as_str());
    }
    if context.endpoint == Endpoint::Models {
        return Ok(upstream::list_models(context, &principal));
    }
    let body_deadline = Duration::from_millis(gateway.limits.body_timeout_ms);
    context.body = ingress::read_body(&context.headers, incoming, gateway.limits.max_body_bytes, body_deadline).await?;
    let body = context.body.clone();
    let request = prepare::parse(context.endpoint, &body)?;
    let routed = prepare::route(context, principal, request).await?;
    // A redacted body is what the provider gets, and what limits and metering judge: parsed again.
    let redacted_body;
    let routed = match guardrails::check_input(gateway, context, &routed).await? {
        None => routed,
        Some(redacted) => {
            context.body = redacted.clone();
            redacted_body = redacted;
            let request = prepare::parse(context.endpoint, &redacted_body)?;
            prepare::route(context, routed.principal.clone(), request).await?
        }
    };
    record_request(&context.span, context.endpoint, &routed);
    if let Some(content) = trace_content::ContentCapture::for_request(context, &routed) {
        content.input(&context.body, context.endpoint);
    }
    upstream::forward(gateway, context, &routed).await
}

/// The GenAI request attributes, once the request is parsed and routed.
fn record_request(span: &TraceSpan, endpoint: Endpoint, routed: &Routed<'_>) {
    if span.is_none() {
        return;
    }
    let operation = match endpoint {
        Endpoint::Embeddings => "embeddings",
        Endpoint::CountTokens => "count_tokens",
        _ => "chat",
    };
    let model = routed.request.probe.model.as_ref();
    span.set_name(|| {
        let mut name = String::with_capacity(operation.len() + 1 + model.len());
        name.push_str(operation);
        name.push(' ');
        name.push_str(model);
        name
    });
    span.record("gen_ai.operation.name", operation);
    span.record("gen_ai.request.model", model);
    span.record("tollgate.route", &routed.route.name);
    if let Some(max_tokens) = routed.request.probe.max_output_tokens {
        span.record("gen_ai.request.max_tokens", max_tokens);
    }
}

/// The single place an error becomes a response, in the caller's API shape.
pub fn error_response(err: &GatewayError, caller: Protocol) -> Response<ResponseBody> {
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(kind = ?err.kind, source = ?err.source, message = %err.message, "request failed");
    } else {
        tracing::debug!(kind = ?err.kind, message = %err.message, "request rejected");
    }
    let mut response = Response::new(ResponseBody::full(err.body(caller)));
    *response.status_mut() = if status == StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        && caller == Protocol::OpenAi
    {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(retry_after) = err.retry_after_header() {
        headers.insert(http::header::RETRY_AFTER, retry_after);
    }
    response
}
