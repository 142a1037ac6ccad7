//! This node's view of the cluster for `status` (members, roles, replication lag), as the leader or a
//! follower sees it.

use std::collections::BTreeSet;

use std::time::Duration;

use tollgate_proto::v1::Empty;

use super::{decode, unreachable, ClusterError, ClusterStatus, Inner, MemberStatus};
use crate::types::NodeId;

impl Inner {
    pub(crate) fn local_status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last_log = metrics.last_log_index;
        let registered = self.state_machine.current();
        let members = membership
            .nodes()
            .map(|(id, info)| {
                let announced = registered.config.nodes.get(id);
                let info = announced.unwrap_or(info);
                let matched = match &metrics.replication {
                    Some(replication) => replication.get(id).copied().flatten().map(|log_id| log_id.index),
                    None if *id == metrics.id => metrics.last_applied.map(|log_id| log_id.index),
                    None => None,
                };
                let matched = if Some(*id) == metrics.current_leader && *id == metrics.id { last_log } else { matched };
                let role = if Some(*id) == metrics.current_leader {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                MemberStatus {
                    id: *id,
                    raft_addr: info.raft_addr.clone(),
                    api_addr: info.api_addr.clone(),
                    admin_addr: info.admin_addr.clone(),
                    role: role.into(),
                    matched_index: matched,
                    lag: match (last_log, matched) {
                        (Some(last), Some(matched)) if metrics.replication.is_some() => {
                            Some(last.saturating_sub(matched))
                        }
                        _ => None,
                    },
                    alive: matched.is_some() || *id == metrics.id,
                    registered: announced.is_some(),
                }
            })
            .collect();
        ClusterStatus {
            node_id: metrics.id,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            applied_index: metrics.last_applied.map(|log_id| log_id.index),
            members,
            joint: match membership.get_joint_config() {
                configs if configs.len() > 1 => configs.iter().map(|voters| voters.iter().copied().collect()).collect(),
                _ => Vec::new(),
            },
        }
    }

    pub(super) async fn remote_status(&self, addr: &str) -> Result<ClusterStatus, ClusterError> {
        let mut request = self.auth.sign(tonic::Request::new(Empty {}));
        request.set_timeout(Duration::from_secs(1));
        let reply = self.client(addr)?.status(request).await.map_err(unreachable)?;
        decode(reply.get_ref())
    }
}
