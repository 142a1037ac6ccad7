//! The concurrent clients of a run: chat clients in every region, config clients writing and reading
//! registers on random regions, and the ledger sampler. Each stops issuing operations once `stop` is set
//! and finishes the one in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tollgate_tests::MockUpstream;

use super::chat;
use super::registers;
use super::setup::OrgPlan;
use crate::history::{History, OpType};
use crate::http;
use crate::regions::state::RegionsState;

pub const CHAT_TIMEOUT: Duration = Duration::from_secs(15);
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every worker shares.
#[derive(Clone)]
pub struct Shared {
    pub state: Arc<RegionsState>,
    pub token: Arc<String>,
    pub orgs: Arc<Vec<OrgPlan>>,
    pub mocks: Arc<Vec<Arc<MockUpstream>>>,
    pub history: History,
    pub stop: Arc<AtomicBool>,
    /// Share of streaming requests whose client hangs up part-way.
    pub hangup: f64,
    /// Set by the `idempotent-retry` nemesis: config clients use short timeouts and retry.
    pub retry: Arc<RetryMode>,
    /// The mocks' delay between streamed events (their normal script).
    pub token_delay: Duration,
}

/// The `idempotent-retry` nemesis's switch: while `on`, each config write starts with a timeout of
/// `first_timeout_ms` (shorter than a forwarded write over the WAN) and is retried with the same
/// `Idempotency-Key` on other regions, with doubling timeouts.
#[derive(Debug, Default)]
pub struct RetryMode {
    pub on: AtomicBool,
    pub first_timeout_ms: AtomicU64,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// `host:port` of a region's API.
    pub fn api_addr(&self, region: u64) -> String {
        let url = self.state.nodes.iter().find(|node| node.id == region).map_or("", |node| node.api_url.as_str());
        url.trim_start_matches("http://").to_owned()
    }

    pub fn admin_url(&self, region: u64) -> String {
        self.state.nodes.iter().find(|node| node.id == region).map_or(String::new(), |node| node.admin_url.clone())
    }

    /// Tokens (input + output) the org's mock has served so far.
    pub fn served(&self, org: &str) -> Option<u64> {
        let index = self.orgs.iter().position(|plan| plan.name == org)?;
        let mock = self.mocks.get(index)?;
        Some(mock.input_tokens_served() + mock.output_tokens_served())
    }
}

/// One chat client pinned to `region`: draws an org (acme 60 %, beta 30 %, ctl 10 %) and a request shape
/// per operation.
pub async fn chat_client(shared: Shared, region: u64, worker: u64, seed: u64) {
    let process = format!("chat-{region}-{worker}");
    let mut rng = StdRng::seed_from_u64(seed);
    let api_addr = shared.api_addr(region);
    while !shared.stopped() {
        let draw = rng.random_range(0..10);
        let org_index = match draw {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        };
        let Some(org) = shared.orgs.get(org_index).cloned() else { return };
        let spec = chat::random_spec(&mut rng, &org, region, shared.hangup);
        shared.history.record(&process, OpType::Invoke, "chat", json!(spec));
        let mut result = chat::perform(&api_addr, &org.key, &spec, CHAT_TIMEOUT).await;
        if result.kind == OpType::Fail {
            // What the org's mock had served when this refusal came (the utilisation checker's evidence).
            result.value["served_then"] = json!(shared.served(&org.name));
        }
        shared.history.record(&process, result.kind, "chat", result.value);
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..150))).await;
    }
}

/// One config client: 40 % writes of a fresh unique value, 60 % reads, on random regions and registers.
pub async fn config_client(shared: Shared, worker: u64, seed: u64, next_value: Arc<AtomicU64>) {
    let process = format!("config-{worker}");
    let mut rng = StdRng::seed_from_u64(seed);
    while !shared.stopped() {
        let region = rng.random_range(1..=shared.state.nodes.len() as u64);
        let key = rng.random_range(0..registers::REGISTERS);
        let admin = shared.admin_url(region);
        if rng.random_bool(0.4) {
            let value = next_value.fetch_add(1, Ordering::SeqCst);
            shared.history.record(
                &process,
                OpType::Invoke,
                "write",
                json!({"key": key, "value": value, "region": region}),
            );
            let (kind, result) = if shared.retry.on.load(Ordering::SeqCst) {
                let first = Duration::from_millis(shared.retry.first_timeout_ms.load(Ordering::SeqCst).max(10));
                let regions = shared.state.nodes.len() as u64;
                let urls: Vec<String> =
                    (0..regions).map(|offset| shared.admin_url((region - 1 + offset) % regions + 1)).collect();
                registers::write_retrying(&urls, &shared.token, key, value, first, 6).await
            } else {
                registers::write(&admin, &shared.token, key, value, ADMIN_TIMEOUT).await
            };
            shared.history.record(&process, kind, "write", result);
        } else {
            read_register(&shared, &process, region, key).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
}

pub async fn read_register(shared: &Shared, process: &str, region: u64, key: u64) {
    shared.history.record(process, OpType::Invoke, "read", json!({"key": key, "region": region}));
    let (kind, result) = registers::read(&shared.admin_url(region), &shared.token, key, ADMIN_TIMEOUT).await;
    shared.history.record(process, kind, "read", result);
}

/// The applied index `region` reports (`GET /admin/v1/cluster`), if it answers within 1 s.
async fn applied_index(shared: &Shared, region: u64) -> Option<u64> {
    let url = format!("{}/admin/v1/cluster", shared.admin_url(region));
    let answer = http::request("GET", &url, Some(&shared.token), None, Duration::from_secs(1)).await.ok()?;
    answer.json().ok()?["applied_index"].as_u64()
}

/// One ledger sample of `org` from `region`, with the mock's count at that moment and the region's
/// applied index just before and just after the read (the ledger it shows is the state at some applied
/// index in between: S2's granularity); returns the answer.
pub async fn sample_budget(shared: &Shared, process: &str, org: &str, region: u64) -> Option<Value> {
    shared.history.record(process, OpType::Invoke, "budget", json!({"org": org, "region": region}));
    let applied_before = applied_index(shared, region).await;
    let url = format!("{}/admin/v1/budgets?org={org}", shared.admin_url(region));
    let answer = http::request("GET", &url, Some(&shared.token), None, Duration::from_secs(2)).await;
    let served = shared.served(org);
    let applied_after = applied_index(shared, region).await;
    match answer.and_then(|response| {
        if response.status == 200 {
            response.json()
        } else {
            Err(anyhow::anyhow!("{} {}", response.status, response.body.chars().take(160).collect::<String>()))
        }
    }) {
        Ok(budget) => {
            let value = json!({"org": org, "region": region, "period_start": budget["period_start"],
                "limit": budget["limit"], "used": budget["used"], "held": budget["held"],
                "used_by_node": budget["used_by_node"], "granted_by_node": budget["granted_by_node"],
                "served": served, "applied_before": applied_before, "applied_after": applied_after,
                "ledger_s2": budget["ledger_s2"]});
            shared.history.record(process, OpType::Ok, "budget", value.clone());
            Some(value)
        }
        Err(err) => {
            shared.history.record(process, OpType::Fail, "budget", json!({"org": org, "error": format!("{err:#}")}));
            None
        }
    }
}

/// Samples every budgeted org's ledger from a rotating region, one read at a time, every ~100 ms.
pub async fn sampler(shared: Shared) {
    let budgeted: Vec<String> =
        shared.orgs.iter().filter(|org| org.limit.is_some()).map(|org| org.name.clone()).collect();
    let regions = shared.state.nodes.len() as u64;
    let mut turn = 0u64;
    while !shared.stopped() {
        for org in &budgeted {
            sample_budget(&shared, "sampler", org, turn % regions + 1).await;
            turn += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A progress line every 5 s on stderr.
pub async fn progress(shared: Shared, time_limit_s: u64) {
    while !shared.stopped() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (ok, fail, info) = shared.history.outcome_counts();
        let elapsed = shared.history.started().elapsed().as_secs();
        let width = 30usize;
        let done = ((elapsed as f64 / time_limit_s.max(1) as f64) * width as f64).min(width as f64) as usize;
        let served: Vec<String> =
            shared.orgs.iter().map(|org| format!("{} {}", org.name, shared.served(&org.name).unwrap_or(0))).collect();
        eprintln!(
            "[{}{}] {elapsed:>4}/{time_limit_s} s  ops ok {ok} fail {fail} info {info}  served: {}",
            "#".repeat(done),
            ".".repeat(width - done),
            served.join(", ")
        );
    }
}
