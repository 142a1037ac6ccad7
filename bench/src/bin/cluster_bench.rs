//! Control-plane benchmark on an in-process 3-node cluster (`tollgate_tests::cluster::TestCluster`: real
//! Raft over tonic on loopback, sled in temp dirs with a flush per log append, real HTTP):
//!
//! 1. config propagation: admin `PUT /admin/v1/models/{name}` on a follower, then the time until the new
//!    route answers 200 on every node (a chat request per node every 1 ms), and until each node's applied
//!    state (`ConsensusNode::current()`, observed through its watch channel, so without polling error) has it;
//! 2. leader failover: stop the leader, time until a survivor sees a new leader and until a write through a
//!    survivor succeeds (retried every 1 ms); restart the old leader; repeat;
//! 3. admin write throughput: `PUT /admin/v1/orgs/{name}` from 1, 8 and 32 concurrent clients, to the
//!    leader and to a follower (which forwards to the leader).
//!
//! Parts 1 and 2 run with TestCluster's timings (heartbeat 50 ms, election 300–600 ms), then again on the
//! same cluster restarted with the production defaults (heartbeat 100 ms, election 500–1000 ms).
//!
//! Build and run: `cargo build --release -p tollgate-bench --bin cluster_bench && target/release/cluster_bench`.
//! Node logs go to stdout at `TEST_LOG` (default here: `error`). Results: `bench/CLUSTER.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::cluster::{TestCluster, ADMIN_TOKEN};

const PROPAGATION_RUNS: usize = 30;
const PROPAGATION_RUNS_PROD: usize = 10;
const FAILOVER_RUNS: usize = 5;
const FAILOVER_RUNS_PROD: usize = 3;
const THROUGHPUT_SECS: u64 = 5;
const CONCURRENCY: [usize; 3] = [1, 8, 32];
/// Bound on anything the bench waits for.
const PATIENCE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(1);

#[tokio::main]
async fn main() {
    if std::env::var_os("TEST_LOG").is_none() {
        // Failover makes the nodes log expected connection errors at warn.
        std::env::set_var("TEST_LOG", "error");
    }
    let started = Instant::now();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http client");
    let mut cluster = TestCluster::start(3).await;
    println!(
        "# Tollgate cluster bench: 3 in-process nodes, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let timing = "test timings: heartbeat 50 ms, election 300-600 ms";
    let propagation_test = propagation(&cluster, &client, PROPAGATION_RUNS, "t").await;
    propagation_test.print(timing);
    let failover_test = failover(&mut cluster, &client, FAILOVER_RUNS, "t").await;
    print_failover(timing, (50, 300, 600), &failover_test);

    throughput_table(&cluster, &client, timing, &CONCURRENCY).await;

    // The same cluster (same data) restarted with the production defaults.
    for id in 1..=3 {
        cluster.stop(id).await;
    }
    for member in &mut cluster.members {
        member.config.node.raft.heartbeat_ms = 100;
        member.config.node.raft.election_timeout_min_ms = 500;
        member.config.node.raft.election_timeout_max_ms = 1000;
        member.config.node.raft.write_timeout_ms = 5000;
    }
    for id in 1..=3 {
        wait_sled_unlocked(&cluster.data_dir(id)).await;
        cluster.restart(id).await;
    }
    cluster.wait_ready().await;
    let timing = "production defaults: heartbeat 100 ms, election 500-1000 ms";
    let propagation_prod = propagation(&cluster, &client, PROPAGATION_RUNS_PROD, "p").await;
    propagation_prod.print(timing);
    let failover_prod = failover(&mut cluster, &client, FAILOVER_RUNS_PROD, "p").await;
    print_failover(timing, (100, 500, 1000), &failover_prod);
    throughput_table(&cluster, &client, timing, &[32]).await;

    let state = cluster.node(1).gateway.consensus.as_ref().unwrap().current();
    let disk: Vec<String> =
        (1..=3).map(|id| format!("{:.1} MB", dir_bytes(&cluster.data_dir(id)) as f64 / 1e6)).collect();
    println!(
        "at the end: {} orgs in the replicated state; sled data dirs {}",
        state.config.orgs.len(),
        disk.join(", ")
    );
    for id in 1..=3 {
        cluster.stop(id).await;
    }
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------------------
// 1. Propagation

/// Per run, in ms. Roles: 0 = leader, 1 = the follower that took the PUT, 2 = the other follower.
#[derive(Default)]
struct Propagation {
    ack: Vec<f64>,
    served_all_from_ack: Vec<f64>,
    served_all_from_send: Vec<f64>,
    served_from_ack: [Vec<f64>; 3],
    applied_from_ack: [Vec<f64>; 3],
    roles: [u64; 3],
}

impl Propagation {
    fn print(&self, timing: &str) {
        let [leader, receiver, other] = self.roles;
        println!(
            "## Config propagation ({} runs; {timing}; PUT on follower node {receiver}, leader node {leader}, other follower node {other})\n",
            self.ack.len()
        );
        println!("{:<58} {:>8} {:>8} {:>8} {:>8}", "ms", "p50", "p90", "max", "min");
        let row = |label: &str, values: &[f64]| {
            println!(
                "{:<58} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                label,
                percentile(values, 50.0),
                percentile(values, 90.0),
                percentile(values, 100.0),
                percentile(values, 0.0)
            );
        };
        row("PUT sent -> 200 ack (write latency via follower)", &self.ack);
        row("PUT sent -> route serves 200 on all 3 nodes", &self.served_all_from_send);
        row("ack -> route serves 200 on all 3 nodes", &self.served_all_from_ack);
        let names = ["leader", "PUT follower", "other follower"];
        for (index, name) in names.iter().enumerate() {
            row(&format!("ack -> applied state has it: {name}"), &self.applied_from_ack[index]);
        }
        for (index, name) in names.iter().enumerate() {
            row(&format!("ack -> route serves 200: {name}"), &self.served_from_ack[index]);
        }
        println!("(negative: before the ack reached the client; 'serves' is polled every 1 ms, 'applied' is exact)\n");
    }
}

async fn propagation(cluster: &TestCluster, client: &reqwest::Client, runs: usize, tag: &str) -> Propagation {
    let leader = settle(cluster).await;
    let receiver = (1..=3).find(|id| *id != leader).unwrap();
    let other = (1..=3).find(|id| *id != leader && *id != receiver).unwrap();
    let roles = [leader, receiver, other];
    let mut result = Propagation { roles, ..Propagation::default() };
    for run in 0..runs {
        let name = format!("{tag}-prop-{run}");
        // Subscribed before the write, so an apply that beats the ack is seen too.
        let watchers: Vec<_> = roles
            .iter()
            .map(|id| {
                let mut changes = cluster.node(*id).gateway.consensus.as_ref().unwrap().subscribe();
                let name = name.clone();
                tokio::spawn(async move {
                    changes
                        .wait_for(|state| state.config.models.contains_key(&name))
                        .await
                        .expect("state channel open");
                    Instant::now()
                })
            })
            .collect();
        let body = json!({"targets": [{"provider": "up-openai", "model": "mock-gpt"}]});
        let sent = Instant::now();
        let status =
            admin_put(client, &cluster.node(receiver).admin_url(), &format!("/admin/v1/models/{name}"), &body).await;
        let acked = Instant::now();
        assert_eq!(status, 200, "PUT model {name}");
        let (a, b, c) = tokio::join!(
            serves(cluster, roles[0], &name),
            serves(cluster, roles[1], &name),
            serves(cluster, roles[2], &name)
        );
        let served = [a, b, c];
        let last = served.iter().copied().max().unwrap();
        result.ack.push(ms(acked - sent));
        result.served_all_from_ack.push(ms(last - acked));
        result.served_all_from_send.push(ms(last - sent));
        for (index, watcher) in watchers.into_iter().enumerate() {
            let applied = tokio::time::timeout(PATIENCE, watcher).await.expect("applied in time").expect("watcher");
            result.applied_from_ack[index].push(signed_ms(applied, acked));
            result.served_from_ack[index].push(ms(served[index] - acked));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    result
}

/// Polls a chat completion for `model` on node `id` every 1 ms until it answers 200.
async fn serves(cluster: &TestCluster, id: u64, model: &str) -> Instant {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if cluster.chat_default(cluster.node(id), model).await == 200 {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "route {model} never served on node {id}");
        tokio::time::sleep(POLL).await;
    }
}

// ---------------------------------------------------------------------------------------------------------
// 2. Failover

struct FailoverRun {
    old: u64,
    new: u64,
    /// `TestCluster::stop` (drain, then Raft shutdown): the leader is gone when it returns.
    stop: f64,
    /// From `stop` returning.
    elected: f64,
    write_ok: f64,
    attempts: u32,
}

async fn failover(cluster: &mut TestCluster, client: &reqwest::Client, runs: usize, tag: &str) -> Vec<FailoverRun> {
    let mut result = Vec::new();
    for run in 0..runs {
        let old = settle(cluster).await;
        let survivors: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
        let handles: Vec<_> = survivors.iter().map(|id| cluster.node(*id).gateway.consensus.clone().unwrap()).collect();
        let write_via = cluster.node(survivors[0]).admin_url();
        let org = format!("{tag}-failover-{run}");

        let before = Instant::now();
        cluster.stop(old).await;
        let stopped = Instant::now();
        let elect = async {
            loop {
                if let Some(new) = handles.iter().find_map(|h| h.leader().filter(|leader| *leader != old)) {
                    return (new, Instant::now());
                }
                assert!(stopped.elapsed() < PATIENCE, "no new leader");
                tokio::time::sleep(POLL).await;
            }
        };
        let write = async {
            let mut attempts = 0;
            loop {
                attempts += 1;
                if admin_put(client, &write_via, &format!("/admin/v1/orgs/{org}"), &json!({})).await == 200 {
                    return (Instant::now(), attempts);
                }
                assert!(stopped.elapsed() < PATIENCE, "no write succeeded after failover");
                tokio::time::sleep(POLL).await;
            }
        };
        let ((new, elected), (written, attempts)) = tokio::join!(elect, write);
        result.push(FailoverRun {
            old,
            new,
            stop: ms(stopped - before),
            elected: ms(elected - stopped),
            write_ok: ms(written - stopped),
            attempts,
        });

        wait_sled_unlocked(&cluster.data_dir(old)).await;
        cluster.restart(old).await;
        cluster.wait_ready().await;
        let rejoined = cluster.node(old).gateway.consensus.clone().unwrap();
        let deadline = Instant::now() + PATIENCE;
        while !rejoined.current().config.orgs.contains_key(&org) {
            assert!(Instant::now() < deadline, "node {old} did not catch up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    result
}

/// `(heartbeat, election min, election max)` in ms.
fn print_failover(timing: &str, (heartbeat, min, max): (u64, u64, u64), runs: &[FailoverRun]) {
    println!("## Leader failover ({timing})\n");
    // openraft 0.9 (`RaftCore::handle_tick_election`): a follower whose vote is committed (it follows a live
    // leader) waits leader_lease (= election_timeout_max) + its election timeout (drawn once per start in
    // [min, max)) after the last heartbeat, checked on a tick every 1.5 x heartbeat.
    println!(
        "expected election start after the last heartbeat: {}..{} ms (lease {max} + timeout {min}..{max} + tick {})",
        max + min,
        2 * max + heartbeat * 3 / 2,
        heartbeat * 3 / 2
    );
    println!(
        "{:<4} {:>10} {:>10} {:>9} {:>14} {:>16} {:>9}",
        "run", "old->new", "stop() ms", "elected", "write ok", "write from stop", "attempts"
    );
    println!("{:<4} {:>10} {:>10} {:>9} {:>14} {:>16} {:>9}", "", "", "", "ms", "ms", "call, ms", "");
    for (index, run) in runs.iter().enumerate() {
        println!(
            "{:<4} {:>10} {:>10.1} {:>9.1} {:>14.1} {:>16.1} {:>9}",
            index + 1,
            format!("{}->{}", run.old, run.new),
            run.stop,
            run.elected,
            run.write_ok,
            run.stop + run.write_ok,
            run.attempts
        );
    }
    let elected: Vec<f64> = runs.iter().map(|r| r.elected).collect();
    let write_ok: Vec<f64> = runs.iter().map(|r| r.write_ok).collect();
    println!(
        "p50/max: elected {:.1}/{:.1} ms, write ok {:.1}/{:.1} ms (both from stop() returning: the old leader's Raft is down)\n",
        percentile(&elected, 50.0),
        percentile(&elected, 100.0),
        percentile(&write_ok, 50.0),
        percentile(&write_ok, 100.0)
    );
}

// ---------------------------------------------------------------------------------------------------------
// 3. Throughput

/// Leader and follower rows, interleaved per concurrency so state growth (the dedup window) hits both alike.
async fn throughput_table(cluster: &TestCluster, client: &reqwest::Client, timing: &str, concurrency: &[usize]) {
    println!("## Admin write throughput (PUT /admin/v1/orgs/{{name}}, {THROUGHPUT_SECS} s per row; {timing})\n");
    println!(
        "{:<28} {:>7} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "target", "clients", "writes/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    let leader = settle(cluster).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    for clients in concurrency.iter().copied() {
        for (label, id) in [("leader", leader), ("follower (forwarded)", follower)] {
            let result = throughput(client, cluster.node(id).admin_url(), clients).await;
            println!(
                "{:<28} {:>7} {:>9.1} {:>8.2} {:>8.2} {:>8.2} {:>7}",
                format!("{label}, node {id}"),
                clients,
                result.rate,
                percentile(&result.latencies, 50.0),
                percentile(&result.latencies, 99.0),
                percentile(&result.latencies, 100.0),
                result.errors
            );
            if let Some(error) = &result.first_error {
                println!("    first error: {error}");
            }
        }
    }
    println!();
}

struct Throughput {
    rate: f64,
    latencies: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
}

/// Each client overwrites its own 32 org names in turn: every PUT is a real replicated write, but the state
/// stays the same size from row to row (at most 32 x 32 bench orgs).
async fn throughput(client: &reqwest::Client, admin_url: String, clients: usize) -> Throughput {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(THROUGHPUT_SECS);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..clients {
        let client = client.clone();
        let admin_url = admin_url.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            let mut sequence = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let path = format!("/admin/v1/orgs/bench-{worker}-{}", sequence % 32);
                sequence += 1;
                match admin_put_detail(&client, &admin_url, &path, &json!({})).await {
                    Ok(()) => latencies.push(ms(sent.elapsed())),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert(error);
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (mut worker_latencies, worker_errors, worker_error) = joined.expect("client task");
        latencies.append(&mut worker_latencies);
        errors += worker_errors;
        first_error = first_error.or(worker_error);
    }
    let rate = latencies.len() as f64 / start.elapsed().as_secs_f64();
    Throughput { rate, latencies, errors, first_error }
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// Waits for a leader that every running node agrees on, with every node applied to the same index.
async fn settle(cluster: &TestCluster) -> u64 {
    let leader = cluster.wait_leader().await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let nodes: Vec<_> = cluster.running().map(|node| node.gateway.consensus.clone().unwrap()).collect();
        let agreed = nodes.iter().all(|node| node.leader() == Some(leader));
        let applied: Vec<_> = nodes.iter().map(|node| node.raft().metrics().borrow().last_applied).collect();
        if agreed && applied.windows(2).all(|pair| pair[0] == pair[1]) {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "cluster did not settle: leader {leader}, nodes see {:?}, applied {applied:?}",
            nodes.iter().map(|node| node.leader()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `TestCluster::stop` returns before the last handle on the node's sled `Db` is dropped (tasks wind down
/// asynchronously), and a restart that finds the lock still taken panics. Waits for the lock with
/// `flock(1)`; without it, sleeps a second.
async fn wait_sled_unlocked(dir: &Path) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status =
            std::process::Command::new("flock").args(["-n", "-E", "99"]).arg(dir.join("db")).arg("true").status();
        match status {
            Ok(status) if status.success() => return,
            Ok(status) if status.code() == Some(99) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        }
    }
}

/// An admin PUT; the status, or 0 when the request failed (refused connection, timeout).
async fn admin_put(client: &reqwest::Client, admin_url: &str, path: &str, body: &Value) -> u16 {
    client
        .put(format!("{admin_url}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .map(|response| response.status().as_u16())
        .unwrap_or(0)
}

/// An admin PUT that must answer 200; otherwise the status and (the start of) the body.
async fn admin_put_detail(client: &reqwest::Client, admin_url: &str, path: &str, body: &Value) -> Result<(), String> {
    let response = client
        .put(format!("{admin_url}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .map_err(|err| format!("request failed: {err}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(format!("{status}: {}", text.chars().take(300).collect::<String>()))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn signed_ms(at: Instant, base: Instant) -> f64 {
    if at >= base {
        ms(at - base)
    } else {
        -ms(base - at)
    }
}

/// Nearest-rank percentile (0 = min, 100 = max); NaN for no values.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
