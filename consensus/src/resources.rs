//! The replicated control-plane resources: providers, models (routes), orgs, teams and keys. The node's
//! TOML file uses the same types for its bootstrap sections, so a file and the Raft state never disagree
//! on a field name.

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
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MockStyle {
    #[default]
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Tiers by `priority` (lower first); within a tier, by weight; fall back to the next tier on failure.
    #[default]
    Priority,
    /// Pick by `weight` (A/B and canary splits), fall back to the others on failure.
    Weighted,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per million input tokens.
    #[serde(default)]
    pub input: f64,
    /// USD per million output tokens.
    #[serde(default)]
    pub output: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Cap on `max_tokens`; also the default `max_tokens` sent to providers that require one.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub price_per_mtok: Price,
    /// Tokenizer used for local estimates: `o200k_base` or `cl100k_base` (default: guessed from the name).
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    /// The model name the provider knows; defaults to the route's name.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub priority: u32,
}

fn default_weight() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    pub name: String,
    /// Budgets are enforced once the budget ledger exists; accepted here so cluster files stay valid.
    #[serde(default)]
    pub budget: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
