//! The mock reasons as the real APIs do: Anthropic thinking blocks (signed, in the API's event order) when
//! the request enables thinking, OpenAI-compatible `reasoning_content`, OpenAI's hidden reasoning tokens,
//! and the refusals of each.

use super::*;
use tollgate_tests::mock_upstream::{signature_for, DEFAULT_THINKING};

const THOUGHT: &str = "Six times seven: 42.";

fn thinking_body(stream: bool) -> Value {
    let mut body = anthropic_body(stream);
    body["max_tokens"] = json!(2048);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    body
}

fn reasoning(text: &str) -> Script {
    sc(|s| s.reasoning = Some(text.into()))
}

#[tokio::test]
async fn anthropic_thinks_first_with_a_signature_only_when_asked() {
    let m = MockUpstream::start().await;
    m.push(reasoning(THOUGHT));
    let message = post_json(messages_url(&m), thinking_body(false)).await;
    assert_eq!(
        message["content"],
        json!([{"type": "thinking", "thinking": THOUGHT, "signature": signature_for(THOUGHT)},
            {"type": "text", "text": DEFAULT_REPLY}])
    );
    let thought = pieces(THOUGHT).len() as u64;
    assert_eq!(message["usage"]["output_tokens"], thought + 12, "thinking is billed as output");
    // Without `thinking` the model does not think, whatever the script says.
    m.push(reasoning(THOUGHT));
    let message = post_json(messages_url(&m), anthropic_body(false)).await;
    assert_eq!(message["content"], json!([{"type": "text", "text": DEFAULT_REPLY}]));
    // Without a scripted thought it still thinks.
    let message = post_json(messages_url(&m), thinking_body(false)).await;
    assert_eq!(message["content"][0]["thinking"], DEFAULT_THINKING);
}

#[tokio::test]
async fn anthropic_streams_thinking_then_signature_then_text() {
    let m = MockUpstream::start().await;
    m.push(reasoning(THOUGHT));
    let events = json_events(&post_text(messages_url(&m), thinking_body(true)).await);
    let thought = pieces(THOUGHT);
    let mut expected = vec![
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        json!({"type": "ping"}),
    ];
    expected.extend(thought.iter().map(
        |p| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": p}}),
    ));
    expected.push(json!({"type": "content_block_delta", "index": 0,
        "delta": {"type": "signature_delta", "signature": signature_for(THOUGHT)}}));
    expected.push(json!({"type": "content_block_stop", "index": 0}));
    expected.push(json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}));
    assert_eq!(events[1..expected.len() + 1], expected[..]);
    let text: String = events.iter().filter_map(|e| e["delta"]["text"].as_str()).collect();
    assert_eq!(text, DEFAULT_REPLY);
    let types: Vec<&str> = events.iter().rev().take(3).map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["message_stop", "message_delta", "content_block_stop"]);
    let delta = &events[events.len() - 2];
    assert_eq!(delta["usage"]["output_tokens"], thought.len() + 12);
    assert_eq!(m.output_tokens_served(), (thought.len() + 12) as u64);
}

#[tokio::test]
async fn thinking_counts_against_max_tokens() {
    let m = MockUpstream::start().await;
    let mut body = thinking_body(false);
    body["max_tokens"] = json!(1030);
    m.push(reasoning(&"step ".repeat(1025)));
    let message = post_json(messages_url(&m), body).await;
    // 1,024 thinking tokens (the budget), 6 left for the answer.
    assert_eq!(message["content"][0]["thinking"].as_str().unwrap().split_whitespace().count(), 1024);
    assert_eq!(message["content"][1]["text"], pieces(DEFAULT_REPLY)[..6].concat());
    assert_eq!(
        (message["stop_reason"].as_str(), message["usage"]["output_tokens"].as_u64()),
        (Some("max_tokens"), Some(1030))
    );
}

#[tokio::test]
async fn anthropic_refuses_what_the_api_refuses_with_thinking() {
    let m = MockUpstream::start().await;
    let refused = |change: &dyn Fn(&mut Value), expected: &str| {
        let mut body = thinking_body(false);
        change(&mut body);
        (body, expected.to_owned())
    };
    let cases = [
        refused(&|b| b["thinking"]["budget_tokens"] = json!(1000), "greater than or equal to 1024"),
        refused(&|b| b["max_tokens"] = json!(1024), "`max_tokens` must be greater than `thinking.budget_tokens`"),
        refused(&|b| b["temperature"] = json!(0.5), "`temperature` may only be set to 1"),
        refused(&|b| b["top_p"] = json!(0.9), "`top_p` must be greater than or equal to 0.95"),
        refused(&|b| b["top_k"] = json!(5), "`top_k` must be unset"),
        refused(&|b| b["tool_choice"] = json!({"type": "any"}), "tool_choice forces tool use"),
    ];
    for (body, expected) in cases {
        let (status, out) = parts(post(messages_url(&m), body.clone()).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(out["error"]["type"], "invalid_request_error");
        assert!(out["error"]["message"].as_str().unwrap().contains(&expected), "{out}");
    }
    for (field, allowed) in [("temperature", 1.0), ("top_p", 0.95)] {
        let mut body = thinking_body(false);
        body[field] = json!(allowed);
        assert_eq!(post(messages_url(&m), body).await.status(), 200, "{field} {allowed} is allowed with thinking");
    }
    let served = 2 * (pieces(DEFAULT_THINKING).len() + 12) as u64;
    assert_eq!(m.output_tokens_served(), served, "nothing refused was served");
}

fn tool_loop(first_assistant_block: Option<Value>) -> Vec<Value> {
    let mut assistant: Vec<Value> = first_assistant_block.into_iter().collect();
    assistant.push(json!({"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {"x": 6}}));
    vec![
        json!({"role": "user", "content": "What is 6 x 7?"}),
        json!({"role": "assistant", "content": assistant}),
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}]}),
    ]
}

#[tokio::test]
async fn thinking_blocks_come_back_signed_and_lead_a_tool_turn() {
    let m = MockUpstream::start().await;
    let send = |messages: Vec<Value>, thinking: bool| {
        let mut body = if thinking { thinking_body(false) } else { anthropic_body(false) };
        body["messages"] = json!(messages);
        post(messages_url(&m), body)
    };
    let signed = json!({"type": "thinking", "thinking": THOUGHT, "signature": signature_for(THOUGHT)});
    assert_eq!(send(tool_loop(Some(signed.clone())), true).await.status(), 200);
    let (status, out) = parts(send(tool_loop(None), true).await).await;
    assert_eq!(status, 400);
    let message = out["error"]["message"].as_str().unwrap();
    assert!(
        message
            .starts_with("messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`"),
        "{message}"
    );
    let forged = json!({"type": "thinking", "thinking": THOUGHT, "signature": ""});
    let (status, out) = parts(send(tool_loop(Some(forged)), true).await).await;
    assert_eq!(status, 400);
    assert_eq!(out["error"]["message"], "messages.1.content.0: Invalid `signature` in `thinking` block");
    // Thinking off: a tool loop without thinking is fine, a prefill holding thinking is not.
    assert_eq!(send(tool_loop(None), false).await.status(), 200);
    let prefill = vec![json!({"role": "user", "content": "hi"}), json!({"role": "assistant", "content": [signed]})];
    let (status, out) = parts(send(prefill, false).await).await;
    assert_eq!(status, 400);
    assert!(out["error"]["message"].as_str().unwrap().contains("When thinking is disabled"), "{out}");
}

#[tokio::test]
async fn an_openai_compatible_reasoner_answers_with_reasoning_content() {
    let m = MockUpstream::start().await;
    m.push(reasoning(THOUGHT));
    let out = post_json(chat_url(&m), chat_body(false)).await;
    let message = &out["choices"][0]["message"];
    assert_eq!(
        (message["reasoning_content"].as_str(), message["content"].as_str()),
        (Some(THOUGHT), Some(DEFAULT_REPLY))
    );
    let thought = pieces(THOUGHT).len() as u64;
    assert_eq!(out["usage"]["completion_tokens"], thought + 12);
    assert_eq!(out["usage"]["completion_tokens_details"]["reasoning_tokens"], thought);

    m.push(reasoning(THOUGHT));
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = json_events(&post_text(chat_url(&m), body).await);
    let deltas: Vec<Value> = events.iter().map(|e| e["choices"][0]["delta"].clone()).collect();
    assert_eq!(deltas[0], json!({"role": "assistant", "content": null, "reasoning_content": ""}));
    let mut expected: Vec<Value> =
        pieces(THOUGHT).iter().map(|p| json!({"content": null, "reasoning_content": p})).collect();
    expected.extend(pieces(DEFAULT_REPLY).iter().map(|p| json!({"content": p, "reasoning_content": null})));
    expected.push(json!({}));
    assert_eq!(deltas[1..expected.len() + 1], expected[..]);
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(
        (usage["completion_tokens"].as_u64(), usage["completion_tokens_details"]["reasoning_tokens"].as_u64()),
        (Some(thought + 12), Some(thought))
    );
    assert_eq!(m.output_tokens_served(), 2 * (thought + 12));
}

#[tokio::test]
async fn openai_reasoning_models_hide_their_reasoning_and_others_refuse_reasoning_effort() {
    let m = MockUpstream::start().await;
    let body = json!({"model": "o3-mini", "reasoning_effort": "low", "max_completion_tokens": 100,
        "messages": [{"role": "user", "content": "Hi there"}]});
    for (param, value, status) in [("temperature", 0.2, 400), ("top_p", 0.5, 400), ("temperature", 1.0, 200)] {
        let mut sampled = body.clone();
        sampled[param] = json!(value);
        let (got, out) = parts(post(chat_url(&m), sampled).await).await;
        assert_eq!(got, status, "{param} {value}: {out}");
        if status == 400 {
            assert_eq!(out["error"]["param"], param);
        }
    }
    let out = post_json(chat_url(&m), body).await;
    let thought = pieces(DEFAULT_THINKING).len() as u64;
    assert!(out["choices"][0]["message"].get("reasoning_content").is_none(), "{out}");
    assert_eq!(out["usage"]["completion_tokens"], thought + 12);
    assert_eq!(out["usage"]["completion_tokens_details"]["reasoning_tokens"], thought);
    let mut body = chat_body(false);
    body["reasoning_effort"] = json!("low");
    let (status, out) = parts(post(chat_url(&m), body.clone()).await).await;
    assert_eq!(status, 400);
    assert_eq!(out["error"]["param"], "reasoning_effort");
    m.push(reasoning(THOUGHT));
    assert_eq!(post(chat_url(&m), body).await.status(), 200, "a reasoning model served by vLLM takes it");
}
