//! The Raft log, vote, committed log id and last purged log id, in sled.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{index_key, io_error};
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";
const DATA_DIR_ID_KEY: &[u8] = b"data_dir_id";

/// The Raft log store: entries in the `logs` tree, keyed by big-endian index; the vote, the committed log id
/// and the last purged log id in the `meta` tree. A cheap handle: clones share the same trees (the log reader
/// openraft asks for is a clone).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    pub(crate) fn new(db: sled::Db, logs: sled::Tree, meta: sled::Tree) -> Self {
        LogStore { db, logs, meta }
    }

    /// The on-disk size of the whole sled database, in bytes (sled reclaims space poorly for a log-like
    /// workload: watch this, and snapshot and purge regularly).
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.db.size_on_disk().map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, &e))
    }

    /// The incarnation of this data dir: made once, when the store is first opened, and kept for its life
    /// (see the `identity` module). A wiped data dir gets a new one, which is how peers tell it apart.
    pub fn data_dir_id(&self) -> anyhow::Result<String> {
        use anyhow::Context as _;
        if let Some(id) = self.meta.get(DATA_DIR_ID_KEY).context("reading the data dir id")? {
            return String::from_utf8(id.to_vec()).context("the stored data dir id is not UTF-8");
        }
        let id = crate::member::new_id("data-dir");
        self.meta.insert(DATA_DIR_ID_KEY, id.as_bytes()).context("storing the data dir id")?;
        self.db.flush().context("flushing the data dir id")?;
        Ok(id)
    }

    /// Number of entries currently in the log (purged entries excluded). O(n): sled walks the tree.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether the log holds no entries (it may still have a last purged log id).
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let Some(bytes) = self.meta.get(key).map_err(|e| io_error(subject.clone(), ErrorVerb::Read, &e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| io_error(subject, ErrorVerb::Read, &e))
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, &e))?;
        self.meta.insert(key, bytes).map_err(|e| io_error(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> Result<(), StorageError> {
        // One sled `Db` means one page cache: flushing any tree makes every earlier write durable.
        self.logs.flush_async().await.map_err(|e| io_error(subject, verb, &e))?;
        Ok(())
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(LAST_PURGED_KEY, ErrorSubject::Logs)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let Some((_, value)) = self.logs.last().map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))? else {
            return Ok(None);
        };
        let entry = decode_entry(&value)?;
        Ok(Some(entry.log_id))
    }

    /// Removes every key in `range` from the log in one batch (not yet flushed).
    fn remove_range(&self, range: (Bound<[u8; 8]>, Bound<[u8; 8]>)) -> Result<usize, StorageError> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for item in self.logs.range(range) {
            let key = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?.0;
            batch.remove(key);
            removed += 1;
        }
        self.logs.apply_batch(batch).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        Ok(removed)
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))
}

fn key_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(index) => Bound::Included(index_key(*index)),
        Bound::Excluded(index) => Bound::Excluded(index_key(*index)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = key_bound(range.start_bound());
        let end = key_bound(range.end_bound());
        // An empty or reversed range has no entries; answer that without asking sled.
        let empty = match (range.start_bound(), range.end_bound()) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        };
        if empty {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        for item in self.logs.range((start, end)) {
            let (_, value) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            entries.push(decode_entry(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        // After a crash between recording a purge and deleting its entries, stale entries may remain below
        // the purge point: the last log id is never before the last purged one.
        let last_log_id = std::cmp::max(self.last_entry_log_id()?, last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE_KEY, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote, ErrorVerb::Write).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE_KEY, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Advisory (it only lets a restart re-apply sooner): persisted, and made durable by the next flush.
        self.write_meta(COMMITTED_KEY, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED_KEY, ErrorSubject::Store)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = crate::wire::to_vec(&entry)
                .map_err(|e| io_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.logs.apply_batch(batch).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        match self.logs.flush_async().await {
            Ok(_) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_error(ErrorSubject::Logs, ErrorVerb::Write, &e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating the raft log from this index on");
        self.remove_range((Bound::Included(index_key(log_id.index)), Bound::Unbounded))?;
        self.flush(ErrorSubject::Logs, ErrorVerb::Delete).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purging the raft log up to this index");
        if let Some(previous) = self.last_purged()? {
            if previous >= log_id {
                return Ok(());
            }
        }
        // Record the purge point first: a crash before the delete leaves entries that `get_log_state` ignores.
        self.write_meta(LAST_PURGED_KEY, &log_id, ErrorSubject::Logs)?;
        self.remove_range((Bound::Unbounded, Bound::Included(index_key(log_id.index))))?;
        self.flush(ErrorSubject::Logs, ErrorVerb::Delete).await
    }
}
