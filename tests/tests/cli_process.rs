//! The admin CLI against real `tollgate serve` processes: `apply --dry-run` changes nothing, teams come and
//! go, `keys revoke` refuses a key on every node, `cluster add-node` / `remove-node` change the membership;
//! and a node configured without secrets in its file (`key_sha256`, `api_key_env`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::cluster_process::*;
use tollgate_tests::process::wait_healthy;
use tollgate_tests::*;

/// Waits until node `index` answers a chat completion with `key` with `status` (10 s).
async fn until_status(cluster: &ProcessCluster, index: usize, key: &str, model: &str, status: u16) {
    let url = cluster.procs[index].api_url("/v1/chat/completions");
    let what = format!("node {} to answer {status} to {model} with key {key}", index + 1);
    wait_for(&what, Duration::from_secs(10), || async {
        (post_json(&cluster.client, &url, key, &chat_body(model, "hi")).await.0 == status).then_some(())
    })
    .await;
}

#[tokio::test]
async fn apply_dry_run_changes_nothing_teams_come_and_go_and_a_revoked_key_is_refused_everywhere() {
    let mock = MockUpstream::start().await;
    let mut cluster = ProcessCluster::start(&mock, "").await;
    // A cluster file with one more model and a team.
    let file = cluster.dir.path().join("cluster.toml");
    let addition = "[[models]]\nname = \"dry\"\ntargets = [{ provider = \"up-openai\", model = \"mock-gpt\" }]\n\n\
                    [[teams]]\norg = \"acme\"\nname = \"ml\"\n";
    std::fs::write(&file, format!("{}\n{addition}", config_toml(&mock, ""))).unwrap();
    let (ok, plan) = cluster.cli(1, &["apply", "-f", file.to_str().unwrap(), "--dry-run"]);
    assert!(ok && plan.contains("dry") && plan.contains("ml"), "the plan names what would change: {plan}");
    let (ok, out) = cluster.cli(2, &["routes", "get", "dry"]);
    assert!(!ok, "a dry run applied the model: {out}");
    assert_eq!(cluster.admin_json(0, "/admin/v1/teams").await["data"], json!([]), "a dry run applied the team");
    let (ok, out) = cluster.cli(1, &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok && out.contains("put model dry"), "{out}");
    for index in 0..3 {
        until_status(&cluster, index, KEY, "dry", 200).await;
    }
    let (ok, again) = cluster.cli(0, &["apply", "-f", file.to_str().unwrap(), "--dry-run"]);
    assert!(ok && !again.contains("put model dry"), "applied already, nothing left to change: {again}");

    // Team CRUD through the CLI: the applied team, one more, read back, deleted.
    let team = cluster.cli_json(2, &["teams", "get", "acme/ml"]);
    assert_eq!(team, json!({"org": "acme", "name": "ml"}));
    cluster.cli_json(0, &["teams", "put", "acme/infra"]);
    let teams = cluster.cli_json(1, &["teams", "list"]);
    let names: Vec<&str> = teams["data"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{teams}");
    assert!(names.contains(&"ml") && names.contains(&"infra"), "{teams}");
    let (ok, table) = cluster.cli(1, &["teams", "list"]);
    assert!(ok && table.lines().any(|line| line.split_whitespace().eq(["acme", "infra"])), "{table}");
    cluster.cli_json(2, &["teams", "delete", "acme/infra"]);
    let (found, answer) = cluster.cli(0, &["teams", "get", "acme/infra"]);
    assert!(!found && answer.contains("404"), "deleted: {answer}");
    let (ok, refused) = cluster.cli(0, &["teams", "put", "no-slash"]);
    assert!(!ok && refused.contains("teams/{org}/{team}"), "a team without its org: {refused}");

    // A key in the team, created, listed without its secret, then revoked with the CLI.
    let created = cluster.cli_json(0, &["keys", "create", "--org", "acme", "--team", "ml", "--name", "ci"]);
    let (key, id) = (created["key"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned());
    for index in 0..3 {
        until_status(&cluster, index, &key, "gpt-direct", 200).await;
    }
    let listed = cluster.cli_json(2, &["keys", "list", "--org", "acme"]);
    let record = listed["data"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).cloned();
    let record = record.unwrap_or_else(|| panic!("{id} listed: {listed}"));
    assert_eq!(record["team"], "ml", "{record}");
    assert!(!listed.to_string().contains(&key), "a listing never shows a secret");
    let (ok, out) = cluster.cli(1, &["keys", "revoke", &id]);
    assert!(ok, "{out}");
    for index in 0..3 {
        until_status(&cluster, index, &key, "gpt-direct", 401).await;
    }
    let (ok, out) = cluster.cli(0, &["keys", "revoke", &id]);
    assert!(!ok && out.contains("404"), "revoking twice says the key is gone: {out}");
    cluster.stop_all().await;
}

#[tokio::test]
async fn cluster_add_node_and_remove_node_through_the_cli() {
    let mock = MockUpstream::start().await;
    let mut cluster = ProcessCluster::start(&mock, "").await;
    let joiner = cluster.start_joiner().await;
    let (raft, api, admin) = (cluster.procs[joiner].raft, cluster.procs[joiner].api, cluster.procs[joiner].admin);
    let added = cluster.cli_json(
        1,
        &[
            "cluster",
            "add-node",
            "--id",
            "4",
            "--raft-addr",
            &format!("127.0.0.1:{raft}"),
            "--api-addr",
            &format!("127.0.0.1:{api}"),
            "--admin-addr",
            &format!("127.0.0.1:{admin}"),
        ],
    );
    let members = added["members"].as_array().unwrap();
    assert_eq!(members.len(), 4, "{added}");
    assert!(members.iter().any(|m| m["id"] == 4 && m["role"] != "learner"), "added as a voter: {added}");
    // The new member has the replicated config and serves it.
    wait_healthy(&cluster.client, &cluster.procs[joiner].admin_url("/readyz")).await;
    until_status(&cluster, joiner, KEY, "gpt-direct", 200).await;
    let (ok, table) = cluster.cli(joiner, &["status"]);
    assert!(ok && table.lines().filter(|l| l.contains("127.0.0.1:")).count() >= 4, "{table}");

    let removed = cluster.cli_json(0, &["cluster", "remove-node", "--id", "4"]);
    assert_eq!(removed["members"].as_array().unwrap().len(), 3, "{removed}");
    let status = cluster.cli_json(2, &["status"]);
    assert!(status["members"].as_array().unwrap().iter().all(|m| m["id"] != 4), "{status}");
    cluster.stop_all().await;
}

/// SHA-256 of `text`, hex, by coreutils (not by the code under test).
fn sha256_hex(text: &str) -> String {
    let output = Command::new("sh").arg("-c").arg("printf %s \"$0\" | sha256sum").arg(text).output().unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// A config file that holds no secret: the client key as its SHA-256, the upstream key in an environment
/// variable. The gateway accepts the key whose hash is listed and sends the variable's value upstream.
#[tokio::test]
async fn keys_by_sha256_and_upstream_keys_from_the_environment() {
    let mock = MockUpstream::start().await;
    mock.set_required_key(Some("sk-from-the-environment".into()));
    let secret = "tg-only-its-hash-is-in-the-file";
    let node = NodeSection::on_free_ports();
    let body = format!(
        "[[providers]]\nname = \"up\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key_env = \"TG_TEST_UPSTREAM_KEY\"\n\n\
         [[models]]\nname = \"m\"\ntargets = [ {{ provider = \"up\", model = \"mock-gpt\" }} ]\n\n\
         [[keys]]\nkey_sha256 = \"{}\"\nname = \"hashed\"\norg = \"acme\"\n",
        mock.openai_base_url(),
        sha256_hex(secret),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, node.with_body(&body)).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains(secret));
    let mut child = spawn_serve_with(&path, &[("TG_TEST_UPSTREAM_KEY", "sk-from-the-environment")]);
    let client = reqwest::Client::new();
    wait_healthy(&client, &format!("http://127.0.0.1:{}/readyz", node.admin)).await;
    let url = format!("http://127.0.0.1:{}/v1/chat/completions", node.api);
    let (status, out) = post_json(&client, &url, secret, &chat_body("m", "hi")).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["choices"][0]["message"]["content"], mock_upstream::DEFAULT_REPLY);
    let upstream = mock.requests().pop().unwrap();
    assert_eq!(upstream.header("authorization"), Some("Bearer sk-from-the-environment"));
    let (status, out): (u16, Value) = post_json(&client, &url, "tg-not-listed", &chat_body("m", "hi")).await;
    assert_eq!(status, 401, "{out}");
    assert_eq!(mock.request_count(), 1);
    child.signal("TERM");
    assert_eq!(child.wait_exit(Duration::from_secs(10)).await, Some(0));
}
