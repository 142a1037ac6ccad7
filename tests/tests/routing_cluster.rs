//! Routing across a three-node cluster (Raft + gossip over real UDP on loopback): an endpoint one node
//! finds dead is avoided by the others within about two seconds, and a canary that breaks its SLO is
//! rolled back to weight 0 through Raft on every node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::cluster::{TestCluster, ADMIN_TOKEN};
use tollgate_tests::*;

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

async fn send(cluster: &TestCluster, node: u64, model: &str) -> (u16, String) {
    let response = cluster
        .client
        .post(format!("{}/v1/chat/completions", cluster.node(node).api_url()))
        .bearer_auth(KEY)
        .json(&chat(model))
        .send()
        .await
        .unwrap();
    let target = response.headers().get("x-tollgate-target").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), target.unwrap_or_default())
}

async fn gossip(cluster: &TestCluster, node: u64) -> Value {
    cluster
        .client
        .get(format!("{}/admin/v1/cluster/gossip", cluster.node(node).admin_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_one_node_finds_dead_is_avoided_by_all_nodes() {
    let flaky = MockUpstream::start().await;
    flaky.set_default(Script { status: Some(503), ..Default::default() });
    let extra = format!(
        r#"
[[providers]]
name = "flaky"
kind = "openai"
base_url = "{}"

[[models]]
name = "ha"
targets = [ {{ provider = "flaky", model = "f", priority = 0 }}, {{ provider = "up-openai", model = "mock-gpt", priority = 1 }} ]
"#,
        flaky.openai_base_url()
    );
    let cluster = TestCluster::start_full(3, "", MockUpstream::start().await, &extra).await;
    // Everyone is in the gossip before the failure starts.
    for node in 1..=3 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while gossip(&cluster, node).await["view"]["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["alive"] == true).count())
            < 3
        {
            assert!(Instant::now() < deadline, "node {node} never saw three live members");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Node 1 alone observes the failures (the default breaker opens after 5 in a row); clients never notice.
    for _ in 0..5 {
        assert_eq!(send(&cluster, 1, "ha").await, (200, "up-openai/mock-gpt".to_owned()));
    }
    assert_eq!(flaky.request_count(), 5);
    let opened = Instant::now();
    let mut spread = Duration::ZERO;
    for node in [2, 3] {
        loop {
            if gossip(&cluster, node).await["local"]["flaky"]["open_on_a_peer"] == true {
                break;
            }
            // About two seconds on an idle machine (the spread is printed); the bound is wide for a loaded one.
            assert!(
                opened.elapsed() < Duration::from_secs(10),
                "node {node} did not learn of the dead endpoint within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        spread = spread.max(opened.elapsed());
    }
    eprintln!("nodes 2 and 3 avoided the dead endpoint {spread:?} after node 1's breaker opened");
    for node in [2, 3] {
        for _ in 0..5 {
            assert_eq!(send(&cluster, node, "ha").await, (200, "up-openai/mock-gpt".to_owned()));
        }
    }
    assert_eq!(flaky.request_count(), 5, "nodes 2 and 3 never sent the dead endpoint a request");
    let view = gossip(&cluster, 2).await;
    assert_eq!(view["view"]["endpoints"]["flaky"]["reports"]["1"]["state"], "open", "{view}");

    // The gossip series on node 2's `/metrics`, parsed, say what its admin view says.
    let text = cluster.client.get(format!("{}/metrics", cluster.node(2).admin_url())).send().await.unwrap();
    let metrics = parse_metrics(&text.text().await.unwrap());
    let value = |name: &str, labels: &[(&str, &str)]| sample(&metrics, name, labels);
    assert_eq!(value("tollgate_gossip_live_members", &[]), Some(3.0));
    assert_eq!(value("tollgate_gossip_members", &[("alive", "true"), ("trusted", "true")]), Some(3.0));
    let reports = view["view"]["endpoints"]["flaky"]["reports"].as_object().unwrap().len() as f64;
    assert_eq!(value("tollgate_gossip_endpoint_reports", &[("endpoint", "flaky"), ("kind", "health")]), Some(reports));
    assert_eq!(value("tollgate_endpoint_open_on_peer", &[("endpoint", "flaky")]), Some(1.0));
    assert_eq!(value("tollgate_endpoint_breaker_state", &[("endpoint", "flaky"), ("state", "closed")]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_breaks_its_slo_is_rolled_back_on_every_node() {
    let canary = MockUpstream::start().await;
    canary.set_default(Script { status: Some(500), ..Default::default() });
    let extra = format!(
        r#"
[[providers]]
name = "canary-pool"
kind = "openai"
base_url = "{}"

[[models]]
name = "rollout"
strategy = "weighted"
canary = {{ target = "canary-pool", max_error_rate_delta = 0.05, window_secs = 30, min_requests = 5 }}
targets = [ {{ provider = "up-openai", model = "stable", weight = 50 }}, {{ provider = "canary-pool", model = "next", weight = 50 }} ]
"#,
        canary.openai_base_url()
    );
    let cluster = TestCluster::start_full(3, "", MockUpstream::start().await, &extra).await;
    // Failed canary attempts fall back to the stable target: clients see only 200s.
    for _ in 0..40 {
        assert_eq!(send(&cluster, 2, "rollout").await.0, 200);
    }
    assert!(canary.request_count() >= 5, "the canary got traffic: {}", canary.request_count());

    let deadline = Instant::now() + Duration::from_secs(10);
    for node in 1..=3 {
        loop {
            let model = cluster.admin_get(cluster.node(node), "/admin/v1/models/rollout").await.unwrap_or(Value::Null);
            if model["targets"][1]["weight"] == 0 {
                assert_eq!(model["targets"][0]["weight"], 50, "the stable target keeps its weight");
                break;
            }
            assert!(Instant::now() < deadline, "node {node} never saw the rollback: {model}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Node 2 saw the errors; its breaker opened with the fifth, and the other nodes learned that through
    // gossip. Any of them may judge first: by the error rate (node 2) or the open breaker (any node).
    let audit = cluster.admin_get(cluster.node(1), "/admin/v1/audit").await.unwrap().to_string();
    let rollback = audit.find("canary-rollback node-").map(|at| &audit[at..at + 40]);
    assert!(
        rollback.is_some_and(|r| r.contains("(error_rate)") || r.contains("(breaker_open)")),
        "audit names the rollback: {audit}"
    );
    let mut rollbacks = 0.0;
    for node in 1..=3 {
        let metrics = cluster
            .client
            .get(format!("{}/metrics", cluster.node(node).admin_url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for reason in ["error_rate", "breaker_open"] {
            let reason = format!("reason=\"{reason}\"");
            rollbacks += metric_value(&metrics, "tollgate_canary_rollbacks_total", &["route=\"rollout\"", &reason])
                .unwrap_or(0.0);
        }
    }
    assert!(rollbacks >= 1.0, "no node counted the rollback");
    // After the rollback the canary gets nothing, from any node.
    let before = canary.request_count();
    for node in 1..=3 {
        for _ in 0..10 {
            assert_eq!(send(&cluster, node, "rollout").await, (200, "up-openai/stable".to_owned()));
        }
    }
    assert_eq!(canary.request_count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_load_counts_requests_other_nodes_have_outstanding() {
    let busy = MockUpstream::start().await;
    let idle = MockUpstream::start().await;
    let extra = format!(
        r#"
[[providers]]
name = "busy"
kind = "openai"
base_url = "{}"

[[providers]]
name = "idle"
kind = "openai"
base_url = "{}"

[[models]]
name = "pool"
strategy = "least_load"
targets = [ {{ provider = "busy", model = "m" }}, {{ provider = "idle", model = "m" }} ]

[[models]]
name = "busy-only"
targets = [ {{ provider = "busy", model = "m" }} ]
"#,
        busy.openai_base_url(),
        idle.openai_base_url()
    );
    // A generous first-byte timeout: the held requests wait for the test, not for a clock.
    let cluster = TestCluster::start_full_tweaked(3, MockUpstream::start().await, &extra, |config| {
        config.limits.first_byte_timeout_ms = 60_000;
    })
    .await;
    let cluster = std::sync::Arc::new(cluster);
    // Node 2 holds six requests open at `busy` until the test releases them; node 1 has none.
    busy.set_default(Script { hold: true, ..Default::default() });
    let mut held = Vec::new();
    for _ in 0..6 {
        let cluster = cluster.clone();
        held.push(tokio::spawn(async move { send(&cluster, 2, "busy-only").await }));
    }
    eventually("six requests held at the busy upstream", || busy.held() == 6).await;
    wait_for("node 1 to learn of node 2's six outstanding requests", Duration::from_secs(15), || async {
        let view = gossip(&cluster, 1).await;
        (view["local"]["busy"]["outstanding_cluster_wide"].as_f64() == Some(6.0)).then_some(())
    })
    .await;
    for _ in 0..10 {
        assert_eq!(send(&cluster, 1, "pool").await, (200, "idle/m".to_owned()));
    }
    busy.release_held();
    for request in held {
        assert_eq!(request.await.unwrap().0, 200);
    }
}
