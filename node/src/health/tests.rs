//! The tracker without sockets: breaker transitions, peak-EWMA, in-flight guards, merging.

use super::*;

fn stats(failures: u32, cooldown_ms: u64) -> Arc<EndpointStats> {
    Arc::new(EndpointStats::new("p", BreakerConfig { failures, cooldown: Duration::from_millis(cooldown_ms) }))
}

#[test]
fn breaker_opens_after_consecutive_failures_then_lets_one_probe_through() {
    let endpoint = stats(3, 50);
    let connect = GatewayError::upstream_connect("refused");
    for _ in 0..2 {
        assert_eq!(endpoint.record_failure(&connect), Some(FailureReason::Connect));
    }
    let now = monotonic_ms();
    assert_eq!(endpoint.local_breaker(now), BreakerState::Closed);
    endpoint.record_failure(&connect);
    let now = monotonic_ms();
    assert_eq!(endpoint.local_breaker(now), BreakerState::Open);
    assert!(!endpoint.admit(now) && !endpoint.is_routable(now));
    let later = now + 60;
    assert_eq!(endpoint.local_breaker(later), BreakerState::HalfOpen);
    assert!(endpoint.admit(later), "one probe");
    assert!(!endpoint.admit(later + 1), "only one probe per cooldown");
    endpoint.record_success();
    assert_eq!(endpoint.local_breaker(later + 2), BreakerState::Closed);
    assert!(endpoint.admit(later + 2));
}

#[test]
fn a_failed_probe_reopens_and_client_errors_do_not_count() {
    let endpoint = stats(1, 10_000);
    assert_eq!(endpoint.record_failure(&GatewayError::upstream_status(400, "bad")), None);
    assert_eq!(endpoint.record_failure(&GatewayError::upstream_status(429, "busy")), Some(FailureReason::RateLimited));
    assert_eq!(endpoint.local_breaker(monotonic_ms()), BreakerState::Closed, "429 is busy, not broken");
    endpoint.record_failure(&GatewayError::upstream_status(503, "down"));
    let opened = endpoint.opened_at_ms.load(Ordering::Relaxed);
    assert_ne!(opened, 0);
    assert_eq!(endpoint.failures(FailureReason::ServerError), 1);
    assert!(endpoint.local_report(monotonic_ms()).last_error.is_some_and(|e| e.contains("down")));
}

#[test]
fn peak_ewma_jumps_up_and_decays_down() {
    let value = AtomicF64::default();
    let stamp = AtomicU64::new(0);
    peak_ewma(&value, &stamp, 100.0, 1);
    assert_eq!(value.load(), 100.0);
    peak_ewma(&value, &stamp, 500.0, 2);
    assert_eq!(value.load(), 500.0, "a slower sample is taken at once");
    peak_ewma(&value, &stamp, 100.0, 10_002);
    let decayed = value.load();
    assert!(decayed < 500.0 && decayed > 100.0, "{decayed}");
}

#[test]
fn in_flight_guards_count_outstanding_requests() {
    let endpoint = stats(5, 1000);
    let first = endpoint.begin();
    let second = endpoint.begin();
    assert_eq!(endpoint.in_flight(), 2);
    drop(first);
    assert_eq!(endpoint.in_flight(), 1);
    drop(second);
    assert_eq!(endpoint.in_flight(), 0);
}

#[test]
fn remote_reports_merge_and_gpu_freshness_picks_the_newest() {
    let up = EndpointReport {
        state: BreakerState::Closed,
        latency_ms: 100.0,
        ttft_ms: 0.0,
        error_rate: 0.0,
        in_flight: 3,
        samples: 10,
        last_error: None,
    };
    let down = EndpointReport { state: BreakerState::Open, latency_ms: 300.0, error_rate: 1.0, ..up.clone() };
    let summary = RemoteSummary::merge([&up, &down].into_iter(), None);
    assert!(summary.open);
    assert_eq!(summary.in_flight, 6);
    assert_eq!(summary.latency_ms, 200.0);
    assert_eq!(summary.error_rate, 0.5);

    let endpoint = stats(5, 1000);
    endpoint.set_local_gpu(Some(GpuLoad { waiting: 1.0, running: 0.0, kv_use: 0.1, at_ms: 1_000 }));
    endpoint.set_remote(&RemoteSummary {
        gpu: Some(GpuLoad { waiting: 7.0, running: 0.0, kv_use: 0.1, at_ms: 2_000 }),
        ..RemoteSummary::default()
    });
    assert_eq!(endpoint.fresh_gpu(2_500, 3_000).map(|g| g.waiting), Some(7.0), "the newer sample wins");
    assert_eq!(endpoint.fresh_gpu(5_500, 3_000), None, "stale samples expire");
}
