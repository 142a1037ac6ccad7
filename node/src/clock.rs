//! Clocks, one floor above nothing: every module that stamps or measures time takes it from here.
//!
//! - [`monotonic_ms`]: deadlines, breakers, EWMAs and probe spacing on this node; never goes back.
//! - [`wall_ms`]: the system clock, for timestamps that cross nodes as hints (GPU samples in gossip).
//! - [`ledger_ms`]: the clock budget periods and usage rows are stamped with
//!   ([`tollgate_consensus::clock`]; the leader's stamp is what counts, tests may skew or advance it).

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds on a process-wide monotonic clock (never 0, so 0 can mean "unset").
pub fn monotonic_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Milliseconds since the Unix epoch: timestamps that cross nodes (GPU samples).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Wall-clock milliseconds as budget periods and usage rows see them (see [`tollgate_consensus::clock`]).
pub fn ledger_ms() -> u64 {
    tollgate_consensus::clock::wall_ms()
}

/// Moves this process's ledger clock forward by `ms`, for tests of period rollover (an hour passes at once
/// for every in-process node, leaders included). Only forward: periods never run backwards.
pub fn advance_ledger_clock_for_tests(ms: u64) {
    tollgate_consensus::clock::advance_for_tests(ms);
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-05T11:52:03.123Z`), for logs.
pub fn rfc3339_ms(t: std::time::SystemTime) -> String {
    let ms = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = tollgate_consensus::ledger::civil_from_days(days);
    let (hour, minute, second, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

#[cfg(test)]
mod rfc3339_tests {
    #[test]
    fn formats_utc_with_milliseconds() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_793_491_200_123);
        assert_eq!(super::rfc3339_ms(at), "2026-11-01T00:00:00.123Z");
        assert_eq!(super::rfc3339_ms(std::time::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
