//! Budget helpers shared by the budget test files: set a budget and wait until every data plane has it,
//! read the ledger, drive traffic, and count what the mock upstream generated (the ground truth for S1).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::cluster::{eventually_async, TestCluster};
use crate::KEY;

/// Sets org `acme`'s token budget through node `via` and waits until every running node's data plane has
/// it.
pub async fn set_org_budget(cluster: &TestCluster, via: u64, limit: u64, period: &str) -> Value {
    let body = json!({"scope": {"org": "acme"}, "limit_tokens": limit, "period": period});
    let (status, out) = cluster.admin(cluster.node(via), Method::PUT, "/admin/v1/budgets", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    for node in cluster.running() {
        eventually_async("budget loaded", || async {
            node.gateway.snapshot().budgets.get("org:acme").is_some_and(|spec| spec.limit_tokens == Some(limit))
        })
        .await;
    }
    out
}

/// Tokens the mock upstream generated and billed, input and output: what S1 bounds.
pub fn generated(cluster: &TestCluster) -> u64 {
    cluster.mock.input_tokens_served() + cluster.mock.output_tokens_served()
}

/// One chat completion through node `node`; returns the status.
pub async fn chat_status(cluster: &TestCluster, node: u64, body: &Value) -> u16 {
    let url = format!("{}/v1/chat/completions", cluster.node(node).api_url());
    match cluster.client.post(url).bearer_auth(KEY).json(body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let _ = response.bytes().await;
            status
        }
        Err(_) => 0,
    }
}

/// Sends `body` through the given nodes in turn until the budget refuses (429) 3 times in a row; a 503 is
/// retried after a pause. Returns the number admitted. Fails after 60 s.
pub async fn spend_until_refused(cluster: &TestCluster, nodes: &[u64], body: &Value) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut admitted, mut refused, mut turn) = (0, 0, 0usize);
    while refused < 3 {
        assert!(Instant::now() < deadline, "the budget never refused ({admitted} admitted)");
        turn += 1;
        match chat_status(cluster, nodes[turn % nodes.len()], body).await {
            200 => {
                admitted += 1;
                refused = 0;
            }
            429 => refused += 1,
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("unexpected status {other}"),
        }
    }
    admitted
}

/// Sets org `acme`'s per-minute limits (`{"tokens_per_minute": …}` / `{"requests_per_minute": …}`), waits
/// until every running node has them, and then until the current minute has at least 10 s left, so the
/// window does not reset under the test.
pub async fn set_org_rate_limits(cluster: &TestCluster, limits: Value) {
    let mut body = json!({"scope": {"org": "acme"}});
    if let (Some(body), Some(limits)) = (body.as_object_mut(), limits.as_object()) {
        body.extend(limits.clone());
    }
    let (status, out) = cluster.admin(cluster.node(1), Method::PUT, "/admin/v1/budgets", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    for node in cluster.running() {
        eventually_async("budget loaded", || async { !node.gateway.snapshot().budgets.is_empty() }).await;
    }
    let now = tollgate::clock::ledger_ms();
    if now % 60_000 > 50_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - now % 60_000 + 100)).await;
    }
}
