//! The public types of the node handle: its configuration, why a call failed, and cluster status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::types::{NodeId, NodeInfo};

/// Raft timing defaults that work up to ~100 ms RTT between nodes (`node.heartbeat_ms`,
/// `node.election_timeout_min_ms`/`max_ms`). openraft 0.9 uses the heartbeat interval as the hard deadline
/// of every AppendEntries and of the read-index quorum check (encoding, one round trip, the follower's
/// write and its answer): 100 ms, the old default, failed every RPC at 100 ms RTT. A failover takes about
/// `election_timeout_max` (openraft's leader lease) + an election timeout + up to 1.5 heartbeats (the
/// tick), here 1.75–2.4 s.
pub const DEFAULT_HEARTBEAT_MS: u64 = 250;
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 750;
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 1000;

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
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_min_ms: DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_TIMEOUT_MAX_MS,
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

/// Why a cluster call failed, mapped to HTTP statuses by the admin API. Travels between nodes (a forwarded
/// write's answer) as `{"Variant": "message"}`; a variant this version does not know, from a newer peer
/// during a rolling upgrade, reads as [`ClusterError::Internal`] with its name and message kept, instead of
/// failing the whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
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
    /// The command is larger than one Raft log entry may be (413; see `types::MAX_ENTRY_BYTES`).
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl<'de> Deserialize<'de> for ClusterError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        let mut entries = wire.into_iter();
        let (Some((variant, message)), None) = (entries.next(), entries.next()) else {
            return Err(serde::de::Error::custom("a cluster error is one variant and its message"));
        };
        Ok(match variant.as_str() {
            "NoQuorum" => ClusterError::NoQuorum(message),
            "Invalid" => ClusterError::Invalid(message),
            "NotFound" => ClusterError::NotFound(message),
            "TooLarge" => ClusterError::TooLarge(message),
            "Internal" => ClusterError::Internal(message),
            _ => ClusterError::Internal(format!("{variant} (from a newer peer): {message}")),
        })
    }
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
    /// Proposals by latency: `latency_buckets[i]` counts those within [`PROPOSAL_BUCKETS_SECONDS`]`[i]` (and
    /// above the bound before); slower ones are in no bucket (the count minus their sum).
    pub latency_buckets: [std::sync::atomic::AtomicU64; PROPOSAL_BUCKETS_SECONDS.len()],
}

/// Upper bounds of the proposal latency buckets, in seconds: a commit is a round trip to a quorum, from
/// well under a millisecond on one host to a few hundred across regions.
pub const PROPOSAL_BUCKETS_SECONDS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

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
        let seconds = took.as_secs_f64();
        if let Some(index) = PROPOSAL_BUCKETS_SECONDS.iter().position(|bound| seconds <= *bound) {
            self.latency_buckets[index].fetch_add(1, Relaxed);
        }
    }
}

/// Refuses a command larger than one Raft log entry may be ([`MAX_ENTRY_BYTES`](crate::types::MAX_ENTRY_BYTES)),
/// before it is proposed or forwarded.
pub(super) fn check_entry_size(request: &crate::state::Request) -> Result<(), ClusterError> {
    let limit = crate::types::MAX_ENTRY_BYTES;
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, request).map_err(|err| ClusterError::Internal(err.to_string()))?;
    if counter.0 <= limit {
        return Ok(());
    }
    Err(ClusterError::TooLarge(format!(
        "the change is {} bytes as one Raft log entry, over the limit of {limit} bytes ({} KiB) per entry",
        counter.0,
        limit / 1024
    )))
}

/// Counts what is written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterError;

    /// Every variant survives the trip between nodes; one from a newer peer reads as internal, named.
    #[test]
    fn cluster_errors_round_trip_and_a_newer_variant_is_read_as_internal() {
        for error in [
            ClusterError::NoQuorum("a".into()),
            ClusterError::Invalid("b".into()),
            ClusterError::NotFound("c".into()),
            ClusterError::TooLarge("d".into()),
            ClusterError::Internal("e".into()),
        ] {
            let json = serde_json::to_string(&error).unwrap_or_default();
            assert_eq!(serde_json::from_str::<ClusterError>(&json).ok(), Some(error), "{json}");
        }
        let newer: Result<Result<(), ClusterError>, _> = serde_json::from_str(r#"{"Err":{"Throttled":"slow down"}}"#);
        assert_eq!(newer.ok(), Some(Err(ClusterError::Internal("Throttled (from a newer peer): slow down".into()))));
    }
}
