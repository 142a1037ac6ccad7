//! Budget admission on the request path (DESIGN.md §6): each node spends only allowance the Raft ledger
//! granted it. A request reserves its worst case (input upper bound + output cap) from local atomics, with
//! no Raft round trip while the allowance lasts; the gateway then pins `max_tokens` to that cap so the
//! provider cannot exceed it. At the end the reservation settles against the provider's usage. A
//! background loop reports use about once a second, refills before the allowance runs dry, and returns
//! allowance a node is not using. Cut off from the leader, a node spends what it holds and then fails
//! closed.

mod account;
mod rate;
mod usage;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tollgate_consensus::{BudgetSpec, ClusterError, Command, ConsensusNode, Period, Request, Response};

pub use account::LocalAccount;
pub use usage::{UsageAggregator, UsageSink};

use crate::auth::Principal;
use crate::cluster::now_ms;
use crate::config::Price;
use crate::error::{GatewayError, GatewayResult};

#[derive(Debug, Clone)]
pub struct BudgetConfig {
    /// Smallest `max_tokens` worth admitting when the budget cannot cover the requested one.
    pub min_output_tokens: u64,
    /// Smallest grant a node asks for.
    pub min_chunk: u64,
    /// Bound on waiting for a grant on the request path.
    pub grant_timeout: Duration,
    pub report_interval: Duration,
    /// Allowance unused this long goes back to the ledger for other nodes.
    pub idle_release_after: Duration,
    /// Number of nodes sharing budgets (chunks are capped at remaining / (2 × nodes)).
    pub nodes: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            min_output_tokens: 16,
            min_chunk: 1000,
            grant_timeout: Duration::from_secs(2),
            report_interval: Duration::from_secs(1),
            idle_release_after: Duration::from_secs(3),
            nodes: 3,
        }
    }
}

/// One reservation against one account, in that account's units.
pub struct Reservation {
    account: Arc<LocalAccount>,
    units: u64,
}

/// A token reservation inside a per-minute window.
struct RateReservation {
    window: Arc<rate::RateWindow>,
    at_ms: u64,
    tokens: u64,
}

/// What admission decided for one upstream attempt.
pub struct Admission {
    reservations: Vec<Reservation>,
    rate_reservations: Vec<RateReservation>,
    /// The `max_tokens` the upstream request must carry.
    pub output_cap: u64,
    pub input_tokens: u64,
    price: Price,
    settled: bool,
    /// For `x-ratelimit-*`: the tightest budget's limit, remaining estimate and seconds to reset.
    pub limit: u64,
    pub remaining: u64,
    pub reset_seconds: Option<u64>,
}

/// How an attempt ended, as far as billing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The provider's final usage (input, output tokens).
    Reported { input: u64, output: u64 },
    /// The upstream never received the request, or refused it with an error status: it billed nothing.
    NotBilled,
    /// The outcome is not known — a client that went away mid-stream, a stream cut before its final usage,
    /// a timeout after the request was sent. The upstream bills what it generated, which may be up to the
    /// whole reservation: charged in full, or at `at_least` (what was seen delivered) if that is more.
    Unknown { at_least_input: u64, at_least_output: u64 },
}

impl Admission {
    /// Settles the reservation once; later calls do nothing.
    pub fn settle(&mut self, settlement: Settlement) {
        if self.settled {
            return;
        }
        self.settled = true;
        let tokens = |reserved: u64| match settlement {
            Settlement::Reported { input, output } => input + output,
            Settlement::NotBilled => 0,
            Settlement::Unknown { at_least_input, at_least_output } => reserved.max(at_least_input + at_least_output),
        };
        for reservation in &self.reservations {
            let spec = reservation.account.spec();
            let actual = match settlement {
                Settlement::Reported { input, output } => units(&spec, &self.price, input, output),
                Settlement::NotBilled => 0,
                Settlement::Unknown { at_least_input, at_least_output } => {
                    reservation.units.max(units(&spec, &self.price, at_least_input, at_least_output))
                }
            };
            reservation.account.settle(reservation.units, actual);
        }
        for reservation in &self.rate_reservations {
            reservation.window.settle(reservation.at_ms, reservation.tokens, tokens(reservation.tokens));
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Never leak a reservation: an attempt that ended without a verdict is charged in full.
        self.settle(Settlement::Unknown { at_least_input: 0, at_least_output: 0 });
    }
}

/// Ledger units of a request: tokens, or micro-USD for cost budgets (price is USD per million tokens,
/// so tokens × price is exactly micro-USD).
fn units(spec: &BudgetSpec, price: &Price, input: u64, output: u64) -> u64 {
    if spec.is_cost() {
        (input as f64 * price.input + output as f64 * price.output).ceil() as u64
    } else {
        input + output
    }
}

pub struct BudgetManager {
    node_id: u64,
    consensus: ConsensusNode,
    config: BudgetConfig,
    accounts: RwLock<HashMap<(String, u64, Period), Arc<LocalAccount>>>,
    rate_windows: RwLock<HashMap<String, Arc<rate::RateWindow>>>,
    /// This manager, for tasks it spawns (a release must not wait for the next tick).
    me: std::sync::Weak<BudgetManager>,
}

impl BudgetManager {
    pub fn new(node_id: u64, consensus: ConsensusNode, config: BudgetConfig) -> Arc<Self> {
        let manager = Arc::new_cyclic(|me| BudgetManager {
            node_id,
            consensus,
            config,
            accounts: RwLock::new(HashMap::new()),
            rate_windows: RwLock::new(HashMap::new()),
            me: me.clone(),
        });
        manager.spawn_background();
        manager
    }

    /// Budgets that apply to this caller: org, team and key scopes.
    fn applicable(&self, budgets: &HashMap<String, BudgetSpec>, principal: &Principal) -> Vec<BudgetSpec> {
        let mut ids = vec![format!("org:{}", principal.org)];
        if let Some(team) = &principal.team {
            ids.push(format!("org:{}/team:{team}", principal.org));
        }
        ids.push(format!("org:{}/key:{}", principal.org, principal.key_id));
        ids.iter().filter_map(|id| budgets.get(id).cloned()).collect()
    }

    fn account(&self, spec: &BudgetSpec, now: u64) -> Arc<LocalAccount> {
        // Keyed by period kind too: a budget moved from `month` to `day` starts a new local account (with its
        // own period end) while the old one is reported and released by the background loop.
        let key = (spec.scope.id(), spec.period.start_ms(now), spec.period);
        if let Some(account) = self.accounts.read().ok().and_then(|accounts| accounts.get(&key).cloned()) {
            if account.spec_is(spec) {
                return account;
            }
        }
        let mut accounts = self.accounts.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = accounts
            .entry(key.clone())
            .or_insert_with(|| Arc::new(LocalAccount::new(key.0.clone(), key.1, spec.clone())));
        if !entry.spec_is(spec) {
            // The budget changed (e.g. lowered under load). The same account keeps settling in-flight
            // reservations and reporting; a lowered limit puts the unreserved allowance up for release.
            entry.update_spec(spec.clone());
            self.spawn_release_lowered(entry.clone());
        }
        entry.clone()
    }

    /// Called when the applied budgets change: accounts adopt the new specs at once (not at their next
    /// request), and allowance a lowered limit took out of circulation goes back to the ledger right away,
    /// where the other nodes can be granted it.
    pub fn budgets_changed(&self, budgets: &HashMap<String, BudgetSpec>) {
        let accounts: Vec<Arc<LocalAccount>> =
            self.accounts.read().map(|accounts| accounts.values().cloned().collect()).unwrap_or_default();
        for account in accounts {
            let Some(spec) = budgets.get(&account.scope_id) else { continue };
            if spec.period == account.spec().period && !account.spec_is(spec) {
                account.update_spec(spec.clone());
                self.spawn_release_lowered(account);
            }
        }
    }

    fn spawn_release_lowered(&self, account: Arc<LocalAccount>) {
        let Some(manager) = self.me.upgrade() else { return };
        tokio::spawn(async move { manager.release_lowered(&account).await });
    }

    /// Admits one upstream attempt or refuses it (429 budget exhausted, 503 budget service unavailable).
    /// `Ok(None)`: no budget applies.
    pub async fn admit(
        &self,
        budgets: &HashMap<String, BudgetSpec>,
        principal: &Principal,
        price: Price,
        input_tokens: u64,
        wanted_output: u64,
        choices: u64,
    ) -> GatewayResult<Option<Admission>> {
        let specs = self.applicable(budgets, principal);
        if specs.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        // `output_cap` caps each of the `choices`; what is reserved is their total.
        let choices = choices.max(1);
        let min_output = self.config.min_output_tokens.min(wanted_output).max(1);
        let mut output_cap = wanted_output;
        let rate_reservations = self.admit_rates(&specs, now, input_tokens + wanted_output.saturating_mul(choices))?;
        let mut accounts = Vec::with_capacity(specs.len());
        let ledger_specs: Vec<BudgetSpec> = specs.iter().filter(|s| s.limit_units().is_some()).cloned().collect();
        let specs = ledger_specs;
        for spec in &specs {
            let account = self.account(spec, now);
            let full = units(spec, &price, input_tokens, output_cap.saturating_mul(choices));
            let minimum = units(spec, &price, input_tokens, min_output.saturating_mul(choices));
            if account.available() < full as i64 {
                if let Err(err) = self.refill(&account, full).await {
                    // Cut off from the ledger: still serve (with a smaller cap) from what this node holds.
                    if account.available() < minimum as i64 {
                        return Err(err);
                    }
                }
            }
            let available = account.available().max(0) as u64;
            if available < minimum {
                return Err(GatewayError::budget_exhausted(&spec.scope.id()));
            }
            if available < full {
                // No over-refusal: shrink max_tokens to what the allowance covers.
                let within = max_output_within(spec, &price, input_tokens, available) / choices;
                output_cap = output_cap.min(within.max(min_output));
            }
            accounts.push(account);
        }
        let mut reservations: Vec<Reservation> = Vec::with_capacity(accounts.len());
        for (account, spec) in accounts.iter().zip(&specs) {
            let needed = units(spec, &price, input_tokens, output_cap.saturating_mul(choices));
            // Another request may have taken the allowance since the check above: refill and retry
            // rather than refuse while the ledger still has room (no over-refusal under concurrency).
            let mut reserved = account.try_reserve(needed);
            for _ in 0..3 {
                if reserved {
                    break;
                }
                if let Err(err) = self.refill(account, needed).await {
                    for taken in &reservations {
                        taken.account.settle(taken.units, 0);
                    }
                    return Err(err);
                }
                reserved = account.try_reserve(needed);
            }
            if !reserved {
                for taken in &reservations {
                    taken.account.settle(taken.units, 0);
                }
                return Err(GatewayError::budget_exhausted(&spec.scope.id()));
            }
            reservations.push(Reservation { account: account.clone(), units: needed });
        }
        let tightest = accounts.iter().min_by_key(|a| a.remaining_estimate()).cloned();
        let (limit, remaining, reset_seconds) = match &tightest {
            Some(account) => (
                account.spec().limit_units().unwrap_or(0),
                account.remaining_estimate(),
                account.period_end.map(|end| end.saturating_sub(now) / 1000),
            ),
            None => (0, 0, None),
        };
        Ok(Some(Admission {
            reservations,
            rate_reservations,
            output_cap,
            input_tokens,
            price,
            settled: false,
            limit,
            remaining,
            reset_seconds,
        }))
    }

    fn rate_window(&self, scope_id: &str) -> Arc<rate::RateWindow> {
        if let Some(window) = self.rate_windows.read().ok().and_then(|w| w.get(scope_id).cloned()) {
            return window;
        }
        let mut windows = self.rate_windows.write().unwrap_or_else(|p| p.into_inner());
        windows.entry(scope_id.to_owned()).or_default().clone()
    }

    /// Per-minute limits, as this node's share of each (see `rate.rs` for the bound).
    fn admit_rates(&self, specs: &[BudgetSpec], now: u64, tokens: u64) -> GatewayResult<Vec<RateReservation>> {
        let mut reservations: Vec<RateReservation> = Vec::new();
        for spec in specs.iter().filter(|s| s.tokens_per_minute.is_some() || s.requests_per_minute.is_some()) {
            let nodes = self.config.nodes.max(1);
            let window = self.rate_window(&spec.scope.id());
            let token_share = spec.tokens_per_minute.map(|limit| limit / nodes);
            let request_share = spec.requests_per_minute.map(|limit| limit / nodes);
            if let Err(refusal) = window.admit(now, tokens, token_share, request_share) {
                for taken in &reservations {
                    taken.window.settle(taken.at_ms, taken.tokens, 0);
                }
                return Err(GatewayError::rate_limited(&spec.scope.id(), refusal.what, refusal.retry_after_seconds));
            }
            reservations.push(RateReservation {
                window,
                at_ms: now,
                tokens: if token_share.is_some() { tokens } else { 0 },
            });
        }
        Ok(reservations)
    }

    /// Asks the ledger for at least `needed` more (a chunk sized to recent use, capped so one node
    /// cannot hoard what others need). Bounded by `grant_timeout`.
    async fn refill(&self, account: &Arc<LocalAccount>, needed: u64) -> GatewayResult<()> {
        let _guard = match tokio::time::timeout(self.config.grant_timeout, account.grant_lock.lock()).await {
            Ok(guard) => guard,
            Err(_) => return Err(GatewayError::budget_unavailable("timed out waiting for a budget grant")),
        };
        let shortfall = needed as i64 - account.available();
        if shortfall <= 0 {
            return Ok(()); // another request refilled it meanwhile
        }
        let amount = self.chunk_size(account).max(shortfall as u64);
        match self.grant(account, amount, shortfall as u64).await {
            Ok(_) => Ok(()),
            Err(ClusterError::NoQuorum(reason)) | Err(ClusterError::Internal(reason)) => {
                Err(GatewayError::budget_unavailable(&format!("budget authority unreachable: {reason}")))
            }
            Err(err) => Err(GatewayError::budget_unavailable(&err.to_string())),
        }
    }

    fn chunk_size(&self, account: &LocalAccount) -> u64 {
        let recent = account.take_recent();
        let ledger = account.ledger_available.load(std::sync::atomic::Ordering::Relaxed);
        let ledger = if ledger == u64::MAX { account.spec().limit_units().unwrap_or(0) } else { ledger };
        // ~10 s of recent use, at least the minimum, at most remaining / (2N) (strict near exhaustion).
        let rate_chunk = recent.saturating_mul(10).max(self.config.min_chunk);
        rate_chunk.min(ledger / (2 * self.config.nodes.max(1)))
    }

    async fn grant(&self, account: &LocalAccount, amount: u64, min_amount: u64) -> Result<u64, ClusterError> {
        let request = Request {
            request_id: crate::cluster::new_request_id(),
            actor: format!("node-{}", self.node_id),
            at_ms: now_ms(),
            command: Command::Grant {
                scope_id: account.scope_id.clone(),
                period_start: account.period_start,
                node: self.node_id,
                amount,
                min_amount,
            },
        };
        let write = tokio::time::timeout(self.config.grant_timeout, self.consensus.write(request));
        match write.await {
            Ok(Ok(Response::Granted { amount, available, .. })) => {
                account.add_granted(amount);
                account.ledger_available.store(available, std::sync::atomic::Ordering::Relaxed);
                Ok(amount)
            }
            Ok(Ok(Response::Rejected { reason })) => Err(ClusterError::Invalid(reason)),
            Ok(Ok(_)) => Ok(0),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(ClusterError::NoQuorum("grant timed out".into())),
        }
    }

    fn spawn_background(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = self.config.report_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(manager) = weak.upgrade() else {
                    return;
                };
                manager.tick().await;
            }
        });
    }

    /// Reports use, releases idle or expired allowance, forgets finished periods.
    async fn tick(&self) {
        let accounts: Vec<Arc<LocalAccount>> =
            self.accounts.read().map(|accounts| accounts.values().cloned().collect()).unwrap_or_default();
        let now = now_ms();
        for account in accounts {
            self.report(&account).await;
            let expired = account.period_end.is_some_and(|end| now >= end);
            if expired || account.idle_for() >= self.config.idle_release_after {
                self.release(&account).await;
            }
            self.release_lowered(&account).await;
            // Kept until its use is reported: dropping it earlier would forgive that use (and any overrun).
            if expired && account.available() <= 0 && account.fully_reported() {
                if let Ok(mut map) = self.accounts.write() {
                    map.retain(|_, held| !Arc::ptr_eq(held, &account));
                }
            }
        }
    }

    async fn report(&self, account: &LocalAccount) {
        let pending = {
            let mut slot = account.pending_report.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                let delta = account.take_unreported();
                if delta > 0 {
                    *slot = Some((crate::cluster::new_request_id(), delta));
                }
            }
            slot.clone()
        };
        let Some((request_id, delta)) = pending else {
            return;
        };
        let request = Request {
            request_id,
            actor: format!("node-{}", self.node_id),
            at_ms: now_ms(),
            command: Command::Report {
                scope_id: account.scope_id.clone(),
                period_start: account.period_start,
                node: self.node_id,
                delta,
            },
        };
        // Retried with the same id until it lands, so it is counted exactly once.
        if self.consensus.write(request).await.is_ok() {
            if let Ok(mut slot) = account.pending_report.lock() {
                *slot = None;
            }
        }
    }

    async fn release(&self, account: &LocalAccount) {
        let Ok(_guard) = account.grant_lock.try_lock() else {
            return;
        };
        let amount = account.take_unreserved(u64::MAX);
        if amount > 0 && !self.send_release(account, amount).await {
            // Not released: keep it (spending it later is still within the grant).
            account.add_granted(amount);
        }
    }

    /// Hands back allowance a lowered limit took out of circulation; kept out of circulation until it lands.
    async fn release_lowered(&self, account: &LocalAccount) {
        let amount = account.take_pending_release();
        if amount > 0 && !self.send_release(account, amount).await {
            account.restore_pending_release(amount);
        }
    }

    /// Returns `amount` of this node's allowance to the ledger; false if the write did not go through.
    async fn send_release(&self, account: &LocalAccount, amount: u64) -> bool {
        let request = Request {
            request_id: crate::cluster::new_request_id(),
            actor: format!("node-{}", self.node_id),
            at_ms: now_ms(),
            command: Command::Release {
                scope_id: account.scope_id.clone(),
                period_start: account.period_start,
                node: self.node_id,
                amount,
            },
        };
        self.consensus.write(request).await.is_ok()
    }

    /// On clean shutdown: report what was used and hand back what was not.
    pub async fn flush(&self) {
        let accounts: Vec<Arc<LocalAccount>> =
            self.accounts.read().map(|accounts| accounts.values().cloned().collect()).unwrap_or_default();
        for account in accounts {
            self.report(&account).await;
            self.release(&account).await;
            self.release_lowered(&account).await;
        }
    }
}

/// The largest output a request can have within `available` units.
fn max_output_within(spec: &BudgetSpec, price: &Price, input: u64, available: u64) -> u64 {
    if spec.is_cost() {
        if price.output <= 0.0 {
            return u64::MAX;
        }
        let left = available as f64 - input as f64 * price.input;
        (left / price.output).floor().max(0.0) as u64
    } else {
        available.saturating_sub(input)
    }
}

#[cfg(test)]
#[path = "settle_tests.rs"]
mod settle_tests;
