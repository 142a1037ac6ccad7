//! A faithful, scriptable mock LLM upstream (OpenAI + Anthropic APIs) for
//! black-box tests. It is a real HTTP server (hyper 1.x, HTTP/1.1 and h2c) on
//! `127.0.0.1:0`, started in-process.
//!
//! Endpoints: `POST /v1/chat/completions`, `POST /v1/embeddings`,
//! `GET /v1/models`, `POST /v1/messages`, `POST /v1/messages/count_tokens`,
//! `GET /metrics` (vLLM, SGLang or TGI Prometheus text, see [`Engine`]); anything else is a 404.
//! With a [`GpuSim`], model requests queue for GPU slots and `/metrics` reports the live queue.
//!
//! Scripts: every request to a *model* endpoint (chat completions, embeddings,
//! messages) consumes the next queued [`Script`] (FIFO) or, if the queue is
//! empty, a clone of the default script. Other endpoints (models,
//! count_tokens, metrics, 404s) never consume scripts. Processing order for a
//! model request: record -> consume script -> `delay_headers` -> API key check
//! (401) -> scripted error `status` (+ `Retry-After`) -> request validation
//! (400) -> normal / `garbage_body` response.
//!
//! Token counting is deterministic; see [`text`](self) module docs: input =
//! ceil(text bytes / 4) + 3 per message (min 1); output = number of content
//! pieces generated (word pieces, or tool-call argument pieces). The default
//! reply is the fixed string [`DEFAULT_REPLY`] (12 pieces).
//!
//! Also exported for tests: [`parse_sse`], [`pieces`], [`MODELS`].
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Handlers return `Err(Response)` for early exits; boxing buys nothing in test support.
#![allow(clippy::result_large_err)]

mod anthropic;
mod control;
mod documents;
mod gpu;
mod misc;
mod openai;
mod reasoning;
mod respond;
mod sse;
mod strict;
mod text;

use gpu::GpuSimState;
pub use gpu::{Engine, GpuSim};
pub use misc::MODELS;
pub use reasoning::{signature_for, DEFAULT_THINKING};
pub(crate) use respond::{add_header, error_response, full, json_response, response, sse_response, text_response};
pub use text::{pieces, DEFAULT_REPLY, JSON_REPLY};

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub(crate) type RespBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// How the next model request should behave. `Script::default()` is a normal,
/// well-behaved 200 response.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// Respond with this status (>= 400) and an error body in the API's shape.
    /// Values below 400 are ignored (normal 200 response).
    pub status: Option<u16>,
    /// Adds a `Retry-After: N` header (to whatever response is sent; meant for
    /// error statuses).
    pub retry_after: Option<u64>,
    /// Sleep before sending response headers.
    pub delay_headers: Option<Duration>,
    /// Streaming: sleep between SSE events.
    pub delay_between_events: Option<Duration>,
    /// Streaming: write the SSE byte stream in body chunks of at most N bytes
    /// (chunks cross event boundaries and split lines).
    pub split_chunks: Option<usize>,
    /// Streaming: after N events, drop the connection abruptly (body error,
    /// no chunked terminator).
    pub abort_after_events: Option<usize>,
    /// Streaming: after N events, end the body cleanly without the final events.
    pub end_early_after_events: Option<usize>,
    /// Streaming: after N events, send `data: {not json` and continue normally.
    pub malformed_after_events: Option<usize>,
    /// Streaming: after N events, go silent (connection kept open) until the
    /// client leaves.
    pub stall_after_events: Option<usize>,
    /// No usage fields at all.
    pub omit_usage: bool,
    /// 200 with a body that is not what the content-type promises.
    pub garbage_body: bool,
    /// Override the assistant text.
    pub reply: Option<String>,
    /// Respond with a tool call `(name, arguments JSON string)` instead of text.
    pub tool_call: Option<(String, String)>,
    /// With `tool_call` (OpenAI flavour): a second, parallel tool call `(name, arguments)`. Streamed, the
    /// two calls' argument chunks alternate (index 0, 1, 0, 1…), as real OpenAI streams may do.
    pub second_tool_call: Option<(String, String)>,
    /// Stop as if max_tokens was hit (finish_reason "length" / stop_reason "max_tokens").
    pub finish_max_tokens: bool,
    /// With `tool_call`: text the assistant says before its tool call(s), in the same message (Anthropic: a
    /// text block before the `tool_use` blocks; OpenAI: `content` next to `tool_calls`).
    pub preamble: Option<String>,
    /// Anthropic: `(cache_creation_input_tokens, cache_read_input_tokens)` taken out of the prompt's tokens,
    /// as a prompt cache reports them (`input_tokens` is the rest; the bill is the sum).
    pub cache_tokens: Option<(u64, u64)>,
    /// Streaming: after N events, send the API's error event (Anthropic `event: error` with an
    /// `overloaded_error`; OpenAI a `data: {"error": …}` chunk) and end the body cleanly, as the real APIs
    /// do when they fail mid-stream.
    pub error_after_events: Option<usize>,
    /// Hold the request (before headers) until [`MockUpstream::release_held`]: explicit synchronisation for
    /// tests that need requests outstanding at the upstream, instead of a delay racing the test.
    pub hold: bool,
    /// The model's reasoning, shown as each API shows it (see the `reasoning` module): Anthropic, when the
    /// request enables `thinking`, a leading `thinking` block with this text ([`DEFAULT_THINKING`] when
    /// `None`); an OpenAI-compatible server, `reasoning_content` (which makes the model a reasoning model,
    /// as vLLM/SGLang with a reasoning parser or DeepSeek-R1); OpenAI's o-series/gpt-5, billed and hidden.
    pub reasoning: Option<String>,
}

/// One request as received by the mock.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Header names are lowercase; in received order, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// Parsed JSON body, `Value::Null` if empty or not JSON.
    pub body: Value,
}

impl RecordedRequest {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub(crate) struct Inner {
    queue: VecDeque<Script>,
    default: Script,
    requests: Vec<RecordedRequest>,
    required_key: Option<String>,
    /// When set, model requests for any other model get the API's 404.
    pub(crate) served_models: Option<Vec<String>>,
    pub(crate) gpu: (u64, u64, f64),
    pub(crate) engine: Engine,
    gpu_sim: Option<GpuSimState>,
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub(crate) output_tokens: AtomicU64,
    pub(crate) input_tokens: AtomicU64,
    active_connections: AtomicUsize,
    pub(crate) cancelled_streams: AtomicUsize,
    /// Streaming requests not finished yet (handled, or their body still being written).
    pub(crate) open_streams: AtomicUsize,
    ids: AtomicU64,
    /// Model requests waiting for a GpuSim slot / holding one.
    pub(crate) sim_waiting: AtomicUsize,
    pub(crate) sim_running: AtomicUsize,
    /// Opened by `release_held`; held requests wait for it.
    released: tokio::sync::watch::Sender<bool>,
    /// Requests waiting at the hold right now.
    holding: AtomicUsize,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_script(&self) -> Script {
        let mut g = self.lock();
        match g.queue.pop_front() {
            Some(s) => s,
            None => g.default.clone(),
        }
    }

    fn required_key(&self) -> Option<String> {
        self.lock().required_key.clone()
    }

    /// A fresh id suffix, unique per server.
    pub(crate) fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::SeqCst) + 1;
        format!("mock{n:020}")
    }

    pub(crate) fn serve_tokens(&self, input: u64, output: u64) {
        self.input_tokens.fetch_add(input, Ordering::SeqCst);
        self.output_tokens.fetch_add(output, Ordering::SeqCst);
    }
}

/// Decrements `holding` when a held request goes on or is dropped.
struct Holding(Arc<Shared>);

impl Drop for Holding {
    fn drop(&mut self) {
        self.0.holding.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Decrements `active_connections` when the connection task ends.
struct ConnGuard(Arc<Shared>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The mock server. Dropping it stops the server and closes all connections.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Bind 127.0.0.1:0 and spawn the server task on the current runtime.
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("mock upstream: bind 127.0.0.1:0");
        Self::serve(listener).expect("mock upstream: local_addr")
    }

    /// Bind `addr` (e.g. a bridge address other network namespaces reach, for the chaos harness) and
    /// spawn the server task on the current runtime; binding errors are returned, not panicked on.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<MockUpstream> {
        Self::serve(TcpListener::bind(addr).await?)
    }

    fn serve(listener: TcpListener) -> std::io::Result<MockUpstream> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                default: Script::default(),
                requests: Vec::new(),
                required_key: None,
                served_models: None,
                gpu: (0, 0, 0.0),
                engine: Engine::Vllm,
                gpu_sim: None,
            }),
            output_tokens: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            active_connections: AtomicUsize::new(0),
            cancelled_streams: AtomicUsize::new(0),
            open_streams: AtomicUsize::new(0),
            ids: AtomicU64::new(0),
            sim_waiting: AtomicUsize::new(0),
            sim_running: AtomicUsize::new(0),
            released: tokio::sync::watch::channel(false).0,
            holding: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(MockUpstream { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (Anthropic-style base URL).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1` (OpenAI-style base URL).
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queue a script; the next model request consumes it (FIFO).
    pub fn push(&self, script: Script) {
        self.shared.lock().queue.push_back(script);
    }

    /// Script used when the queue is empty (initially `Script::default()`).
    pub fn set_default(&self, script: Script) {
        self.shared.lock().default = script;
    }

    /// Everything received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The body of the last request received.
    pub fn last_body(&self) -> Value {
        self.shared.lock().requests.last().map(|request| request.body.clone()).expect("the upstream got a request")
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Output tokens (content pieces) actually handed to clients.
    pub fn output_tokens_served(&self) -> u64 {
        self.shared.output_tokens.load(Ordering::SeqCst)
    }

    /// Input tokens of successfully served generations (non-stream: when the
    /// response is built; stream: when the first event is written).
    pub fn input_tokens_served(&self) -> u64 {
        self.shared.input_tokens.load(Ordering::SeqCst)
    }

    /// If `Some(k)`, require `Authorization: Bearer k` (OpenAI paths) or
    /// `x-api-key: k` (Anthropic paths); otherwise 401 in that API's shape.
    pub fn set_required_key(&self, key: Option<String>) {
        self.shared.lock().required_key = key;
    }

    /// Serve only these upstream models (`None`: any model); others get a 404 in the API's shape, as a
    /// real provider answers a model it does not have.
    pub fn set_served_models(&self, models: Option<&[&str]>) {
        self.shared.lock().served_models = models.map(|m| m.iter().map(|m| (*m).to_owned()).collect());
    }

    /// Lets every held request (and any later one) go on.
    pub fn release_held(&self) {
        self.shared.released.send_replace(true);
    }

    /// Requests waiting at the hold right now (see [`Script::hold`]).
    pub fn held(&self) -> usize {
        self.shared.holding.load(Ordering::SeqCst)
    }

    /// Open TCP connections right now.
    pub fn active_connections(&self) -> usize {
        self.shared.active_connections.load(Ordering::SeqCst)
    }

    /// Streams whose client went away before the stream finished (including
    /// during `delay_headers` of a streaming request).
    pub fn cancelled_streams(&self) -> usize {
        self.shared.cancelled_streams.load(Ordering::SeqCst)
    }

    /// Streaming requests still in progress: received and not yet finished, cancelled or refused.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    /// Values reported by `GET /metrics`.
    pub fn set_gpu_metrics(&self, waiting: u64, running: u64, kv: f64) {
        self.shared.lock().gpu = (waiting, running, kv);
    }

    /// Metric names `GET /metrics` uses (vLLM by default).
    pub fn set_engine(&self, engine: Engine) {
        self.shared.lock().engine = engine;
    }

    /// Model requests queue for `slots` GPU slots of `service` each (see [`GpuSim`]); `None` turns it off.
    pub fn set_gpu_sim(&self, sim: Option<GpuSim>) {
        self.shared.lock().gpu_sim = sim.map(|config| GpuSimState {
            config,
            semaphore: Arc::new(tokio::sync::Semaphore::new(config.slots.max(1))),
        });
    }

    /// `http://127.0.0.1:PORT/metrics`.
    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Connection tasks live in the JoinSet: aborting this task drops the set,
    // which aborts (and closes) every connection.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    shared.active_connections.fetch_add(1, Ordering::SeqCst);
                    let guard = ConnGuard(shared.clone());
                    let shared = shared.clone();
                    conns.spawn(async move {
                        let _guard = guard;
                        let svc = hyper::service::service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(handle(shared, req).await) }
                        });
                        let builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Which API's conventions (error shape, auth header) a path follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    OpenAi,
    Anthropic,
}

/// Everything an endpoint handler needs.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub req: RecordedRequest,
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<RespBody> {
    if req.uri().path().starts_with("/_mock/") {
        return control::handle(shared, req).await;
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let api = if path.starts_with("/v1/messages") { Api::Anthropic } else { Api::OpenAi };
    let (body, read_err) = match req.into_body().collect().await {
        Ok(c) => (serde_json::from_slice(&c.to_bytes()).unwrap_or(Value::Null), None),
        Err(e) => (Value::Null, Some(e.to_string())),
    };
    let rec = RecordedRequest { method, path, headers, body };
    shared.lock().requests.push(rec.clone());
    if let Some(e) = read_err {
        return error_response(api, 400, Some(&format!("could not read request body: {e}")), None);
    }
    let ctx = Ctx { shared, req: rec };
    match (ctx.req.method.as_str(), ctx.req.path.as_str()) {
        ("POST", "/v1/chat/completions") => openai::chat(ctx).await,
        ("POST", "/v1/embeddings") => openai::embeddings(ctx).await,
        ("GET", "/v1/models") => misc::models(&ctx),
        ("POST", "/v1/messages") => anthropic::messages(ctx).await,
        ("POST", "/v1/messages/count_tokens") => anthropic::count_tokens(&ctx),
        ("GET", "/metrics") => misc::metrics(&ctx),
        (m, p) => {
            let msg = format!("Unknown request URL: {m} {p}.");
            match api {
                Api::OpenAi => json_response(
                    404,
                    &json!({"error": {"message": msg, "type": "invalid_request_error",
                        "param": null, "code": "unknown_url"}}),
                ),
                Api::Anthropic => error_response(api, 404, Some(&msg), None),
            }
        }
    }
}

/// Shared prelude for model endpoints: consume the script, `delay_headers`,
/// auth and scripted error status. `Err(resp)` means "send this and stop".
pub(crate) async fn prelude(ctx: &Ctx, api: Api) -> Result<Script, Response<RespBody>> {
    let script = ctx.shared.next_script();
    ctx.shared.simulate_gpu().await;
    if let Some(d) = script.delay_headers {
        tokio::time::sleep(d).await;
    }
    if script.hold {
        let mut released = ctx.shared.released.subscribe();
        ctx.shared.holding.fetch_add(1, Ordering::SeqCst);
        // Counted down even when the client goes away while held (the future is dropped).
        let _counted = Holding(ctx.shared.clone());
        let _ = released.wait_for(|open| *open).await;
    }
    check_auth(ctx, api)?;
    if let Some(status) = script.status.filter(|s| *s >= 400) {
        return Err(error_response(api, status, None, script.retry_after));
    }
    Ok(script)
}

pub(crate) fn check_auth(ctx: &Ctx, api: Api) -> Result<(), Response<RespBody>> {
    let Some(key) = ctx.shared.required_key() else {
        return Ok(());
    };
    let (given, missing_msg, wrong_msg) = match api {
        Api::OpenAi => (
            ctx.req.header("authorization").and_then(|v| v.strip_prefix("Bearer ")),
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
        ),
        Api::Anthropic => (
            ctx.req.header("x-api-key"),
            "x-api-key header is required",
            "invalid x-api-key",
        ),
    };
    match given {
        Some(g) if g.trim() == key => Ok(()),
        Some(_) => Err(error_response(api, 401, Some(wrong_msg), None)),
        None => Err(error_response(api, 401, Some(missing_msg), None)),
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Test helper: parse a complete SSE body into `(event name, data)` pairs,
/// one per event block (`\r\n` is treated as `\n`; multiple `data:` lines are
/// joined with `\n`; comment lines and other fields are ignored).
pub fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    let text = text.replace("\r\n", "\n");
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.strip_prefix(' ').unwrap_or(v).to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            (event, data.join("\n"))
        })
        .collect()
}
