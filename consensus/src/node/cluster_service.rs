//! The peer-only `Cluster` gRPC service: followers forward writes, read-index requests and membership
//! changes to the leader through it. Replies carry JSON of `Result<T, ClusterError>`.

use std::sync::Arc;

use tollgate_proto::v1::cluster_server::{Cluster, ClusterServer};
use tollgate_proto::v1::{AddNodeRequest, Empty, RaftPayload, ReadIndexReply, RemoveNodeRequest};
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tracing::Instrument as _;

use super::{decode, ClusterError, Inner};
use crate::member::NodeInfo;
use crate::state::Request;

pub(crate) struct ClusterService {
    inner: Arc<Inner>,
}

pub(crate) fn cluster_server(inner: Arc<Inner>) -> ClusterServer<ClusterService> {
    ClusterServer::new(ClusterService { inner }).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

fn reply<T: serde::Serialize>(value: &T) -> Result<GrpcResponse<RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|json| GrpcResponse::new(RaftPayload { json }))
        .map_err(|err| Status::internal(err.to_string()))
}

/// A cluster error as a span's `error.type`.
fn error_type(err: &ClusterError) -> &'static str {
    match err {
        ClusterError::NoQuorum(_) => "no_quorum",
        ClusterError::Invalid(_) => "invalid",
        ClusterError::NotFound(_) => "not_found",
        ClusterError::TooLarge(_) => "too_large",
        ClusterError::Internal(_) => "internal",
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn write(&self, request: GrpcRequest<RaftPayload>) -> Result<GrpcResponse<RaftPayload>, Status> {
        let mut command: Request =
            decode(request.get_ref()).map_err(|err| Status::invalid_argument(err.to_string()))?;
        // The audit trail names the node that forwarded the write, as the authenticated peer says.
        let forwarder =
            crate::auth::ClusterAuth::caller(&request).map_or("an unnamed peer".to_owned(), |id| format!("node-{id}"));
        // The follower's trace continues here (when it sent one), its proposal span a child of this one.
        let span = crate::trace::forwarded_write_span(request.metadata(), &command, &forwarder);
        command.actor = format!("{} (forwarded by {forwarder})", command.actor);
        // One hop only: a forwarded write that lands on a non-leader fails rather than bouncing around.
        let result: Result<_, ClusterError> = self.inner.write(command, 0).instrument(span.clone()).await;
        if let Err(err) = &result {
            crate::trace::failed(&span, error_type(err));
        }
        reply(&result)
    }

    async fn read_index(&self, _request: GrpcRequest<Empty>) -> Result<GrpcResponse<ReadIndexReply>, Status> {
        if !self.inner.is_leader() {
            return Err(Status::unavailable("not the leader"));
        }
        let index = self.inner.read_index().await.map_err(|err| Status::unavailable(err.to_string()))?;
        Ok(GrpcResponse::new(ReadIndexReply { leader_id: self.inner.config.node_id, read_index: index }))
    }

    async fn add_node(&self, request: GrpcRequest<AddNodeRequest>) -> Result<GrpcResponse<RaftPayload>, Status> {
        let request = request.into_inner();
        let info =
            NodeInfo { raft_addr: request.raft_addr, api_addr: request.api_addr, admin_addr: request.admin_addr };
        let deadline = tokio::time::Instant::now() + self.inner.config.write_timeout;
        let result = self.inner.add_node(request.node_id, info, deadline, 0).await;
        reply(&result)
    }

    async fn remove_node(&self, request: GrpcRequest<RemoveNodeRequest>) -> Result<GrpcResponse<RaftPayload>, Status> {
        let deadline = tokio::time::Instant::now() + self.inner.config.write_timeout;
        let result = self.inner.remove_node(request.into_inner().node_id, deadline, 0).await;
        reply(&result)
    }

    async fn status(&self, _request: GrpcRequest<Empty>) -> Result<GrpcResponse<RaftPayload>, Status> {
        reply(&self.inner.local_status())
    }
}
