//! Wall-clock time as the control plane and budget periods see it: one leaf that every floor may use.
//!
//! Tests move it: [`advance_for_tests`] moves the whole process forward (a period rollover for every
//! in-process node at once); a node's own skew is [`ConsensusNode::skew_clock_for_tests`](crate::ConsensusNode).

use std::sync::atomic::{AtomicU64, Ordering};

static OFFSET_MS: AtomicU64 = AtomicU64::new(0);

/// Unix milliseconds, plus the test offset.
pub fn wall_ms() -> u64 {
    let system = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    system + OFFSET_MS.load(Ordering::Relaxed)
}

/// Moves this process's clock forward by `ms`, for tests of period rollover. Only forward: periods never
/// run backwards.
pub fn advance_for_tests(ms: u64) {
    OFFSET_MS.fetch_add(ms, Ordering::Relaxed);
}
