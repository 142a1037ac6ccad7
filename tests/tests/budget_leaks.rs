//! Every path that serves tokens charges for them. Each test drives real traffic through a three-node
//! cluster and counts what the mock upstream generated (its ground truth, not Tollgate's ledger) against
//! the budget: S1 — tokens the upstream generated for the org ≤ the limit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::budget::{generated, set_org_budget, spend_until_refused};
use tollgate_tests::cluster::*;
use tollgate_tests::{Script, KEY};

/// A reply of `words` pieces, so `max_tokens` (not the text) bounds every stream.
fn long_reply(words: usize) -> String {
    (0..words).map(|i| format!(" w{i}")).collect()
}

/// Opens a `/v1/messages` stream, reads `deltas` text deltas and hangs up. Returns the status.
async fn stream_and_hang_up(client: &reqwest::Client, url: &str, deltas: usize) -> u16 {
    let body = json!({"model": "claude-direct", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "tell me a long story"}]});
    let Ok(mut response) = client.post(format!("{url}/v1/messages")).header("x-api-key", KEY).json(&body).send().await
    else {
        return 0;
    };
    let status = response.status().as_u16();
    if status != 200 {
        return status;
    }
    let mut seen = 0;
    let mut text = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        seen = text.matches("\"text_delta\"").count();
        if seen >= deltas {
            break;
        }
    }
    // Near exhaustion the gateway caps max_tokens to what the allowance covers: such a stream may end
    // normally before `deltas`.
    assert!(seen >= deltas || text.contains("message_stop"), "the stream broke after {seen} deltas: {text}");
    drop(response); // hang up mid-stream
    status
}

/// Issue 11.1: clients that read part of an Anthropic stream and hang up used to be charged the
/// placeholder `output_tokens: 1` of `message_start`, so the cluster served several times the budget.
#[tokio::test]
async fn clients_hanging_up_mid_stream_cannot_spend_past_the_budget() {
    let cluster = TestCluster::start(3).await;
    cluster.mock.set_default(Script {
        reply: Some(long_reply(200)),
        delay_between_events: Some(Duration::from_millis(5)),
        ..Script::default()
    });
    let limit = 2_000;
    set_org_budget(&cluster, 2, limit, "day").await;
    let cluster = Arc::new(cluster);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = Vec::new();
    for worker in 0..6u64 {
        let cluster = cluster.clone();
        workers.push(tokio::spawn(async move {
            let url = cluster.node(worker % 3 + 1).api_url();
            let (mut admitted, mut refused) = (0, 0);
            while refused < 3 {
                assert!(Instant::now() < deadline, "budget never refused hung-up streams ({admitted} admitted)");
                match stream_and_hang_up(&cluster.client, &url, 40).await {
                    200 => admitted += 1,
                    429 => refused += 1,
                    503 => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => panic!("unexpected status {other}"),
                }
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for worker in workers {
        admitted += worker.await.unwrap();
    }
    // Every upstream stream has ended (finished or cancelled) before the upstream's count is read.
    tollgate_tests::eventually("every upstream stream to end", || cluster.mock.open_streams() == 0).await;
    let generated = generated(&cluster);
    println!("{admitted} streams admitted, upstream generated {generated} tokens against a limit of {limit}");
    assert!(admitted > 0);
    assert!(generated <= limit, "S1 violated: the upstream generated {generated} tokens > limit {limit}");
}

/// Issue 11.1, the ledger side: a hung-up stream is charged its whole reservation (the upstream may have
/// generated up to `max_tokens` before it noticed), never the placeholder count of `message_start`.
#[tokio::test]
async fn a_hung_up_stream_is_charged_its_whole_reservation() {
    let cluster = TestCluster::start(3).await;
    cluster.mock.set_default(Script {
        reply: Some(long_reply(200)),
        delay_between_events: Some(Duration::from_millis(5)),
        ..Script::default()
    });
    set_org_budget(&cluster, 2, 50_000, "day").await;
    assert_eq!(stream_and_hang_up(&cluster.client, &cluster.node(1).api_url(), 10).await, 200);
    let mut used = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    while used < 100 {
        assert!(Instant::now() < deadline, "the hung-up stream was charged only {used} tokens");
        let budget = cluster.admin_get(cluster.node(1), "/admin/v1/budgets?org=acme").await.unwrap();
        used = budget["used"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let budget: Value = cluster.admin_get(cluster.node(1), "/admin/v1/budgets?org=acme").await.unwrap();
    assert!(budget["used"].as_u64().unwrap() >= 100, "max_tokens 100 is charged in full: {budget}");
}

/// A tool definition of about `bytes` bytes (the provider bills it as input).
fn big_tool(bytes: usize) -> Value {
    let description: String = "Looks things up in the catalogue. ".repeat(bytes / 34 + 1);
    json!([{"type": "function", "function": {"name": "lookup", "description": description,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}])
}

/// Issue 11.2: tool definitions are billed as input; the reservation counted only `messages`, so an org
/// with a 10,000-token budget was billed ~16,000 when each request carried a ~9 KB tool definition.
#[tokio::test]
async fn tool_definitions_are_reserved_so_the_billed_input_stays_within_the_budget() {
    let cluster = TestCluster::start(3).await;
    let limit = 10_000;
    set_org_budget(&cluster, 2, limit, "day").await;
    let body = json!({"model": "gpt-direct", "max_tokens": 20, "tools": big_tool(9_000),
        "messages": [{"role": "user", "content": "find me a book"}]});
    let admitted = spend_until_refused(&cluster, &[1, 2, 3], &body).await;
    let billed = generated(&cluster);
    println!("{admitted} requests with ~9 KB of tools admitted; upstream billed {billed} of {limit}");
    assert!(admitted > 0);
    assert!(billed <= limit, "S1 violated: billed {billed} > limit {limit}");
}

/// Issue 11.2: `n` choices each generate up to `max_tokens`; the reservation covered one.
#[tokio::test]
async fn n_choices_are_reserved_n_times() {
    let cluster = TestCluster::start(3).await;
    let limit = 10_000;
    set_org_budget(&cluster, 2, limit, "day").await;
    let body = json!({"model": "gpt-direct", "max_tokens": 20, "n": 8,
        "messages": [{"role": "user", "content": "give me eight ideas"}]});
    let admitted = spend_until_refused(&cluster, &[1, 2, 3], &body).await;
    let billed = generated(&cluster);
    println!("{admitted} requests with n = 8 admitted; upstream billed {billed} of {limit}");
    assert!(admitted > 0);
    assert!(billed <= limit, "S1 violated: billed {billed} > limit {limit}");
    let last = cluster.mock.requests().pop().unwrap();
    assert_eq!(last.body["n"], 8, "n is passed through");
}

/// Issue 11.2: image parts cost tokens their URL's bytes do not bound.
#[tokio::test]
async fn image_parts_are_reserved_beyond_their_bytes() {
    let cluster = TestCluster::start(3).await;
    let limit = 10_000;
    set_org_budget(&cluster, 2, limit, "day").await;
    let body = json!({"model": "gpt-direct", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is in these?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}]}]});
    let admitted = spend_until_refused(&cluster, &[1, 2, 3], &body).await;
    let billed = generated(&cluster);
    println!("{admitted} requests with two images admitted; upstream billed {billed} of {limit}");
    assert!(admitted > 0);
    assert!(billed <= limit, "S1 violated: billed {billed} > limit {limit}");
}

/// Issue 11.7: a request that timed out after it was sent was settled at zero, though the provider may
/// still be generating it (and will bill it). It is charged its reservation now; a request the upstream
/// refused with an error status is still charged nothing.
#[tokio::test]
async fn a_timeout_after_sending_is_charged_and_an_upstream_refusal_is_not() {
    let cluster = TestCluster::start(3).await;
    set_org_budget(&cluster, 1, 100_000, "day").await;
    let used = || async {
        let budget = cluster.admin_get(cluster.node(1), "/admin/v1/budgets?org=acme").await.unwrap();
        budget["used"].as_u64().unwrap()
    };
    let body = json!({"model": "gpt-direct", "max_tokens": 50, "messages": [{"role": "user", "content": "slow"}]});
    cluster.mock.push(Script { status: Some(400), ..Script::default() });
    assert_eq!(tollgate_tests::budget::chat_status(&cluster, 1, &body).await, 400);
    // The test config's first-byte timeout is 2 s.
    cluster.mock.push(Script { delay_headers: Some(Duration::from_secs(4)), ..Script::default() });
    assert_eq!(tollgate_tests::budget::chat_status(&cluster, 1, &body).await, 504);
    let deadline = Instant::now() + Duration::from_secs(15);
    while used().await < 50 {
        assert!(Instant::now() < deadline, "the timed-out request was charged only {}", used().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let charged = used().await;
    assert!((50..200).contains(&charged), "one reservation (input bound + 50), not the refused request: {charged}");
}
