//! What the admin listener shows about gossip and endpoints: `GET /admin/v1/cluster/gossip` and the
//! endpoint lines of `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::Gossip;
use crate::clock::{monotonic_ms, wall_ms};
use crate::health::{BreakerState, EndpointRegistry};

/// The gossip view as the admin API shows it: this node's own observations even without gossip.
pub fn admin_view(registry: &EndpointRegistry, cluster: Option<&Gossip>) -> serde_json::Value {
    let now = monotonic_ms();
    let now_wall = wall_ms();
    let local: BTreeMap<String, serde_json::Value> = registry
        .active()
        .iter()
        .map(|endpoint| {
            let signal = endpoint.load_signal(now_wall, registry.gpu_ttl_ms);
            let value = serde_json::json!({
                "report": endpoint.local_report(now),
                "routable": endpoint.is_routable(now),
                "open_on_a_peer": endpoint.remote_open(),
                "outstanding_cluster_wide": signal.outstanding,
                "gpu": signal.gpu,
            });
            (endpoint.name.clone(), value)
        })
        .collect();
    match cluster {
        Some(cluster) => {
            let sealed = cluster.seal_stats().map(|stats| {
                serde_json::json!({
                    "rejected_unauthenticated": stats.rejected_unauthenticated.load(Ordering::Relaxed),
                    "rejected_stale": stats.rejected_stale.load(Ordering::Relaxed),
                    "dropped_oversize": stats.dropped_oversize.load(Ordering::Relaxed),
                })
            });
            serde_json::json!({
                "enabled": true,
                "gossip_addr": cluster.gossip_addr().to_string(),
                "sealed": sealed,
                "local": local,
                "view": *cluster.view(),
            })
        }
        None => serde_json::json!({"enabled": false, "local": local}),
    }
}

/// Prometheus lines about endpoints and gossip (appended to the node's `/metrics`).
pub fn render_metrics(registry: &EndpointRegistry, cluster: Option<&Gossip>, out: &mut String) {
    use std::fmt::Write as _;
    let now = monotonic_ms();
    let now_wall = wall_ms();
    let endpoints = registry.active();
    let label = |name: &str| name.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    out.push_str("# HELP tollgate_endpoint_breaker_state This node's circuit breaker per endpoint (1 = current state).\n# TYPE tollgate_endpoint_breaker_state gauge\n");
    for endpoint in &endpoints {
        let current = endpoint.local_breaker(now);
        for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
            let _ = writeln!(
                out,
                "tollgate_endpoint_breaker_state{{endpoint=\"{}\",state=\"{}\"}} {}",
                label(&endpoint.name),
                state.label(),
                u8::from(state == current)
            );
        }
    }
    out.push_str("# HELP tollgate_endpoint_open_on_peer 1 when a live peer has the endpoint's breaker open (this node avoids it too).\n# TYPE tollgate_endpoint_open_on_peer gauge\n");
    for endpoint in &endpoints {
        let _ = writeln!(
            out,
            "tollgate_endpoint_open_on_peer{{endpoint=\"{}\"}} {}",
            label(&endpoint.name),
            u8::from(endpoint.remote_open())
        );
    }
    out.push_str("# HELP tollgate_endpoint_outstanding_requests Requests outstanding at the endpoint from every gateway node.\n# TYPE tollgate_endpoint_outstanding_requests gauge\n");
    for endpoint in &endpoints {
        let signal = endpoint.load_signal(now_wall, registry.gpu_ttl_ms);
        let _ = writeln!(
            out,
            "tollgate_endpoint_outstanding_requests{{endpoint=\"{}\"}} {}",
            label(&endpoint.name),
            signal.outstanding
        );
    }
    out.push_str("# HELP tollgate_endpoint_latency_ewma_seconds Peak-EWMA upstream latency seen by this node.\n# TYPE tollgate_endpoint_latency_ewma_seconds gauge\n");
    for endpoint in &endpoints {
        let report = endpoint.local_report(now);
        let _ = writeln!(
            out,
            "tollgate_endpoint_latency_ewma_seconds{{endpoint=\"{}\"}} {}",
            label(&endpoint.name),
            report.latency_ms / 1e3
        );
    }
    out.push_str("# HELP tollgate_endpoint_gpu_queue GPU engine queue (waiting) and batch (running) from the freshest scrape.\n# TYPE tollgate_endpoint_gpu_queue gauge\n");
    for endpoint in &endpoints {
        if let Some(gpu) = endpoint.fresh_gpu(now_wall, registry.gpu_ttl_ms) {
            let name = label(&endpoint.name);
            let _ =
                writeln!(out, "tollgate_endpoint_gpu_queue{{endpoint=\"{name}\",kind=\"waiting\"}} {}", gpu.waiting);
            let _ =
                writeln!(out, "tollgate_endpoint_gpu_queue{{endpoint=\"{name}\",kind=\"running\"}} {}", gpu.running);
            let _ = writeln!(out, "tollgate_endpoint_gpu_kv_use{{endpoint=\"{name}\"}} {}", gpu.kv_use);
        }
    }
    if let Some(cluster) = cluster {
        let view = cluster.view();
        out.push_str("# HELP tollgate_gossip_live_members Nodes gossip considers alive (this one included).\n# TYPE tollgate_gossip_live_members gauge\n");
        let _ = writeln!(out, "tollgate_gossip_live_members {}", view.live_members().count());
        if let Some(stats) = cluster.seal_stats() {
            out.push_str("# HELP tollgate_gossip_datagrams_refused_total Gossip datagrams refused or not sent by the sealing transport.\n# TYPE tollgate_gossip_datagrams_refused_total counter\n");
            for (reason, counter) in [
                ("unauthenticated", &stats.rejected_unauthenticated),
                ("stale", &stats.rejected_stale),
                ("oversize", &stats.dropped_oversize),
            ] {
                let _ = writeln!(
                    out,
                    "tollgate_gossip_datagrams_refused_total{{reason=\"{reason}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
    }
}
