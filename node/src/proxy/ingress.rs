//! Phases 1–3: which API was called, who is calling, and the request body (bounded).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::RequestContext;
use crate::api::Protocol;
use crate::auth::{self, Principal};
use crate::error::{GatewayError, GatewayResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
    Models,
    Messages,
    CountTokens,
    NotFound,
    MethodNotAllowed,
}

/// Phase 1. Anthropic SDKs send `anthropic-version`; that picks the error shape where the path is shared.
pub fn classify(method: &Method, path: &str, headers: &HeaderMap) -> (Endpoint, Protocol) {
    let anthropic_client = headers.contains_key("anthropic-version");
    let guess = if anthropic_client { Protocol::Anthropic } else { Protocol::OpenAi };
    let path = path.trim_end_matches('/');
    let (endpoint, protocol, expected) = match path {
        "/v1/chat/completions" => (Endpoint::ChatCompletions, Protocol::OpenAi, Method::POST),
        "/v1/embeddings" => (Endpoint::Embeddings, Protocol::OpenAi, Method::POST),
        "/v1/models" => (Endpoint::Models, guess, Method::GET),
        "/v1/messages" => (Endpoint::Messages, Protocol::Anthropic, Method::POST),
        "/v1/messages/count_tokens" => (Endpoint::CountTokens, Protocol::Anthropic, Method::POST),
        _ => return (Endpoint::NotFound, guess),
    };
    if *method != expected {
        return (Endpoint::MethodNotAllowed, protocol);
    }
    (endpoint, protocol)
}

/// Phase 2.
pub fn authenticate(context: &RequestContext) -> GatewayResult<Arc<Principal>> {
    auth::authenticate(context.snapshot.keys.as_ref(), &context.headers)
}

/// Phase 3: JSON only, at most `limit` bytes (413 beyond, checked before reading when the length is known),
/// all of it within `deadline` (408 after: a client trickling a body must not hold a connection forever).
pub async fn read_body(
    headers: &HeaderMap,
    incoming: Incoming,
    limit: usize,
    deadline: std::time::Duration,
) -> GatewayResult<Bytes> {
    if let Some(content_type) = headers.get(http::header::CONTENT_TYPE) {
        let essence = content_type.to_str().unwrap_or("").split(';').next().unwrap_or("").trim();
        let json_suffix = essence.len() >= 5 && essence.as_bytes()[essence.len() - 5..].eq_ignore_ascii_case(b"+json");
        if !(essence.eq_ignore_ascii_case("application/json") || json_suffix || essence.is_empty()) {
            return Err(GatewayError::unsupported_media_type(&essence.to_ascii_lowercase()));
        }
    }
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(GatewayError::payload_too_large(limit));
    }
    let Ok(collected) = tokio::time::timeout(deadline, Limited::new(incoming, limit).collect()).await else {
        return Err(GatewayError::request_timeout(format!(
            "the request body did not arrive within {} ms",
            deadline.as_millis()
        )));
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(GatewayError::payload_too_large(limit))
        }
        Err(err) => Err(GatewayError::invalid_request(format!("could not read the request body: {err}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths_and_methods() {
        let none = HeaderMap::new();
        assert_eq!(
            classify(&Method::POST, "/v1/chat/completions", &none),
            (Endpoint::ChatCompletions, Protocol::OpenAi)
        );
        assert_eq!(classify(&Method::POST, "/v1/messages", &none), (Endpoint::Messages, Protocol::Anthropic));
        assert_eq!(classify(&Method::GET, "/v1/messages", &none), (Endpoint::MethodNotAllowed, Protocol::Anthropic));
        assert_eq!(classify(&Method::GET, "/v2/x", &none).0, Endpoint::NotFound);
        let mut anthropic = HeaderMap::new();
        anthropic.insert("anthropic-version", http::HeaderValue::from_static("2023-06-01"));
        assert_eq!(classify(&Method::GET, "/v1/models", &anthropic), (Endpoint::Models, Protocol::Anthropic));
    }
}
