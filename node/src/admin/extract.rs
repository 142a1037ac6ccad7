//! What an admin handler receives, typed: the admin token checked once in a middleware, the Raft member
//! (or a 409 on a standalone node), the resource kind, the `Idempotency-Key`, query parameters and JSON
//! bodies. Every rejection is an [`AdminError`] in the admin API's JSON error shape, never axum's plain
//! text.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tollgate_consensus::{ClusterError, ConsensusNode};

use super::resource::ResourceKind;
use crate::auth::hash_key;
use crate::gateway::Gateway;

/// The largest admin request body (an `apply` of a big cluster file).
pub(super) const MAX_ADMIN_BODY: usize = 4 * 1024 * 1024;

/// An admin API error: status plus message, rendered as `{"error": {"type", "message"}}`.
#[derive(Debug)]
pub struct AdminError(pub(super) StatusCode, pub(super) String);

impl AdminError {
    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        AdminError(StatusCode::BAD_REQUEST, message.into())
    }
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        AdminError(StatusCode::NOT_FOUND, message.into())
    }
    fn unauthorized(message: impl Into<String>) -> Self {
        AdminError(StatusCode::UNAUTHORIZED, message.into())
    }
}

impl From<ClusterError> for AdminError {
    fn from(err: ClusterError) -> Self {
        let status = match &err {
            ClusterError::NoQuorum(_) => StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::Invalid(_) => StatusCode::BAD_REQUEST,
            ClusterError::NotFound(_) => StatusCode::NOT_FOUND,
            ClusterError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ClusterError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError(status, err.to_string())
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let AdminError(status, message) = self;
        let kind = match status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            404 => "not_found_error",
            405 => "method_not_allowed",
            409 => "conflict",
            413 => "request_too_large",
            503 => "unavailable",
            _ => "api_error",
        };
        json_response(status, &json!({"error": {"type": kind, "message": message}}))
    }
}

/// A JSON answer with the content type set.
pub(super) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    (status, [(http::header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// Middleware: every `/admin/v1` request carries `Authorization: Bearer <admin token>`. Hashes are
/// compared so the time taken does not depend on where the strings differ; a node without a token
/// refuses every call (fail closed).
pub(super) async fn require_admin_token(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Result<Response, AdminError> {
    let Some(expected) = gateway.admin_token.as_ref().filter(|token| !token.trim().is_empty()) else {
        return Err(AdminError::unauthorized(
            "the admin API is disabled: set node.admin_token, node.admin_token_file or TOLLGATE_ADMIN_TOKEN",
        ));
    };
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    match presented {
        Some(token) if hash_key(token) == hash_key(expected) => Ok(next.run(request).await),
        Some(_) => Err(AdminError::unauthorized("invalid admin token")),
        None => Err(AdminError::unauthorized("missing admin token: send `Authorization: Bearer <admin token>`")),
    }
}

/// The Raft member behind the replicated API; a standalone node answers 409.
pub(super) struct Consensus(pub ConsensusNode);

impl FromRequestParts<Arc<Gateway>> for Consensus {
    type Rejection = AdminError;

    async fn from_request_parts(_: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, AdminError> {
        gateway.consensus.clone().map(Consensus).ok_or_else(|| {
            AdminError(
                StatusCode::CONFLICT,
                "this node runs standalone from its config file; set node.peers to run the replicated control plane"
                    .into(),
            )
        })
    }
}

/// The `Idempotency-Key` header, if any: it becomes the Raft request id so a retried write applies once.
pub(super) struct Idempotency(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AdminError> {
        let key = match parts.headers.get("idempotency-key") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| AdminError::bad_request("Idempotency-Key: must be visible ASCII"))?
                    .to_owned(),
            ),
        };
        Ok(Idempotency(key))
    }
}

/// `/{kind}` or `/{kind}/{*name}`: the resource kind parsed, an unknown kind a 404 that lists the kinds.
pub(super) struct Resource {
    pub kind: ResourceKind,
    /// The name (`org/team` for teams); empty for a collection.
    pub name: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Resource {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        #[derive(Deserialize)]
        struct Segments {
            kind: String,
            #[serde(default)]
            name: String,
        }
        let Path(segments) = Path::<Segments>::from_request_parts(parts, state)
            .await
            .map_err(|err| AdminError::bad_request(format!("path: {}", err.body_text())))?;
        let kind = ResourceKind::parse(&segments.kind).map_err(AdminError::not_found)?;
        Ok(Resource { kind, name: segments.name })
    }
}

/// Query parameters deserialized into `T`; a bad one is a 400 naming it.
pub(super) struct AdminQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for AdminQuery<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AdminError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| AdminQuery(value))
            .map_err(|err| AdminError::bad_request(format!("query: {}", err.body_text())))
    }
}

/// The raw body, at most [`MAX_ADMIN_BODY`] bytes (413 beyond).
pub(super) struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AdminError> {
        Bytes::from_request(request, state).await.map(Body).map_err(|err| {
            let status = err.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                AdminError(status, format!("the body is over {MAX_ADMIN_BODY} bytes"))
            } else {
                AdminError::bad_request(format!("could not read the body: {}", err.body_text()))
            }
        })
    }
}

/// A JSON body deserialized into `T` (any content type: the CLI and curl users send it bare).
pub(super) struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AdminError> {
        let Body(bytes) = Body::from_request(request, state).await?;
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|err| AdminError::bad_request(format!("invalid JSON body: {err}")))
    }
}

/// A boolean query flag: absent or `false` is false, `true` or bare (`?dry_run`) is true, else a 400.
pub(super) fn flag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.as_str() {
        "false" => Ok(false),
        "true" | "" => Ok(true),
        other => Err(serde::de::Error::custom(format!("`{other}` is not true or false"))),
    }
}
