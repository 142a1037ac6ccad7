//! The live status page on the admin listener (`GET /`) and the JSON it polls (`GET /status.json`):
//! members with leader, term and lag; endpoints from gossip (breaker, outstanding requests, latency, GPU
//! queue); request rate, error rate and TTFT over the last minutes as small charts; per-org budget use as
//! bars once the viewer enters the admin token (budgets name tenants, so they stay behind the lock: the
//! page reads them from `/admin/v1/budgets` with the token the viewer typed; it is kept in the tab only).
//!
//! The page is plain HTML/CSS/JS compiled into the binary (no CDN, no build step). The tables are rendered
//! on the server, so the page is readable without JavaScript; the script refreshes them and draws the charts.

use std::sync::{Arc, Weak};

use serde_json::{json, Value};

use crate::gateway::Gateway;
pub use crate::status_history::{Point, StatusHistory, SAMPLE_EVERY};

/// (responses, errors), (TTFT sum s, TTFT count), when read.
type Counters = ((u64, u64), (f64, u64), std::time::Instant);

/// Samples the gateway's counters every [`SAMPLE_EVERY`] into its history; ends with the gateway.
pub fn spawn_sampler(gateway: &Arc<Gateway>) {
    let weak: Weak<Gateway> = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(SAMPLE_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Counters> = None;
        loop {
            ticker.tick().await;
            let Some(gateway) = weak.upgrade() else { return };
            let now = (gateway.metrics.response_totals(), gateway.metrics.ttft_totals(), std::time::Instant::now());
            if let Some(((requests, errors), (ttft_sum, ttft_count), at)) = last {
                let ((requests_now, errors_now), (ttft_sum_now, ttft_count_now), at_now) = now;
                let served = requests_now.saturating_sub(requests);
                let answered = ttft_count_now.saturating_sub(ttft_count);
                gateway.status_history.push(Point {
                    at_ms: crate::clock::wall_ms(),
                    requests_per_s: served as f64 / at_now.duration_since(at).as_secs_f64().max(1e-3),
                    error_rate: if served == 0 {
                        0.0
                    } else {
                        errors_now.saturating_sub(errors) as f64 / served as f64
                    },
                    ttft_ms: (answered > 0).then(|| (ttft_sum_now - ttft_sum) * 1e3 / answered as f64),
                });
            }
            last = Some(now);
        }
    });
}

/// `GET /status.json`: everything the page shows except budgets.
pub async fn status_json(gateway: &Gateway) -> Value {
    let cluster = match &gateway.consensus {
        Some(consensus) => {
            let status = consensus.status().await;
            json!({"leader": status.leader, "term": status.term, "applied_index": status.applied_index,
                "members": status.members.iter().map(|m| json!({"id": m.id, "role": m.role, "raft_addr": m.raft_addr,
                    "admin_addr": m.admin_addr, "lag": m.lag, "alive": m.alive})).collect::<Vec<_>>()})
        }
        None => json!({"leader": null, "term": null, "members": []}),
    };
    let now = crate::clock::monotonic_ms();
    let now_wall = crate::clock::wall_ms();
    let endpoints: Vec<Value> = gateway
        .endpoints
        .active()
        .iter()
        .map(|endpoint| {
            let signal = endpoint.load_signal(now_wall, gateway.endpoints.gpu_ttl_ms);
            json!({"name": endpoint.name, "breaker": endpoint.local_breaker(now).label(),
                "open_on_a_peer": endpoint.remote_open(), "outstanding": signal.outstanding,
                "latency_ms": signal.latency_ms, "gpu": signal.gpu})
        })
        .collect();
    json!({
        "node": gateway.node_id,
        "version": env!("CARGO_PKG_VERSION"),
        "cluster": cluster,
        "gossip_members": gateway.gossip.get().map(|g| g.view().live_members().count()),
        "endpoints": endpoints,
        "models": gateway.snapshot().model_names,
        "series": gateway.status_history.points(),
        "sample_every_ms": SAMPLE_EVERY.as_millis() as u64,
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "–".into(),
        Value::String(s) => escape(s),
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| if f.fract() == 0.0 { format!("{f:.0}") } else { format!("{f:.1}") }),
        other => escape(&other.to_string()),
    }
}

/// The page, its tables filled from `status` (the same JSON the script polls).
pub fn page(status: &Value) -> String {
    let members: String = status["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let leader = if m["role"] == "leader" { " class=\"leader\"" } else { "" };
            format!(
                "<tr{leader}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                cell(&m["id"]),
                cell(&m["role"]),
                cell(&m["raft_addr"]),
                cell(&m["lag"]),
                if m["alive"] == true { "yes" } else { "no" }
            )
        })
        .collect();
    let endpoints: String = status["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                cell(&e["name"]),
                cell(&e["breaker"]),
                if e["open_on_a_peer"] == true { "yes" } else { "no" },
                cell(&e["outstanding"]),
                cell(&e["latency_ms"]),
                cell(&e["gpu"]["waiting"])
            )
        })
        .collect();
    let member_count = status["cluster"]["members"].as_array().map_or(0, Vec::len);
    PAGE.replace("{{node}}", &cell(&status["node"]))
        .replace("{{version}}", &cell(&status["version"]))
        .replace("{{leader}}", &cell(&status["cluster"]["leader"]))
        .replace("{{term}}", &cell(&status["cluster"]["term"]))
        .replace("{{member_count}}", &member_count.to_string())
        .replace("{{members}}", &members)
        .replace("{{endpoints}}", &endpoints)
}

const PAGE: &str = include_str!("status.html");
