//! Request metering and the Prometheus text exposition. Everything on the request path is a relaxed atomic
//! add on counters created when the route table is built: no locks, no label formatting per request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::Usage;
use crate::config::Price;
use crate::health::FailureReason;

const LATENCY_BUCKETS_SECONDS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
const PER_TOKEN_BUCKETS_SECONDS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5];
const OVERHEAD_BUCKETS_SECONDS: [f64; 10] =
    [0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05];

#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(index) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(value.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Bucket upper bounds in seconds (the last, implicit bucket is +Inf).
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Per-bucket (not cumulative) counts, plus the +Inf overflow as the last element.
    pub fn bucket_counts(&self) -> Vec<u64> {
        let mut counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let in_buckets: u64 = counts.iter().sum();
        counts.push(self.count().saturating_sub(in_buckets));
        counts
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let separator = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// How an upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The upstream failed (status, timeout, broken stream).
    UpstreamError,
    /// The client left before the response finished.
    Cancelled,
    /// The upstream refused the request as the caller's mistake (a 4xx other than 401/403/408/429): not
    /// the endpoint's fault, so it never counts against its error rate, canary verdict or breaker.
    Rejected,
}

/// Counters for one (route, provider, upstream model) target.
#[derive(Debug)]
pub struct TargetMetrics {
    labels: String,
    pub requests_ok: AtomicU64,
    pub requests_error: AtomicU64,
    pub requests_cancelled: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Fallbacks by why the attempt failed, indexed like [`FailureReason::ALL`].
    fallback_reasons: [AtomicU64; 6],
    pub input_tokens: AtomicU64,
    pub output_tokens: AtomicU64,
    pub estimated_requests: AtomicU64,
    /// Cost in nano-USD, so integer atomics suffice.
    pub cost_nano_usd: AtomicU64,
    pub duration: Histogram,
    pub ttft: Histogram,
    /// Decode pace of successful responses (`gen_ai.server.time_per_output_token`): after the first token
    /// for streams, over the whole response otherwise. Unlike `duration`, it does not grow with the length
    /// of the output, so the canary's latency SLO can judge it.
    pub time_per_output_token: Histogram,
}

impl TargetMetrics {
    pub fn record_fallback_reason(&self, reason: FailureReason) {
        if let Some(index) = FailureReason::ALL.iter().position(|r| *r == reason) {
            self.fallback_reasons[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record(
        &self,
        outcome: Outcome,
        usage: Option<&Usage>,
        price: &Price,
        duration: Duration,
        ttft: Option<Duration>,
    ) {
        match outcome {
            Outcome::Ok => &self.requests_ok,
            Outcome::UpstreamError => &self.requests_error,
            Outcome::Cancelled => &self.requests_cancelled,
            Outcome::Rejected => &self.requests_rejected,
        }
        .fetch_add(1, Ordering::Relaxed);
        if let Some(usage) = usage {
            self.input_tokens.fetch_add(usage.input_tokens, Ordering::Relaxed);
            self.output_tokens.fetch_add(usage.output_tokens, Ordering::Relaxed);
            if usage.estimated {
                self.estimated_requests.fetch_add(1, Ordering::Relaxed);
            }
            self.cost_nano_usd.fetch_add((cost_usd(usage, price) * 1e9) as u64, Ordering::Relaxed);
        }
        self.duration.observe(duration);
        if let Some(ttft) = ttft {
            self.ttft.observe(ttft);
        }
        if let (Outcome::Ok, Some(usage)) = (outcome, usage) {
            if let Some(pace) = time_per_output_token(duration, ttft, usage.output_tokens) {
                self.time_per_output_token.observe(pace);
            }
        }
    }
}

/// Streams: the time after the first token over the tokens after it; otherwise the whole duration over
/// all tokens. `None` when there are too few tokens to say.
fn time_per_output_token(duration: Duration, ttft: Option<Duration>, output_tokens: u64) -> Option<Duration> {
    match ttft {
        Some(ttft) if output_tokens >= 2 => {
            Some(duration.saturating_sub(ttft) / u32::try_from(output_tokens - 1).unwrap_or(u32::MAX))
        }
        None if output_tokens >= 1 => Some(duration / u32::try_from(output_tokens).unwrap_or(u32::MAX)),
        _ => None,
    }
}

pub fn cost_usd(usage: &Usage, price: &Price) -> f64 {
    (usage.input_tokens as f64 * price.input + usage.output_tokens as f64 * price.output) / 1e6
}

/// The node's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    /// Responses by HTTP status code (index = code).
    responses: Vec<AtomicU64>,
    pub in_flight: AtomicI64,
    /// Client connections refused because a listener was at `limits.max_connections`.
    pub connections_refused: AtomicU64,
    /// Client connections closed by the handshake or idle deadline.
    pub connections_timed_out: AtomicU64,
    /// Failed `accept` calls (descriptor exhaustion and the like); the loop backs off and goes on.
    pub accept_errors: AtomicU64,
    pub overhead: Histogram,
    targets: Mutex<HashMap<(String, String, String), Arc<TargetMetrics>>>,
    /// Canary verdicts this node reached (one per canaried route and second), healthy ones included.
    pub canary_judgements: AtomicU64,
    /// Budget refusals by (org, reason).
    budget_refusals: Mutex<HashMap<(String, String), u64>>,
    /// Guardrail matches by (guardrail, action).
    guardrail_events: Mutex<HashMap<(String, &'static str), u64>>,
    /// Canary rollbacks by (route, target, reason); rare, so a lock is fine.
    canary_rollbacks: Mutex<Vec<(String, String, &'static str, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            responses: (0..600).map(|_| AtomicU64::new(0)).collect(),
            in_flight: AtomicI64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_timed_out: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            overhead: Histogram::new(&OVERHEAD_BUCKETS_SECONDS),
            targets: Mutex::new(HashMap::new()),
            canary_judgements: AtomicU64::new(0),
            guardrail_events: Mutex::new(HashMap::new()),
            budget_refusals: Mutex::new(HashMap::new()),
            canary_rollbacks: Mutex::new(Vec::new()),
        }
    }
}

impl Metrics {
    /// The counters of one target, created on first use and kept across config reloads.
    pub fn target(&self, route: &str, provider: &str, model: &str) -> Arc<TargetMetrics> {
        let key = (route.to_owned(), provider.to_owned(), model.to_owned());
        let mut targets = self.targets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        targets
            .entry(key)
            .or_insert_with(|| {
                Arc::new(TargetMetrics {
                    labels: format!(
                        "route=\"{}\",gen_ai_provider_name=\"{}\",gen_ai_request_model=\"{}\"",
                        escape_label(route),
                        escape_label(provider),
                        escape_label(model)
                    ),
                    requests_ok: AtomicU64::new(0),
                    requests_error: AtomicU64::new(0),
                    requests_cancelled: AtomicU64::new(0),
                    requests_rejected: AtomicU64::new(0),
                    fallbacks: AtomicU64::new(0),
                    fallback_reasons: Default::default(),
                    input_tokens: AtomicU64::new(0),
                    output_tokens: AtomicU64::new(0),
                    estimated_requests: AtomicU64::new(0),
                    cost_nano_usd: AtomicU64::new(0),
                    duration: Histogram::new(&LATENCY_BUCKETS_SECONDS),
                    ttft: Histogram::new(&LATENCY_BUCKETS_SECONDS),
                    time_per_output_token: Histogram::new(&PER_TOKEN_BUCKETS_SECONDS),
                })
            })
            .clone()
    }

    /// A request of `org` refused by its budgets (`reason`: `budget_exceeded`, `rate_limited`,
    /// `budget_unavailable`).
    pub fn record_budget_refusal(&self, org: &str, reason: &str) {
        let mut refusals = self.budget_refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *refusals.entry((org.to_owned(), reason.to_owned())).or_insert(0) += 1;
    }

    pub fn render_budget_refusals(&self, out: &mut String) {
        let refusals = self.budget_refusals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = writeln!(out, "# HELP tollgate_budget_refusals_total Requests refused by a budget, by org and reason.\n# TYPE tollgate_budget_refusals_total counter");
        let mut refusals: Vec<_> = refusals.iter().collect();
        refusals.sort();
        for ((org, reason), count) in refusals {
            let _ = writeln!(
                out,
                "tollgate_budget_refusals_total{{org=\"{}\",reason=\"{}\"}} {count}",
                escape_label(org),
                escape_label(reason)
            );
        }
    }

    /// A guardrail matched a request and took `action`.
    pub fn record_guardrail(&self, guardrail: &str, action: crate::guard::GuardrailAction) {
        let action = match action {
            crate::guard::GuardrailAction::Block => "block",
            crate::guard::GuardrailAction::Flag => "flag",
            crate::guard::GuardrailAction::Redact => "redact",
        };
        let mut events = self.guardrail_events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *events.entry((guardrail.to_owned(), action)).or_insert(0) += 1;
    }

    pub fn record_canary_rollback(&self, route: &str, target: &str, reason: &'static str) {
        let mut rollbacks = self.canary_rollbacks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match rollbacks.iter_mut().find(|(r, t, why, _)| r == route && t == target && *why == reason) {
            Some(entry) => entry.3 += 1,
            None => rollbacks.push((route.to_owned(), target.to_owned(), reason, 1)),
        }
    }

    pub fn record_response(&self, status: u16) {
        if let Some(counter) = self.responses.get(status as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Responses sent so far, and how many of them were errors (5xx, and 429 refusals).
    pub fn response_totals(&self) -> (u64, u64) {
        let count = |range: std::ops::Range<usize>| -> u64 {
            self.responses.get(range).map_or(0, |counters| counters.iter().map(|c| c.load(Ordering::Relaxed)).sum())
        };
        (count(0..600), count(500..600) + count(429..430))
    }

    /// Time to first token over every target: (sum in seconds, count).
    pub fn ttft_totals(&self) -> (f64, u64) {
        let targets = self.targets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        targets.values().fold((0.0, 0), |(sum, count), t| (sum + t.ttft.sum_seconds(), count + t.ttft.count()))
    }

    pub fn responses_with_status(&self, status: u16) -> u64 {
        self.responses.get(status as usize).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        self.render_node(&mut out);
        self.render_targets(&mut out);
        out
    }

    /// Node-wide series: responses by status, in-flight, connections, overhead.
    fn render_node(&self, out: &mut String) {
        out.push_str(
            "# HELP tollgate_http_responses_total Responses sent to clients on the API listener, by status.\n",
        );
        out.push_str("# TYPE tollgate_http_responses_total counter\n");
        for (code, counter) in self.responses.iter().enumerate() {
            let value = counter.load(Ordering::Relaxed);
            if value > 0 {
                let _ = writeln!(out, "tollgate_http_responses_total{{code=\"{code}\"}} {value}");
            }
        }
        out.push_str("# HELP tollgate_requests_in_flight API requests being served now.\n");
        out.push_str("# TYPE tollgate_requests_in_flight gauge\n");
        let _ = writeln!(out, "tollgate_requests_in_flight {}", self.in_flight.load(Ordering::Relaxed));
        out.push_str(
            "# HELP tollgate_connections_closed_total Client connections refused at the cap or closed by a deadline.\n",
        );
        out.push_str("# TYPE tollgate_connections_closed_total counter\n");
        let _ = writeln!(
            out,
            "tollgate_connections_closed_total{{reason=\"over_capacity\"}} {}",
            self.connections_refused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "tollgate_connections_closed_total{{reason=\"deadline\"}} {}",
            self.connections_timed_out.load(Ordering::Relaxed)
        );
        out.push_str("# HELP tollgate_accept_errors_total Failed accepts on the API and admin listeners (e.g. out of file descriptors).\n");
        out.push_str("# TYPE tollgate_accept_errors_total counter\n");
        let _ = writeln!(out, "tollgate_accept_errors_total {}", self.accept_errors.load(Ordering::Relaxed));
        out.push_str("# HELP tollgate_access_log_dropped_total Access log lines dropped because the writer fell behind.\n# TYPE tollgate_access_log_dropped_total counter\n");
        let _ = writeln!(out, "tollgate_access_log_dropped_total {}", crate::access_log::dropped());
        crate::otlp_queue::render(out);
        out.push_str("# HELP tollgate_gateway_overhead_seconds Time the gateway itself spent before the response headers, upstream wait excluded.\n");
        out.push_str("# TYPE tollgate_gateway_overhead_seconds histogram\n");
        self.overhead.render(out, "tollgate_gateway_overhead_seconds", "");
        if crate::idle_spin::active() {
            let (woken, expired) = crate::idle_spin::counts();
            let _ = writeln!(
                out,
                "# HELP tollgate_idle_spins_total Worker parks that spun first (node.idle_spin_us): `woken` found work within the budget, `expired` parked anyway.\n# TYPE tollgate_idle_spins_total counter\ntollgate_idle_spins_total{{outcome=\"woken\"}} {woken}\ntollgate_idle_spins_total{{outcome=\"expired\"}} {expired}"
            );
        }
    }

    /// Per-target series (route, provider, model): outcomes, tokens, cost, fallbacks, latency histograms,
    /// and canary rollbacks.
    fn render_targets(&self, out: &mut String) {
        let targets: Vec<Arc<TargetMetrics>> = {
            let targets = self.targets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut list: Vec<_> = targets.values().cloned().collect();
            list.sort_by(|a, b| a.labels.cmp(&b.labels));
            list
        };
        let counter = |out: &mut String, name: &str, help: &str, get: &dyn Fn(&TargetMetrics) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for target in &targets {
                let _ = writeln!(out, "{name}{{{}}} {}", target.labels, get(target));
            }
        };
        let _ = writeln!(out, "# HELP tollgate_upstream_requests_total Upstream attempts by outcome.\n# TYPE tollgate_upstream_requests_total counter");
        for target in &targets {
            for (outcome, value) in [
                ("ok", &target.requests_ok),
                ("error", &target.requests_error),
                ("cancelled", &target.requests_cancelled),
                ("rejected", &target.requests_rejected),
            ] {
                let _ = writeln!(
                    out,
                    "tollgate_upstream_requests_total{{{},outcome=\"{outcome}\"}} {}",
                    target.labels,
                    value.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP gen_ai_client_token_usage_total Tokens billed, by type (gen_ai.client.token.usage).\n# TYPE gen_ai_client_token_usage_total counter");
        for target in &targets {
            for (kind, value) in [("input", &target.input_tokens), ("output", &target.output_tokens)] {
                let _ = writeln!(
                    out,
                    "gen_ai_client_token_usage_total{{{},gen_ai_token_type=\"{kind}\"}} {}",
                    target.labels,
                    value.load(Ordering::Relaxed)
                );
            }
        }
        counter(
            out,
            "tollgate_usage_estimated_total",
            "Requests whose usage was counted locally because the provider reported none.",
            &|t| t.estimated_requests.load(Ordering::Relaxed).to_string(),
        );
        counter(out, "tollgate_fallbacks_total", "Attempts on this target that failed over to the next one.", &|t| {
            t.fallbacks.load(Ordering::Relaxed).to_string()
        });
        let _ = writeln!(out, "# HELP tollgate_fallbacks_by_reason_total Fallbacks away from this target, by why its attempt failed.\n# TYPE tollgate_fallbacks_by_reason_total counter");
        for target in &targets {
            for (reason, value) in FailureReason::ALL.iter().zip(&target.fallback_reasons) {
                let value = value.load(Ordering::Relaxed);
                if value > 0 {
                    let _ = writeln!(
                        out,
                        "tollgate_fallbacks_by_reason_total{{{},reason=\"{}\"}} {value}",
                        target.labels,
                        reason.label()
                    );
                }
            }
        }
        counter(out, "tollgate_cost_usd_total", "Cost at the model's configured prices.", &|t| {
            format!("{}", t.cost_nano_usd.load(Ordering::Relaxed) as f64 / 1e9)
        });
        self.render_canary_rollbacks(out);
        self.render_guardrail_events(out);
        render_target_histograms(&targets, out);
    }

    fn render_guardrail_events(&self, out: &mut String) {
        let events = self.guardrail_events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = writeln!(out, "# HELP tollgate_guardrail_events_total Requests a guardrail matched, by the action it took.\n# TYPE tollgate_guardrail_events_total counter");
        let mut events: Vec<_> = events.iter().collect();
        events.sort();
        for ((guardrail, action), count) in events {
            let _ = writeln!(
                out,
                "tollgate_guardrail_events_total{{guardrail=\"{}\",action=\"{action}\"}} {count}",
                escape_label(guardrail)
            );
        }
    }

    fn render_canary_rollbacks(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP tollgate_canary_judgements_total Canary verdicts this node reached (healthy included).\n# TYPE tollgate_canary_judgements_total counter\ntollgate_canary_judgements_total {}",
            self.canary_judgements.load(Ordering::Relaxed)
        );
        let rollbacks = self.canary_rollbacks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = writeln!(out, "# HELP tollgate_canary_rollbacks_total Canary targets set to weight 0 by this node, by the SLO they broke.\n# TYPE tollgate_canary_rollbacks_total counter");
        for (route, target, reason, count) in rollbacks.iter() {
            let _ = writeln!(
                out,
                "tollgate_canary_rollbacks_total{{route=\"{}\",target=\"{}\",reason=\"{reason}\"}} {count}",
                escape_label(route),
                escape_label(target)
            );
        }
    }
}

/// Request duration, TTFT and time per output token, per target.
fn render_target_histograms(targets: &[Arc<TargetMetrics>], out: &mut String) {
    let _ = writeln!(out, "# HELP gen_ai_server_request_duration_seconds Upstream request duration, first byte sent to last byte received.\n# TYPE gen_ai_server_request_duration_seconds histogram");
    for target in targets {
        target.duration.render(out, "gen_ai_server_request_duration_seconds", &target.labels);
    }
    let _ = writeln!(out, "# HELP gen_ai_server_time_to_first_token_seconds Time to the first streamed token.\n# TYPE gen_ai_server_time_to_first_token_seconds histogram");
    for target in targets {
        if target.ttft.count() > 0 {
            target.ttft.render(out, "gen_ai_server_time_to_first_token_seconds", &target.labels);
        }
    }
    let _ = writeln!(out, "# HELP gen_ai_server_time_per_output_token_seconds Decode time per output token of successful responses (after the first token when streamed).\n# TYPE gen_ai_server_time_per_output_token_seconds histogram");
    for target in targets {
        if target.time_per_output_token.count() > 0 {
            target.time_per_output_token.render(out, "gen_ai_server_time_per_output_token_seconds", &target.labels);
        }
    }
}

pub fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_per_output_token_excludes_the_first_token_of_streams() {
        let ms = Duration::from_millis;
        assert_eq!(time_per_output_token(ms(1_100), Some(ms(100)), 11), Some(ms(100)));
        assert_eq!(time_per_output_token(ms(1_000), None, 10), Some(ms(100)));
        assert_eq!(time_per_output_token(ms(500), Some(ms(100)), 1), None, "one streamed token has no pace");
        assert_eq!(time_per_output_token(ms(500), None, 0), None);
    }

    #[test]
    fn records_and_renders_usage_and_cost() {
        let metrics = Metrics::default();
        let target = metrics.target("gpt", "openai", "gpt-4o-mini");
        let usage = Usage { input_tokens: 1000, output_tokens: 500, ..Default::default() };
        let price = Price { input: 0.15, output: 0.60 };
        target.record(Outcome::Ok, Some(&usage), &price, Duration::from_millis(30), Some(Duration::from_millis(5)));
        metrics.record_response(200);
        let text = metrics.render();
        assert!(text.contains("tollgate_http_responses_total{code=\"200\"} 1"));
        assert!(text.contains("gen_ai_token_type=\"input\"} 1000"));
        assert!(text.contains("tollgate_cost_usd_total{route=\"gpt\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\"} 0.00045"), "{text}");
        assert!(text.contains("gen_ai_server_time_to_first_token_seconds_count"));
        assert!(Arc::ptr_eq(&target, &metrics.target("gpt", "openai", "gpt-4o-mini")));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = Histogram::new(&LATENCY_BUCKETS_SECONDS);
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_millis(200));
        let mut out = String::new();
        histogram.render(&mut out, "h", "");
        assert!(out.contains("h_bucket{le=\"0.005\"} 1"));
        assert!(out.contains("h_bucket{le=\"0.25\"} 2"));
        assert!(out.contains("h_count{} 2"));
    }
}
