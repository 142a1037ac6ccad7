//! `/admin/v1/cluster*` and `/admin/v1/audit`: Raft membership and status, the gossip view of endpoint
//! health, and the audit trail of control-plane changes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_consensus::{ConsensusNode, NodeInfo};

use super::extract::{json_response, AdminError, Consensus, Json};
use crate::gateway::Gateway;

pub(super) async fn status(Consensus(node): Consensus) -> Response {
    json_response(StatusCode::OK, &cluster_status(&node).await)
}

async fn cluster_status(node: &ConsensusNode) -> Value {
    let status = node.status().await;
    let members: Vec<Value> = status
        .members
        .iter()
        .map(|member| {
            json!({
                "id": member.id, "raft_addr": member.raft_addr, "api_addr": member.api_addr,
                "admin_addr": member.admin_addr, "role": member.role,
                "applied_index": member.matched_index, "lag": member.lag, "alive": member.alive,
            })
        })
        .collect();
    json!({
        "leader": status.leader, "term": status.term, "node_id": status.node_id,
        "applied_index": status.applied_index, "last_log_index": status.last_log_index, "members": members,
        "joint": status.joint,
    })
}

#[derive(Deserialize)]
pub(super) struct AddNode {
    id: u64,
    raft_addr: String,
    #[serde(default)]
    api_addr: String,
    #[serde(default)]
    admin_addr: String,
}

/// `POST /admin/v1/cluster/nodes`: adds a voter (it catches up as a learner first).
pub(super) async fn add_node(Consensus(node): Consensus, Json(body): Json<AddNode>) -> Result<Response, AdminError> {
    let info = NodeInfo { raft_addr: body.raft_addr, api_addr: body.api_addr, admin_addr: body.admin_addr };
    node.add_node(body.id, info).await?;
    Ok(json_response(StatusCode::OK, &cluster_status(&node).await))
}

pub(super) async fn remove_node(Consensus(node): Consensus, Path(id): Path<String>) -> Result<Response, AdminError> {
    let id = id.parse::<u64>().map_err(|_| AdminError::bad_request(format!("`{id}` is not a node id")))?;
    node.remove_node(id).await?;
    Ok(json_response(StatusCode::OK, &cluster_status(&node).await))
}

pub(super) async fn audit(Consensus(node): Consensus) -> Result<Response, AdminError> {
    let state = node.read_linearizable().await?;
    Ok(json_response(StatusCode::OK, &json!({"entries": state.history.audit})))
}

/// `GET /admin/v1/cluster/gossip`: this node's endpoint observations and what gossip brings from peers.
/// Works on a standalone node too.
pub(super) async fn gossip(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut view = crate::gossip::admin_view(&gateway.endpoints, gateway.gossip.get());
    if let Some(object) = view.as_object_mut() {
        if let Some(error) = gateway.gossip_error.get() {
            object.insert("error".into(), json!(error));
        }
        if let (Some(consensus), Some(_)) = (&gateway.consensus, gateway.gossip.get()) {
            object.insert("unreachable_members".into(), json!(gossip_unreachable_members(&gateway, consensus)));
        }
    }
    json_response(StatusCode::OK, &view)
}

/// Raft members (other than this node) that gossip does not see alive and trusted.
pub fn gossip_unreachable_members(gateway: &Gateway, consensus: &ConsensusNode) -> Vec<u64> {
    let Some(cluster) = gateway.gossip.get() else {
        return Vec::new();
    };
    let view = cluster.view();
    let mut missing: Vec<u64> = consensus
        .members()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| *id != gateway.node_id)
        .filter(|id| !view.live_members().any(|m| m.trusted && m.node_id == id.to_string()))
        .collect();
    missing.sort_unstable();
    missing
}
