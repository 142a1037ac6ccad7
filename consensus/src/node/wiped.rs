//! A member whose data dir was wiped must not come back under its old id: its log and its vote are gone,
//! so it could vote twice in a term it already voted in (two leaders) and would hold none of the entries
//! the cluster counted it for. On a first start with a new data dir, the node asks its peers whether it
//! is already a member that has run before; if so it refuses to start and says how to recover.

use std::time::Duration;

use tollgate_proto::v1::cluster_client::ClusterClient;
use tollgate_proto::v1::Empty;

use super::{ClusterStatus, ConsensusConfig};
use crate::auth::ClusterAuth;

/// Whether `data_dir` has never held this node's store (sled creates its `db` file on first open).
pub(super) fn is_new_data_dir(data_dir: &std::path::Path) -> bool {
    !data_dir.join("db").exists()
}

/// Fails when a reachable peer's view of the cluster lists this node as a member that has registered its
/// addresses itself (`RegisterNode`, written once it runs), i.e. it ran with data before; a member only
/// added with `add-node` and starting for the first time is let in. Peers that do not answer are skipped: a brand-new cluster
/// starts with none of them up, and that must not block it.
pub(super) async fn refuse_if_rejoining_without_data(
    config: &ConsensusConfig,
    auth: &ClusterAuth,
) -> anyhow::Result<()> {
    let peers: Vec<(u64, String)> = config
        .initial_members
        .iter()
        .filter(|(id, _)| **id != config.node_id)
        .map(|(id, addr)| (*id, addr.clone()))
        .collect();
    // Asked at once, and for at most a second in all: peers that are still starting must not hold this
    // node's start up.
    let asks = peers.iter().map(|(peer, addr)| async move {
        (
            *peer,
            addr,
            tokio::time::timeout(Duration::from_secs(1), peer_status(addr, auth, config.tls.as_ref()))
                .await
                .ok()
                .flatten(),
        )
    });
    for (peer, addr, status) in futures_util::future::join_all(asks).await {
        let Some(status) = status else { continue };
        let known = status.members.iter().any(|member| member.id == config.node_id && member.registered);
        if known {
            anyhow::bail!(
                "node {id} is a member of a running cluster (node {peer} at {addr} lists it) but its data dir {dir} is \
                 new: its Raft log and vote are gone, and rejoining under the same id could elect two leaders. \
                 Restore the data dir, or remove the node (`tollgate cluster remove-node --id {id}`) and add it back \
                 as a new member (`tollgate cluster add-node`) with an empty data dir",
                id = config.node_id,
                dir = config.data_dir.display(),
            );
        }
    }
    Ok(())
}

async fn peer_status(addr: &str, auth: &ClusterAuth, tls: Option<&crate::tls::ClusterTls>) -> Option<ClusterStatus> {
    let channel = {
        let mut peer = crate::tls::peer_endpoint(addr, tls).ok()?;
        peer.endpoint = peer.endpoint.connect_timeout(Duration::from_millis(500));
        peer.connect().await.ok()?
    };
    let mut request = auth.sign(tonic::Request::new(Empty {}));
    request.set_timeout(Duration::from_secs(1));
    let reply = ClusterClient::new(channel).status(request).await.ok()?;
    super::decode::<ClusterStatus>(reply.get_ref()).ok()
}
