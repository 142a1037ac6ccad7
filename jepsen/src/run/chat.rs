//! The chat workload: one client operation is one request to one region's API, OpenAI- or
//! Anthropic-shaped, streaming or not, with or without `max_tokens`, and sometimes a client that hangs
//! up mid-stream. Raw HTTP/1.1 over TCP so the client controls exactly when it stops reading.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::setup::OrgPlan;
use crate::history::OpType;
use crate::http;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Openai,
    Anthropic,
}

/// One chat operation's argument (recorded on invoke).
#[derive(Debug, Clone, Serialize)]
pub struct ChatSpec {
    pub org: String,
    pub region: u64,
    pub model: String,
    pub api: Api,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// Hang up after this many bytes of the response body.
    pub hangup_after: Option<usize>,
    pub prompt_bytes: usize,
}

/// Draws an operation: OpenAI-shaped mostly (the only shape that may omit `max_tokens`), half of them
/// streaming, a share `hangup` of the streams hung up part-way.
pub fn random_spec(rng: &mut StdRng, org: &OrgPlan, region: u64, hangup: f64) -> ChatSpec {
    let [gpt, claude] = org.models();
    let api = if rng.random_bool(0.25) { Api::Anthropic } else { Api::Openai };
    let model = if rng.random_bool(0.5) { gpt } else { claude };
    let stream = rng.random_bool(0.5);
    let max_tokens = match api {
        Api::Openai if rng.random_bool(0.3) => None,
        _ => Some(rng.random_range(4..=64)),
    };
    let hangup_after = (stream && rng.random_bool(hangup.clamp(0.0, 1.0))).then(|| rng.random_range(1..1500));
    ChatSpec {
        org: org.name.clone(),
        region,
        model,
        api,
        stream,
        max_tokens,
        hangup_after,
        prompt_bytes: rng.random_range(8..400),
    }
}

/// The completion of a chat op: its type in the history and the recorded value.
pub struct ChatResult {
    pub kind: OpType,
    pub value: Value,
}

fn result(kind: OpType, value: Value) -> ChatResult {
    ChatResult { kind, value }
}

fn body(spec: &ChatSpec) -> String {
    let prompt: String = "jepsen ".repeat(spec.prompt_bytes / 7 + 1).chars().take(spec.prompt_bytes).collect();
    let mut body = json!({"model": spec.model, "stream": spec.stream,
        "messages": [{"role": "user", "content": prompt}]});
    if let Some(max_tokens) = spec.max_tokens {
        body["max_tokens"] = json!(max_tokens);
    }
    body.to_string()
}

/// Sends the request to `host:port` and classifies the answer: `ok` (a complete answer), `fail` (refused
/// before reaching the upstream: budget 429/503, or no connection at all), `info` (anything that may have
/// reached the upstream without a complete answer: timeouts, resets, 5xx, streams cut, our hang-ups).
pub async fn perform(api_addr: &str, key: &str, spec: &ChatSpec, timeout: Duration) -> ChatResult {
    match tokio::time::timeout(timeout, exchange(api_addr, key, spec)).await {
        Ok(result) => result,
        Err(_) => result(OpType::Info, json!({"error": "timeout", "after_ms": timeout.as_millis() as u64})),
    }
}

async fn exchange(api_addr: &str, key: &str, spec: &ChatSpec) -> ChatResult {
    let mut stream = match TcpStream::connect(api_addr).await {
        Ok(stream) => stream,
        // Nothing was sent: certainly no effect.
        Err(err) => return result(OpType::Fail, json!({"error": format!("connect: {err}")})),
    };
    let payload = body(spec);
    let (path, auth) = match spec.api {
        Api::Openai => ("/v1/chat/completions", format!("Authorization: Bearer {key}\r\n")),
        Api::Anthropic => ("/v1/messages", format!("x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n")),
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {api_addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    if let Err(err) = stream.write_all(request.as_bytes()).await {
        return result(OpType::Info, json!({"error": format!("sending: {err}")}));
    }
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => break,
            Ok(read) => raw.extend_from_slice(&buffer[..read]),
            Err(err) => {
                return result(OpType::Info, json!({"error": format!("reading: {err}"), "bytes": raw.len()}));
            }
        }
        if let Some(limit) = spec.hangup_after {
            if let Some(head_end) = raw.windows(4).position(|window| window == b"\r\n\r\n") {
                let body_bytes = raw.len() - head_end - 4;
                if body_bytes >= limit && raw.starts_with(b"HTTP/1.1 200") {
                    // Dropping the stream closes the connection mid-answer.
                    return result(OpType::Info, json!({"hung_up_after_bytes": body_bytes, "status": 200}));
                }
            }
        }
    }
    let response = match http::parse_response(&raw) {
        Ok(response) => response,
        Err(err) => return result(OpType::Info, json!({"error": format!("{err:#}"), "bytes": raw.len()})),
    };
    classify(spec, &response)
}

fn classify(spec: &ChatSpec, response: &http::Response) -> ChatResult {
    let status = response.status;
    let node = response.header("x-tollgate-node").map(str::to_owned);
    if status == 200 {
        if spec.stream {
            let complete = match spec.api {
                Api::Openai => response.body.contains("data: [DONE]"),
                Api::Anthropic => response.body.contains("message_stop"),
            };
            let kind = if complete { OpType::Ok } else { OpType::Info };
            return result(
                kind,
                json!({"status": 200, "node": node, "complete": complete,
                "bytes": response.body.len()}),
            );
        }
        let usage = response.json().ok().map(|answer| answer["usage"].clone()).unwrap_or(Value::Null);
        return result(OpType::Ok, json!({"status": 200, "node": node, "usage": usage}));
    }
    let error = response.json().unwrap_or(Value::Null);
    let message = error["error"]["message"].as_str().unwrap_or("").chars().take(160).collect::<String>();
    // The Anthropic error shape has no `code`: tell budget refusals by their message there.
    let code = match error["error"]["code"].as_str() {
        Some(code) => code.to_owned(),
        None if message.contains("budget exhausted") => "budget_exceeded".to_owned(),
        None if message.contains("budget service unavailable") => "budget_unavailable".to_owned(),
        None => error["error"]["type"].as_str().unwrap_or("").to_owned(),
    };
    let value = json!({"status": status, "node": node, "code": code, "message": message});
    // Refusals happen before the upstream is called; other 4xx are the request's own fault. 5xx after
    // admission (upstream errors) may have been served in part.
    let kind = match status {
        400..=499 => OpType::Fail,
        503 if code == "budget_unavailable" || message.contains("budget") => OpType::Fail,
        _ => OpType::Info,
    };
    result(kind, value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand::SeedableRng;

    fn answer(raw: &str) -> http::Response {
        http::parse_response(raw.as_bytes()).unwrap()
    }

    #[test]
    fn classifies_refusals_streams_and_errors() {
        let mut rng = StdRng::seed_from_u64(1);
        let org = OrgPlan { name: "acme".into(), limit: Some(10), port: 1, key: "k".into() };
        let mut spec = random_spec(&mut rng, &org, 1, 0.2);
        spec.api = Api::Openai;
        spec.stream = false;
        let refused = answer(
            "HTTP/1.1 429 x\r\n\r\n{\"error\":{\"type\":\"budget_exceeded\",\"code\":\"budget_exceeded\",\"message\":\"m\"}}",
        );
        assert_eq!(classify(&spec, &refused).kind, OpType::Fail);
        let unavailable = answer("HTTP/1.1 503 x\r\n\r\n{\"error\":{\"code\":\"budget_unavailable\"}}");
        assert_eq!(classify(&spec, &unavailable).kind, OpType::Fail);
        let anthropic = answer(
            "HTTP/1.1 429 x\r\n\r\n{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"budget exhausted for org:acme\"}}",
        );
        let refusal = classify(&spec, &anthropic);
        assert_eq!((refusal.kind, refusal.value["code"].as_str()), (OpType::Fail, Some("budget_exceeded")));
        let upstream = answer("HTTP/1.1 502 x\r\n\r\n{\"error\":{\"code\":\"upstream_error\"}}");
        assert_eq!(classify(&spec, &upstream).kind, OpType::Info);
        spec.stream = true;
        let cut = answer("HTTP/1.1 200 OK\r\n\r\ndata: {}\n\n");
        assert_eq!(classify(&spec, &cut).kind, OpType::Info);
        let done = answer("HTTP/1.1 200 OK\r\n\r\ndata: {}\n\ndata: [DONE]\n\n");
        assert_eq!(classify(&spec, &done).kind, OpType::Ok);
        assert!(body(&spec).contains("\"model\""));
    }
}
