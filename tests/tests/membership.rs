//! Issue 17.6: membership changes left half-done, and their bounds.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_tests::cluster::*;

fn add_body(cluster: &TestCluster, id: u64) -> Value {
    let joiner = cluster.node(id);
    json!({
        "id": id,
        "raft_addr": cluster.members[(id - 1) as usize].raft_addr.to_string(),
        "api_addr": joiner.api_addr.to_string(),
        "admin_addr": joiner.admin_addr.to_string(),
    })
}

/// A leader that lost leadership or stopped between the two steps of `add-node` (the joint configuration
/// committed, the target one never replicated) left the cluster joint, and nothing finished the change:
/// every decision needed a majority of both voter sets from then on. The next leader now completes it.
/// The fault: the leader's AppendEntries carrying the target configuration are dropped (its replication
/// stalls on them, so the others elect a leader among themselves, in the joint configuration), then
/// the old leader is stopped.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_left_joint_by_its_leader_is_completed_by_the_next_leader() {
    let mut cluster = TestCluster::start_with(3, "write_timeout_ms = 2000").await;
    let leader = cluster.wait_leader().await;
    let id = cluster.start_joiner().await;
    let consensus = cluster.node(leader).gateway.consensus.clone().unwrap();
    consensus.faults().hold_uniform_membership_with(id);

    let started = Instant::now();
    let body = add_body(&cluster, id);
    let (status, out) = cluster.admin(cluster.node(leader), Method::POST, "/admin/v1/cluster/nodes", Some(body)).await;
    assert_eq!(status, 503, "the second step cannot replicate: {out}");
    assert!(started.elapsed() < Duration::from_secs(8), "bounded by write_timeout (2 s), took {:?}", started.elapsed());
    cluster.stop(leader).await;
    let others: Vec<u64> = (1..=4).filter(|n| *n != leader).collect();
    for node in &others {
        eventually_async(&format!("node {node} to see the change completed"), || async {
            let status = cluster.admin_get(cluster.node(*node), "/admin/v1/cluster").await.unwrap_or_default();
            let voters = status["members"].as_array().map_or(0, |members| {
                members.iter().filter(|m| m["role"] == "leader" || m["role"] == "follower").count()
            });
            status["joint"].as_array().is_some_and(Vec::is_empty) && voters == 4
        })
        .await;
    }
    // The completed change is the one asked for: the joiner votes, and writes commit without the
    // stopped node (3 of 4).
    let (status, out) = cluster
        .admin(cluster.node(others[0]), Method::PUT, "/admin/v1/orgs/after-join", Some(json!({"name": "after-join"})))
        .await;
    assert_eq!(status, 200, "{out}");
}

/// `remove-node` is one change and answers within `write_timeout`; the removed voter is gone from the
/// membership, not kept as a learner.
#[tokio::test(flavor = "multi_thread")]
async fn remove_node_is_one_bounded_change() {
    let cluster = TestCluster::start_with(3, "write_timeout_ms = 2000").await;
    let leader = cluster.wait_leader().await;
    let victim = (1..=3).find(|n| *n != leader).unwrap_or(3);
    let (status, out) =
        cluster.admin(cluster.node(leader), Method::DELETE, &format!("/admin/v1/cluster/nodes/{victim}"), None).await;
    assert_eq!(status, 200, "{out}");
    let status = cluster.admin_get(cluster.node(leader), "/admin/v1/cluster").await.unwrap();
    let ids: Vec<u64> = status["members"].as_array().unwrap().iter().filter_map(|m| m["id"].as_u64()).collect();
    assert!(!ids.contains(&victim) && ids.len() == 2, "{status}");
    assert_eq!(status["joint"], json!([]), "{status}");
}

/// `add-node` answers within `write_timeout`: a learner that cannot catch up in time stays a learner
/// (503 saying so), and the same `add-node` makes it a voter once it can.
#[tokio::test(flavor = "multi_thread")]
async fn a_learner_that_has_not_caught_up_is_promoted_by_the_same_add_node_later() {
    let mut cluster = TestCluster::start_with(3, "write_timeout_ms = 2000").await;
    let leader = cluster.wait_leader().await;
    let id = cluster.start_joiner().await;
    cluster.partition(&[id]);
    let started = Instant::now();
    let body = add_body(&cluster, id);
    let (status, out) =
        cluster.admin(cluster.node(leader), Method::POST, "/admin/v1/cluster/nodes", Some(body.clone())).await;
    assert_eq!(status, 503, "{out}");
    assert!(out.to_string().contains("learner"), "says the node is a learner still catching up: {out}");
    assert!(started.elapsed() < Duration::from_secs(8), "bounded by write_timeout (2 s), took {:?}", started.elapsed());
    let view = cluster.admin_get(cluster.node(leader), "/admin/v1/cluster").await.unwrap();
    let role = view["members"].as_array().unwrap().iter().find(|m| m["id"] == id).map(|m| m["role"].clone());
    assert_eq!(role, Some(json!("learner")), "{view}");

    cluster.heal();
    let (status, out) = cluster.admin(cluster.node(leader), Method::POST, "/admin/v1/cluster/nodes", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    let voter = out["members"].as_array().unwrap().iter().any(|m| m["id"] == id && m["role"] != "learner");
    assert!(voter, "{out}");
}
