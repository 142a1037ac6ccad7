//! The replicated control-plane resources: providers, models (routes), orgs, teams and keys. The node's
//! TOML file uses the same types for its bootstrap sections, so a file and the Raft state never disagree
//! on a field name.
//!
//! Unknown fields are accepted here: these types travel in the Raft log and in snapshots, and a newer peer
//! may replicate a field this version does not know yet (a rolling upgrade; issue 17.1). The edges refuse
//! them instead, naming the field: the config file (`node/src/config.rs`) and the admin API's bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API: OpenAI, vLLM, TGI, SGLang, DeepSeek, Groq…
    Openai,
    Anthropic,
    /// Built-in deterministic provider: no network, no keys.
    Mock,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub base_url: Option<String>,
    /// Literal API key (prefer `api_key_env`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Name of the environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Prometheus endpoint of a self-hosted engine (scraped for GPU load by the gossip layer).
    #[serde(default)]
    pub metrics_url: Option<String>,
    /// Extra headers sent upstream on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Settings of a `mock` provider.
    #[serde(default)]
    pub mock: Option<MockConfig>,
}

impl ProviderConfig {
    /// A built-in `mock` provider with these settings (none: the defaults) and nothing else set.
    pub fn mock(name: &str, mock: Option<MockConfig>) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            kind: ProviderKind::Mock,
            base_url: None,
            api_key: None,
            api_key_env: None,
            metrics_url: None,
            headers: BTreeMap::new(),
            connect_timeout_ms: None,
            first_byte_timeout_ms: None,
            idle_timeout_ms: None,
            mock,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MockStyle {
    #[default]
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct MockConfig {
    /// Which API the mock answers in (the gateway translates as usual).
    #[serde(default)]
    pub style: MockStyle,
    /// Fixed answer; by default the mock echoes a summary of the last user message.
    #[serde(default)]
    pub reply: Option<String>,
    /// Delay before the response starts.
    #[serde(default)]
    pub first_token_delay_ms: u64,
    /// Delay between streamed tokens.
    #[serde(default)]
    pub token_delay_ms: u64,
}

/// The tiktoken vocabulary used for a model's local token estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TokenEncoding {
    #[serde(rename = "o200k_base")]
    O200kBase,
    #[serde(rename = "cl100k_base")]
    Cl100kBase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Tiers by `priority` (lower first); within a tier, by weight; fall back to the next tier on failure.
    #[default]
    Priority,
    /// Pick by `weight` (A/B and canary splits), fall back to the others on failure.
    Weighted,
    /// Within each priority tier, the cheapest target (price × predicted tokens) whose context window fits.
    LeastCost,
    /// Within each priority tier, the least loaded endpoint: shortest queue (GPU metrics or in-flight
    /// requests, cluster-wide through gossip) plus free KV cache, as the Gateway API Inference Extension.
    LeastLoad,
    /// Within each priority tier, the lowest peak-EWMA latency × outstanding requests.
    Latency,
}

/// Retry rounds over a route's targets once every target failed with a retryable error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct RetryPolicy {
    /// Extra rounds after the first (0 = fall back through the targets once, the default without `retry`).
    #[serde(default = "default_retry_attempts")]
    pub attempts: u32,
    /// First backoff; doubled each round, capped by `max_backoff_ms`. A larger `Retry-After` wins up to the cap.
    #[serde(default = "default_retry_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_retry_max_backoff")]
    pub max_backoff_ms: u64,
}

fn default_retry_attempts() -> u32 {
    1
}
fn default_retry_backoff() -> u64 {
    100
}
fn default_retry_max_backoff() -> u64 {
    2_000
}

/// Which target of a route is the canary: its index in `targets`, or its provider name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CanaryTarget {
    Index(usize),
    Provider(String),
}

/// A canary's SLO relative to the stable targets (all other targets of the route with weight > 0). When
/// it is broken over the window, the canary's weight is set to 0 cluster-wide through a Raft write.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CanaryConfig {
    pub target: CanaryTarget,
    /// Roll back when canary error rate − stable error rate exceeds this (0.05 = 5 points).
    #[serde(default = "default_error_rate_delta")]
    pub max_error_rate_delta: f64,
    /// Roll back when canary p95 latency / stable p95 latency exceeds this.
    #[serde(default = "default_latency_ratio")]
    pub max_p95_latency_ratio: f64,
    #[serde(default = "default_canary_window")]
    pub window_secs: u64,
    /// Both the canary and the stable targets need this many requests in the window before judging.
    #[serde(default = "default_canary_min_requests")]
    pub min_requests: u64,
}

impl CanaryConfig {
    /// The canary's index in `targets`, if the config names an existing target.
    pub fn target_index(&self, targets: &[TargetConfig]) -> Option<usize> {
        match &self.target {
            CanaryTarget::Index(index) => Some(*index).filter(|index| *index < targets.len()),
            CanaryTarget::Provider(name) => targets.iter().position(|t| &t.provider == name),
        }
    }
}

fn default_error_rate_delta() -> f64 {
    0.05
}
fn default_latency_ratio() -> f64 {
    2.0
}
fn default_canary_window() -> u64 {
    60
}
fn default_canary_min_requests() -> u64 {
    20
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
pub struct Price {
    /// USD per million input tokens.
    #[serde(default)]
    pub input: f64,
    /// USD per million output tokens.
    #[serde(default)]
    pub output: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ModelConfig {
    pub name: String,
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Cap on `max_tokens`; also the default `max_tokens` sent to providers that require one.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Cap on the prompt's size in bytes (messages, system, tools…), checked before any token counting:
    /// a larger request gets 413 without costing the node CPU. Unset: only `limits.max_body_bytes` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_bytes: Option<u64>,
    /// Cap on the number of messages in one request (conversation length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
    /// Cap on the prompt's tokens (the route's tokenizer), tighter than the context window if wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prompt_tokens: Option<u64>,
    #[serde(default)]
    pub price_per_mtok: Price,
    /// Tokenizer used for local estimates (default: guessed from the name).
    #[serde(default)]
    pub encoding: Option<TokenEncoding>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Upstream statuses that fall back to the next target besides 429, 5xx, timeouts and connect errors
    /// (e.g. `[401, 402]` when another provider account may still work).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_on: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryConfig>,
    /// Guardrails (`[[guardrails]]` names) run on every request to this route, besides the org's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<String>,
    /// Record prompt and completion text on this route's trace spans (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`; secrets and PII redacted, capped). Off by default: no other route's spans
    /// ever carry a word of either. Left out when off, so older peers read the model unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trace_content: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TargetConfig {
    pub provider: String,
    /// The model name the provider knows; defaults to the route's name.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub priority: u32,
    /// This target's price when it differs from the model's (`least_cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_mtok: Option<Price>,
    /// This target's context window when smaller than the model's (`least_cost` skips targets it overflows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
}

fn default_weight() -> u32 {
    100
}

impl ModelConfig {
    /// A model with every option at its default, routed to one target on `provider`.
    pub fn single_target(name: &str, provider: &str) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            context_window: None,
            max_output_tokens: None,
            max_prompt_bytes: None,
            max_messages: None,
            max_prompt_tokens: None,
            price_per_mtok: Price::default(),
            encoding: None,
            strategy: Strategy::default(),
            targets: vec![TargetConfig {
                provider: provider.into(),
                model: None,
                weight: default_weight(),
                priority: 0,
                price_per_mtok: None,
                context_window: None,
            }],
            fallback_on: Vec::new(),
            retry: None,
            canary: None,
            guardrails: Vec::new(),
            trace_content: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct OrgConfig {
    pub name: String,
    /// The org's token or cost budget (`{limit_tokens, limit_cost, period}`), set as a ledger budget.
    #[serde(default)]
    pub budget: Option<serde_json::Value>,
    /// Guardrails (`[[guardrails]]` names) run on every request of the org's keys, besides the route's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<String>,
}

impl OrgConfig {
    /// An org with no budget and no guardrails of its own.
    pub fn named(name: impl Into<String>) -> OrgConfig {
        OrgConfig { name: name.into(), budget: None, guardrails: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct TeamConfig {
    pub org: String,
    pub name: String,
}

/// An API key as the cluster stores it: only the SHA-256 of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct KeyRecord {
    pub id: String,
    /// Lowercase hex SHA-256 of the key.
    pub key_sha256: String,
    #[serde(default)]
    pub name: Option<String>,
    pub org: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub created_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct KeyConfig {
    /// The key itself (dev setups), or…
    #[serde(default)]
    pub key: Option<String>,
    /// …its lowercase hex SHA-256, so the config file holds no secret.
    #[serde(default)]
    pub key_sha256: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub org: String,
    #[serde(default)]
    pub team: Option<String>,
    /// Models this key may use; all when absent.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}
