//! The client side of Raft RPCs over tonic: [`Network`] (openraft's `RaftNetworkFactory`) hands openraft a
//! [`PeerClient`] (openraft's `RaftNetwork`) per target node.
//!
//! Wire format: each openraft request is serialized with serde_json into `RaftPayload.json`; the peer's
//! [`crate::raft_service::RaftService`] replies with the JSON of `Result<response, RaftError>`, so a Raft-level
//! error on the peer comes back as [`RPCError::RemoteError`]. Errors are classified so openraft reacts well:
//!
//! - transport failures (refused, reset, unavailable) → [`RPCError::Unreachable`]: openraft then backs off
//!   ([`RaftNetwork::backoff`]) instead of retrying a dead peer at every heartbeat;
//! - a timeout (slow, not dead), a reply that cannot be decoded, or a peer that rejects our request as
//!   malformed → [`RPCError::Network`], retried at the next heartbeat;
//! - an append-entries request larger than [`MAX_APPEND_BYTES`] → [`RPCError::PayloadTooLarge`] with a hint
//!   of as many entries as fit, so openraft splits it instead of sending a batch that cannot arrive in time.
//!
//! **WAN sizing.** openraft 0.9 gives every AppendEntries (and the read-index quorum check) a hard deadline
//! of `heartbeat_interval`, encoding included. So one RPC must cross in one round trip: the HTTP/2 windows
//! ([`STREAM_WINDOW`], [`CONNECTION_WINDOW`], both ends) are larger than the largest request
//! ([`MAX_APPEND_BYTES`], a snapshot chunk), so a sender never waits a round trip for a `WINDOW_UPDATE`
//! (hyper's server default of 1 MiB made a 4 MiB entry take 4+ round trips and miss every deadline at 50 ms
//! RTT). Fixed windows rather than hyper's adaptive (BDP) window, which starts at 64 KiB and grows only
//! after traffic: the first large append after an idle spell would be the slow one.
//!
//! Nothing connects eagerly: channels are built with `connect_lazy` and cached per address in the factory,
//! so the replication tasks openraft re-creates for a peer share one HTTP/2 connection, which tonic
//! re-establishes by itself after a failure.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tollgate_proto::v1::raft_client::RaftClient;
use tollgate_proto::v1::RaftPayload;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::identity::{Identity, IDENTITY_HEADER};
use crate::types::{NodeId, NodeInfo, TypeConfig};

pub use crate::types::{MAX_APPEND_BYTES, MAX_ENTRY_BYTES, MAX_MESSAGE_SIZE};

/// HTTP/2 flow-control window per stream on peer connections, both directions (4 MiB: four times the
/// largest append, room for a snapshot chunk's JSON).
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;

/// HTTP/2 flow-control window per peer connection (appends, read-index checks and votes share it).
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// How long establishing a TCP connection to a peer may take before the RPC fails as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 PING interval on idle and busy peer connections, and how long to wait for the PONG: a peer that
/// vanished without a FIN (power loss, partition) is noticed within about interval + timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The RPC error type openraft expects from `append_entries` and `vote` (`E = Infallible`) and from
/// `install_snapshot` (`E = InstallSnapshotError`).
pub type RpcError<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

pub use crate::faults::Faults;

/// openraft's network factory: one [`PeerClient`] per (target, address), sharing cached lazy channels.
#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    faults: Faults,
    /// Signs every outgoing RPC with the cluster secret (see [`crate::auth`]).
    auth: Option<crate::auth::ClusterAuth>,
    /// Presents this node's identity and checks each peer's answer against it (see [`crate::identity`]).
    identity: Option<Identity>,
    /// Mutual TLS to peers (see [`crate::tls`]).
    tls: Option<crate::tls::ClusterTls>,
}

impl Network {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_faults(faults: Faults) -> Self {
        Network { faults, ..Self::default() }
    }

    /// Signs every RPC with `auth`'s cluster secret.
    pub fn with_auth(mut self, auth: crate::auth::ClusterAuth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Speaks mutual TLS to peers when `tls` is set.
    pub fn with_tls(mut self, tls: Option<crate::tls::ClusterTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Presents `identity` on every RPC and refuses answers from a peer whose identity it does not accept.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The cached channel to `raft_addr` (`host:port`), created lazily (no I/O here). Must be called inside a
    /// tokio runtime: tonic spawns the channel's worker task. Fails only for an address that is not a valid
    /// URI authority.
    pub fn channel(&self, raft_addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(raft_addr) {
            return Ok(channel.clone());
        }
        let channel = endpoint_with(raft_addr, self.tls.as_ref())?.connect_lazy();
        channels.insert(raft_addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Drops the cached channel to `raft_addr` (for example once a node has left the cluster).
    pub fn forget(&self, raft_addr: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        channels.remove(raft_addr);
    }
}

/// The tonic endpoint for a peer's Raft gRPC address (`host:port`, plain HTTP/2).
pub fn endpoint(raft_addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(with_peer_settings(Endpoint::from_shared(format!("http://{raft_addr}"))?))
}

/// [`endpoint`], with mutual TLS when `tls` is set.
pub fn endpoint_with(
    raft_addr: &str,
    tls: Option<&crate::tls::ClusterTls>,
) -> Result<crate::tls::PeerEndpoint, tonic::transport::Error> {
    let peer = crate::tls::peer_endpoint(raft_addr, tls)?;
    Ok(crate::tls::PeerEndpoint { endpoint: with_peer_settings(peer.endpoint), tls: peer.tls })
}

/// Timeouts, keepalive and HTTP/2 windows for the peer links.
fn with_peer_settings(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_adaptive_window(false)
}

/// The server side of the peer port with the same HTTP/2 windows as [`endpoint_with`]: what a peer may send
/// before waiting for a `WINDOW_UPDATE` is set by the receiver, so this is the half that matters for appends.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_adaptive_window(Some(false))
}

/// How many of `entries` entries to send when their JSON is `bytes` long and over [`MAX_APPEND_BYTES`]: as
/// many as fit on average, at least one, fewer than all.
fn entries_hint(entries: usize, bytes: usize) -> u64 {
    let fitting = entries.saturating_mul(MAX_APPEND_BYTES) / bytes.max(1);
    fitting.clamp(1, entries.saturating_sub(1).max(1)) as u64
}

/// A Raft gRPC client with Tollgate's message size limits.
pub fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE).max_encoding_message_size(MAX_MESSAGE_SIZE)
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        let client = match self.channel(&node.raft_addr) {
            Ok(channel) => Ok(raft_client(channel)),
            Err(err) => {
                tracing::warn!(target, addr = %node.raft_addr, error = %err, "invalid Raft peer address");
                Err(BadAddress { addr: node.raft_addr.clone(), reason: err.to_string() })
            }
        };
        PeerClient {
            target,
            node: node.clone(),
            client,
            faults: self.faults.clone(),
            auth: self.auth.clone(),
            identity: self.identity.clone(),
        }
    }
}

/// A peer's address could not be turned into a gRPC endpoint; reported as unreachable on every RPC.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid Raft address {addr:?}: {reason}")]
pub struct BadAddress {
    pub addr: String,
    pub reason: String,
}

/// The local deadline ran out before the peer answered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{rpc} to node {target} timed out after {ttl:?}")]
struct DeadlineElapsed {
    rpc: &'static str,
    target: NodeId,
    ttl: Duration,
}

/// openraft's per-peer network: sends append-entries, vote and install-snapshot RPCs to one node.
pub struct PeerClient {
    target: NodeId,
    node: NodeInfo,
    client: Result<RaftClient<Channel>, BadAddress>,
    faults: Faults,
    auth: Option<crate::auth::ClusterAuth>,
    identity: Option<Identity>,
}

/// The link to a peer was cut by [`Faults`].
#[derive(Debug, thiserror::Error)]
#[error("link to {0} is cut (fault injection)")]
struct LinkCut(String);

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::AppendEntries => "append_entries",
            Rpc::Vote => "vote",
            Rpc::InstallSnapshot => "install_snapshot",
        }
    }
}

impl PeerClient {
    pub fn target(&self) -> NodeId {
        self.target
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Sends one already-serialized request and decodes the peer's `Result<Resp, RaftError<E>>`.
    async fn call<Resp, E>(&mut self, rpc: Rpc, json: Vec<u8>, option: &RPCOption) -> Result<Resp, RpcError<E>>
    where
        Resp: DeserializeOwned,
        E: Error + DeserializeOwned,
    {
        let target = self.target;
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(bad) => return Err(RPCError::Unreachable(Unreachable::new(bad))),
        };
        if self.faults.is_blocked(&self.node.raft_addr) {
            return Err(RPCError::Unreachable(Unreachable::new(&LinkCut(self.node.raft_addr.clone()))));
        }
        let ttl = option.hard_ttl();
        let mut request = tonic::Request::new(RaftPayload { json });
        if let Some(auth) = &self.auth {
            request = auth.sign(request);
        }
        if let Some(identity) = &self.identity {
            if let Ok(value) = MetadataValue::try_from(identity.header_value()) {
                request.metadata_mut().insert(IDENTITY_HEADER, value);
            }
        }
        // Sent as `grpc-timeout`: tonic's client enforces it, and so does the peer's server.
        request.set_timeout(ttl);

        let send = async move {
            let mut client = client;
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        // Belt and braces: a peer that accepted the connection but never answers must not hold us past the
        // deadline even if the grpc-timeout layer is bypassed (openraft also drops us at `hard_ttl`).
        let reply = match tokio::time::timeout(ttl, send).await {
            Err(_elapsed) => {
                let err = DeadlineElapsed { rpc: rpc.name(), target, ttl };
                tracing::debug!(error = %err, "Raft RPC timed out");
                // A slow peer is not a dead one: `Network` is retried at the next heartbeat, while
                // `Unreachable` would back the follower off for 500 ms and can stall commits (bench/CLUSTER.md).
                return Err(RPCError::Network(NetworkError::new(&err)));
            }
            Ok(Err(status)) => return Err(status_error(rpc, target, status)),
            Ok(Ok(response)) => {
                self.check_identity(rpc, &response).map_err(RPCError::Unreachable)?;
                response.into_inner()
            }
        };

        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.json).map_err(|err| {
            tracing::warn!(rpc = rpc.name(), target, error = %err, "malformed Raft reply");
            RPCError::Network(NetworkError::new(&err))
        })?;
        result.map_err(|err| RPCError::RemoteError(RemoteError::new_with_node(target, self.node.clone(), err)))
    }
}

impl PeerClient {
    /// A peer whose identity this node does not accept (its data dir was wiped, or it belongs to another
    /// cluster) is treated as unreachable: its vote, acknowledgement or snapshot reply does not count.
    fn check_identity(&self, rpc: Rpc, response: &tonic::Response<RaftPayload>) -> Result<(), Unreachable> {
        let Some(identity) = &self.identity else { return Ok(()) };
        let presented = response.metadata().get(IDENTITY_HEADER).and_then(|value| value.to_str().ok());
        identity.check_peer(self.target, presented).map_err(|reason| {
            tracing::warn!(rpc = rpc.name(), target = self.target, "{reason}");
            Unreachable::new(&RefusedIdentity(reason))
        })
    }
}

/// A peer's identity was refused (see [`crate::identity`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RefusedIdentity(String);

/// Classifies a gRPC failure: the peer rejected or garbled the exchange (`Network`, retried at the next
/// heartbeat), or it could not be reached in time (`Unreachable`, openraft backs off).
fn status_error<E: Error>(rpc: Rpc, target: NodeId, status: tonic::Status) -> RpcError<E> {
    match status.code() {
        Code::InvalidArgument | Code::Internal | Code::DataLoss | Code::OutOfRange | Code::FailedPrecondition => {
            tracing::warn!(rpc = rpc.name(), target, status = %status, "Raft RPC rejected by peer");
            RPCError::Network(NetworkError::new(&status))
        }
        // Slow, not dead: retry at the next heartbeat without the unreachable-peer backoff.
        Code::DeadlineExceeded | Code::Cancelled => {
            tracing::debug!(rpc = rpc.name(), target, status = %status, "Raft RPC timed out");
            RPCError::Network(NetworkError::new(&status))
        }
        // Unavailable (refused / reset / no route), Unknown (h2 and "service not ready" errors),
        // Unimplemented (something else listens there), ResourceExhausted…
        _ => {
            tracing::debug!(rpc = rpc.name(), target, status = %status, "Raft peer unreachable");
            RPCError::Unreachable(Unreachable::new(&status))
        }
    }
}

/// Serializes an openraft request; a failure (which would be a bug) is reported as a network error.
fn encode<T: Serialize>(request: &T) -> Result<Vec<u8>, NetworkError> {
    crate::wire::to_vec(request).map_err(|err| NetworkError::new(&err))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcError> {
        if self.faults.holds(&rpc.entries) {
            return Err(RPCError::Unreachable(Unreachable::new(&LinkCut(self.node.raft_addr.clone()))));
        }
        let json = encode(&rpc).map_err(RPCError::Network)?;
        if json.len() > MAX_APPEND_BYTES && rpc.entries.len() > 1 {
            let hint = entries_hint(rpc.entries.len(), json.len());
            tracing::debug!(target = self.target, bytes = json.len(), hint, "append_entries too large, splitting");
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        self.call(Rpc::AppendEntries, json, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcError<InstallSnapshotError>> {
        let json = encode(&rpc).map_err(RPCError::Network)?;
        self.call(Rpc::InstallSnapshot, json, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcError> {
        let json = encode(&rpc).map_err(RPCError::Network)?;
        self.call(Rpc::Vote, json, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_batch_is_split_into_what_fits() {
        // 300 entries of 100 KiB: 10 fit in 1 MiB.
        assert_eq!(entries_hint(300, 300 * 100 * 1024), 10);
        // Just over the limit: all but one.
        assert_eq!(entries_hint(4, MAX_APPEND_BYTES + 1), 3);
        // Two huge entries: one at a time.
        assert_eq!(entries_hint(2, 10 * MAX_APPEND_BYTES), 1);
    }
}
