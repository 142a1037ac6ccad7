//! Every door has a lock (issue 12): the Raft and cluster gRPC port refuses peers without the cluster
//! secret, gossip datagrams must be sealed with it, secrets rotate without downtime, and an empty admin token is refused at start and at the door.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tollgate_consensus::{Command as ClusterCommand, Request};
use tollgate_proto::v1::cluster_client::ClusterClient;
use tollgate_proto::v1::raft_client::RaftClient;
use tollgate_proto::v1::{Empty, RaftPayload};
use tollgate_tests::cluster::*;
use tollgate_tests::cluster_process::NodeSection;
use tollgate_tests::process::{free_port, tollgate_binary};

/// A `Cluster/Write` that would create a key with a secret of the caller's choosing.
fn forged_key_write() -> RaftPayload {
    let key = tollgate_consensus::resources::KeyRecord {
        id: "forged".into(),
        name: Some("forged".into()),
        org: "acme".into(),
        team: None,
        key_sha256: "00".repeat(32),
        models: None,
        created_at_ms: 0,
    };
    let request = Request {
        request_id: "forged-1".into(),
        actor: "stranger".into(),
        at_ms: 0,
        command: ClusterCommand::CreateKey { key },
    };
    RaftPayload { json: serde_json::to_vec(&request).unwrap() }
}

fn with_secret<T>(message: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(secret) = secret {
        request.metadata_mut().insert("x-tollgate-cluster-secret", secret.parse().unwrap());
    }
    request
}

async fn cluster_client(cluster: &TestCluster, id: u64) -> ClusterClient<tonic::transport::Channel> {
    let addr = cluster.members[(id - 1) as usize].raft_addr;
    ClusterClient::connect(format!("http://{addr}")).await.unwrap()
}

#[tokio::test]
async fn the_cluster_port_refuses_rpcs_without_the_cluster_secret() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let mut client = cluster_client(&cluster, leader).await;
    for secret in [None, Some("wrong-secret-0123456789"), Some("")] {
        let refused = client.write(with_secret(forged_key_write(), secret)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "secret {secret:?}: {refused:?}");
        assert!(!refused.message().contains("0123456789"), "a refusal never echoes what was sent");
    }
    let status = client.status(with_secret(Empty {}, None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "membership is not readable either");
    let addr = cluster.members[(leader - 1) as usize].raft_addr;
    let mut raft = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    let vote = raft.vote(with_secret(RaftPayload { json: b"{}".to_vec() }, None)).await.unwrap_err();
    assert_eq!(vote.code(), tonic::Code::Unauthenticated, "Raft RPCs too");
    let keys = cluster.admin_get(cluster.node(1), "/admin/v1/keys").await.unwrap();
    assert!(!keys.to_string().contains("forged"), "no key was created: {keys}");
    // A member's own RPCs go through: the cluster still writes.
    let (status, out) = cluster
        .admin(cluster.node(2), Method::PUT, "/admin/v1/orgs/still-works", Some(json!({"name": "still-works"})))
        .await;
    assert_eq!(status, 200, "{out}");
    let audit = cluster.admin_get(cluster.node(1), "/admin/v1/audit").await.unwrap().to_string();
    assert!(audit.contains("admin-api@node-2"), "the audit trail names the node that took the write: {audit}");
}

#[tokio::test]
async fn the_cluster_secret_rotates_without_downtime() {
    let cluster = TestCluster::start(3).await;
    let old = CLUSTER_SECRET.to_owned();
    let new = "rotated-cluster-secret-987654321".to_owned();
    // 1. Every node accepts the new secret too; 2. every node signs with it; 3. the old one is retired.
    for secrets in [vec![old.clone(), new.clone()], vec![new.clone(), old.clone()], vec![new.clone()]] {
        for node in cluster.running() {
            node.gateway.consensus.as_ref().unwrap().auth().set_secrets(secrets.clone());
        }
        let name = if secrets.len() == 1 { "after-rotation" } else { "during-rotation" };
        let (status, out) = cluster
            .admin(cluster.node(3), Method::PUT, &format!("/admin/v1/orgs/{name}"), Some(json!({"name": name})))
            .await;
        assert_eq!(status, 200, "{name} with {} secrets: {out}", secrets.len());
    }
    let leader = cluster.wait_leader().await;
    let mut client = cluster_client(&cluster, leader).await;
    let refused = client.status(with_secret(Empty {}, Some(&old))).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "the retired secret no longer opens the port");
    assert!(client.status(with_secret(Empty {}, Some(&new))).await.is_ok());
}

/// Rejected datagrams counted by node `id`'s sealed gossip, as its admin API reports them.
async fn gossip_refused(cluster: &TestCluster, id: u64) -> u64 {
    let gossip = cluster.admin_get(cluster.node(id), "/admin/v1/cluster/gossip").await.unwrap();
    gossip["sealed"]["rejected_unauthenticated"].as_u64().unwrap_or_else(|| panic!("gossip is sealed: {gossip}"))
}

#[tokio::test]
async fn gossip_datagrams_without_the_cluster_secret_are_refused_and_rotation_reaches_gossip() {
    let cluster = TestCluster::start_full(2, "", tollgate_tests::mock_upstream::MockUpstream::start().await, "").await;
    let live = |id: u64| cluster.node(id).gateway.gossip.get().map_or(0, |g| g.view().live_members().count());
    tollgate_tests::wait_for("both members gossip, sealed", Duration::from_secs(10), || async {
        (live(1) == 2 && live(2) == 2).then_some(())
    })
    .await;
    assert_eq!(gossip_refused(&cluster, 1).await, 0, "nothing refused between members");

    // A stranger on the network: a chitchat-looking datagram in clear, and one sealed with another secret.
    let target = cluster.node(1).gateway.gossip.get().unwrap().gossip_addr();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forged_plain = [0xb3, 0xb0, 0x01, 0x00, 0x00];
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let forged_sealed = tollgate::gossip::sealed::seal("not-the-cluster-secret-0123", now_ms, &forged_plain);
    for datagram in [&forged_plain[..], &forged_sealed[..]] {
        socket.send_to(datagram, &target).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gossip_refused(&cluster, 1).await < 2 {
        assert!(std::time::Instant::now() < deadline, "both forged datagrams refused and counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = cluster.client.get(format!("{}/metrics", cluster.node(1).admin_url())).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("tollgate_gossip_datagrams_refused_total{reason=\"unauthenticated\"}"), "{metrics}");

    // Node 1 alone retires the secret node 2 signs with: node 2's datagrams stop opening there at once.
    let retired = gossip_refused(&cluster, 1).await;
    let rotated = vec!["rotated-cluster-secret-987654321".to_owned()];
    cluster.node(1).gateway.consensus.as_ref().unwrap().auth().set_secrets(rotated);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gossip_refused(&cluster, 1).await < retired + 3 {
        assert!(std::time::Instant::now() < deadline, "gossip reads the live secrets, as the Raft port does");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `tollgate serve` with `node_toml` as its `[node]` section (plus `env`) and returns its exit code
/// and stderr: it must refuse to start.
fn serve_refuses(node_toml: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    let node = NodeSection {
        api: free_port(),
        admin: free_port(),
        raft: Some(free_port()),
        data_dir: Some(dir.path().join("data")),
        extra: vec![node_toml.to_owned()],
        ..NodeSection::default()
    };
    let body =
        "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[[models]]\nname = \"x\"\ntargets = [ { provider = \"m\" } ]\n";
    std::fs::write(&config, node.with_body(body)).unwrap();
    let mut command = Command::new(tollgate_binary());
    command
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_CLUSTER_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "tollgate serve started with {node_toml:?} {env:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_empty_admin_token_or_a_missing_cluster_secret_refuses_to_start() {
    let blank = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(blank.path(), "  \n").unwrap();
    let cases = [
        ("admin_token = \"\"".to_owned(), vec![], "node.admin_token"),
        (format!("admin_token_file = \"{}\"", blank.path().display()), vec![], "node.admin_token_file"),
        (String::new(), vec![("TOLLGATE_ADMIN_TOKEN", " ")], "TOLLGATE_ADMIN_TOKEN"),
        ("id = 1\npeers = { 1 = \"127.0.0.1:1\" }".to_owned(), vec![], "cluster_secret_file"),
        ("id = 1\npeers = { 1 = \"127.0.0.1:1\" }\ncluster_secret = \"short\"".to_owned(), vec![], "at least 16"),
    ];
    for (node, env, named) in cases {
        let stderr = serve_refuses(&node, &env);
        assert!(stderr.contains(named), "{node:?} {env:?} must name {named}: {stderr}");
    }
}

#[tokio::test]
async fn an_empty_bearer_token_is_refused_over_http2() {
    let cluster = TestCluster::start(1).await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = format!("{}/admin/v1/cluster", cluster.node(1).admin_url());
    for header in ["Bearer ", "Bearer", "Bearer    "] {
        let response = client.get(&url).header("authorization", header).send().await.unwrap();
        assert_eq!(response.status(), 401, "{header:?}");
    }
    let ok = client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Issue 12.3: one request with `max_tokens` near 2^64 on a route without its own cap wrapped the
/// tokens-per-minute window's arithmetic and the limit started over. It is refused (400, naming the field)
/// and the per-minute share still holds.
#[tokio::test]
async fn a_max_tokens_near_two_to_the_64_is_refused_and_the_minute_limit_holds() {
    let cluster = TestCluster::start(3).await;
    tollgate_tests::budget::set_org_rate_limits(&cluster, json!({"tokens_per_minute": 3000})).await;
    let cluster = &cluster;
    let chat = |max_tokens: u64| async move {
        let body = json!({"model": "claude-via-gpt", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hi"}]});
        tollgate_tests::budget::chat_status(cluster, 1, &body).await
    };
    assert_eq!(chat(u64::MAX).await, 400);
    assert_eq!(chat(u64::MAX - 3).await, 400);
    // Node 1's share is 1,000 tokens a minute; each of these uses ~310 and reserves ~400.
    cluster.mock.set_default(tollgate_tests::Script {
        reply: Some((0..400).map(|i| format!(" w{i}")).collect()),
        ..tollgate_tests::Script::default()
    });
    let statuses = [chat(300).await, chat(300).await, chat(300).await];
    assert_eq!(statuses, [200, 200, 429], "the per-minute share still holds");
}

/// Issue 12.6: secrets never come back in answers, and the data dir is its owner's only.
#[tokio::test]
async fn provider_secrets_never_come_back_and_the_data_dir_is_private() {
    let cluster = TestCluster::start(1).await;
    let provider = json!({"name": "leaky", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-PLANTED-SECRET-1", "headers": {"api-key": "PLANTED-SECRET-2", "x-trace": "PLANTED-SECRET-3"},
        "metrics_url": "http://scraper:PLANTED-SECRET-4@127.0.0.1:9/metrics"});
    let (status, out) = cluster.admin(cluster.node(1), Method::PUT, "/admin/v1/providers/leaky", Some(provider)).await;
    assert_eq!(status, 200, "{out}");
    for path in ["/admin/v1/providers/leaky", "/admin/v1/providers", "/admin/v1/audit"] {
        let answer = cluster.admin_get(cluster.node(1), path).await.unwrap().to_string();
        assert!(!answer.contains("PLANTED-SECRET"), "{path} leaks a secret: {answer}");
        if path.ends_with("leaky") {
            assert!(answer.contains("\"api-key\"") && answer.contains("127.0.0.1:9/metrics"), "{answer}");
        }
    }
    use std::os::unix::fs::PermissionsExt as _;
    let dir = cluster.data_dir(1);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.path().display());
        }
    }
}

#[test]
fn a_config_parse_error_never_quotes_the_secret_on_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\napi_key = \"sk-PLANTED-SECRET-5\nbase_url = \"x\"\n",
    )
    .unwrap();
    let output = Command::new(tollgate_binary()).arg("check-config").arg("--config").arg(&config).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 4"), "the error still says where: {stderr}");
    assert!(!stderr.contains("PLANTED-SECRET"), "{stderr}");
}

/// Issue 12.4: exact token counting ran on the runtime's workers; a few multi-megabyte prompts stalled
/// `/healthz` (and everything else, Raft included) for seconds. Large prompts are counted on the blocking
/// pool, one at a time. Judged relative to how long the counting itself takes, so a slow machine scales.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_prompts_are_counted_off_the_runtime_and_health_checks_stay_fast() {
    let h = tollgate_tests::Harness::start_tweaked("", |config| config.limits.max_body_bytes = 16 << 20).await;
    // ~6 MB of varied words: far over gpt-direct's 4,096-token window, so the gateway counts exactly.
    let text: String = (0..800_000).map(|i| format!("w{} ", i % 9973)).collect();
    let body = json!({"model": "gpt-direct", "max_tokens": 10, "messages": [{"role": "user", "content": text}]});
    let started = std::time::Instant::now();
    let big = |body: serde_json::Value| {
        let client = h.client.clone();
        let url = h.url("/v1/chat/completions");
        tokio::spawn(async move {
            let response = client.post(url).bearer_auth(tollgate_tests::KEY).json(&body).send().await.unwrap();
            response.status().as_u16()
        })
    };
    let requests = [big(body.clone()), big(body)];
    let mut slowest_health = Duration::ZERO;
    while requests.iter().any(|r| !r.is_finished()) {
        let asked = std::time::Instant::now();
        let health = h.client.get(h.admin_url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        slowest_health = slowest_health.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counting = started.elapsed();
    for request in requests {
        assert_eq!(request.await.unwrap(), 400, "over the context window");
    }
    println!("two huge prompts took {counting:?}; the slowest /healthz took {slowest_health:?}");
    if counting > Duration::from_millis(400) {
        assert!(
            slowest_health * 4 < counting,
            "health checks waited for the counting: {slowest_health:?} of {counting:?}"
        );
    }
}

/// Issue 12.4: a route can cap the prompt's size; a request over it is refused with 413 in the caller's
/// shape before it is tokenized or sent anywhere, while requests under it are served as before.
#[tokio::test]
async fn a_route_caps_the_prompt_size_before_counting_it() {
    let h = tollgate_tests::Harness::start_tweaked("", |config| {
        config.limits.max_body_bytes = 16 << 20;
        let model = config.models.iter_mut().find(|m| m.name == "gpt-direct").expect("gpt-direct");
        model.max_prompt_bytes = Some(100_000);
    })
    .await;
    let text = "word ".repeat(400_000);
    let body = json!({"model": "gpt-direct", "max_tokens": 10, "messages": [{"role": "user", "content": text}]});
    let response = h.openai("/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 413);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "request_too_large", "{error}");
    assert_eq!(error["error"]["param"], "messages", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("100000") && message.contains("gpt-direct"), "{message}");
    let response = h.anthropic("/v1/messages", &body).await;
    assert_eq!(response.status(), 413);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "request_too_large", "{error}");
    assert_eq!(h.mock.request_count(), 0, "nothing over the cap reached the provider");
    // Under the cap, and on routes without one, the same prompt size is served as before.
    let small = json!({"model": "gpt-direct", "max_tokens": 10, "messages": [{"role": "user", "content": "word ".repeat(100)}]});
    assert_eq!(h.openai("/v1/chat/completions", &small).await.status(), 200);
    let uncapped = json!({"model": "claude-direct", "max_tokens": 10, "messages": [{"role": "user", "content": "word ".repeat(30_000)}]});
    assert_eq!(h.anthropic("/v1/messages", &uncapped).await.status(), 200);
    assert_eq!(h.mock.request_count(), 2);
}

/// Issue 20: per-route caps on the number of messages and on the prompt's tokens (exact, with the route's
/// tokenizer, counted only when the free bound does not already fit).
#[tokio::test]
async fn a_route_caps_messages_and_prompt_tokens() {
    let h = tollgate_tests::Harness::start_tweaked("", |config| {
        let model = config.models.iter_mut().find(|m| m.name == "gpt-direct").expect("gpt-direct");
        model.max_messages = Some(3);
        model.max_prompt_tokens = Some(50);
    })
    .await;
    let turn = |i: usize| json!({"role": if i.is_multiple_of(2) { "user" } else { "assistant" }, "content": "hi"});
    let four: Vec<serde_json::Value> = (0..4).map(turn).collect();
    let response = h.openai("/v1/chat/completions", &json!({"model": "gpt-direct", "messages": four})).await;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "messages", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("4 messages"), "{error}");
    let three: Vec<serde_json::Value> = (0..3).map(turn).collect();
    assert_eq!(
        h.openai("/v1/chat/completions", &json!({"model": "gpt-direct", "messages": three})).await.status(),
        200
    );
    // 60 words are 60 tokens in cl100k: over 50; the same text at 40 words fits.
    let long = json!({"model": "gpt-direct", "max_tokens": 5,
        "messages": [{"role": "user", "content": "apple ".repeat(60)}]});
    let response = h.anthropic("/v1/messages", &long).await;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("at most 50"), "{error}");
    let fits = json!({"model": "gpt-direct", "max_tokens": 5,
        "messages": [{"role": "user", "content": "apple ".repeat(40)}]});
    assert_eq!(h.anthropic("/v1/messages", &fits).await.status(), 200);
    assert_eq!(h.mock.request_count(), 2, "refused requests never reach the provider");
}

/// Reads from `stream` until the server closes it; `Err` when it is still open after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    use tokio::io::AsyncReadExt as _;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.map_err(|_| ())?;
    Ok(seen)
}

/// Issue 12.5: connections that sent nothing, half an HTTP/2 preface, or went idle after a request lived
/// forever; there was no cap; a 200 KB header was served. Deadlines close them, the cap answers 503.
#[tokio::test]
async fn idle_half_open_and_excess_connections_are_closed_and_huge_headers_refused() {
    use tokio::io::AsyncWriteExt as _;
    let h = tollgate_tests::Harness::start_tweaked("", |config| {
        config.limits.handshake_timeout_ms = 300;
        config.limits.client_idle_timeout_ms = 300;
    })
    .await;
    let addr = h.node.api_addr;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await.is_ok(), "a silent connection stays open");
    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(closed_within(&mut half, Duration::from_secs(5)).await.is_ok(), "half a preface stays open");
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer tg-test-key\r\n\r\n").await.unwrap();
    let answered =
        closed_within(&mut idle, Duration::from_secs(5)).await.expect("an idle keep-alive connection stays open");
    assert!(answered.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answered));
    let huge = format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(200 * 1024));
    let mut big = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = big.write_all(huge.as_bytes()).await;
    let answer = closed_within(&mut big, Duration::from_secs(5)).await.unwrap_or_default();
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "a 200 KB header was served");
    assert!(h.metrics().await.contains("tollgate_connections_closed_total{reason=\"deadline\"}"));

    let capped = tollgate_tests::Harness::start_tweaked("", |config| config.limits.max_connections = 2).await;
    let (_first, _second) = (
        tokio::net::TcpStream::connect(capped.node.api_addr).await.unwrap(),
        tokio::net::TcpStream::connect(capped.node.api_addr).await.unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(capped.node.api_addr).await.unwrap();
    let answer = closed_within(&mut third, Duration::from_secs(5)).await.expect("the over-cap connection is closed");
    assert!(answer.starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&answer));
}

/// Issue 12.5: the request body was read with no deadline; a client trickling it held the connection.
#[tokio::test]
async fn a_body_that_never_finishes_arriving_gets_408() {
    use tokio::io::AsyncWriteExt as _;
    let h = tollgate_tests::Harness::start_tweaked("", |config| config.limits.body_timeout_ms = 300).await;
    let mut slow = tokio::net::TcpStream::connect(h.node.api_addr).await.unwrap();
    slow.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer tg-test-key\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut slow, Duration::from_secs(5)).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

/// Issue 12.5: out of file descriptors, `accept` fails; the loop must back off (not spin, not stop), count
/// the failures in a metric, and serve again once descriptors are free. A real process under `ulimit -n`.
#[tokio::test]
async fn descriptor_exhaustion_is_counted_and_the_node_recovers() {
    use tollgate_tests::process::{wait_healthy, ChildGuard};
    let dir = tempfile::tempdir().unwrap();
    let (api, admin) = (free_port(), free_port());
    let config = format!(
        r#"[node]
id = 1
listen = "127.0.0.1:{api}"
admin_listen = "127.0.0.1:{admin}"
data_dir = "{data}"
admin_token = "tga-descriptor-test-token"

[[providers]]
name = "mock"
kind = "mock"

[[models]]
name = "m"
targets = [ {{ provider = "mock" }} ]

[[keys]]
key = "tg-descriptor-key"
org = "acme"
"#,
        data = dir.path().join("data").display(),
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let script = format!("ulimit -n 128 && exec '{}' serve --config '{}'", tollgate_binary().display(), path.display());
    let mut child = ChildGuard::spawn(
        Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let client = reqwest::Client::new();
    let admin_url = format!("http://127.0.0.1:{admin}");
    wait_healthy(&client, &format!("{admin_url}/readyz")).await;
    // Far more connections than the node has descriptors: the kernel completes them (backlog), the node's
    // accepts fail with EMFILE.
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..300 {
        connects
            .spawn(tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(("127.0.0.1", api))));
    }
    let mut held = Vec::new();
    while let Some(connected) = connects.join_next().await {
        if let Ok(Ok(Ok(stream))) = connected {
            held.push(stream);
        }
    }
    println!("holding {} connections", held.len());
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(held);
    let chat = || {
        client
            .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
            .bearer_auth("tg-descriptor-key")
            .json(&json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
            .timeout(Duration::from_secs(5))
            .send()
    };
    // Served again once descriptors are free (the idle deadline closes the held connections' slots).
    let flooded = std::time::Instant::now();
    let deadline = flooded + Duration::from_secs(30);
    loop {
        match chat().await {
            Ok(response) if response.status() == 200 => break,
            other => {
                assert!(std::time::Instant::now() < deadline, "not serving 30 s after the flood: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    println!("serving again {:?} after the flood ended", flooded.elapsed());
    let metrics = client.get(format!("{admin_url}/metrics")).send().await.unwrap().text().await.unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("tollgate_accept_errors_total "))
        .expect("the accept-failure metric is exported")
        .trim()
        .parse()
        .unwrap();
    assert!(failures > 0, "the flood exhausted descriptors, so some accepts failed:\n{metrics}");
    child.signal("TERM");
    assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0), "still shuts down cleanly");
}
