//! OpenAI-compatible providers: OpenAI itself and self-hosted servers (vLLM, TGI, SGLang) or other clouds
//! that speak `/chat/completions` with a bearer token. `base_url` includes the version, e.g. `…/v1`.

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Full;

use super::{Dialect, HttpBackend, Operation, UpstreamRequest};
use crate::error::{GatewayError, GatewayResult};

pub const DIALECT: Dialect = Dialect {
    name: "OpenAI-compatible",
    default_base_url: "https://api.openai.com/v1",
    credential: |key| (HeaderName::from_static("authorization"), format!("Bearer {key}")),
    paths: &[(Operation::Chat, "/chat/completions"), (Operation::Embeddings, "/embeddings")],
};

pub fn build_request(backend: &HttpBackend, request: UpstreamRequest<'_>) -> GatewayResult<Request<Full<Bytes>>> {
    backend
        .post(DIALECT.path(request.operation)?, &request)?
        .body(Full::new(request.body))
        .map_err(|err| GatewayError::internal(format!("building upstream request: {err}")))
}
