//! openraft type configuration for Tollgate's control plane.

use std::io::Cursor;

pub use crate::member::{NodeId, NodeInfo};
use crate::state::{Request, Response};

/// The largest gRPC message a peer sends or accepts (an append-entries batch or a snapshot chunk).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

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
