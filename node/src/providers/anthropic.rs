//! Anthropic's Messages API. `base_url` is the host without the version, e.g. `https://api.anthropic.com`.

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;

use super::{Dialect, HttpBackend, Operation, UpstreamRequest};
use crate::api::anthropic::DEFAULT_VERSION;
use crate::error::{GatewayError, GatewayResult};

pub const DIALECT: Dialect = Dialect {
    name: "Anthropic",
    default_base_url: "https://api.anthropic.com",
    credential: |key| (HeaderName::from_static("x-api-key"), key.to_owned()),
    paths: &[(Operation::Chat, "/v1/messages"), (Operation::CountTokens, "/v1/messages/count_tokens")],
};

pub fn build_request(backend: &HttpBackend, request: UpstreamRequest<'_>) -> GatewayResult<Request<Full<Bytes>>> {
    let path = DIALECT.path(request.operation)?;
    let version = request
        .client_headers
        .get("anthropic-version")
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static(DEFAULT_VERSION));
    let mut builder = backend.post(path, &request)?.header(crate::names::ANTHROPIC_VERSION, version);
    if let Some(beta) = request.client_headers.get(crate::names::ANTHROPIC_BETA) {
        builder = builder.header(crate::names::ANTHROPIC_BETA, beta);
    }
    builder
        .body(Full::new(request.body))
        .map_err(|err| GatewayError::internal(format!("building upstream request: {err}")))
}
