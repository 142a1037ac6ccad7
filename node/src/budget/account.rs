//! One scope's allowance on this node for one period: lock-free reservation on the request path.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use tollgate_consensus::BudgetSpec;

pub struct LocalAccount {
    pub scope_id: String,
    pub period_start: u64,
    pub period_end: Option<u64>,
    /// The budget as this node last saw it; replaced in place when an admin changes the limit.
    spec: ArcSwap<BudgetSpec>,
    /// Allowance taken out of circulation after the limit was lowered, waiting to go back to the ledger.
    /// Never spendable again on this node (even if the release cannot be sent yet).
    pending_release: AtomicU64,
    /// Granted to this node and not yet reserved (may go negative after a usage overrun: debt).
    available: AtomicI64,
    /// Consumption not yet reported to the ledger.
    unreported: AtomicU64,
    /// Units consumed since the last refill decision (for sizing chunks by recent rate).
    recent: AtomicU64,
    /// The ledger's unallocated remainder as of our last grant (`u64::MAX` before the first).
    pub ledger_available: AtomicU64,
    /// One grant in flight at a time.
    pub grant_lock: tokio::sync::Mutex<()>,
    /// A report sent but not confirmed: retried with the same request id so it is counted once.
    pub pending_report: Mutex<Option<(String, u64)>>,
    last_used: Mutex<Instant>,
}

impl LocalAccount {
    pub fn new(scope_id: String, period_start: u64, spec: BudgetSpec) -> Self {
        LocalAccount {
            period_end: spec.period.end_ms(period_start),
            scope_id,
            period_start,
            spec: ArcSwap::from_pointee(spec),
            pending_release: AtomicU64::new(0),
            available: AtomicI64::new(0),
            unreported: AtomicU64::new(0),
            recent: AtomicU64::new(0),
            ledger_available: AtomicU64::new(u64::MAX),
            grant_lock: tokio::sync::Mutex::new(()),
            pending_report: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        }
    }

    pub fn spec(&self) -> Arc<BudgetSpec> {
        self.spec.load_full()
    }

    pub fn spec_is(&self, spec: &BudgetSpec) -> bool {
        **self.spec.load() == *spec
    }

    /// Adopts a changed budget. A lowered limit takes this node's unreserved allowance out of circulation at
    /// once (see [`take_pending_release`](Self::take_pending_release)): spending it could pass the new limit.
    pub fn update_spec(&self, spec: BudgetSpec) {
        let lowered = match (self.spec.load().limit_units(), spec.limit_units()) {
            (Some(old), Some(new)) => new < old,
            (None, Some(_)) => true,
            _ => false,
        };
        self.spec.store(Arc::new(spec));
        if lowered {
            let taken = self.take_unreserved(u64::MAX);
            self.pending_release.fetch_add(taken, Ordering::AcqRel);
        }
    }

    /// Allowance to hand back to the ledger because the limit was lowered.
    pub fn take_pending_release(&self) -> u64 {
        self.pending_release.swap(0, Ordering::AcqRel)
    }

    /// A release that could not be sent: keep it out of circulation and try again later.
    pub fn restore_pending_release(&self, units: u64) {
        self.pending_release.fetch_add(units, Ordering::AcqRel);
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
                    if let Ok(mut last) = self.last_used.lock() {
                        *last = Instant::now();
                    }
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    pub fn add_granted(&self, units: u64) {
        self.available.fetch_add(units as i64, Ordering::AcqRel);
    }

    /// Takes back up to `units` of unreserved allowance (for a release); returns what was taken.
    pub fn take_unreserved(&self, units: u64) -> u64 {
        let cap = units.min(i64::MAX as u64) as i64;
        let mut current = self.available.load(Ordering::Acquire);
        loop {
            let take = current.clamp(0, cap);
            if take == 0 {
                return 0;
            }
            match self.available.compare_exchange_weak(current, current - take, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return take as u64,
                Err(actual) => current = actual,
            }
        }
    }

    /// Settles a reservation: unused units return to the allowance, an overrun becomes debt.
    pub fn settle(&self, reserved: u64, actual: u64) {
        self.available.fetch_add(reserved as i64 - actual as i64, Ordering::AcqRel);
        self.unreported.fetch_add(actual, Ordering::AcqRel);
        self.recent.fetch_add(actual, Ordering::Relaxed);
    }

    /// All use is reported and confirmed by the ledger.
    pub fn fully_reported(&self) -> bool {
        self.unreported.load(Ordering::Acquire) == 0
            && self.pending_report.lock().map(|pending| pending.is_none()).unwrap_or(false)
    }

    pub fn take_unreported(&self) -> u64 {
        self.unreported.swap(0, Ordering::AcqRel)
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
mod tests {
    use super::*;
    use tollgate_consensus::{Period, Scope};

    fn account() -> LocalAccount {
        let spec = BudgetSpec {
            scope: Scope { org: "a".into(), team: None, key_id: None },
            limit_tokens: Some(1000),
            limit_cost: None,
            period: Period::Day,
            tokens_per_minute: None,
            requests_per_minute: None,
        };
        LocalAccount::new("org:a".into(), 0, spec)
    }

    #[test]
    fn reservations_never_take_more_than_is_there() {
        let account = account();
        account.add_granted(100);
        assert!(account.try_reserve(60));
        assert!(!account.try_reserve(60));
        assert!(account.try_reserve(40));
        assert_eq!(account.available(), 0);
    }

    #[test]
    fn settle_returns_the_unused_part_and_records_debt() {
        let account = account();
        account.add_granted(100);
        assert!(account.try_reserve(100));
        account.settle(100, 30);
        assert_eq!(account.available(), 70);
        assert!(account.try_reserve(70));
        account.settle(70, 90);
        assert_eq!(account.available(), -20, "overrun is debt paid before the next admission");
        assert!(!account.try_reserve(1));
        assert_eq!(account.take_unreported(), 120);
    }

    #[test]
    fn taking_everything_back_works_with_any_bound() {
        let account = account();
        assert_eq!(account.take_unreserved(u64::MAX), 0);
        account.add_granted(50);
        assert_eq!(account.take_unreserved(u64::MAX), 50);
        account.add_granted(50);
        assert_eq!(account.take_unreserved(20), 20);
    }

    #[test]
    fn concurrent_reservations_are_exact() {
        let account = std::sync::Arc::new(account());
        account.add_granted(10_000);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let account = account.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| account.try_reserve(1)).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        assert_eq!(total, 10_000);
    }
}
