//! The state machine: [`ControlState`] in memory, published through a watch channel after every applied
//! batch, with its snapshots (JSON) stored in the sled `snapshot` tree.

use std::fmt;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::io_error;
use crate::state::{ControlState, Response};
use crate::types::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SNAPSHOT_META_KEY: &[u8] = b"meta";
const SNAPSHOT_DATA_KEY: &[u8] = b"data";
const SNAPSHOT_COUNTER_KEY: &[u8] = b"counter";

/// What the state machine has applied. Guarded by one mutex, held briefly and never across an `.await`.
#[derive(Default)]
struct Applied {
    state: Arc<ControlState>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    /// Snapshots built so far (persisted with each built snapshot), for snapshot ids.
    snapshot_counter: u64,
}

/// The snapshot format this version writes, and the newest it reads. Adding an optional field to the
/// state does not change it (older readers ignore fields they do not know); a change an older version
/// would misread does, and that version then refuses the snapshot by name instead of guessing.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// The snapshot bytes: JSON of this, written from borrowed parts...
#[derive(Serialize)]
struct SnapshotDataRef<'a> {
    format: u32,
    last_applied: &'a Option<LogId>,
    last_membership: &'a StoredMembership,
    state: &'a ControlState,
}

/// ...and read back owned (the log ids come from the [`SnapshotMeta`], which openraft sends with the data;
/// its `format` is checked first, see [`decode_snapshot_data`]).
#[derive(Deserialize)]
struct SnapshotDataOwned {
    state: ControlState,
}

/// Snapshots written before formats were numbered are format 1.
fn first_format() -> u32 {
    1
}

/// The Raft state machine store. A cheap handle: clones share the in-memory state, so the application keeps
/// a clone to read [`current`](Self::current) or [`subscribe`](Self::subscribe) to changes while openraft
/// owns another.
#[derive(Clone)]
pub struct StateMachineStore {
    applied: Arc<Mutex<Applied>>,
    published: Arc<watch::Sender<Arc<ControlState>>>,
    snapshots: sled::Tree,
}

impl fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let applied = self.lock();
        f.debug_struct("StateMachineStore")
            .field("last_applied", &applied.last_applied)
            .field("last_membership", &applied.last_membership)
            .finish_non_exhaustive()
    }
}

impl StateMachineStore {
    /// Opens the state machine on the `snapshot` tree, restoring the state from the stored snapshot if any.
    pub(crate) fn restore(snapshots: sled::Tree) -> Result<Self, StorageError> {
        let mut applied = Applied { snapshot_counter: read_counter(&snapshots)?, ..Applied::default() };
        if let Some((meta, data)) = read_stored_snapshot(&snapshots)? {
            let decoded = decode_snapshot_data(&meta, &data)?;
            tracing::info!(snapshot = %meta, "restored the state machine from its snapshot");
            applied.state = Arc::new(decoded.state);
            applied.last_applied = meta.last_log_id;
            applied.last_membership = meta.last_membership;
        }
        let (published, _) = watch::channel(applied.state.clone());
        Ok(StateMachineStore { applied: Arc::new(Mutex::new(applied)), published: Arc::new(published), snapshots })
    }

    /// The latest applied control state (cheap: an `Arc` clone).
    pub fn current(&self) -> Arc<ControlState> {
        self.published.borrow().clone()
    }

    /// A receiver that sees every new control state published after an applied batch or installed snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ControlState>> {
        self.published.subscribe()
    }

    /// The log id of the last entry applied (or of the snapshot the state came from).
    pub fn last_applied(&self) -> Option<LogId> {
        self.lock().last_applied
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        // Nothing panics while holding the lock; if something ever does, the data is still consistent
        // enough to keep going (each field is replaced whole).
        self.applied.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `meta` and `data` as the current snapshot and flushes. Unless `force`, a snapshot older than
    /// the stored one is not written (a slow build must not replace a newer installed snapshot: the log
    /// before that one may already be purged). Returns whether it was written.
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
        counter: Option<u64>,
        force: bool,
    ) -> Result<bool, StorageError> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let meta_bytes = serde_json::to_vec(meta).map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        {
            // The check and the write are one step with respect to other snapshot writers.
            let _applied = self.lock();
            if !force {
                if let Some(stored) = read_stored_meta(&self.snapshots)? {
                    if stored.last_log_id > meta.last_log_id {
                        tracing::info!(built = %meta, stored = %stored, "not storing a snapshot older than the stored one");
                        return Ok(false);
                    }
                }
            }
            let mut batch = sled::Batch::default();
            batch.insert(SNAPSHOT_META_KEY, meta_bytes);
            batch.insert(SNAPSHOT_DATA_KEY, data);
            if let Some(counter) = counter {
                batch.insert(SNAPSHOT_COUNTER_KEY, &counter.to_be_bytes());
            }
            self.snapshots.apply_batch(batch).map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        }
        self.snapshots.flush_async().await.map_err(|e| io_error(subject(), ErrorVerb::Write, &e))?;
        Ok(true)
    }
}

fn read_counter(tree: &sled::Tree) -> Result<u64, StorageError> {
    let subject = || ErrorSubject::Snapshot(None);
    let Some(bytes) = tree.get(SNAPSHOT_COUNTER_KEY).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))? else {
        return Ok(0);
    };
    let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
        io_error(
            subject(),
            ErrorVerb::Read,
            AnyError::error(format!("snapshot counter has {} bytes, expected 8", bytes.len())),
        )
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn read_stored_meta(tree: &sled::Tree) -> Result<Option<SnapshotMeta>, StorageError> {
    let subject = || ErrorSubject::Snapshot(None);
    let Some(bytes) = tree.get(SNAPSHOT_META_KEY).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))
}

fn read_stored_snapshot(tree: &sled::Tree) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
    let subject = || ErrorSubject::Snapshot(None);
    let meta = read_stored_meta(tree)?;
    let data = tree.get(SNAPSHOT_DATA_KEY).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))?;
    match (meta, data) {
        (Some(meta), Some(data)) => Ok(Some((meta, data.to_vec()))),
        (None, None) => Ok(None),
        (meta, _) => Err(io_error(
            subject(),
            ErrorVerb::Read,
            AnyError::error(format!(
                "the stored snapshot has {} but no {}",
                if meta.is_some() { "meta" } else { "data" },
                if meta.is_some() { "data" } else { "meta" }
            )),
        )),
    }
}

fn decode_snapshot_data(meta: &SnapshotMeta, data: &[u8]) -> Result<SnapshotDataOwned, StorageError> {
    let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
    // The format first, so a newer snapshot is refused by name rather than by whatever fails to parse.
    #[derive(Deserialize)]
    struct Format {
        #[serde(default = "first_format")]
        format: u32,
    }
    let Format { format } = serde_json::from_slice(data).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))?;
    if format > SNAPSHOT_FORMAT {
        return Err(io_error(
            subject(),
            ErrorVerb::Read,
            AnyError::error(format!(
                "snapshot {} is in format {format}, newer than this version reads (up to {SNAPSHOT_FORMAT}): upgrade this node",
                meta.snapshot_id
            )),
        ));
    }
    serde_json::from_slice(data).map_err(|e| io_error(subject(), ErrorVerb::Read, &e))
}

/// Builds a snapshot from the view of the state machine taken when openraft asked for the builder (the build
/// runs in its own task while applying continues).
pub struct StateSnapshotBuilder {
    state: Arc<ControlState>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    store: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for StateSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = crate::wire::to_vec(&SnapshotDataRef {
            format: SNAPSHOT_FORMAT,
            last_applied: &self.last_applied,
            last_membership: &self.last_membership,
            state: &self.state,
        })
        .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &e))?;
        let counter = {
            let mut applied = self.store.lock();
            applied.snapshot_counter += 1;
            applied.snapshot_counter
        };
        let index = self.last_applied.map_or(0, |log_id| log_id.index);
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.last_membership.clone(),
            snapshot_id: format!("{index}-{counter}"),
        };
        self.store.persist_snapshot(&meta, &data, Some(counter), false).await?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "built a snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut applied = self.lock();
        // Copy-on-write: readers keep the previous `Arc`; one copy per batch that carries commands.
        let mut next: Option<ControlState> = None;
        let mut responses = Vec::new();
        let mut refused = None;
        for entry in entries {
            if let EntryPayload::Normal(request) = &entry.payload {
                if request.command.is_from_a_newer_version() {
                    // Refused, not skipped: this node stops applying (openraft shuts it down) with the reason,
                    // and catches up once upgraded. The others, newer, carry on.
                    refused = Some(entry.log_id);
                    break;
                }
            }
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Response::Noop),
                EntryPayload::Normal(request) => {
                    let state = next.get_or_insert_with(|| ControlState::clone(&applied.state));
                    responses.push(state.apply(entry.log_id.index, &request));
                }
                EntryPayload::Membership(membership) => {
                    // A node that left the membership leaves its data dir record behind: `add-node` may
                    // bring it back with a new data dir (see the `identity` module).
                    let current = next.as_ref().map_or(&applied.state.config, |state| &state.config);
                    if current.data_dirs.keys().any(|id| !membership.nodes().any(|(member, _)| member == id)) {
                        let state = next.get_or_insert_with(|| ControlState::clone(&applied.state));
                        let kept = state.config.data_dirs.clone().into_iter();
                        state.config.data_dirs =
                            kept.filter(|(id, _)| membership.nodes().any(|(member, _)| member == id)).collect();
                    }
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    responses.push(Response::Noop);
                }
            }
        }
        if let Some(state) = next {
            let state = Arc::new(state);
            applied.state = state.clone();
            // Published under the lock, so subscribers see states in apply order.
            self.published.send_replace(state);
        }
        if let Some(log_id) = refused {
            let reason =
                format!("log entry {log_id} holds a command of a newer version than this node runs; upgrade this node");
            tracing::error!("{reason}");
            return Err(io_error(ErrorSubject::Apply(log_id), ErrorVerb::Read, AnyError::error(reason)));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let applied = self.lock();
        StateSnapshotBuilder {
            state: applied.state.clone(),
            last_applied: applied.last_applied,
            last_membership: applied.last_membership.clone(),
            store: self.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let decoded = decode_snapshot_data(meta, &data)?;
        // Durable first: once the state machine moves to the snapshot, openraft may purge the log before it.
        self.persist_snapshot(meta, &data, None, true).await?;
        let state = Arc::new(decoded.state);
        let mut applied = self.lock();
        applied.state = state.clone();
        applied.last_applied = meta.last_log_id;
        applied.last_membership = meta.last_membership.clone();
        self.published.send_replace(state);
        tracing::info!(snapshot = %meta, "installed a snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(read_stored_snapshot(&self.snapshots)?
            .map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default(), snapshot_id: "7-1".into() }
    }

    fn snapshot_json(format: Option<u32>) -> serde_json::Value {
        let mut state = serde_json::to_value(ControlState::default()).unwrap_or_default();
        // What a newer version may add: a field at the top of the state and one inside it.
        state["future_section"] = serde_json::json!({"anything": [1, 2, 3]});
        let mut data =
            serde_json::json!({"last_applied": null, "last_membership": StoredMembership::default(), "state": state});
        if let Some(format) = format {
            data["format"] = serde_json::json!(format);
        }
        data
    }

    /// Issue 17.1: snapshots carry their format; unknown fields from a newer version of the same format
    /// load, a newer format is refused by name, and a snapshot from before formats were numbered loads.
    #[test]
    fn snapshots_are_versioned_and_tolerate_fields_they_do_not_know() {
        for format in [None, Some(SNAPSHOT_FORMAT)] {
            let data = snapshot_json(format).to_string();
            assert!(decode_snapshot_data(&meta(), data.as_bytes()).is_ok(), "format {format:?}: {data}");
        }
        let newer = snapshot_json(Some(SNAPSHOT_FORMAT + 1)).to_string();
        let err = decode_snapshot_data(&meta(), newer.as_bytes()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("format 2") && err.contains("upgrade this node"), "{err}");
    }

    fn entry(index: u64, json: serde_json::Value) -> Entry {
        let request: crate::state::Request = serde_json::from_value(json).unwrap_or_else(|err| panic!("{err}"));
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(request),
        }
    }

    /// Issue 17.1: an entry of a newer version is refused by name (the node stops applying), and what came
    /// before it in the same batch is applied and published.
    #[tokio::test]
    async fn a_command_of_a_newer_version_stops_apply_with_the_reason() {
        let dir = tempfile::tempdir().unwrap_or_else(|err| panic!("{err}"));
        let (_log, mut machine) = crate::store::open(dir.path()).unwrap_or_else(|err| panic!("{err}"));
        let known =
            entry(1, serde_json::json!({"request_id": "a", "command": {"op": "put_org", "org": {"name": "acme"}}}));
        let newer =
            entry(2, serde_json::json!({"request_id": "b", "command": {"op": "put_response_cache", "ttl_s": 60}}));
        let err = machine.apply(vec![known, newer]).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("newer version") && err.contains("upgrade this node"), "{err}");
        assert!(machine.current().config.orgs.contains_key("acme"), "the entry before it was applied");
        let (last_applied, _) = machine.applied_state().await.unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(last_applied.map(|id| id.index), Some(1), "not past the refused entry");
    }
}
