//! Endpoint health (endpoint = provider): lock-free per-endpoint observations — in-flight requests,
//! peak-EWMA latency, TTFT, error rate — and the policy built on them: which failures are the endpoint's
//! fault, when its circuit breaker opens, when a half-open probe may go. Plus the merged remote view the
//! gossip refresher writes in, and GPU-load scraping ([`scrape`]). Gossip only carries these numbers
//! between nodes; the request path only touches atomics here.
//!
//! The breaker is hand-written (a consecutive-failure counter, an open timestamp and a probe slot in
//! atomics) rather than taken from a crate: it must merge peers' states from gossip and admit at most one
//! probe per cooldown without a lock on the request path, which the general-purpose breaker crates do not offer.

pub mod scrape;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::monotonic_ms;
use crate::error::{ErrorKind, GatewayError};

/// Decay time of the latency EWMAs (Finagle's peak-EWMA uses 10 s).
const LATENCY_DECAY: Duration = Duration::from_secs(10);
/// Weight of one outcome in the error-rate EWMA.
const ERROR_RATE_ALPHA: f64 = 0.1;

/// Why an attempt on an endpoint failed; the label of the fallback-reason metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Connect,
    Timeout,
    RateLimited,
    ServerError,
    Auth,
    InvalidResponse,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::Connect,
        FailureReason::Timeout,
        FailureReason::RateLimited,
        FailureReason::ServerError,
        FailureReason::Auth,
        FailureReason::InvalidResponse,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Connect => "connect",
            FailureReason::Timeout => "timeout",
            FailureReason::RateLimited => "rate_limited",
            FailureReason::ServerError => "server_error",
            FailureReason::Auth => "auth",
            FailureReason::InvalidResponse => "invalid_response",
        }
    }

    /// The endpoint's fault, as opposed to the request's (a 400 is the caller's problem).
    pub fn of(err: &GatewayError) -> Option<FailureReason> {
        match err.kind {
            ErrorKind::UpstreamConnect => Some(FailureReason::Connect),
            ErrorKind::UpstreamTimeout => Some(FailureReason::Timeout),
            ErrorKind::UpstreamInvalidResponse => Some(FailureReason::InvalidResponse),
            ErrorKind::UpstreamStatus(429) => Some(FailureReason::RateLimited),
            ErrorKind::UpstreamStatus(401..=403) => Some(FailureReason::Auth),
            ErrorKind::UpstreamStatus(status) if status >= 500 => Some(FailureReason::ServerError),
            _ => None,
        }
    }

    /// Failures that count towards opening the breaker: the endpoint is down or broken, not just busy.
    fn trips_breaker(self) -> bool {
        matches!(
            self,
            FailureReason::Connect
                | FailureReason::Timeout
                | FailureReason::ServerError
                | FailureReason::InvalidResponse
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn label(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// An f64 in an `AtomicU64`.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn store(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ =
            self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some(f(f64::from_bits(bits)).to_bits()));
    }
}

/// GPU load of a self-hosted engine, from its `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpuLoad {
    /// Requests queued at the engine.
    pub waiting: f64,
    /// Requests in the running batch.
    pub running: f64,
    /// KV-cache use, 0..1.
    pub kv_use: f64,
    /// When it was scraped (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One GPU sample in atomics (`at_ms == 0`: none), with the gateway-side outstanding count when it
/// was stored (to correct the sample for requests sent or finished since).
#[derive(Debug, Default)]
struct GpuCell {
    waiting: AtomicF64,
    running: AtomicF64,
    kv_use: AtomicF64,
    at_ms: AtomicU64,
    outstanding_then: AtomicF64,
}

impl GpuCell {
    fn store(&self, load: GpuLoad, outstanding_then: f64) {
        self.waiting.store(load.waiting);
        self.running.store(load.running);
        self.kv_use.store(load.kv_use);
        self.outstanding_then.store(outstanding_then);
        self.at_ms.store(load.at_ms, Ordering::Release);
    }

    fn load(&self) -> Option<GpuLoad> {
        let at_ms = self.at_ms.load(Ordering::Acquire);
        (at_ms != 0).then(|| GpuLoad {
            waiting: self.waiting.load(),
            running: self.running.load(),
            kv_use: self.kv_use.load(),
            at_ms,
        })
    }

    fn clear(&self) {
        self.at_ms.store(0, Ordering::Release);
    }
}

/// Breaker settings, from the node config.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failures: 5, cooldown: Duration::from_secs(5) }
    }
}

/// Everything known about one endpoint on this node.
#[derive(Debug)]
pub struct EndpointStats {
    pub name: String,
    breaker: BreakerConfig,
    in_flight: AtomicI64,
    latency_ms: AtomicF64,
    ttft_ms: AtomicF64,
    latency_stamp_ms: AtomicU64,
    ttft_stamp_ms: AtomicU64,
    error_rate: AtomicF64,
    samples: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Monotonic ms when the breaker opened (0: closed).
    opened_at_ms: AtomicU64,
    /// Monotonic ms when the half-open probe was let through (0: none).
    probe_at_ms: AtomicU64,
    failures_by_reason: [AtomicU64; 6],
    /// Written on failures only (never on the success path).
    last_error: Mutex<Option<String>>,
    /// Prometheus endpoint of the engine, if configured; read by the scraper.
    metrics_url: Mutex<Option<String>>,
    /// In the current route table (the scraper and the publisher skip removed providers).
    active: AtomicBool,
    gpu_local: GpuCell,
    // Merged view of the other live nodes, written by the gossip refresher.
    gpu_remote: GpuCell,
    remote_open: AtomicBool,
    remote_in_flight: AtomicI64,
    remote_latency_ms: AtomicF64,
    remote_error_rate: AtomicF64,
}

/// What the routing strategies read about one endpoint: local and cluster-wide.
#[derive(Debug, Clone, Copy)]
pub struct LoadSignal {
    /// Requests outstanding at the endpoint from every gateway node (this one included).
    pub outstanding: f64,
    /// A fresh GPU sample (this node's scrape or a peer's, whichever is newer).
    pub gpu: Option<GpuLoad>,
    /// `outstanding` when that sample was taken (the difference is what the sample does not show yet).
    pub outstanding_at_gpu: f64,
    /// Peak-EWMA latency in ms (this node's, else the peers' mean; 0 when never measured).
    pub latency_ms: f64,
}

impl EndpointStats {
    fn new(name: &str, breaker: BreakerConfig) -> Self {
        EndpointStats {
            name: name.to_owned(),
            breaker,
            in_flight: AtomicI64::new(0),
            latency_ms: AtomicF64::default(),
            ttft_ms: AtomicF64::default(),
            latency_stamp_ms: AtomicU64::new(0),
            ttft_stamp_ms: AtomicU64::new(0),
            error_rate: AtomicF64::default(),
            samples: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            opened_at_ms: AtomicU64::new(0),
            probe_at_ms: AtomicU64::new(0),
            failures_by_reason: Default::default(),
            last_error: Mutex::new(None),
            metrics_url: Mutex::new(None),
            active: AtomicBool::new(true),
            gpu_local: GpuCell::default(),
            gpu_remote: GpuCell::default(),
            remote_open: AtomicBool::new(false),
            remote_in_flight: AtomicI64::new(0),
            remote_latency_ms: AtomicF64::default(),
            remote_error_rate: AtomicF64::default(),
        }
    }

    /// Counts a request as outstanding until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { endpoint: self.clone() }
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A completed request: peak-EWMA latency (a slower sample is taken at once, faster ones decay in).
    pub fn observe_latency(&self, latency: Duration, ttft: Option<Duration>) {
        let now = monotonic_ms();
        peak_ewma(&self.latency_ms, &self.latency_stamp_ms, latency.as_secs_f64() * 1e3, now);
        if let Some(ttft) = ttft {
            peak_ewma(&self.ttft_ms, &self.ttft_stamp_ms, ttft.as_secs_f64() * 1e3, now);
        }
    }

    /// The upstream answered (before or at the first byte): closes the breaker.
    pub fn record_success(&self) {
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.error_rate.update(|rate| rate * (1.0 - ERROR_RATE_ALPHA));
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.opened_at_ms.load(Ordering::Relaxed) != 0 {
            self.opened_at_ms.store(0, Ordering::Relaxed);
            tracing::info!(endpoint = %self.name, "circuit breaker closed");
        }
        self.probe_at_ms.store(0, Ordering::Relaxed);
    }

    /// An attempt failed through the endpoint's fault. Returns the reason when it counts as one.
    pub fn record_failure(&self, err: &GatewayError) -> Option<FailureReason> {
        let reason = FailureReason::of(err)?;
        self.samples.fetch_add(1, Ordering::Relaxed);
        self.error_rate.update(|rate| rate * (1.0 - ERROR_RATE_ALPHA) + ERROR_RATE_ALPHA);
        self.failures_by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(err.message.chars().take(200).collect());
        }
        if !reason.trips_breaker() {
            return Some(reason);
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = monotonic_ms();
        let state = self.local_breaker(now);
        if failures >= self.breaker.failures && state != BreakerState::Open {
            // Closed → open, or a failed half-open probe → open again for a full cooldown.
            self.opened_at_ms.store(now, Ordering::Relaxed);
            self.probe_at_ms.store(0, Ordering::Relaxed);
            tracing::warn!(endpoint = %self.name, failures, reason = reason.label(), "circuit breaker opened");
        }
        Some(reason)
    }

    /// This node's breaker, from its own observations.
    pub fn local_breaker(&self, now_ms: u64) -> BreakerState {
        let opened = self.opened_at_ms.load(Ordering::Relaxed);
        if opened == 0 {
            BreakerState::Closed
        } else if now_ms < opened + self.breaker.cooldown.as_millis() as u64 {
            BreakerState::Open
        } else {
            BreakerState::HalfOpen
        }
    }

    /// Whether routing should treat the endpoint as healthy: no open breaker here or on a live peer.
    pub fn is_routable(&self, now_ms: u64) -> bool {
        self.local_breaker(now_ms) != BreakerState::Open && !self.remote_open.load(Ordering::Relaxed)
    }

    /// Whether a request may go to the endpoint now. A half-open breaker lets one probe through per
    /// cooldown; refused endpoints are still tried last, when nothing else is left.
    pub fn admit(&self, now_ms: u64) -> bool {
        match self.local_breaker(now_ms) {
            BreakerState::Open => false,
            BreakerState::Closed => !self.remote_open.load(Ordering::Relaxed),
            BreakerState::HalfOpen => {
                let cooldown = self.breaker.cooldown.as_millis() as u64;
                self.probe_at_ms
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |probe| {
                        (probe == 0 || now_ms >= probe + cooldown).then_some(now_ms)
                    })
                    .is_ok()
            }
        }
    }

    pub fn remote_open(&self) -> bool {
        self.remote_open.load(Ordering::Relaxed)
    }

    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.failures_by_reason[reason.index()].load(Ordering::Relaxed)
    }

    /// What this node publishes about the endpoint.
    pub fn local_report(&self, now_ms: u64) -> EndpointReport {
        EndpointReport {
            state: self.local_breaker(now_ms),
            latency_ms: self.latency_ms.load().round(),
            ttft_ms: self.ttft_ms.load().round(),
            error_rate: (self.error_rate.load() * 1000.0).round() / 1000.0,
            in_flight: self.in_flight().max(0),
            samples: self.samples.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|last| last.clone()),
        }
    }

    pub fn set_local_gpu(&self, load: Option<GpuLoad>) {
        match load {
            Some(load) => self.gpu_local.store(load, self.outstanding()),
            None => self.gpu_local.clear(),
        }
    }

    /// Requests outstanding at the endpoint from every gateway node.
    fn outstanding(&self) -> f64 {
        (self.in_flight().max(0) + self.remote_in_flight.load(Ordering::Relaxed).max(0)) as f64
    }

    pub fn local_gpu(&self) -> Option<GpuLoad> {
        self.gpu_local.load()
    }

    /// The peers' merged view, written by the gossip refresher.
    pub fn set_remote(&self, remote: &RemoteSummary) {
        self.remote_open.store(remote.open, Ordering::Relaxed);
        self.remote_in_flight.store(remote.in_flight, Ordering::Relaxed);
        self.remote_latency_ms.store(remote.latency_ms);
        self.remote_error_rate.store(remote.error_rate);
        match remote.gpu {
            // Only a new sample resets the reference count.
            Some(load) if self.gpu_remote.load().map(|l| l.at_ms) != Some(load.at_ms) => {
                self.gpu_remote.store(load, self.outstanding())
            }
            Some(_) => {}
            None => self.gpu_remote.clear(),
        }
    }

    /// The newest GPU sample (local or gossiped) that is younger than `ttf_ms`.
    pub fn fresh_gpu(&self, now_wall_ms: u64, ttl_ms: u64) -> Option<GpuLoad> {
        self.fresh_gpu_with_reference(now_wall_ms, ttl_ms).map(|(load, _)| load)
    }

    fn fresh_gpu_with_reference(&self, now_wall_ms: u64, ttl_ms: u64) -> Option<(GpuLoad, f64)> {
        let fresh = |cell: &GpuCell| {
            cell.load()
                .filter(|l| now_wall_ms.saturating_sub(l.at_ms) <= ttl_ms)
                .map(|l| (l, cell.outstanding_then.load()))
        };
        match (fresh(&self.gpu_local), fresh(&self.gpu_remote)) {
            (Some(a), Some(b)) => Some(if a.0.at_ms >= b.0.at_ms { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    pub fn load_signal(&self, now_wall_ms: u64, gpu_ttl_ms: u64) -> LoadSignal {
        let local_latency = self.latency_ms.load();
        let gpu = self.fresh_gpu_with_reference(now_wall_ms, gpu_ttl_ms);
        LoadSignal {
            outstanding: self.outstanding(),
            gpu: gpu.map(|(load, _)| load),
            outstanding_at_gpu: gpu.map_or(0.0, |(_, then)| then),
            latency_ms: if local_latency > 0.0 { local_latency } else { self.remote_latency_ms.load() },
        }
    }

    pub fn set_metrics_url(&self, url: Option<String>) {
        if let Ok(mut current) = self.metrics_url.lock() {
            *current = url;
        }
    }

    pub fn metrics_url(&self) -> Option<String> {
        self.metrics_url.lock().ok().and_then(|url| url.clone())
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

fn peak_ewma(value: &AtomicF64, stamp: &AtomicU64, sample: f64, now_ms: u64) {
    let previous = stamp.swap(now_ms, Ordering::Relaxed);
    let elapsed = now_ms.saturating_sub(previous) as f64;
    let decay = (-elapsed / LATENCY_DECAY.as_millis() as f64).exp();
    value.update(
        |current| {
            if previous == 0 || sample > current {
                sample
            } else {
                current * decay + sample * (1.0 - decay)
            }
        },
    );
}

/// Decrements the endpoint's in-flight count when the request ends (completed, failed or dropped).
#[derive(Debug)]
pub struct InFlightGuard {
    endpoint: Arc<EndpointStats>,
}

impl InFlightGuard {
    pub fn endpoint(&self) -> &Arc<EndpointStats> {
        &self.endpoint
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one node says about one endpoint (the value of its gossip key).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointReport {
    pub state: BreakerState,
    pub latency_ms: f64,
    pub ttft_ms: f64,
    pub error_rate: f64,
    pub in_flight: i64,
    pub samples: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The other live nodes' reports about one endpoint, merged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteSummary {
    /// Some live peer has the endpoint's breaker open.
    pub open: bool,
    pub in_flight: i64,
    /// Mean of the peers that measured it (0: none).
    pub latency_ms: f64,
    pub error_rate: f64,
    pub gpu: Option<GpuLoad>,
}

impl RemoteSummary {
    pub fn merge<'a>(reports: impl Iterator<Item = &'a EndpointReport>, gpu: Option<GpuLoad>) -> RemoteSummary {
        let mut summary = RemoteSummary { gpu, ..RemoteSummary::default() };
        let (mut measured, mut latency_sum, mut rated, mut error_sum) = (0u32, 0.0, 0u32, 0.0);
        for report in reports {
            summary.open |= report.state == BreakerState::Open;
            summary.in_flight += report.in_flight.max(0);
            if report.latency_ms > 0.0 {
                measured += 1;
                latency_sum += report.latency_ms;
            }
            if report.samples > 0 {
                rated += 1;
                error_sum += report.error_rate;
            }
        }
        if measured > 0 {
            summary.latency_ms = latency_sum / f64::from(measured);
        }
        if rated > 0 {
            summary.error_rate = error_sum / f64::from(rated);
        }
        summary
    }
}

/// All endpoints of this node, by provider name. Entries are created when the route table is built and
/// kept across reloads (so counters and breakers survive a config change).
#[derive(Debug)]
pub struct EndpointRegistry {
    breaker: BreakerConfig,
    /// How long a GPU sample counts (3 scrape intervals, at least 3 s).
    pub gpu_ttl_ms: u64,
    endpoints: Mutex<HashMap<String, Arc<EndpointStats>>>,
}

impl Default for EndpointRegistry {
    fn default() -> Self {
        EndpointRegistry::new(BreakerConfig::default(), Duration::from_secs(1))
    }
}

impl EndpointRegistry {
    pub fn new(breaker: BreakerConfig, scrape_interval: Duration) -> Self {
        EndpointRegistry {
            breaker,
            gpu_ttl_ms: (scrape_interval.as_millis() as u64 * 3).max(3_000),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    pub fn endpoint(&self, name: &str) -> Arc<EndpointStats> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        endpoints.entry(name.to_owned()).or_insert_with(|| Arc::new(EndpointStats::new(name, self.breaker))).clone()
    }

    /// Marks exactly these providers as in use (with their metrics URLs); called on every route rebuild.
    pub fn set_active(&self, providers: &[(String, Option<String>)]) {
        let endpoints: Vec<Arc<EndpointStats>> = providers.iter().map(|(name, _)| self.endpoint(name)).collect();
        for existing in self.all() {
            existing.active.store(false, Ordering::Relaxed);
        }
        for (endpoint, (_, url)) in endpoints.iter().zip(providers) {
            endpoint.set_metrics_url(url.clone());
            endpoint.active.store(true, Ordering::Relaxed);
        }
    }

    /// Every endpoint, sorted by name.
    pub fn all(&self) -> Vec<Arc<EndpointStats>> {
        let endpoints = self.endpoints.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut list: Vec<_> = endpoints.values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    pub fn active(&self) -> Vec<Arc<EndpointStats>> {
        self.all().into_iter().filter(|e| e.is_active()).collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<EndpointStats>> {
        let endpoints = self.endpoints.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        endpoints.get(name).cloned()
    }
}

#[cfg(test)]
mod tests;
