//! The node's TOML configuration: parsed strictly (unknown fields are errors) and validated at load with
//! messages that name the offending field, e.g. `models[1].targets[0].provider: unknown provider "x"`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

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
    /// The secret every peer RPC must carry (required with `peers`): a file with one secret per line (the
    /// first signs, all are accepted: rotation), else `TOLLGATE_CLUSTER_SECRET`. `cluster_secret` inline is
    /// for tests and `tollgate dev`.
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub cluster_secret: Option<String>,
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
    /// Run chitchat gossip (UDP on `gossip_listen`). Default: on when `peers` names another node or
    /// `gossip_seeds` is set; `false` turns it off.
    #[serde(default)]
    pub gossip: Option<bool>,
    /// Address peers use for this node's gossip port (default: the bound `gossip_listen` address).
    #[serde(default)]
    pub gossip_advertise: Option<String>,
    /// Gossip addresses (`host:port`) of other nodes to join through; DNS names are re-resolved.
    #[serde(default)]
    pub gossip_seeds: Vec<String>,
    #[serde(default = "default_gossip_interval")]
    pub gossip_interval_ms: u64,
    /// Nodes only gossip with nodes of the same cluster id.
    #[serde(default = "default_gossip_cluster_id")]
    pub gossip_cluster_id: String,
    /// How often each provider's `metrics_url` is scraped for GPU load.
    #[serde(default = "default_gpu_scrape_interval")]
    pub gpu_scrape_interval_ms: u64,
    /// Consecutive failures of an endpoint that open its circuit breaker.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker keeps the endpoint out of rotation before one probe request is let through.
    #[serde(default = "default_breaker_cooldown")]
    pub breaker_cooldown_ms: u64,
    /// Microseconds a tokio worker polls for work before it parks (0 = off). Saves the wake-up of an idle
    /// (v)CPU on the response path at the cost of CPU while lightly loaded; see `idle_spin.rs`.
    #[serde(default)]
    pub idle_spin_us: u64,
}

fn default_gossip_interval() -> u64 {
    200
}
fn default_gossip_cluster_id() -> String {
    "tollgate".into()
}
fn default_gpu_scrape_interval() -> u64 {
    1_000
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown() -> u64 {
    5_000
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
            cluster_secret_file: None,
            cluster_secret: None,
            advertise_raft: None,
            heartbeat_ms: default_heartbeat(),
            election_timeout_min_ms: default_election_min(),
            election_timeout_max_ms: default_election_max(),
            write_timeout_ms: default_write_timeout(),
            snapshot_after_logs: default_snapshot_after(),
            gossip: None,
            gossip_advertise: None,
            gossip_seeds: Vec::new(),
            gossip_interval_ms: default_gossip_interval(),
            gossip_cluster_id: default_gossip_cluster_id(),
            gpu_scrape_interval_ms: default_gpu_scrape_interval(),
            breaker_failures: default_breaker_failures(),
            breaker_cooldown_ms: default_breaker_cooldown(),
            idle_spin_us: 0,
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

impl NodeConfig {
    /// Whether this node runs gossip: `gossip` when set; otherwise on for a cluster member (`peers` names
    /// another node) or when it has seeds to join. `gossip = false` is the way out.
    pub fn gossip_enabled(&self) -> bool {
        self.gossip.unwrap_or_else(|| !self.gossip_seeds.is_empty() || self.has_other_peers())
    }

    /// `peers` names a node other than this one.
    pub fn has_other_peers(&self) -> bool {
        let me = self.id.to_string();
        self.peers.keys().any(|id| *id != me)
    }

    /// Where to join: `gossip_seeds`, else (cluster mode) each other peer's Raft host with its gossip port,
    /// taken to sit at the same distance from its Raft port as this node's: the same port everywhere in
    /// the usual one-node-per-host layout, and consecutive ports when several nodes share a host.
    pub fn effective_gossip_seeds(&self) -> Vec<String> {
        if !self.gossip_seeds.is_empty() {
            return self.gossip_seeds.clone();
        }
        let port_of = |addr: &str| addr.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok());
        let Some(gossip_port) = port_of(&self.gossip_listen).filter(|p| *p != 0) else {
            return Vec::new();
        };
        let me = self.id.to_string();
        let my_raft_port = self.peers.get(&me).and_then(|addr| port_of(addr));
        self.peers
            .iter()
            .filter(|(id, _)| **id != me)
            .filter_map(|(_, raft)| {
                let (host, raft_port) = raft.rsplit_once(':')?;
                let port = match (my_raft_port, raft_port.parse::<u16>()) {
                    (Some(mine), Ok(theirs)) => {
                        u16::try_from(i32::from(theirs) + i32::from(gossip_port) - i32::from(mine)).ok()?
                    }
                    _ => gossip_port,
                };
                Some(format!("{host}:{port}"))
            })
            .collect()
    }

    /// The gossip address peers should use: `gossip_advertise`, else `gossip_listen` when it names one
    /// interface, else the host of this node's Raft address (`advertise_raft` or its `peers` entry) with
    /// the gossip port. `None` when none of these is a concrete IP address.
    pub fn gossip_advertise_addr(&self) -> Option<SocketAddr> {
        if let Some(advertise) = &self.gossip_advertise {
            return advertise.parse().ok();
        }
        let listen: SocketAddr = self.gossip_listen.parse().ok()?;
        if !listen.ip().is_unspecified() {
            return Some(listen);
        }
        let raft = self.advertise_raft.as_ref().or_else(|| self.peers.get(&self.id.to_string()))?;
        let raft: SocketAddr = raft.parse().ok()?;
        (!raft.ip().is_unspecified()).then(|| SocketAddr::new(raft.ip(), listen.port()))
    }
}

impl Config {
    /// Cluster mode: this node runs Raft with the configured peers. Without peers it serves its file alone.
    pub fn is_clustered(&self) -> bool {
        !self.node.peers.is_empty()
    }

    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        // Not the error's Display: it quotes the offending line, which may hold a secret (an api_key).
        let config: Config = toml::from_str(text).map_err(|err| {
            let Some(span) = err.span() else { return anyhow::anyhow!("{}", err.message()) };
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            // The key of the offending line names the field; its value is never shown.
            let line_text = text.lines().nth(line - 1).unwrap_or_default();
            match line_text.split_once('=') {
                Some((key, _)) => anyhow::anyhow!("line {line}, `{}`: {}", key.trim(), err.message()),
                None => anyhow::anyhow!("line {line}: {}", err.message()),
            }
        })?;
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
        self.validate_tenants()
    }

    /// Listen addresses, peers and Raft timing.
    fn validate_node(&self) -> anyhow::Result<()> {
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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

#[path = "config_secrets.rs"]
mod secrets;

#[path = "config_checks.rs"]
mod checks;
use checks::validate_routing;
