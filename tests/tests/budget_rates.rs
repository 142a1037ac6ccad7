//! Per-minute limits next to a period budget: a request the budget refuses takes nothing from the
//! tokens-per-minute window, so a burst of refusals cannot lock an org out after its budget is raised.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{json, Value};
use tollgate_tests::cluster::*;
use tollgate_tests::KEY;

async fn chat(cluster: &TestCluster) -> (u16, Value) {
    let response = cluster
        .client
        .post(format!("{}/v1/chat/completions", cluster.node(1).api_url()))
        .bearer_auth(KEY)
        .json(
            &json!({"model": "gpt-direct", "max_tokens": 50, "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .send()
        .await
        .expect("chat sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn set_budget(cluster: &TestCluster, limit_tokens: u64) {
    let spec = json!({"scope": {"org": "acme"}, "limit_tokens": limit_tokens, "tokens_per_minute": 600});
    let (status, body) = cluster.admin(cluster.node(1), Method::PUT, "/admin/v1/budgets", Some(spec)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn refusals_by_the_budget_do_not_use_up_the_per_minute_window() {
    let cluster = TestCluster::start(1).await;
    // Each request asks for ~60 tokens (prompt + max_tokens 50); ten of them are 600, the whole minute.
    set_budget(&cluster, 10).await;
    for attempt in 0..10 {
        let (status, body) = chat(&cluster).await;
        assert_eq!(status, 429, "attempt {attempt}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("budget exhausted"), "refused by the budget, not the window: {body}");
    }
    set_budget(&cluster, 100_000).await;
    let (status, body) = chat(&cluster).await;
    assert_eq!(status, 200, "the per-minute window still has room after refusals: {body}");
}
