//! Building responses: headers, bodies, and error bodies in each API's shape.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::{Api, RespBody};

/// An error response in the API's shape for `status`.
pub(crate) fn error_response(
    api: Api,
    status: u16,
    message: Option<&str>,
    retry_after: Option<u64>,
) -> Response<RespBody> {
    let body = match api {
        Api::OpenAi => {
            let (ty, code, default_msg) = match status {
                400 => ("invalid_request_error", Value::Null, "Invalid request."),
                401 => ("invalid_request_error", json!("invalid_api_key"), "Incorrect API key provided."),
                403 => (
                    "invalid_request_error",
                    json!("unsupported_country_region_territory"),
                    "Country, region, or territory not supported",
                ),
                404 => (
                    "invalid_request_error",
                    json!("model_not_found"),
                    "The model does not exist or you do not have access to it.",
                ),
                429 => (
                    "requests",
                    json!("rate_limit_exceeded"),
                    "Rate limit reached for requests per min (RPM). Please try again in 1s.",
                ),
                503 => ("server_error", Value::Null, "The engine is currently overloaded, please try again later"),
                s if s >= 500 => (
                    "server_error",
                    Value::Null,
                    "The server had an error while processing your request. Sorry about that!",
                ),
                _ => ("invalid_request_error", Value::Null, "Request failed."),
            };
            json!({"error": {"message": message.unwrap_or(default_msg), "type": ty, "param": null, "code": code}})
        }
        Api::Anthropic => {
            let (ty, default_msg) = match status {
                400 => ("invalid_request_error", "Invalid request."),
                401 => ("authentication_error", "invalid x-api-key"),
                403 => ("permission_error", "Your API key does not have permission to use the specified resource."),
                404 => ("not_found_error", "The requested resource could not be found."),
                413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
                429 => ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
                503 | 529 => ("overloaded_error", "Overloaded"),
                _ => ("api_error", "Internal server error"),
            };
            json!({"type": "error", "error": {"type": ty, "message": message.unwrap_or(default_msg)}})
        }
    };
    let mut resp = json_response(status, &body);
    if let Some(secs) = retry_after {
        add_header(&mut resp, "retry-after", &secs.to_string());
    }
    resp
}

pub(crate) fn add_header(resp: &mut Response<RespBody>, name: &'static str, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

pub(crate) fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn response(status: u16, content_type: &str, body: RespBody) -> Response<RespBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    add_header(&mut resp, "content-type", content_type);
    resp
}

pub(crate) fn json_response(status: u16, v: &Value) -> Response<RespBody> {
    response(status, "application/json", full(v.to_string()))
}

pub(crate) fn text_response(status: u16, content_type: &str, body: &'static str) -> Response<RespBody> {
    response(status, content_type, full(body))
}

pub(crate) fn sse_response(body: RespBody) -> Response<RespBody> {
    let mut resp = response(200, "text/event-stream; charset=utf-8", body);
    add_header(&mut resp, "cache-control", "no-cache");
    resp
}
