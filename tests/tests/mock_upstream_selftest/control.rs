//! The control API a mock run as its own process is driven through (`/_mock/script`, `/_mock/stats`).

use serde_json::{json, Value};
use tollgate_tests::mock_upstream::{MockUpstream, DEFAULT_REPLY};

#[tokio::test]
async fn a_script_posted_over_the_socket_drives_the_next_request_and_stats_count_what_was_made() {
    let mock = MockUpstream::start().await;
    let client = reqwest::Client::new();
    let control = |path: &str| format!("{}/_mock/{path}", mock.base_url());
    let queued = client
        .post(control("script"))
        .json(&json!({"tool_call": ["get_weather", "{\"city\": \"Paris\"}"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 200);
    let misspelt = client.post(control("script")).json(&json!({"tool_cal": ["x", "{}"]})).send().await.unwrap();
    assert_eq!(misspelt.status(), 400, "a misspelt script is refused, not run as the default");
    assert!(misspelt.text().await.unwrap().contains("tool_cal"));

    let chat = |content: &str| {
        client
            .post(format!("{}/chat/completions", mock.openai_base_url()))
            .json(&json!({"model": "mock-gpt", "messages": [{"role": "user", "content": content}]}))
            .send()
    };
    let first: Value = chat("weather?").await.unwrap().json().await.unwrap();
    let call = &first["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather", "{first}");
    assert_eq!(call["arguments"], "{\"city\": \"Paris\"}");
    let second: Value = chat("and now?").await.unwrap().json().await.unwrap();
    assert_eq!(second["choices"][0]["message"]["content"], DEFAULT_REPLY, "one script, one request");

    let stats: Value = client.get(control("stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["model_requests"], 2, "{stats}");
    let made =
        first["usage"]["completion_tokens"].as_u64().unwrap() + second["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(stats["output_tokens"], made, "{stats}");
    assert_eq!(stats["last_request"]["messages"][0]["content"], "and now?");
    assert_eq!(mock.request_count(), 2, "control calls are not recorded as requests");
}

#[tokio::test]
async fn a_posted_script_can_make_the_model_reason() {
    let mock = MockUpstream::start().await;
    let client = reqwest::Client::new();
    let queued =
        client.post(format!("{}/_mock/script", mock.base_url())).json(&json!({"reasoning": "Six sevens."})).send();
    assert_eq!(queued.await.unwrap().status(), 200);
    let body = json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "6 x 7?"}]});
    let out = super::post_json(super::chat_url(&mock), body).await;
    let message = &out["choices"][0]["message"];
    assert_eq!(
        (message["reasoning_content"].as_str(), message["content"].as_str()),
        (Some("Six sevens."), Some(DEFAULT_REPLY))
    );
}
