//! The public types of the node handle: its configuration, why a call failed, and cluster status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{NodeId, NodeInfo};

#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    pub node_id: NodeId,
    /// This node's addresses as other members should use them.
    pub advertise: NodeInfo,
    /// Raft addresses of the initial voters (the same on every node). The lowest id initializes a fresh cluster.
    pub initial_members: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Bound on a write or linearizable read without a quorum.
    pub write_timeout: Duration,
    /// Build a snapshot (and purge the log) after this many applied entries.
    pub snapshot_after_logs: u64,
    /// Secrets every peer RPC must carry (the first signs ours); none refuses every peer RPC.
    pub cluster_secrets: Vec<String>,
    /// Mutual TLS on the Raft port and to peers (`[cluster_tls]`); plain HTTP/2 without.
    pub tls: Option<crate::tls::ClusterTls>,
}

impl ConsensusConfig {
    pub fn new(node_id: NodeId, advertise: NodeInfo, data_dir: PathBuf) -> Self {
        ConsensusConfig {
            node_id,
            advertise,
            initial_members: BTreeMap::new(),
            data_dir,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            write_timeout: Duration::from_secs(5),
            snapshot_after_logs: 1000,
            cluster_secrets: Vec::new(),
            tls: None,
        }
    }
}

impl ConsensusConfig {
    /// openraft's settings from this config.
    pub(super) fn raft_config(&self) -> anyhow::Result<openraft::Config> {
        let config = self;
        Ok(openraft::Config {
            cluster_name: "tollgate".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_after_logs),
            max_in_snapshot_log_to_keep: config.snapshot_after_logs / 2,
            // Snapshot chunks travel as JSON (bytes become number arrays, ~3x larger): keep chunks small and
            // give each one far longer than the 200 ms default, or cross-region installs never finish.
            snapshot_max_chunk_size: 512 * 1024,
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()?)
    }
}

/// Why a cluster call failed, mapped to HTTP statuses by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClusterError {
    /// No leader reachable / no quorum within the timeout (503).
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The request is invalid (400).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Unknown node or object (404).
    #[error("not found: {0}")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub id: NodeId,
    pub raft_addr: String,
    pub api_addr: String,
    pub admin_addr: String,
    /// `leader`, `follower` (voter) or `learner`.
    pub role: String,
    /// Highest log index known replicated to this member (leader's view), or its own applied index.
    pub matched_index: Option<u64>,
    /// Entries behind the leader's last log index.
    pub lag: Option<u64>,
    /// Whether the leader has heard from it (it has a matched log).
    pub alive: bool,
    /// It announced its addresses itself (`RegisterNode`), i.e. it has run with its data at least once; a
    /// member only added (`add-node`) has not yet.
    #[serde(default)]
    pub registered: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: NodeId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    /// A membership change under way: the voter sets of a joint configuration (old, then target); empty
    /// when the membership is uniform. The leader completes a joint one (issue 17.6).
    #[serde(default)]
    pub joint: Vec<Vec<NodeId>>,
}

/// Writes proposed through this node (forwarded to the leader or its own): by result, and their latency.
#[derive(Debug, Default)]
pub struct ProposalStats {
    pub applied: std::sync::atomic::AtomicU64,
    /// Applied, but the state machine refused the command (a validation error).
    pub rejected: std::sync::atomic::AtomicU64,
    /// No quorum, no leader, or an internal error: the write may or may not have been applied.
    pub failed: std::sync::atomic::AtomicU64,
    pub micros: std::sync::atomic::AtomicU64,
}

impl ProposalStats {
    pub(super) fn record(&self, result: &Result<crate::state::Response, ClusterError>, took: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let counter = match result {
            Ok(crate::state::Response::Rejected { .. }) => &self.rejected,
            Ok(_) => &self.applied,
            Err(_) => &self.failed,
        };
        counter.fetch_add(1, Relaxed);
        self.micros.fetch_add(took.as_micros() as u64, Relaxed);
    }
}
