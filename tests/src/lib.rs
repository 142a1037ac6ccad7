//! Black-box test support: a faithful mock LLM upstream, and helpers that start whole Tollgate nodes
//! in-process on port 0 (or as real processes) and talk to them over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod budget;
pub mod cluster;
pub mod cluster_process;
pub mod conformance;
pub mod delay_proxy;
pub mod mock_upstream;
pub mod otlp_collector;
pub mod process;
pub mod tls;

use std::time::Duration;

use serde_json::Value;
use tollgate::{Config, RunningNode};

pub use mock_upstream::{Engine, GpuSim, MockUpstream, Script};

/// Client keys configured on every test node.
pub const KEY: &str = "tg-test-key";
/// A key that may only use `gpt-direct`.
pub const LIMITED_KEY: &str = "tg-limited-key";
/// Credentials the gateway must present upstream (never the client's key).
pub const UPSTREAM_OPENAI_KEY: &str = "sk-upstream-openai";
pub const UPSTREAM_ANTHROPIC_KEY: &str = "sk-ant-upstream";

/// A node config routing to `mock`:
/// - `gpt-direct` → OpenAI-style provider, upstream model `mock-gpt`
/// - `claude-direct` → Anthropic-style provider, upstream model `mock-claude`
/// - `gpt-via-claude` → OpenAI callers translated to the Anthropic provider
/// - `claude-via-gpt` → Anthropic callers translated to the OpenAI provider
/// - `embed` → OpenAI-style provider
/// - `gpt-fallback` → `dead` (nothing listens) first, then the OpenAI provider
///
/// `extra` is appended verbatim (more providers/models/limits).
pub fn config_toml(mock: &MockUpstream, extra: &str) -> String {
    format!(
        r#"
[node]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[limits]
max_body_bytes = 65536
connect_timeout_ms = 1000
first_byte_timeout_ms = 2000
idle_timeout_ms = 1000
shutdown_grace_ms = 5000

[[providers]]
name = "up-openai"
kind = "openai"
base_url = "{openai}"
api_key = "{openai_key}"

[[providers]]
name = "up-anthropic"
kind = "anthropic"
base_url = "{anthropic}"
api_key = "{anthropic_key}"

[[providers]]
name = "dead"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"

[[models]]
name = "gpt-direct"
context_window = 4096
max_output_tokens = 2048
price_per_mtok = {{ input = 1.0, output = 2.0 }}
targets = [ {{ provider = "up-openai", model = "mock-gpt" }} ]

[[models]]
name = "claude-direct"
price_per_mtok = {{ input = 3.0, output = 15.0 }}
targets = [ {{ provider = "up-anthropic", model = "mock-claude" }} ]

[[models]]
name = "gpt-via-claude"
max_output_tokens = 1000
targets = [ {{ provider = "up-anthropic", model = "mock-claude" }} ]

[[models]]
name = "claude-via-gpt"
targets = [ {{ provider = "up-openai", model = "mock-gpt" }} ]

[[models]]
name = "embed"
targets = [ {{ provider = "up-openai", model = "mock-embed" }} ]

[[models]]
name = "gpt-fallback"
targets = [ {{ provider = "dead", model = "x", priority = 0 }}, {{ provider = "up-openai", model = "mock-gpt", priority = 1 }} ]

[[providers]]
name = "builtin-openai"
kind = "mock"
mock = {{ style = "openai" }}

[[providers]]
name = "builtin-anthropic"
kind = "mock"
mock = {{ style = "anthropic" }}

# One route per provider for the conformance matrix (callers of either protocol use the same name).
[[models]]
name = "p-openai"
targets = [ {{ provider = "up-openai", model = "mock-gpt" }} ]

[[models]]
name = "p-anthropic"
targets = [ {{ provider = "up-anthropic", model = "mock-claude" }} ]

[[models]]
name = "p-builtin-openai"
targets = [ {{ provider = "builtin-openai", model = "builtin" }} ]

[[models]]
name = "p-builtin-anthropic"
targets = [ {{ provider = "builtin-anthropic", model = "builtin" }} ]

[[keys]]
key = "{key}"
name = "test"
org = "acme"

[[keys]]
key = "{limited}"
name = "limited"
org = "acme"
models = ["gpt-direct"]

{extra}
"#,
        openai = mock.openai_base_url(),
        anthropic = mock.base_url(),
        openai_key = UPSTREAM_OPENAI_KEY,
        anthropic_key = UPSTREAM_ANTHROPIC_KEY,
        key = KEY,
        limited = LIMITED_KEY,
    )
}

/// A node in front of a fresh mock upstream.
pub struct Harness {
    pub mock: MockUpstream,
    pub node: RunningNode,
    pub client: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with("").await
    }

    pub async fn start_with(extra: &str) -> Harness {
        Self::start_tweaked(extra, |_| {}).await
    }

    /// With `extra` appended to the config and `tweak` applied to the parsed config (e.g. `[node]` fields).
    pub async fn start_tweaked(extra: &str, tweak: impl FnOnce(&mut Config)) -> Harness {
        init_tracing();
        let mock = MockUpstream::start().await;
        let mut config = Config::parse(&config_toml(&mock, extra)).expect("test config is valid");
        tweak(&mut config);
        config.validate().expect("tweaked test config is valid");
        let node = RunningNode::start(config).await.expect("node starts");
        Harness { mock, node, client: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.node.api_url(), path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{}", self.node.admin_url(), path)
    }

    /// POST JSON as an OpenAI SDK would (bearer key).
    pub async fn openai(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(KEY).json(body).send().await.expect("request sent")
    }

    /// POST JSON as the Anthropic SDK would (`x-api-key` and `anthropic-version`).
    pub async fn anthropic(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("metrics body")
    }
}

/// The parameters a translated request lost, as the gateway names them in `x-tollgate-dropped-params`.
pub fn dropped_params(response: &reqwest::Response) -> Option<String> {
    response.headers().get("x-tollgate-dropped-params").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }

    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Reads a whole SSE response (with a safety timeout) and parses its events strictly: every event must be
/// terminated, and every `data` must be JSON or `[DONE]`.
pub async fn read_events(response: reqwest::Response) -> Vec<Event> {
    let text = tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("stream finished in time")
        .expect("stream body");
    parse_events_strict(&text)
}

pub fn parse_events_strict(text: &str) -> Vec<Event> {
    let normalized = text.replace("\r\n", "\n");
    assert!(normalized.is_empty() || normalized.ends_with("\n\n"), "stream ends mid-event: {normalized:?}");
    let mut events = Vec::new();
    for block in normalized.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = Some(value.trim().to_owned());
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value));
            } else if !line.starts_with(':') {
                panic!("not an SSE line: {line:?}");
            }
        }
        let data = data.join("\n");
        assert!(data == "[DONE]" || serde_json::from_str::<Value>(&data).is_ok(), "event data is not JSON: {data:?}");
        events.push(Event { name, data });
    }
    events
}

/// Reads the first `n` bytes-worth of events incrementally (to check streaming without buffering).
pub async fn first_event(response: &mut reqwest::Response) -> String {
    let mut buffer = String::new();
    while !buffer.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), response.chunk())
            .await
            .expect("the first event within 20 s")
            .expect("chunk")
            .expect("stream not ended");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
    buffer
}

/// Concatenated assistant text from OpenAI chunks.
pub fn openai_text(events: &[Event]) -> String {
    events.iter().filter_map(|e| e.json()["choices"][0]["delta"]["content"].as_str().map(str::to_owned)).collect()
}

/// Concatenated assistant text from Anthropic events.
pub fn anthropic_text(events: &[Event]) -> String {
    events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .filter_map(|e| e.json()["delta"]["text"].as_str().map(str::to_owned))
        .collect()
}

/// Value of a counter/gauge line in Prometheus text whose name and labels contain all of `parts`.
pub fn metric_value(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Polls `check` until it holds (tests wait on real sockets, so this bounds waits without fixed sleeps).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` every 25 ms until it returns `Some`, and returns that; fails after `within`, naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// POSTs `body` with the gateway key `key` (bearer) and returns the status and the JSON answer (`Null`
/// when it is not JSON); a transport error fails the test, naming the URL.
pub async fn post_json(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> (u16, Value) {
    let response =
        client.post(url).bearer_auth(key).json(body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A one-message chat completion body for `model`.
pub fn chat_body(model: &str, content: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// One sample of Prometheus text exposition: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text exposition (comments skipped; label values unescaped). Panics on a line that is
/// not a sample: the node's `/metrics` must always parse.
pub fn parse_metrics(text: &str) -> Vec<MetricSample> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), std::collections::BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
                    (name.to_owned(), parse_labels(body, line))
                }
            };
            MetricSample { name, labels, value }
        })
        .collect()
}

fn parse_labels(body: &str, line: &str) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label in: {line}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("bad escape in: {line}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in: {line}"),
            }
        };
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The value of the sample `name` whose labels include `labels`.
pub fn sample(samples: &[MetricSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
}
