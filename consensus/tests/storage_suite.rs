//! The sled store against openraft's storage conformance suite, plus restart and apply tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use std::collections::BTreeMap;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftSnapshotBuilder};
use tollgate_consensus::resources::OrgConfig;
use tollgate_consensus::store::{self, LogStore, StateMachineStore};
use tollgate_consensus::types::{Entry, LogId, StorageError, StoredMembership, Vote};
use tollgate_consensus::{Command, ControlState, NodeInfo, Request, Response, TypeConfig};

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().unwrap();
        let (log_store, state_machine) = store::open(dir.path()).unwrap();
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    // The suite runs each case on its own tokio runtime, so this is a plain test.
    Suite::test_all(SledBuilder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn request(id: &str, command: Command) -> Request {
    Request { request_id: id.into(), actor: "test".into(), at_ms: 0, command }
}

fn put_org(name: &str) -> Command {
    Command::PutOrg { org: OrgConfig::named(name) }
}

fn normal(term: u64, index: u64, request: Request) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(request) }
}

fn blank(term: u64, index: u64) -> Entry {
    Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    let voters: BTreeSet<u64> = voters.iter().copied().collect();
    let nodes: BTreeMap<u64, NodeInfo> =
        voters.iter().map(|id| (*id, NodeInfo { raft_addr: format!("n{id}:7000"), ..NodeInfo::default() })).collect();
    let membership = Membership::new(vec![voters], nodes);
    Entry { log_id: log_id(term, index), payload: EntryPayload::Membership(membership) }
}

/// The entries of a small cluster history: a blank, the membership, then org commands (one rejected, one a
/// retried request id).
fn history() -> Vec<Entry> {
    vec![
        blank(1, 1),
        membership(1, 2, &[1]),
        normal(1, 3, request("r1", put_org("acme"))),
        normal(1, 4, request("r2", put_org("globex"))),
        normal(1, 5, request("r3", Command::DeleteOrg { name: "initech".into() })),
        normal(1, 6, request("r1", put_org("acme"))),
    ]
}

#[tokio::test]
async fn apply_answers_in_order_and_publishes_each_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (_logs, mut sm) = store::open(dir.path()).unwrap();
    let reader = sm.clone();
    let mut changes = reader.subscribe();
    assert_eq!(*reader.current(), ControlState::default());

    let entries = history();
    let responses = sm.apply(entries[..3].to_vec()).await.unwrap();
    assert_eq!(responses, vec![Response::Noop, Response::Noop, Response::Applied { index: 3 }]);
    assert!(changes.has_changed().unwrap());
    let published = changes.borrow_and_update().clone();
    assert!(published.config.orgs.contains_key("acme"));
    assert!(Arc::ptr_eq(&published, &reader.current()), "clones see the published state");

    let responses = sm.apply(entries[3..].to_vec()).await.unwrap();
    assert_eq!(responses.len(), 3);
    assert_eq!(responses[0], Response::Applied { index: 4 });
    assert!(matches!(&responses[1], Response::Rejected { reason } if reason.contains("initech")));
    assert_eq!(responses[2], Response::Applied { index: 3 }, "a retried request id returns its first result");
    changes.changed().await.unwrap();
    let published = changes.borrow_and_update().clone();
    assert_eq!(published.config.orgs.keys().collect::<Vec<_>>(), ["acme", "globex"]);
    assert_eq!(published.history.audit.len(), 3);

    let (applied, members) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 6)));
    assert_eq!(reader.last_applied(), Some(log_id(1, 6)));
    assert_eq!(members.log_id(), &Some(log_id(1, 2)));
    assert_eq!(members.voter_ids().collect::<Vec<_>>(), [1]);

    // A batch with no commands changes no state and publishes nothing.
    let responses = sm.apply(vec![blank(2, 7)]).await.unwrap();
    assert_eq!(responses, vec![Response::Noop]);
    assert!(!changes.has_changed().unwrap());
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(2, 7)));
}

#[tokio::test]
async fn restart_restores_the_snapshot_and_the_log_state() {
    let dir = tempfile::tempdir().unwrap();
    let expected_state;
    let expected_membership: StoredMembership;
    let snapshot_id;
    {
        let (mut logs, mut sm) = store::open(dir.path()).unwrap();
        let entries = history();
        logs.blocking_append(entries.clone()).await.unwrap();
        logs.save_vote(&Vote::new(1, 1)).await.unwrap();
        logs.save_committed(Some(log_id(1, 6))).await.unwrap();

        // Apply and snapshot up to 5, then purge the log up to 4 (openraft keeps some logs after a snapshot).
        sm.apply(entries[..5].to_vec()).await.unwrap();
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 5)));
        assert_eq!(snapshot.meta.snapshot_id, "5-1");
        snapshot_id = snapshot.meta.snapshot_id.clone();
        logs.purge(log_id(1, 4)).await.unwrap();
        sm.apply(entries[5..].to_vec()).await.unwrap();

        expected_state = sm.current();
        expected_membership = sm.applied_state().await.unwrap().1;
        let state = logs.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(1, 6)));
        assert!(logs.size_on_disk().unwrap() > 0);
    }

    let (mut logs, mut sm) = store::open(dir.path()).unwrap();
    let state = logs.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 6)));
    assert_eq!(logs.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    assert_eq!(logs.read_committed().await.unwrap(), Some(log_id(1, 6)));
    let remaining = logs.try_get_log_entries(0..100).await.unwrap();
    assert_eq!(remaining.iter().map(|e| e.log_id.index).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(logs.len(), 2);

    // The state machine comes back at the snapshot; openraft re-applies the rest of the log (index 6).
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 5)));
    assert_eq!(membership, expected_membership);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.snapshot_id, snapshot_id);
    let restored = sm.current();
    assert_eq!(restored.config.orgs, expected_state.config.orgs);
    assert_eq!(restored.history.audit.len(), 3);

    let replay = logs.try_get_log_entries(6..7).await.unwrap();
    assert_eq!(sm.apply(replay).await.unwrap(), vec![Response::Applied { index: 3 }]);
    assert_eq!(*sm.current(), *expected_state);

    // Snapshot ids keep counting across restarts.
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.snapshot_id, "6-2");
}

#[tokio::test]
async fn truncate_and_installed_snapshots() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (_, mut leader) = store::open(leader_dir.path()).unwrap();
    let (mut logs, mut follower) = store::open(follower_dir.path()).unwrap();

    logs.blocking_append(history()).await.unwrap();
    logs.truncate(log_id(1, 4)).await.unwrap();
    let state = logs.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(log_id(1, 3)));
    assert_eq!(logs.try_get_log_entries(..).await.unwrap().len(), 3);

    leader.apply(history()).await.unwrap();
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    // A builder holding the follower's view from before the install: its (older) snapshot must not replace
    // the installed one.
    let mut stale = follower.get_snapshot_builder().await;
    let changes = follower.subscribe();
    let mut data = follower.begin_receiving_snapshot().await.unwrap();
    *data = *snapshot.snapshot;
    follower.install_snapshot(&snapshot.meta, data).await.unwrap();
    assert!(changes.has_changed().unwrap());
    assert_eq!(*follower.current(), *leader.current());
    assert_eq!(follower.last_applied(), Some(log_id(1, 6)));

    let built = stale.build_snapshot().await.unwrap();
    assert_eq!(built.meta.last_log_id, None);
    let current = follower.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snapshot.meta);

    // The installed snapshot survives a restart.
    drop((stale, changes, follower, logs));
    let (_, mut follower) = store::open(follower_dir.path()).unwrap();
    assert_eq!(*follower.current(), *leader.current());
    assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(1, 6)));
    assert_eq!(follower.get_current_snapshot().await.unwrap().unwrap().meta, snapshot.meta);
}
