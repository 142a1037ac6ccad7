//! The server side of Raft RPCs over tonic: [`RaftService`] implements the generated `tollgate.v1.Raft`
//! service by decoding openraft requests from `RaftPayload.json`, handing them to the local
//! [`Raft`](crate::types::Raft), and replying with the JSON of the whole `Result` — the response, or the
//! `RaftError` (for example `Fatal::Stopped` on a node that is shutting down) — which
//! the peer client (`network.rs`) turns back into `Ok` or `RPCError::RemoteError`.
//!
//! A payload that is not valid JSON for the request type is rejected with `INVALID_ARGUMENT`.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tollgate_proto::v1::raft_server::{self, RaftServer};
use tollgate_proto::v1::RaftPayload;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::identity::{Identity, IDENTITY_HEADER};

use crate::types::MAX_MESSAGE_SIZE;
use crate::types::{NodeId, Raft, TypeConfig};

/// Serves Raft RPCs from peers into the local Raft node.
#[derive(Clone)]
pub struct RaftService {
    raft: Raft,
    /// Closed while the node checks that it may take part (see `node::wiped`): a node whose data dir was
    /// wiped must not answer a single vote. RPCs wait for it briefly, then fail as unavailable.
    admitted: tokio::sync::watch::Receiver<bool>,
    /// Checks the caller's identity and presents this node's on every reply (see [`crate::identity`]).
    identity: Option<Identity>,
}

impl RaftService {
    pub fn new(raft: Raft) -> Self {
        Self { raft, admitted: tokio::sync::watch::channel(true).1, identity: None }
    }

    pub fn gated(raft: Raft, admitted: tokio::sync::watch::Receiver<bool>, identity: Identity) -> Self {
        Self { raft, admitted, identity: Some(identity) }
    }

    /// Admitted (see `node::wiped`) and, when the caller names itself, its identity accepted.
    async fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.wait_admitted().await?;
        let (Some(identity), Some(caller)) = (&self.identity, crate::auth::ClusterAuth::caller(request)) else {
            return Ok(());
        };
        let presented = request.metadata().get(IDENTITY_HEADER).and_then(|value| value.to_str().ok());
        identity.check_peer(caller, presented).map_err(|reason| {
            tracing::warn!(caller, "refused a Raft RPC: {reason}");
            Status::failed_precondition(reason)
        })
    }

    /// `reply` with this node's identity attached.
    fn present(&self, mut response: Response<RaftPayload>) -> Response<RaftPayload> {
        if let Some(identity) = &self.identity {
            if let Ok(value) = MetadataValue::try_from(identity.header_value()) {
                response.metadata_mut().insert(IDENTITY_HEADER, value);
            }
        }
        response
    }

    async fn wait_admitted(&self) -> Result<(), Status> {
        let mut admitted = self.admitted.clone();
        let wait = tokio::time::timeout(std::time::Duration::from_secs(2), admitted.wait_for(|open| *open));
        let open = matches!(wait.await.map(|waited| waited.is_ok()), Ok(true));
        if open {
            Ok(())
        } else {
            Err(Status::unavailable("this node does not take part in Raft (yet): see its log"))
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }
}

/// The tonic service for `raft`, with message limits large enough for snapshot chunks
/// ([`MAX_MESSAGE_SIZE`]). Add it to a `tonic::transport::Server` next to the cluster service.
pub fn raft_server(raft: Raft) -> RaftServer<RaftService> {
    with_limits(RaftService::new(raft))
}

/// [`raft_server`] whose RPCs wait until `admitted` is true and whose callers' identities are checked.
pub fn raft_server_gated(
    raft: Raft,
    admitted: tokio::sync::watch::Receiver<bool>,
    identity: Identity,
) -> RaftServer<RaftService> {
    with_limits(RaftService::gated(raft, admitted, identity))
}

fn with_limits(service: RaftService) -> RaftServer<RaftService> {
    RaftServer::new(service).max_decoding_message_size(MAX_MESSAGE_SIZE).max_encoding_message_size(MAX_MESSAGE_SIZE)
}

fn decode<T: DeserializeOwned>(rpc: &str, request: Request<RaftPayload>) -> Result<T, Status> {
    let payload = request.into_inner();
    serde_json::from_slice(&payload.json).map_err(|err| {
        tracing::warn!(rpc, error = %err, "malformed Raft request");
        Status::invalid_argument(format!("malformed {rpc} request: {err}"))
    })
}

fn reply<T: Serialize>(rpc: &str, result: &T) -> Result<Response<RaftPayload>, Status> {
    match serde_json::to_vec(result) {
        Ok(json) => Ok(Response::new(RaftPayload { json })),
        Err(err) => {
            tracing::error!(rpc, error = %err, "cannot serialize Raft reply");
            Err(Status::internal(format!("cannot serialize {rpc} reply: {err}")))
        }
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&request).await?;
        let req: AppendEntriesRequest<TypeConfig> = decode("append_entries", request)?;
        let result = self.raft.append_entries(req).await;
        reply("append_entries", &result).map(|response| self.present(response))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&request).await?;
        let req: VoteRequest<NodeId> = decode("vote", request)?;
        let result = self.raft.vote(req).await;
        reply("vote", &result).map(|response| self.present(response))
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.admit(&request).await?;
        let req: InstallSnapshotRequest<TypeConfig> = decode("install_snapshot", request)?;
        let result = self.raft.install_snapshot(req).await;
        reply("install_snapshot", &result).map(|response| self.present(response))
    }
}
