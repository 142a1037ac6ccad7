//! Budgets under change and faults, checked against what the mock upstream actually served (docs/ARCHITECTURE.md):
//! a limit lowered while all nodes are under load, and a period rolling over while a node is partitioned.
//! Invariants: S1 tokens served ≤ limit (per period); S2 Σ(granted − released) ≤ limit; S3 billed ≥ served.
//!
//! The rollover test moves this process's budget clock forward an hour (`advance_clock_for_tests`), so
//! every test in this file uses periods the jump cannot disturb or accounts for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tollgate::clock::{advance_ledger_clock_for_tests as advance_clock_for_tests, ledger_ms as now_ms};
use tollgate_tests::cluster::*;
use tollgate_tests::KEY;

const HOUR_MS: u64 = 3_600_000;

async fn put_budget(cluster: &TestCluster, via: u64, limit: u64, period: &str) {
    let body = json!({"scope": {"org": "acme"}, "limit_tokens": limit, "period": period});
    let (status, out) = cluster.admin(cluster.node(via), Method::PUT, "/admin/v1/budgets", Some(body)).await;
    assert_eq!(status, 200, "{out}");
}

async fn wait_budget_loaded(cluster: &TestCluster, limit: u64) {
    for node in cluster.running() {
        eventually_async("budget loaded", || async {
            node.gateway.snapshot().budgets.get("org:acme").is_some_and(|spec| spec.limit_tokens == Some(limit))
        })
        .await;
    }
}

async fn chat(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-direct", "max_tokens": 20, "messages": [{"role": "user", "content": "count my tokens please"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

fn served(cluster: &TestCluster) -> u64 {
    cluster.mock.input_tokens_served() + cluster.mock.output_tokens_served()
}

/// Sends requests to `url` until `refusals` budget refusals in a row (429; also 503 when `unavailable_ends`)
/// or `stop`; returns the 200s. Without `unavailable_ends`, a 503 (a grant that timed out on a loaded machine)
/// is retried after a pause, so the over-refusal checks measure the budget, not the machine's load.
async fn drive(
    client: reqwest::Client,
    url: String,
    refusals: usize,
    unavailable_ends: bool,
    stop: Arc<AtomicBool>,
) -> u64 {
    let (mut ok, mut refused, mut unavailable) = (0, 0, 0);
    while refused < refusals && unavailable < 300 && !stop.load(Ordering::Relaxed) {
        match chat(&client, &url).await {
            (200, _) => {
                ok += 1;
                refused = 0;
                unavailable = 0;
            }
            (429, _) => refused += 1,
            (503, _) if unavailable_ends => refused += 1,
            (503, _) => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (status, body) => panic!("unexpected {status}: {body}"),
        }
    }
    ok
}

/// S2 for every account of the scope, straight from a node's applied ledger.
fn assert_s2(cluster: &TestCluster, node: u64) {
    let state = cluster.node(node).gateway.consensus.as_ref().unwrap().current();
    if let Some(accounts) = state.config.ledger.accounts.get("org:acme") {
        for (period, account) in accounts.iter() {
            assert!(account.outstanding() <= account.limit, "S2 violated in period {period}: {account:?}");
        }
    }
}

#[tokio::test]
async fn lowering_a_budget_under_load_binds_the_new_limit_on_every_node() {
    let cluster = Arc::new(TestCluster::start(3).await);
    put_budget(&cluster, 1, 10_000_000, "total").await;
    wait_budget_loaded(&cluster, 10_000_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..9u64 {
        let url = cluster.node(worker % 3 + 1).api_url();
        workers.push(tokio::spawn(drive(cluster.client.clone(), url, 3, false, stop.clone())));
    }
    // Let every node take chunks sized to a heavy rate from a large budget...
    eventually_async("traffic flowing", || async { served(&cluster) >= 8_000 }).await;
    // ...then lower the limit to a little above what is spent so far, through a follower.
    let lowered = served(&cluster) + 8_000;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    put_budget(&cluster, follower, lowered, "total").await;
    let mut admitted = 0;
    for worker in workers {
        admitted += tokio::time::timeout(Duration::from_secs(60), worker).await.expect("workers stop").unwrap();
    }
    let served_tokens = served(&cluster);
    println!("lowered to {lowered}: served {served_tokens} in {admitted} requests");
    assert!(served_tokens <= lowered, "S1 violated after lowering: served {served_tokens} > {lowered}");
    assert!(served_tokens * 10 >= lowered * 8, "only {served_tokens} of {lowered} usable after lowering");
    // S3 once reports are in, S2 on every node's ledger.
    eventually_async("usage reported", || async {
        let budget = cluster.admin_get(cluster.node(1), "/admin/v1/budgets?org=acme").await.unwrap();
        budget["used"].as_u64().unwrap_or(0) >= served_tokens
    })
    .await;
    for node in 1..=3 {
        assert_s2(&cluster, node);
    }
}

#[tokio::test]
async fn a_period_rolls_over_while_a_node_is_partitioned() {
    // Start an hour early in the clock's terms, so the real hour cannot roll over mid-test.
    let now = now_ms();
    advance_clock_for_tests(HOUR_MS - now % HOUR_MS + 1_000);
    let cluster = Arc::new(TestCluster::start(3).await);
    let limit = 5_000;
    put_budget(&cluster, 1, limit, "hour").await;
    wait_budget_loaded(&cluster, limit).await;
    let leader = cluster.wait_leader().await;
    let isolated = (1..=3).find(|id| *id != leader).unwrap();
    let majority: Vec<u64> = (1..=3).filter(|id| *id != isolated).collect();
    let first_period = now_ms() / HOUR_MS * HOUR_MS;

    // Every node takes an allowance while the cluster is whole.
    for node in 1..=3 {
        assert_eq!(chat(&cluster.client, &cluster.node(node).api_url()).await.0, 200);
    }
    cluster.partition(&[isolated]);
    // Both sides spend the first period: the isolated node only what it holds.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for node in [isolated, majority[0], majority[1]] {
        let url = cluster.node(node).api_url();
        workers.push(tokio::spawn(drive(cluster.client.clone(), url, 3, node == isolated, stop.clone())));
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(60), worker).await.expect("workers stop").unwrap();
    }
    let served_first = served(&cluster);
    println!("first period: served {served_first} of {limit}");
    assert!(served_first <= limit, "S1 violated in the first period: {served_first} > {limit}");

    // The hour ends while the partition lasts.
    advance_clock_for_tests(HOUR_MS);
    // The isolated node cannot get a grant for the new period and must not carry the old one over.
    for _ in 0..5 {
        let (status, body) = chat(&cluster.client, &cluster.node(isolated).api_url()).await;
        assert!(
            status == 503 || status == 429,
            "isolated node served in a period it has no grant for: {status} {body}"
        );
        if status == 503 {
            let error: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["error"]["code"], "budget_unavailable", "{error}");
        }
    }
    // The majority spends the new period's budget.
    let mut workers = Vec::new();
    for node in &majority {
        let url = cluster.node(*node).api_url();
        workers.push(tokio::spawn(drive(cluster.client.clone(), url.clone(), 3, false, stop.clone())));
        workers.push(tokio::spawn(drive(cluster.client.clone(), url, 3, false, stop.clone())));
    }
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(60), worker).await.expect("workers stop").unwrap();
    }
    let served_second = served(&cluster) - served_first;
    println!("second period: served {served_second} of {limit} on the majority side");
    assert!(served_second <= limit, "S1 violated in the second period: {served_second} > {limit}");
    assert!(served_second * 10 >= limit * 8, "the majority could use only {served_second} of {limit}");

    // Heal: the isolated node's first-period reports land in the first period's account (S3 per period).
    cluster.heal();
    let node = cluster.node(leader);
    eventually_async("first period billed", || async {
        let state = node.gateway.consensus.as_ref().unwrap().current();
        let accounts = state.config.ledger.accounts.get("org:acme").cloned().unwrap_or_default();
        let billed_first = accounts.get(&first_period).map_or(0, |a| a.used_total());
        let billed_second = accounts.get(&(first_period + HOUR_MS)).map_or(0, |a| a.used_total());
        billed_first >= served_first && billed_second >= served_second
    })
    .await;
    for node in 1..=3 {
        assert_s2(&cluster, node);
    }
    // The healed node reports the new period, with the majority's spending in it. (A linearizable read may
    // answer 503 while the healed links settle on a loaded machine: ask again.)
    let budget = tollgate_tests::wait_for("a budget read through the healed node", Duration::from_secs(10), || async {
        cluster.admin_get(cluster.node(isolated), "/admin/v1/budgets?org=acme").await.ok()
    })
    .await;
    assert_eq!(budget["period_start"].as_u64(), Some(first_period + HOUR_MS), "{budget}");
    assert!(budget["used"].as_u64().unwrap() >= served_second, "{budget}");
}

#[tokio::test]
async fn setting_a_budget_answers_once_every_node_applied_it_or_names_those_that_have_not() {
    let cluster = TestCluster::start(3).await;
    let body = json!({"scope": {"org": "acme"}, "limit_tokens": 7_000, "period": "total"});
    let (status, out) = cluster.admin(cluster.node(2), Method::PUT, "/admin/v1/budgets", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    let mut applied: Vec<u64> = serde_json::from_value(out["applied_on"].clone()).unwrap();
    applied.sort_unstable();
    assert_eq!(applied, [1, 2, 3], "{out}");
    assert_eq!(out["pending_on"], json!([]), "{out}");
    for node in cluster.running() {
        let state = node.gateway.consensus.as_ref().unwrap().current();
        assert!(state.config.ledger.budgets.contains_key("org:acme"), "a node answered before applying");
    }

    // A partitioned member cannot apply it: the answer names it (the write itself commits on the majority).
    let leader = cluster.wait_leader().await;
    let isolated = (1..=3).find(|id| *id != leader).unwrap();
    cluster.partition(&[isolated]);
    let body = json!({"scope": {"org": "acme"}, "limit_tokens": 6_000, "period": "total"});
    let (status, out) = cluster.admin(cluster.node(leader), Method::PUT, "/admin/v1/budgets", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["pending_on"], json!([isolated]), "{out}");
    cluster.heal();
    wait_budget_loaded(&cluster, 6_000).await;
}
