//! Budget admission on the request path (docs/ARCHITECTURE.md, "Budget invariants"): each node spends only allowance the Raft ledger
//! granted it. A request reserves its worst case (input upper bound + output cap) from local atomics, with
//! no Raft round trip while the allowance lasts; the gateway then pins `max_tokens` to that cap so the
//! provider cannot exceed it. At the end the reservation settles against the provider's usage. A
//! background loop reports use about once a second, refills before the allowance runs dry, and returns
//! allowance a node is not using. Cut off from the leader, a node spends what it holds and then fails
//! closed.

mod account;
mod rate;
mod sync;
mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tollgate_consensus::{BudgetSpec, ConsensusNode, Period};

pub use account::LocalAccount;
pub use usage::{UsageAggregator, UsageSink};

use crate::auth::Principal;
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
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            min_output_tokens: 16,
            min_chunk: 1000,
            grant_timeout: Duration::from_secs(2),
            report_interval: Duration::from_secs(1),
            idle_release_after: Duration::from_secs(3),
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
    /// Choices the provider generates, each up to `output_cap`.
    choices: u64,
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
    /// When the provider already reported the input count (Anthropic's `message_start`), the input part of
    /// the reservation is that count instead of the free bound: the output may still reach its cap.
    Unknown { at_least_input: u64, at_least_output: u64, provider_input: Option<u64> },
}

impl Admission {
    /// Settles the reservation once; later calls do nothing.
    pub fn settle(&mut self, settlement: Settlement) {
        if self.settled {
            return;
        }
        self.settled = true;
        let tokens = |reserved: u64| match settlement {
            Settlement::Reported { input, output } => input.saturating_add(output),
            Settlement::NotBilled => 0,
            Settlement::Unknown { at_least_input, at_least_output, .. } => {
                reserved.max(at_least_input.saturating_add(at_least_output))
            }
        };
        let cap_output = self.output_cap.saturating_mul(self.choices);
        for reservation in &self.reservations {
            let spec = reservation.account.spec();
            let actual = match settlement {
                Settlement::Reported { input, output } => units(&spec, &self.price, input, output),
                Settlement::NotBilled => 0,
                Settlement::Unknown { at_least_input, at_least_output, provider_input } => {
                    let ceiling = match provider_input {
                        Some(input) if input <= self.input_tokens => units(&spec, &self.price, input, cap_output),
                        _ => reservation.units,
                    };
                    ceiling.max(units(&spec, &self.price, at_least_input, at_least_output))
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
        self.settle(Settlement::Unknown { at_least_input: 0, at_least_output: 0, provider_input: None });
    }
}

/// Ledger units of a request: tokens, or micro-USD for cost budgets (price is USD per million tokens,
/// so tokens × price is exactly micro-USD).
fn units(spec: &BudgetSpec, price: &Price, input: u64, output: u64) -> u64 {
    if spec.is_cost() {
        // `as` saturates: a cost beyond u64 is u64::MAX, never a wrapped small number.
        (input as f64 * price.input + output as f64 * price.output).ceil() as u64
    } else {
        input.saturating_add(output)
    }
}

pub struct BudgetManager {
    node_id: u64,
    consensus: ConsensusNode,
    config: BudgetConfig,
    /// The account serving new requests, per (scope, period start, period kind).
    accounts: RwLock<HashMap<AccountKey, Arc<LocalAccount>>>,
    /// Accounts a lowered limit replaced: kept until everything they hold or get back is returned.
    draining: Mutex<Vec<Arc<LocalAccount>>>,
    /// The next incarnation (see [`LocalAccount::incarnation`]): starts at this process's start time in
    /// microseconds, so a restarted node's incarnations are newer than its previous life's.
    next_incarnation: AtomicU64,
    /// This process's first incarnation: this node's incarnations below it in the ledger are a previous
    /// life's (see `bill_previous_lives`).
    process_floor: u64,
    rate_windows: RwLock<HashMap<String, Arc<rate::RateWindow>>>,
    /// The hour (start, by this node's clock) this node last told the ledger its clock in; 0: not yet.
    clock_reported_hour: AtomicU64,
    /// This manager, for tasks it spawns (a release must not wait for the next tick).
    me: std::sync::Weak<BudgetManager>,
}

type AccountKey = (String, u64, Period);

impl BudgetManager {
    pub fn new(node_id: u64, consensus: ConsensusNode, config: BudgetConfig) -> Arc<Self> {
        let process_floor = consensus.now_ms().saturating_mul(1000);
        let manager = Arc::new_cyclic(|me| BudgetManager {
            node_id,
            next_incarnation: AtomicU64::new(process_floor),
            process_floor,
            consensus,
            config,
            accounts: RwLock::new(HashMap::new()),
            draining: Mutex::new(Vec::new()),
            rate_windows: RwLock::new(HashMap::new()),
            clock_reported_hour: AtomicU64::new(0),
            me: me.clone(),
        });
        manager.spawn_background();
        manager
    }

    /// Allowance this node holds unreserved, per scope id (its current accounts), for the metrics.
    pub fn local_allowance(&self) -> Vec<(String, i64)> {
        let accounts = self.accounts.read().map(|accounts| accounts.values().cloned().collect::<Vec<_>>());
        accounts.unwrap_or_default().iter().map(|account| (account.scope_id.clone(), account.available())).collect()
    }

    /// Budgets that apply to this caller: org, team and key scopes.
    fn applicable(&self, budgets: &HashMap<String, BudgetSpec>, principal: &Principal) -> Vec<BudgetSpec> {
        let mut ids = vec![format!("org:{}", principal.org)];
        if let Some(team) = &principal.team {
            ids.push(format!("org:{}/team:{team}", principal.org));
            // A key budget may be stated with the key's team too (`budgets set --org --team --key-id`).
            ids.push(format!("org:{}/team:{team}/key:{}", principal.org, principal.key_id));
        }
        ids.push(format!("org:{}/key:{}", principal.org, principal.key_id));
        ids.iter().filter_map(|id| budgets.get(id).cloned()).collect()
    }

    /// A new local account: an incarnation newer than any this node has in the applied ledger (its clock
    /// may have gone back since its previous life).
    fn new_account(&self, key: &AccountKey, spec: &BudgetSpec) -> Arc<LocalAccount> {
        let state = self.consensus.current();
        let newest_known = state
            .config
            .ledger
            .accounts
            .get(&key.0)
            .and_then(|periods| periods.get(&key.1))
            .and_then(|account| account.incarnations.get(&self.node_id))
            .and_then(|incarnations| incarnations.keys().next_back().copied())
            .unwrap_or(0);
        self.next_incarnation.fetch_max(newest_known + 1, Ordering::AcqRel);
        let incarnation = self.next_incarnation.fetch_add(1, Ordering::AcqRel);
        Arc::new(LocalAccount::new(key.0.clone(), key.1, spec.clone(), incarnation))
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
        match accounts.get(&key).cloned() {
            None => {
                let account = self.new_account(&key, spec);
                accounts.insert(key, account.clone());
                account
            }
            Some(account) if account.spec_is(spec) => account,
            Some(account) => self.adopt_spec(&mut accounts, key, account, spec),
        }
    }

    /// A changed budget. A raised limit is adopted in place. A lowered one binds at once: the account
    /// drains (everything it holds or gets back goes to the ledger) and a new incarnation, which can only
    /// be granted within the new limit, serves new requests. So does a budget created again.
    fn adopt_spec(
        &self,
        accounts: &mut HashMap<AccountKey, Arc<LocalAccount>>,
        key: AccountKey,
        account: Arc<LocalAccount>,
        spec: &BudgetSpec,
    ) -> Arc<LocalAccount> {
        // A budget deleted and created again (a new epoch) starts from nothing, like a lowered one.
        if !account.is_lowered_by(spec) && account.spec().epoch == spec.epoch {
            account.update_spec(spec.clone());
            return account;
        }
        account.start_draining();
        self.draining.lock().unwrap_or_else(|p| p.into_inner()).push(account.clone());
        let fresh = self.new_account(&key, spec);
        accounts.insert(key, fresh.clone());
        self.spawn_sync(account);
        fresh
    }

    /// Called when the applied budgets change: accounts adopt the new specs at once (not at their next
    /// request); a deleted budget's accounts are forgotten (its ledger accounts are gone too, and a budget
    /// created again under the same scope starts from nothing).
    pub fn budgets_changed(&self, budgets: &HashMap<String, BudgetSpec>) {
        let mut accounts = self.accounts.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys: Vec<AccountKey> = accounts.keys().cloned().collect();
        for key in keys {
            let Some(account) = accounts.get(&key).cloned() else { continue };
            match budgets.get(&account.scope_id) {
                None => {
                    accounts.remove(&key);
                }
                Some(spec) if spec.period == key.2 && !account.spec_is(spec) => {
                    self.adopt_spec(&mut accounts, key, account, spec);
                }
                Some(_) => {}
            }
        }
    }

    /// Syncs one account with the ledger now rather than at the next tick.
    fn spawn_sync(&self, account: Arc<LocalAccount>) {
        let Some(manager) = self.me.upgrade() else { return };
        tokio::spawn(async move { manager.sync_account(&account).await });
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
        let now = self.consensus.now_ms();
        // `output_cap` caps each of the `choices`; what is reserved is their total.
        let choices = choices.max(1);
        let min_output = self.config.min_output_tokens.min(wanted_output).max(1);
        let rate_reservations =
            self.admit_rates(&specs, now, input_tokens.saturating_add(wanted_output.saturating_mul(choices)))?;
        let specs: Vec<BudgetSpec> = specs.iter().filter(|s| s.limit_units().is_some()).cloned().collect();
        let ask = Ask { price, input_tokens, choices, min_output };
        let reserved = match self.cap_output(&specs, &ask, wanted_output, now).await {
            Ok((accounts, output_cap)) => {
                self.reserve_all(&accounts, &specs, &ask, output_cap).await.map(|r| (accounts, output_cap, r))
            }
            Err(err) => Err(err),
        };
        let (accounts, output_cap, reservations) = match reserved {
            Ok(reserved) => reserved,
            Err(err) => {
                // Refused by a budget: the request takes nothing from the per-minute windows either.
                for taken in &rate_reservations {
                    taken.window.settle(taken.at_ms, taken.tokens, 0);
                }
                return Err(err);
            }
        };
        // The tightest account speaks for the request in the rate-limit headers.
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
            choices,
            price,
            settled: false,
            limit,
            remaining,
            reset_seconds,
        }))
    }

    /// Each account's allowance checked (refilled from the ledger when short) and the output cap shrunk
    /// to what every account covers, never below `min_output` (no over-refusal). Cut off from the ledger, a
    /// node still serves from what it holds.
    async fn cap_output(
        &self,
        specs: &[BudgetSpec],
        ask: &Ask,
        wanted_output: u64,
        now: u64,
    ) -> GatewayResult<(Vec<Arc<LocalAccount>>, u64)> {
        let mut output_cap = wanted_output;
        let mut accounts = Vec::with_capacity(specs.len());
        for spec in specs {
            let account = self.account(spec, now);
            let full = ask.units(spec, output_cap);
            let minimum = ask.units(spec, ask.min_output);
            if account.available() < full as i64 {
                let refilled = match self.refill(&account, full).await {
                    // The whole ask (a default max_tokens above a small budget) may be more than the ledger
                    // can grant at all, while the least the request can run with is not: ask for that.
                    Ok(()) if account.available() < minimum as i64 => self.refill(&account, minimum).await,
                    other => other,
                };
                if let Err(err) = refilled {
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
                let within = max_output_within(spec, &ask.price, ask.input_tokens, available) / ask.choices;
                output_cap = output_cap.min(within.max(ask.min_output));
            }
            accounts.push(account);
        }
        Ok((accounts, output_cap))
    }

    /// Reserves the request's units on every account, or none: another request may have taken the
    /// allowance since the check, so a failed reservation refills and retries (no over-refusal under
    /// concurrency) before it gives back what it took and refuses.
    async fn reserve_all(
        &self,
        accounts: &[Arc<LocalAccount>],
        specs: &[BudgetSpec],
        ask: &Ask,
        output_cap: u64,
    ) -> GatewayResult<Vec<Reservation>> {
        let mut reservations: Vec<Reservation> = Vec::with_capacity(accounts.len());
        let give_back = |reservations: &[Reservation]| {
            for taken in reservations {
                taken.account.settle(taken.units, 0);
            }
        };
        for (account, spec) in accounts.iter().zip(specs) {
            let needed = ask.units(spec, output_cap);
            let mut reserved = account.try_reserve(needed);
            for _ in 0..3 {
                if reserved {
                    break;
                }
                if let Err(err) = self.refill(account, needed).await {
                    give_back(&reservations);
                    return Err(err);
                }
                reserved = account.try_reserve(needed);
            }
            if !reserved {
                give_back(&reservations);
                return Err(GatewayError::budget_exhausted(&spec.scope.id()));
            }
            reservations.push(Reservation { account: account.clone(), units: needed });
        }
        Ok(reservations)
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
            let nodes = self.consensus.member_count().max(1);
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

/// What one request asks of its budgets: its price, prompt, and how many choices share the output cap.
struct Ask {
    price: Price,
    input_tokens: u64,
    choices: u64,
    min_output: u64,
}

impl Ask {
    /// Units (tokens or micro-USD) of the prompt plus `output_cap` for each choice.
    fn units(&self, spec: &BudgetSpec, output_cap: u64) -> u64 {
        units(spec, &self.price, self.input_tokens, output_cap.saturating_mul(self.choices))
    }
}

#[cfg(test)]
#[path = "settle_tests.rs"]
mod settle_tests;
