//! Phase 5b: guardrails on the way in. The route's guardrails and the caller's org's run on every text of
//! the request (every message, not only the last), each with its action:
//!
//! - `block`: the request is refused with 400 `guardrail_blocked`, naming the guardrail and what it found
//!   (an entity type or the injection rules, never the text), before anything is sent upstream;
//! - `flag`: the request goes on, counted in `tollgate_guardrail_events_total`, on the trace
//!   (`tollgate.guardrails.flagged`) and in the log;
//! - `redact` (PII only): the matched spans are rewritten (`[REDACTED:EMAIL]`, a hash or a mask) in the body
//!   the provider receives.
//!
//! Prompt injection is looked for in user and tool content (the operator writes the system prompt; the
//! assistant's turns are the model's); PII in every role's text. With no guardrail on the route or the org
//! the phase costs one lookup: the body is parsed only when some guardrail applies.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::{Endpoint, RequestContext, Routed};
use crate::api::Protocol;
use crate::error::{GatewayError, GatewayResult};
use crate::gateway::Gateway;
use crate::guard::{Check, Guardrail, GuardrailAction, InjectionDetector, InjectionVerdict, PiiDetector};

/// Whose words a text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    fn parse(role: Option<&str>) -> Role {
        match role {
            Some("system" | "developer") => Role::System,
            Some("assistant") => Role::Assistant,
            Some("tool" | "function") => Role::Tool,
            _ => Role::User,
        }
    }
}

/// The guardrails that apply to this request: the route's, then the org's (each once).
pub(super) fn applicable(context: &RequestContext, routed: &Routed<'_>) -> Vec<Arc<Guardrail>> {
    let mut all: Vec<Arc<Guardrail>> = routed.route.guardrails.clone();
    if let Some(org) = context.snapshot.org_guardrails.get(&routed.principal.org) {
        for guardrail in org {
            if !all.iter().any(|g| g.name == guardrail.name) {
                all.push(guardrail.clone());
            }
        }
    }
    all
}

/// Bodies above this size are checked on the blocking pool, off the runtime's workers (the detectors are
/// linear in the text, tens of microseconds per typical prompt).
const OFF_REACTOR_BYTES: usize = 64 * 1024;

/// What the guardrails found: each match with its guardrail, and the body with redactions applied.
struct Evaluation {
    matches: Vec<(Arc<Guardrail>, String)>,
    redacted: Option<Bytes>,
}

/// Runs the input guardrails. `Ok(Some(body))`: the request goes on with this (redacted) body instead.
pub(super) async fn check_input(
    gateway: &Gateway,
    context: &RequestContext,
    routed: &Routed<'_>,
) -> GatewayResult<Option<Bytes>> {
    let guardrails = applicable(context, routed);
    if guardrails.is_empty() || context.endpoint == Endpoint::CountTokens {
        return Ok(None);
    }
    let (body, endpoint, caller) = (context.body.clone(), context.endpoint, context.caller);
    let evaluation = if body.len() > OFF_REACTOR_BYTES {
        tokio::task::spawn_blocking(move || evaluate(&guardrails, &body, endpoint, caller))
            .await
            .map_err(|err| GatewayError::internal(format!("guardrail task failed: {err}")))??
    } else {
        evaluate(&guardrails, &body, endpoint, caller)?
    };
    let mut flagged = Vec::new();
    for (guardrail, found) in &evaluation.matches {
        gateway.metrics.record_guardrail(&guardrail.name, guardrail.action);
        match guardrail.action {
            GuardrailAction::Block => {
                context.span.record("tollgate.guardrails.blocked", guardrail.name.as_str());
                tracing::info!(guardrail = %guardrail.name, org = %routed.principal.org, "request blocked by a guardrail");
                return Err(GatewayError::guardrail_blocked(&guardrail.name, found, "messages"));
            }
            GuardrailAction::Flag => flagged.push(guardrail.name.as_str()),
            GuardrailAction::Redact => {}
        }
    }
    if !flagged.is_empty() {
        let names = flagged.join(",");
        context.span.record("tollgate.guardrails.flagged", names.as_str());
        tracing::info!(guardrails = %names, org = %routed.principal.org, route = %routed.route.name, "request flagged by guardrails");
    }
    Ok(evaluation.redacted)
}

/// Every guardrail over every text; stops at the first `block` (nothing after it matters).
fn evaluate(
    guardrails: &[Arc<Guardrail>],
    raw: &[u8],
    endpoint: Endpoint,
    caller: Protocol,
) -> GatewayResult<Evaluation> {
    let mut body: Value = serde_json::from_slice(raw)
        .map_err(|err| GatewayError::invalid_request(format!("request body is not valid JSON: {err}")))?;
    let mut matches = Vec::new();
    let mut redacted = false;
    for guardrail in guardrails {
        let found = match &guardrail.check {
            Check::Injection(detector) => injection(detector, &mut body, endpoint, caller),
            Check::Pii(detector) => {
                let redact = guardrail.action == GuardrailAction::Redact;
                let found = pii(detector, redact, &mut body, endpoint, caller);
                redacted |= redact && found.is_some();
                found
            }
        };
        if let Some(found) = found {
            let block = guardrail.action == GuardrailAction::Block;
            matches.push((guardrail.clone(), found));
            if block {
                break;
            }
        }
    }
    let redacted = if redacted {
        let bytes = serde_json::to_vec(&body).map_err(|err| GatewayError::internal(err.to_string()))?;
        Some(Bytes::from(bytes))
    } else {
        None
    };
    Ok(Evaluation { matches, redacted })
}

/// The worst injection score over user and tool texts, described, when it reaches the threshold.
fn injection(detector: &InjectionDetector, body: &mut Value, endpoint: Endpoint, caller: Protocol) -> Option<String> {
    let mut worst: Option<InjectionVerdict> = None;
    for_each_text(body, endpoint, caller, &mut |role, text| {
        if matches!(role, Role::User | Role::Tool) {
            let verdict = detector.scan(text);
            if verdict.flagged && worst.as_ref().is_none_or(|w| verdict.score > w.score) {
                worst = Some(verdict);
            }
        }
    });
    worst.map(|verdict| {
        let mut rules: Vec<&str> = verdict.matches.iter().map(|m| m.rule).collect();
        rules.dedup();
        format!("prompt injection (score {:.2}; {})", verdict.score, rules.join(", "))
    })
}

/// The entity types found in any text (rewritten in place when `redact`), described.
fn pii(detector: &PiiDetector, redact: bool, body: &mut Value, endpoint: Endpoint, caller: Protocol) -> Option<String> {
    let mut kinds = Vec::new();
    for_each_text(body, endpoint, caller, &mut |_, text| {
        let entities = detector.find(text);
        if entities.is_empty() {
            return;
        }
        kinds.extend(entities.iter().map(|entity| entity.kind));
        if redact {
            *text = detector.rewrite(text, &entities);
        }
    });
    kinds.sort();
    kinds.dedup();
    (!kinds.is_empty()).then(|| {
        let names: Vec<String> = kinds.iter().map(ToString::to_string).collect();
        format!("personal data or secrets ({})", names.join(", "))
    })
}

/// Calls `visit` on every text of the request that a model reads, with whose words it is; `visit` may
/// rewrite the text in place.
fn for_each_text(body: &mut Value, endpoint: Endpoint, caller: Protocol, visit: &mut dyn FnMut(Role, &mut String)) {
    if endpoint == Endpoint::Embeddings {
        match body.get_mut("input") {
            Some(Value::String(text)) => visit(Role::User, text),
            Some(Value::Array(items)) => {
                for item in items {
                    if let Value::String(text) = item {
                        visit(Role::User, text);
                    }
                }
            }
            _ => {}
        }
        return;
    }
    if caller == Protocol::Anthropic {
        if let Some(system) = body.get_mut("system") {
            visit_content(system, Role::System, visit);
        }
    }
    let Some(Value::Array(messages)) = body.get_mut("messages") else { return };
    for message in messages {
        let role = Role::parse(message.get("role").and_then(Value::as_str));
        if let Some(content) = message.get_mut("content") {
            visit_content(content, role, visit);
        }
    }
}

/// A `content` in either API: a string, or parts/blocks whose `text` is visited; Anthropic `tool_result`
/// blocks hold a nested content of the tool's words.
fn visit_content(content: &mut Value, role: Role, visit: &mut dyn FnMut(Role, &mut String)) {
    match content {
        Value::String(text) => visit(role, text),
        Value::Array(parts) => {
            for part in parts {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default().to_owned();
                match kind.as_str() {
                    "text" => {
                        if let Some(Value::String(text)) = part.get_mut("text") {
                            visit(role, text);
                        }
                    }
                    "tool_result" => {
                        if let Some(inner) = part.get_mut("content") {
                            visit_content(inner, Role::Tool, visit);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}
