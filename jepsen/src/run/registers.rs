//! Config writes and reads as registers: key `k` is the model `jepsen-reg-k`, its value the model's
//! `max_output_tokens` (unique per write). Writes are `PUT /admin/v1/models/{name}` and reads `GET` of
//! the same (a linearizable read), each on a random region.

use std::time::Duration;

use serde_json::{json, Value};

use crate::history::OpType;
use crate::http;

pub const REGISTERS: u64 = 3;

pub fn model_name(key: u64) -> String {
    format!("jepsen-reg-{key}")
}

/// The `Idempotency-Key` of the write of `value` (values are unique per run, so keys are too).
pub fn idempotency_key(value: u64) -> String {
    format!("jepsen-write-{value}")
}

/// Writes `value` into register `key` through the region at `admin_url`, with the write's
/// `Idempotency-Key`. `ok` on 200; `fail` when the request certainly had no effect (no connection, or a
/// 4xx validation error); `info` otherwise — a 5xx or a timeout on a forwarded write may still be
/// committed later.
pub async fn write(admin_url: &str, token: &str, key: u64, value: u64, timeout: Duration) -> (OpType, Value) {
    let name = model_name(key);
    let body = json!({"name": name, "max_output_tokens": value, "targets": [{"provider": "mock-openai"}]});
    let url = format!("{admin_url}/admin/v1/models/{name}");
    let idempotency = idempotency_key(value);
    let headers = [("Idempotency-Key", idempotency.as_str())];
    match http::request_with_headers("PUT", &url, Some(token), Some(&body.to_string()), &headers, timeout).await {
        Ok(response) if response.status == 200 => (OpType::Ok, json!({"key": key, "value": value})),
        Ok(response) if (400..500).contains(&response.status) => {
            (OpType::Fail, json!({"key": key, "value": value, "status": response.status, "body": response.body}))
        }
        Ok(response) => (
            OpType::Info,
            json!({"key": key, "value": value, "status": response.status,
            "body": response.body.chars().take(200).collect::<String>()}),
        ),
        Err(err) => {
            let text = format!("{err:#}");
            // "connecting" failures never sent a byte; everything else may have reached the node.
            let kind = if text.contains("connecting") { OpType::Fail } else { OpType::Info };
            (kind, json!({"key": key, "value": value, "error": text}))
        }
    }
}

/// One logical write retried with the same `Idempotency-Key` (the `idempotent-retry` nemesis): attempt
/// `i` gets `first_timeout × 2^i`, up to `attempts`, each on the next region (a client failing over).
/// The history records one operation: invoked before the first attempt, completed after the last. Once
/// an attempt was indeterminate, a later refusal no longer proves "no effect", so the op stays `info`.
pub async fn write_retrying(
    admin_urls: &[String],
    token: &str,
    key: u64,
    value: u64,
    first_timeout: Duration,
    attempts: u32,
) -> (OpType, Value) {
    let mut tried = Vec::new();
    let mut maybe_applied = false;
    for attempt in 0..attempts.max(1) {
        let admin_url = &admin_urls[attempt as usize % admin_urls.len().max(1)];
        let timeout = first_timeout * 2u32.pow(attempt.min(6));
        let (kind, result) = write(admin_url, token, key, value, timeout).await;
        tried.push(json!({"kind": kind, "timeout_ms": timeout.as_millis() as u64, "result": result}));
        let retry_note = json!({"key": key, "value": value, "idempotency_key": idempotency_key(value),
            "attempts": tried.len(), "tries": tried});
        match kind {
            OpType::Ok => return (OpType::Ok, retry_note),
            OpType::Fail if !maybe_applied => return (OpType::Fail, retry_note),
            _ => maybe_applied = maybe_applied || kind == OpType::Info,
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    (
        OpType::Info,
        json!({"key": key, "value": value, "idempotency_key": idempotency_key(value), "attempts": tried.len(),
            "tries": tried}),
    )
}

/// Reads register `key`: `ok` with the value (`null` when the model does not exist), `fail` otherwise (a
/// read that did not answer says nothing and is left out of the check).
pub async fn read(admin_url: &str, token: &str, key: u64, timeout: Duration) -> (OpType, Value) {
    let url = format!("{admin_url}/admin/v1/models/{}", model_name(key));
    match http::request("GET", &url, Some(token), None, timeout).await {
        Ok(response) if response.status == 200 => match response.json() {
            Ok(model) => (OpType::Ok, json!({"key": key, "value": model["max_output_tokens"]})),
            Err(err) => (OpType::Fail, json!({"key": key, "error": format!("{err:#}")})),
        },
        Ok(response) if response.status == 404 => (OpType::Ok, json!({"key": key, "value": null})),
        Ok(response) => (
            OpType::Fail,
            json!({"key": key, "status": response.status,
            "body": response.body.chars().take(200).collect::<String>()}),
        ),
        Err(err) => (OpType::Fail, json!({"key": key, "error": format!("{err:#}")})),
    }
}
