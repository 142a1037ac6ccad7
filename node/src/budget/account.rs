//! One scope's allowance on this node for one period: lock-free reservation on the request path.
//!
//! The account is one *incarnation* in the ledger (`tollgate_consensus::ledger::Account::incarnations`):
//! everything it tells the ledger is a running total — granted (as observed), used, released — so a
//! message sent twice, or answered after the node stopped waiting, is never counted twice, and a grant
//! whose answer was lost is picked up from the applied ledger.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tollgate_consensus::BudgetSpec;

pub struct LocalAccount {
    pub scope_id: String,
    pub period_start: u64,
    pub period_end: Option<u64>,
    /// This account's identity in the ledger: unique per process start and per limit lowered under it.
    pub incarnation: u64,
    /// The budget as this node last saw it; replaced in place when an admin raises the limit.
    spec: ArcSwap<BudgetSpec>,
    /// The limit was lowered under this account: nothing it gets back (refunds of requests in flight,
    /// grants answered late) becomes spendable again — it all goes back to the ledger, and a new
    /// incarnation serves new requests with grants made under the new limit.
    draining: AtomicBool,
    /// Granted and not reserved (negative after a usage overrun: debt paid before the next admission).
    available: AtomicI64,
    /// Units reserved by requests in flight.
    reserved: AtomicU64,
    /// The incarnation's granted total as last observed (from a grant's answer or the applied ledger).
    granted_total: AtomicU64,
    /// Units consumed (settled), and how much of that the ledger has confirmed.
    consumed_total: AtomicU64,
    reported_total: AtomicU64,
    /// Units handed back (decided: never spendable again), and how much of that the ledger has confirmed.
    released_total: AtomicU64,
    release_confirmed: AtomicU64,
    /// Units consumed since the last refill decision (for sizing chunks by recent rate).
    recent: AtomicU64,
    /// The ledger's unallocated remainder as of our last grant (`u64::MAX` before the first).
    pub ledger_available: AtomicU64,
    /// One grant in flight at a time.
    pub grant_lock: tokio::sync::Mutex<()>,
    last_used: Mutex<Instant>,
}

impl LocalAccount {
    pub fn new(scope_id: String, period_start: u64, spec: BudgetSpec, incarnation: u64) -> Self {
        LocalAccount {
            period_end: spec.period.end_ms(period_start),
            scope_id,
            period_start,
            incarnation,
            spec: ArcSwap::from_pointee(spec),
            draining: AtomicBool::new(false),
            available: AtomicI64::new(0),
            reserved: AtomicU64::new(0),
            granted_total: AtomicU64::new(0),
            consumed_total: AtomicU64::new(0),
            reported_total: AtomicU64::new(0),
            released_total: AtomicU64::new(0),
            release_confirmed: AtomicU64::new(0),
            recent: AtomicU64::new(0),
            ledger_available: AtomicU64::new(u64::MAX),
            grant_lock: tokio::sync::Mutex::new(()),
            last_used: Mutex::new(Instant::now()),
        }
    }

    pub fn spec(&self) -> Arc<BudgetSpec> {
        self.spec.load_full()
    }

    pub fn spec_is(&self, spec: &BudgetSpec) -> bool {
        **self.spec.load() == *spec
    }

    pub fn update_spec(&self, spec: BudgetSpec) {
        self.spec.store(Arc::new(spec));
    }

    /// Whether `spec` lowers this account's limit (then the account must drain, see [`start_draining`]).
    pub fn is_lowered_by(&self, spec: &BudgetSpec) -> bool {
        match (self.spec.load().limit_units(), spec.limit_units()) {
            (Some(old), Some(new)) => new < old,
            (None, Some(_)) => true,
            _ => false,
        }
    }

    /// The limit was lowered: hand back everything unreserved now, and everything that comes back later.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.release_unreserved();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn available(&self) -> i64 {
        self.available.load(Ordering::Acquire)
    }

    /// Takes `units` from the local allowance if it is there.
    pub fn try_reserve(&self, units: u64) -> bool {
        let units = units as i64;
        let mut current = self.available.load(Ordering::Acquire);
        loop {
            if current < units {
                return false;
            }
            match self.available.compare_exchange_weak(current, current - units, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.reserved.fetch_add(units as u64, Ordering::AcqRel);
                    if let Ok(mut last) = self.last_used.lock() {
                        *last = Instant::now();
                    }
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// The ledger says this incarnation has been granted `total` in all: adds what this node has not seen
    /// yet (to the allowance, or back to the ledger when draining). Returns what was new.
    pub fn observe_granted_total(&self, total: u64) -> u64 {
        let previous = self.granted_total.fetch_max(total, Ordering::AcqRel);
        let new = total.saturating_sub(previous);
        if new > 0 {
            if self.is_draining() {
                self.released_total.fetch_add(new, Ordering::AcqRel);
            } else {
                self.available.fetch_add(new as i64, Ordering::AcqRel);
            }
        }
        new
    }

    pub fn granted_total(&self) -> u64 {
        self.granted_total.load(Ordering::Acquire)
    }

    /// Hands back everything unreserved (for a release); returns what was taken. It is never spendable on
    /// this node again, whether or not the release reaches the ledger at once.
    pub fn release_unreserved(&self) -> u64 {
        let mut current = self.available.load(Ordering::Acquire);
        loop {
            let take = current.max(0);
            if take == 0 {
                return 0;
            }
            match self.available.compare_exchange_weak(current, current - take, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.released_total.fetch_add(take as u64, Ordering::AcqRel);
                    return take as u64;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Settles a reservation: unused units return to the allowance (or to the ledger when draining), an
    /// overrun becomes debt.
    pub fn settle(&self, reserved: u64, actual: u64) {
        let _ = self.reserved.fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| Some(r.saturating_sub(reserved)));
        self.consumed_total.fetch_add(actual, Ordering::AcqRel);
        self.recent.fetch_add(actual, Ordering::Relaxed);
        if self.is_draining() {
            let refund = reserved.saturating_sub(actual);
            self.released_total.fetch_add(refund, Ordering::AcqRel);
            let overrun = actual.saturating_sub(reserved);
            self.available.fetch_sub(overrun as i64, Ordering::AcqRel);
        } else {
            self.available.fetch_add(reserved as i64 - actual as i64, Ordering::AcqRel);
        }
    }

    /// The used total to report, if the ledger has not confirmed it yet.
    pub fn report_due(&self) -> Option<u64> {
        let consumed = self.consumed_total.load(Ordering::Acquire);
        (consumed > self.reported_total.load(Ordering::Acquire)).then_some(consumed)
    }

    pub fn confirm_report(&self, total: u64) {
        self.reported_total.fetch_max(total, Ordering::AcqRel);
    }

    /// The released total to send, if the ledger has not confirmed it yet.
    pub fn release_due(&self) -> Option<u64> {
        let released = self.released_total.load(Ordering::Acquire);
        (released > self.release_confirmed.load(Ordering::Acquire)).then_some(released)
    }

    pub fn confirm_release(&self, total: u64) {
        self.release_confirmed.fetch_max(total, Ordering::AcqRel);
    }

    /// Nothing in flight, every use reported and every release confirmed: the account can be forgotten
    /// without the ledger losing anything.
    pub fn is_settled(&self) -> bool {
        self.reserved.load(Ordering::Acquire) == 0 && self.report_due().is_none() && self.release_due().is_none()
    }

    pub fn take_recent(&self) -> u64 {
        self.recent.swap(0, Ordering::Relaxed)
    }

    pub fn idle_for(&self) -> std::time::Duration {
        self.last_used.lock().map(|last| last.elapsed()).unwrap_or_default()
    }

    /// What a client may still spend as far as this node knows: its allowance plus the ledger's remainder.
    pub fn remaining_estimate(&self) -> u64 {
        let ledger = self.ledger_available.load(Ordering::Relaxed);
        let ledger = if ledger == u64::MAX { self.spec.load().limit_units().unwrap_or(0) } else { ledger };
        ledger.saturating_add(self.available().max(0) as u64)
    }
}

#[cfg(test)]
#[path = "account_tests.rs"]
mod tests;
