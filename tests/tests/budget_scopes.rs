//! Budgets beyond one org token budget, end to end on a 3-node cluster, checked against what the mock
//! upstream served: team and key budgets (the tightest wins, deleting one hands over to the next), a cost
//! budget in dollars with an Anthropic-shaped refusal, tokens per minute, and a month period.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_tests::budget::{generated, set_org_rate_limits};
use tollgate_tests::cluster::{eventually_async, TestCluster};
use tollgate_tests::{wait_for, KEY};

fn small_chat() -> Value {
    json!({"model": "gpt-direct", "max_tokens": 20, "messages": [{"role": "user", "content": "count my tokens"}]})
}

/// PUTs a budget through node 1 and waits until every node's data plane has a budget for `scope_id`.
async fn put_budget(cluster: &TestCluster, body: Value, scope_id: &str) {
    let (status, out) = cluster.admin(cluster.node(1), Method::PUT, "/admin/v1/budgets", Some(body)).await;
    assert_eq!(status, 200, "{out}");
    for node in cluster.running() {
        eventually_async(&format!("budget {scope_id} loaded"), || async {
            node.gateway.snapshot().budgets.contains_key(scope_id)
        })
        .await;
    }
}

/// Chat completions with `key` through node 1 until 3 refusals in a row (429); 503s are retried. Returns
/// the number admitted and the last refusal's body.
async fn spend(cluster: &TestCluster, key: &str) -> (u64, Value) {
    let url = format!("{}/v1/chat/completions", cluster.node(1).api_url());
    let (mut admitted, mut refused, mut last) = (0, 0, Value::Null);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while refused < 3 {
        assert!(std::time::Instant::now() < deadline, "never refused after {admitted} admitted");
        let (status, body) = tollgate_tests::post_json(&cluster.client, &url, key, &small_chat()).await;
        match status {
            200 => (admitted, refused) = (admitted + 1, 0),
            429 => (refused, last) = (refused + 1, body),
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    (admitted, last)
}

/// Team `acme/research` and a key in it: (secret, key id).
async fn team_research_key(cluster: &TestCluster) -> (String, String) {
    let node = cluster.node(1);
    let (status, out) = cluster.admin(node, Method::PUT, "/admin/v1/teams/acme/research", Some(json!({}))).await;
    assert_eq!(status, 200, "{out}");
    let (status, created) = cluster
        .admin(node, Method::POST, "/admin/v1/keys", Some(json!({"org": "acme", "team": "research", "name": "r"})))
        .await;
    assert_eq!(status, 201, "{created}");
    let (key, key_id) = (created["key"].as_str().unwrap().to_owned(), created["id"].as_str().unwrap().to_owned());
    (key, key_id)
}

/// A key's budget under its team's under its org's: the key's (tightest) binds first; deleted, the team's
/// binds; deleted too, the org's large one leaves the key free again. Other keys of the org never feel the
/// team's budget.
#[tokio::test]
async fn team_and_key_budgets_the_tightest_wins_and_delete_lifts_it() {
    let cluster = TestCluster::start(3).await;
    let node = cluster.node(1);
    let (key, key_id) = team_research_key(&cluster).await;
    put_budget(&cluster, json!({"scope": {"org": "acme"}, "limit_tokens": 1_000_000, "period": "day"}), "org:acme")
        .await;
    let team_scope = json!({"org": "acme", "team": "research"});
    put_budget(
        &cluster,
        json!({"scope": team_scope, "limit_tokens": 3_000, "period": "day"}),
        "org:acme/team:research",
    )
    .await;
    let key_scope = json!({"org": "acme", "key_id": key_id});
    put_budget(
        &cluster,
        json!({"scope": key_scope, "limit_tokens": 1_200, "period": "day"}),
        &format!("org:acme/key:{key_id}"),
    )
    .await;
    // The key can reach its budget through the cluster's key cache once the key itself has arrived.
    let url = format!("{}/v1/chat/completions", node.api_url());
    wait_for("the new key to be served", Duration::from_secs(10), || async {
        (tollgate_tests::post_json(&cluster.client, &url, &key, &small_chat()).await.0 == 200).then_some(())
    })
    .await;

    let (_, refusal) = spend(&cluster, &key).await;
    assert_eq!(refusal["error"]["code"], "budget_exceeded", "{refusal}");
    let by_key = generated(&cluster);
    println!("key budget: served {by_key} of 1,200");
    assert!(by_key <= 1_200, "the key's budget (the tightest) was exceeded: {by_key}");
    assert!(by_key >= 1_200 / 2, "the key's budget refused early: {by_key}");
    // Other keys of the org are not in the team: served.
    assert_eq!(cluster.chat_default(node, "gpt-direct").await, 200);
    let others = generated(&cluster) - by_key;

    // Deleting the key's budget hands over to the team's.
    let path = format!("/admin/v1/budgets?org=acme&key_id={key_id}");
    let (status, out) = cluster.admin(node, Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{out}");
    let (status, _) = cluster.admin(node, Method::GET, &path, None).await;
    assert_eq!(status, 404, "a deleted budget is gone");
    spend(&cluster, &key).await;
    let by_team = generated(&cluster) - others;
    println!("team budget: served {by_team} of 3,000 through the team's key");
    assert!(by_team <= 3_000, "the team's budget was exceeded: {by_team}");
    assert!(by_team > 1_200, "the team's budget never took over from the deleted key budget: {by_team}");

    // Deleting the team's too leaves the org's large budget: the key is served again.
    let (status, out) = cluster.admin(node, Method::DELETE, "/admin/v1/budgets?org=acme&team=research", None).await;
    assert_eq!(status, 200, "{out}");
    wait_for("the team's key to be served after both budgets were deleted", Duration::from_secs(10), || async {
        (tollgate_tests::post_json(&cluster.client, &url, &key, &small_chat()).await.0 == 200).then_some(())
    })
    .await;
}

/// A key budget stated with the key's team in its scope (`budgets set --org --team --key-id`, or
/// `{"org", "team", "key_id"}`) is accepted; it must bind like the same budget stated without the team.
#[tokio::test]
async fn a_key_budget_stated_with_its_team_binds() {
    let cluster = TestCluster::start(3).await;
    let node = cluster.node(1);
    let (key, key_id) = team_research_key(&cluster).await;
    let scope = json!({"org": "acme", "team": "research", "key_id": key_id});
    let scope_id = format!("org:acme/team:research/key:{key_id}");
    put_budget(&cluster, json!({"scope": scope, "limit_tokens": 1_200, "period": "day"}), &scope_id).await;
    let url = format!("{}/v1/chat/completions", node.api_url());
    wait_for("the new key to be served", Duration::from_secs(10), || async {
        (tollgate_tests::post_json(&cluster.client, &url, &key, &small_chat()).await.0 == 200).then_some(())
    })
    .await;
    // A request costs the mock about 19 tokens: 1,200 is about 60 of them, 100 are far past it.
    for _ in 0..100 {
        if tollgate_tests::post_json(&cluster.client, &url, &key, &small_chat()).await.0 == 429 {
            break;
        }
    }
    let served = generated(&cluster);
    assert!(served <= 1_200, "the key's budget was not enforced: {served} served");
}

/// `limit_cost`: USD per period at the route's prices. Anthropic callers are refused in Anthropic's shape.
#[tokio::test]
async fn a_cost_budget_refuses_at_its_dollar_limit_in_the_callers_shape() {
    let cluster = TestCluster::start(3).await;
    // claude-direct costs $3 / $15 per million input / output tokens: micro-dollars per token.
    put_budget(&cluster, json!({"scope": {"org": "acme"}, "limit_cost": 0.002, "period": "day"}), "org:acme").await;
    let url = format!("{}/v1/messages", cluster.node(1).api_url());
    let body =
        json!({"model": "claude-direct", "max_tokens": 20, "messages": [{"role": "user", "content": "price me"}]});
    let (mut admitted, mut refusal) = (0, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while refusal.is_none() {
        assert!(std::time::Instant::now() < deadline, "the cost budget never refused ({admitted} admitted)");
        let response = cluster
            .client
            .post(&url)
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => admitted += 1,
            429 => refusal = Some(response.json::<Value>().await.unwrap()),
            503 => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    let refusal = refusal.unwrap();
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert_eq!(refusal["error"]["type"], "rate_limit_error", "Anthropic's type for a refusal: {refusal}");
    assert!(refusal["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{refusal}");
    let spent_micro_usd = cluster.mock.input_tokens_served() * 3 + cluster.mock.output_tokens_served() * 15;
    println!("{admitted} admitted, {spent_micro_usd} of 2,000 micro-dollars spent");
    assert!(spent_micro_usd <= 2_000, "the cost budget was exceeded: {spent_micro_usd} micro-dollars");
    assert!(admitted >= 3, "refused long before the limit: {admitted} admitted, {spent_micro_usd} spent");
    let budget = cluster.admin_get(cluster.node(2), "/admin/v1/budgets?org=acme").await.unwrap();
    assert_eq!((&budget["unit"], &budget["limit"]), (&json!("micro_usd"), &json!(2_000)), "{budget}");
}

/// `tokens_per_minute`, split across the three nodes: one node stops at its share and says when to retry;
/// another still has its own.
#[tokio::test]
async fn tokens_per_minute_stops_a_node_at_its_share() {
    let cluster = TestCluster::start(3).await;
    let per_minute = 900;
    set_org_rate_limits(&cluster, json!({"tokens_per_minute": per_minute})).await;
    let url = format!("{}/v1/chat/completions", cluster.node(1).api_url());
    let mut refusal = None;
    for _ in 0..100 {
        let response = cluster.client.post(&url).bearer_auth(KEY).json(&small_chat()).send().await.unwrap();
        if response.status() == 429 {
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            refusal = Some((retry_after, response.json::<Value>().await.unwrap()));
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let (retry_after, error) = refusal.expect("node 1 never stopped at its share of the minute");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded", "{error}");
    let retry_after: u64 = retry_after.expect("a Retry-After header").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "retry within the minute: {retry_after}");
    let served = generated(&cluster);
    println!("node 1 served {served} tokens of its {} share", per_minute / 3);
    assert!(served <= per_minute / 3, "node 1 went past its share of the minute: {served}");
    let url = format!("{}/v1/chat/completions", cluster.node(2).api_url());
    let (status, out) = tollgate_tests::post_json(&cluster.client, &url, KEY, &small_chat()).await;
    assert_eq!(status, 200, "node 2 has its own share: {out}");
}

/// A month period: the ledger's period is the calendar month (UTC), and budgeted answers say when it
/// resets.
#[tokio::test]
async fn a_month_budget_runs_to_the_end_of_the_calendar_month() {
    let cluster = TestCluster::start(3).await;
    put_budget(&cluster, json!({"scope": {"org": "acme"}, "limit_tokens": 50_000, "period": "month"}), "org:acme")
        .await;
    let response = cluster
        .client
        .post(format!("{}/v1/chat/completions", cluster.node(3).api_url()))
        .bearer_auth(KEY)
        .json(&small_chat())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reset: u64 =
        response.headers()["x-ratelimit-reset-tokens"].to_str().unwrap().trim_end_matches('s').parse().unwrap();
    let budget = cluster.admin_get(cluster.node(1), "/admin/v1/budgets?org=acme").await.unwrap();
    assert_eq!(budget["period"], "month", "{budget}");
    let (start, end) = (budget["period_start"].as_u64().unwrap(), budget["period_end"].as_u64().unwrap());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(start <= now && now < end, "{budget}");
    let days = (end - start) / 86_400_000;
    assert!((28..=31).contains(&days) && (end - start) % 86_400_000 == 0, "a calendar month: {budget}");
    assert_eq!(start % 86_400_000, 0, "it starts at midnight UTC: {budget}");
    let (_, _, day_of_month) = civil_from_days((start / 86_400_000) as i64);
    assert_eq!(day_of_month, 1, "it starts on the 1st: {budget}");
    let until_end = (end - now) / 1000;
    assert!(reset.abs_diff(until_end) <= 60, "reset in {reset} s, the month ends in {until_end} s");
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}
