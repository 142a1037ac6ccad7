//! Org-wide token budgets on a 3-node cluster, checked against what the mock upstream actually served.
//! Invariants (docs/ARCHITECTURE.md): S1 tokens served ≤ limit; S2 Σ(granted − released) ≤ limit; S3 billed ≥
//! served once reports are in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_tests::cluster::*;
use tollgate_tests::{wait_for, KEY};

async fn set_budget(cluster: &TestCluster, limit: u64) {
    let body = json!({"scope": {"org": "acme", "team": null, "key_id": null}, "limit_tokens": limit, "period": "day"});
    let (status, out) = cluster.admin(cluster.node(2), Method::PUT, "/admin/v1/budgets", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    // Every node's data plane sees the budget before traffic starts.
    for node in cluster.running() {
        eventually_async("budget loaded", || async { !node.gateway.snapshot().budgets.is_empty() }).await;
    }
}

async fn chat(cluster: &TestCluster, node: u64, stream: bool) -> (u16, reqwest::header::HeaderMap, String) {
    let response = cluster
        .client
        .post(format!("{}/v1/chat/completions", cluster.node(node).api_url()))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-direct", "stream": stream, "max_tokens": 20, "messages": [{"role": "user", "content": "count my tokens please"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap_or_default())
}

fn served(cluster: &TestCluster) -> u64 {
    cluster.mock.input_tokens_served() + cluster.mock.output_tokens_served()
}

#[tokio::test]
async fn s1_s2_s3_hold_under_concurrent_load_on_all_nodes() {
    let cluster = TestCluster::start(3).await;
    let limit = 6_000;
    set_budget(&cluster, limit).await;
    let cluster = std::sync::Arc::new(cluster);
    let mut workers = Vec::new();
    for worker in 0..9u64 {
        let cluster = cluster.clone();
        workers.push(tokio::spawn(async move {
            let node = worker % 3 + 1;
            let mut refused = 0;
            let mut ok = 0;
            // A budget that failed open would never refuse: fail instead of hanging.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while refused < 3 {
                assert!(std::time::Instant::now() < deadline, "worker {worker}: never refused after {ok} requests");
                let (status, headers, body) = chat(&cluster, node, worker % 2 == 0).await;
                match status {
                    200 => {
                        ok += 1;
                        // The headers say what the ledger says: the budget's limit, what is left of it (never
                        // more than the limit), and when the day's period resets.
                        let number = |name: &str| {
                            let value = headers.get(name).unwrap_or_else(|| panic!("budgeted responses carry {name}"));
                            value.to_str().unwrap().trim_end_matches('s').parse::<u64>().unwrap()
                        };
                        assert_eq!(number("x-ratelimit-limit-tokens"), limit);
                        assert!(number("x-ratelimit-remaining-tokens") <= limit);
                        assert!(number("x-ratelimit-reset-tokens") <= 86_400, "a day period resets within a day");
                    }
                    429 => {
                        let error: Value = serde_json::from_str(&body).unwrap();
                        assert_eq!(error["error"]["type"], "budget_exceeded", "{error}");
                        assert_eq!(error["error"]["code"], "budget_exceeded");
                        refused += 1;
                    }
                    // Under load a node may briefly wait for allowance from the leader and say so; it
                    // is retried, never served past the budget (S1 below).
                    503 if body.contains("budget_unavailable") || body.contains("overloaded") => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected status {other}: {body}"),
                }
            }
            ok
        }));
    }
    let mut admitted = 0;
    for worker in workers {
        admitted += worker.await.unwrap();
    }
    let served_tokens = served(&cluster);
    // S1: the upstream never served more than the budget.
    assert!(served_tokens <= limit, "S1 violated: served {served_tokens} > limit {limit}");
    assert!(admitted > 0);
    // No over-refusal: most of the budget was usable before refusals began.
    println!("served {served_tokens} of {limit} tokens before refusals");
    assert!(served_tokens * 10 >= limit * 9, "only {served_tokens} of {limit} tokens were usable (< 90 %)");

    // S2 and S3 from the ledger (reports arrive within about a second).
    let node = cluster.node(1);
    let mut budget = Value::Null;
    for _ in 0..100 {
        budget = cluster.admin_get(node, "/admin/v1/budgets?org=acme").await.unwrap();
        if budget["used"].as_u64().unwrap() >= served_tokens {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (used, held) = (budget["used"].as_u64().unwrap(), budget["held"].as_u64().unwrap());
    assert!(used + held <= limit, "S2 violated: {budget}");
    assert!(used >= served_tokens, "S3 violated: billed {used} < served {served_tokens}: {budget}");
}

/// A real partition (node 1's Raft links cut both ways, its API still up): the cut-off node serves from
/// the allowance the ledger granted it, then refuses; it never spends more than it was granted, which the
/// majority's ledger says.
#[tokio::test]
async fn a_partitioned_node_spends_only_what_it_holds_then_fails_closed() {
    let cluster = TestCluster::start(3).await;
    let limit = 4_000;
    set_budget(&cluster, limit).await;
    // Node 1 obtains an allowance while the cluster is whole.
    let (status, _, _) = chat(&cluster, 1, false).await;
    assert_eq!(status, 200);
    cluster.partition(&[1]);
    // What node 1 was granted, as the majority (nodes 2 and 3, with a leader of their own) has it.
    let granted_to_1 = wait_for("the majority's ledger to answer", Duration::from_secs(20), || async {
        let budget = cluster.admin_get(cluster.node(2), "/admin/v1/budgets?org=acme").await.ok()?;
        budget["granted_by_node"]["1"].as_u64()
    })
    .await;
    assert!(granted_to_1 > 0 && granted_to_1 <= limit, "{granted_to_1}");
    // Cut off from any quorum: it serves from what it holds, then refuses with 503 (or 429), never more.
    let mut refusals = Vec::new();
    for _ in 0..200 {
        let (status, _, body) = chat(&cluster, 1, false).await;
        match status {
            200 => {}
            429 | 503 => {
                refusals.push((status, body));
                if refusals.len() >= 2 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!refusals.is_empty(), "the node kept serving without a budget authority");
    if let Some((_, body)) = refusals.iter().find(|(status, _)| *status == 503) {
        let error: Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["error"]["code"], "budget_unavailable", "{error}");
    }
    // Every token the mock served went through node 1: at most what the ledger granted it.
    let served_tokens = served(&cluster);
    println!("node 1 held {granted_to_1} of {limit}; served {served_tokens}");
    assert!(served_tokens <= granted_to_1, "the cut-off node spent {served_tokens} > its grant {granted_to_1}");
    // Healed, the cluster serves again (from the rest of the budget).
    cluster.heal();
    wait_for("node 1 to serve again after the partition healed", Duration::from_secs(20), || async {
        (chat(&cluster, 1, false).await.0 == 200).then_some(())
    })
    .await;
    assert!(served(&cluster) <= limit);
}

#[tokio::test]
async fn missing_max_tokens_is_injected_from_the_allowance_instead_of_refusing() {
    let cluster = TestCluster::start(3).await;
    set_budget(&cluster, 300).await;
    let response = cluster
        .client
        .post(format!("{}/v1/chat/completions", cluster.node(3).api_url()))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "no max_tokens here"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "not refused for a model-maximum reservation");
    let upstream = cluster.mock.requests().pop().unwrap();
    let injected = upstream.body["max_tokens"].as_u64().expect("max_tokens injected upstream");
    assert!((16..3_000).contains(&injected), "{injected}");
}

#[tokio::test]
async fn budget_admin_api_validates_and_reports() {
    let cluster = TestCluster::start(3).await;
    let node = cluster.node(1);
    let (status, body) = cluster
        .admin(node, Method::PUT, "/admin/v1/budgets", Some(json!({"scope": {"org": "nope"}, "limit_tokens": 5})))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) =
        cluster.admin(node, Method::PUT, "/admin/v1/budgets", Some(json!({"scope": {"org": "acme"}}))).await;
    assert_eq!(status, 400, "a limit is required");
    set_budget(&cluster, 1_000).await;
    let budget = cluster.admin_get(cluster.node(3), "/admin/v1/budgets?org=acme").await.unwrap();
    assert_eq!(budget["limit_tokens"], 1000);
    assert_eq!(budget["remaining_tokens"], 1000);
    assert_eq!(budget["period"], "day");
    let (status, _) = cluster.admin(node, Method::GET, "/admin/v1/budgets?org=other", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn requests_per_minute_is_split_across_nodes_and_refused_with_retry_after() {
    let cluster = TestCluster::start(3).await;
    let body = json!({"scope": {"org": "acme"}, "requests_per_minute": 6});
    let (status, out) = cluster.admin(cluster.node(1), Method::PUT, "/admin/v1/budgets", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    for node in cluster.running() {
        eventually_async("budget loaded", || async { !node.gateway.snapshot().budgets.is_empty() }).await;
    }
    // Stay clear of a minute boundary, where the window resets.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    if now % 60_000 > 57_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - now % 60_000 + 100)).await;
    }
    // Each of the 3 nodes admits its share of 2 per minute.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(chat(&cluster, 1, false).await);
    }
    assert_eq!(statuses.iter().map(|(s, _, _)| *s).collect::<Vec<_>>(), [200, 200, 429]);
    let (_, headers, body) = &statuses[2];
    let error: Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"]["code"], "rate_limit_exceeded", "{error}");
    assert!(headers.get("retry-after").is_some());
    assert_eq!(chat(&cluster, 2, false).await.0, 200, "other nodes have their own share");
}

#[tokio::test]
async fn usage_report_groups_tokens_and_cost_by_key_and_model() {
    let cluster = TestCluster::start(3).await;
    for node in 1..=3 {
        assert_eq!(chat(&cluster, node, node == 2).await.0, 200);
    }
    let limited = cluster
        .client
        .post(format!("{}/v1/chat/completions", cluster.node(1).api_url()))
        .bearer_auth(tollgate_tests::LIMITED_KEY)
        .json(&json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 200);
    let served = served(&cluster);
    let mut report = Value::Null;
    for _ in 0..100 {
        report = cluster
            .admin_get(cluster.node(3), "/admin/v1/usage?org=acme&since=2020-01-01T00:00:00Z&group_by=key,model")
            .await
            .unwrap();
        let rows = report["rows"].as_array().cloned().unwrap_or_default();
        let tokens: u64 =
            rows.iter().map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap()).sum();
        if tokens >= served {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = report["rows"].as_array().unwrap();
    let by_key = |key: &str| rows.iter().find(|r| r["key_id"] == key).cloned().unwrap_or(Value::Null);
    assert_eq!(by_key("test")["requests"], 3, "{report}");
    assert_eq!(by_key("limited")["requests"], 1, "{report}");
    assert_eq!(by_key("test")["model"], "gpt-direct");
    let tokens: u64 =
        rows.iter().map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap()).sum();
    assert_eq!(tokens, served, "usage rows match what the upstream served");
    let cost: f64 = rows.iter().map(|r| r["cost_usd"].as_f64().unwrap()).sum();
    assert!(cost > 0.0);
    let (status, _) =
        cluster.admin(cluster.node(1), Method::GET, "/admin/v1/usage?org=acme&since=yesterday", None).await;
    assert_eq!(status, 400);
}

/// Issue 19: the Raft and budget series on `/metrics`, parsed (not grepped), match the admin API.
#[tokio::test]
async fn raft_and_budget_metrics_match_the_admin_api() {
    use tollgate_tests::{parse_metrics, sample};
    let cluster = TestCluster::start(3).await;
    set_budget(&cluster, 1_000).await;
    let leader = cluster.wait_leader().await;
    for _ in 0..3 {
        assert_eq!(chat(&cluster, 1, false).await.0, 200);
    }
    let scrape = |id: u64| {
        let url = format!("{}/metrics", cluster.node(id).admin_url());
        let client = cluster.client.clone();
        async move { parse_metrics(&client.get(url).send().await.unwrap().text().await.unwrap()) }
    };
    let status = cluster.admin_get(cluster.node(1), "/admin/v1/cluster").await.unwrap();
    for id in 1..=3 {
        let metrics = scrape(id).await;
        assert_eq!(sample(&metrics, "tollgate_raft_term", &[]), status["term"].as_f64(), "node {id}");
        assert_eq!(sample(&metrics, "tollgate_raft_leader", &[]), Some(leader as f64), "node {id}");
        assert_eq!(sample(&metrics, "tollgate_raft_is_leader", &[]), Some(f64::from(u8::from(id == leader))));
        assert_eq!(sample(&metrics, "tollgate_raft_members", &[]), Some(3.0));
        assert_eq!(sample(&metrics, "tollgate_budget_limit", &[("scope", "org:acme")]), Some(1_000.0), "node {id}");
    }
    let on_leader = scrape(leader).await;
    let lags: Vec<_> = on_leader.iter().filter(|s| s.name == "tollgate_raft_replication_lag").collect();
    assert_eq!(lags.len(), 3, "the leader reports every member's lag: {lags:?}");
    // Replication progress is reported a moment after it is made: once quiet, the leader's committed index
    // lies between what it applied and what it logged.
    eventually_async("applied <= committed <= last on the leader", || async {
        let metrics = scrape(leader).await;
        let value = |name: &str| sample(&metrics, name, &[]).unwrap_or(f64::NAN);
        let committed = value("tollgate_raft_committed_index");
        value("tollgate_raft_applied_index") <= committed && committed <= value("tollgate_raft_last_log_index")
    })
    .await;
    let on_2 = scrape(2).await;
    let applied = sample(&on_2, "tollgate_raft_proposals_total", &[("result", "applied")]).unwrap();
    assert!(applied >= 1.0, "the budget was written through node 2");
    // Every proposal through node 2 is in the latency histogram, and its buckets are cumulative.
    let proposals: f64 = ["applied", "rejected", "failed"]
        .iter()
        .map(|result| sample(&on_2, "tollgate_raft_proposals_total", &[("result", result)]).unwrap())
        .sum();
    assert_eq!(sample(&on_2, "tollgate_raft_proposal_seconds_count", &[]), Some(proposals));
    assert_eq!(sample(&on_2, "tollgate_raft_proposal_seconds_bucket", &[("le", "+Inf")]), Some(proposals));
    let buckets: Vec<f64> =
        on_2.iter().filter(|s| s.name == "tollgate_raft_proposal_seconds_bucket").map(|s| s.value).collect();
    assert!(buckets.windows(2).all(|pair| pair[0] <= pair[1]), "{buckets:?}");
    // Used and held as the ledger has them, once the usage reports are in.
    eventually_async("metrics and the admin API agree on the budget", || async {
        let budget = cluster.admin_get(cluster.node(1), "/admin/v1/budgets?org=acme").await.unwrap();
        let metrics = scrape(1).await;
        budget["used"].as_f64().is_some_and(|used| used > 0.0)
            && sample(&metrics, "tollgate_budget_used", &[("scope", "org:acme")]) == budget["used"].as_f64()
            && sample(&metrics, "tollgate_budget_held", &[("scope", "org:acme")]) == budget["held"].as_f64()
    })
    .await;
    // A refusal is counted by org and reason.
    set_budget(&cluster, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while chat(&cluster, 3, false).await.0 != 429 {
        assert!(std::time::Instant::now() < deadline, "a one-token budget refuses");
    }
    let refused =
        sample(&scrape(3).await, "tollgate_budget_refusals_total", &[("org", "acme"), ("reason", "budget_exceeded")]);
    assert!(refused.is_some_and(|n| n >= 1.0), "{refused:?}");
}

/// A budget smaller than the route's default output cap: a request without `max_tokens` is served with its
/// output capped to what the budget allows (the ledger cannot grant the whole default ask, but can grant
/// the least the request runs with), not refused on a fresh budget.
#[tokio::test]
async fn a_request_without_max_tokens_fits_a_budget_below_the_default_cap() {
    let cluster = TestCluster::start(3).await;
    set_budget(&cluster, 300).await;
    let response = cluster
        .client
        .post(format!("{}/v1/chat/completions", cluster.node(1).api_url()))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "no cap given"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(served(&cluster) <= 300, "S1: served {}", served(&cluster));
}
