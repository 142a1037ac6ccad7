//! The node's TOML configuration: parsed strictly (unknown fields are errors) and validated at load with
//! messages that name the offending field, e.g. `models[1].targets[0].provider: unknown provider "x"`.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use node::{
    parse_peer_ids, parse_socket_addr, GossipConfig, HealthConfig, ListenAddrs, NodeConfig, NodeSecrets, Peers,
    RaftConfig,
};
pub use tollgate_consensus::resources::{
    CanaryConfig, CanaryTarget, KeyConfig, KeyRecord, MockConfig, MockStyle, ModelConfig, OrgConfig, Price,
    ProviderConfig, ProviderKind, RetryPolicy, Strategy, TargetConfig, TeamConfig,
};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub orgs: Vec<OrgConfig>,
    #[serde(default)]
    pub teams: Vec<TeamConfig>,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Named guardrails, attached by `guardrails = [...]` on models and orgs.
    #[serde(default)]
    pub guardrails: Vec<crate::guard::GuardrailConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted request body; bigger gets 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Largest non-streamed upstream response the gateway will read.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// From sending the request to the upstream's response headers (and, for streams, its first event).
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed between two body chunks of an upstream response.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// How long a shutdown waits for in-flight requests and streams.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_ms: u64,
    /// From accepting a client connection to its first complete request headers (protocol detection, the
    /// HTTP/2 preface, TLS later): a connection that sends nothing, or half a preface, is closed after this.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// A client connection with no request in flight and no bytes either way for this long is closed.
    #[serde(default = "default_client_idle_timeout")]
    pub client_idle_timeout_ms: u64,
    /// The whole request body must arrive within this (408 after).
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: u64,
    /// Open client connections per listener; beyond it a new connection gets 503 and is closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request head (HTTP/1 headers buffer, HTTP/2 header list); bigger is refused.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
}

fn default_handshake_timeout() -> u64 {
    10_000
}
fn default_client_idle_timeout() -> u64 {
    120_000
}
fn default_body_timeout() -> u64 {
    60_000
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_body() -> usize {
    10 * 1024 * 1024
}
fn default_max_response() -> usize {
    64 * 1024 * 1024
}
fn default_connect_timeout() -> u64 {
    5_000
}
fn default_first_byte_timeout() -> u64 {
    120_000
}
fn default_idle_timeout() -> u64 {
    60_000
}
fn default_shutdown_grace() -> u64 {
    30_000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: default_max_body(),
            max_response_bytes: default_max_response(),
            connect_timeout_ms: default_connect_timeout(),
            first_byte_timeout_ms: default_first_byte_timeout(),
            idle_timeout_ms: default_idle_timeout(),
            shutdown_grace_ms: default_shutdown_grace(),
            handshake_timeout_ms: default_handshake_timeout(),
            client_idle_timeout_ms: default_client_idle_timeout(),
            body_timeout_ms: default_body_timeout(),
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
        }
    }
}

impl Config {
    /// Cluster mode: this node runs Raft with the configured peers. Without peers it serves its file alone.
    pub fn is_clustered(&self) -> bool {
        !self.node.raft.peers.is_empty()
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        // Not the error's Display: it quotes the offending line, which may hold a secret (an api_key).
        let located = |err: toml::de::Error| {
            let Some(span) = err.span() else { return anyhow::anyhow!("{}", err.message()) };
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            match field_at(text, line) {
                Some(field) => anyhow::anyhow!("line {line}, `{field}`: {}", err.message()),
                None => anyhow::anyhow!("line {line}: {}", err.message()),
            }
        };
        // The replicated types accept unknown fields (a newer peer may send one); a file must not.
        let mut unknown = Vec::new();
        let deserializer = toml::de::Deserializer::parse(text).map_err(located)?;
        let config: Config =
            serde_ignored::deserialize(deserializer, |path| unknown.push(field_path(&path))).map_err(located)?;
        if let Some(field) = unknown.first() {
            bail!("`{field}`: unknown field");
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-references and values; every message names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.validate_node()?;
        self.validate_gossip()?;
        if self.limits.max_body_bytes == 0 {
            bail!("limits.max_body_bytes: must be greater than 0");
        }
        let provider_names = self.validate_providers()?;
        self.validate_models(&provider_names)?;
        self.validate_guardrails()?;
        self.validate_tenants()
    }

    /// Peers and Raft timing (addresses and peer ids are checked as they are parsed).
    fn validate_node(&self) -> anyhow::Result<()> {
        let raft = &self.node.raft;
        if !raft.peers.is_empty() && !raft.peers.contains_key(&self.node.id) {
            // A node joining an existing cluster lists the current voters; it is added with `cluster add-node`.
            tracing::info!(node_id = self.node.id, "this node is not among node.peers; it will wait to be added");
        }
        if raft.heartbeat_ms == 0
            || raft.election_timeout_min_ms <= raft.heartbeat_ms
            || raft.election_timeout_max_ms <= raft.election_timeout_min_ms
        {
            bail!(
                "node.election_timeout_min_ms: need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms"
            );
        }
        Ok(())
    }

    /// Names, URLs and headers of the providers; returns their names.
    fn validate_providers(&self) -> anyhow::Result<HashSet<&str>> {
        let mut provider_names = HashSet::new();
        for (index, provider) in self.providers.iter().enumerate() {
            let at = format!("providers[{index}]");
            if provider.name.is_empty() {
                bail!("{at}.name: must not be empty");
            }
            if !provider_names.insert(provider.name.as_str()) {
                bail!("{at}.name: duplicate provider name `{}`", provider.name);
            }
            match (&provider.kind, &provider.base_url) {
                (ProviderKind::Mock, _) => {}
                (_, Some(url)) => {
                    let uri: http::Uri =
                        url.parse().map_err(|_| anyhow::anyhow!("{at}.base_url: `{url}` is not a URL"))?;
                    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                        bail!("{at}.base_url: `{url}` must be an http:// or https:// URL with a host");
                    }
                }
                (ProviderKind::Openai, None) | (ProviderKind::Anthropic, None) => {}
            }
            if provider.mock.is_some() && provider.kind != ProviderKind::Mock {
                bail!("{at}.mock: only allowed on providers of kind \"mock\"");
            }
            for (name, value) in &provider.headers {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() || http::HeaderValue::from_str(value).is_err()
                {
                    bail!("{at}.headers.{name}: not a valid HTTP header");
                }
            }
        }
        Ok(provider_names)
    }

    fn validate_models(&self, provider_names: &HashSet<&str>) -> anyhow::Result<()> {
        let mut model_names = HashSet::new();
        for (index, model) in self.models.iter().enumerate() {
            let at = format!("models[{index}]");
            if model.name.is_empty() {
                bail!("{at}.name: must not be empty");
            }
            if !model_names.insert(model.name.as_str()) {
                bail!("{at}.name: duplicate model name `{}`", model.name);
            }
            if model.targets.is_empty() {
                bail!("{at}.targets: a model needs at least one target");
            }
            if model.price_per_mtok.input < 0.0 || model.price_per_mtok.output < 0.0 {
                bail!("{at}.price_per_mtok: prices must not be negative");
            }
            for (field, cap) in [("max_messages", model.max_messages), ("max_prompt_tokens", model.max_prompt_tokens)] {
                if cap == Some(0) {
                    bail!("{at}.{field}: must be at least 1 (leave it out for no cap)");
                }
            }
            for (target_index, target) in model.targets.iter().enumerate() {
                if !provider_names.contains(target.provider.as_str()) {
                    bail!("{at}.targets[{target_index}].provider: unknown provider `{}`", target.provider);
                }
            }
            if model.strategy == Strategy::Weighted && model.targets.iter().all(|t| t.weight == 0) {
                bail!("{at}.targets: a weighted model needs a target with weight > 0");
            }
            validate_routing(model, &at)?;
        }
        Ok(())
    }

    /// Org budgets and keys.
    fn validate_tenants(&self) -> anyhow::Result<()> {
        for (index, org) in self.orgs.iter().enumerate() {
            if let Some(budget) = &org.budget {
                let mut spec = budget.clone();
                if let Some(object) = spec.as_object_mut() {
                    object.insert("scope".into(), serde_json::json!({"org": org.name}));
                }
                let spec: tollgate_consensus::BudgetSpec =
                    serde_json::from_value(spec).map_err(|err| anyhow::anyhow!("orgs[{index}].budget: {err}"))?;
                if spec.limit_units().is_none() {
                    bail!("orgs[{index}].budget: set limit_tokens or limit_cost");
                }
            }
        }
        for (index, key) in self.keys.iter().enumerate() {
            let at = format!("keys[{index}]");
            match (&key.key, &key.key_sha256) {
                (Some(k), None) if !k.is_empty() => {}
                (None, Some(hash)) if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {}
                (None, Some(_)) => bail!("{at}.key_sha256: must be 64 hex characters"),
                _ => bail!("{at}: set exactly one of `key` or `key_sha256`"),
            }
            if key.org.is_empty() {
                bail!("{at}.org: must not be empty");
            }
        }
        Ok(())
    }
}

/// `providers[0].bogus` for serde_ignored's path (its own Display writes `providers.0.bogus`).
pub fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let parent = field_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// The field a TOML line sets, named from the top (`node.listen`, `models[1].encoding`): the key before
/// its `=` under the nearest table header, counting `[[array]]` headers. Its value is never shown.
fn field_at(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for header in text.lines().take(line.saturating_sub(1)).map(str::trim) {
        // `[[models.targets]]` belongs to the latest `[[models]]`: models[1].targets[0].
        let qualify = |name: &str, arrays: &std::collections::HashMap<String, usize>| match name.split_once('.') {
            Some((parent, rest)) if arrays.contains_key(parent) => format!("{parent}[{}].{rest}", arrays[parent]),
            _ => name.to_owned(),
        };
        if let Some(name) = header.strip_prefix("[[").and_then(|h| h.split("]]").next()) {
            let name = qualify(name.trim(), &arrays);
            let index = *arrays.entry(name.clone()).and_modify(|n| *n += 1).or_insert(0);
            table = format!("{name}[{index}]");
        } else if let Some(name) = header.strip_prefix('[').and_then(|h| h.split(']').next()) {
            table = qualify(name.trim(), &arrays);
        }
    }
    let key = text.lines().nth(line - 1)?.split_once('=')?.0.trim();
    Some(if table.is_empty() { key.to_owned() } else { format!("{table}.{key}") })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

#[path = "config_secrets.rs"]
mod secrets;

#[path = "config_node.rs"]
mod node;

#[path = "config_checks.rs"]
mod checks;
use checks::validate_routing;
