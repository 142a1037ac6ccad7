//! Per-request metering: outcome, usage (provider-reported, else a local estimate), cost, TTFT and
//! latency, recorded exactly once — when the response completes, fails, or is dropped by a client that
//! went away (then the tokens generated so far are estimated and charged).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::Usage;
use crate::budget::{Admission, UsageSink};
use crate::config::Price;
use crate::gossip::tracker::InFlightGuard;
use crate::metrics::{Outcome, TargetMetrics};
use crate::tokens::UsageEstimator;

pub struct RequestMeter {
    target: Arc<TargetMetrics>,
    price: Price,
    /// When the upstream request was sent.
    started: Instant,
    ttft: Option<Duration>,
    estimator: UsageEstimator,
    recorded: bool,
    route: Arc<str>,
    /// The budget reservation of this attempt, settled when the attempt ends.
    admission: Option<Admission>,
    /// Where usage rows for reports go (cluster mode).
    usage_sink: Option<UsageSink>,
    /// Counts the attempt as in flight at its endpoint until the meter is dropped.
    endpoint: Option<InFlightGuard>,
}

impl RequestMeter {
    pub fn new(
        target: Arc<TargetMetrics>,
        price: Price,
        started: Instant,
        estimator: UsageEstimator,
        route: Arc<str>,
    ) -> Self {
        RequestMeter {
            target,
            price,
            started,
            ttft: None,
            estimator,
            recorded: false,
            route,
            admission: None,
            usage_sink: None,
            endpoint: None,
        }
    }

    pub fn set_admission(&mut self, admission: Option<Admission>) {
        self.admission = admission;
    }

    pub fn set_endpoint(&mut self, guard: InFlightGuard) {
        self.endpoint = Some(guard);
    }

    pub fn set_usage_sink(&mut self, sink: Option<UsageSink>) {
        self.usage_sink = sink;
    }

    pub fn estimator(&self) -> &UsageEstimator {
        &self.estimator
    }

    pub fn mark_first_token(&mut self) {
        if self.ttft.is_none() {
            self.ttft = Some(self.started.elapsed());
        }
    }

    /// Records the request. `usage` is the provider's; when absent it is estimated from `output_text`.
    pub fn finish(&mut self, outcome: Outcome, usage: Option<Usage>, output_text: &str) -> Usage {
        if let Some(admission) = self.admission.as_mut() {
            // Provider-reported usage settles the reservation; unknown usage is charged in full.
            admission.settle(usage.map(|u| (u.input_tokens, u.output_tokens)));
        }
        let usage = usage.unwrap_or_else(|| self.estimator.estimate(output_text));
        if !self.recorded {
            self.recorded = true;
            let duration = self.started.elapsed();
            self.target.record(outcome, Some(&usage), &self.price, duration, self.ttft);
            if let (Outcome::Ok, Some(guard)) = (outcome, &self.endpoint) {
                guard.endpoint().observe_latency(duration, self.ttft);
            }
            if let Some(sink) = &self.usage_sink {
                if usage.input_tokens + usage.output_tokens > 0 {
                    sink.record(outcome == Outcome::Ok, &usage, &self.price);
                }
            }
            tracing::debug!(
                route = %self.route,
                ?outcome,
                input_tokens = usage.input_tokens,
                output_tokens = usage.output_tokens,
                estimated = usage.estimated,
                duration_ms = duration.as_millis() as u64,
                ttft_ms = self.ttft.map(|t| t.as_millis() as u64),
                "request metered"
            );
        }
        usage
    }

    pub fn is_recorded(&self) -> bool {
        self.recorded
    }
}
