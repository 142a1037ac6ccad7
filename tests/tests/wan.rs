//! Issue 17.2, WAN timing: a three-node cluster whose Raft links cross ~100 ms of round trip (a delaying TCP
//! proxy in front of every Raft port), with the product's default Raft timing. Before the fix every
//! AppendEntries missed its deadline (openraft's = the 100 ms heartbeat) and the cluster never committed
//! its bootstrap; a large apply (one entry of up to 4 MiB through 1 MiB HTTP/2 windows) stalled every
//! write even at 50 ms. Bounds here are generous (seconds, not round trips): the machine may be loaded.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_tests::cluster::{TestCluster, ADMIN_TOKEN};
use tollgate_tests::config_toml;

/// One way, so ~100 ms of round trip between any two nodes.
const ONE_WAY: Duration = Duration::from_millis(50);

/// The replicated sections of the cluster's own config (so an apply keeps its providers and models), plus
/// `orgs` new orgs named `{prefix}-{i}`.
fn apply_file(cluster: &TestCluster, prefix: &str, orgs: usize) -> String {
    let full = config_toml(&cluster.mock, "");
    let start = full.find("[[providers]]").expect("the test config has providers");
    let mut file = full[start..].to_owned();
    for i in 0..orgs {
        file.push_str(&format!("\n[[orgs]]\nname = \"{prefix}-{i:06}-padding-padding-padding-padding\"\n"));
    }
    file
}

/// POSTs an apply to `node`, retried with one `Idempotency-Key` while it answers 503 (no quorum in time:
/// what a client does) for up to a minute. Returns the last status and body.
async fn apply(cluster: &TestCluster, node: u64, file: &str, idempotency_key: &str) -> (u16, Value) {
    let url = format!("{}/admin/v1/apply", cluster.node(node).admin_url());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = cluster
            .client
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", idempotency_key)
            .body(file.to_owned())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("admin apply");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != 503 || Instant::now() > deadline {
            return (status, body);
        }
    }
}

/// Polls a linearizable GET on every node until it answers 200 (30 s bound).
async fn visible_everywhere(cluster: &TestCluster, path: &str) {
    for node in cluster.running() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match cluster.admin_get(node, path).await {
                Ok(_) => break,
                Err(err) => assert!(Instant::now() < deadline, "{path} not readable on {}: {err}", node.admin_url()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_100ms_rtt_the_defaults_commit_writes_a_large_apply_and_answer_reads() {
    // Ready means a linearizable read has passed on every node: it waited for this in vain before the fix.
    let cluster = TestCluster::start_wan(3, ONE_WAY).await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");

    // A config write through a follower (forwarded to the leader), read back on every node.
    let (status, body) =
        cluster.admin(cluster.node(follower), Method::PUT, "/admin/v1/orgs/wan-small", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    visible_everywhere(&cluster, "/admin/v1/orgs/wan-small").await;

    // A large apply under the entry limit (512 KiB of commands; 4,500 orgs ≈ 440 KB) commits through a
    // follower and reaches every node.
    let (status, body) = apply(&cluster, follower, &apply_file(&cluster, "wan-bulk", 4_500), "wan-bulk-1").await;
    let done = body["result"] == "applied" || body["result"] == "unchanged";
    assert!(status == 200 && done, "{status}: {body}");
    visible_everywhere(&cluster, "/admin/v1/orgs/wan-bulk-004499-padding-padding-padding-padding").await;

    // Above the limit: refused at once with 413 naming the limit, nothing proposed.
    let (status, body) = apply(&cluster, follower, &apply_file(&cluster, "wan-huge", 6_000), "wan-huge-1").await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["type"], "request_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("524288 bytes") && message.contains("per entry"), "{message}");

    // The cluster still takes writes and answers linearizable reads on every node.
    let (status, body) =
        cluster.admin(cluster.node(leader), Method::PUT, "/admin/v1/orgs/wan-after", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    visible_everywhere(&cluster, "/admin/v1/orgs/wan-after").await;
    for node in cluster.running() {
        let list = cluster.admin_get(node, "/admin/v1/orgs").await.expect("linearizable list");
        let orgs = list["data"].as_array().map_or(0, Vec::len);
        assert!(orgs >= 4_502, "{} lists {orgs} orgs", node.admin_url());
    }
}
