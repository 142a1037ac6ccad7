//! Issue 14.6, end to end: parameters that map across the two APIs arrive mapped at the upstream (as the
//! strict mock checks them), and the ones that cannot are named in `x-tollgate-dropped-params` — never
//! silently lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;
use tollgate_tests::{dropped_params, Harness};

#[tokio::test]
async fn openai_reasoning_effort_reaches_anthropic_as_a_thinking_budget() {
    let harness = Harness::start().await;
    for stream in [false, true] {
        let request = json!({
            "model": "gpt-via-claude", "stream": stream, "reasoning_effort": "low", "max_completion_tokens": 900,
            "seed": 42, "logprobs": true, "temperature": 0.3,
            "messages": [{"role": "user", "name": "alice", "content": "What is 6 x 7?"}],
        });
        let response = harness.openai("/v1/chat/completions", &request).await;
        assert_eq!(response.status(), 200, "stream {stream}");
        // max_completion_tokens 900 is below Anthropic's least thinking budget (1024): no thinking.
        assert_eq!(dropped_params(&response).as_deref(), Some("logprobs, messages[].name, reasoning_effort, seed"));
        let sent = harness.mock.last_body();
        assert!(sent.get("thinking").is_none() && sent.get("seed").is_none(), "{sent}");
        assert_eq!(sent["temperature"], 0.3, "kept when thinking is off: {sent}");
        let _ = response.text().await;
    }
    // With room for it: the budget stays below max_tokens (which covers thinking and answer).
    let request = json!({
        "model": "p-anthropic", "reasoning_effort": "high", "temperature": 0.3, "max_completion_tokens": 4000,
        "messages": [{"role": "user", "content": "What is 6 x 7?"}],
    });
    let response = harness.openai("/v1/chat/completions", &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(dropped_params(&response).as_deref(), Some("temperature"), "thinking excludes a temperature");
    let sent = harness.mock.last_body();
    assert_eq!(sent["thinking"], json!({"type": "enabled", "budget_tokens": 3999}), "{sent}");
    assert!(sent.get("temperature").is_none(), "{sent}");
}

#[tokio::test]
async fn anthropic_top_k_and_thinking_are_reported_when_the_openai_target_cannot_take_them() {
    let harness = Harness::start().await;
    let request = json!({
        "model": "claude-via-gpt", "max_tokens": 3000, "top_k": 40,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "What is 6 x 7?"}],
    });
    let response = harness.anthropic("/v1/messages", &request).await;
    assert_eq!(response.status(), 200);
    // The target (mock-gpt) is not an OpenAI reasoning model: it would refuse reasoning_effort.
    assert_eq!(dropped_params(&response).as_deref(), Some("thinking, top_k"));
    let sent = harness.mock.last_body();
    assert!(sent.get("reasoning_effort").is_none() && sent.get("top_k").is_none(), "{sent}");
    // Same protocol: nothing is translated, nothing is dropped.
    let same = json!({"model": "claude-direct", "max_tokens": 50, "top_k": 40,
        "messages": [{"role": "user", "content": "hi"}]});
    let response = harness.anthropic("/v1/messages", &same).await;
    assert_eq!((response.status().as_u16(), dropped_params(&response)), (200, None));
    assert_eq!(harness.mock.last_body()["top_k"], 40);
}
