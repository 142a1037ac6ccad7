//! Who a peer is beyond its node id: the cluster it belongs to, and the incarnation of its data dir.
//!
//! A node id alone cannot tell a member from a member whose data dir was wiped: same id, same address,
//! same secret, but its Raft log and its vote are gone. Let back in as if nothing happened, it can vote
//! for a candidate whose log lacks committed entries (they are then lost) and be counted in a quorum for
//! entries it never stored. `node::wiped` refuses such a start when a peer can say so; this module covers
//! the start where no peer answered:
//!
//! - Every data dir gets an id when its store is first created ([`crate::store::LogStore::data_dir_id`]).
//!   A node announces it with its addresses (`RegisterNode`), and the replicated state keeps it for as
//!   long as the node is in the membership (`ControlConfig::data_dirs`). The state refuses a registration
//!   with another data dir id while the old one is recorded: the way back is `remove-node`, which forgets
//!   the record, then `add-node` as a new member (a learner that catches up first).
//! - Every Raft RPC carries the sender's cluster id and data dir id ([`IDENTITY_HEADER`]) in both
//!   directions. A vote request, a vote, an append-entries acknowledgement or a snapshot from a node whose
//!   data dir id differs from the recorded one is refused, so a wiped node neither elects nor counts
//!   toward a quorum; from a node of another cluster (cluster ids differ) likewise.
//! - The cluster id is made at bootstrap and replicated, so a node pointed at the wrong cluster with the
//!   right secret is refused too. Clusters bootstrapped before it existed have none (checks skip it).
//!
//! Peers that send no identity (a version before this one, mid-upgrade) are not checked.

use std::sync::Arc;

pub use crate::member::new_id;
use crate::state::ControlState;
use crate::types::NodeId;

/// gRPC metadata on every Raft RPC and its reply: `cluster_id/data_dir_id` (`-` for a cluster id not
/// known yet, on a node that has not applied the bootstrap).
pub const IDENTITY_HEADER: &str = "x-tollgate-identity";

/// This node's identity, and the replicated state it judges peers' identities by.
#[derive(Clone)]
pub struct Identity {
    data_dir_id: String,
    state: Arc<dyn Fn() -> Arc<ControlState> + Send + Sync>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("data_dir_id", &self.data_dir_id).finish_non_exhaustive()
    }
}

/// What a peer presented, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Presented<'a> {
    cluster_id: Option<&'a str>,
    data_dir_id: &'a str,
}

fn parse(value: &str) -> Option<Presented<'_>> {
    let (cluster, data_dir) = value.split_once('/')?;
    (!data_dir.is_empty())
        .then_some(Presented { cluster_id: (cluster != "-").then_some(cluster), data_dir_id: data_dir })
}

impl Identity {
    pub fn new(data_dir_id: String, state: Arc<dyn Fn() -> Arc<ControlState> + Send + Sync>) -> Identity {
        Identity { data_dir_id, state }
    }

    pub fn data_dir_id(&self) -> &str {
        &self.data_dir_id
    }

    /// The value this node presents: its cluster id (once applied) and its data dir id.
    pub fn header_value(&self) -> String {
        let state = (self.state)();
        format!("{}/{}", state.config.cluster_id.as_deref().unwrap_or("-"), self.data_dir_id)
    }

    /// Whether `peer`, presenting `presented` (the header, if any), may take part in Raft with this node:
    /// the reason when it may not.
    pub fn check_peer(&self, peer: NodeId, presented: Option<&str>) -> Result<(), String> {
        let Some(presented) = presented else {
            return Ok(());
        };
        let Some(presented) = parse(presented) else {
            return Err(format!("node {peer} sent a malformed identity"));
        };
        let state = (self.state)();
        if let (Some(ours), Some(theirs)) = (state.config.cluster_id.as_deref(), presented.cluster_id) {
            if ours != theirs {
                return Err(format!("node {peer} belongs to cluster {theirs}; this node to cluster {ours}"));
            }
        }
        match state.config.data_dirs.get(&peer) {
            Some(recorded) if recorded != presented.data_dir_id => Err(format!(
                "node {peer} answers with data dir {} but the cluster knows it with data dir {recorded}: its data \
                 dir was replaced or wiped, so its log and vote are gone. Remove it (`tollgate cluster remove-node \
                 --id {peer}`) and add it back as a new member",
                presented.data_dir_id
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    pub use crate::member::new_id;
    use crate::state::ControlState;

    fn identity(cluster: Option<&str>, recorded: &[(NodeId, &str)]) -> Identity {
        let mut state = ControlState::default();
        state.config.cluster_id = cluster.map(str::to_owned);
        for (id, dir) in recorded {
            state.config.data_dirs.insert(*id, (*dir).to_owned());
        }
        let state = Arc::new(state);
        Identity::new("mine".into(), Arc::new(move || state.clone()))
    }

    #[test]
    fn a_peer_is_refused_only_for_another_data_dir_or_another_cluster() {
        let id = identity(Some("c1"), &[(2, "d2")]);
        assert_eq!(id.header_value(), "c1/mine");
        assert!(id.check_peer(2, Some("c1/d2")).is_ok());
        assert!(id.check_peer(2, Some("-/d2")).is_ok(), "a peer that has not applied the bootstrap yet");
        assert!(id.check_peer(3, Some("c1/anything")).is_ok(), "a node not recorded yet (new member)");
        assert!(id.check_peer(2, None).is_ok(), "a peer of a version before identities");
        let Err(wiped) = id.check_peer(2, Some("c1/d2-new")) else { panic!("a wiped data dir let in") };
        assert!(wiped.contains("wiped") && wiped.contains("remove-node --id 2"), "{wiped}");
        let Err(other) = id.check_peer(3, Some("c2/d3")) else { panic!("another cluster let in") };
        assert!(other.contains("cluster c2"), "{other}");
        assert!(id.check_peer(2, Some("garbage")).is_err());
        assert!(id.check_peer(2, Some("c1/")).is_err());
    }

    #[test]
    fn without_a_cluster_id_only_data_dirs_are_checked() {
        let id = identity(None, &[(2, "d2")]);
        assert_eq!(id.header_value(), "-/mine");
        assert!(id.check_peer(3, Some("c9/d3")).is_ok());
        assert!(id.check_peer(2, Some("c9/d9")).is_err());
    }

    #[test]
    fn new_ids_differ() {
        let ids: std::collections::HashSet<String> = (0..100).map(|_| new_id("x")).collect();
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|id| id.len() == 16));
    }
}
