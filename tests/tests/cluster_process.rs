//! Three real `tollgate serve` processes on loopback, driven with the real CLI: status, apply, keys,
//! `kill -9` of the leader and a restart from disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::cluster_process::*;
use tollgate_tests::process::*;
use tollgate_tests::*;

/// Sends `body` to node `index` with the test key until it answers 200 (10 s), e.g. until a route or key
/// written elsewhere has reached it.
async fn until_served(cluster: &ProcessCluster, index: usize, key: &str, body: &Value) -> reqwest::Response {
    let url = cluster.procs[index].api_url("/v1/chat/completions");
    wait_for(&format!("{url} to serve {body}"), Duration::from_secs(10), || async {
        let response = cluster.client.post(&url).bearer_auth(key).json(body).send().await.ok()?;
        (response.status() == 200).then_some(response)
    })
    .await
}

#[tokio::test]
async fn three_processes_form_a_cluster_and_survive_kill_9_of_the_leader() {
    let mock = MockUpstream::start().await;
    let mut cluster = ProcessCluster::start(&mock, "").await;
    // The CLI sees three members and one leader.
    let status = cluster.cli_json(1, &["status"]);
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    let (ok, table) = cluster.cli(2, &["status"]);
    assert!(ok && table.contains("leader") && table.contains("follower"), "{table}");

    // apply -f through a follower, then a key from the CLI; both work on every node.
    let file = cluster.dir.path().join("cluster.toml");
    let applied = "[[models]]\nname = \"applied\"\ntargets = [{ provider = \"up-openai\", model = \"mock-gpt\" }]\n";
    std::fs::write(&file, format!("{}\n{applied}", config_toml(&mock, ""))).unwrap();
    let (ok, out) = cluster.cli(1, &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok && out.contains("put model applied"), "{out}");
    let (ok, out) = cluster.cli(0, &["budgets", "set", "--org", "acme", "--limit-tokens", "100000", "--period", "day"]);
    assert!(ok, "{out}");
    let budget = cluster.cli_json(2, &["budgets", "get", "--org", "acme"]);
    assert_eq!(budget["limit_tokens"], 100000, "{budget}");
    let created = cluster.cli_json(2, &["keys", "create", "--org", "acme", "--name", "proc"]);
    let key = created["key"].as_str().unwrap().to_owned();
    for index in 0..3 {
        until_served(&cluster, index, &key, &chat_body("applied", "hi")).await;
    }

    // kill -9 the leader: a new one is elected and writes continue.
    let leader = cluster.leader().expect("a leader");
    cluster.kill9(leader);
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let (ok, out) = cluster.cli(survivor, &["orgs", "put", "after-kill"]);
    assert!(ok, "{out}");

    // The killed node restarts from its data and catches up.
    cluster.restart(leader).await;
    let caught_up = || async {
        let orgs = cluster.cli_json(leader, &["orgs", "list"]);
        orgs["data"].as_array().unwrap().iter().any(|o| o["name"] == "after-kill").then_some(())
    };
    wait_for("the restarted node to list the org written while it was down", Duration::from_secs(15), caught_up).await;
    cluster.stop_all().await;
}

/// S1 with a node killed (-9) in the middle of streams it was serving: its unreported use and unused
/// allowance stay counted as spent, so the other nodes can never push total service past the limit.
#[tokio::test]
async fn budget_holds_when_a_node_is_killed_mid_stream() {
    let mock = MockUpstream::start().await;
    let mut cluster = ProcessCluster::start(&mock, "").await;
    let limit: u64 = 5_000;
    let (ok, out) = cluster.cli(0, &["budgets", "set", "--org", "acme", "--limit-tokens", &limit.to_string()]);
    assert!(ok, "{out}");
    // A node enforces a budget from the moment its data plane has it: budgeted answers carry its limit.
    let small = json!({"model": "gpt-direct", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for index in 0..3 {
        let url = cluster.procs[index].api_url("/v1/chat/completions");
        wait_for(&format!("node {} to enforce the budget", index + 1), Duration::from_secs(10), || async {
            let response = cluster.client.post(&url).bearer_auth(KEY).json(&small).send().await.ok()?;
            let limit_header = response.headers().get("x-ratelimit-limit-tokens")?.to_str().ok()?.to_owned();
            (limit_header == limit.to_string()).then_some(())
        })
        .await;
    }
    // Slow streams on node 3 (12 events 200 ms apart), killed once each has started.
    mock.set_default(Script { delay_between_events: Some(Duration::from_millis(200)), ..Default::default() });
    let body = json!({"model": "gpt-direct", "stream": true, "max_tokens": 20, "messages": [{"role": "user", "content": "stream slowly"}]});
    let (started_tx, mut started_rx) = tokio::sync::mpsc::channel(4);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let request =
            cluster.client.post(cluster.procs[2].api_url("/v1/chat/completions")).bearer_auth(KEY).json(&body);
        let started = started_tx.clone();
        streams.push(tokio::spawn(async move {
            let mut response = request.send().await.expect("the stream is accepted");
            assert_eq!(response.status(), 200);
            let mut received = String::new();
            let mut told = false;
            // Read until the connection ends (cleanly or not); report the first event as it arrives.
            while let Ok(Some(chunk)) = response.chunk().await {
                received.push_str(&String::from_utf8_lossy(&chunk));
                if !told && received.contains("\n\n") {
                    told = true;
                    let _ = started.send(()).await;
                }
            }
            received
        }));
    }
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(20), started_rx.recv())
            .await
            .expect("all four streams sent their first event within 20 s");
    }
    cluster.kill9(2);
    for stream in streams {
        let received = stream.await.unwrap();
        assert!(received.contains("chat.completion.chunk"), "the stream had started: {received:?}");
        assert!(!received.contains("[DONE]"), "the stream was still in flight at kill -9: {received:?}");
    }
    // Spend the rest through the survivors until they refuse.
    mock.set_default(Script::default());
    let more = json!({"model": "gpt-direct", "max_tokens": 20, "messages": [{"role": "user", "content": "more"}]});
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused < 4 {
        assert!(Instant::now() < deadline, "the budget never ran out on the survivors");
        let url = cluster.procs[refused % 2].api_url("/v1/chat/completions");
        match post_json(&cluster.client, &url, KEY, &more).await {
            (200, _) => {}
            (429 | 503, _) => refused += 1,
            (other, error) => panic!("unexpected status {other}: {error}"),
        }
    }
    let served = mock.input_tokens_served() + mock.output_tokens_served();
    assert!(served <= limit, "S1 violated after kill -9: served {served} > limit {limit}");
    let budget = cluster.cli_json(0, &["budgets", "get", "--org", "acme"]);
    let (used, held) = (budget["used"].as_u64().unwrap(), budget["held"].as_u64().unwrap());
    assert!(used + held <= limit, "S2 violated: {budget}");
    // S3 (issue 18, finding 6): the killed process never reported what the upstream served its streams.
    // Restarted, the node bills what its previous life still held, so the bill covers what was served.
    cluster.restart(2).await;
    let served = mock.input_tokens_served() + mock.output_tokens_served();
    let billed = wait_for("the bill to cover what was served (S3)", Duration::from_secs(30), || async {
        let budget = cluster.admin_json(0, "/admin/v1/budgets?org=acme").await;
        let used = budget["used"].as_u64()?;
        (used >= served).then_some(budget)
    })
    .await;
    assert!(billed["used"].as_u64().unwrap() <= limit, "billed within the limit: {billed}");
    cluster.stop_all().await;
}

/// Waits until every node of `cluster` has a gossip view for which `holds` is true (10 s each).
async fn until_gossip(cluster: &ProcessCluster, what: &str, holds: impl Fn(&Value) -> bool) {
    for index in 0..cluster.procs.len() {
        wait_for(&format!("node {}: {what}", index + 1), Duration::from_secs(10), || async {
            let view = cluster.admin_json(index, "/admin/v1/cluster/gossip").await;
            holds(&view).then_some(())
        })
        .await;
    }
}

fn live_members(view: &Value, trusted_only: bool) -> usize {
    view["view"]["members"].as_array().map_or(0, |members| {
        members.iter().filter(|m| m["alive"] == true && (!trusted_only || m["trusted"] == true)).count()
    })
}

/// Issue 13, as a new user meets it: three processes configured as the README shows (no gossip flags).
/// They gossip: three live, trusted members within seconds. An endpoint whose breaker opens on one node is
/// avoided by the other two before they send it anything. A canary answering 500 behind a breaker is
/// rolled back to weight 0 on every node within 5 s of the breaker opening, though `min_requests` (50) is
/// far from reached.
#[tokio::test]
async fn cluster_members_gossip_by_default_and_a_failing_canary_is_rolled_back() {
    let mock = MockUpstream::start().await;
    let broken = MockUpstream::start().await;
    broken.set_default(Script { status: Some(500), ..Default::default() });
    let extra = format!(
        r#"
[[providers]]
name = "gpu-next"
kind = "openai"
base_url = "{}"

[[models]]
name = "llama"
strategy = "weighted"
canary = {{ target = "gpu-next", max_error_rate_delta = 0.05, window_secs = 60, min_requests = 50 }}
targets = [ {{ provider = "up-openai", model = "stable", weight = 50 }}, {{ provider = "gpu-next", model = "next", weight = 50 }} ]
"#,
        broken.openai_base_url()
    );
    let mut cluster = ProcessCluster::start(&mock, &extra).await;
    until_gossip(&cluster, "three live, trusted gossip members", |view| {
        view["enabled"] == true && live_members(view, true) == 3 && view["unreachable_members"] == json!([])
    })
    .await;
    // Node 1 alone sends the canary requests until its breaker opens (5 failures); clients see only 200s.
    let llama = chat_body("llama", "hi");
    let deadline = Instant::now() + Duration::from_secs(20);
    while broken.request_count() < 5 {
        let (status, out) =
            post_json(&cluster.client, &cluster.procs[0].api_url("/v1/chat/completions"), KEY, &llama).await;
        assert_eq!(status, 200, "{out}");
        assert!(Instant::now() < deadline, "the canary got no traffic");
    }
    let opened = Instant::now();
    assert_eq!(broken.request_count(), 5);
    // Every node ends with the canary at weight 0 (replicated through Raft), within 5 s.
    for index in 0..3 {
        loop {
            let model = cluster.admin_json(index, "/admin/v1/models/llama").await;
            if model["targets"][1]["weight"] == 0 {
                assert_eq!(model["targets"][0]["weight"], 50, "{model}");
                break;
            }
            assert!(
                opened.elapsed() < Duration::from_secs(5),
                "node {}: still routed to the canary: {model}",
                index + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("canary at weight 0 everywhere {:?} after its breaker opened", opened.elapsed());
    // Nodes 2 and 3 knew the endpoint was down from gossip: they never sent it a request.
    for index in 1..3 {
        // Gossip carries node 1's open breaker on its own clock (a few intervals; longer on a loaded
        // machine), independently of the Raft write that set the weight: wait for it, with a deadline.
        wait_for("gossip to show node 1's open breaker", Duration::from_secs(15), || {
            let cluster = &cluster;
            async move {
                let view = cluster.admin_json(index, "/admin/v1/cluster/gossip").await;
                (view["local"]["gpu-next"]["open_on_a_peer"] == true).then_some(())
            }
        })
        .await;
        for _ in 0..5 {
            let url = cluster.procs[index].api_url("/v1/chat/completions");
            assert_eq!(post_json(&cluster.client, &url, KEY, &llama).await.0, 200);
        }
    }
    assert_eq!(broken.request_count(), 5, "only node 1's five requests ever reached the broken canary");
    let audit = cluster.admin_json(0, "/admin/v1/audit").await;
    assert!(audit.to_string().contains("(breaker_open)"), "{audit}");
    cluster.stop_all().await;
}

/// Issue 12.8, black-box: two stranger processes gossip at a cluster. One has a different cluster secret:
/// chitchat drops its messages, it never appears. The other has the right secret (say it leaked) but is
/// not a Raft member: it is listed as untrusted, and the open breaker it reports for an endpoint the
/// cluster uses never makes a member avoid that endpoint.
#[tokio::test]
async fn strangers_cannot_steer_cluster_routing_through_gossip() {
    let mock = MockUpstream::start().await;
    let mut cluster = ProcessCluster::start(&mock, "").await;
    let seed = cluster.admin_json(0, "/admin/v1/cluster/gossip").await["gossip_addr"].as_str().unwrap().to_owned();
    let stranger = |id: u64, secret: &str| {
        let node = NodeSection {
            id: Some(id),
            gossip: Some(true),
            gossip_listen: Some(free_port()),
            gossip_seeds: vec![seed.clone()],
            cluster_secret: Some(secret.into()),
            ..NodeSection::on_free_ports()
        };
        let body = "[[providers]]\nname = \"up-openai\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\n\
                    [[models]]\nname = \"m\"\ntargets = [ { provider = \"up-openai\", model = \"x\" } ]\n\n\
                    [[keys]]\nkey = \"tg-stranger\"\norg = \"evil\"\n";
        let path = cluster.dir.path().join(format!("stranger-{id}.toml"));
        std::fs::write(&path, node.with_body(body)).unwrap();
        (node.api, node.admin, spawn_serve(&path))
    };
    let (leaked_api, leaked_admin, _leaked) = stranger(7, CLUSTER_SECRET);
    let (_, wrong_admin, _wrong) = stranger(8, "some-other-cluster-secret-99");
    for admin in [leaked_admin, wrong_admin] {
        wait_healthy(&cluster.client, &format!("http://127.0.0.1:{admin}/readyz")).await;
    }
    // The leaked-secret stranger trips its breaker on `up-openai` (its copy points nowhere).
    let url = format!("http://127.0.0.1:{leaked_api}/v1/chat/completions");
    for _ in 0..5 {
        assert_eq!(post_json(&cluster.client, &url, "tg-stranger", &chat_body("m", "hi")).await.0, 502);
    }
    // It is in the gossip (it sees the three members) and reports the breaker open.
    wait_for("the stranger to join the gossip with its breaker open", Duration::from_secs(10), || async {
        let view = admin_get(&cluster.client, leaked_admin, "/admin/v1/cluster/gossip").await;
        (live_members(&view, false) == 4 && view["local"]["up-openai"]["report"]["state"] == "open").then_some(())
    })
    .await;
    // Every member sees the stranger, untrusted...
    until_gossip(&cluster, "the stranger listed, untrusted", |view| {
        let members = view["view"]["members"].as_array().cloned().unwrap_or_default();
        members.iter().any(|m| m["node_id"] == "7" && m["trusted"] == false && m["alive"] == true)
    })
    .await;
    // ...and, many gossip rounds after its report went out (proving an absence takes time), avoids nothing.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for index in 0..3 {
        let view = cluster.admin_json(index, "/admin/v1/cluster/gossip").await;
        assert_eq!(view["local"]["up-openai"]["open_on_a_peer"], false, "{view}");
        assert_eq!(view["local"]["up-openai"]["routable"], true, "{view}");
        let members = view["view"]["members"].as_array().unwrap();
        assert!(!members.iter().any(|m| m["node_id"] == "8"), "a node with another secret got in: {view}");
        let response = cluster
            .client
            .post(cluster.procs[index].api_url("/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&chat_body("gpt-direct", "hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-tollgate-target"], "up-openai/mock-gpt");
    }
    cluster.stop_all().await;
}

/// Issue 13.1: gossip is on by default for a cluster member; when it cannot start (its UDP port is taken)
/// the node still serves, and says why in the gossip view (and its log) instead of silently running
/// without the cluster-wide view.
#[tokio::test]
async fn a_member_whose_gossip_port_is_taken_says_so() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let gossip = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let raft = free_port();
    let node = NodeSection {
        id: Some(1),
        raft: Some(raft),
        gossip_listen: Some(gossip),
        data_dir: Some(dir.path().join("n1")),
        cluster_secret: Some(CLUSTER_SECRET.into()),
        peers: vec![(1, raft), (2, free_port())],
        ..NodeSection::on_free_ports()
    };
    let path = dir.path().join("n1.toml");
    std::fs::write(&path, node.render()).unwrap();
    let mut child = spawn_serve(&path);
    let client = reqwest::Client::new();
    wait_healthy(&client, &format!("http://127.0.0.1:{}/healthz", node.admin)).await;
    let view = admin_get(&client, node.admin, "/admin/v1/cluster/gossip").await;
    assert_eq!(view["enabled"], false, "{view}");
    let error = view["error"].as_str().unwrap_or_default();
    assert!(error.contains("node.gossip_listen") && error.contains(&gossip.to_string()), "{view}");
    drop(taken);
    child.signal("TERM");
    assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0), "it shuts down cleanly");
}
