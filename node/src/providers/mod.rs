//! Upstream providers: an enum of adapters, one file each, sharing one HTTP client type. A provider
//! turns a prepared request body into an upstream HTTP response; what the body means is the
//! translation layer's business.

pub mod anthropic;
pub mod mock;
pub mod openai;
pub mod tls;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::api::Protocol;
use crate::config::{LimitsConfig, ProviderConfig, ProviderKind};
use crate::error::{GatewayError, GatewayResult};
pub use tls::UpstreamTls;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Which API call is being made upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Embeddings,
    CountTokens,
}

/// How one provider API is addressed over HTTP: where it lives by default, how the key is presented, and
/// the path of each operation it has. `openai::DIALECT` and `anthropic::DIALECT`.
pub struct Dialect {
    pub name: &'static str,
    pub default_base_url: &'static str,
    /// The header carrying the provider key, and its value for a key.
    pub credential: fn(&str) -> (HeaderName, String),
    pub paths: &'static [(Operation, &'static str)],
}

impl Dialect {
    /// The path of `operation` under `base_url`, or an error for an operation the API does not have.
    pub fn path(&self, operation: Operation) -> GatewayResult<&'static str> {
        self.paths
            .iter()
            .find(|(op, _)| *op == operation)
            .map(|(_, path)| *path)
            .ok_or_else(|| GatewayError::internal(format!("{} providers have no {operation:?} endpoint", self.name)))
    }
}

/// A request ready to send: the body is already in the provider's protocol.
pub struct UpstreamRequest<'a> {
    pub operation: Operation,
    pub body: Bytes,
    pub stream: bool,
    /// The caller's headers, for the few that are forwarded (`traceparent`, `anthropic-version`…).
    pub client_headers: &'a HeaderMap,
    /// With tracing on: this attempt's own trace context (`traceparent`, `tracestate`), sent instead of the
    /// caller's so the provider's spans hang under the attempt.
    pub trace_context: Option<HeaderMap>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
}

pub struct Provider {
    pub name: String,
    pub protocol: Protocol,
    pub timeouts: Timeouts,
    backend: Backend,
}

enum Backend {
    Http(Box<HttpBackend>),
    Mock(mock::MockProvider),
}

/// What both HTTP adapters share: the client, the base URL and the static headers.
pub struct HttpBackend {
    client: HttpClient,
    base_url: String,
    /// `base_url` + each path the adapter calls, parsed once (a clone is a few reference counts).
    uris: Vec<(&'static str, http::Uri)>,
    /// The `Host` header for an `http://` `base_url`, as hyper-util would otherwise format it on every request.
    host: Option<HeaderValue>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Caller headers forwarded to every upstream (never the caller's credentials): trace context, and the
/// `Idempotency-Key` the official SDKs send, so a provider that de-duplicates retries can. `anthropic-beta`
/// goes to Anthropic upstreams only (see `anthropic::build_request`). `OpenAI-Organization`/`OpenAI-Project`
/// are deliberately not forwarded: they choose what the gateway's provider key is billed to, which is the
/// operator's choice (a provider's `headers` in the config), not the caller's.
const FORWARDED_HEADERS: &[&str] = &["traceparent", "tracestate", "idempotency-key"];

/// The W3C trace-context headers: the attempt's own when tracing is on.
const TRACE_HEADERS: &[&str] = &["traceparent", "tracestate"];

impl Provider {
    pub fn from_config(config: &ProviderConfig, limits: &LimitsConfig, tls: &UpstreamTls) -> anyhow::Result<Provider> {
        let timeouts = Timeouts {
            connect: Duration::from_millis(config.connect_timeout_ms.unwrap_or(limits.connect_timeout_ms)),
            first_byte: Duration::from_millis(config.first_byte_timeout_ms.unwrap_or(limits.first_byte_timeout_ms)),
            idle: Duration::from_millis(config.idle_timeout_ms.unwrap_or(limits.idle_timeout_ms)),
        };
        let (protocol, backend) = match config.kind {
            ProviderKind::Openai => (
                Protocol::OpenAi,
                Backend::Http(Box::new(HttpBackend::for_dialect(config, timeouts, tls, &openai::DIALECT)?)),
            ),
            ProviderKind::Anthropic => (
                Protocol::Anthropic,
                Backend::Http(Box::new(HttpBackend::for_dialect(config, timeouts, tls, &anthropic::DIALECT)?)),
            ),
            ProviderKind::Mock => {
                let mock = mock::MockProvider::new(config.mock.clone().unwrap_or_default());
                (mock.protocol(), Backend::Mock(mock))
            }
        };
        Ok(Provider { name: config.name.clone(), protocol, timeouts, backend })
    }

    /// The host the provider is reached at (`server.address` in traces); `builtin` for the mock provider.
    pub fn server_address(&self) -> &str {
        match &self.backend {
            Backend::Http(backend) => {
                let rest = backend.base_url.split_once("://").map_or(backend.base_url.as_str(), |(_, rest)| rest);
                let authority = rest.split('/').next().unwrap_or(rest);
                authority.rsplit_once('@').map_or(authority, |(_, host)| host)
            }
            Backend::Mock(_) => "builtin",
        }
    }

    /// Sends the request and waits for the response headers (bounded by the first-byte timeout).
    pub async fn send(&self, request: UpstreamRequest<'_>) -> GatewayResult<Response<UpstreamBody>> {
        let backend = match &self.backend {
            Backend::Mock(mock) => return mock.respond(request).await,
            Backend::Http(backend) => backend,
        };
        let http_request = match self.protocol {
            Protocol::OpenAi => openai::build_request(backend, request)?,
            Protocol::Anthropic => anthropic::build_request(backend, request)?,
        };
        let response = tokio::time::timeout(self.timeouts.first_byte, backend.client.request(http_request))
            .await
            .map_err(|_| {
                GatewayError::upstream_timeout(format!(
                    "provider `{}` sent no response within {} ms",
                    self.name,
                    self.timeouts.first_byte.as_millis()
                ))
            })?
            .map_err(|err| transport_error(&self.name, &err))?;
        Ok(response.map(|body| body.map_err(|err| Box::new(err) as BoxError).boxed_unsync()))
    }
}

/// A transport failure as the caller sees it: the provider's configured name and the kind of failure, never
/// the lower layers' text, which can name internal hosts, addresses and resolver details. The full chain
/// goes to the operator's log.
fn transport_error(provider: &str, err: &hyper_util::client::legacy::Error) -> GatewayError {
    use std::error::Error as _;
    let mut detail = err.to_string();
    let mut kind = None;
    let mut source = err.source();
    while let Some(inner) = source {
        detail.push_str(": ");
        detail.push_str(&inner.to_string());
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            kind = kind.or(Some(io.kind()));
        }
        source = inner.source();
    }
    let what = match kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused",
        Some(std::io::ErrorKind::TimedOut) => "connection timed out",
        Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted) => "connection reset",
        Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof) => "connection closed",
        _ if detail.contains("dns error") => "name resolution failed",
        _ if detail.to_ascii_lowercase().contains("tls") || detail.contains("certificate") => "TLS failed",
        _ if err.is_connect() => "connect failed",
        _ => "connection lost",
    };
    tracing::warn!(provider, detail = %detail, "upstream transport error");
    if err.is_connect() {
        GatewayError::upstream_connect(format!("cannot connect to provider `{provider}`: {what}"))
    } else {
        GatewayError::upstream_lost(format!("request to provider `{provider}` failed: {what}"))
    }
}

impl HttpBackend {
    /// The backend for a provider of this dialect: its base URL (or the dialect's), every operation's URI,
    /// and the key and configured headers.
    fn for_dialect(
        config: &ProviderConfig,
        timeouts: Timeouts,
        tls: &UpstreamTls,
        dialect: &Dialect,
    ) -> anyhow::Result<Self> {
        let credential = api_key(config)?.map(|key| (dialect.credential)(&key));
        let paths: Vec<&'static str> = dialect.paths.iter().map(|(_, path)| *path).collect();
        HttpBackend::new(
            config.base_url.as_deref().unwrap_or(dialect.default_base_url),
            &paths,
            timeouts,
            tls,
            static_headers(config, credential)?,
        )
    }

    fn new(
        base_url: &str,
        paths: &[&'static str],
        timeouts: Timeouts,
        tls: &UpstreamTls,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = tls.connector(http, tls::Alpn::Http2AndHttp1);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        let base_url = base_url.trim_end_matches('/').to_owned();
        let uris: Vec<(&'static str, http::Uri)> = paths
            .iter()
            .map(|path| {
                let uri = format!("{base_url}{path}").parse::<http::Uri>();
                uri.map(|uri| (*path, uri)).map_err(|err| anyhow::anyhow!("base_url `{base_url}`: {err}"))
            })
            .collect::<anyhow::Result<_>>()?;
        // Plain `http://` upstreams always speak HTTP/1.1 here, where hyper-util would add this same header.
        // Over `https://` the version is negotiated (HTTP/2 carries `:authority` instead), so that is left to
        // hyper-util.
        let host =
            uris.first().filter(|(_, uri)| uri.scheme_str() == Some("http")).and_then(|(_, uri)| host_header(uri));
        Ok(HttpBackend { client, base_url, uris, host, headers })
    }

    /// A POST of a JSON body to `base_url + path`, with the static and forwarded headers.
    fn post(&self, path: &str, request: &UpstreamRequest<'_>) -> GatewayResult<http::request::Builder> {
        let uri = match self.uris.iter().find(|(known, _)| *known == path) {
            Some((_, uri)) => uri.clone(),
            None => format!("{}{}", self.base_url, path)
                .parse()
                .map_err(|err| GatewayError::internal(format!("upstream URI for {path}: {err}")))?,
        };
        // Static values: a `&str` would be copied into a new buffer on every request.
        let mut builder = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                http::header::USER_AGENT,
                HeaderValue::from_static(concat!("tollgate/", env!("CARGO_PKG_VERSION"))),
            );
        if request.stream {
            builder = builder.header(http::header::ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        if let Some(host) = &self.host {
            builder = builder.header(http::header::HOST, host.clone());
        }
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        for name in FORWARDED_HEADERS {
            let own = request.trace_context.as_ref().filter(|_| TRACE_HEADERS.contains(name));
            if let Some(value) = own.map_or_else(|| request.client_headers.get(*name), |own| own.get(*name)) {
                builder = builder.header(*name, value);
            }
        }
        Ok(builder)
    }
}

/// `host[:port]` (the port only when it is not the scheme's default), exactly what hyper-util's client adds
/// when a request has no `Host`.
fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    let value = match uri.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    };
    value.ok()
}

/// Static headers from config plus the credential header, validated once at load.
fn static_headers(
    config: &ProviderConfig,
    credential: Option<(HeaderName, String)>,
) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let mut headers = Vec::new();
    if let Some((name, value)) = credential {
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            anyhow::anyhow!("providers.{}: API key contains characters not allowed in a header", config.name)
        })?;
        value.set_sensitive(true);
        headers.push((name, value));
    }
    for (name, value) in &config.headers {
        headers.push((HeaderName::from_bytes(name.as_bytes())?, HeaderValue::from_str(value)?));
    }
    Ok(headers)
}

/// The provider's API key: literal `api_key`, else the environment variable named by `api_key_env`.
fn api_key(config: &ProviderConfig) -> anyhow::Result<Option<String>> {
    if let Some(key) = &config.api_key {
        return Ok(Some(key.clone()));
    }
    match &config.api_key_env {
        Some(variable) => match std::env::var(variable) {
            Ok(value) if !value.is_empty() => Ok(Some(value)),
            _ => {
                tracing::warn!(provider = %config.name, variable = %variable, "api key environment variable is not set; calls will be unauthenticated");
                Ok(None)
            }
        },
        None => Ok(None),
    }
}

/// Reads a whole body with a size cap and an idle timeout between chunks. A body that comes in one frame
/// (the usual small JSON answer) is passed on as it is; only a second frame starts a joined copy.
pub async fn read_body(mut body: UpstreamBody, limit: usize, idle: Duration) -> GatewayResult<Bytes> {
    let mut single = Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    loop {
        let frame = tokio::time::timeout(idle, body.frame()).await.map_err(|_| {
            GatewayError::upstream_timeout(format!("upstream body stalled for {} ms", idle.as_millis()))
        })?;
        let data = match frame {
            None => return Ok(joined.map_or(single, bytes::BytesMut::freeze)),
            Some(Err(err)) => return Err(GatewayError::upstream_invalid(format!("upstream body failed: {err}"))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        let held = joined.as_ref().map_or(single.len(), bytes::BytesMut::len);
        if held + data.len() > limit {
            return Err(GatewayError::upstream_invalid(format!("upstream response exceeds {limit} bytes")));
        }
        match joined.as_mut() {
            Some(buffer) => buffer.extend_from_slice(&data),
            None if single.is_empty() => single = data,
            None => {
                let mut buffer = bytes::BytesMut::with_capacity(single.len() + data.len());
                buffer.extend_from_slice(&single);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
}

/// Turns an upstream error response into a [`GatewayError`] that keeps the provider's body (when it is
/// a proper error object of that protocol) and its `Retry-After`.
pub fn upstream_error(
    protocol: Protocol,
    provider: &str,
    status: u16,
    headers: &HeaderMap,
    body: Bytes,
) -> GatewayError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.get("message").and_then(|m| m.as_str()).or_else(|| e.as_str()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            format!("provider `{provider}` returned HTTP {status}: {snippet}")
        });
    let retry_after =
        headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let mut err = GatewayError::upstream_status(status, message).with_retry_after(retry_after);
    let well_formed = match (protocol, &parsed) {
        (Protocol::OpenAi, Some(value)) => value.get("error").is_some_and(|e| e.is_object()),
        (Protocol::Anthropic, Some(value)) => value.get("type").and_then(|t| t.as_str()) == Some("error"),
        _ => false,
    };
    if well_formed {
        err = err.with_upstream_body(protocol, body);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn body_of(chunks: &[&'static [u8]]) -> UpstreamBody {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            chunks.iter().map(|chunk| Ok(Frame::data(Bytes::from_static(chunk)))).collect();
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    #[test]
    fn host_header_is_what_hyper_util_would_send() {
        let host = |uri: &str| uri.parse::<http::Uri>().ok().as_ref().and_then(host_header);
        assert_eq!(host("http://127.0.0.1:8000/v1").unwrap_or_else(|| panic!()), "127.0.0.1:8000");
        assert_eq!(host("https://api.openai.com/v1").unwrap_or_else(|| panic!()), "api.openai.com");
        assert_eq!(host("http://vllm:80/v1").unwrap_or_else(|| panic!()), "vllm", "default port left out");
        assert_eq!(host("https://gpu.internal:443").unwrap_or_else(|| panic!()), "gpu.internal");
        assert_eq!(host("https://gpu.internal:8443").unwrap_or_else(|| panic!()), "gpu.internal:8443");
        assert_eq!(host("http://[::1]:9000/v1").unwrap_or_else(|| panic!()), "[::1]:9000");
    }

    #[tokio::test]
    async fn read_body_passes_one_frame_on_uncopied_and_joins_several() {
        let idle = Duration::from_secs(1);
        let one: &'static [u8] = b"{\"ok\":true}";
        let read = read_body(body_of(&[one]), 1024, idle).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.as_ptr(), one.as_ptr(), "a single frame is not copied");
        let read = read_body(body_of(&[b"{\"a\":", b"", b"1,", b"\"b\":2}"]), 1024, idle).await;
        assert_eq!(read.unwrap_or_else(|e| panic!("{e}")), Bytes::from_static(b"{\"a\":1,\"b\":2}"));
        assert_eq!(read_body(body_of(&[]), 1024, idle).await.unwrap_or_else(|e| panic!("{e}")), Bytes::new());
        let Err(err) = read_body(body_of(&[b"12345", b"67890"]), 8, idle).await else {
            panic!("a body over the limit is refused");
        };
        assert!(err.message.contains("exceeds 8 bytes"), "{}", err.message);
        assert!(read_body(body_of(&[b"12345", b"678"]), 8, idle).await.is_ok(), "exactly the limit is fine");
    }
}
