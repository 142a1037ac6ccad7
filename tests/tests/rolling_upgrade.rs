//! Issue 17.1: a rolling upgrade across three real processes — v, then one node at a time to "v+1", then
//! back one node at a time — with writes, reads and budgeted traffic through every node at every step.
//!
//! "v+1" is this binary with `TOLLGATE_TEST_NEWER_WIRE=1` (consensus/src/wire.rs): everything it
//! replicates — log entries on disk and on the Raft wire, writes forwarded to the leader, snapshots —
//! carries fields this version does not know, as the next release's optional fields would. So the test
//! checks what a rolling upgrade needs of this version: it reads a newer peer's entries and snapshots
//! (as a follower, as a leader receiving forwarded writes, and from its own disk after a rollback).

use std::time::Duration;

use serde_json::json;
use tollgate_consensus::wire::NEWER_WIRE_ENV;
use tollgate_tests::cluster_process::*;
use tollgate_tests::*;

/// The field "v+1" adds (consensus/src/wire.rs).
const NEWER_FIELD: &str = "added_in_next_version";

/// Writes `count` orgs named `{prefix}-{i}` through node `via`.
fn put_orgs(cluster: &ProcessCluster, via: usize, prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let (ok, out) = cluster.cli(via, &["orgs", "put", &name]);
            assert!(ok, "writing {name} through node {}: {out}", via + 1);
            name
        })
        .collect()
}

/// Waits until every running node lists every org in `names`.
async fn everywhere(cluster: &ProcessCluster, names: &[String], step: &str) {
    for index in (0..3).filter(|i| cluster.procs[*i].child.is_some()) {
        wait_for(&format!("node {} to list every org ({step})", index + 1), Duration::from_secs(20), || async {
            let orgs = cluster.cli_json(index, &["orgs", "list"]);
            let listed: Vec<&str> = orgs["data"].as_array()?.iter().filter_map(|o| o["name"].as_str()).collect();
            names.iter().all(|name| listed.contains(&name.as_str())).then_some(())
        })
        .await;
    }
}

/// A budgeted chat through every node succeeds.
async fn served_everywhere(cluster: &ProcessCluster, step: &str) {
    let body = json!({"model": "gpt-direct", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for index in 0..3 {
        let url = cluster.procs[index].api_url("/v1/chat/completions");
        wait_for(
            &format!("a budgeted chat served by node {} ({step})", index + 1),
            Duration::from_secs(20),
            || async {
                let (status, reply) = post_json(&cluster.client, &url, KEY, &body).await;
                (status == 200 && reply["usage"]["completion_tokens"].as_u64().is_some()).then_some(())
            },
        )
        .await;
    }
}

/// Whether the node's data directory holds "v+1"'s field (sled keeps values as written).
fn data_dir_holds_newer_fields(cluster: &ProcessCluster, index: usize) -> bool {
    let dir = cluster.procs[index].config.with_file_name(format!("n{}", index + 1));
    walk(&dir).iter().any(|file| {
        std::fs::read(file).is_ok_and(|bytes| bytes.windows(NEWER_FIELD.len()).any(|w| w == NEWER_FIELD.as_bytes()))
    })
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Restarts node `index` as `version` ("v" or "v+1"), snapshotting every 20 entries so that snapshots of
/// either version are written and read during the test.
async fn restart_as(cluster: &mut ProcessCluster, index: usize, version: &str) {
    cluster.stop(index).await;
    let config = std::fs::read_to_string(&cluster.procs[index].config).unwrap();
    if !config.contains("snapshot_after_logs") {
        let config = config.replacen("[node]\n", "[node]\nsnapshot_after_logs = 20\n", 1);
        std::fs::write(&cluster.procs[index].config, config).unwrap();
    }
    let env: &[(&str, &str)] = if version == "v+1" { &[(NEWER_WIRE_ENV, "1")] } else { &[] };
    cluster.restart_with(index, env).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_processes_upgrade_to_a_newer_wire_one_at_a_time_and_roll_back() {
    let mock = MockUpstream::start().await;
    let mut cluster = ProcessCluster::start(&mock, "").await;
    let (ok, out) = cluster.cli(0, &["budgets", "set", "--org", "acme", "--limit-tokens", "1000000"]);
    assert!(ok, "{out}");
    let mut written = put_orgs(&cluster, 0, "v", 3);
    everywhere(&cluster, &written, "all on v").await;
    served_everywhere(&cluster, "all on v").await;

    for (version, order) in [("v+1", [2, 1, 0]), ("v", [0, 1, 2])] {
        for index in order {
            restart_as(&mut cluster, index, version).await;
            let step = format!("node {} on {version}", index + 1);
            // Writes through every node, the restarted one included (forwarded to a leader of either
            // version), 25 of them so that the nodes with a short snapshot policy snapshot.
            for via in 0..3 {
                written.extend(put_orgs(
                    &cluster,
                    via,
                    &format!("{version}-{index}-{via}"),
                    if via == index { 25 } else { 3 },
                ));
            }
            everywhere(&cluster, &written, &step).await;
            served_everywhere(&cluster, &step).await;
        }
        if version == "v+1" {
            for index in 0..3 {
                assert!(data_dir_holds_newer_fields(&cluster, index), "node {} stored v+1's fields", index + 1);
            }
        }
    }
    // Back on v everywhere, each node restarted from a data dir holding v+1's entries and snapshots:
    // one leader, and every node answers the budget written on v at the start.
    cluster.wait_leader().await;
    for index in 0..3 {
        let budget = cluster.cli_json(index, &["budgets", "get", "--org", "acme"]);
        assert_eq!(budget["limit_tokens"], json!(1000000), "node {}: {budget}", index + 1);
    }
    cluster.stop_all().await;
}
