//! Anthropic's Messages API. `base_url` is the host without the version, e.g. `https://api.anthropic.com`.

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;

use super::{api_key, static_headers, HttpBackend, Operation, Timeouts, UpstreamRequest};
use crate::api::anthropic::DEFAULT_VERSION;
use crate::config::ProviderConfig;
use crate::error::{GatewayError, GatewayResult};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

pub fn backend(config: &ProviderConfig, timeouts: Timeouts) -> anyhow::Result<HttpBackend> {
    let credential = api_key(config)?.map(|key| (HeaderName::from_static("x-api-key"), key));
    HttpBackend::new(
        config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
        &["/v1/messages", "/v1/messages/count_tokens"],
        timeouts,
        static_headers(config, credential)?,
    )
}

pub fn build_request(backend: &HttpBackend, request: UpstreamRequest<'_>) -> GatewayResult<Request<Full<Bytes>>> {
    let path = match request.operation {
        Operation::Chat => "/v1/messages",
        Operation::CountTokens => "/v1/messages/count_tokens",
        Operation::Embeddings => return Err(GatewayError::internal("Anthropic has no embeddings endpoint")),
    };
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
