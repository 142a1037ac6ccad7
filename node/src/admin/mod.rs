//! The admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, a small status page, and the
//! `/admin/v1/*` control-plane API (bearer admin token; see `api.rs`). Paths are matched by an axum
//! router; the data path stays on raw hyper for speed.

mod api;
mod budgets;
mod cluster;
mod cluster_metrics;
mod extract;
mod redact;
mod resource;
pub mod status;
mod usage;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::middleware::from_fn_with_state;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceExt;

pub use cluster::gossip_unreachable_members;
pub use usage::parse_rfc3339;

use extract::{require_admin_token, AdminError, MAX_ADMIN_BODY};

use crate::gateway::Gateway;
use crate::proxy::ResponseBody;

/// The admin listener's routes, built once per node.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { json(StatusCode::OK, r#"{"status":"ok"}"#) }))
        .route("/readyz", get(readyz))
        .route(
            "/",
            get(|State(gateway): State<Arc<Gateway>>| async move {
                Html(status::page(&status::status_json(&gateway).await))
            }),
        )
        .route(
            "/status.json",
            get(|State(gateway): State<Arc<Gateway>>| async move {
                extract::json_response(StatusCode::OK, &status::status_json(&gateway).await)
            }),
        )
        .nest("/admin/v1", api_router(gateway.clone()))
        .fallback(|| async { json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#) })
        .method_not_allowed_fallback(|| async {
            json(StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"method not allowed"}"#)
        })
        .with_state(gateway)
}

/// The `/admin/v1` routes, behind the admin token.
fn api_router(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/cluster", get(cluster::status))
        .route("/cluster/gossip", get(cluster::gossip))
        .route("/cluster/nodes", post(cluster::add_node))
        .route("/cluster/nodes/{id}", delete(cluster::remove_node))
        .route("/audit", get(cluster::audit))
        .route("/apply", post(api::apply))
        .route("/keys", get(api::list_keys).post(api::create_key))
        .route("/budgets", get(budgets::get_budgets).put(budgets::put_budget).delete(budgets::delete_budget))
        .route("/usage", get(usage::get_usage))
        .route("/{kind}", get(api::list))
        .route("/{kind}/{*name}", get(api::get_one).put(api::put).delete(api::remove))
        .fallback(|method: Method, uri: Uri| async move {
            AdminError::not_found(format!("no admin endpoint {method} /admin/v1{}", uri.path()))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            AdminError(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on /admin/v1{}", uri.path()))
        })
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY))
        .layer(from_fn_with_state(gateway, require_admin_token))
}

/// Serves one admin request. A trailing slash is ignored (`/admin/v1/models/` lists models).
pub async fn handle(router: Router, mut request: Request<Incoming>) -> http::Response<ResponseBody> {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let rebuilt = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = rebuilt.parse() {
            *request.uri_mut() = uri;
        }
    }
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // Admin answers are small and built in memory: collecting them is one poll.
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => ResponseBody::full(collected.to_bytes()),
        Err(err) => {
            tracing::warn!(%err, "admin response body failed");
            ResponseBody::full(Bytes::from_static(br#"{"error":"internal error"}"#))
        }
    };
    http::Response::from_parts(parts, body)
}

fn json(status: StatusCode, body: &'static str) -> Response {
    (status, [(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
    let mut snapshot = crate::metrics::Snapshot::default();
    crate::gossip::collect_metrics(&gateway.endpoints, gateway.gossip.get(), &mut snapshot);
    cluster_metrics::collect(&gateway, &mut snapshot);
    crate::otlp_queue::collect(&mut snapshot);
    let body = gateway.metrics.render(snapshot);
    ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    if !gateway.is_loaded() {
        json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"waiting_for_control_state"}"#)
    } else if gateway.is_shutting_down() {
        json(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"shutting_down"}"#)
    } else {
        json(StatusCode::OK, r#"{"status":"ready"}"#)
    }
}
