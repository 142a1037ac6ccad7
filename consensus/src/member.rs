//! Who is in the cluster: node ids and the addresses each member is reached at (replicated in the Raft
//! membership), and the ids that tell data dirs and clusters apart (see `identity`). A leaf: the ledger, the state machine and the Raft types all name members.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub type NodeId = u64;

/// A cluster member's addresses, replicated in the Raft membership config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Raft and cluster gRPC, `host:port`.
    pub raft_addr: String,
    /// The LLM API listener, `host:port` (for status output).
    #[serde(default)]
    pub api_addr: String,
    /// The admin listener, `host:port` (followers forward admin writes through gRPC, not here).
    #[serde(default)]
    pub admin_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={} admin={}", self.raft_addr, self.api_addr, self.admin_addr)
    }
}

/// A fresh, practically unique id (16 hex digits) from the clock, the process and a counter.
pub fn new_id(what: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let digest = sha2::Sha256::digest(format!("{what}\0{nanos}\0{}\0{count}", std::process::id()).as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
