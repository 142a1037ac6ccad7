//! Issue 14.11: what crosses the gateway in headers. The caller's `Idempotency-Key` reaches the provider
//! (so a provider that de-duplicates retries can); the provider's own rate-limit headers reach the caller,
//! except where a budget's `x-ratelimit-*-tokens` speak for the gateway; `anthropic-beta` goes to
//! Anthropic only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::json;
use tollgate_tests::cluster::TestCluster;
use tollgate_tests::{Harness, KEY};

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Posts `body` to `path` as the caller's SDK would (its key and, for `/v1/messages`, its version), plus
/// `headers`; returns the response and what the upstream received.
async fn send(
    harness: &Harness,
    path: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> (reqwest::Response, tollgate_tests::mock_upstream::RecordedRequest) {
    let mut request = harness.client.post(harness.url(path)).json(&body);
    request = if path == "/v1/messages" {
        request.header("x-api-key", KEY).header("anthropic-version", "2023-06-01")
    } else {
        request.bearer_auth(KEY)
    };
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let sent = harness.mock.requests().last().cloned().expect("the upstream got the request");
    (response, sent)
}

#[tokio::test]
async fn idempotency_keys_go_up_and_provider_rate_limits_come_back() {
    let harness = Harness::start().await;
    let chat = json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "hi"}]});
    let headers = [("idempotency-key", "retry-1234"), ("openai-organization", "org-of-the-caller")];
    let (response, sent) = send(&harness, "/v1/chat/completions", &headers, chat).await;
    assert_eq!(header(&response, "x-ratelimit-remaining-requests").as_deref(), Some("9999"));
    assert_eq!(header(&response, "x-ratelimit-limit-requests").as_deref(), Some("10000"));
    assert_eq!(sent.header("idempotency-key"), Some("retry-1234"));
    assert_eq!(sent.header("openai-organization"), None, "the operator's key chooses the organization");

    let messages = json!({"model": "claude-direct", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let headers = [("anthropic-beta", "some-beta-2025"), ("idempotency-key", "retry-5678")];
    let (response, sent) = send(&harness, "/v1/messages", &headers, messages).await;
    assert_eq!(header(&response, "anthropic-ratelimit-requests-remaining").as_deref(), Some("3999"));
    assert_eq!(
        (sent.header("idempotency-key"), sent.header("anthropic-beta")),
        (Some("retry-5678"), Some("some-beta-2025"))
    );

    // Translated: the Anthropic caller's beta header does not reach the OpenAI-compatible upstream.
    let translated =
        json!({"model": "claude-via-gpt", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]});
    let (_, sent) = send(&harness, "/v1/messages", &[("anthropic-beta", "some-beta-2025")], translated).await;
    assert_eq!(sent.header("anthropic-beta"), None);
}

#[tokio::test]
async fn a_budget_speaks_for_the_token_headers_next_to_the_providers_request_headers() {
    let cluster = TestCluster::start(1).await;
    let node = cluster.node(1);
    let spec = json!({"scope": {"org": "acme"}, "limit_tokens": 50_000});
    assert_eq!(cluster.admin(node, Method::PUT, "/admin/v1/budgets", Some(spec)).await.0, 200);
    let response = cluster
        .client
        .post(format!("{}/v1/chat/completions", node.api_url()))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-direct", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ratelimit-limit-tokens").as_deref(), Some("50000"), "the budget's");
    assert_eq!(header(&response, "x-ratelimit-remaining-requests").as_deref(), Some("9999"), "the provider's");
}
