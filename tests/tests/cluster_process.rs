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

/// Starts three `tollgate serve` processes in front of `mock`; waits until all are ready.
async fn start_processes(mock: &MockUpstream, dir: &tempfile::TempDir) -> Vec<Proc> {
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
        let base = config_toml(mock, "");
        // Replace the harness's [node] section with this process's.
        let rest = base.split_once("[limits]").map(|(_, rest)| rest).unwrap();
        let text = format!(
            "[node]\nid = {id}\nlisten = \"127.0.0.1:{api}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nraft_listen = \"127.0.0.1:{raft}\"\n\
             data_dir = \"{data}\"\nadmin_token = \"{TOKEN}\"\ncluster_secret_file = \"{secret}\"\nheartbeat_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n\
             write_timeout_ms = 3000\npeers = {{ {peers} }}\n\n[limits]{rest}",
            id = index + 1,
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
    for proc in &mut procs {
        if let Some(child) = proc.child.as_ref() {
            child.signal("TERM");
        }
    }
    for proc in &mut procs {
        if let Some(mut child) = proc.child.take() {
            assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0));
        }
    }
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
