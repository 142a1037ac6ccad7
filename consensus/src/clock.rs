//! Wall-clock time as the control plane and budget periods see it: one leaf that every floor may use.
//!
//! Tests move it: [`advance_for_tests`] moves the whole process forward (a period rollover for every
//! in-process node at once); a node's own skew is [`ConsensusNode::skew_clock_for_tests`](crate::ConsensusNode).
//! Chaos runs skew a whole process with the environment variable `TOLLGATE_CLOCK_SKEW_MS` (signed
//! milliseconds, read once at the first use; meant for fault injection only, and logged as a warning).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static OFFSET_MS: AtomicU64 = AtomicU64::new(0);
static ENV_SKEW_MS: OnceLock<i64> = OnceLock::new();

fn env_skew_ms() -> i64 {
    *ENV_SKEW_MS.get_or_init(|| {
        let skew = std::env::var("TOLLGATE_CLOCK_SKEW_MS").ok().and_then(|value| value.trim().parse::<i64>().ok());
        if let Some(skew) = skew {
            tracing::warn!(
                skew_ms = skew,
                "TOLLGATE_CLOCK_SKEW_MS is set: this process's clock is skewed (fault injection)"
            );
        }
        skew.unwrap_or(0)
    })
}

/// Unix milliseconds, plus the test offsets.
pub fn wall_ms() -> u64 {
    let system = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    (system + OFFSET_MS.load(Ordering::Relaxed)).saturating_add_signed(env_skew_ms())
}

/// Moves this process's clock forward by `ms`, for tests of period rollover. Only forward: periods never
/// run backwards.
pub fn advance_for_tests(ms: u64) {
    OFFSET_MS.fetch_add(ms, Ordering::Relaxed);
}
