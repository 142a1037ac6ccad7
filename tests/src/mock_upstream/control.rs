//! The mock's control API, for a mock run as its own process (`tollgate-mock-upstream`) and driven over
//! the socket by tests in other languages (the Python SDK checks):
//!
//! - `POST /_mock/script` queues a [`Script`] made of the JSON body's fields (`reply`, `tool_call` and
//!   `second_tool_call` as `[name, arguments]`, `preamble`, `reasoning`, `status`, `finish_max_tokens`,
//!   `omit_usage`);
//!   unknown fields are a 400, so a misspelt script never silently becomes the default one.
//! - `GET /_mock/stats` answers what the mock served: model requests, input and output tokens (what the
//!   upstream generated, to compare with what the client was told), and the last model request's body.
//!
//! Control requests are not recorded and consume no script.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_response, RespBody, Script, Shared};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptSpec {
    reply: Option<String>,
    tool_call: Option<(String, String)>,
    second_tool_call: Option<(String, String)>,
    preamble: Option<String>,
    reasoning: Option<String>,
    status: Option<u16>,
    #[serde(default)]
    finish_max_tokens: bool,
    #[serde(default)]
    omit_usage: bool,
}

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<RespBody> {
    let (method, path) = (req.method().as_str().to_owned(), req.uri().path().to_owned());
    match (method.as_str(), path.as_str()) {
        ("POST", "/_mock/script") => {
            let bytes = match req.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => return json_response(400, &json!({"error": format!("reading the body: {err}")})),
            };
            match serde_json::from_slice::<ScriptSpec>(&bytes) {
                Ok(spec) => {
                    let mut queue = shared.lock();
                    queue.queue.push_back(Script {
                        reply: spec.reply,
                        tool_call: spec.tool_call,
                        second_tool_call: spec.second_tool_call,
                        preamble: spec.preamble,
                        reasoning: spec.reasoning,
                        status: spec.status,
                        finish_max_tokens: spec.finish_max_tokens,
                        omit_usage: spec.omit_usage,
                        ..Script::default()
                    });
                    json_response(200, &json!({"queued": queue.queue.len()}))
                }
                Err(err) => json_response(400, &json!({"error": format!("not a script: {err}")})),
            }
        }
        ("GET", "/_mock/stats") => {
            let inner = shared.lock();
            let model_requests: Vec<&Value> =
                inner.requests.iter().filter(|r| r.method == "POST").map(|r| &r.body).collect();
            json_response(
                200,
                &json!({
                    "model_requests": model_requests.len(),
                    "input_tokens": shared.input_tokens.load(Ordering::SeqCst),
                    "output_tokens": shared.output_tokens.load(Ordering::SeqCst),
                    "last_request": model_requests.last().copied().cloned().unwrap_or(Value::Null),
                }),
            )
        }
        _ => json_response(404, &json!({"error": format!("no control endpoint {method} {path}")})),
    }
}
