//! Self-test of the mock LLM upstream, using plain reqwest against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, Response};
use serde_json::{json, Value};
use tollgate_tests::mock_upstream::{parse_sse, pieces, MockUpstream, Script, DEFAULT_REPLY};

#[path = "mock_upstream_selftest/misbehaviour.rs"]
mod misbehaviour;

#[path = "mock_upstream_selftest/gpu.rs"]
mod gpu;

#[path = "mock_upstream_selftest/strict.rs"]
mod strict;

#[path = "mock_upstream_selftest/reasoning.rs"]
mod reasoning;

// "Hi there" = 8 bytes -> 2 tokens, + 3 for one message.
const P_OPENAI: u64 = 5;
// "Be brief" + "Hi there" = 16 bytes -> 4 tokens, + 3 for one message.
const P_ANTHROPIC: u64 = 7;
const DONE: &str = "data: [DONE]\n\n";

/// Sends `anthropic-version` like the SDKs do (the mock, like the real API, refuses requests without it).
fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("anthropic-version", reqwest::header::HeaderValue::from_static("2023-06-01"));
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

async fn send(rb: RequestBuilder) -> Response {
    rb.send().await.unwrap()
}

async fn post(url: String, body: Value) -> Response {
    send(client().post(url).json(&body)).await
}

async fn post_json(url: String, body: Value) -> Value {
    post(url, body).await.json().await.unwrap()
}

async fn post_text(url: String, body: Value) -> String {
    post(url, body).await.text().await.unwrap()
}

/// A plain GET (no `anthropic-version`: `/models` answers in OpenAI's shape then).
async fn get(url: String) -> Response {
    send(reqwest::Client::new().get(url)).await
}

/// (status, parsed JSON body)
async fn parts(resp: Response) -> (u16, Value) {
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn sc(f: impl FnOnce(&mut Script)) -> Script {
    let mut s = Script::default();
    f(&mut s);
    s
}

fn content_type(r: &Response) -> String {
    r.headers()["content-type"].to_str().unwrap().to_owned()
}

fn chat_url(m: &MockUpstream) -> String {
    format!("{}/chat/completions", m.openai_base_url())
}

fn messages_url(m: &MockUpstream) -> String {
    format!("{}/v1/messages", m.base_url())
}

fn chat_body(stream: bool) -> Value {
    json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi there"}],
        "stream": stream})
}

fn anthropic_body(stream: bool) -> Value {
    json!({"model": "mock-claude", "max_tokens": 100, "system": "Be brief", "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]})
}

fn json_events(text: &str) -> Vec<Value> {
    parse_sse(text).into_iter().filter(|(_, d)| d != "[DONE]").map(|(_, d)| serde_json::from_str(&d).unwrap()).collect()
}

/// Waits (up to 10 s) until `cond` holds; fails naming `what` otherwise.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn openai_non_stream_shape_and_usage() {
    let m = MockUpstream::start().await;
    let rb = client().post(chat_url(&m)).bearer_auth("whatever");
    let resp = send(rb.json(&chat_body(false))).await;
    assert!(content_type(&resp).starts_with("application/json"));
    let (status, v) = parts(resp).await;
    assert_eq!(status, 200);
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "mock-gpt");
    assert_eq!(v["system_fingerprint"], "fp_mock");
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["message"]["content"], DEFAULT_REPLY);
    assert_eq!(c["message"]["refusal"], Value::Null);
    assert_eq!(c["logprobs"], Value::Null);
    assert_eq!(c["finish_reason"], "stop");
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], P_OPENAI);
    assert_eq!(u["completion_tokens"], 12);
    assert_eq!(u["total_tokens"], P_OPENAI + 12);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(m.output_tokens_served(), 12);
    assert_eq!(m.input_tokens_served(), P_OPENAI);

    let reqs = m.requests();
    assert_eq!((reqs.len(), m.request_count()), (1, 1));
    assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(reqs[0].header("Authorization"), Some("Bearer whatever"));
    assert_eq!(reqs[0].body["model"], "mock-gpt");

    // omit_usage + reply override, json mode, finish_max_tokens
    m.push(sc(|s| {
        s.omit_usage = true;
        s.reply = Some("Custom text.".into());
    }));
    let v = post_json(chat_url(&m), chat_body(false)).await;
    assert!(v.get("usage").is_none());
    assert_eq!(v["choices"][0]["message"]["content"], "Custom text.");
    let mut b = chat_body(false);
    b["response_format"] = json!({"type": "json_object"});
    let v = post_json(chat_url(&m), b).await;
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(content).unwrap().is_object());
    m.push(sc(|s| s.finish_max_tokens = true));
    let v = post_json(chat_url(&m), chat_body(false)).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn openai_stream_without_usage() {
    let m = MockUpstream::start().await;
    let resp = post(chat_url(&m), chat_body(true)).await;
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert!(text.ends_with(DONE));
    assert_eq!(parse_sse(&text).last().unwrap().1, "[DONE]");
    let evs = json_events(&text);
    assert_eq!(evs.len(), 14, "role chunk + 12 pieces + finish chunk");
    for e in &evs {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["model"], "mock-gpt");
        assert_eq!(e["id"], evs[0]["id"]);
        assert!(e.get("usage").is_none(), "no usage key without include_usage");
    }
    let delta = |i: usize| evs[i]["choices"][0]["delta"].clone();
    assert_eq!(delta(0), json!({"role": "assistant", "content": "", "refusal": null}));
    let content: String = (1..13).map(|i| delta(i)["content"].as_str().unwrap().to_owned()).collect();
    assert_eq!(content, DEFAULT_REPLY);
    assert_eq!((delta(1)["content"].clone(), delta(2)["content"].clone()), (json!("Hello"), json!(" from")));
    assert_eq!(delta(13), json!({}));
    assert_eq!(evs[13]["choices"][0]["finish_reason"], "stop");
    assert_eq!(m.output_tokens_served(), 12);
    assert_eq!(m.cancelled_streams(), 0);
}

#[tokio::test]
async fn openai_stream_with_include_usage() {
    let m = MockUpstream::start().await;
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = post_text(chat_url(&m), body.clone()).await;
    assert!(text.ends_with(DONE));
    let evs = json_events(&text);
    assert_eq!(evs.len(), 15);
    for e in &evs[..14] {
        assert_eq!(e.as_object().unwrap().get("usage"), Some(&Value::Null));
    }
    assert_eq!(evs[14]["choices"], json!([]));
    let u = &evs[14]["usage"];
    assert_eq!((u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64()), (Some(P_OPENAI), Some(12)));
    assert_eq!(u["total_tokens"], P_OPENAI + 12);

    // omit_usage wins over include_usage
    m.push(sc(|s| s.omit_usage = true));
    let evs = json_events(&post_text(chat_url(&m), body).await);
    assert_eq!(evs.len(), 14);
    assert!(evs.iter().all(|e| e.get("usage").is_none()));
}

#[tokio::test]
async fn anthropic_non_stream_and_stream() {
    let m = MockUpstream::start().await;
    let rb = client().post(messages_url(&m)).header("anthropic-version", "2023-06-01");
    let (status, v) = parts(send(rb.json(&anthropic_body(false))).await).await;
    assert_eq!(status, 200);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!((v["type"].as_str(), v["role"].as_str()), (Some("message"), Some("assistant")));
    assert_eq!(v["model"], "mock-claude");
    assert_eq!(v["content"], json!([{"type": "text", "text": DEFAULT_REPLY}]));
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    let u = &v["usage"];
    assert_eq!((u["input_tokens"].as_u64(), u["output_tokens"].as_u64()), (Some(P_ANTHROPIC), Some(12)));
    assert_eq!((u["cache_creation_input_tokens"].as_u64(), u["cache_read_input_tokens"].as_u64()), (Some(0), Some(0)));
    assert_eq!(m.requests()[0].header("anthropic-version"), Some("2023-06-01"));

    let evs = parse_sse(&post_text(messages_url(&m), anthropic_body(true)).await);
    let names: Vec<&str> = evs.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", 12));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    let datas: Vec<Value> = evs.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    for ((name, _), d) in evs.iter().zip(&datas) {
        assert_eq!(d["type"].as_str(), name.as_deref(), "event name matches data.type");
    }
    let start = &datas[0]["message"];
    assert_eq!((&start["content"], &start["stop_reason"]), (&json!([]), &Value::Null));
    assert_eq!(start["usage"]["input_tokens"], P_ANTHROPIC);
    assert_eq!(start["usage"]["output_tokens"], 1);
    assert_eq!(datas[1]["content_block"], json!({"type": "text", "text": ""}));
    assert!(datas[3..15].iter().all(|d| d["delta"]["type"] == "text_delta"));
    let text_out: String = datas[3..15].iter().map(|d| d["delta"]["text"].as_str().unwrap()).collect();
    assert_eq!(text_out, DEFAULT_REPLY);
    assert_eq!(datas[16]["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
    // As the API sends it today: the final input and cache counts next to the output tokens.
    assert_eq!(
        datas[16]["usage"],
        json!({"input_tokens": P_ANTHROPIC, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 12})
    );
    assert_eq!(m.output_tokens_served(), 24);
    assert_eq!(m.input_tokens_served(), 2 * P_ANTHROPIC);

    // omit_usage: no usage objects in the stream
    m.push(sc(|s| s.omit_usage = true));
    assert!(!post_text(messages_url(&m), anthropic_body(true)).await.contains("usage"));
}

#[tokio::test]
async fn anthropic_stop_sequences_and_max_tokens() {
    let m = MockUpstream::start().await;
    let mut b = anthropic_body(false);
    b["stop_sequences"] = json!(["upstream"]);
    let v = post_json(messages_url(&m), b).await;
    assert_eq!(v["content"][0]["text"], "Hello from the mock ");
    assert_eq!((v["stop_reason"].as_str(), v["stop_sequence"].as_str()), (Some("stop_sequence"), Some("upstream")));

    let mut b = anthropic_body(true);
    b["max_tokens"] = json!(3);
    let evs = json_events(&post_text(messages_url(&m), b).await);
    assert_eq!(evs.iter().filter(|e| e["type"] == "content_block_delta").count(), 3);
    let md = evs.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(md["delta"]["stop_reason"], "max_tokens");
    assert_eq!(md["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn tool_calls_openai() {
    let m = MockUpstream::start().await;
    let args = r#"{"city":"Paris","unit":"celsius"}"#;
    m.set_default(sc(|s| s.tool_call = Some(("get_weather".into(), args.into()))));
    let v = post_json(chat_url(&m), chat_body(false)).await;
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], Value::Null);
    let tc = &msg["tool_calls"][0];
    assert!(tc["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(tc["type"], "function");
    assert_eq!(tc["function"], json!({"name": "get_weather", "arguments": args}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    let text = post_text(chat_url(&m), chat_body(true)).await;
    assert!(text.ends_with(DONE));
    let evs = json_events(&text);
    let first = &evs[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!((first["index"].as_u64(), first["type"].as_str()), (Some(0), Some("function")));
    assert_eq!(first["function"], json!({"name": "get_weather", "arguments": ""}));
    let arg_chunks: Vec<&str> = evs[1..evs.len() - 1]
        .iter()
        .map(|e| e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap())
        .collect();
    assert!((2..=3).contains(&arg_chunks.len()));
    assert_eq!(arg_chunks.concat(), args);
    assert_eq!(evs.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn tool_calls_anthropic() {
    let m = MockUpstream::start().await;
    let args = r#"{"city":"Paris"}"#;
    m.set_default(sc(|s| s.tool_call = Some(("get_weather".into(), args.into()))));
    let v = post_json(messages_url(&m), anthropic_body(false)).await;
    let block = &v["content"][0];
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!((block["type"].as_str(), block["name"].as_str()), (Some("tool_use"), Some("get_weather")));
    assert_eq!(block["input"], json!({"city": "Paris"}));
    assert_eq!(v["stop_reason"], "tool_use");

    let evs = json_events(&post_text(messages_url(&m), anthropic_body(true)).await);
    let cb = &evs[1]["content_block"];
    assert_eq!((cb["type"].as_str(), cb["name"].as_str()), (Some("tool_use"), Some("get_weather")));
    assert_eq!(cb["input"], json!({}));
    let deltas: Vec<&Value> = evs.iter().filter(|e| e["type"] == "content_block_delta").collect();
    assert!(deltas.iter().all(|e| e["delta"]["type"] == "input_json_delta"));
    let partial: String = deltas.iter().map(|e| e["delta"]["partial_json"].as_str().unwrap()).collect();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), json!({"city": "Paris"}));
    let md = evs.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(md["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn error_status_with_retry_after() {
    let m = MockUpstream::start().await;
    m.push(sc(|s| {
        s.status = Some(429);
        s.retry_after = Some(7);
    }));
    m.push(sc(|s| s.status = Some(529)));
    m.push(sc(|s| s.status = Some(500)));
    let resp = post(chat_url(&m), chat_body(true)).await;
    assert_eq!(resp.headers()["retry-after"], "7");
    let (status, v) = parts(resp).await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"].as_object().unwrap().contains_key("param"));

    let resp = post(messages_url(&m), anthropic_body(false)).await;
    assert!(resp.headers().get("retry-after").is_none());
    let (status, v) = parts(resp).await;
    assert_eq!(status, 529);
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("overloaded_error")));

    let (status, v) = parts(post(messages_url(&m), anthropic_body(true)).await).await;
    assert_eq!((status, v["error"]["type"].as_str()), (500, Some("api_error")));

    // queue empty -> default script (200)
    assert_eq!(post(chat_url(&m), chat_body(false)).await.status(), 200);
    assert_eq!(m.output_tokens_served(), 12);
}

#[tokio::test]
async fn required_key() {
    let m = MockUpstream::start().await;
    m.set_required_key(Some("sk-test".into()));
    let (status, v) = parts(post(chat_url(&m), chat_body(false)).await).await;
    assert_eq!((status, v["error"]["type"].as_str()), (401, Some("invalid_request_error")));
    let rb = client().post(chat_url(&m)).bearer_auth("sk-wrong");
    let (status, v) = parts(send(rb.json(&chat_body(false))).await).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("invalid_api_key")));
    let rb = client().post(chat_url(&m)).bearer_auth("sk-test");
    assert_eq!(send(rb.json(&chat_body(false))).await.status(), 200);

    let (status, v) = parts(post(messages_url(&m), anthropic_body(false)).await).await;
    assert_eq!(status, 401);
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("authentication_error")));
    // a Bearer header is not accepted on the Anthropic path
    let rb = client().post(messages_url(&m)).bearer_auth("sk-test");
    assert_eq!(send(rb.json(&anthropic_body(false))).await.status(), 401);
    let rb = client().post(messages_url(&m)).header("x-api-key", "sk-test");
    assert_eq!(send(rb.json(&anthropic_body(false))).await.status(), 200);
}

#[tokio::test]
async fn validation_errors() {
    let m = MockUpstream::start().await;
    let (status, v) = parts(post(chat_url(&m), json!({"model": "mock-gpt", "messages": []})).await).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!((v["error"]["param"].as_str(), &v["error"]["code"]), (Some("messages"), &Value::Null));
    assert_eq!(send(client().post(chat_url(&m)).body("not json")).await.status(), 400);
    assert_eq!(m.requests()[1].body, Value::Null);

    let resp = post(messages_url(&m), json!({"model": "mock-claude", "messages": []})).await;
    let (status, v) = parts(resp).await;
    assert_eq!(status, 400);
    let expected = json!({"type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}});
    assert_eq!(v, expected);
}

#[tokio::test]
async fn other_endpoints() {
    let m = MockUpstream::start().await;
    let emb_url = format!("{}/embeddings", m.openai_base_url());
    let v = post_json(emb_url.clone(), json!({"model": "mock-embed", "input": ["abc", "hello world"]})).await;
    assert_eq!(v["object"], "list");
    assert_eq!((v["data"][1]["index"].as_u64(), v["data"][0]["object"].as_str()), (Some(1), Some("embedding")));
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);
    assert_eq!(v["usage"], json!({"prompt_tokens": 4, "total_tokens": 4}));
    let v2 = post_json(emb_url.clone(), json!({"model": "mock-embed", "input": "abc"})).await;
    assert_eq!(v2["data"][0]["embedding"], v["data"][0]["embedding"], "deterministic");
    let resp = post(emb_url, json!({"model": "mock-embed", "input": 5})).await;
    assert_eq!(resp.status(), 400);

    let (_, v) = parts(get(format!("{}/models", m.openai_base_url())).await).await;
    assert_eq!(v["object"], "list");
    let model = json!({"id": "mock-gpt", "object": "model", "created": 1_700_000_000, "owned_by": "mock"});
    assert_eq!(v["data"][0], model);

    let url = format!("{}/v1/messages/count_tokens", m.base_url());
    assert_eq!(post_json(url, anthropic_body(false)).await, json!({"input_tokens": P_ANTHROPIC}));

    m.set_gpu_metrics(3, 2, 0.5);
    let text = get(format!("{}/metrics", m.base_url())).await.text().await.unwrap();
    assert!(text.contains("vllm:num_requests_waiting{model_name=\"mock-gpt\"} 3"));
    assert!(text.contains("vllm:num_requests_running{model_name=\"mock-gpt\"} 2"));
    assert!(text.contains("vllm:kv_cache_usage_perc{model_name=\"mock-gpt\"} 0.5"));

    let (status, v) = parts(get(format!("{}/nope", m.base_url())).await).await;
    assert_eq!(status, 404);
    assert!(v["error"].is_object());

    assert_eq!(pieces("Hello world!"), vec!["Hello", " world", "!"]);
    assert_eq!(m.request_count(), 7);
}

#[tokio::test]
async fn anthropic_refuses_what_the_real_api_refuses() {
    let m = MockUpstream::start().await;
    let base = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]});
    let no_version = reqwest::Client::new().post(messages_url(&m)).json(&base).send().await.unwrap();
    assert_eq!(no_version.status(), 400, "a missing anthropic-version");
    let refused = |mutate: fn(&mut Value)| {
        let mut body = base.clone();
        mutate(&mut body);
        body
    };
    for body in [
        refused(|b| b["messages"] = json!([{"role": "system", "content": "x"}, {"role": "user", "content": "Hi"}])),
        refused(|b| b["messages"] = json!([{"role": "user", "content": [{"type": "text", "text": " "}]}])),
        refused(|b| b["stop_sequences"] = json!(["\n"])),
        refused(|b| {
            b["temperature"] = json!(0.5);
            b["top_p"] = json!(0.9);
        }),
    ] {
        let response = post(messages_url(&m), body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    }
    assert_eq!(m.request_count(), 5, "recorded, refused, served nothing");
    assert_eq!(m.output_tokens_served(), 0);
}

#[path = "mock_upstream_selftest/control.rs"]
mod control;
