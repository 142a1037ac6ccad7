//! Per-minute rate limits (`tokens_per_minute`, `requests_per_minute`) as per-node shares: with N nodes,
//! each admits at most ⌊limit / N⌋ per fixed one-minute window, so the cluster as a whole never exceeds
//! the limit in any window — without a Raft round trip per request. The stated cost of that bound: with
//! traffic on fewer than N nodes, less than the full limit is usable in a minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct RateWindow {
    /// Minute number (Unix ms / 60 000) the counters belong to.
    minute: Mutex<u64>,
    tokens: AtomicU64,
    requests: AtomicU64,
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow { minute: Mutex::new(0), tokens: AtomicU64::new(0), requests: AtomicU64::new(0) }
    }
}

/// Why a rate limit refused, and when the window resets.
#[derive(Debug, PartialEq, Eq)]
pub struct RateRefusal {
    pub what: &'static str,
    pub retry_after_seconds: u64,
}

impl RateWindow {
    fn roll(&self, now_ms: u64) {
        let minute = now_ms / 60_000;
        let mut current = self.minute.lock().unwrap_or_else(|p| p.into_inner());
        if *current != minute {
            *current = minute;
            self.tokens.store(0, Ordering::Release);
            self.requests.store(0, Ordering::Release);
        }
    }

    /// Counts one request and reserves `tokens` within this node's shares; refuses (and takes nothing)
    /// when either share would be exceeded.
    pub fn admit(
        &self,
        now_ms: u64,
        tokens: u64,
        token_share: Option<u64>,
        request_share: Option<u64>,
    ) -> Result<(), RateRefusal> {
        self.roll(now_ms);
        let retry_after_seconds = (60_000 - now_ms % 60_000).div_ceil(1000);
        if let Some(share) = request_share {
            if self.requests.fetch_add(1, Ordering::AcqRel) >= share {
                self.requests.fetch_sub(1, Ordering::AcqRel);
                return Err(RateRefusal { what: "requests per minute", retry_after_seconds });
            }
        }
        if let Some(share) = token_share {
            // Checked, never wrapping: a request claiming ~2^64 tokens must not reset the window.
            let reserved = self.tokens.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(tokens).filter(|total| *total <= share)
            });
            if reserved.is_err() {
                if request_share.is_some() {
                    self.requests.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(RateRefusal { what: "tokens per minute", retry_after_seconds });
            }
        }
        Ok(())
    }

    /// Replaces a token reservation by the actual use (same window only; a new window starts clean).
    pub fn settle(&self, reserved_at_ms: u64, reserved: u64, actual: u64) {
        let minute = self.minute.lock().map(|m| *m).unwrap_or(0);
        if minute == reserved_at_ms / 60_000 {
            if actual >= reserved {
                let _ = self
                    .tokens
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.saturating_add(actual - reserved)));
            } else {
                let _ = self
                    .tokens
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.saturating_sub(reserved - actual)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_token_count_is_refused_and_never_wraps_the_window() {
        let window = RateWindow::default();
        let t0 = 1_800_000_000_000;
        assert!(window.admit(t0, 900, Some(1_000), None).is_ok());
        assert!(window.admit(t0, u64::MAX - 100, Some(1_000), None).is_err());
        assert!(window.admit(t0, 200, Some(1_000), None).is_err(), "the 900 already used still count");
        window.settle(t0, 900, u64::MAX);
        assert!(window.admit(t0, 1, Some(1_000), None).is_err(), "an overrun saturates, it does not wrap");
    }

    #[test]
    fn shares_are_enforced_per_window_and_reset() {
        let window = RateWindow::default();
        let t0 = 1_800_000_000_000; // a whole minute
        assert!(window.admit(t0, 0, None, Some(2)).is_ok());
        assert!(window.admit(t0, 0, None, Some(2)).is_ok());
        let refused = window.admit(t0 + 500, 0, None, Some(2)).err();
        assert_eq!(refused.map(|r| r.retry_after_seconds), Some(60));
        assert!(window.admit(t0 + 60_000, 0, None, Some(2)).is_ok(), "a new minute starts clean");
    }

    #[test]
    fn token_reservations_settle_to_actual_use() {
        let window = RateWindow::default();
        let t0 = 0;
        assert!(window.admit(t0, 80, Some(100), None).is_ok());
        assert!(window.admit(t0, 30, Some(100), None).is_err());
        window.settle(t0, 80, 10);
        assert!(window.admit(t0, 80, Some(100), None).is_ok());
    }
}
