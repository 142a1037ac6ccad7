//! One error type for the whole request path, rendered into the caller's API shape in exactly one place
//! ([`GatewayError::into_response`]). Modelled on pingora-error: every error knows where it came from and
//! whether trying another upstream target could help.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::protocol::Protocol;

/// Where an error originated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client sent something we cannot serve.
    Downstream,
    /// The upstream provider failed or misbehaved.
    Upstream,
    /// A bug or resource problem inside the gateway.
    Internal,
}

/// What went wrong, coarse enough to pick a status code and an error `type` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    ModelNotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    ContextWindowExceeded,
    /// A guardrail with action `block` matched the request (400 `guardrail_blocked`).
    GuardrailBlocked,
    /// An org/team/key budget has no room for this request (429).
    BudgetExhausted,
    /// Budget allowance used up and the budget authority (Raft leader) unreachable (503).
    BudgetUnavailable,
    /// A per-minute token or request limit (429 with Retry-After).
    RateLimited,
    /// The upstream answered with an error status; the status is kept.
    UpstreamStatus(u16),
    UpstreamConnect,
    UpstreamTimeout,
    UpstreamInvalidResponse,
    ShuttingDown,
    /// The client did not send its request body in time (408).
    RequestTimeout,
    /// A clustered node that has not caught up with the cluster since it started (503, retry shortly).
    NotReady,
    Internal,
}

impl ErrorKind {
    /// A short, low-cardinality name (`error.type` in traces): the upstream's status, else the kind.
    pub fn label(&self) -> std::borrow::Cow<'static, str> {
        let name = match self {
            ErrorKind::UpstreamStatus(status) => return status.to_string().into(),
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::ContextWindowExceeded => "context_window_exceeded",
            ErrorKind::GuardrailBlocked => "guardrail_blocked",
            ErrorKind::BudgetExhausted => "budget_exceeded",
            ErrorKind::BudgetUnavailable => "budget_unavailable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::UpstreamConnect => "upstream_connect",
            ErrorKind::UpstreamTimeout => "timeout",
            ErrorKind::UpstreamInvalidResponse => "upstream_invalid_response",
            ErrorKind::ShuttingDown => "shutting_down",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::NotReady => "not_ready",
            ErrorKind::Internal => "_OTHER",
        };
        name.into()
    }
}

#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub source: ErrorSource,
    pub retryable: bool,
    pub message: String,
    /// A provider's error body in its own protocol, passed through when the caller speaks that protocol.
    pub upstream_body: Option<(Protocol, Bytes)>,
    /// `Retry-After` seconds to surface to the caller.
    pub retry_after: Option<u64>,
    /// Name of the offending request field, when there is one.
    pub param: Option<&'static str>,
    /// The request reached the upstream before it failed (a timeout, a connection lost after sending): the
    /// provider may have generated, and billed, output for it.
    pub upstream_may_bill: bool,
}

pub type GatewayResult<T> = Result<T, GatewayError>;

impl GatewayError {
    fn new(kind: ErrorKind, source: ErrorSource, retryable: bool, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            source,
            retryable,
            message: message.into(),
            upstream_body: None,
            retry_after: None,
            param: None,
            upstream_may_bill: false,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, ErrorSource::Downstream, false, message)
    }

    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Self {
        let mut err = Self::invalid_request(message);
        err.param = Some(param);
        err
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, ErrorSource::Downstream, false, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, ErrorSource::Downstream, false, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, ErrorSource::Downstream, false, message)
    }

    pub fn model_not_found(model: &str) -> Self {
        let mut err = Self::new(
            ErrorKind::ModelNotFound,
            ErrorSource::Downstream,
            false,
            format!("The model `{model}` does not exist or you do not have access to it."),
        );
        err.param = Some("model");
        err
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::PayloadTooLarge,
            ErrorSource::Downstream,
            false,
            format!("request body exceeds the limit of {limit} bytes"),
        )
    }

    /// The prompt is larger than its route accepts (`max_prompt_bytes`): refused before it is tokenized.
    /// A guardrail with action `block` matched: names the guardrail and what it found (never the text).
    pub fn guardrail_blocked(guardrail: &str, found: &str, param: &'static str) -> Self {
        let mut err = Self::new(
            ErrorKind::GuardrailBlocked,
            ErrorSource::Downstream,
            false,
            format!("the request was blocked by guardrail `{guardrail}`: {found}"),
        );
        err.param = Some(param);
        err
    }

    pub fn prompt_too_large(route: &str, size: u64, limit: u64) -> Self {
        let mut err = Self::new(
            ErrorKind::PayloadTooLarge,
            ErrorSource::Downstream,
            false,
            format!("the prompt is {size} bytes; the model `{route}` accepts prompts of at most {limit} bytes"),
        );
        err.param = Some("messages");
        err
    }

    pub fn unsupported_media_type(got: &str) -> Self {
        Self::new(
            ErrorKind::UnsupportedMediaType,
            ErrorSource::Downstream,
            false,
            format!("unsupported content type `{got}`; send application/json"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(ErrorKind::MethodNotAllowed, ErrorSource::Downstream, false, "method not allowed")
    }

    pub fn context_window_exceeded(message: impl Into<String>) -> Self {
        let mut err = Self::new(ErrorKind::ContextWindowExceeded, ErrorSource::Downstream, false, message);
        err.param = Some("messages");
        err
    }

    /// The upstream answered with an error status. 429 and 5xx may succeed elsewhere.
    pub fn upstream_status(status: u16, message: impl Into<String>) -> Self {
        let retryable = status == 429 || status >= 500;
        Self::new(ErrorKind::UpstreamStatus(status), ErrorSource::Upstream, retryable, message)
    }

    pub fn upstream_connect(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UpstreamConnect, ErrorSource::Upstream, true, message)
    }

    pub fn upstream_timeout(message: impl Into<String>) -> Self {
        let mut err = Self::new(ErrorKind::UpstreamTimeout, ErrorSource::Upstream, true, message);
        err.upstream_may_bill = true;
        err
    }

    /// The connection failed after the request may have been sent (reset, closed before the response).
    pub fn upstream_lost(message: impl Into<String>) -> Self {
        let mut err = Self::upstream_connect(message);
        err.upstream_may_bill = true;
        err
    }

    /// The upstream sent something that is not the protocol (garbage JSON, a broken stream).
    pub fn upstream_invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UpstreamInvalidResponse, ErrorSource::Upstream, true, message)
    }

    pub fn budget_exhausted(scope: &str) -> Self {
        Self::new(
            ErrorKind::BudgetExhausted,
            ErrorSource::Downstream,
            false,
            format!("budget exhausted for {scope}: the token budget for this period is used up"),
        )
    }

    pub fn rate_limited(scope: &str, what: &str, retry_after_seconds: u64) -> Self {
        Self::new(
            ErrorKind::RateLimited,
            ErrorSource::Downstream,
            false,
            format!("rate limit reached for {scope}: {what}; retry after {retry_after_seconds} s"),
        )
        .with_retry_after(Some(retry_after_seconds))
    }

    pub fn budget_unavailable(detail: &str) -> Self {
        Self::new(
            ErrorKind::BudgetUnavailable,
            ErrorSource::Internal,
            false,
            format!("budget service unavailable: this node's allowance is used up and {detail}"),
        )
    }

    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::RequestTimeout, ErrorSource::Downstream, false, message)
    }

    pub fn not_ready() -> Self {
        let mut err = Self::new(
            ErrorKind::NotReady,
            ErrorSource::Internal,
            true,
            "this node is catching up with the cluster; retry in a moment",
        );
        err.retry_after = Some(1);
        err
    }

    pub fn shutting_down() -> Self {
        Self::new(ErrorKind::ShuttingDown, ErrorSource::Internal, true, "the gateway is shutting down")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, ErrorSource::Internal, false, message)
    }

    pub fn with_upstream_body(mut self, protocol: Protocol, body: Bytes) -> Self {
        self.upstream_body = Some((protocol, body));
        self
    }

    pub fn with_retry_after(mut self, seconds: Option<u64>) -> Self {
        self.retry_after = seconds;
        self
    }

    pub fn status(&self) -> StatusCode {
        let code = match self.kind {
            ErrorKind::InvalidRequest | ErrorKind::ContextWindowExceeded | ErrorKind::GuardrailBlocked => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound | ErrorKind::ModelNotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::BudgetExhausted | ErrorKind::RateLimited => 429,
            ErrorKind::BudgetUnavailable => 503,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::UpstreamStatus(status) => status,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamInvalidResponse => 502,
            ErrorKind::UpstreamTimeout => 504,
            ErrorKind::ShuttingDown | ErrorKind::NotReady => 503,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Internal => 500,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// OpenAI's `error.type` and `error.code` for this error.
    fn openai_type_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self.kind {
            ErrorKind::InvalidRequest => ("invalid_request_error", None),
            ErrorKind::ContextWindowExceeded => ("invalid_request_error", Some("context_length_exceeded")),
            ErrorKind::GuardrailBlocked => ("guardrail_blocked", Some("guardrail_blocked")),
            ErrorKind::Unauthenticated => ("authentication_error", Some("invalid_api_key")),
            ErrorKind::PermissionDenied => ("permission_error", Some("model_not_allowed")),
            ErrorKind::NotFound => ("not_found_error", None),
            ErrorKind::ModelNotFound => ("invalid_request_error", Some("model_not_found")),
            ErrorKind::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed")),
            ErrorKind::PayloadTooLarge => ("invalid_request_error", Some("request_too_large")),
            ErrorKind::UnsupportedMediaType => ("invalid_request_error", Some("unsupported_media_type")),
            ErrorKind::BudgetExhausted => ("budget_exceeded", Some("budget_exceeded")),
            ErrorKind::RateLimited => ("rate_limit_error", Some("rate_limit_exceeded")),
            ErrorKind::BudgetUnavailable => ("api_error", Some("budget_unavailable")),
            ErrorKind::UpstreamStatus(429) => ("rate_limit_error", Some("rate_limit_exceeded")),
            ErrorKind::UpstreamStatus(status) if status < 500 => ("invalid_request_error", Some("upstream_error")),
            ErrorKind::UpstreamStatus(_) => ("api_error", Some("upstream_error")),
            ErrorKind::UpstreamConnect => ("api_error", Some("upstream_unavailable")),
            ErrorKind::UpstreamTimeout => ("api_error", Some("upstream_timeout")),
            ErrorKind::UpstreamInvalidResponse => ("api_error", Some("upstream_invalid_response")),
            ErrorKind::ShuttingDown => ("api_error", Some("shutting_down")),
            ErrorKind::NotReady => ("api_error", Some("not_ready")),
            ErrorKind::RequestTimeout => ("invalid_request_error", Some("request_timeout")),
            ErrorKind::Internal => ("api_error", Some("internal_error")),
        }
    }

    /// Anthropic's `error.type` for this error.
    fn anthropic_type(&self) -> &'static str {
        match self.kind {
            ErrorKind::InvalidRequest
            | ErrorKind::ContextWindowExceeded
            | ErrorKind::MethodNotAllowed
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::RequestTimeout => "invalid_request_error",
            ErrorKind::GuardrailBlocked => "guardrail_blocked",
            ErrorKind::Unauthenticated => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound | ErrorKind::ModelNotFound => "not_found_error",
            ErrorKind::PayloadTooLarge => "request_too_large",
            ErrorKind::UpstreamStatus(429) | ErrorKind::BudgetExhausted | ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::BudgetUnavailable => "api_error",
            ErrorKind::UpstreamStatus(529) | ErrorKind::ShuttingDown | ErrorKind::NotReady => "overloaded_error",
            ErrorKind::UpstreamStatus(401) => "authentication_error",
            ErrorKind::UpstreamStatus(403) => "permission_error",
            ErrorKind::UpstreamStatus(404) => "not_found_error",
            ErrorKind::UpstreamStatus(status) if status < 500 => "invalid_request_error",
            ErrorKind::UpstreamStatus(_)
            | ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamInvalidResponse
            | ErrorKind::Internal => "api_error",
        }
    }

    /// The JSON error body in the caller's API shape.
    pub fn body(&self, protocol: Protocol) -> Bytes {
        if let Some((upstream_protocol, body)) = &self.upstream_body {
            if *upstream_protocol == protocol {
                return body.clone();
            }
        }
        let value = match protocol {
            Protocol::OpenAi => {
                let (error_type, code) = self.openai_type_and_code();
                serde_json::json!({"error": {
                    "message": self.message,
                    "type": error_type,
                    "param": self.param,
                    "code": code,
                }})
            }
            Protocol::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": self.anthropic_type(), "message": self.message},
            }),
        };
        Bytes::from(value.to_string())
    }

    /// One SSE event that ends a stream with this error, in the caller's shape. OpenAI clients get a `data:`
    /// line with an `error` object (the SDKs raise on it); Anthropic clients get an `event: error`.
    pub fn sse_event(&self, protocol: Protocol) -> Bytes {
        let body = self.body(protocol);
        let mut out = Vec::with_capacity(body.len() + 24);
        if protocol == Protocol::Anthropic {
            out.extend_from_slice(b"event: error\n");
        }
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }

    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after.map(HeaderValue::from)
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({:?}): {}", self.kind, self.source, self.message)
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape_has_type_and_code() {
        let err = GatewayError::model_not_found("nope");
        let body: serde_json::Value = serde_json::from_slice(&err.body(Protocol::OpenAi)).unwrap_or_default();
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
    }

    #[test]
    fn anthropic_shape_has_error_type() {
        let err = GatewayError::unauthenticated("bad key");
        let body: serde_json::Value = serde_json::from_slice(&err.body(Protocol::Anthropic)).unwrap_or_default();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn upstream_body_passes_through_only_to_the_same_protocol() {
        let raw = Bytes::from_static(br#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#);
        let err = GatewayError::upstream_status(429, "slow down").with_upstream_body(Protocol::OpenAi, raw.clone());
        assert!(err.retryable);
        assert_eq!(err.body(Protocol::OpenAi), raw);
        let translated: serde_json::Value = serde_json::from_slice(&err.body(Protocol::Anthropic)).unwrap_or_default();
        assert_eq!(translated["error"]["type"], "rate_limit_error");
    }

    #[test]
    fn sse_error_events_are_single_events() {
        let err = GatewayError::upstream_invalid("cut");
        let openai = err.sse_event(Protocol::OpenAi);
        assert!(openai.starts_with(b"data: {\"error\""));
        assert!(openai.ends_with(b"\n\n"));
        let anthropic = err.sse_event(Protocol::Anthropic);
        assert!(anthropic.starts_with(b"event: error\ndata: {"));
    }
}
