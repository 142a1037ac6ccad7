//! Three real `tollgate serve` processes on loopback, driven with the real CLI: status, apply, keys,
//! `kill -9` of the leader and a restart from disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::process::*;
use tollgate_tests::*;

const TOKEN: &str = "tga-process-test";

struct Proc {
    api: u16,
    admin: u16,
    config: std::path::PathBuf,
    child: Option<ChildGuard>,
}

fn spawn(config: &std::path::Path) -> ChildGuard {
    ChildGuard::spawn(
        Command::new(tollgate_binary())
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null()),
    )
}

fn cli(admin: u16, args: &[&str]) -> (bool, String) {
    let output = Command::new(tollgate_binary())
        .args(args)
        .args(["--admin", &format!("http://127.0.0.1:{admin}"), "--token", TOKEN])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

fn cli_json(admin: u16, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, text) = cli(admin, &all);
    assert!(ok, "{args:?}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn leader_of(procs: &[Proc]) -> Option<usize> {
    for proc in procs.iter().filter(|p| p.child.is_some()) {
        let (ok, text) = cli(proc.admin, &["status", "--json"]);
        if ok {
            if let Some(leader) = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["leader"].as_u64()) {
                if procs[(leader - 1) as usize].child.is_some() {
                    return Some((leader - 1) as usize);
                }
            }
        }
    }
    None
}

/// Starts three `tollgate serve` processes in front of `mock` (with `extra` appended to the harness's
/// providers and models); waits until all are ready. Configured as the README shows a cluster: `id`,
/// listeners, `peers`, `gossip_listen`, the cluster secret and admin token, and no gossip flags (cluster
/// members gossip by default; each node's gossip port is its Raft port + 1, so the seeds follow from `peers`).
async fn start_processes_with(mock: &MockUpstream, dir: &tempfile::TempDir, extra: &str) -> Vec<Proc> {
    let raft_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let peers = raft_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} = \"127.0.0.1:{p}\"", i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let secret_file = dir.path().join("cluster-secret");
    std::fs::write(&secret_file, "process-test-cluster-secret-42\n").unwrap();
    let mut procs = Vec::new();
    for (index, raft) in raft_ports.iter().enumerate() {
        let (api, admin) = (free_port(), free_port());
        let base = config_toml(mock, extra);
        // Replace the harness's [node] section with this process's.
        let rest = base.split_once("[limits]").map(|(_, rest)| rest).unwrap();
        let text = format!(
            "[node]\nid = {id}\nlisten = \"127.0.0.1:{api}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nraft_listen = \"127.0.0.1:{raft}\"\n\
             gossip_listen = \"127.0.0.1:{gossip}\"\n\
             data_dir = \"{data}\"\nadmin_token = \"{TOKEN}\"\ncluster_secret_file = \"{secret}\"\nheartbeat_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n\
             write_timeout_ms = 3000\npeers = {{ {peers} }}\n\n[limits]{rest}",
            id = index + 1,
            gossip = raft + 1,
            data = dir.path().join(format!("n{}", index + 1)).display(),
            secret = secret_file.display(),
        );
        let config = dir.path().join(format!("n{}.toml", index + 1));
        std::fs::write(&config, text).unwrap();
        procs.push(Proc { api, admin, child: Some(spawn(&config)), config });
    }
    let client = reqwest::Client::new();
    for proc in &procs {
        wait_healthy(&client, &format!("http://127.0.0.1:{}/readyz", proc.admin)).await;
    }

    procs
}

async fn start_processes(mock: &MockUpstream, dir: &tempfile::TempDir) -> Vec<Proc> {
    start_processes_with(mock, dir, "").await
}

/// SIGTERM to every running process, then each must exit cleanly (status 0) within 10 s.
async fn stop_all(procs: &mut [Proc]) {
    for proc in procs.iter() {
        if let Some(child) = proc.child.as_ref() {
            child.signal("TERM");
        }
    }
    for proc in procs.iter_mut() {
        if let Some(mut child) = proc.child.take() {
            assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0));
        }
    }
}

/// `GET` on a node's admin listener with the admin token; `Null` when the answer is not JSON.
async fn admin_json(client: &reqwest::Client, admin: u16, path: &str) -> Value {
    let response = client.get(format!("http://127.0.0.1:{admin}{path}")).bearer_auth(TOKEN).send().await.unwrap();
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn three_processes_form_a_cluster_and_survive_kill_9_of_the_leader() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = start_processes(&mock, &dir).await;
    let client = reqwest::Client::new();
    // The CLI sees three members and one leader.
    let status = cli_json(procs[1].admin, &["status"]);
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    let (ok, table) = cli(procs[2].admin, &["status"]);
    assert!(ok && table.contains("leader") && table.contains("follower"), "{table}");

    // apply -f through a follower, then a key from the CLI; both work on every node.
    let file = dir.path().join("cluster.toml");
    std::fs::write(
        &file,
        format!(
            "{}\n[[models]]\nname = \"applied\"\ntargets = [{{ provider = \"up-openai\", model = \"mock-gpt\" }}]\n",
            config_toml(&mock, "")
        ),
    )
    .unwrap();
    let (ok, out) = cli(procs[1].admin, &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok && out.contains("put model applied"), "{out}");
    let (ok, out) =
        cli(procs[0].admin, &["budgets", "set", "--org", "acme", "--limit-tokens", "100000", "--period", "day"]);
    assert!(ok, "{out}");
    let budget = cli_json(procs[2].admin, &["budgets", "get", "--org", "acme"]);
    assert_eq!(budget["limit_tokens"], 100000, "{budget}");
    let created = cli_json(procs[2].admin, &["keys", "create", "--org", "acme", "--name", "proc"]);
    let key = created["key"].as_str().unwrap().to_owned();
    for proc in &procs {
        let url = format!("http://127.0.0.1:{}/v1/chat/completions", proc.api);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = client
                .post(&url)
                .bearer_auth(&key)
                .json(&json!({"model": "applied", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status();
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "route and key never reached port {}", proc.api);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // kill -9 the leader: a new one is elected and writes continue.
    let leader = leader_of(&procs).await.expect("a leader");
    procs[leader].child.as_ref().unwrap().signal("KILL");
    procs[leader].child.take();
    let started = Instant::now();
    let new_leader = loop {
        if let Some(new) = leader_of(&procs).await {
            break new;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no new leader after kill -9");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(new_leader, leader);
    let survivor = (0..3).find(|i| *i != leader).unwrap();
    let (ok, out) = cli(procs[survivor].admin, &["orgs", "put", "after-kill"]);
    assert!(ok, "{out}");

    // The killed node restarts from its data and catches up.
    procs[leader].child = Some(spawn(&procs[leader].config.clone()));
    wait_healthy(&client, &format!("http://127.0.0.1:{}/readyz", procs[leader].admin)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let orgs = cli_json(procs[leader].admin, &["orgs", "list"]);
        if orgs["data"].as_array().unwrap().iter().any(|o| o["name"] == "after-kill") {
            break;
        }
        assert!(Instant::now() < deadline, "restarted node never caught up: {orgs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_all(&mut procs).await;
}

/// S1 with a node killed (-9) in the middle of streams it was serving: its unreported use and unused
/// allowance stay counted as spent, so the other nodes can never push total service past the limit.
#[tokio::test]
async fn budget_holds_when_a_node_is_killed_mid_stream() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = start_processes(&mock, &dir).await;
    let limit: u64 = 5_000;
    let (ok, out) = cli(procs[0].admin, &["budgets", "set", "--org", "acme", "--limit-tokens", &limit.to_string()]);
    assert!(ok, "{out}");
    // A node enforces a budget from the moment it applies it: wait until every node has (a linearizable
    // read through each node waits for its own apply), plus the data plane's reload right after.
    for proc in &procs {
        let budget = cli_json(proc.admin, &["budgets", "get", "--org", "acme"]);
        assert_eq!(budget["limit_tokens"], limit, "{budget}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    // Slow streams on node 3, killed while they are in flight.
    mock.set_default(Script { delay_between_events: Some(Duration::from_millis(50)), ..Default::default() });
    let body = json!({"model": "gpt-direct", "stream": true, "max_tokens": 20, "messages": [{"role": "user", "content": "stream slowly"}]});
    let mut streams = Vec::new();
    for _ in 0..4 {
        let url = format!("http://127.0.0.1:{}/v1/chat/completions", procs[2].api);
        let request = client.post(url).bearer_auth(KEY).json(&body);
        streams.push(tokio::spawn(async move {
            if let Ok(mut response) = request.send().await {
                while let Ok(Some(_)) = response.chunk().await {}
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    procs[2].child.as_ref().unwrap().signal("KILL");
    procs[2].child.take();
    for stream in streams {
        let _ = stream.await;
    }
    // Spend the rest through the survivors until they refuse.
    mock.set_default(Script::default());
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused < 4 {
        assert!(Instant::now() < deadline, "budget never ran out");
        let proc = &procs[refused % 2];
        let status = client
            .post(format!("http://127.0.0.1:{}/v1/chat/completions", proc.api))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-direct", "max_tokens": 20, "messages": [{"role": "user", "content": "more"}]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        match status {
            200 => {}
            429 | 503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    let served = mock.input_tokens_served() + mock.output_tokens_served();
    assert!(served <= limit, "S1 violated after kill -9: served {served} > limit {limit}");
    let budget = cli_json(procs[0].admin, &["budgets", "get", "--org", "acme"]);
    let (used, held) = (budget["used"].as_u64().unwrap(), budget["held"].as_u64().unwrap());
    assert!(used + held <= limit, "S2 violated: {budget}");
    for proc in &mut procs {
        if let Some(child) = proc.child.as_ref() {
            child.signal("TERM");
        }
    }
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
    let dir = tempfile::tempdir().unwrap();
    let mut procs = start_processes_with(&mock, &dir, &extra).await;
    let client = reqwest::Client::new();
    for proc in &procs {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let view = admin_json(&client, proc.admin, "/admin/v1/cluster/gossip").await;
            let trusted_live = view["view"]["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["alive"] == true && m["trusted"] == true).count());
            if view["enabled"] == true && trusted_live == 3 && view["unreachable_members"] == json!([]) {
                break;
            }
            assert!(Instant::now() < deadline, "port {}: no three-member gossip: {view}", proc.admin);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Node 1 alone sends the canary requests until its breaker opens (5 failures); clients see only 200s.
    let chat = |api: u16| {
        client
            .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while broken.request_count() < 5 {
        assert_eq!(chat(procs[0].api).await.unwrap().status(), 200);
        assert!(Instant::now() < deadline, "the canary got no traffic");
    }
    let opened = Instant::now();
    assert_eq!(broken.request_count(), 5);
    // Every node ends with the canary at weight 0 (replicated through Raft), within 5 s.
    for proc in &procs {
        loop {
            let model = admin_json(&client, proc.admin, "/admin/v1/models/llama").await;
            if model["targets"][1]["weight"] == 0 {
                assert_eq!(model["targets"][0]["weight"], 50, "{model}");
                break;
            }
            assert!(
                opened.elapsed() < Duration::from_secs(5),
                "port {}: still routed to the canary: {model}",
                proc.admin
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("canary at weight 0 everywhere {:?} after its breaker opened", opened.elapsed());
    // Nodes 2 and 3 knew the endpoint was down from gossip: they never sent it a request.
    for proc in &procs[1..] {
        // Gossip carries node 1's open breaker on its own clock (a few intervals; longer on a loaded
        // machine), independently of the Raft write that set the weight: wait for it, with a deadline.
        let waiting = std::time::Instant::now();
        loop {
            let view = admin_json(&client, proc.admin, "/admin/v1/cluster/gossip").await;
            if view["local"]["gpu-next"]["open_on_a_peer"] == true {
                break;
            }
            assert!(
                waiting.elapsed() < Duration::from_secs(15),
                "port {}: gossip never showed the open breaker: {view}",
                proc.admin
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..5 {
            assert_eq!(chat(proc.api).await.unwrap().status(), 200);
        }
    }
    assert_eq!(broken.request_count(), 5, "only node 1's five requests ever reached the broken canary");
    let audit = admin_json(&client, procs[0].admin, "/admin/v1/audit").await;
    assert!(audit.to_string().contains("(breaker_open)"), "{audit}");
    stop_all(&mut procs).await;
}

/// Issue 12.8, black-box: two stranger processes gossip at a cluster. One has a different cluster secret:
/// chitchat drops its messages, it never appears. The other has the right secret (say it leaked) but is
/// not a Raft member: it is listed as untrusted, and the open breaker it reports for an endpoint the
/// cluster uses never makes a member avoid that endpoint.
#[tokio::test]
async fn strangers_cannot_steer_cluster_routing_through_gossip() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut procs = start_processes(&mock, &dir).await;
    let client = reqwest::Client::new();
    let seed = admin_json(&client, procs[0].admin, "/admin/v1/cluster/gossip").await["gossip_addr"]
        .as_str()
        .unwrap()
        .to_owned();
    let stranger = |id: u64, secret: &str| {
        let (api, admin, gossip) = (free_port(), free_port(), free_port());
        let text = format!(
            "[node]\nid = {id}\nlisten = \"127.0.0.1:{api}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             gossip = true\ngossip_listen = \"127.0.0.1:{gossip}\"\ngossip_seeds = [\"{seed}\"]\n\
             cluster_secret = \"{secret}\"\nadmin_token = \"{TOKEN}\"\n\n\
             [[providers]]\nname = \"up-openai\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\n\
             [[models]]\nname = \"m\"\ntargets = [ {{ provider = \"up-openai\", model = \"x\" }} ]\n\n\
             [[keys]]\nkey = \"tg-stranger\"\norg = \"evil\"\n"
        );
        let path = dir.path().join(format!("stranger-{id}.toml"));
        std::fs::write(&path, text).unwrap();
        (api, admin, spawn(&path))
    };
    let (leaked_api, leaked_admin, _leaked) = stranger(7, "process-test-cluster-secret-42");
    let (_, wrong_admin, _wrong) = stranger(8, "some-other-cluster-secret-99");
    for admin in [leaked_admin, wrong_admin] {
        wait_healthy(&client, &format!("http://127.0.0.1:{admin}/readyz")).await;
    }
    // The leaked-secret stranger trips its breaker on `up-openai` (its copy points nowhere).
    for _ in 0..5 {
        let response = client
            .post(format!("http://127.0.0.1:{leaked_api}/v1/chat/completions"))
            .bearer_auth("tg-stranger")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 502);
    }
    // It is in the gossip (it sees the three members) and reports the breaker open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = admin_json(&client, leaked_admin, "/admin/v1/cluster/gossip").await;
        let live = view["view"]["members"].as_array().map_or(0, |m| m.iter().filter(|m| m["alive"] == true).count());
        if live == 4 && view["local"]["up-openai"]["report"]["state"] == "open" {
            break;
        }
        assert!(Instant::now() < deadline, "the stranger never joined the gossip: {view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Many gossip rounds later, no member avoids up-openai, and each lists the stranger as untrusted.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for proc in &procs {
        let view = admin_json(&client, proc.admin, "/admin/v1/cluster/gossip").await;
        assert_eq!(view["local"]["up-openai"]["open_on_a_peer"], false, "{view}");
        assert_eq!(view["local"]["up-openai"]["routable"], true, "{view}");
        let members = view["view"]["members"].as_array().unwrap();
        let stranger: Vec<&Value> = members.iter().filter(|m| m["node_id"] == "7").collect();
        assert!(stranger.len() == 1 && stranger[0]["trusted"] == false, "{view}");
        assert!(!members.iter().any(|m| m["node_id"] == "8"), "a node with another secret got in: {view}");
        let response = client
            .post(format!("http://127.0.0.1:{}/v1/chat/completions", proc.api))
            .bearer_auth(KEY)
            .json(&json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-tollgate-target"], "up-openai/mock-gpt");
    }
    stop_all(&mut procs).await;
}

/// Issue 13.1: gossip is on by default for a cluster member; when it cannot start (its UDP port is taken)
/// the node still serves, and says why in the gossip view (and its log) instead of silently running
/// without the cluster-wide view.
#[tokio::test]
async fn a_member_whose_gossip_port_is_taken_says_so() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let gossip = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (api, admin, raft, other) = (free_port(), free_port(), free_port(), free_port());
    let text = format!(
        "[node]\nid = 1\nlisten = \"127.0.0.1:{api}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nraft_listen = \"127.0.0.1:{raft}\"\n\
         gossip_listen = \"127.0.0.1:{gossip}\"\ndata_dir = \"{data}\"\nadmin_token = \"{TOKEN}\"\n\
         cluster_secret = \"process-test-cluster-secret-42\"\n\
         peers = {{ 1 = \"127.0.0.1:{raft}\", 2 = \"127.0.0.1:{other}\" }}\n",
        data = dir.path().join("n1").display(),
    );
    let path = dir.path().join("n1.toml");
    std::fs::write(&path, text).unwrap();
    let mut child = spawn(&path);
    let client = reqwest::Client::new();
    wait_healthy(&client, &format!("http://127.0.0.1:{admin}/healthz")).await;
    let view = admin_json(&client, admin, "/admin/v1/cluster/gossip").await;
    assert_eq!(view["enabled"], false, "{view}");
    let error = view["error"].as_str().unwrap_or_default();
    assert!(error.contains("node.gossip_listen") && error.contains(&gossip.to_string()), "{view}");
    drop(taken);
    child.signal("TERM");
    assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0), "it shuts down cleanly");
}
