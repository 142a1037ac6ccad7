//! The order in which a route's targets are tried. Always: healthy endpoints (no open breaker here or on
//! a live peer) before unhealthy ones, and targets whose context window the request overflows left out
//! while another fits. Then priority tiers (except `weighted`, one tier), enabled targets (weight > 0)
//! first, and inside a tier the strategy's score, ties broken by a weighted random draw.

use std::cell::Cell;

use rand::Rng;

use super::Route;
use crate::clock::{monotonic_ms, wall_ms};
use crate::config::Strategy;
use crate::health::LoadSignal;

/// What the strategies know about the request, computed without parsing more than phase 4 did.
pub struct RequestHints<'a> {
    /// Cheap prompt-token estimate (≈ 4 bytes a token plus per-message overhead).
    pub input_estimate: u64,
    /// Free upper bound on the prompt tokens (a BPE token covers at least one byte).
    pub input_bound: u64,
    /// Predicted output tokens for cost (`max_tokens`, else the model's default).
    pub output: u64,
    /// Output tokens the request reserves in the context window (`max_tokens`, else 0).
    pub reserved_output: u64,
    exact_input: &'a (dyn Fn() -> u64 + Sync),
    exact_memo: Cell<Option<u64>>,
}

impl<'a> RequestHints<'a> {
    pub fn new(
        prompt_bytes: u64,
        message_count: u64,
        input_bound: u64,
        output: u64,
        reserved_output: u64,
        exact_input: &'a (dyn Fn() -> u64 + Sync),
    ) -> Self {
        RequestHints {
            input_estimate: prompt_bytes / 4 + 4 * message_count + 3,
            input_bound,
            output,
            reserved_output,
            exact_input,
            exact_memo: Cell::new(None),
        }
    }

    /// Whether the request fits `window`: the free bound first, the exact count only when that is too loose.
    pub fn fits(&self, window: u64) -> bool {
        if self.input_bound + self.reserved_output <= window {
            return true;
        }
        let exact = match self.exact_memo.get() {
            Some(exact) => exact,
            None => {
                let exact = (self.exact_input)();
                self.exact_memo.set(Some(exact));
                exact
            }
        };
        exact + self.reserved_output <= window
    }
}

struct Keyed {
    index: usize,
    healthy: bool,
    tier: u32,
    enabled: bool,
    fits: bool,
    score: f64,
    random: f64,
}

/// Least-load inputs, now: (waiting queue, KV use). A scrape is up to an interval old, so it is corrected
/// by the requests the gateways sent (or saw finish) since: `load = waiting + running + Δoutstanding`.
/// When the sample shows both running requests and KV use, `running / kv_use` estimates how many requests
/// the engine holds at once; what exceeds it waits. Without GPU metrics the queue is the outstanding count.
pub fn queue_and_kv(signal: &LoadSignal) -> (f64, f64) {
    let Some(gpu) = signal.gpu else {
        return (signal.outstanding, 0.0);
    };
    let delta = signal.outstanding - signal.outstanding_at_gpu;
    let load = (gpu.waiting + gpu.running + delta).max(0.0);
    if gpu.running > 0.0 && gpu.kv_use > 0.01 {
        let capacity = gpu.running / gpu.kv_use;
        ((load - capacity).max(0.0), (load / capacity).min(1.0))
    } else {
        ((gpu.waiting + delta).max(0.0), gpu.kv_use)
    }
}

pub fn attempt_order(route: &Route, hints: &RequestHints<'_>) -> Vec<usize> {
    if route.targets.len() == 1 {
        // Nothing to order (and no random draw, clock read or signal snapshot to pay for).
        return vec![0];
    }
    let now_mono = monotonic_ms();
    let mut rng = rand::rng();
    let needs_signals = matches!(route.strategy, Strategy::LeastLoad | Strategy::Latency);
    let signals: Vec<Option<LoadSignal>> = if needs_signals {
        let now_wall = wall_ms();
        route.targets.iter().map(|t| Some(t.endpoint.load_signal(now_wall, route.gpu_ttl_ms))).collect()
    } else {
        Vec::new()
    };

    let mut any_fits = false;
    let mut keyed: Vec<Keyed> = route
        .targets
        .iter()
        .enumerate()
        .map(|(index, target)| {
            let weight = target.effective_weight();
            // Efraimidis–Spirakis: sorting by u^(1/w) descending is a weighted random permutation.
            let random = if weight == 0 { -1.0 } else { rng.random::<f64>().powf(1.0 / f64::from(weight)) };
            let score = match route.strategy {
                Strategy::Priority | Strategy::Weighted | Strategy::LeastLoad | Strategy::Latency => 0.0,
                Strategy::LeastCost => {
                    -(hints.input_estimate as f64 * target.price.input + hints.output as f64 * target.price.output)
                }
            };
            let fits = target.context_window.is_none_or(|window| hints.fits(window));
            any_fits |= fits;
            Keyed {
                index,
                healthy: target.endpoint.is_routable(now_mono),
                tier: if route.strategy == Strategy::Weighted { 0 } else { target.priority },
                enabled: weight > 0,
                fits,
                score,
                random,
            }
        })
        .collect();
    if any_fits {
        keyed.retain(|k| k.fits);
    }

    match route.strategy {
        Strategy::LeastLoad => score_least_load(&mut keyed, &signals),
        Strategy::Latency => score_latency(&mut keyed, &signals),
        _ => {}
    }
    keyed.sort_by(|a, b| {
        b.healthy
            .cmp(&a.healthy)
            .then(a.tier.cmp(&b.tier))
            .then(b.enabled.cmp(&a.enabled))
            .then(b.score.total_cmp(&a.score))
            .then(b.random.total_cmp(&a.random))
    });
    keyed.into_iter().map(|k| k.index).collect()
}

/// Gateway API Inference Extension scoring: inside each tier the shortest queue scores 1 and the longest
/// 0 (linear between), plus `1 − kv_use`.
fn score_least_load(keyed: &mut [Keyed], signals: &[Option<LoadSignal>]) {
    let inputs: Vec<(f64, f64)> =
        signals.iter().map(|signal| signal.as_ref().map_or((0.0, 0.0), queue_and_kv)).collect();
    let queue = |k: &Keyed| inputs[k.index].0;
    let tiers: Vec<u32> = keyed.iter().map(|k| k.tier).collect();
    let mut bounds: Vec<(u32, f64, f64)> = Vec::new();
    for (k, tier) in keyed.iter().zip(&tiers) {
        let q = queue(k);
        match bounds.iter_mut().find(|(t, _, _)| t == tier) {
            Some((_, min, max)) => {
                *min = min.min(q);
                *max = max.max(q);
            }
            None => bounds.push((*tier, q, q)),
        }
    }
    for k in keyed.iter_mut() {
        let q = queue(k);
        let (min, max) = bounds.iter().find(|(t, _, _)| *t == k.tier).map_or((q, q), |(_, min, max)| (*min, *max));
        let queue_score = if max > min { (max - q) / (max - min) } else { 1.0 };
        k.score = queue_score + (1.0 - inputs[k.index].1);
    }
}

/// Peak-EWMA (Finagle, linkerd): latency × (outstanding + 1); an endpoint never measured counts at the
/// route's mean so it is explored without being flooded.
fn score_latency(keyed: &mut [Keyed], signals: &[Option<LoadSignal>]) {
    let measured: Vec<f64> = signals.iter().flatten().map(|s| s.latency_ms).filter(|l| *l > 0.0).collect();
    let default = if measured.is_empty() { 1.0 } else { measured.iter().sum::<f64>() / measured.len() as f64 };
    for k in keyed.iter_mut() {
        let Some(signal) = signals[k.index].as_ref() else {
            continue;
        };
        let latency = if signal.latency_ms > 0.0 { signal.latency_ms } else { default };
        k.score = -(latency * (signal.outstanding + 1.0));
    }
}
