//! What the admin listener shows about gossip and endpoints: `GET /admin/v1/cluster/gossip` and the
//! endpoint series of `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::Gossip;
use crate::clock::{monotonic_ms, wall_ms};
use crate::health::{BreakerState, EndpointRegistry};
use crate::metrics::Snapshot;

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

/// The `/metrics` series about endpoints and gossip.
pub fn collect_metrics(registry: &EndpointRegistry, cluster: Option<&Gossip>, snapshot: &mut Snapshot) {
    let now = monotonic_ms();
    let now_wall = wall_ms();
    let endpoints = registry.active();
    let breaker = snapshot
        .gauge("tollgate_endpoint_breaker_state", "This node's circuit breaker per endpoint (1 = current state).");
    for endpoint in &endpoints {
        let current = endpoint.local_breaker(now);
        for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
            breaker.sample(&[("endpoint", &endpoint.name), ("state", state.label())], state == current);
        }
    }
    let open_on_peer = snapshot.gauge(
        "tollgate_endpoint_open_on_peer",
        "1 when a live peer has the endpoint's breaker open (this node avoids it too).",
    );
    for endpoint in &endpoints {
        open_on_peer.sample(&[("endpoint", &endpoint.name)], endpoint.remote_open());
    }
    let outstanding = snapshot.gauge(
        "tollgate_endpoint_outstanding_requests",
        "Requests outstanding at the endpoint from every gateway node.",
    );
    for endpoint in &endpoints {
        let signal = endpoint.load_signal(now_wall, registry.gpu_ttl_ms);
        outstanding.sample(&[("endpoint", &endpoint.name)], signal.outstanding);
    }
    let latency =
        snapshot.gauge("tollgate_endpoint_latency_ewma_seconds", "Peak-EWMA upstream latency seen by this node.");
    for endpoint in &endpoints {
        latency.sample(&[("endpoint", &endpoint.name)], endpoint.local_report(now).latency_ms / 1e3);
    }
    let gpus: Vec<_> = endpoints
        .iter()
        .filter_map(|endpoint| Some((&endpoint.name, endpoint.fresh_gpu(now_wall, registry.gpu_ttl_ms)?)))
        .collect();
    let queue = snapshot.gauge(
        "tollgate_endpoint_gpu_queue",
        "GPU engine queue (waiting) and batch (running) from the freshest scrape.",
    );
    for (name, gpu) in &gpus {
        queue.sample(&[("endpoint", name), ("kind", "waiting")], gpu.waiting);
        queue.sample(&[("endpoint", name), ("kind", "running")], gpu.running);
    }
    let kv = snapshot.gauge("tollgate_endpoint_gpu_kv_use", "GPU KV-cache use (0 to 1) from the freshest scrape.");
    for (name, gpu) in &gpus {
        kv.sample(&[("endpoint", name)], gpu.kv_use);
    }
    if let Some(cluster) = cluster {
        collect_gossip(cluster, snapshot);
    }
}

/// Members by liveness and trust, reports held per endpoint, and the sealing transport's refusals.
fn collect_gossip(cluster: &Gossip, snapshot: &mut Snapshot) {
    let view = cluster.view();
    snapshot
        .gauge("tollgate_gossip_live_members", "Nodes gossip considers alive (this one included).")
        .sample(&[], view.live_members().count());
    let members = snapshot.gauge(
        "tollgate_gossip_members",
        "Nodes gossip knows, by liveness and whether they pass the member filter (a Raft member at its address).",
    );
    for alive in [true, false] {
        for trusted in [true, false] {
            let count = view.members.iter().filter(|m| m.alive == alive && m.trusted == trusted).count();
            members.sample(&[("alive", &alive.to_string()), ("trusted", &trusted.to_string())], count);
        }
    }
    let seen = snapshot.gauge(
        "tollgate_gossip_endpoint_reports",
        "Live nodes whose health report of the endpoint this node holds (this one included), and of those how many have a fresh GPU scrape.",
    );
    for (name, endpoint) in &view.endpoints {
        seen.sample(&[("endpoint", name), ("kind", "health")], endpoint.reports.len());
        seen.sample(&[("endpoint", name), ("kind", "gpu")], endpoint.gpu.len());
    }
    if let Some(stats) = cluster.seal_stats() {
        let refused = snapshot.counter(
            "tollgate_gossip_datagrams_refused",
            "Gossip datagrams refused or not sent by the sealing transport.",
        );
        for (reason, counter) in [
            ("unauthenticated", &stats.rejected_unauthenticated),
            ("stale", &stats.rejected_stale),
            ("oversize", &stats.dropped_oversize),
        ] {
            refused.sample(&[("reason", reason)], counter.load(Ordering::Relaxed));
        }
    }
}
