//! Membership changes (issue 17.6): `add-node` and `remove-node`, each bounded by `write_timeout`, and the
//! reconciler that finishes a change a leader left half-done.
//!
//! openraft changes membership in two steps: a *joint* configuration (old and new voters together) and,
//! once that commits, the *uniform* new one. A leader that dies or loses leadership between the two
//! leaves the cluster joint, and openraft itself never finishes the change: every later decision then
//! needs a majority of both sets. So the leader of the moment checks every second and, when the
//! membership is joint, proposes its last (target) configuration, which completes the change as the
//! operator asked it.
//!
//! Bounds: `add-node` adds a learner and waits for it to catch up, then promotes it. When the learner has
//! not caught up within `write_timeout`, the answer is 503 saying so; the learner stays and keeps
//! replicating, and the same `add-node` again promotes it. `remove-node` is one change (the voter is
//! dropped, not kept as a learner). A change cut off by the deadline after its joint step is finished by
//! the reconciler.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tokio::time::Instant;
use tollgate_proto::v1::{AddNodeRequest, RemoveNodeRequest};

use super::{decode, unreachable, ClusterError, ConsensusNode, Inner};
use crate::types::{NodeId, NodeInfo};

/// How often the leader looks for a half-done membership change.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// Runs `work` until `deadline`; past it, 503 naming `what`.
pub(super) async fn bounded<T>(
    deadline: Instant,
    what: &str,
    work: impl Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    tokio::time::timeout_at(deadline, work).await.unwrap_or_else(|_| {
        Err(ClusterError::NoQuorum(format!(
            "{what} did not finish within write_timeout; a change that reached the log is completed by the leader"
        )))
    })
}

/// A membership change's failure: leadership lost midway is a 503 (the change, if its joint step
/// committed, is completed by the new leader); anything else is internal.
fn raft_error(err: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ClusterError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => ClusterError::NoQuorum(format!(
            "leadership moved to node {} during the change; if it reached the log, the new leader completes it",
            forward.leader_id.map_or_else(|| "?".to_owned(), |id| id.to_string())
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => ClusterError::Invalid(err.to_string()),
        other => ClusterError::Internal(other.to_string()),
    }
}

impl ConsensusNode {
    /// Completes a joint configuration whenever this node leads (see the module doc).
    pub(super) fn spawn_membership_reconciler(&self) {
        // Weak: this task must not keep a stopped node alive.
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECONCILE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.raft.metrics().borrow().running_state.is_err() {
                    return;
                }
                inner.finish_joint_change().await;
            }
        });
    }
}

impl Inner {
    /// When this node leads and the membership is joint: proposes the joint's target configuration.
    async fn finish_joint_change(&self) {
        if !self.is_leader() {
            return;
        }
        let target: Option<BTreeSet<NodeId>> = {
            let metrics = self.raft.metrics().borrow().clone();
            let configs = metrics.membership_config.membership().get_joint_config().clone();
            (configs.len() > 1).then(|| configs.last().cloned().unwrap_or_default())
        };
        let Some(target) = target else { return };
        tracing::warn!(voters = ?target, "membership left joint by an earlier leader: completing the change");
        let change = self.raft.change_membership(ChangeMembers::ReplaceAllVoters(target.clone()), false);
        match tokio::time::timeout(self.config.write_timeout, change).await {
            Ok(Ok(_)) => tracing::info!(voters = ?target, "membership change completed"),
            Ok(Err(err)) => tracing::warn!(%err, "completing the membership change failed; retried"),
            Err(_) => tracing::warn!("completing the membership change timed out; retried"),
        }
    }

    pub(crate) async fn add_node(
        &self,
        id: NodeId,
        info: NodeInfo,
        deadline: Instant,
        hops: u8,
    ) -> Result<(), ClusterError> {
        if !self.is_leader() {
            let (_, addr) = self.leader_addr().await?;
            if hops == 0 {
                return Err(ClusterError::NoQuorum("leadership changed while forwarding".into()));
            }
            let request = AddNodeRequest {
                node_id: id,
                raft_addr: info.raft_addr,
                api_addr: info.api_addr,
                admin_addr: info.admin_addr,
            };
            let mut request = self.auth.sign(tonic::Request::new(request));
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            let reply = self.client(&addr)?.add_node(request).await.map_err(unreachable)?;
            return decode::<Result<(), ClusterError>>(reply.get_ref())?;
        }
        let voters: BTreeSet<NodeId> =
            self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        if voters.contains(&id) {
            return Err(ClusterError::Invalid(format!("node {id} is already a voter")));
        }
        // The learner first. (openraft's own "blocking" add_learner stops waiting for the catch-up after
        // 500 ms and answers success anyway: a node that never caught up was then promoted.)
        let added = tokio::time::timeout_at(deadline, self.raft.add_learner(id, info, false)).await.map_err(|_| {
            ClusterError::NoQuorum(format!("node {id} could not be added as a learner within write_timeout"))
        })?;
        let added_at = added.map_err(raft_error)?.log_id.index;
        // Caught up: the leader has replicated to it the entry that made it a learner. Else 503 with the
        // learner left in place (module doc).
        let remaining = deadline.saturating_duration_since(Instant::now());
        let caught_up = self
            .raft
            .wait(Some(remaining))
            .metrics(
                |metrics| {
                    let matched = metrics.replication.as_ref().and_then(|replication| replication.get(&id).cloned());
                    matched.flatten().is_some_and(|log_id| log_id.index >= added_at)
                },
                "the new learner to catch up",
            )
            .await;
        if caught_up.is_err() {
            return Err(ClusterError::NoQuorum(format!(
                "node {id} is a learner and has not caught up within write_timeout; run add-node again to make it a voter"
            )));
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(raft_error)?;
        tracing::info!(node_id = id, "node added as voter");
        Ok(())
    }

    pub(crate) async fn remove_node(&self, id: NodeId, deadline: Instant, hops: u8) -> Result<(), ClusterError> {
        if !self.is_leader() {
            let (_, addr) = self.leader_addr().await?;
            if hops == 0 {
                return Err(ClusterError::NoQuorum("leadership changed while forwarding".into()));
            }
            let mut request = self.auth.sign(tonic::Request::new(RemoveNodeRequest { node_id: id }));
            request.set_timeout(deadline.saturating_duration_since(Instant::now()));
            let reply = self.client(&addr)?.remove_node(request).await.map_err(unreachable)?;
            return decode::<Result<(), ClusterError>>(reply.get_ref())?;
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        let learners: BTreeSet<NodeId> = membership.membership().learner_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ClusterError::Invalid("cannot remove the last voter".into()));
            }
            // Not retained as a learner: the voter leaves the membership in this one change.
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if learners.contains(&id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(ClusterError::NotFound(format!("node {id} is not a member")));
        };
        self.raft.change_membership(change, false).await.map_err(raft_error)?;
        tracing::info!(node_id = id, "node removed");
        Ok(())
    }
}
