//! Issue 14.6, reasoning end to end through a gateway node and the mock (which reasons as the real APIs do):
//! an OpenAI caller's `reasoning_effort` becomes an Anthropic thinking budget and the signed thinking
//! comes back as `reasoning_content`; an Anthropic caller's `thinking` reaches an OpenAI-compatible
//! reasoning server and its `reasoning_content` comes back as a leading thinking block. Streamed and not,
//! with the exact content, the exact event order and the tokens billed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use tollgate_tests::mock_upstream::{pieces, DEFAULT_REPLY};
use tollgate_tests::{dropped_params, metric_value, read_events, Event, Harness, Script};

const THOUGHT: &str = "Six times seven is 42; say it plainly.";

/// Routes to reasoning models of an OpenAI-compatible server (DeepSeek-R1 on vLLM) and of OpenAI (o3).
const ROUTES: &str = r#"
[[models]]
name = "claude-via-reasoner"
targets = [ { provider = "up-openai", model = "deepseek-r1" } ]

[[models]]
name = "claude-via-o3"
targets = [ { provider = "up-openai", model = "o3" } ]
"#;

fn thinks() -> Script {
    Script { reasoning: Some(THOUGHT.to_owned()), ..Default::default() }
}

fn thought_tokens() -> u64 {
    pieces(THOUGHT).len() as u64
}

fn openai_request(stream: bool) -> Value {
    json!({"model": "p-anthropic", "stream": stream, "reasoning_effort": "medium", "max_completion_tokens": 8000,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
        "messages": [{"role": "user", "content": "What is 6 x 7?"}]})
}

fn anthropic_request(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 3000, "stream": stream,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "What is 6 x 7?"}]})
}

async fn output_metered(h: &Harness, route: &str) -> f64 {
    let metrics = h.metrics().await;
    metric_value(&metrics, "gen_ai_client_token_usage_total", &[&format!("route=\"{route}\""), "output"]).unwrap()
}

#[tokio::test]
async fn openai_caller_gets_anthropic_thinking_as_reasoning_content() {
    let h = Harness::start().await;
    h.mock.push(thinks());
    let response = h.openai("/v1/chat/completions", &openai_request(false)).await;
    assert_eq!((response.status().as_u16(), dropped_params(&response)), (200, None));
    let out: Value = response.json().await.unwrap();
    let sent = h.mock.last_body();
    assert_eq!(sent["thinking"], json!({"type": "enabled", "budget_tokens": 4096}), "{sent}");
    assert_eq!(sent["max_tokens"], 8000, "max_tokens covers thinking and answer, as max_completion_tokens does");
    assert_eq!(
        out["choices"][0],
        json!({"index": 0, "logprobs": null, "finish_reason": "stop", "message": {
            "role": "assistant", "content": DEFAULT_REPLY, "refusal": null, "reasoning_content": THOUGHT}})
    );
    let prompt = h.mock.input_tokens_served();
    let usage = &out["usage"];
    assert_eq!(usage["prompt_tokens"], prompt);
    assert_eq!(usage["completion_tokens"], thought_tokens() + 12, "thinking tokens are completion tokens");
    assert_eq!(usage["total_tokens"], prompt + thought_tokens() + 12);
    assert_eq!(output_metered(&h, "p-anthropic").await, (thought_tokens() + 12) as f64);
}

#[tokio::test]
async fn openai_caller_streams_reasoning_then_content() {
    let h = Harness::start().await;
    h.mock.push(thinks());
    let response = h.openai("/v1/chat/completions", &openai_request(true)).await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    let (last, chunks) = events.split_last().unwrap();
    assert!(last.is_done());
    let deltas: Vec<Value> =
        chunks[..chunks.len() - 1].iter().map(|e| e.json()["choices"][0]["delta"].clone()).collect();
    let mut expected = vec![json!({"role": "assistant", "content": ""})];
    expected.extend(pieces(THOUGHT).iter().map(|p| json!({"reasoning_content": p})));
    expected.extend(pieces(DEFAULT_REPLY).iter().map(|p| json!({"content": p})));
    expected.push(json!({}));
    assert_eq!(deltas, expected, "the signature stays behind; nothing else is added");
    let finishes: Vec<Value> = chunks.iter().map(|e| e.json()["choices"][0]["finish_reason"].clone()).collect();
    assert_eq!(finishes.iter().filter(|f| !f.is_null()).collect::<Vec<_>>(), [&json!("stop")]);
    assert_eq!(finishes[finishes.len() - 2], "stop", "the finish comes just before the usage chunk");
    let usage = chunks.last().unwrap().json();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], h.mock.input_tokens_served());
    assert_eq!(usage["usage"]["completion_tokens"], thought_tokens() + 12);
    assert_eq!(output_metered(&h, "p-anthropic").await, (thought_tokens() + 12) as f64);
}

#[tokio::test]
async fn anthropic_caller_gets_reasoning_content_as_a_leading_thinking_block() {
    let h = Harness::start_with(ROUTES).await;
    h.mock.push(thinks());
    let response = h.anthropic("/v1/messages", &anthropic_request("claude-via-reasoner", false)).await;
    assert_eq!(response.status(), 200);
    // deepseek-r1 is no OpenAI reasoning model: it gets no reasoning_effort, and says so; it reasons anyway.
    assert_eq!(dropped_params(&response).as_deref(), Some("thinking"));
    let out: Value = response.json().await.unwrap();
    let sent = h.mock.last_body();
    assert!(sent.get("reasoning_effort").is_none() && sent.get("thinking").is_none(), "{sent}");
    assert_eq!(
        out["content"],
        json!([{"type": "thinking", "thinking": THOUGHT, "signature": ""}, {"type": "text", "text": DEFAULT_REPLY}])
    );
    assert_eq!(out["stop_reason"], "end_turn");
    assert_eq!(out["usage"]["input_tokens"], h.mock.input_tokens_served());
    assert_eq!(out["usage"]["output_tokens"], thought_tokens() + 12, "reasoning is billed as output");

    // A caller that did not enable thinking does not see it, and still pays for it.
    h.mock.push(thinks());
    let mut request = anthropic_request("claude-via-reasoner", false);
    request.as_object_mut().unwrap().remove("thinking");
    let out: Value = h.anthropic("/v1/messages", &request).await.json().await.unwrap();
    assert_eq!(out["content"], json!([{"type": "text", "text": DEFAULT_REPLY}]));
    assert_eq!(out["usage"]["output_tokens"], thought_tokens() + 12);
    assert_eq!(output_metered(&h, "claude-via-reasoner").await, 2.0 * (thought_tokens() + 12) as f64);
}

/// (event name, data) of a stream, for exact comparison.
fn named(events: &[Event]) -> Vec<(String, Value)> {
    events.iter().map(|e| (e.name.clone().unwrap_or_default(), e.json())).collect()
}

#[tokio::test]
async fn anthropic_caller_streams_a_thinking_block_then_the_text() {
    let h = Harness::start_with(ROUTES).await;
    h.mock.push(thinks());
    let response = h.anthropic("/v1/messages", &anthropic_request("claude-via-reasoner", true)).await;
    assert_eq!(response.status(), 200);
    let events = named(&read_events(response).await);
    let (first, rest) = events.split_first().unwrap();
    assert_eq!(first.0, "message_start");
    let start = &first.1["message"];
    assert_eq!((start["content"].clone(), start["usage"]["output_tokens"].clone()), (json!([]), json!(0)));
    let block = |index: usize, kind: &str, deltas: Vec<Value>| {
        let start = match kind {
            "thinking" => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        let mut out = vec![(
            "content_block_start".to_owned(),
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        )];
        out.extend(deltas.into_iter().map(|delta| {
            ("content_block_delta".to_owned(), json!({"type": "content_block_delta", "index": index, "delta": delta}))
        }));
        out.push(("content_block_stop".to_owned(), json!({"type": "content_block_stop", "index": index})));
        out
    };
    let mut expected = block(
        0,
        "thinking",
        pieces(THOUGHT).iter().map(|p| json!({"type": "thinking_delta", "thinking": p})).collect(),
    );
    expected.extend(block(
        1,
        "text",
        pieces(DEFAULT_REPLY).iter().map(|p| json!({"type": "text_delta", "text": p})).collect(),
    ));
    assert_eq!(rest[..expected.len()], expected[..]);
    let tail: Vec<&str> = rest[expected.len()..].iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(tail, ["message_delta", "message_stop"]);
    let delta = &rest[expected.len()].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], thought_tokens() + 12);
    assert_eq!(delta["usage"]["input_tokens"], h.mock.input_tokens_served());
}

#[tokio::test]
async fn anthropic_caller_to_an_openai_reasoning_model_gets_a_reasoning_effort_and_hidden_reasoning() {
    let h = Harness::start_with(ROUTES).await;
    for stream in [false, true] {
        h.mock.push(thinks());
        let response = h.anthropic("/v1/messages", &anthropic_request("claude-via-o3", stream)).await;
        assert_eq!((response.status().as_u16(), dropped_params(&response)), (200, None), "stream {stream}");
        let sent = h.mock.last_body();
        assert_eq!(
            (sent["reasoning_effort"].as_str(), sent["max_completion_tokens"].as_u64()),
            (Some("low"), Some(3000))
        );
        assert!(sent.get("max_tokens").is_none(), "{sent}");
        let (content, output_tokens) = if stream {
            let events = read_events(response).await;
            assert!(events.iter().all(|e| !e.data.contains("thinking")), "o3 shows no reasoning");
            let delta = events.iter().find(|e| e.name.as_deref() == Some("message_delta")).unwrap().json();
            (tollgate_tests::anthropic_text(&events), delta["usage"]["output_tokens"].clone())
        } else {
            let out: Value = response.json().await.unwrap();
            assert_eq!(out["content"].as_array().unwrap().len(), 1, "{out}");
            (out["content"][0]["text"].as_str().unwrap().to_owned(), out["usage"]["output_tokens"].clone())
        };
        assert_eq!(content, DEFAULT_REPLY);
        assert_eq!(output_tokens, thought_tokens() + 12, "hidden reasoning is still billed");
    }
}

/// The second request of an agent's tool loop: the OpenAI caller sends back its assistant turn (tool
/// calls, no signed thinking: it has none to send), then the tool's result.
fn tool_loop_request(stream: bool) -> Value {
    json!({"model": "p-anthropic", "stream": stream, "reasoning_effort": "low", "max_completion_tokens": 4000,
    "tools": [{"type": "function", "function": {"name": "multiply", "parameters": {"type": "object"}}}],
    "messages": [
        {"role": "user", "content": "What is 6 x 7?"},
        {"role": "assistant", "content": null, "reasoning_content": THOUGHT, "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "multiply", "arguments": "{\"a\":6,\"b\":7}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "42"},
    ]})
}

#[tokio::test]
async fn openai_tool_loop_with_reasoning_effort_reaches_anthropic_without_thinking() {
    let h = Harness::start().await;
    // The first turn: thinking, then the call.
    h.mock.push(Script { tool_call: Some(("multiply".into(), r#"{"a":6,"b":7}"#.into())), ..thinks() });
    let mut first = tool_loop_request(false);
    first["messages"] = json!([{"role": "user", "content": "What is 6 x 7?"}]);
    let out: Value = h.openai("/v1/chat/completions", &first).await.json().await.unwrap();
    let message = &out["choices"][0]["message"];
    assert_eq!(
        (message["reasoning_content"].as_str(), out["choices"][0]["finish_reason"].as_str()),
        (Some(THOUGHT), Some("tool_calls"))
    );
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], r#"{"a":6,"b":7}"#);
    // Streamed: the reasoning, then the call (announced once, its arguments after it), then the finish.
    h.mock.push(Script { tool_call: Some(("multiply".into(), r#"{"a":6,"b":7}"#.into())), ..thinks() });
    first["stream"] = json!(true);
    let events = read_events(h.openai("/v1/chat/completions", &first).await).await;
    let kinds: Vec<String> = events
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| {
            let choice = &e.json()["choices"][0];
            let delta = &choice["delta"];
            if delta.get("reasoning_content").is_some() {
                "reasoning".to_owned()
            } else if delta["tool_calls"][0]["id"].is_string() {
                "call".to_owned()
            } else if delta["tool_calls"].is_array() {
                "arguments".to_owned()
            } else if choice["finish_reason"].is_string() {
                format!("finish {}", choice["finish_reason"])
            } else {
                "role".to_owned()
            }
        })
        .collect();
    let mut expected = vec!["role".to_owned()];
    expected.extend(pieces(THOUGHT).iter().map(|_| "reasoning".to_owned()));
    expected.extend(["call", "arguments", "arguments", "arguments", "finish \"tool_calls\""].map(str::to_owned));
    assert_eq!(kinds, expected);
    // The second: Anthropic refuses thinking next to a final tool turn that does not start with its signed
    // thinking block, which the gateway cannot rebuild; thinking is left off and named.
    for stream in [false, true] {
        let response = h.openai("/v1/chat/completions", &tool_loop_request(stream)).await;
        assert_eq!(response.status(), 200, "stream {stream}");
        assert_eq!(dropped_params(&response).as_deref(), Some("reasoning_effort"));
        let sent = h.mock.last_body();
        assert!(sent.get("thinking").is_none(), "{sent}");
        assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use", "{sent}");
        let text = if stream {
            tollgate_tests::openai_text(&read_events(response).await)
        } else {
            let out: Value = response.json().await.unwrap();
            assert!(out["choices"][0]["message"].get("reasoning_content").is_none(), "{out}");
            out["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
        };
        assert_eq!(text, DEFAULT_REPLY);
    }
}

/// Same protocol: an Anthropic caller's tool loop sends its signed thinking block back, and the gateway
/// hands it to Anthropic untouched (the mock checks the signature as the API does).
#[tokio::test]
async fn anthropic_tool_loop_keeps_the_signed_thinking_block() {
    let h = Harness::start().await;
    h.mock.push(Script { tool_call: Some(("multiply".into(), r#"{"a":6,"b":7}"#.into())), ..thinks() });
    let mut request = anthropic_request("claude-direct", false);
    request["tools"] = json!([{"name": "multiply", "input_schema": {"type": "object"}}]);
    let first: Value = h.anthropic("/v1/messages", &request).await.json().await.unwrap();
    assert_eq!(first["stop_reason"], "tool_use", "{first}");
    let call = first["content"][1].clone();
    assert_eq!((first["content"][0]["type"].as_str(), call["type"].as_str()), (Some("thinking"), Some("tool_use")));
    request["messages"] = json!([
        {"role": "user", "content": "What is 6 x 7?"},
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "42"}]},
    ]);
    let response = h.anthropic("/v1/messages", &request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(h.mock.last_body()["messages"][1]["content"], first["content"], "the signed block went back as it came");
    let out: Value = response.json().await.unwrap();
    assert_eq!(out["content"][1], json!({"type": "text", "text": DEFAULT_REPLY}));
}

/// A reasoning server that thinks, then calls two tools at once with alternating argument chunks: the
/// Anthropic caller gets the thinking block, then one contiguous tool_use block per call.
#[tokio::test]
async fn anthropic_caller_gets_thinking_then_whole_parallel_tool_calls_from_a_reasoner() {
    let h = Harness::start_with(ROUTES).await;
    h.mock.push(Script {
        tool_call: Some(("multiply".into(), r#"{"a":6,"b":7}"#.into())),
        second_tool_call: Some(("clock".into(), r#"{"zone":"CET"}"#.into())),
        ..thinks()
    });
    let mut request = anthropic_request("claude-via-reasoner", true);
    request["tools"] = json!([{"name": "multiply", "input_schema": {"type": "object"}},
        {"name": "clock", "input_schema": {"type": "object"}}]);
    let events = named(&read_events(h.anthropic("/v1/messages", &request).await).await);
    // Block by block: (index, kind, name) at each start, the deltas' text joined, each closed before the next.
    let mut blocks: Vec<(u64, String, String, String)> = Vec::new();
    let mut open = false;
    for (name, data) in &events {
        match name.as_str() {
            "content_block_start" => {
                assert!(!open, "blocks do not overlap: {data}");
                open = true;
                let block = &data["content_block"];
                let label = block["name"].as_str().unwrap_or("").to_owned();
                blocks.push((
                    data["index"].as_u64().unwrap(),
                    block["type"].as_str().unwrap().to_owned(),
                    label,
                    String::new(),
                ));
            }
            "content_block_delta" => {
                let last = blocks.last_mut().unwrap();
                assert!(open && data["index"] == last.0, "{data}");
                let delta = &data["delta"];
                last.3.push_str(delta["thinking"].as_str().or(delta["partial_json"].as_str()).unwrap());
            }
            "content_block_stop" => open = false,
            _ => {}
        }
    }
    let blocks: Vec<(u64, &str, &str, &str)> =
        blocks.iter().map(|(i, kind, name, text)| (*i, kind.as_str(), name.as_str(), text.as_str())).collect();
    assert_eq!(
        blocks,
        [
            (0, "thinking", "", THOUGHT),
            (1, "tool_use", "multiply", r#"{"a":6,"b":7}"#),
            (2, "tool_use", "clock", r#"{"zone":"CET"}"#)
        ]
    );
    let delta = &events.iter().find(|(name, _)| name == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    // Reasoning, then each call's three argument pieces.
    assert_eq!(delta["usage"]["output_tokens"], thought_tokens() + 6);
}

/// OpenAI's reasoning models take only the default sampling: an Anthropic caller's temperature and top_p
/// cannot reach o3, and are named as dropped instead of failing the request at the provider.
#[tokio::test]
async fn anthropic_sampling_is_dropped_and_named_for_an_openai_reasoning_model() {
    let h = Harness::start_with(ROUTES).await;
    for (param, value) in [("temperature", 0.2), ("top_p", 0.5)] {
        let mut request = anthropic_request("claude-via-o3", false);
        request.as_object_mut().unwrap().remove("thinking");
        request[param] = json!(value);
        let response = h.anthropic("/v1/messages", &request).await;
        assert_eq!((response.status().as_u16(), dropped_params(&response).as_deref()), (200, Some(param)));
        assert!(h.mock.last_body().get(param).is_none(), "{param}");
        let out: Value = response.json().await.unwrap();
        assert_eq!(out["content"][0]["text"], DEFAULT_REPLY);
    }
}

/// Through a 3-node cluster with an org budget: the gateway bills the thinking it translates, so what the
/// upstream generated (thinking included) stays within the limit (S1) — a gateway that billed only the
/// answer would hand the thinking's reservation back and admit far more thinking than the budget pays for.
/// Near the limit the output cap leaves no room for 1,024 thinking tokens: thinking is then left off.
#[tokio::test]
async fn thinking_tokens_count_against_a_cluster_budget() {
    use tollgate_tests::budget::{generated, set_org_budget, spend_until_refused};
    use tollgate_tests::cluster::TestCluster;
    let cluster = TestCluster::start(3).await;
    let long_thought = "Let me work through this carefully. ".repeat(50);
    cluster.mock.set_default(Script { reasoning: Some(long_thought.clone()), ..Default::default() });
    let step = 12_000;
    for (phase, stream) in [(1, false), (2, true)] {
        // Each phase gets another `step` tokens to spend.
        set_org_budget(&cluster, 1, phase * step, "day").await;
        let before = cluster.mock.request_count();
        let body = json!({"model": "p-anthropic", "stream": stream, "reasoning_effort": "low",
            "max_completion_tokens": 1100, "messages": [{"role": "user", "content": "What is 6 x 7?"}]});
        let admitted = spend_until_refused(&cluster, &[1, 2, 3], &body).await;
        let billed = generated(&cluster);
        assert!(billed <= phase * step, "S1 violated, stream {stream}: generated {billed} > {}", phase * step);
        let thought = cluster.mock.requests()[before..].iter().filter(|r| r.body.get("thinking").is_some()).count();
        assert!(admitted > 0 && thought > 0, "stream {stream}: {admitted} admitted, {thought} with thinking");
    }
}

/// An Anthropic caller's thinking on a budgeted route: when the budget's output cap lowers `max_tokens`
/// to or below the thinking budget, Anthropic would refuse the request (the thinking budget must stay below
/// `max_tokens`, and be at least 1,024). The thinking budget follows the cap, and thinking is left off
/// (and named) when the cap leaves no room for 1,024 thinking tokens.
#[tokio::test]
async fn the_budget_cap_keeps_an_anthropic_callers_thinking_below_max_tokens() {
    use tollgate_tests::budget::set_org_budget;
    use tollgate_tests::cluster::TestCluster;
    let cluster = TestCluster::start(1).await;
    set_org_budget(&cluster, 1, 8_000, "day").await;
    let url = format!("{}/v1/messages", cluster.node(1).api_url());
    let mut answers = Vec::new();
    loop {
        let response = cluster
            .client
            .post(&url)
            .header("x-api-key", tollgate_tests::KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&anthropic_request("claude-direct", false))
            .send()
            .await
            .unwrap();
        let (status, header) = (response.status().as_u16(), dropped_params(&response));
        let out: Value = response.json().await.unwrap();
        if status == 429 {
            break;
        }
        assert_eq!(status, 200, "request {}: {out}", answers.len());
        answers.push((header, out["content"][0]["type"].as_str().unwrap().to_owned()));
    }
    let sent: Vec<(u64, Option<u64>)> = cluster
        .mock
        .requests()
        .iter()
        .map(|r| (r.body["max_tokens"].as_u64().unwrap(), r.body["thinking"]["budget_tokens"].as_u64()))
        .collect();
    assert_eq!(sent.len(), answers.len());
    for ((max_tokens, budget), (header, first_block)) in sent.iter().zip(&answers) {
        match budget {
            Some(budget) => {
                assert!((1024..*max_tokens).contains(budget), "budget {budget} within max_tokens {max_tokens}");
                assert_eq!((header.as_deref(), first_block.as_str()), (None, "thinking"));
            }
            None => {
                assert!(*max_tokens <= 1024, "thinking is left off only when it cannot fit: {max_tokens}");
                assert_eq!((header.as_deref(), first_block.as_str()), (Some("thinking"), "text"));
            }
        }
    }
    assert!(sent.iter().any(|(max, budget)| *max <= 2048 && budget.is_some()), "a lowered thinking budget: {sent:?}");
}
