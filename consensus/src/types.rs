//! openraft type configuration for Tollgate's control plane.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Request, Response};

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

openraft::declare_raft_types!(
    /// Tollgate's Raft types: commands are [`Request`]s, results [`Response`]s, snapshots JSON bytes.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
