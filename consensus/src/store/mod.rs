//! sled-backed Raft storage (openraft storage v2): the log and vote in [`LogStore`], the state machine and
//! its snapshots in [`StateMachineStore`]. Both live in ONE `sled::Db` per process, in separate trees:
//!
//! - `logs`: big-endian `u64` log index → JSON [`Entry`](crate::types::Entry);
//! - `meta`: `vote`, `committed`, `last_purged` → JSON;
//! - `snapshot`: `meta` (JSON [`SnapshotMeta`](crate::types::SnapshotMeta)), `data` (the snapshot bytes) and
//!   `counter` (big-endian `u64`, for snapshot ids).
//!
//! sled writes are not durable on return: every write openraft relies on for safety (appended entries, the
//! vote, truncation, purge, snapshots) is followed by `flush_async().await` before it is acknowledged.
//!
//! The state machine itself is kept in memory; on [`open`] it is restored from the stored snapshot, and
//! openraft re-applies the logs after the snapshot's last log id on startup.

// openraft's storage traits fix the error type to `StorageError` (224 bytes); the helpers return it too.
#![allow(clippy::result_large_err)]

mod log_store;
mod state_machine;

use std::path::Path;

use anyhow::Context;
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};

use crate::types::{NodeId, StorageError};

pub use log_store::LogStore;
pub use state_machine::{StateMachineStore, StateSnapshotBuilder};

/// Tree names inside the shared `sled::Db`.
pub const LOGS_TREE: &str = "logs";
pub const META_TREE: &str = "meta";
pub const SNAPSHOT_TREE: &str = "snapshot";

/// Opens the sled database at `dir` (created if missing) and both stores on it.
///
/// sled allows one open `Db` per directory per process: call this once and clone the stores (both are
/// cheap handles). To share the `Db` with other users, open it yourself and call [`from_db`].
/// Makes `dir` 0700 and every file below it 0600 (directories 0700).
pub fn restrict_permissions(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if metadata.file_type().is_symlink() {
            continue;
        }
        let mode = if metadata.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting {} to its owner", path.display()))?;
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

pub fn open(dir: &Path) -> anyhow::Result<(LogStore, StateMachineStore)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let db = sled::open(dir).with_context(|| format!("opening sled database at {}", dir.display()))?;
    from_db(&db)
}

/// Opens both stores on an already-open `sled::Db`, restoring the state machine from the stored snapshot.
pub fn from_db(db: &sled::Db) -> anyhow::Result<(LogStore, StateMachineStore)> {
    let logs = db.open_tree(LOGS_TREE).context("opening the `logs` tree")?;
    let meta = db.open_tree(META_TREE).context("opening the `meta` tree")?;
    let snapshot = db.open_tree(SNAPSHOT_TREE).context("opening the `snapshot` tree")?;
    let log_store = LogStore::new(db.clone(), logs, meta);
    let state_machine =
        StateMachineStore::restore(snapshot).context("restoring the state machine from its snapshot")?;
    Ok((log_store, state_machine))
}

/// The sled key of log index `index`: big-endian, so key order is index order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// A storage I/O error on `subject` while doing `verb`, from any error or message.
pub(crate) fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    source: impl Into<openraft::AnyError>,
) -> StorageError {
    StorageIOError::new(subject, verb, source).into()
}
