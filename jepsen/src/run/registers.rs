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

/// Writes `value` into register `key` through the region at `admin_url`.
/// `ok` on 200; `fail` when the request certainly had no effect (no connection, or a 4xx validation
/// error); `info` otherwise — a 5xx or a timeout on a forwarded write may still be committed later.
pub async fn write(admin_url: &str, token: &str, key: u64, value: u64, timeout: Duration) -> (OpType, Value) {
    let name = model_name(key);
    let body = json!({"name": name, "max_output_tokens": value, "targets": [{"provider": "mock-openai"}]});
    let url = format!("{admin_url}/admin/v1/models/{name}");
    match http::request("PUT", &url, Some(token), Some(&body.to_string()), timeout).await {
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
