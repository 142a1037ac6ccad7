//! `GET /v1/models` and `GET /metrics` (vLLM-style Prometheus text).

use hyper::Response;
use serde_json::{json, Value};

use super::{check_auth, full, json_response, response, Api, Ctx, Engine, RespBody};

/// Model ids served by `GET /v1/models`.
pub const MODELS: &[&str] = &["mock-gpt", "mock-gpt-mini", "mock-embed", "mock-claude"];

pub fn models(ctx: &Ctx) -> Response<RespBody> {
    // Anthropic clients list models with `anthropic-version` + `x-api-key`.
    let api = if ctx.req.header("anthropic-version").is_some() { Api::Anthropic } else { Api::OpenAi };
    if let Err(r) = check_auth(ctx, api) {
        return r;
    }
    if api == Api::Anthropic {
        // Anthropic's list-models shape.
        let data: Vec<Value> = MODELS
            .iter()
            .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": "2023-11-14T22:13:20Z"}))
            .collect();
        return json_response(
            200,
            &json!({"data": data, "has_more": false, "first_id": MODELS.first(), "last_id": MODELS.last()}),
        );
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}))
        .collect();
    json_response(200, &json!({"object": "list", "data": data}))
}

pub fn metrics(ctx: &Ctx) -> Response<RespBody> {
    let (waiting, running, kv) = ctx.shared.gpu_values();
    let engine = ctx.shared.lock().engine;
    let l = "model_name=\"mock-gpt\"";
    let body = match engine {
        Engine::Vllm => format!(
            "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
             # TYPE vllm:num_requests_running gauge\n\
             vllm:num_requests_running{{{l}}} {running}.0\n\
             # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
             # TYPE vllm:num_requests_waiting gauge\n\
             vllm:num_requests_waiting{{{l}}} {waiting}.0\n\
             # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
             # TYPE vllm:kv_cache_usage_perc gauge\n\
             vllm:kv_cache_usage_perc{{{l}}} {kv:?}\n\
             # HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.\n\
             # TYPE vllm:gpu_cache_usage_perc gauge\n\
             vllm:gpu_cache_usage_perc{{{l}}} {kv:?}\n"
        ),
        Engine::Sglang => format!(
            "# HELP sglang:num_running_reqs The number of running requests.\n\
             # TYPE sglang:num_running_reqs gauge\n\
             sglang:num_running_reqs{{{l}}} {running}.0\n\
             # HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n\
             # TYPE sglang:num_queue_reqs gauge\n\
             sglang:num_queue_reqs{{{l}}} {waiting}.0\n\
             # HELP sglang:token_usage The token usage.\n\
             # TYPE sglang:token_usage gauge\n\
             sglang:token_usage{{{l}}} {kv:?}\n"
        ),
        Engine::Tgi => format!(
            "# TYPE tgi_queue_size gauge\ntgi_queue_size {waiting}\n\
             # TYPE tgi_batch_current_size gauge\ntgi_batch_current_size {running}\n"
        ),
    };
    response(200, "text/plain; version=0.0.4; charset=utf-8", full(body))
}
