//! The handle the gateway uses: start a Raft member (sled storage, tonic network), write commands from any
//! node (followers forward to the leader), read the applied state locally or linearizably, change
//! membership, report status. Every call is bounded: without a quorum, writes fail with
//! [`ClusterError::NoQuorum`] after `write_timeout` instead of hanging.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tollgate_proto::v1::cluster_client::ClusterClient;
use tollgate_proto::v1::{Empty, RaftPayload};
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::state::{ControlState, Request, Response};
use crate::store::StateMachineStore;
use crate::types::{NodeId, NodeInfo, Raft};

mod api;
mod cluster_service;
mod membership;
mod register;
mod status;
mod wiped;
pub use api::{
    ClusterError, ClusterStatus, ConsensusConfig, MemberStatus, ProposalStats, DEFAULT_ELECTION_TIMEOUT_MAX_MS,
    DEFAULT_ELECTION_TIMEOUT_MIN_MS, DEFAULT_HEARTBEAT_MS, PROPOSAL_BUCKETS_SECONDS,
};

pub(crate) struct Inner {
    pub(crate) raft: Raft,
    pub(crate) state_machine: StateMachineStore,
    pub(crate) config: ConsensusConfig,
    channels: Mutex<HashMap<String, Channel>>,
    faults: crate::faults::Faults,
    /// Test hook: this node's clock skew (see [`ConsensusNode::skew_clock_for_tests`]).
    clock_skew_ms: std::sync::atomic::AtomicI64,
    /// Set when this node refused to take part in Raft (see `wiped`).
    rejoin_refusal: Mutex<Option<String>>,
    /// Signs this node's RPCs to peers and checks theirs (see [`crate::auth`]).
    pub(crate) auth: crate::auth::ClusterAuth,
    /// This node's cluster and data dir identity, and the check of its peers' (see [`crate::identity`]).
    pub(crate) identity: crate::identity::Identity,
    /// Whether this node takes part in Raft (false while a new data dir is checked, see `wiped`).
    admitted: watch::Receiver<bool>,
    proposals: ProposalStats,
}

/// The gRPC server task and the signal that stops it.
type ServerHandle = (oneshot::Sender<()>, JoinHandle<()>);

/// A running Raft member.
#[derive(Clone)]
pub struct ConsensusNode {
    inner: Arc<Inner>,
    server: Arc<Mutex<Option<ServerHandle>>>,
}

/// Opens sled. A node restarted right after stopping may find its previous instance still releasing the
/// lock for a few milliseconds: retried briefly instead of failing the start. The store holds provider
/// keys and the audit trail, so it is made owner-only (files sled creates later follow the process umask,
/// which the binary sets to 077).
async fn open_store(
    data_dir: &std::path::Path,
) -> anyhow::Result<(crate::store::LogStore, crate::store::StateMachineStore)> {
    let mut attempts = 0;
    let stores = loop {
        match crate::store::open(data_dir) {
            Ok(stores) => break stores,
            Err(err) if attempts < 50 && format!("{err:#}").contains("lock") => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err),
        }
    };
    crate::store::restrict_permissions(data_dir)?;
    Ok(stores)
}

/// The gRPC server on the Raft port: Raft (answered only once `admitted`) and the cluster service, every
/// RPC checked for the cluster secret.
fn serve_grpc(
    inner: &Arc<Inner>,
    listener: tokio::net::TcpListener,
    admitted: watch::Receiver<bool>,
) -> anyhow::Result<ServerHandle> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let check = inner.auth.clone();
    let tls = inner.config.tls.clone();
    let router = crate::network::server_builder()
        .layer(tonic::service::InterceptorLayer::new(move |request| check.check(request)))
        .add_service(crate::raft_service::raft_server_gated(inner.raft.clone(), admitted, inner.identity.clone()))
        .add_service(cluster_service::cluster_server(inner.clone()));
    let server = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        // With TLS the handshakes are this crate's (`tls.rs`), with the material current at each one.
        let served = match tls {
            Some(tls) => router.serve_with_incoming_shutdown(tls.incoming(listener), shutdown).await,
            None => {
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, shutdown).await
            }
        };
        if let Err(err) = served {
            tracing::error!(%err, "raft grpc server failed");
        }
    });
    Ok((stop_tx, server))
}

impl ConsensusNode {
    /// Opens the store in `data_dir`, starts Raft and its gRPC server on `listener`, and initializes a fresh
    /// cluster if this node has the lowest id among `initial_members`.
    pub async fn start(config: ConsensusConfig, listener: tokio::net::TcpListener) -> anyhow::Result<ConsensusNode> {
        let new_data_dir = wiped::is_new_data_dir(&config.data_dir);
        std::fs::create_dir_all(&config.data_dir)?;
        let (log_store, state_machine) = open_store(&config.data_dir).await?;
        let identity = {
            let state_machine = state_machine.clone();
            crate::identity::Identity::new(log_store.data_dir_id()?, Arc::new(move || state_machine.current()))
        };
        let raft_config = config.raft_config()?;
        let faults = crate::faults::Faults::default();
        let auth = crate::auth::ClusterAuth::new(config.node_id, config.cluster_secrets.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            crate::network::Network::with_faults(faults.clone())
                .with_auth(auth.clone())
                .with_tls(config.tls.clone())
                .with_identity(identity.clone()),
            log_store,
            state_machine.clone(),
        )
        .await?;
        let (admit, admitted) = watch::channel(!new_data_dir);
        let inner = Arc::new(Inner {
            raft: raft.clone(),
            state_machine,
            config: config.clone(),
            channels: Mutex::new(HashMap::new()),
            faults,
            clock_skew_ms: std::sync::atomic::AtomicI64::new(0),
            rejoin_refusal: Mutex::new(None),
            auth: auth.clone(),
            identity,
            admitted: admitted.clone(),
            proposals: ProposalStats::default(),
        });

        let server = serve_grpc(&inner, listener, admitted)?;
        let node = ConsensusNode { inner, server: Arc::new(Mutex::new(Some(server))) };
        if !new_data_dir {
            node.initialize_if_first().await?;
            node.spawn_registration();
            node.spawn_membership_reconciler();
            return Ok(node);
        }
        // A new data dir: take part in Raft only once no peer knows this id as a member that ran before
        // (see `wiped`). Checked in the background, so nodes started one after another do not wait on
        // each other's listeners; until then this node answers no Raft RPC at all.
        tokio::spawn(node.clone().admit_unless_rejoining(admit));
        Ok(node)
    }

    async fn admit_unless_rejoining(self, admit: watch::Sender<bool>) {
        if let Err(err) = wiped::refuse_if_rejoining_without_data(&self.inner.config, &self.inner.auth).await {
            tracing::error!("{err:#}");
            if let Ok(mut refusal) = self.inner.rejoin_refusal.lock() {
                *refusal = Some(format!("{err:#}"));
            }
            return;
        }
        let _ = admit.send(true);
        if let Err(err) = self.initialize_if_first().await {
            tracing::error!(%err, "cluster initialization failed");
        }
        self.spawn_registration();
        self.spawn_membership_reconciler();
    }

    /// The cluster secrets this node signs with and accepts; replace them to rotate without a restart.
    pub fn auth(&self) -> &crate::auth::ClusterAuth {
        &self.inner.auth
    }

    /// Why this node refused to take part in Raft, if it did (a member restarted with a wiped data dir).
    /// Whether this node answers Raft RPCs: false while a new data dir is being checked against the peers
    /// (see `wiped`), and for good if that check refused it.
    pub fn is_admitted(&self) -> bool {
        *self.inner.admitted.borrow()
    }

    pub fn rejoin_refusal(&self) -> Option<String> {
        self.inner.rejoin_refusal.lock().ok().and_then(|refusal| refusal.clone())
    }

    async fn initialize_if_first(&self) -> anyhow::Result<()> {
        let config = &self.inner.config;
        let lowest = config.initial_members.keys().next().copied();
        if lowest != Some(config.node_id) || self.inner.raft.is_initialized().await? {
            return Ok(());
        }
        let members: BTreeMap<NodeId, NodeInfo> = config
            .initial_members
            .iter()
            .map(|(id, addr)| {
                let info = if *id == config.node_id {
                    config.advertise.clone()
                } else {
                    NodeInfo { raft_addr: addr.clone(), api_addr: String::new(), admin_addr: String::new() }
                };
                (*id, info)
            })
            .collect();
        tracing::info!(node_id = config.node_id, members = members.len(), "initializing a fresh cluster");
        if let Err(err) = self.inner.raft.initialize(members).await {
            // Another start already initialized it (e.g. a restart racing its own log): not an error.
            tracing::info!(%err, "cluster initialization skipped");
        }
        Ok(())
    }

    pub fn id(&self) -> NodeId {
        self.inner.config.node_id
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The applied state, as of now on this node (no RPC; what the data plane reads).
    pub fn current(&self) -> Arc<ControlState> {
        self.inner.state_machine.current()
    }

    /// Every applied change, for hot reload.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ControlState>> {
        self.inner.state_machine.subscribe()
    }

    /// This node's wall clock: the process clock plus its own skew (for tests of clock skew).
    pub fn now_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    /// Skews this node's clock by `ms` (negative: behind), for tests: a whole in-process cluster shares one
    /// process clock, and clock-skew faults need one node's to differ.
    pub fn skew_clock_for_tests(&self, ms: i64) {
        self.inner.clock_skew_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Members of the current Raft membership, voters and learners: the nodes that serve traffic.
    pub fn member_count(&self) -> u64 {
        self.inner.raft.metrics().borrow().membership_config.membership().nodes().count() as u64
    }

    /// The current Raft membership (voters and learners) with each member's addresses.
    pub fn members(&self) -> Vec<(NodeId, crate::types::NodeInfo)> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics.membership_config.membership().nodes().map(|(id, info)| (*id, info.clone())).collect()
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Proposes a command from any node; bounded by `write_timeout`.
    /// Fault injection for in-process tests: links to block (see [`Faults`](crate::faults::Faults)).
    #[cfg(feature = "fault-injection")]
    pub fn faults(&self) -> &crate::faults::Faults {
        &self.inner.faults
    }

    pub async fn write(&self, request: Request) -> Result<Response, ClusterError> {
        let timeout = self.inner.config.write_timeout;
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(timeout, self.inner.write(request, 1)).await {
            Ok(result) => result,
            Err(_) => Err(ClusterError::NoQuorum(format!(
                "no quorum within {} ms; the write may not have been applied",
                timeout.as_millis()
            ))),
        };
        self.inner.proposals.record(&result, started.elapsed());
        result
    }

    /// Proposals made through this node so far (see [`ProposalStats`]).
    pub fn proposal_stats(&self) -> &ProposalStats {
        &self.inner.proposals
    }

    /// The applied state after a linearizable read barrier (leader confirms leadership with a quorum; a
    /// follower asks the leader for the read index and waits to apply up to it).
    pub async fn read_linearizable(&self) -> Result<Arc<ControlState>, ClusterError> {
        let timeout = self.inner.config.write_timeout;
        match tokio::time::timeout(timeout, self.inner.read_barrier()).await {
            Ok(Ok(())) => Ok(self.current()),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(ClusterError::NoQuorum(format!(
                "no quorum within {} ms for a linearizable read",
                timeout.as_millis()
            ))),
        }
    }

    /// Adds a node as learner, waits for it to catch up, then promotes it to voter; all within
    /// `write_timeout` (see the `membership` module for what a timeout leaves behind).
    pub async fn add_node(&self, id: NodeId, info: NodeInfo) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.write_timeout;
        membership::bounded(deadline, "adding the node", self.inner.add_node(id, info, deadline, 1)).await
    }

    /// Removes a voter or learner in one membership change, within `write_timeout`.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.write_timeout;
        membership::bounded(deadline, "removing the node", self.inner.remove_node(id, deadline, 1)).await
    }

    /// Waits (up to `timeout`) until every member has applied the log up to `index`, asking each one for
    /// its own applied index. Returns the members that have and those that have not (down, partitioned
    /// or slow). Used where a committed change must bind on every node before the caller relies on it,
    /// e.g. a new budget: a node enforces a budget from the moment it applies it.
    pub async fn wait_applied_everywhere(&self, index: u64, timeout: Duration) -> (Vec<NodeId>, Vec<NodeId>) {
        let deadline = tokio::time::Instant::now() + timeout;
        let members: Vec<(NodeId, String)> = {
            let metrics = self.inner.raft.metrics().borrow().clone();
            metrics.membership_config.membership().nodes().map(|(id, info)| (*id, info.raft_addr.clone())).collect()
        };
        let checks = members.into_iter().map(|(id, addr)| async move {
            loop {
                let applied = if id == self.id() {
                    self.inner.state_machine.last_applied().map(|log_id| log_id.index)
                } else {
                    self.inner.remote_status(&addr).await.ok().and_then(|status| status.applied_index)
                };
                if applied.is_some_and(|applied| applied >= index) {
                    return (id, true);
                }
                if tokio::time::Instant::now() >= deadline {
                    return (id, false);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let applied = results.iter().filter(|(_, ok)| *ok).map(|(id, _)| *id).collect();
        let pending = results.iter().filter(|(_, ok)| !*ok).map(|(id, _)| *id).collect();
        (applied, pending)
    }

    /// Status from the leader when reachable (it knows every member's replication), else this node's view.
    pub async fn status(&self) -> ClusterStatus {
        if let Some(leader) = self.leader().filter(|leader| *leader != self.id()) {
            if let Some(addr) = self.inner.addr_of(leader) {
                if let Ok(status) = self.inner.remote_status(&addr).await {
                    return status;
                }
            }
        }
        self.inner.local_status()
    }

    /// Stops the gRPC server and Raft. Data stays on disk.
    pub async fn shutdown(&self) {
        let server = self.server.lock().ok().and_then(|mut guard| guard.take());
        if let Some((stop, task)) = server {
            let _ = stop.send(());
            let _ = task.await;
        }
        let _ = self.inner.raft.shutdown().await;
    }
}

fn encode<T: Serialize>(value: &T) -> Result<RaftPayload, ClusterError> {
    crate::wire::to_vec(value).map(|json| RaftPayload { json }).map_err(|err| ClusterError::Internal(err.to_string()))
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(payload: &RaftPayload) -> Result<T, ClusterError> {
    serde_json::from_slice(&payload.json).map_err(|err| ClusterError::Internal(format!("bad cluster payload: {err}")))
}

fn unreachable(err: tonic::Status) -> ClusterError {
    ClusterError::NoQuorum(format!("leader unreachable: {}", err.message()))
}

impl Inner {
    pub(crate) fn now_ms(&self) -> u64 {
        let skew = self.clock_skew_ms.load(std::sync::atomic::Ordering::Relaxed);
        crate::clock::wall_ms().saturating_add_signed(skew)
    }

    pub(crate) fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader
    }

    fn addr_of(&self, id: NodeId) -> Option<String> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let addr =
            membership.membership().nodes().find(|(node, _)| **node == id).map(|(_, info)| info.raft_addr.clone());
        addr
    }

    fn client(&self, addr: &str) -> Result<ClusterClient<Channel>, ClusterError> {
        if self.faults.is_blocked(addr) {
            return Err(ClusterError::NoQuorum(format!("link to {addr} is cut (fault injection)")));
        }
        let mut channels = self.channels.lock().map_err(|_| ClusterError::Internal("channel cache poisoned".into()))?;
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                // The Raft client's settings (HTTP/2 windows sized for the WAN, keepalive): a forwarded
                // write carries a whole command, up to `MAX_ENTRY_BYTES`.
                let channel = crate::network::endpoint_with(addr, self.config.tls.as_ref())
                    .map_err(|err| ClusterError::Internal(err.to_string()))?
                    .connect_lazy();
                channels.insert(addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(ClusterClient::new(channel).max_decoding_message_size(64 << 20))
    }

    /// Waits (bounded by the caller) until some node is known as leader.
    async fn leader_addr(&self) -> Result<(NodeId, String), ClusterError> {
        let mut metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            if let Some(leader) = leader {
                if let Some(addr) = self.addr_of(leader) {
                    return Ok((leader, addr));
                }
            }
            if metrics.changed().await.is_err() {
                return Err(ClusterError::Internal("raft stopped".into()));
            }
        }
    }

    pub(crate) async fn write(&self, request: Request, hops: u8) -> Result<Response, ClusterError> {
        api::check_entry_size(&request)?;
        loop {
            if !self.is_leader() {
                let (leader, addr) = self.leader_addr().await?;
                if leader != self.config.node_id {
                    if hops == 0 {
                        return Err(ClusterError::NoQuorum("leadership changed while forwarding".into()));
                    }
                    let mut forwarded = self.auth.sign(tonic::Request::new(encode(&request)?));
                    crate::trace::inject(&mut forwarded);
                    let reply = self.client(&addr)?.write(forwarded).await.map_err(unreachable)?;
                    return decode::<Result<Response, ClusterError>>(reply.get_ref())?;
                }
            }
            // The leader's clock stamps every entry it proposes: the ledger decides a grant's period by it,
            // not by the clock of the node that asked (docs/ARCHITECTURE.md, "Budget invariants").
            let mut stamped = request.clone();
            stamped.at_ms = self.now_ms();
            let proposal = crate::trace::proposal_span(self.config.node_id, &request);
            match self.raft.client_write(stamped).instrument(proposal.clone()).await {
                Ok(reply) => {
                    crate::trace::committed(&proposal, reply.log_id.index, reply.log_id.leader_id.term);
                    return Ok(reply.data);
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    crate::trace::failed(&proposal, "forward_to_leader");
                    // Lost leadership between the check and the write: wait for the next leader and retry
                    // (the request id makes the retry safe).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(err) => {
                    crate::trace::failed(&proposal, "raft");
                    return Err(ClusterError::Internal(err.to_string()));
                }
            }
        }
    }

    /// On the leader: confirm leadership and return the index a read must see.
    pub(crate) async fn read_index(&self) -> Result<u64, ClusterError> {
        let (read_log_id, _) =
            self.raft.get_read_log_id().await.map_err(|err| ClusterError::NoQuorum(err.to_string()))?;
        Ok(read_log_id.map_or(0, |id| id.index))
    }

    /// Waits until this node has applied everything committed when the read began. A leader hint that
    /// went stale (an election under way) or an unreachable leader is retried until the caller's
    /// deadline (`read_linearizable` bounds it by `write_timeout`), instead of failing the read at once.
    async fn read_barrier(&self) -> Result<(), ClusterError> {
        let index = loop {
            match self.read_index_anywhere().await {
                Ok(index) => break index,
                Err(ClusterError::NoQuorum(_)) => tokio::time::sleep(Duration::from_millis(25)).await,
                Err(other) => return Err(other),
            }
        };
        self.raft
            .wait(None)
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|err| ClusterError::Internal(err.to_string()))?;
        Ok(())
    }

    /// The read index from the leader: this node's own when it leads, else asked of the leader it knows.
    async fn read_index_anywhere(&self) -> Result<u64, ClusterError> {
        if self.is_leader() {
            return self.read_index().await;
        }
        let (_, addr) = self.leader_addr().await?;
        let reply =
            self.client(&addr)?.read_index(self.auth.sign(tonic::Request::new(Empty {}))).await.map_err(unreachable)?;
        Ok(reply.into_inner().read_index)
    }
}
