//! The real `tollgate` binary: config validation, `serve` with graceful drain on SIGTERM, and `dev`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::process::*;
use tollgate_tests::*;

#[test]
fn check_config_names_the_bad_field() {
    let tempdir = tempfile::tempdir().unwrap();
    let dir = tempdir.path();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[providers]]\nname = \"a\"\nkind = \"openai\"\n[[models]]\nname = \"m\"\ntargets = [{ provider = \"nope\" }]\n",
    )
    .unwrap();
    let output = Command::new(tollgate_binary()).args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("models[0].targets[0].provider"), "{stderr}");

    std::fs::write(&path, "[node]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let output = Command::new(tollgate_binary()).args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let help = Command::new(tollgate_binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("serve") && help.contains("dev"), "{help}");
}

#[tokio::test]
async fn serve_drains_in_flight_streams_on_sigterm() {
    let mock = MockUpstream::start().await;
    let (api, admin) = (free_port(), free_port());
    let tempdir = tempfile::tempdir().unwrap();
    let dir = tempdir.path();
    let path = dir.join("node.toml");
    std::fs::write(&path, config_toml(&mock, "")).unwrap();
    let mut child = ChildGuard::spawn(Command::new(tollgate_binary()).args(["serve", "--config"]).arg(&path).args([
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--node-id",
        "7",
    ]));
    let client = reqwest::Client::new();
    wait_healthy(&client, &format!("http://127.0.0.1:{admin}/healthz")).await;

    // A stream that takes ~1.2 s, interrupted by SIGTERM after its first event.
    mock.push(Script { delay_between_events: Some(Duration::from_millis(100)), ..Default::default() });
    let mut response = client
        .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-direct", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-tollgate-node"], "7");
    let first = first_event(&mut response).await;
    child.signal("TERM");
    let rest = response.text().await.unwrap();
    let events = parse_events_strict(&format!("{first}{rest}"));
    assert!(events.last().unwrap().is_done(), "the in-flight stream completed during the drain");
    assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY);
    assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0));
    // New connections are refused once it has stopped.
    assert!(client.get(format!("http://127.0.0.1:{admin}/healthz")).send().await.is_err());
}

#[tokio::test]
async fn dev_starts_a_working_node_and_writes_the_env_file() {
    let base = free_dev_base_port();
    let tempdir = tempfile::tempdir().unwrap();
    let dir = tempdir.path();
    let env_file = dir.join("dev.env");
    // A stale, world-readable file from an earlier run: replaced whole, never rewritten in place.
    std::fs::write(&env_file, "TOLLGATE_URL=stale\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The admin port is base + 1010; pick a base whose admin port is free too.
    let mut child = ChildGuard::spawn(
        Command::new(tollgate_binary())
            .args(["dev", "--base-port", &base.to_string(), "--token-delay-ms", "0", "--env-file"])
            .arg(&env_file)
            .stdout(std::process::Stdio::piped()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Atomic (temp + rename): the first time the new content shows, it is all there.
    while std::fs::read_to_string(&env_file).unwrap().contains("=stale") {
        if let Some(status) = child.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            panic!("tollgate dev exited early with {status}");
        }
        assert!(tokio::time::Instant::now() < deadline, "env file never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&env_file).unwrap();
    assert!(text.ends_with('\n') && text.lines().count() == 4, "complete at first sight: {text}");
    let entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["dev.env"], "no temporary file left behind");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the env file holds the API key and admin token: owner only");
    let value = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(&format!("{name}="))).map(str::to_owned).unwrap_or_default()
    };
    let (url, key, admin_url) = (value("TOLLGATE_URL"), value("TOLLGATE_KEY"), value("TOLLGATE_ADMIN_URL"));
    assert_eq!(url, format!("http://127.0.0.1:{base}/v1"));
    assert!(key.starts_with("tg-dev-"));
    assert!(!value("TOLLGATE_ADMIN_TOKEN").is_empty());
    let client = reqwest::Client::new();
    wait_healthy(&client, &format!("{admin_url}/healthz")).await;

    let out: Value = client
        .post(format!("{url}/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(out["choices"][0]["message"]["content"].as_str().unwrap().contains("Hello"));
    let response = client
        .post(format!("{url}/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-3-5-haiku", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    let events = read_events(response).await;
    assert_eq!(events.last().unwrap().name.as_deref(), Some("message_stop"));

    // The three dev nodes gossip over UDP (base-134+i): node 1 sees them all alive, with their roles.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view: Value = client
            .get(format!("{admin_url}/admin/v1/cluster/gossip"))
            .bearer_auth(value("TOLLGATE_ADMIN_TOKEN"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let members = view["view"]["members"].as_array().cloned().unwrap_or_default();
        let live = members.iter().filter(|m| m["alive"] == true).count();
        if live == 3 {
            assert_eq!(view["gossip_addr"], format!("127.0.0.1:{}", base - 134), "{view}");
            assert!(members.iter().all(|m| m["roles"] == json!(["gateway", "raft"])), "{view}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dev nodes never gossiped: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.signal("INT");
    assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0));
}

/// A base port for `tollgate dev` whose nine TCP ports (API base+i, admin base+1010+i, Raft base-1010+i)
/// and three UDP gossip ports (base-134+i) are all free right now.
fn free_dev_base_port() -> u16 {
    for _ in 0..200 {
        let base = free_port();
        if !(2000..=60000).contains(&base) {
            continue;
        }
        let all_free = (0..3u16).all(|i| {
            [base + i, base + 1010 + i, base - 1010 + i]
                .iter()
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
                && std::net::UdpSocket::bind(("127.0.0.1", base - 134 + i)).is_ok()
        });
        if all_free {
            return base;
        }
    }
    panic!("no free port range for tollgate dev");
}

/// `node.idle_spin_us`: the real binary finds its runtime's epoll descriptor, its workers spin before
/// parking and find the upstream's answers within the budget (counted in `/metrics`), and requests are
/// answered exactly as without it. With the knob at 0 nothing spins and the metric is absent.
#[tokio::test]
async fn serve_spins_before_parking_when_idle_spin_is_set() {
    let mock = MockUpstream::start().await;
    let tempdir = tempfile::tempdir().unwrap();
    let dir = tempdir.path();
    let client = reqwest::Client::new();
    for spin_us in [0, 2_000] {
        let (api, admin) = (free_port(), free_port());
        let path = dir.join(format!("spin-{spin_us}.toml"));
        let config = config_toml(&mock, "").replacen("[node]\n", &format!("[node]\nidle_spin_us = {spin_us}\n"), 1);
        std::fs::write(&path, config).unwrap();
        let _child = ChildGuard::spawn(
            Command::new(tollgate_binary())
                .env("TOKIO_WORKER_THREADS", "1")
                .args(["serve", "--config"])
                .arg(&path)
                .args(["--listen", &format!("127.0.0.1:{api}"), "--admin-listen", &format!("127.0.0.1:{admin}")]),
        );
        wait_healthy(&client, &format!("http://127.0.0.1:{admin}/healthz")).await;
        for _ in 0..20 {
            let response = client
                .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
                .bearer_auth(KEY)
                .json(&json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["choices"][0]["message"]["content"], mock_upstream::DEFAULT_REPLY);
        }
        let metrics =
            client.get(format!("http://127.0.0.1:{admin}/metrics")).send().await.unwrap().text().await.unwrap();
        let woken = metrics
            .lines()
            .find_map(|line| line.strip_prefix("tollgate_idle_spins_total{outcome=\"woken\"} "))
            .map(|value| value.parse::<u64>().unwrap());
        if spin_us == 0 {
            assert_eq!(woken, None, "no spinning without the knob:\n{metrics}");
        } else {
            // Each request parks at least once waiting for the upstream, and a 2 ms budget outlasts the
            // mock's answer even on a slow machine. (How many is timing; that some spins ended on an event
            // shows the polled descriptor is the runtime's own.)
            assert!(woken.is_some_and(|n| n > 0), "workers spun and found work:\n{metrics}");
        }
    }
}
