//! The `[node]` table: this node's own settings (not replicated). The file spells them flat, as CONTRACT.md
//! shows (`listen = …`, `heartbeat_ms = …`, `gossip_seeds = …`); the program reads them typed and grouped
//! by concern: listen addresses, Raft, gossip, endpoint health, secrets. [`NodeFile`] is the flat wire
//! form, mapped field by field in both directions so that a new setting cannot be half-added.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

/// Raft addresses (`host:port`, DNS names allowed) of the initial voters, by node id.
pub type Peers = BTreeMap<u64, String>;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "NodeFile", into = "NodeFile")]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: Option<PathBuf>,
    pub listen: ListenAddrs,
    pub raft: RaftConfig,
    pub gossip: GossipConfig,
    pub health: HealthConfig,
    pub secrets: NodeSecrets,
    /// Microseconds a tokio worker polls for work before it parks (0 = off). Saves the wake-up of an idle
    /// (v)CPU on the response path at the cost of CPU while lightly loaded; see `idle_spin.rs`.
    pub idle_spin_us: u64,
    /// A PEM file of CA certificates trusted for upstream HTTPS besides the public roots (a private CA in
    /// front of self-hosted inference servers); see `providers/tls.rs`.
    pub upstream_ca_file: Option<PathBuf>,
    /// `[node.tls]`: TLS on the API listener (absent: plain text, with a warning).
    pub tls: Option<crate::tls_listen::TlsFiles>,
    /// `[node.admin_tls]`: TLS on the admin listener.
    pub admin_tls: Option<crate::tls_listen::TlsFiles>,
    /// `access_log`: `"stderr"` or a file path: one JSON line per request (see `access_log.rs`).
    pub access_log: Option<String>,
    /// `[node.otlp]`: trace export (the `OTEL_*` variables win).
    pub otlp: Option<crate::telemetry::OtlpConfig>,
}

/// Where the node's four listeners bind (`listen`, `admin_listen`, `raft_listen`, `gossip_listen`).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenAddrs {
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub raft: SocketAddr,
    /// UDP.
    pub gossip: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RaftConfig {
    /// `peers`; empty: standalone (the file is the config).
    pub peers: Peers,
    /// `advertise_raft`: the address other nodes use for this node's Raft port (default: the bound one).
    pub advertise: Option<String>,
    /// Also openraft's deadline for every AppendEntries and read-index check: the defaults (250/750/1000)
    /// work up to ~100 ms RTT; beyond, keep it ≥ 2.5× the RTT and the election timeouts ≥ 3× it.
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Bound on admin writes and linearizable reads without a quorum (then 503).
    pub write_timeout_ms: u64,
    /// Snapshot the state machine and purge the Raft log after this many entries.
    pub snapshot_after_logs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GossipConfig {
    /// `gossip`: run chitchat. Default: on when `peers` names another node or seeds are set.
    pub enabled: Option<bool>,
    /// `gossip_advertise`: the address peers use for this node's gossip port.
    pub advertise: Option<SocketAddr>,
    /// `gossip_seeds`: `host:port` of other nodes to join through; DNS names are re-resolved.
    pub seeds: Vec<String>,
    pub interval_ms: u64,
    /// Nodes only gossip with nodes of the same cluster id.
    pub cluster_id: String,
}

/// Endpoint health: GPU-load scraping and circuit breakers.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// How often each provider's `metrics_url` is scraped for GPU load.
    pub gpu_scrape_interval_ms: u64,
    /// Consecutive failures of an endpoint that open its circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps the endpoint out of rotation before one probe is let through.
    pub breaker_cooldown_ms: u64,
}

/// Where the admin token and the cluster secrets come from (see `config_secrets.rs`).
#[derive(Clone, PartialEq, Default)]
pub struct NodeSecrets {
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    /// A file with one secret per line (the first signs, all are accepted: rotation).
    pub cluster_secret_file: Option<PathBuf>,
    /// Inline, for tests and `tollgate dev`.
    pub cluster_secret: Option<String>,
}

impl std::fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("NodeSecrets")
            .field("admin_token", &shown(&self.admin_token))
            .field("admin_token_file", &self.admin_token_file)
            .field("cluster_secret_file", &self.cluster_secret_file)
            .field("cluster_secret", &shown(&self.cluster_secret))
            .finish()
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        // Every default lives in one place: the wire form's.
        NodeConfig::try_from(NodeFile::default()).unwrap_or_else(|_| unreachable!("the defaults have no peers"))
    }
}

/// `[node]` as the file spells it.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
struct NodeFile {
    id: u64,
    data_dir: Option<PathBuf>,
    #[serde(deserialize_with = "socket_addr")]
    listen: SocketAddr,
    #[serde(deserialize_with = "socket_addr")]
    admin_listen: SocketAddr,
    #[serde(deserialize_with = "socket_addr")]
    raft_listen: SocketAddr,
    #[serde(deserialize_with = "socket_addr")]
    gossip_listen: SocketAddr,
    peers: BTreeMap<String, String>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
    cluster_secret_file: Option<PathBuf>,
    cluster_secret: Option<String>,
    advertise_raft: Option<String>,
    heartbeat_ms: u64,
    election_timeout_min_ms: u64,
    election_timeout_max_ms: u64,
    write_timeout_ms: u64,
    snapshot_after_logs: u64,
    gossip: Option<bool>,
    #[serde(deserialize_with = "optional_socket_addr")]
    gossip_advertise: Option<SocketAddr>,
    gossip_seeds: Vec<String>,
    gossip_interval_ms: u64,
    gossip_cluster_id: String,
    gpu_scrape_interval_ms: u64,
    breaker_failures: u32,
    breaker_cooldown_ms: u64,
    idle_spin_us: u64,
    upstream_ca_file: Option<PathBuf>,
    tls: Option<crate::tls_listen::TlsFiles>,
    admin_tls: Option<crate::tls_listen::TlsFiles>,
    access_log: Option<String>,
    otlp: Option<crate::telemetry::OtlpConfig>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Default for NodeFile {
    fn default() -> Self {
        NodeFile {
            id: 1,
            data_dir: None,
            listen: loopback(8080),
            admin_listen: loopback(9090),
            raft_listen: loopback(7070),
            gossip_listen: loopback(7946),
            peers: BTreeMap::new(),
            admin_token: None,
            admin_token_file: None,
            cluster_secret_file: None,
            cluster_secret: None,
            advertise_raft: None,
            heartbeat_ms: tollgate_consensus::node::DEFAULT_HEARTBEAT_MS,
            election_timeout_min_ms: tollgate_consensus::node::DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: tollgate_consensus::node::DEFAULT_ELECTION_TIMEOUT_MAX_MS,
            write_timeout_ms: 5000,
            snapshot_after_logs: 1000,
            gossip: None,
            gossip_advertise: None,
            gossip_seeds: Vec::new(),
            gossip_interval_ms: 200,
            gossip_cluster_id: "tollgate".into(),
            gpu_scrape_interval_ms: 1_000,
            breaker_failures: 5,
            breaker_cooldown_ms: 5_000,
            idle_spin_us: 0,
            upstream_ca_file: None,
            tls: None,
            admin_tls: None,
            access_log: None,
            otlp: None,
        }
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_socket_addr(&text).map_err(serde::de::Error::custom)
}

fn optional_socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(deserializer).map(Some)
}

/// An IP address and port; a host name is refused with an example (listeners bind an interface).
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| format!("`{text}` is not a socket address like 127.0.0.1:8080"))
}

/// `peers` keys are node ids.
pub fn parse_peer_ids(peers: BTreeMap<String, String>) -> Result<Peers, String> {
    peers
        .into_iter()
        .map(|(id, addr)| {
            let id = id.trim().parse::<u64>().map_err(|_| format!("node.peers: `{id}` is not a node id"))?;
            if addr.trim().is_empty() {
                return Err(format!("node.peers.{id}: empty address"));
            }
            Ok((id, addr.trim().to_owned()))
        })
        .collect()
}

impl TryFrom<NodeFile> for NodeConfig {
    type Error = String;

    fn try_from(file: NodeFile) -> Result<NodeConfig, String> {
        Ok(NodeConfig {
            id: file.id,
            data_dir: file.data_dir,
            listen: ListenAddrs {
                api: file.listen,
                admin: file.admin_listen,
                raft: file.raft_listen,
                gossip: file.gossip_listen,
            },
            raft: RaftConfig {
                peers: parse_peer_ids(file.peers)?,
                advertise: file.advertise_raft,
                heartbeat_ms: file.heartbeat_ms,
                election_timeout_min_ms: file.election_timeout_min_ms,
                election_timeout_max_ms: file.election_timeout_max_ms,
                write_timeout_ms: file.write_timeout_ms,
                snapshot_after_logs: file.snapshot_after_logs,
            },
            gossip: GossipConfig {
                enabled: file.gossip,
                advertise: file.gossip_advertise,
                seeds: file.gossip_seeds,
                interval_ms: file.gossip_interval_ms,
                cluster_id: file.gossip_cluster_id,
            },
            health: HealthConfig {
                gpu_scrape_interval_ms: file.gpu_scrape_interval_ms,
                breaker_failures: file.breaker_failures,
                breaker_cooldown_ms: file.breaker_cooldown_ms,
            },
            secrets: NodeSecrets {
                admin_token: file.admin_token,
                admin_token_file: file.admin_token_file,
                cluster_secret_file: file.cluster_secret_file,
                cluster_secret: file.cluster_secret,
            },
            idle_spin_us: file.idle_spin_us,
            upstream_ca_file: file.upstream_ca_file,
            tls: file.tls,
            admin_tls: file.admin_tls,
            access_log: file.access_log,
            otlp: file.otlp,
        })
    }
}

impl From<NodeConfig> for NodeFile {
    fn from(node: NodeConfig) -> NodeFile {
        let NodeConfig {
            id,
            data_dir,
            listen,
            raft,
            gossip,
            health,
            secrets,
            idle_spin_us,
            upstream_ca_file,
            tls,
            admin_tls,
            access_log,
            otlp,
        } = node;
        NodeFile {
            id,
            data_dir,
            listen: listen.api,
            admin_listen: listen.admin,
            raft_listen: listen.raft,
            gossip_listen: listen.gossip,
            peers: raft.peers.into_iter().map(|(id, addr)| (id.to_string(), addr)).collect(),
            admin_token: secrets.admin_token,
            admin_token_file: secrets.admin_token_file,
            cluster_secret_file: secrets.cluster_secret_file,
            cluster_secret: secrets.cluster_secret,
            advertise_raft: raft.advertise,
            heartbeat_ms: raft.heartbeat_ms,
            election_timeout_min_ms: raft.election_timeout_min_ms,
            election_timeout_max_ms: raft.election_timeout_max_ms,
            write_timeout_ms: raft.write_timeout_ms,
            snapshot_after_logs: raft.snapshot_after_logs,
            gossip: gossip.enabled,
            gossip_advertise: gossip.advertise,
            gossip_seeds: gossip.seeds,
            gossip_interval_ms: gossip.interval_ms,
            gossip_cluster_id: gossip.cluster_id,
            gpu_scrape_interval_ms: health.gpu_scrape_interval_ms,
            breaker_failures: health.breaker_failures,
            breaker_cooldown_ms: health.breaker_cooldown_ms,
            idle_spin_us,
            upstream_ca_file,
            tls,
            admin_tls,
            access_log,
            otlp,
        }
    }
}

impl NodeConfig {
    /// Whether this node runs gossip: `gossip` when set; otherwise on for a cluster member (`peers` names
    /// another node) or when it has seeds to join. `gossip = false` is the way out.
    pub fn gossip_enabled(&self) -> bool {
        self.gossip.enabled.unwrap_or_else(|| !self.gossip.seeds.is_empty() || self.has_other_peers())
    }

    /// `peers` names a node other than this one.
    pub fn has_other_peers(&self) -> bool {
        self.raft.peers.keys().any(|id| *id != self.id)
    }

    /// Where to join: `gossip_seeds`, else (cluster mode) each other peer's Raft host with its gossip port,
    /// taken to sit at the same distance from its Raft port as this node's: the same port everywhere in
    /// the usual one-node-per-host layout, and consecutive ports when several nodes share a host.
    pub fn effective_gossip_seeds(&self) -> Vec<String> {
        if !self.gossip.seeds.is_empty() {
            return self.gossip.seeds.clone();
        }
        let gossip_port = self.listen.gossip.port();
        if gossip_port == 0 {
            return Vec::new();
        }
        let port_of = |addr: &str| addr.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok());
        let my_raft_port = self.raft.peers.get(&self.id).and_then(|addr| port_of(addr));
        self.raft
            .peers
            .iter()
            .filter(|(id, _)| **id != self.id)
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
        if let Some(advertise) = self.gossip.advertise {
            return Some(advertise);
        }
        let listen = self.listen.gossip;
        if !listen.ip().is_unspecified() {
            return Some(listen);
        }
        let raft = self.raft.advertise.as_ref().or_else(|| self.raft.peers.get(&self.id))?;
        let raft: SocketAddr = raft.parse().ok()?;
        (!raft.ip().is_unspecified()).then(|| SocketAddr::new(raft.ip(), listen.port()))
    }
}
