//! The admin listener's routing, from outside: every path and method gets a JSON answer in the admin
//! API's error shape, the token is checked before anything else, queries are percent-decoded, and a
//! budget's past period can be read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_tests::cluster::*;
use tollgate_tests::Harness;

/// Status, then the body parsed as JSON (a non-JSON body fails the test).
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("admin request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("admin body");
    let body = serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text:?}"));
    (status, body)
}

fn error_type(body: &Value) -> &str {
    body["error"]["type"].as_str().unwrap_or_else(|| panic!("no error.type in {body}"))
}

#[tokio::test]
async fn the_token_is_checked_before_the_path_and_every_error_is_json() {
    let cluster = TestCluster::start(1).await;
    let node = cluster.node(1);
    let url = |path: &str| format!("{}{path}", node.admin_url());
    for path in ["/admin/v1/cluster", "/admin/v1/no-such-thing", "/admin/v1/models/m"] {
        let (status, body) = send(cluster.client.get(url(path))).await;
        assert_eq!((status, error_type(&body)), (401, "authentication_error"), "{path}: {body}");
        let (status, body) = send(cluster.client.get(url(path)).header("authorization", "Bearer ")).await;
        assert_eq!(status, 401, "an empty bearer token is refused on {path}: {body}");
    }
    let (status, body) = send(cluster.client.patch(url("/admin/v1/models/m")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!((status, error_type(&body)), (405, "method_not_allowed"), "{body}");
    assert_eq!(body["error"]["message"], "PATCH is not allowed on /admin/v1/models/m", "the full path: {body}");
    let (status, body) = send(cluster.client.post(url("/admin/v1/audit")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(status, 405, "{body}");
    let (status, body) = send(cluster.client.get(url("/admin/v1/widgets/w")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!((status, error_type(&body)), (404, "not_found_error"));
    assert!(body["error"]["message"].as_str().unwrap().contains("providers, models, routes"), "{body}");
    let (status, body) = send(cluster.client.get(url("/admin/v2/models")).bearer_auth(ADMIN_TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    // Outside /admin/v1: the probes answer GET and HEAD only.
    let (status, body) = send(cluster.client.post(url("/healthz"))).await;
    assert_eq!((status, &body), (405, &json!({"error": "method not allowed"})));
    let head = cluster.client.head(url("/readyz")).send().await.unwrap();
    assert_eq!(head.status(), 200);
}

#[tokio::test]
async fn paths_queries_and_bodies_are_parsed_strictly() {
    let cluster = TestCluster::start(1).await;
    let node = cluster.node(1);
    let url = |path: &str| format!("{}{path}", node.admin_url());
    // A trailing slash names the same collection.
    let with_slash = cluster.admin_get(node, "/admin/v1/models/").await.unwrap();
    assert_eq!(with_slash, cluster.admin_get(node, "/admin/v1/models").await.unwrap());
    assert!(!with_slash["data"].as_array().unwrap().is_empty(), "{with_slash}");
    // Query values are percent-decoded (`acm%65` is `acme`).
    let (status, _) = cluster
        .admin(node, Method::PUT, "/admin/v1/budgets", Some(json!({"scope": {"org": "acme"}, "limit_tokens": 500})))
        .await;
    assert_eq!(status, 200);
    let budget = cluster.admin_get(node, "/admin/v1/budgets?org=acm%65").await.unwrap();
    assert_eq!(budget["limit"], 500, "{budget}");
    // A query value of the wrong type names the parameter.
    let (status, body) = cluster.admin(node, Method::GET, "/admin/v1/budgets?org=acme&period_start=soon", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("period_start"), "{body}");
    let (status, body) = cluster.admin(node, Method::GET, "/admin/v1/usage?org=acme&group_by=team,colour", None).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("colour"), "{body}");
    // A body over 4 MiB is refused before it is parsed; a body that is not JSON names the problem.
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(4 * 1024 * 1024 + 1));
    let (status, body) = send(cluster.client.put(url("/admin/v1/orgs/big")).bearer_auth(ADMIN_TOKEN).body(huge)).await;
    assert_eq!(status, 413, "{body}");
    let (status, body) =
        send(cluster.client.post(url("/admin/v1/keys")).bearer_auth(ADMIN_TOKEN).body("{\"org\": ")).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("invalid JSON body"), "{body}");
    // A field the resource does not have is refused by name (the replicated types accept unknown fields
    // from newer peers; the API does not, so a typo is not a setting silently ignored).
    let typo = json!({"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key_evn": "OPENAI_API_KEY"});
    let (status, body) = cluster.admin(node, Method::PUT, "/admin/v1/providers/typo", Some(typo)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("`api_key_evn`: unknown field"), "{body}");
    // Names in the path are percent-decoded.
    let (status, body) = cluster.admin(node, Method::PUT, "/admin/v1/orgs/acme%20eu", Some(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    let org = cluster.admin_get(node, "/admin/v1/orgs/acme%20eu").await.unwrap();
    assert_eq!(org["name"], "acme eu", "{org}");
    // A bare `?dry_run` is a dry run.
    let dry = cluster.client.post(url("/admin/v1/apply?dry_run")).bearer_auth(ADMIN_TOKEN).body("").send().await;
    let dry: Value = dry.unwrap().json().await.unwrap();
    assert_eq!(dry["result"], "dry_run", "{dry}");
}

#[tokio::test]
async fn a_past_period_of_a_budget_can_be_read() {
    let cluster = TestCluster::start(1).await;
    let node = cluster.node(1);
    let spec = json!({"scope": {"org": "acme"}, "limit_tokens": 10_000, "period": "day"});
    assert_eq!(cluster.admin(node, Method::PUT, "/admin/v1/budgets", Some(spec)).await.0, 200);
    assert_eq!(cluster.chat_default(node, "gpt-direct").await, 200);
    let today = cluster.admin_get(node, "/admin/v1/budgets?org=acme").await.unwrap();
    let start = today["period_start"].as_u64().unwrap();
    let drawn = |budget: &Value| budget["used"].as_u64().unwrap() + budget["held"].as_u64().unwrap();
    assert!(drawn(&today) > 0, "today's traffic drew on today's account: {today}");
    // Any instant inside a period names it; yesterday's period has its own (empty) account.
    let same = cluster.admin_get(node, &format!("/admin/v1/budgets?org=acme&period_start={}", start + 1)).await;
    let same = same.unwrap();
    assert_eq!((same["period_start"].as_u64(), drawn(&same) > 0), (Some(start), true), "{same}");
    let yesterday = start - 86_400_000;
    let past = cluster.admin_get(node, &format!("/admin/v1/budgets?org=acme&period_start={yesterday}")).await.unwrap();
    assert_eq!((past["period_start"].as_u64(), drawn(&past)), (Some(yesterday), 0), "{past}");
    assert_eq!(past["granted_by_node"], Value::Null, "nothing was granted yesterday: {past}");
}

#[tokio::test]
async fn a_standalone_node_says_why_the_replicated_api_is_absent() {
    let harness =
        Harness::start_tweaked("", |config| config.node.secrets.admin_token = Some("standalone-token".into())).await;
    let get = |path: &str| harness.client.get(harness.admin_url(path)).bearer_auth("standalone-token");
    let (status, body) = send(get("/admin/v1/models")).await;
    assert_eq!((status, error_type(&body)), (409, "conflict"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("node.peers"), "{body}");
    let (status, body) = send(get("/admin/v1/cluster/gossip")).await;
    assert_eq!(status, 200, "the gossip view works without Raft: {body}");
}
