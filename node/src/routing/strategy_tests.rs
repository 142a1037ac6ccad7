//! The strategies without sockets: routes built from TOML, endpoint state set directly.

use std::sync::Arc;

use super::strategy::RequestHints;
use super::*;
use crate::clock::{monotonic_ms, wall_ms};
use crate::error::GatewayError;
use crate::health::{BreakerConfig, GpuLoad};

/// Hints for a prompt of `prompt_bytes` bytes in one message (≈ 4 bytes a token) and `output` tokens.
pub fn hints(prompt_bytes: u64, output: u64) -> RequestHints<'static> {
    let exact: &'static (dyn Fn() -> u64 + Sync) = Box::leak(Box::new(move || prompt_bytes / 4));
    RequestHints::new(prompt_bytes, 1, prompt_bytes + 7, output, output, exact)
}

fn route(models: &str) -> (Arc<Route>, Arc<EndpointRegistry>) {
    let text = format!(
        r#"
[[providers]]
name = "a"
kind = "mock"
[[providers]]
name = "b"
kind = "mock"
[[providers]]
name = "c"
kind = "mock"
{models}
"#
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e:#}"));
    let registry = Arc::new(EndpointRegistry::new(
        BreakerConfig { failures: 1, cooldown: std::time::Duration::from_secs(60) },
        std::time::Duration::from_secs(1),
    ));
    let snapshot = ControlSnapshot::build(
        &config,
        &crate::providers::UpstreamTls::public_roots().unwrap_or_else(|e| panic!("{e:#}")),
        &Metrics::default(),
        &registry,
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    (snapshot.routes["m"].clone(), registry)
}

fn gpu(registry: &EndpointRegistry, name: &str, waiting: f64, kv_use: f64) {
    registry.endpoint(name).set_local_gpu(Some(GpuLoad { waiting, running: 0.0, kv_use, at_ms: wall_ms() }));
}

#[test]
fn least_cost_picks_the_cheapest_target_that_fits() {
    let (route, _) = route(
        r#"
[[models]]
name = "m"
strategy = "least_cost"
context_window = 100000
price_per_mtok = { input = 1.0, output = 4.0 }
targets = [
  { provider = "a" },
  { provider = "b", price_per_mtok = { input = 0.1, output = 0.2 }, context_window = 1000 },
  { provider = "c", price_per_mtok = { input = 0.5, output = 1.0 } },
]
"#,
    );
    assert_eq!(route.attempt_order(&hints(400, 100)), vec![1, 2, 0], "small prompt: b is cheapest");
    assert_eq!(route.attempt_order(&hints(8000, 100)), vec![2, 0], "b's 1,000-token window is too small");
}

#[test]
fn least_load_prefers_the_shortest_queue_then_free_kv_cache() {
    let (route, registry) = route(
        r#"
[[models]]
name = "m"
strategy = "least_load"
targets = [ { provider = "a" }, { provider = "b" }, { provider = "c" } ]
"#,
    );
    gpu(&registry, "a", 10.0, 0.2);
    gpu(&registry, "b", 0.0, 0.9);
    gpu(&registry, "c", 4.0, 0.1);
    // Scores: a 0 + 0.8, b 1 + 0.1, c 0.6 + 0.9.
    assert_eq!(route.attempt_order(&hints(10, 10)), vec![2, 1, 0]);
    gpu(&registry, "b", 0.0, 0.0);
    assert_eq!(route.attempt_order(&hints(10, 10))[0], 1);
    // Requests this node has outstanding count as queue even before the next scrape shows them.
    let _busy: Vec<_> = (0..20).map(|_| registry.endpoint("b").begin()).collect();
    assert_ne!(route.attempt_order(&hints(10, 10))[0], 1);
}

#[test]
fn latency_prefers_low_peak_ewma_times_outstanding() {
    let (route, registry) = route(
        r#"
[[models]]
name = "m"
strategy = "latency"
targets = [ { provider = "a" }, { provider = "b" } ]
"#,
    );
    registry.endpoint("a").observe_latency(std::time::Duration::from_millis(300), None);
    registry.endpoint("b").observe_latency(std::time::Duration::from_millis(100), None);
    assert_eq!(route.attempt_order(&hints(10, 10)), vec![1, 0]);
    let _busy: Vec<_> = (0..5).map(|_| registry.endpoint("b").begin()).collect();
    assert_eq!(route.attempt_order(&hints(10, 10)), vec![0, 1], "100 ms × 6 outstanding > 300 ms × 1");
}

#[test]
fn unhealthy_endpoints_go_last_whatever_the_strategy_or_tier() {
    for strategy in ["priority", "weighted", "least_cost", "least_load", "latency"] {
        let (route, registry) = route(&format!(
            r#"
[[models]]
name = "m"
strategy = "{strategy}"
targets = [ {{ provider = "a", priority = 0 }}, {{ provider = "b", priority = 1 }} ]
"#
        ));
        registry.endpoint("a").record_failure(&GatewayError::upstream_connect("refused"));
        assert!(!registry.endpoint("a").is_routable(monotonic_ms()));
        assert_eq!(route.attempt_order(&hints(10, 10)), vec![1, 0], "{strategy}");
    }
}

#[test]
fn strategies_apply_within_priority_tiers() {
    let (route, registry) = route(
        r#"
[[models]]
name = "m"
strategy = "least_load"
targets = [ { provider = "a", priority = 1 }, { provider = "b", priority = 0 }, { provider = "c", priority = 0 } ]
"#,
    );
    gpu(&registry, "a", 0.0, 0.0);
    gpu(&registry, "b", 9.0, 0.0);
    gpu(&registry, "c", 3.0, 0.0);
    assert_eq!(route.attempt_order(&hints(10, 10)), vec![2, 1, 0], "tier 0 first, least loaded inside it");
}

#[test]
fn zero_weight_targets_come_last_in_their_tier() {
    let (route, _) = route(
        r#"
[[models]]
name = "m"
strategy = "weighted"
targets = [ { provider = "a", weight = 0 }, { provider = "b", weight = 1 } ]
"#,
    );
    for _ in 0..20 {
        assert_eq!(route.attempt_order(&hints(10, 10)), vec![1, 0]);
    }
    route.targets[1].rolled_back.store(true, Ordering::Relaxed);
    assert_eq!(route.targets[1].effective_weight(), 0);
}

#[test]
fn least_load_corrects_a_lagging_scrape_with_live_outstanding_counts() {
    use crate::health::LoadSignal;
    let sample = GpuLoad { waiting: 0.0, running: 2.0, kv_use: 0.5, at_ms: 0 };
    // Capacity ≈ running / kv_use = 4; 2 running, nothing waiting.
    let at_scrape = LoadSignal { outstanding: 2.0, gpu: Some(sample), outstanding_at_gpu: 2.0, latency_ms: 0.0 };
    assert_eq!(super::strategy::queue_and_kv(&at_scrape), (0.0, 0.5));
    // Four more sent since the scrape: the engine is full and 2 wait.
    let later = LoadSignal { outstanding: 6.0, ..at_scrape };
    assert_eq!(super::strategy::queue_and_kv(&later), (2.0, 1.0));
    // No GPU metrics: the outstanding count is the queue.
    let plain = LoadSignal { outstanding: 3.0, gpu: None, outstanding_at_gpu: 0.0, latency_ms: 0.0 };
    assert_eq!(super::strategy::queue_and_kv(&plain), (3.0, 0.0));
}
