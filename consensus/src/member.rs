//! Who is in the cluster: node ids and the addresses each member is reached at (replicated in the Raft
//! membership). A leaf: the ledger, the state machine and the Raft types all name members.

use std::fmt;

use serde::{Deserialize, Serialize};

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
