//! OpenAI-compatible providers: OpenAI itself and self-hosted servers (vLLM, TGI, SGLang) or other clouds
//! that speak `/chat/completions` with a bearer token. `base_url` includes the version, e.g. `…/v1`.

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;

use super::{api_key, static_headers, HttpBackend, Operation, Timeouts, UpstreamRequest};
use crate::config::ProviderConfig;
use crate::error::{GatewayError, GatewayResult};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

pub fn backend(config: &ProviderConfig, timeouts: Timeouts) -> anyhow::Result<HttpBackend> {
    let credential = api_key(config)?.map(|key| (HeaderName::from_static("authorization"), format!("Bearer {key}")));
    HttpBackend::new(
        config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
        &["/chat/completions", "/embeddings"],
        timeouts,
        static_headers(config, credential)?,
    )
}

pub fn build_request(backend: &HttpBackend, request: UpstreamRequest<'_>) -> GatewayResult<Request<Full<Bytes>>> {
    let path = match request.operation {
        Operation::Chat => "/chat/completions",
        Operation::Embeddings => "/embeddings",
        Operation::CountTokens => {
            return Err(GatewayError::internal("OpenAI-compatible providers have no count_tokens endpoint"));
        }
    };
    backend
        .post(path, &request)?
        .body(Full::new(request.body))
        .map_err(|err| GatewayError::internal(format!("building upstream request: {err}")))
}
