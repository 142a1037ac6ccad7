//! Bad input, over real sockets: every malformed, oversized, unauthenticated or unroutable request gets a JSON
//! error in the caller's API shape with the right status, upstream failures are reported the same way, and
//! the node keeps serving afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::*;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const EMBEDDINGS: &str = "/v1/embeddings";

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

fn messages(model: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": "Hello there"}]})
}

/// POSTs raw bytes with the given content type, authenticated the way `caller` would (`"openai"` or
/// `"anthropic"`).
async fn post_raw(
    h: &Harness,
    caller: &str,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let builder = h.client.post(h.url(path)).header("content-type", content_type).body(body);
    let builder = match caller {
        "anthropic" => builder.header("x-api-key", KEY).header("anthropic-version", "2023-06-01"),
        _ => builder.bearer_auth(KEY),
    };
    builder.send().await.expect("request sent")
}

/// Checks status and the OpenAI error shape `{"error": {"message", "type", "code"}}`; returns the `error` object.
async fn openai_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "OpenAI shape needs error.message: {body}");
    assert!(error["type"].is_string(), "OpenAI shape needs error.type: {body}");
    assert!(error.get("code").is_some(), "OpenAI shape needs error.code (may be null): {body}");
    assert!(body.get("type").is_none(), "not the Anthropic shape: {body}");
    error.clone()
}

/// Checks status and the Anthropic error shape `{"type": "error", "error": {"type", "message"}}`.
async fn anthropic_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "content type {content_type}");
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    assert_eq!(body["type"], "error", "Anthropic shape: {body}");
    let error = &body["error"];
    assert!(error["type"].is_string(), "Anthropic shape needs error.type: {body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "Anthropic shape needs error.message: {body}");
    error.clone()
}

/// A good request in each protocol still succeeds.
async fn still_serving(h: &Harness) {
    let response = h.openai(CHAT, &chat("gpt-direct")).await;
    assert_eq!(response.status(), 200);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["choices"][0]["message"]["content"], mock_upstream::DEFAULT_REPLY);
    let response = h.anthropic(MESSAGES, &messages("claude-direct")).await;
    assert_eq!(response.status(), 200);
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["content"][0]["text"], mock_upstream::DEFAULT_REPLY);
}

#[tokio::test]
async fn malformed_json_is_400_in_the_callers_shape() {
    let h = Harness::start().await;
    let broken = r#"{"model": "gpt-direct", "messages": [{"role": "user""#;
    for path in [CHAT, EMBEDDINGS] {
        let error = openai_error(post_raw(&h, "openai", path, "application/json", broken).await, 400).await;
        assert_eq!(error["type"], "invalid_request_error");
    }
    let error = anthropic_error(post_raw(&h, "anthropic", MESSAGES, "application/json", broken).await, 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    // Trailing garbage after a valid object is malformed too.
    let trailing = r#"{"model": "gpt-direct", "messages": [{"role": "user", "content": "hi"}]} x"#;
    openai_error(post_raw(&h, "openai", CHAT, "application/json", trailing).await, 400).await;
    // Invalid UTF-8.
    let bytes: Vec<u8> = b"{\"model\": \"gpt-direct\xff\xfe\", \"messages\": []}".to_vec();
    openai_error(post_raw(&h, "openai", CHAT, "application/json", bytes).await, 400).await;
    assert_eq!(h.mock.request_count(), 0, "nothing bad reaches the upstream");
    still_serving(&h).await;
}

#[tokio::test]
async fn json_that_is_not_an_object_is_400() {
    let h = Harness::start().await;
    for body in [r#"[{"model": "gpt-direct"}]"#, r#""hello""#, "42", "null", "true"] {
        for path in [CHAT, EMBEDDINGS] {
            let error = openai_error(post_raw(&h, "openai", path, "application/json", body).await, 400).await;
            assert_eq!(error["type"], "invalid_request_error", "{path} {body}");
        }
        let error = anthropic_error(post_raw(&h, "anthropic", MESSAGES, "application/json", body).await, 400).await;
        assert_eq!(error["type"], "invalid_request_error", "{body}");
    }
    assert_eq!(h.mock.request_count(), 0);
    still_serving(&h).await;
}

#[tokio::test]
async fn wrong_field_types_name_the_field() {
    let h = Harness::start().await;
    let cases: [(&str, Value); 4] =
        [("stream", json!("yes")), ("max_tokens", json!("ten")), ("messages", json!("hi")), ("model", json!(42))];
    for (field, value) in &cases {
        let mut body = chat("gpt-direct");
        body[*field] = value.clone();
        let error = openai_error(h.openai(CHAT, &body).await, 400).await;
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().unwrap().contains(field), "OpenAI message names `{field}`: {error}");
        assert_eq!(error["param"], *field, "OpenAI param names the field: {error}");

        let mut body = messages("claude-direct");
        body[*field] = value.clone();
        let error = anthropic_error(h.anthropic(MESSAGES, &body).await, 400).await;
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().unwrap().contains(field), "Anthropic message names `{field}`: {error}");
    }
    // Values of the right JSON type but invalid.
    let invalid: [(&str, Value); 3] = [
        ("max_tokens", json!(-1)),
        ("max_tokens", json!(1.5)),
        ("messages", json!([{"role": "robot", "content": "beep"}])),
    ];
    for (field, value) in &invalid {
        let mut body = chat("gpt-direct");
        body[*field] = value.clone();
        let error = openai_error(h.openai(CHAT, &body).await, 400).await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "OpenAI message names `{field}` for {value}: {error}"
        );
        let mut body = messages("claude-direct");
        body[*field] = value.clone();
        let error = anthropic_error(h.anthropic(MESSAGES, &body).await, 400).await;
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "Anthropic message names `{field}` for {value}: {error}"
        );
    }
    // An empty conversation (OpenAI callers; Anthropic requests with `messages: []` are left to the upstream).
    let body = json!({"model": "gpt-direct", "messages": []});
    assert!(openai_error(h.openai(CHAT, &body).await, 400).await["message"].as_str().unwrap().contains("messages"));
    // Content that cannot be translated for a cross-protocol route is the caller's error, not the upstream's.
    let body = json!({"model": "gpt-via-claude", "messages": [{"role": "user", "content": 5}]});
    assert_eq!(openai_error(h.openai(CHAT, &body).await, 400).await["type"], "invalid_request_error");
    let body = json!({"model": "claude-via-gpt", "max_tokens": 10, "messages": [{"role": "user", "content": 5}]});
    assert_eq!(anthropic_error(h.anthropic(MESSAGES, &body).await, 400).await["type"], "invalid_request_error");
    // Embeddings: a number as input, a number as model.
    let error = openai_error(h.openai(EMBEDDINGS, &json!({"model": "embed", "input": 3.5})).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("input"), "{error}");
    let error = openai_error(h.openai(EMBEDDINGS, &json!({"model": 7, "input": "a"})).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("model"), "{error}");
    assert_eq!(h.mock.request_count(), 0);
    still_serving(&h).await;
}

#[tokio::test]
async fn missing_required_fields_and_empty_bodies_are_400() {
    let h = Harness::start().await;
    // No messages.
    let error = openai_error(h.openai(CHAT, &json!({"model": "gpt-direct"})).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("messages"), "{error}");
    let error =
        anthropic_error(h.anthropic(MESSAGES, &json!({"model": "claude-direct", "max_tokens": 10})).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("messages"), "{error}");
    // No model.
    let error =
        openai_error(h.openai(CHAT, &json!({"messages": [{"role": "user", "content": "hi"}]})).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("model"), "{error}");
    // Anthropic requires max_tokens.
    let body = json!({"model": "claude-direct", "messages": [{"role": "user", "content": "hi"}]});
    let error = anthropic_error(h.anthropic(MESSAGES, &body).await, 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert!(error["message"].as_str().unwrap().contains("max_tokens"), "{error}");
    // Embeddings require input.
    let error = openai_error(h.openai(EMBEDDINGS, &json!({"model": "embed"})).await, 400).await;
    assert!(error["message"].as_str().unwrap().contains("input"), "{error}");
    // Empty bodies, with and without a content type.
    for path in [CHAT, EMBEDDINGS] {
        openai_error(post_raw(&h, "openai", path, "application/json", "").await, 400).await;
        let response = h.client.post(h.url(path)).bearer_auth(KEY).send().await.unwrap();
        openai_error(response, 400).await;
    }
    anthropic_error(post_raw(&h, "anthropic", MESSAGES, "application/json", "").await, 400).await;
    assert_eq!(h.mock.request_count(), 0);
    still_serving(&h).await;
}

#[tokio::test]
async fn unknown_model_is_404() {
    let h = Harness::start().await;
    let error = openai_error(h.openai(CHAT, &chat("no-such-model")).await, 404).await;
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"].as_str().unwrap().contains("no-such-model"), "{error}");
    let error = openai_error(h.openai(EMBEDDINGS, &json!({"model": "no-such-model", "input": "a"})).await, 404).await;
    assert_eq!(error["code"], "model_not_found");
    // The upstream model name is not a gateway model name.
    let error = openai_error(h.openai(CHAT, &chat("mock-gpt")).await, 404).await;
    assert_eq!(error["code"], "model_not_found");
    let error = anthropic_error(h.anthropic(MESSAGES, &messages("no-such-model")).await, 404).await;
    assert_eq!(error["type"], "not_found_error");
    assert_eq!(h.mock.request_count(), 0);
    still_serving(&h).await;
}

/// A syntactically valid chat body of about `size` bytes.
fn big_chat_body(size: usize) -> String {
    let filler = "a".repeat(size);
    json!({"model": "gpt-direct", "messages": [{"role": "user", "content": filler}]}).to_string()
}

#[tokio::test]
async fn body_over_the_limit_with_content_length_is_413() {
    let h = Harness::start().await;
    let body = big_chat_body(70_000);
    let error = openai_error(post_raw(&h, "openai", CHAT, "application/json", body.clone()).await, 413).await;
    assert_eq!(error["code"], "request_too_large");
    let error = anthropic_error(post_raw(&h, "anthropic", MESSAGES, "application/json", body.clone()).await, 413).await;
    assert_eq!(error["type"], "request_too_large");
    // Far over the limit, too.
    let huge = big_chat_body(1_000_000);
    openai_error(post_raw(&h, "openai", CHAT, "application/json", huge).await, 413).await;
    assert_eq!(h.mock.request_count(), 0);
    still_serving(&h).await;
}

/// An Anthropic request body of exactly `size` bytes for a model without a context window.
fn anthropic_body_of_size(size: usize) -> String {
    let empty = messages("claude-direct");
    let overhead = {
        let mut b = empty.clone();
        b["messages"][0]["content"] = json!("");
        b.to_string().len()
    };
    let mut body = empty;
    body["messages"][0]["content"] = json!("a".repeat(size - overhead));
    let body = body.to_string();
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn body_limit_is_exact() {
    let h = Harness::start().await;
    let response = post_raw(&h, "anthropic", MESSAGES, "application/json", anthropic_body_of_size(65_536)).await;
    assert_eq!(response.status(), 200, "exactly at the limit is allowed");
    let response = post_raw(&h, "anthropic", MESSAGES, "application/json", anthropic_body_of_size(65_537)).await;
    anthropic_error(response, 413).await;
    let response =
        post_raw(&h, "anthropic", MESSAGES, "application/json", chunked(anthropic_body_of_size(65_536), 5000)).await;
    assert_eq!(response.status(), 200, "exactly at the limit, chunked");
    let response =
        post_raw(&h, "anthropic", MESSAGES, "application/json", chunked(anthropic_body_of_size(65_537), 5000)).await;
    anthropic_error(response, 413).await;
    assert_eq!(h.mock.request_count(), 2);
    still_serving(&h).await;
}

fn chunked(body: String, chunk: usize) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.into_bytes().chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let h = Harness::start().await;
    let error =
        openai_error(post_raw(&h, "openai", CHAT, "application/json", chunked(big_chat_body(70_000), 4096)).await, 413)
            .await;
    assert_eq!(error["code"], "request_too_large");
    let response = post_raw(&h, "anthropic", MESSAGES, "application/json", chunked(big_chat_body(100_000), 1000)).await;
    assert_eq!(anthropic_error(response, 413).await["type"], "request_too_large");
    // A chunked body under the limit is fine.
    let small = chat("gpt-direct").to_string();
    let response = post_raw(&h, "openai", CHAT, "application/json", chunked(small, 7)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.mock.request_count(), 1);
    still_serving(&h).await;
}

#[tokio::test]
async fn unsupported_content_type_is_415() {
    let h = Harness::start().await;
    let body = chat("gpt-direct").to_string();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let error = openai_error(post_raw(&h, "openai", CHAT, content_type, body.clone()).await, 415).await;
        assert_eq!(error["type"], "invalid_request_error");
        let error = anthropic_error(
            post_raw(&h, "anthropic", MESSAGES, content_type, messages("claude-direct").to_string()).await,
            415,
        )
        .await;
        assert_eq!(error["type"], "invalid_request_error");
    }
    // JSON with a charset parameter is still JSON, media types are case-insensitive, and `+json` types are JSON.
    for content_type in ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+JSON"] {
        let response = post_raw(&h, "openai", CHAT, content_type, body.clone()).await;
        assert_eq!(response.status(), 200, "{content_type}");
    }
    assert_eq!(h.mock.request_count(), 3);
    still_serving(&h).await;
}

#[tokio::test]
async fn missing_or_wrong_key_is_401() {
    let h = Harness::start().await;
    let body = chat("gpt-direct");
    let response = h.client.post(h.url(CHAT)).json(&body).send().await.unwrap();
    assert_eq!(openai_error(response, 401).await["type"], "authentication_error");
    let response = h.client.post(h.url(CHAT)).bearer_auth("tg-wrong-key").json(&body).send().await.unwrap();
    assert_eq!(openai_error(response, 401).await["type"], "authentication_error");
    let response =
        h.client.post(h.url(CHAT)).header("authorization", "Basic dGc6dGVzdA==").json(&body).send().await.unwrap();
    assert_eq!(openai_error(response, 401).await["type"], "authentication_error");
    // Even a bad body is refused for authentication first, without revealing anything about it.
    let response = h.client.post(h.url(EMBEDDINGS)).bearer_auth("nope").body("{not json").send().await.unwrap();
    assert_eq!(openai_error(response, 401).await["type"], "authentication_error");

    let body = messages("claude-direct");
    let response =
        h.client.post(h.url(MESSAGES)).header("anthropic-version", "2023-06-01").json(&body).send().await.unwrap();
    assert_eq!(anthropic_error(response, 401).await["type"], "authentication_error");
    let response = h
        .client
        .post(h.url(MESSAGES))
        .header("x-api-key", "tg-wrong-key")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic_error(response, 401).await["type"], "authentication_error");
    // Model listing needs a key too.
    let response = h.client.get(h.url("/v1/models")).send().await.unwrap();
    assert_eq!(openai_error(response, 401).await["type"], "authentication_error");
    assert_eq!(h.mock.request_count(), 0);
    still_serving(&h).await;
}

#[tokio::test]
async fn wrong_method_is_405_and_unknown_path_is_404() {
    let h = Harness::start().await;
    for path in [CHAT, EMBEDDINGS] {
        let response = h.client.get(h.url(path)).bearer_auth(KEY).send().await.unwrap();
        openai_error(response, 405).await;
    }
    let response = h.client.put(h.url(CHAT)).bearer_auth(KEY).json(&chat("gpt-direct")).send().await.unwrap();
    openai_error(response, 405).await;
    let response = h
        .client
        .get(h.url(MESSAGES))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    anthropic_error(response, 405).await;
    let response = h.client.post(h.url("/v1/models")).bearer_auth(KEY).json(&json!({})).send().await.unwrap();
    openai_error(response, 405).await;

    for path in ["/v1/nope", "/v2/chat/completions", "/", "/v1/chat/completions/extra"] {
        let response = h.client.post(h.url(path)).bearer_auth(KEY).json(&chat("gpt-direct")).send().await.unwrap();
        openai_error(response, 404).await;
    }
    let response = h
        .client
        .post(h.url("/v1/nope"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    anthropic_error(response, 404).await;
    assert_eq!(h.mock.request_count(), 0);
    still_serving(&h).await;
}

#[tokio::test]
async fn max_tokens_above_the_models_cap_is_400() {
    let h = Harness::start().await;
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut body = chat("gpt-direct");
        body[field] = json!(4096);
        let error = openai_error(h.openai(CHAT, &body).await, 400).await;
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().unwrap().contains("2048"), "{error}");
    }
    // Anthropic callers on a capped route get their own shape.
    let mut body = messages("gpt-direct");
    body["max_tokens"] = json!(5000);
    assert_eq!(anthropic_error(h.anthropic(MESSAGES, &body).await, 400).await["type"], "invalid_request_error");
    // At the cap is fine.
    let mut body = chat("gpt-direct");
    body["max_tokens"] = json!(2048);
    assert_eq!(h.openai(CHAT, &body).await.status(), 200);
    assert_eq!(h.mock.request_count(), 1);
    still_serving(&h).await;
}

/// Roughly `bytes` of ordinary English prose.
fn prose(bytes: usize) -> String {
    const SENTENCE: &str =
        "The committee reviewed the quarterly budget and asked several questions about travel costs. ";
    SENTENCE.repeat(bytes / SENTENCE.len() + 1)
}

#[tokio::test]
async fn context_window_exceeded_is_400_context_length_exceeded() {
    let h = Harness::start().await;
    // ~40 KB of prose is several thousand tokens more than gpt-direct's 4096-token window.
    let text = prose(40_000);
    let body = json!({"model": "gpt-direct", "messages": [{"role": "user", "content": text}]});
    let error = openai_error(h.openai(CHAT, &body).await, 400).await;
    assert_eq!(error["code"], "context_length_exceeded");
    assert_eq!(error["type"], "invalid_request_error");
    let body = json!({"model": "gpt-direct", "max_tokens": 100, "messages": [{"role": "user", "content": text}]});
    assert_eq!(anthropic_error(h.anthropic(MESSAGES, &body).await, 400).await["type"], "invalid_request_error");
    // A prompt that fits leaves room for the completion: a small prompt plus a large max_tokens is fine…
    let mut body = chat("gpt-direct");
    body["max_tokens"] = json!(2000);
    assert_eq!(h.openai(CHAT, &body).await.status(), 200);
    // …but a medium prompt whose tokens plus max_tokens overflow the window is not.
    let body =
        json!({"model": "gpt-direct", "max_tokens": 2048, "messages": [{"role": "user", "content": prose(18_000)}]});
    assert_eq!(openai_error(h.openai(CHAT, &body).await, 400).await["code"], "context_length_exceeded");
    assert_eq!(h.mock.request_count(), 1);
    still_serving(&h).await;
}

#[tokio::test]
async fn upstream_garbage_is_502_in_the_callers_shape() {
    let h = Harness::start().await;
    let garbage = || Script { garbage_body: true, ..Default::default() };
    h.mock.push(garbage());
    let error = openai_error(h.openai(CHAT, &chat("gpt-direct")).await, 502).await;
    assert_eq!(error["type"], "api_error");
    h.mock.push(garbage());
    assert_eq!(
        anthropic_error(h.anthropic(MESSAGES, &messages("claude-direct")).await, 502).await["type"],
        "api_error"
    );
    // Cross-protocol, both ways.
    h.mock.push(garbage());
    openai_error(h.openai(CHAT, &chat("gpt-via-claude")).await, 502).await;
    h.mock.push(garbage());
    anthropic_error(h.anthropic(MESSAGES, &messages("claude-via-gpt")).await, 502).await;
    h.mock.push(garbage());
    openai_error(h.openai(EMBEDDINGS, &json!({"model": "embed", "input": "a"})).await, 502).await;
    assert_eq!(h.mock.request_count(), 5);
    still_serving(&h).await;
}

#[tokio::test]
async fn upstream_400_passes_through_same_protocol_and_is_translated_across() {
    let h = Harness::start().await;
    // OpenAI caller on an OpenAI upstream: the provider's error body, unchanged.
    h.mock.push(Script { status: Some(400), ..Default::default() });
    let response = h.openai(CHAT, &chat("gpt-direct")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "Invalid request.", "type": "invalid_request_error", "param": null, "code": null}})
    );
    // Anthropic caller on an Anthropic upstream: unchanged too.
    h.mock.push(Script { status: Some(400), ..Default::default() });
    let response = h.anthropic(MESSAGES, &messages("claude-direct")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "Invalid request."}})
    );
    // Anthropic caller on an OpenAI upstream: Anthropic shape, same status, the provider's message.
    h.mock.push(Script { status: Some(400), ..Default::default() });
    let error = anthropic_error(h.anthropic(MESSAGES, &messages("claude-via-gpt")).await, 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["message"], "Invalid request.");
    // OpenAI caller on an Anthropic upstream: OpenAI shape.
    h.mock.push(Script { status: Some(400), ..Default::default() });
    let error = openai_error(h.openai(CHAT, &chat("gpt-via-claude")).await, 400).await;
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["message"], "Invalid request.");
    // A streaming request whose upstream refuses it gets a plain JSON error, not an event stream.
    h.mock.push(Script { status: Some(400), ..Default::default() });
    let mut body = messages("claude-via-gpt");
    body["stream"] = json!(true);
    assert_eq!(anthropic_error(h.anthropic(MESSAGES, &body).await, 400).await["type"], "invalid_request_error");
    // Other upstream 4xx keep their status and get the matching type in the caller's shape.
    h.mock.push(Script { status: Some(404), ..Default::default() });
    assert_eq!(
        anthropic_error(h.anthropic(MESSAGES, &messages("claude-via-gpt")).await, 404).await["type"],
        "not_found_error"
    );
    assert_eq!(h.mock.request_count(), 6, "a 4xx is never retried");
    still_serving(&h).await;
}

#[tokio::test]
async fn upstream_hang_past_the_first_byte_timeout_is_504() {
    let h = Harness::start().await;
    let slow = || Script { delay_headers: Some(Duration::from_secs(3)), ..Default::default() };
    h.mock.push(slow());
    let started = Instant::now();
    let error = openai_error(h.openai(CHAT, &chat("gpt-direct")).await, 504).await;
    assert_eq!(error["type"], "api_error");
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout fired: {:?}", started.elapsed());

    h.mock.push(slow());
    let started = Instant::now();
    assert_eq!(
        anthropic_error(h.anthropic(MESSAGES, &messages("claude-direct")).await, 504).await["type"],
        "api_error"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A streaming request that never gets headers is a plain 504 too (nothing was streamed yet).
    h.mock.push(slow());
    let mut body = chat("gpt-direct");
    body["stream"] = json!(true);
    let started = Instant::now();
    openai_error(h.openai(CHAT, &body).await, 504).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    still_serving(&h).await;
}

#[tokio::test]
async fn concurrent_bad_requests_do_not_disturb_good_ones() {
    let h = Harness::start().await;
    let h = &h;
    let mut tasks = Vec::new();
    for i in 0..60usize {
        tasks.push(async move {
            match i % 6 {
                0 | 3 => {
                    let response = h.openai(CHAT, &chat("gpt-direct")).await;
                    assert_eq!(response.status(), 200, "good request {i}");
                    let out: Value = response.json().await.unwrap();
                    assert_eq!(out["choices"][0]["message"]["content"], mock_upstream::DEFAULT_REPLY);
                    true
                }
                1 => {
                    openai_error(post_raw(h, "openai", CHAT, "application/json", "{broken").await, 400).await;
                    false
                }
                2 => {
                    let response =
                        h.client.post(h.url(CHAT)).bearer_auth("wrong").json(&chat("gpt-direct")).send().await.unwrap();
                    openai_error(response, 401).await;
                    false
                }
                4 => {
                    anthropic_error(h.anthropic(MESSAGES, &messages("no-such-model")).await, 404).await;
                    false
                }
                _ => {
                    let body = big_chat_body(70_000);
                    openai_error(post_raw(h, "openai", CHAT, "application/json", chunked(body, 8192)).await, 413).await;
                    false
                }
            }
        });
    }
    let results = futures_util::future::join_all(tasks).await;
    let good = results.iter().filter(|ok| **ok).count();
    assert_eq!(good, 20);
    assert_eq!(h.mock.request_count(), 20, "only good requests reach the upstream");
    still_serving(h).await;
}
