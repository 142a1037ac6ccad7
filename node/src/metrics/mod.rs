//! Request metering and the `/metrics` exposition, on the official `prometheus-client` crate. On the
//! request path every series is a handle resolved when the route table is built (a relaxed atomic add, no
//! label lookup): `bench/benches/metrics.rs` measured that at the cost of hand-kept atomics, and label
//! lookups per request at 11× (bench/README.md). Series read at scrape time come in a [`Snapshot`].

mod histogram;
mod snapshot;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

pub use histogram::Histogram;
pub use snapshot::{Snapshot, Value};

use crate::api::Usage;
use crate::config::Price;
use crate::health::FailureReason;

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

/// The labels of a target's series (values escaped once, when the target is first seen).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    route: String,
    gen_ai_provider_name: String,
    gen_ai_request_model: String,
}

/// A target's labels and one more (`outcome`, `gen_ai_token_type`, `reason`), in that order.
type TargetWith = (TargetLabels, [(&'static str, &'static str); 1]);

impl TargetLabels {
    fn with(&self, name: &'static str, value: &'static str) -> TargetWith {
        (self.clone(), [(name, value)])
    }
}

/// Counters for one (route, provider, upstream model) target: handles into the node's families.
#[derive(Debug)]
pub struct TargetMetrics {
    labels: TargetLabels,
    pub requests_ok: Counter,
    pub requests_error: Counter,
    pub requests_cancelled: Counter,
    pub requests_rejected: Counter,
    pub fallbacks: Counter,
    /// Fallbacks by why the attempt failed: rare, so looked up by label when they happen.
    fallback_reasons: Family<TargetWith, Counter>,
    pub input_tokens: Counter,
    pub output_tokens: Counter,
    pub estimated_requests: Counter,
    pub cost_usd: Counter<f64, AtomicU64>,
    pub duration: Histogram,
    pub ttft: Histogram,
    /// Decode pace of successful responses (`gen_ai.server.time_per_output_token`): after the first token
    /// for streams, over the whole response otherwise. Unlike `duration`, it does not grow with the length
    /// of the output, so the canary's latency SLO can judge it.
    pub time_per_output_token: Histogram,
}

impl TargetMetrics {
    pub fn record_fallback_reason(&self, reason: FailureReason) {
        self.fallback_reasons.get_or_create(&self.labels.with("reason", reason.label())).inc();
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
        .inc();
        if let Some(usage) = usage {
            self.input_tokens.inc_by(usage.input_tokens);
            self.output_tokens.inc_by(usage.output_tokens);
            if usage.estimated {
                self.estimated_requests.inc();
            }
            self.cost_usd.inc_by(cost_usd(usage, price));
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

/// The families every target's handles point into (clones share the series).
#[derive(Debug)]
struct TargetFamilies {
    requests: Family<TargetWith, Counter>,
    tokens: Family<TargetWith, Counter>,
    estimated: Family<TargetLabels, Counter>,
    fallbacks: Family<TargetLabels, Counter>,
    fallback_reasons: Family<TargetWith, Counter>,
    cost: Family<TargetLabels, Counter<f64, AtomicU64>>,
    duration: Family<TargetLabels, Histogram, fn() -> Histogram>,
    ttft: Family<TargetLabels, Histogram, fn() -> Histogram>,
    per_token: Family<TargetLabels, Histogram, fn() -> Histogram>,
}

impl Default for TargetFamilies {
    fn default() -> Self {
        TargetFamilies {
            requests: Family::default(),
            tokens: Family::default(),
            estimated: Family::default(),
            fallbacks: Family::default(),
            fallback_reasons: Family::default(),
            cost: Family::default(),
            duration: Family::new_with_constructor(Histogram::latency),
            ttft: Family::new_with_constructor(Histogram::latency),
            per_token: Family::new_with_constructor(Histogram::per_token),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardrailLabels {
    guardrail: String,
    action: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    route: String,
    target: String,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    org: String,
    reason: String,
}

/// The node's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    /// Responses by HTTP status code (index = code), each handle made on the code's first response.
    responses: Vec<OnceLock<Counter>>,
    responses_family: Family<[(&'static str, String); 1], Counter>,
    pub in_flight: Gauge,
    /// Client connections closed: refused at `limits.max_connections`, or by the handshake or idle deadline.
    connections_closed: Family<[(&'static str, &'static str); 1], Counter>,
    pub connections_refused: Counter,
    pub connections_timed_out: Counter,
    /// Failed `accept` calls (descriptor exhaustion and the like); the loop backs off and goes on.
    pub accept_errors: Counter,
    pub overhead: Histogram,
    target_families: TargetFamilies,
    targets: Mutex<HashMap<(String, String, String), Arc<TargetMetrics>>>,
    /// Canary verdicts this node reached (one per canaried route and second), healthy ones included.
    pub canary_judgements: Counter,
    budget_refusals: Family<RefusalLabels, Counter>,
    guardrail_events: Family<GuardrailLabels, Counter>,
    canary_rollbacks: Family<RollbackLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let connections_closed: Family<[(&'static str, &'static str); 1], Counter> = Family::default();
        let connections_refused = handle(&connections_closed, &[("reason", "over_capacity")]);
        let connections_timed_out = handle(&connections_closed, &[("reason", "deadline")]);
        Metrics {
            responses: (0..600).map(|_| OnceLock::new()).collect(),
            responses_family: Family::default(),
            in_flight: Gauge::default(),
            connections_refused,
            connections_timed_out,
            connections_closed,
            accept_errors: Counter::default(),
            overhead: Histogram::new(&histogram::OVERHEAD_BUCKETS_SECONDS),
            target_families: TargetFamilies::default(),
            targets: Mutex::new(HashMap::new()),
            canary_judgements: Counter::default(),
            budget_refusals: Family::default(),
            guardrail_events: Family::default(),
            canary_rollbacks: Family::default(),
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
                let labels = TargetLabels {
                    route: escape_label(route),
                    gen_ai_provider_name: escape_label(provider),
                    gen_ai_request_model: escape_label(model),
                };
                let families = &self.target_families;
                let outcome = |outcome| handle(&families.requests, &labels.with("outcome", outcome));
                let tokens = |kind| handle(&families.tokens, &labels.with("gen_ai_token_type", kind));
                Arc::new(TargetMetrics {
                    requests_ok: outcome("ok"),
                    requests_error: outcome("error"),
                    requests_cancelled: outcome("cancelled"),
                    requests_rejected: outcome("rejected"),
                    fallbacks: handle(&families.fallbacks, &labels),
                    fallback_reasons: families.fallback_reasons.clone(),
                    input_tokens: tokens("input"),
                    output_tokens: tokens("output"),
                    estimated_requests: handle(&families.estimated, &labels),
                    cost_usd: handle(&families.cost, &labels),
                    duration: handle(&families.duration, &labels),
                    ttft: handle(&families.ttft, &labels),
                    time_per_output_token: handle(&families.per_token, &labels),
                    labels,
                })
            })
            .clone()
    }

    /// A request of `org` refused by its budgets (`reason`: `budget_exceeded`, `rate_limited`,
    /// `budget_unavailable`).
    pub fn record_budget_refusal(&self, org: &str, reason: &str) {
        let labels = RefusalLabels { org: escape_label(org), reason: escape_label(reason) };
        self.budget_refusals.get_or_create(&labels).inc();
    }

    /// A guardrail matched a request and took `action`.
    pub fn record_guardrail(&self, guardrail: &str, action: crate::guard::GuardrailAction) {
        let action = match action {
            crate::guard::GuardrailAction::Block => "block",
            crate::guard::GuardrailAction::Flag => "flag",
            crate::guard::GuardrailAction::Redact => "redact",
        };
        self.guardrail_events.get_or_create(&GuardrailLabels { guardrail: escape_label(guardrail), action }).inc();
    }

    pub fn record_canary_rollback(&self, route: &str, target: &str, reason: &'static str) {
        let labels = RollbackLabels { route: escape_label(route), target: escape_label(target), reason };
        self.canary_rollbacks.get_or_create(&labels).inc();
    }

    pub fn record_response(&self, status: u16) {
        if let Some(slot) = self.responses.get(status as usize) {
            slot.get_or_init(|| handle(&self.responses_family, &[("code", status.to_string())])).inc();
        }
    }

    /// Responses sent so far, and how many of them were errors (5xx, and 429 refusals).
    pub fn response_totals(&self) -> (u64, u64) {
        let count = |range: std::ops::Range<usize>| -> u64 {
            self.responses.get(range).map_or(0, |slots| slots.iter().filter_map(|c| c.get()).map(Counter::get).sum())
        };
        (count(0..600), count(500..600) + count(429..430))
    }

    /// Time to first token over every target: (sum in seconds, count).
    pub fn ttft_totals(&self) -> (f64, u64) {
        let targets = self.targets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        targets.values().fold((0.0, 0), |(sum, count), t| (sum + t.ttft.sum_seconds(), count + t.ttft.count()))
    }

    pub fn responses_with_status(&self, status: u16) -> u64 {
        self.responses.get(status as usize).and_then(OnceLock::get).map_or(0, Counter::get)
    }

    /// The OpenMetrics text exposition of the node's series and of `snapshot` (those read at scrape time).
    pub fn render(&self, mut snapshot: Snapshot) -> String {
        collect_process(&mut snapshot);
        let mut registry = Registry::default();
        for (name, help, metric) in self.families() {
            registry.register(name, help, Registered(metric));
        }
        registry.register_collector(Box::new(snapshot));
        let mut out = String::with_capacity(16 * 1024);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(%err, "encoding /metrics failed");
        }
        out
    }

    /// The long-lived families as (name, help, handle): node-wide series, then per-target ones (labelled
    /// by route, provider and model). Help texts without the final period: the registry adds it.
    fn families(&self) -> Vec<(&'static str, &'static str, Box<dyn Metric>)> {
        let t = &self.target_families;
        vec![
            (
                "tollgate_http_responses",
                "Responses sent to clients on the API listener, by status",
                Box::new(self.responses_family.clone()),
            ),
            ("tollgate_requests_in_flight", "API requests being served now", Box::new(self.in_flight.clone())),
            (
                "tollgate_connections_closed",
                "Client connections refused at the cap or closed by a deadline",
                Box::new(self.connections_closed.clone()),
            ),
            (
                "tollgate_accept_errors",
                "Failed accepts on the API and admin listeners (e.g. out of file descriptors)",
                Box::new(self.accept_errors.clone()),
            ),
            (
                "tollgate_gateway_overhead_seconds",
                "Time the gateway itself spent before the response headers, upstream wait excluded",
                Box::new(self.overhead.clone()),
            ),
            (
                "tollgate_budget_refusals",
                "Requests refused by a budget, by org and reason",
                Box::new(self.budget_refusals.clone()),
            ),
            (
                "tollgate_guardrail_events",
                "Requests a guardrail matched, by the action it took",
                Box::new(self.guardrail_events.clone()),
            ),
            (
                "tollgate_canary_judgements",
                "Canary verdicts this node reached (healthy included)",
                Box::new(self.canary_judgements.clone()),
            ),
            (
                "tollgate_canary_rollbacks",
                "Canary targets set to weight 0 by this node, by the SLO they broke",
                Box::new(self.canary_rollbacks.clone()),
            ),
            ("tollgate_upstream_requests", "Upstream attempts by outcome", Box::new(t.requests.clone())),
            (
                "gen_ai_client_token_usage",
                "Tokens billed, by type (gen_ai.client.token.usage)",
                Box::new(t.tokens.clone()),
            ),
            (
                "tollgate_usage_estimated",
                "Requests whose usage was counted locally because the provider reported none",
                Box::new(t.estimated.clone()),
            ),
            (
                "tollgate_fallbacks",
                "Attempts on this target that failed over to the next one",
                Box::new(t.fallbacks.clone()),
            ),
            (
                "tollgate_fallbacks_by_reason",
                "Fallbacks away from this target, by why its attempt failed",
                Box::new(t.fallback_reasons.clone()),
            ),
            ("tollgate_cost_usd", "Cost at the model's configured prices", Box::new(t.cost.clone())),
            (
                "gen_ai_server_request_duration_seconds",
                "Upstream request duration, first byte sent to last byte received",
                Box::new(t.duration.clone()),
            ),
            ("gen_ai_server_time_to_first_token_seconds", "Time to the first streamed token", Box::new(t.ttft.clone())),
            (
                "gen_ai_server_time_per_output_token_seconds",
                "Decode time per output token of successful responses (after the first token when streamed)",
                Box::new(t.per_token.clone()),
            ),
        ]
    }
}

/// A family registered by handle (the registry wants one concrete type per call).
#[derive(Debug)]
struct Registered(Box<dyn Metric>);

impl EncodeMetric for Registered {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// The handle of one series of `family`. A family's lookup guard holds its lock; cloning the handle out
/// here ends it before the caller does anything else (a guard that outlives its statement can deadlock
/// the next lookup on the same family).
fn handle<L, M, C>(family: &Family<L, M, C>, labels: &L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    family.get_or_create(labels).clone()
}

/// Process-wide series kept outside the registry: the access log's drops, idle spins.
fn collect_process(snapshot: &mut Snapshot) {
    snapshot
        .counter("tollgate_access_log_dropped", "Access log lines dropped because the writer fell behind.")
        .sample(&[], crate::access_log::dropped());
    if crate::idle_spin::active() {
        let (woken, expired) = crate::idle_spin::counts();
        snapshot
            .counter(
                "tollgate_idle_spins",
                "Worker parks that spun first (node.idle_spin_us): `woken` found work within the budget, `expired` parked anyway.",
            )
            .sample(&[("outcome", "woken")], woken)
            .sample(&[("outcome", "expired")], expired);
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
        target.record_fallback_reason(FailureReason::Timeout);
        metrics.record_response(200);
        metrics.record_guardrail("pii \"x\"", crate::guard::GuardrailAction::Redact);
        let text = metrics.render(Snapshot::default());
        let labels = "route=\"gpt\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\"";
        assert!(text.contains("tollgate_http_responses_total{code=\"200\"} 1\n"), "{text}");
        assert!(
            text.contains(&format!("gen_ai_client_token_usage_total{{{labels},gen_ai_token_type=\"input\"}} 1000\n"))
        );
        assert!(text.contains(&format!("tollgate_cost_usd_total{{{labels}}} 0.00045\n")), "{text}");
        assert!(text.contains(&format!("tollgate_upstream_requests_total{{{labels},outcome=\"ok\"}} 1\n")));
        assert!(text.contains(&format!("tollgate_fallbacks_by_reason_total{{{labels},reason=\"timeout\"}} 1\n")));
        assert!(text.contains(&format!("gen_ai_server_time_to_first_token_seconds_count{{{labels}}} 1\n")));
        assert!(
            text.contains("tollgate_guardrail_events_total{guardrail=\"pii \\\"x\\\"\",action=\"redact\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# HELP tollgate_requests_in_flight API requests being served now.\n"), "{text}");
        assert!(text.contains("tollgate_connections_closed_total{reason=\"deadline\"} 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert!(Arc::ptr_eq(&target, &metrics.target("gpt", "openai", "gpt-4o-mini")));
        assert_eq!(metrics.response_totals(), (1, 0));
        assert_eq!(metrics.responses_with_status(200), 1);
    }
}
