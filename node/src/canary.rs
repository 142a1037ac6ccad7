//! Canary auto-rollback. Every second each node samples its per-target counters; for each route with a
//! `canary` whose weight is still above 0 it compares the canary with the stable targets (every other
//! target with weight > 0) over the SLO window: error rate (canary − stable > `max_error_rate_delta`) and
//! p95 latency (canary / stable > `max_p95_latency_ratio`), once both sides have `min_requests`.
//!
//! Latency means what the endpoint controls, not what the caller asked for: time to first token of
//! streams and time per output token of successful responses. Whole-request duration grows with the
//! output a caller requests, so a tenant sending long generations only to the canary could otherwise
//! force a rollback. Errors are only those the endpoint is to blame for (4xx rejections are `rejected`,
//! not `error`, in the metrics).
//!
//! An open circuit breaker on the canary's endpoint, here or on a live peer (gossip), is a breach by
//! itself while a stable target is still routable: once it opens the canary only sees a half-open probe
//! per cooldown, so its error count would take minutes to reach `min_requests`.
//!
//! A broken SLO sets the canary's weight to 0 on this node at once and cluster-wide through a Raft write
//! of the model (visible in the audit trail). Each node judges the traffic it served; any node may write,
//! and the write is skipped when the replicated weight is already 0.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::config::CanaryConfig;
use crate::gateway::Gateway;
use crate::metrics::TargetMetrics;
use crate::routing::Route;

const TICK: Duration = Duration::from_secs(1);

/// Cumulative counters of one target at one instant.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    counts: WindowStats,
}

impl Sample {
    fn of(metrics: &TargetMetrics, at: Instant) -> Sample {
        Sample {
            at,
            counts: WindowStats {
                ok: metrics.requests_ok.get(),
                errors: metrics.requests_error.get(),
                ttft: metrics.ttft.bucket_counts(),
                per_token: metrics.time_per_output_token.bucket_counts(),
            },
        }
    }

    /// Counters at zero, shaped like `like`.
    fn zero(at: Instant, like: &Sample) -> Sample {
        let counts = WindowStats {
            ok: 0,
            errors: 0,
            ttft: vec![0; like.counts.ttft.len()],
            per_token: vec![0; like.counts.per_token.len()],
        };
        Sample { at, counts }
    }
}

/// Histogram bucket bounds of the two latency signals.
#[derive(Debug, Clone, Copy)]
pub struct Bounds<'a> {
    pub ttft: &'a [f64],
    pub per_token: &'a [f64],
}

/// What happened over a window (the difference of two samples, or a sum of them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    pub ok: u64,
    pub errors: u64,
    /// Time-to-first-token histogram buckets.
    pub ttft: Vec<u64>,
    /// Time-per-output-token histogram buckets.
    pub per_token: Vec<u64>,
}

fn bucket_diff(new: &[u64], old: &[u64]) -> Vec<u64> {
    new.iter().zip(old).map(|(n, o)| n.saturating_sub(*o)).collect()
}

fn bucket_add(mine: &mut Vec<u64>, theirs: &[u64]) {
    if mine.len() < theirs.len() {
        mine.resize(theirs.len(), 0);
    }
    for (mine, theirs) in mine.iter_mut().zip(theirs) {
        *mine += theirs;
    }
}

impl WindowStats {
    fn between(old: &Sample, new: &Sample) -> WindowStats {
        let (old, new) = (&old.counts, &new.counts);
        WindowStats {
            ok: new.ok.saturating_sub(old.ok),
            errors: new.errors.saturating_sub(old.errors),
            ttft: bucket_diff(&new.ttft, &old.ttft),
            per_token: bucket_diff(&new.per_token, &old.per_token),
        }
    }

    fn add(&mut self, other: &WindowStats) {
        self.ok += other.ok;
        self.errors += other.errors;
        bucket_add(&mut self.ttft, &other.ttft);
        bucket_add(&mut self.per_token, &other.per_token);
    }

    pub fn requests(&self) -> u64 {
        self.ok + self.errors
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests() == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests() as f64
        }
    }
}

/// The 95th percentile in seconds of histogram `buckets`, interpolated inside its bucket (overflow counts
/// as twice the last bound); `None` with fewer than `min_samples` samples.
pub fn p95(buckets: &[u64], bounds: &[f64], min_samples: u64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 || total < min_samples {
        return None;
    }
    let rank = 0.95 * total as f64;
    let mut seen = 0.0;
    let mut lower = 0.0;
    for (index, count) in buckets.iter().enumerate() {
        let upper = bounds.get(index).copied().unwrap_or_else(|| bounds.last().map_or(1.0, |b| b * 2.0));
        let count = *count as f64;
        if count > 0.0 && seen + count >= rank {
            return Some(lower + (upper - lower) * ((rank - seen) / count).clamp(0.0, 1.0));
        }
        seen += count;
        lower = upper;
    }
    Some(lower)
}

/// Why a canary was rolled back (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    ErrorRate,
    Latency,
    BreakerOpen,
}

impl Verdict {
    /// The metric's `reason` label and the audit actor's note.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::ErrorRate => "error_rate",
            Verdict::Latency => "p95_latency",
            Verdict::BreakerOpen => "breaker_open",
        }
    }
}

/// The SLO check on the window's counts, pure. Each latency signal is compared once both sides have
/// `min_requests` samples of it.
pub fn judge(config: &CanaryConfig, canary: &WindowStats, stable: &WindowStats, bounds: Bounds<'_>) -> Verdict {
    if canary.requests() < config.min_requests || stable.requests() < config.min_requests {
        return Verdict::Healthy;
    }
    if canary.error_rate() - stable.error_rate() > config.max_error_rate_delta {
        return Verdict::ErrorRate;
    }
    let min = config.min_requests;
    for (ours, theirs, bounds) in
        [(&canary.ttft, &stable.ttft, bounds.ttft), (&canary.per_token, &stable.per_token, bounds.per_token)]
    {
        if let (Some(canary_p95), Some(stable_p95)) = (p95(ours, bounds, min), p95(theirs, bounds, min)) {
            if stable_p95 > 0.0 && canary_p95 / stable_p95 > config.max_p95_latency_ratio {
                return Verdict::Latency;
            }
        }
    }
    Verdict::Healthy
}

/// Starts the watcher; it holds the gateway weakly and ends with it.
pub fn spawn(gateway: &Arc<Gateway>) {
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut history: HashMap<usize, VecDeque<Sample>> = HashMap::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if !tick(&gateway, &mut history).await {
                return;
            }
        }
    });
}

/// One round; false once the node is gone.
async fn tick(gateway: &Weak<Gateway>, history: &mut HashMap<usize, VecDeque<Sample>>) -> bool {
    let Some(gateway) = gateway.upgrade() else {
        return false;
    };
    if gateway.is_shutting_down() {
        return false;
    }
    let snapshot = gateway.snapshot();
    let now = Instant::now();
    let mut seen = Vec::new();
    for route in snapshot.routes.values() {
        let Some((canary_index, config)) = &route.canary else {
            continue;
        };
        let window = Duration::from_secs(config.window_secs);
        let mut canary_stats = WindowStats::default();
        let mut stable_stats = WindowStats::default();
        for (index, target) in route.targets.iter().enumerate() {
            // Keyed by the metrics object, which survives config reloads.
            let key = Arc::as_ptr(&target.metrics) as usize;
            seen.push(key);
            let samples = history.entry(key).or_default();
            let sample = Sample::of(&target.metrics, now);
            if samples.is_empty() {
                // First sight (the node or the route just started): counters began at zero, so compare
                // against zero rather than wait a tick for a baseline.
                samples.push_back(Sample::zero(now, &sample));
            }
            samples.push_back(sample);
            while samples.len() > 2 && samples.get(1).is_some_and(|s| now.duration_since(s.at) >= window) {
                samples.pop_front();
            }
            let (Some(oldest), Some(newest)) = (samples.front(), samples.back()) else {
                continue;
            };
            let stats = WindowStats::between(oldest, newest);
            if index == *canary_index {
                canary_stats = stats;
            } else if target.effective_weight() > 0 {
                stable_stats.add(&stats);
            }
        }
        let canary = &route.targets[*canary_index];
        if canary.rolled_back.load(Ordering::Relaxed) && canary.weight > 0 {
            // Rolled back here, but the replicated config still routes to it: the write failed; retry.
            replicate(&gateway, route, *canary_index, "retry").await;
            continue;
        }
        if canary.effective_weight() == 0 {
            continue;
        }
        let bounds =
            Bounds { ttft: canary.metrics.ttft.bounds(), per_token: canary.metrics.time_per_output_token.bounds() };
        let mut verdict = judge(config, &canary_stats, &stable_stats, bounds);
        if verdict == Verdict::Healthy && breaker_open(route, *canary_index) {
            verdict = Verdict::BreakerOpen;
        }
        gateway.metrics.canary_judgements.inc();
        if verdict != Verdict::Healthy {
            roll_back(&gateway, route, *canary_index, verdict, &canary_stats, &stable_stats).await;
        }
    }
    history.retain(|key, _| seen.contains(key));
    true
}

/// The canary's endpoint has an open breaker (here or on a live peer) while some stable target is still
/// routable: its traffic already goes elsewhere, so the rollout is over. When every target is down the
/// canary is no worse than the rest and keeps its weight.
fn breaker_open(route: &Route, canary_index: usize) -> bool {
    let now = crate::clock::monotonic_ms();
    let canary = &route.targets[canary_index];
    !canary.endpoint.is_routable(now)
        && route.targets.iter().enumerate().any(|(index, target)| {
            index != canary_index && target.effective_weight() > 0 && target.endpoint.is_routable(now)
        })
}

async fn roll_back(
    gateway: &Gateway,
    route: &Route,
    index: usize,
    verdict: Verdict,
    canary: &WindowStats,
    stable: &WindowStats,
) {
    let target = &route.targets[index];
    if verdict == Verdict::Healthy {
        return;
    }
    let reason = verdict.label();
    target.rolled_back.store(true, Ordering::Relaxed);
    let (ttft, per_token) = (target.metrics.ttft.bounds(), target.metrics.time_per_output_token.bounds());
    tracing::warn!(
        route = %route.name,
        target = %target.provider.name,
        reason,
        canary_error_rate = canary.error_rate(),
        stable_error_rate = stable.error_rate(),
        canary_ttft_p95_s = p95(&canary.ttft, ttft, 1),
        stable_ttft_p95_s = p95(&stable.ttft, ttft, 1),
        canary_per_token_p95_s = p95(&canary.per_token, per_token, 1),
        stable_per_token_p95_s = p95(&stable.per_token, per_token, 1),
        canary_requests = canary.requests(),
        stable_requests = stable.requests(),
        "canary broke its SLO; rolling it back to weight 0"
    );
    gateway.metrics.record_canary_rollback(&route.name, &target.provider.name, reason);
    replicate(gateway, route, index, reason).await;
}

/// Writes weight 0 for the canary through Raft (no-op standalone, or when already 0).
async fn replicate(gateway: &Gateway, route: &Route, index: usize, reason: &str) {
    let target = &route.targets[index];
    let Some(consensus) = &gateway.consensus else {
        return;
    };
    let current = consensus.current();
    let Some(mut model) = current.config.models.get(&*route.name).cloned() else {
        return;
    };
    match model.targets.get_mut(index) {
        Some(replicated) if replicated.weight > 0 && replicated.provider == target.provider.name => {
            replicated.weight = 0
        }
        _ => return,
    }
    let actor = format!("canary-rollback node-{} ({reason})", gateway.node_id);
    let request = crate::command::request(tollgate_consensus::Command::PutModel { model }, &actor);
    match consensus.write(request).await {
        Ok(response) => tracing::info!(route = %route.name, ?response, "canary rollback replicated"),
        // The local rollback stands; the next tick tries the write again.
        Err(err) => tracing::warn!(route = %route.name, %err, "canary rollback write failed; will retry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CanaryTarget;

    const BOUNDS: [f64; 4] = [0.1, 0.2, 0.5, 1.0];

    fn config() -> CanaryConfig {
        CanaryConfig {
            target: CanaryTarget::Index(1),
            max_error_rate_delta: 0.05,
            max_p95_latency_ratio: 2.0,
            window_secs: 60,
            min_requests: 10,
        }
    }

    fn stats(ok: u64, errors: u64, ttft: [u64; 5]) -> WindowStats {
        WindowStats { ok, errors, ttft: ttft.to_vec(), per_token: vec![0; 5] }
    }

    const BOTH: Bounds<'static> = Bounds { ttft: &BOUNDS, per_token: &BOUNDS };

    #[test]
    fn judges_error_rate_and_latency_against_the_stable_target() {
        let stable = stats(100, 1, [101, 0, 0, 0, 0]);
        assert_eq!(judge(&config(), &stats(20, 0, [20, 0, 0, 0, 0]), &stable, BOTH), Verdict::Healthy);
        assert_eq!(judge(&config(), &stats(15, 5, [20, 0, 0, 0, 0]), &stable, BOTH), Verdict::ErrorRate);
        assert_eq!(judge(&config(), &stats(20, 0, [0, 0, 20, 0, 0]), &stable, BOTH), Verdict::Latency);
        assert_eq!(
            judge(&config(), &stats(5, 4, [0, 0, 9, 0, 0]), &stable, BOTH),
            Verdict::Healthy,
            "not enough canary requests yet"
        );
    }

    #[test]
    fn latency_is_judged_per_token_not_per_request() {
        // Non-streamed traffic: no TTFT samples. The canary's requests took longer in total (long outputs)
        // but each token came as fast as on the stable side: healthy.
        let stable = WindowStats { ok: 50, errors: 0, ttft: vec![0; 5], per_token: vec![50, 0, 0, 0, 0] };
        let canary = WindowStats { ok: 20, errors: 0, ttft: vec![0; 5], per_token: vec![20, 0, 0, 0, 0] };
        assert_eq!(judge(&config(), &canary, &stable, BOTH), Verdict::Healthy);
        // Tokens three times slower: a breach.
        let slow = WindowStats { per_token: vec![0, 0, 20, 0, 0], ..canary.clone() };
        assert_eq!(judge(&config(), &slow, &stable, BOTH), Verdict::Latency);
        // Too few pace samples on one side: no verdict on latency.
        let few = WindowStats { per_token: vec![0, 0, 5, 0, 0], ..canary };
        assert_eq!(judge(&config(), &few, &stable, BOTH), Verdict::Healthy);
    }

    #[test]
    fn p95_interpolates_inside_its_bucket() {
        let p = p95(&[50, 50, 0, 0, 0], &BOUNDS, 1).unwrap_or_default();
        assert!((p - 0.19).abs() < 1e-9, "{p}");
        assert_eq!(p95(&[0; 5], &BOUNDS, 1), None);
        assert_eq!(p95(&[0, 0, 0, 0, 1], &BOUNDS, 1).map(|p| p > 1.0), Some(true), "overflow");
        assert_eq!(p95(&[3, 0, 0, 0, 0], &BOUNDS, 4), None, "fewer samples than asked for");
    }
}
