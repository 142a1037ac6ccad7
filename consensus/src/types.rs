//! openraft type configuration for Tollgate's control plane.

use std::io::Cursor;

pub use crate::member::{NodeId, NodeInfo};
use crate::state::{Request, Response};

/// The largest gRPC message a peer sends or accepts (an append-entries batch or a snapshot chunk).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The largest command one Raft log entry may hold, as serialized JSON (512 KiB). A proposal above it is
/// refused (`ClusterError::TooLarge`, 413 in the admin API) instead of
/// being replicated: every AppendEntries must reach a follower, be written and be answered within openraft's
/// per-RPC deadline (the heartbeat interval), and an entry cannot be split across RPCs. Measured at 100 ms
/// RTT with the default 250 ms heartbeat (jepsen/README.md, "WAN timing"): a ~1 MB entry missed its first
/// deadline in a debug build (JSON encoding, the follower's decoding and write add to the round trip);
/// half of that leaves room.
pub const MAX_ENTRY_BYTES: usize = 512 * 1024;

/// The largest AppendEntries request sent as one RPC (JSON bytes). A larger batch of entries is split by
/// openraft (`PayloadTooLarge` with a smaller entries hint); a single entry is at most [`MAX_ENTRY_BYTES`]
/// plus its envelope, so it always fits.
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;

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
