//! The node's TOML configuration: parsed strictly (unknown fields are errors) and validated at load with
//! messages that name the offending field, e.g. `models[1].targets[0].provider: unknown provider "x"`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

pub use tollgate_consensus::resources::{
    KeyConfig, KeyRecord, MockConfig, MockStyle, ModelConfig, OrgConfig, Price, ProviderConfig, ProviderKind, Strategy,
    TargetConfig, TeamConfig,
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
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default = "default_node_id")]
    pub id: u64,
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    #[serde(default = "default_raft_listen")]
    pub raft_listen: String,
    #[serde(default = "default_gossip_listen")]
    pub gossip_listen: String,
    /// Raft addresses of the initial voters, by node id (used once the control plane lands).
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    #[serde(default)]
    pub admin_token: Option<String>,
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Address other nodes use for this node's Raft port (default: `raft_listen`).
    #[serde(default)]
    pub advertise_raft: Option<String>,
    /// Raft timing; across regions use a heartbeat of ~3-5x the RTT and elections ~10x the heartbeat.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election_min")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "default_election_max")]
    pub election_timeout_max_ms: u64,
    /// Bound on admin writes and linearizable reads without a quorum (then 503).
    #[serde(default = "default_write_timeout")]
    pub write_timeout_ms: u64,
    /// Snapshot the state machine and purge the Raft log after this many entries.
    #[serde(default = "default_snapshot_after")]
    pub snapshot_after_logs: u64,
}

fn default_snapshot_after() -> u64 {
    1000
}

fn default_heartbeat() -> u64 {
    100
}
fn default_election_min() -> u64 {
    500
}
fn default_election_max() -> u64 {
    1000
}
fn default_write_timeout() -> u64 {
    5000
}

fn default_node_id() -> u64 {
    1
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_raft_listen() -> String {
    "127.0.0.1:7070".into()
}
fn default_gossip_listen() -> String {
    "127.0.0.1:7946".into()
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: default_node_id(),
            data_dir: None,
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            raft_listen: default_raft_listen(),
            gossip_listen: default_gossip_listen(),
            peers: BTreeMap::new(),
            admin_token: None,
            admin_token_file: None,
            advertise_raft: None,
            heartbeat_ms: default_heartbeat(),
            election_timeout_min_ms: default_election_min(),
            election_timeout_max_ms: default_election_max(),
            write_timeout_ms: default_write_timeout(),
            snapshot_after_logs: default_snapshot_after(),
        }
    }
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
        }
    }
}

impl Config {
    /// Cluster mode: this node runs Raft with the configured peers. Without peers it serves its file alone.
    pub fn is_clustered(&self) -> bool {
        !self.node.peers.is_empty()
    }

    /// The admin token: `node.admin_token`, else the file `node.admin_token_file`, else `TOLLGATE_ADMIN_TOKEN`.
    pub fn admin_token(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = &self.node.admin_token {
            return Ok(Some(token.clone()));
        }
        if let Some(path) = &self.node.admin_token_file {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("node.admin_token_file: reading {}", path.display()))?;
            return Ok(Some(token.trim().to_owned()));
        }
        Ok(std::env::var("TOLLGATE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()))
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text).map_err(|err| anyhow::anyhow!("{err}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-references and values; every message names the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (field, value) in [
            ("node.listen", &self.node.listen),
            ("node.admin_listen", &self.node.admin_listen),
            ("node.raft_listen", &self.node.raft_listen),
            ("node.gossip_listen", &self.node.gossip_listen),
        ] {
            if value.parse::<SocketAddr>().is_err() {
                bail!("{field}: `{value}` is not a socket address like 127.0.0.1:8080");
            }
        }
        for (id, addr) in &self.node.peers {
            if id.parse::<u64>().is_err() {
                bail!("node.peers: `{id}` is not a node id");
            }
            if addr.is_empty() {
                bail!("node.peers.{id}: empty address");
            }
        }
        if !self.node.peers.is_empty() && !self.node.peers.contains_key(&self.node.id.to_string()) {
            // A node joining an existing cluster lists the current voters; it is added with `cluster add-node`.
            tracing::info!(node_id = self.node.id, "this node is not among node.peers; it will wait to be added");
        }
        if self.node.heartbeat_ms == 0
            || self.node.election_timeout_min_ms <= self.node.heartbeat_ms
            || self.node.election_timeout_max_ms <= self.node.election_timeout_min_ms
        {
            bail!(
                "node.election_timeout_min_ms: need heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms"
            );
        }
        if self.limits.max_body_bytes == 0 {
            bail!("limits.max_body_bytes: must be greater than 0");
        }
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
            if let Some(encoding) = &model.encoding {
                if !matches!(encoding.as_str(), "o200k_base" | "cl100k_base") {
                    bail!("{at}.encoding: `{encoding}` is not one of o200k_base, cl100k_base");
                }
            }
            if model.price_per_mtok.input < 0.0 || model.price_per_mtok.output < 0.0 {
                bail!("{at}.price_per_mtok: prices must not be negative");
            }
            for (target_index, target) in model.targets.iter().enumerate() {
                if !provider_names.contains(target.provider.as_str()) {
                    bail!("{at}.targets[{target_index}].provider: unknown provider `{}`", target.provider);
                }
            }
            if model.strategy == Strategy::Weighted && model.targets.iter().all(|t| t.weight == 0) {
                bail!("{at}.targets: a weighted model needs a target with weight > 0");
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
listen = "127.0.0.1:0"

[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[[models]]
name = "gpt-4o-mini"
price_per_mtok = { input = 0.15, output = 0.60 }
[[models.targets]]
provider = "openai"

[[keys]]
key = "tg-test"
org = "acme"
"#;

    fn error_of(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => String::from("<no error>"),
            Err(err) => format!("{err:#}"),
        }
    }

    #[test]
    fn accepts_a_good_config() {
        let config = Config::parse(GOOD).map_err(|e| format!("{e:#}"));
        assert!(config.is_ok(), "{config:?}");
    }

    #[test]
    fn org_budgets_are_validated() {
        let with_budget =
            format!("{GOOD}\n[[orgs]]\nname = \"acme\"\nbudget = {{ limit_tokens = 5000000, period = \"month\" }}\n");
        assert!(Config::parse(&with_budget).is_ok(), "{}", error_of(&with_budget));
        let bad = format!("{GOOD}\n[[orgs]]\nname = \"acme\"\nbudget = {{ period = \"fortnight\" }}\n");
        assert!(error_of(&bad).contains("orgs[0].budget"), "{}", error_of(&bad));
    }

    #[test]
    fn names_the_bad_field() {
        assert!(error_of(&GOOD.replace("provider = \"openai\"", "provider = \"nope\""))
            .contains("models[0].targets[0].provider"));
        assert!(error_of(&GOOD.replace("https://api.openai.com/v1", "ftp://x")).contains("providers[0].base_url"));
        assert!(error_of(&GOOD.replace("127.0.0.1:0", "localhost")).contains("node.listen"));
        assert!(error_of(&GOOD.replace("org = \"acme\"", "org = \"acme\"\nkey_sha256 = \"ab\"")).contains("keys[0]"));
        assert!(error_of(&GOOD.replace("kind = \"openai\"", "kind = \"openai\"\nbogus = 1")).contains("bogus"));
        assert!(error_of(&GOOD.replace("kind = \"openai\"", "kind = \"gemini\"")).contains("kind"));
        assert!(error_of(&format!(
            "{GOOD}\n[[models]]\nname = \"gpt-4o-mini\"\ntargets = [{{provider = \"openai\"}}]"
        ))
        .contains("duplicate model name"));
    }
}
