//! Issue 12.6: secrets planted everywhere a user may put one — a provider's inline key and headers, a
//! metrics URL's credentials, the admin token, the cluster secret, a client key — never show up in any
//! answer, log line or error of a real `tollgate serve` process driven through its success and failure
//! paths (upstream unreachable, upstream refusing, bad keys, admin reads, metrics, status page).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tollgate_tests::process::*;
use tollgate_tests::MockUpstream;

const PLANTED: [&str; 5] = [
    "sk-PLANTED-provider-key-1",
    "PLANTED-header-secret-2",
    "PLANTED-metrics-password-3",
    "tga-PLANTED-admin-token-4",
    "PLANTED-cluster-secret-5555",
];

#[tokio::test]
async fn planted_secrets_never_appear_in_answers_logs_or_errors() {
    let mock = MockUpstream::start().await;
    mock.set_required_key(Some("the-real-upstream-key".into()));
    let dir = tempfile::tempdir().unwrap();
    let (api, admin, raft) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"[node]
id = 1
listen = "127.0.0.1:{api}"
admin_listen = "127.0.0.1:{admin}"
raft_listen = "127.0.0.1:{raft}"
data_dir = "{data}"
peers = {{ 1 = "127.0.0.1:{raft}" }}
admin_token = "{admin_token}"
cluster_secret = "{cluster_secret}"

[[providers]]
name = "wrong-key"
kind = "openai"
base_url = "{openai}"
api_key = "{provider_key}"
headers = {{ "x-extra" = "{header_secret}" }}
metrics_url = "http://scraper:{metrics_password}@127.0.0.1:1/metrics"

[[providers]]
name = "unreachable"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key = "{provider_key}"

[[models]]
name = "refused"
targets = [ {{ provider = "wrong-key", model = "m" }} ]

[[models]]
name = "down"
targets = [ {{ provider = "unreachable", model = "m" }} ]

[[keys]]
key = "tg-client-key"
org = "acme"
"#,
        data = dir.path().join("data").display(),
        admin_token = PLANTED[3],
        cluster_secret = PLANTED[4],
        openai = mock.openai_base_url(),
        provider_key = PLANTED[0],
        header_secret = PLANTED[1],
        metrics_password = PLANTED[2],
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = ChildGuard::spawn(
        Command::new(tollgate_binary())
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let client = reqwest::Client::new();
    let admin_url = format!("http://127.0.0.1:{admin}");
    wait_healthy(&client, &format!("{admin_url}/readyz")).await;
    let mut answers = String::new();
    let chat = |model: &str, key: &str| {
        client
            .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    for (model, key) in [("refused", "tg-client-key"), ("down", "tg-client-key"), ("refused", "tg-wrong")] {
        let response = chat(model, key).await.unwrap();
        let answer = format!("{} {}\n", response.status(), response.text().await.unwrap());
        if model == "down" {
            // Clients learn which provider and what kind of failure, never an internal address.
            assert!(answer.contains("provider `unreachable`: connection refused"), "{answer}");
            assert!(!answer.contains("127.0.0.1") && !answer.contains("os error"), "{answer}");
        }
        answers.push_str(&answer);
    }
    for path in [
        "/admin/v1/providers",
        "/admin/v1/providers/wrong-key",
        "/admin/v1/audit",
        "/admin/v1/cluster",
        "/metrics",
        "/",
    ] {
        let response = client.get(format!("{admin_url}{path}")).bearer_auth(PLANTED[3]).send().await.unwrap();
        answers.push_str(&format!("{path}: {}\n", response.text().await.unwrap()));
    }
    let refused = client.get(format!("{admin_url}/admin/v1/cluster")).bearer_auth("tga-wrong").send().await.unwrap();
    answers.push_str(&refused.text().await.unwrap());
    child.signal("TERM");
    let _ = child.wait_exit(Duration::from_secs(10)).await;
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(answers.contains("401") || answers.contains("invalid"), "the failure paths were exercised: {answers}");
    assert!(logs.len() > 100, "the node logged: {logs}");
    for secret in PLANTED {
        assert!(!answers.contains(secret), "an answer contains {secret}:\n{answers}");
        // The metrics URL's password reaches the debug log when a GPU scrape fails, which happens here only
        // if a scrape tick falls inside the test: a_metrics_url_password_never_reaches_the_log checks it
        // deterministically (ignored until fixed), so this test does not flake on it.
        if secret != PLANTED[2] {
            let lines: Vec<&str> = logs.lines().filter(|line| line.contains(secret)).collect();
            assert!(lines.is_empty(), "the log contains {secret}: {lines:#?}");
        }
    }
    let mut on_disk = Vec::new();
    for entry in walk(&dir.path().join("data")) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            on_disk.push(format!("{} {mode:o}", entry.display()));
        }
    }
    assert!(on_disk.is_empty(), "readable by others: {on_disk:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut index = 0;
    while index < out.len() {
        if out[index].is_dir() {
            let children: Vec<_> = std::fs::read_dir(&out[index]).unwrap().map(|e| e.unwrap().path()).collect();
            out.extend(children);
        }
        index += 1;
    }
    out
}

/// A failed GPU metrics scrape is logged (debug) without the metrics URL's credentials.
#[tokio::test]
async fn a_metrics_url_password_never_reaches_the_log() {
    use tollgate_tests::cluster_process::NodeSection;
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = NodeSection { extra: vec!["gpu_scrape_interval_ms = 100".into()], ..NodeSection::on_free_ports() };
    let body = format!(
        "[[providers]]\nname = \"gpu\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         metrics_url = \"http://scraper:{}@127.0.0.1:1/metrics\"\n\n\
         [[models]]\nname = \"m\"\ntargets = [ {{ provider = \"gpu\", model = \"mock-gpt\" }} ]\n\n\
         [[keys]]\nkey = \"tg-client-key\"\norg = \"acme\"\n",
        mock.openai_base_url(),
        PLANTED[2],
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, node.with_body(&body)).unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = ChildGuard::spawn(
        Command::new(tollgate_binary())
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let client = reqwest::Client::new();
    wait_healthy(&client, &format!("http://127.0.0.1:{}/readyz", node.admin)).await;
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", node.api);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let response = client.post(url).bearer_auth("tg-client-key").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The endpoint is in use now: wait for a failed scrape of its metrics URL to be logged.
    tollgate_tests::wait_for("a failed GPU metrics scrape in the log", Duration::from_secs(20), || async {
        std::fs::read_to_string(&log).ok().filter(|logs| logs.contains("GPU metrics scrape failed")).map(|_| ())
    })
    .await;
    child.signal("TERM");
    let _ = child.wait_exit(Duration::from_secs(10)).await;
    let logs = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logs.lines().filter(|line| line.contains(PLANTED[2])).collect();
    assert!(lines.is_empty(), "the metrics URL's password is in the log: {lines:#?}");
}
