//! The admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, a small status page, and the
//! `/admin/v1/*` control-plane API (bearer admin token; see `api.rs`).

mod api;
mod redact;
mod resource;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::gateway::Gateway;
use crate::proxy::ResponseBody;

pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    if request.uri().path().starts_with("/admin/") {
        return api::handle(gateway, request).await;
    }
    let path = request.uri().path();
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "application/json", r#"{"error":"method not allowed"}"#.into());
    }
    match path {
        "/metrics" => {
            let mut body = gateway.metrics.render();
            crate::gossip::render_metrics(&gateway.endpoints, gateway.gossip.get(), &mut body);
            text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        "/healthz" => text(StatusCode::OK, "application/json", r#"{"status":"ok"}"#.into()),
        "/readyz" => {
            if !gateway.is_loaded() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    r#"{"status":"waiting_for_control_state"}"#.into(),
                )
            } else if gateway.is_shutting_down() {
                text(StatusCode::SERVICE_UNAVAILABLE, "application/json", r#"{"status":"shutting_down"}"#.into())
            } else {
                text(StatusCode::OK, "application/json", r#"{"status":"ready"}"#.into())
            }
        }
        "/" => text(StatusCode::OK, "text/html; charset=utf-8", status_page(&gateway)),
        _ => text(StatusCode::NOT_FOUND, "application/json", r#"{"error":"not found"}"#.into()),
    }
}

pub(crate) fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn status_page(gateway: &Gateway) -> String {
    let snapshot = gateway.snapshot();
    let mut rows = String::new();
    for name in &snapshot.model_names {
        if let Some(route) = snapshot.routes.get(name) {
            let targets: Vec<String> = route
                .targets
                .iter()
                .map(|t| format!("{}/{}", html_escape(&t.provider.name), html_escape(&t.upstream_model)))
                .collect();
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{:?}</td><td>{}</td></tr>",
                html_escape(name),
                route.strategy,
                targets.join(", ")
            ));
        }
    }
    let now = crate::clock::monotonic_ms();
    let now_wall = crate::clock::wall_ms();
    let mut endpoints = String::new();
    for endpoint in gateway.endpoints.active() {
        let signal = endpoint.load_signal(now_wall, gateway.endpoints.gpu_ttl_ms);
        endpoints.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} ms</td></tr>",
            html_escape(&endpoint.name),
            endpoint.local_breaker(now).label(),
            if endpoint.remote_open() { "yes" } else { "no" },
            signal.outstanding,
            signal.latency_ms,
        ));
    }
    let members = match (gateway.gossip.get(), gateway.gossip_error.get()) {
        (Some(cluster), _) => format!("{} live members", cluster.view().live_members().count()),
        (None, Some(error)) => format!("not running: {}", html_escape(error)),
        (None, None) => "off".to_owned(),
    };
    format!(
        "<!doctype html><html><head><title>Tollgate node {id}</title></head><body><h1>Tollgate node {id}</h1>\
         <p>version {version}</p><table border=1><tr><th>model</th><th>strategy</th><th>targets</th></tr>{rows}</table>\
         <h2>Endpoints</h2><p>gossip: {members}</p><table border=1><tr><th>endpoint</th><th>breaker</th>\
         <th>open on a peer</th><th>outstanding (cluster)</th><th>latency (peak EWMA)</th></tr>{endpoints}</table>\
         <p><a href=\"/metrics\">metrics</a></p></body></html>",
        id = gateway.node_id,
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// Raft members (other than this node) that gossip does not see alive and trusted.
pub fn gossip_unreachable_members(gateway: &Gateway, consensus: &tollgate_consensus::ConsensusNode) -> Vec<u64> {
    let Some(cluster) = gateway.gossip.get() else {
        return Vec::new();
    };
    let view = cluster.view();
    let mut missing: Vec<u64> = consensus
        .members()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| *id != gateway.node_id)
        .filter(|id| !view.live_members().any(|m| m.trusted && m.node_id == id.to_string()))
        .collect();
    missing.sort_unstable();
    missing
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
