//! Per-request metering: outcome, usage (provider-reported, else a local estimate), cost, TTFT and
//! latency, recorded exactly once — when the response completes, fails, or is dropped by a client that
//! went away. The budget reservation settles at the same moment: at the provider's final usage when it
//! arrived, at nothing when the upstream never generated, and otherwise (usage unknown) at the whole
//! reservation or the count of what was seen generated, whichever is more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::api::Usage;
use crate::budget::{Admission, Settlement, UsageSink};
use crate::config::Price;
use crate::health::InFlightGuard;
use crate::metrics::{Outcome, TargetMetrics};
use crate::tokens::UsageEstimator;
use crate::trace_span::TraceSpan;

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
    /// The request's trace span: usage, cost and TTFT are recorded on it, and holding it keeps it open
    /// until the stream ends.
    span: TraceSpan,
    /// Why the model stopped, as the provider said it (recorded on the span).
    finish_reason: Option<String>,
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
            span: TraceSpan::none(),
            finish_reason: None,
        }
    }

    pub fn set_finish_reason(&mut self, reason: Option<String>) {
        self.finish_reason = reason;
    }

    pub fn set_span(&mut self, span: TraceSpan) {
        self.span = span;
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
            self.span.add_event("tollgate.first_token");
        }
    }

    /// Records an attempt the upstream never received or refused with an error status: nothing billed.
    pub fn finish_not_billed(&mut self, outcome: Outcome) -> Usage {
        if let Some(admission) = self.admission.as_mut() {
            admission.settle(Settlement::NotBilled);
        }
        self.record(outcome, Usage::default())
    }

    /// Records the request with the provider's final usage, or (`None`) with usage unknown: then the
    /// reservation is charged in full, or at what `output_text` shows was generated if that is more, and
    /// the metrics get a local count (`partial`: what the provider reported so far, e.g. Anthropic's input
    /// count from `message_start`).
    pub fn finish(&mut self, outcome: Outcome, usage: Option<Usage>, output_text: &str) -> Usage {
        self.finish_with_partial(outcome, usage, None, output_text)
    }

    pub fn finish_with_partial(
        &mut self,
        outcome: Outcome,
        usage: Option<Usage>,
        partial: Option<Usage>,
        output_text: &str,
    ) -> Usage {
        if self.recorded {
            return usage.unwrap_or_default();
        }
        let usage = match usage {
            Some(usage) => {
                if let Some(admission) = self.admission.as_mut() {
                    admission.settle(Settlement::Reported { input: usage.input_tokens, output: usage.output_tokens });
                }
                usage
            }
            None => {
                let mut estimate = self.estimator.estimate(output_text);
                if let Some(partial) = partial {
                    estimate.input_tokens = partial.input_tokens;
                    estimate.cached_input_tokens = partial.cached_input_tokens;
                    estimate.output_tokens = estimate.output_tokens.max(partial.output_tokens);
                }
                if let Some(admission) = self.admission.as_mut() {
                    admission.settle(Settlement::Unknown {
                        at_least_input: estimate.input_tokens,
                        at_least_output: estimate.output_tokens,
                        provider_input: partial.map(|partial| partial.input_tokens),
                    });
                }
                estimate
            }
        };
        self.record(outcome, usage)
    }

    fn record(&mut self, outcome: Outcome, usage: Usage) -> Usage {
        if !self.recorded {
            self.recorded = true;
            let duration = self.started.elapsed();
            self.target.record(outcome, Some(&usage), &self.price, duration, self.ttft);
            if let (Outcome::Ok, Some(guard)) = (outcome, &self.endpoint) {
                guard.endpoint().observe_latency(duration, self.ttft);
            }
            if !self.span.is_none() {
                self.span.record("gen_ai.usage.input_tokens", usage.input_tokens);
                self.span.record("gen_ai.usage.output_tokens", usage.output_tokens);
                self.span.record("tollgate.cost_usd", crate::metrics::cost_usd(&usage, &self.price));
                self.span.record("tollgate.usage_estimated", usage.estimated);
                if let Some(ttft) = self.ttft {
                    self.span.record("tollgate.ttft_ms", ttft.as_secs_f64() * 1e3);
                    self.span.add_event("tollgate.stream.end");
                }
                if let Some(reason) = &self.finish_reason {
                    self.span.record("gen_ai.response.finish_reasons", reason.as_str());
                }
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

impl Drop for RequestMeter {
    /// A meter dropped without a verdict: the request's future was dropped before the upstream's headers
    /// arrived (the client went away, so hyper cancelled the handler). The attempt counts as cancelled, and
    /// its reservation settles as unknown, as for a stream the client left.
    fn drop(&mut self) {
        if !self.recorded {
            self.finish(Outcome::Cancelled, None, "");
        }
    }
}
