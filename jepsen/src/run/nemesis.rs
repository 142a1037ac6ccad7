//! Faults, as a schedule drawn from the seed before the run (kinds, start times, durations and a choice
//! number per fault), then applied to whatever the cluster looks like at that moment (e.g. whichever node
//! leads when `partition-leader` starts). Every action is recorded in the history (process `nemesis`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Cut every link of the leader's region.
    PartitionLeader,
    /// Cut every link of one follower's region.
    PartitionFollower,
    /// Cut one link (both directions) between two regions; the third still sees both.
    CutLink,
    /// `kill -9` a node (the leader or a follower), restart it on its data directory after the window.
    Kill,
    /// `kill -9` the leader while grants are in flight to it (a burst of budgeted requests on every region
    /// makes the nodes refill; the kill lands 15-60 ms later), restart it after the window.
    KillLeaderGranting,
    /// SIGSTOP a node past the election timeout, then SIGCONT.
    Pause,
    /// Isolate a random region, heal, isolate another, … every 0.3-1.5 s.
    Flap,
    /// Cut the link between the leader and one follower: the other follower sees both sides.
    Bridge,
    /// Restart one node with `TOLLGATE_CLOCK_SKEW_MS` (± one `day` period, or a few seconds), then restart
    /// it without.
    ClockSkew,
    /// Lower `acme`'s limit under load to a little above what it has used (`PUT /admin/v1/budgets`).
    BudgetLower,
    /// The mock upstreams abort streams mid-way, stall, omit usage or answer late; then behave again.
    UpstreamFaults,
    /// Config writes get timeouts shorter than a forwarded write and are retried with the same
    /// `Idempotency-Key` on other regions.
    IdempotentRetry,
    /// The budget period rolls over while the leader's or a follower's region is cut off: the whole
    /// cluster runs on a clock shifted (`TOLLGATE_CLOCK_SKEW_MS` on every node from the start) so that a
    /// `day` boundary falls in the middle of this fault's window. At most once per run.
    PeriodRollover,
    /// One node's fsyncs (and writes) of its data directory slowed by an `LD_PRELOAD` shim for the window.
    SlowDisk,
}

pub const ALL: [Kind; 14] = [
    Kind::PartitionLeader,
    Kind::PartitionFollower,
    Kind::CutLink,
    Kind::Kill,
    Kind::KillLeaderGranting,
    Kind::Pause,
    Kind::Flap,
    Kind::Bridge,
    Kind::ClockSkew,
    Kind::BudgetLower,
    Kind::UpstreamFaults,
    Kind::IdempotentRetry,
    Kind::PeriodRollover,
    Kind::SlowDisk,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::PartitionLeader => "partition-leader",
            Kind::PartitionFollower => "partition-follower",
            Kind::CutLink => "cut-link",
            Kind::Kill => "kill",
            Kind::KillLeaderGranting => "kill-leader-granting",
            Kind::Pause => "pause",
            Kind::Flap => "flap",
            Kind::Bridge => "bridge",
            Kind::ClockSkew => "clock-skew",
            Kind::BudgetLower => "budget-lower",
            Kind::UpstreamFaults => "upstream-faults",
            Kind::IdempotentRetry => "idempotent-retry",
            Kind::PeriodRollover => "period-rollover",
            Kind::SlowDisk => "slow-disk",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Kind> {
        ALL.iter().copied().find(|kind| kind.name() == text).ok_or_else(|| {
            let names: Vec<&str> = ALL.iter().map(|kind| kind.name()).collect();
            anyhow::anyhow!("unknown nemesis `{text}`; one of {}, `mixed` (all of them) or `none`", names.join(", "))
        })
    }
}

/// `partition-leader,kill` or `mixed` → the kinds to draw from (no duplicates, order kept); `none` → no
/// faults at all (a baseline: utilisation and over-billing without faults).
pub fn parse_list(text: &str) -> anyhow::Result<Vec<Kind>> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut kinds = Vec::new();
    for part in text.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let more = if part == "mixed" { ALL.to_vec() } else { vec![part.parse()?] };
        for kind in more {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    if kinds.is_empty() {
        bail!("--nemesis needs at least one name (or `mixed`)");
    }
    Ok(kinds)
}

/// One planned fault.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub kind: Kind,
    /// Seconds after the workload starts.
    pub start_s: f64,
    pub duration_s: f64,
    /// Picks the target among the candidates at run time (follower, link, leader or not, flap order).
    pub choice: u64,
}

/// Draws the schedule: a fault-free start (utilisation baseline), then faults of 3-8 s separated by
/// 3-6 s of calm, every kind used in turn before repeats (so a short run still sees each listed kind),
/// ending at least `tail_s` before the time limit. `period-rollover` is planned at most once (the
/// cluster's clock is shifted for one boundary).
pub fn schedule(kinds: &[Kind], time_limit_s: f64, seed: u64) -> Vec<Planned> {
    let mut kinds = kinds.to_vec();
    if kinds.is_empty() {
        return Vec::new();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let tail_s = (time_limit_s * 0.1).clamp(2.0, 10.0);
    let mut t = (time_limit_s * 0.1).clamp(2.0, 8.0);
    let mut plan = Vec::new();
    let mut bag: Vec<Kind> = Vec::new();
    loop {
        if bag.is_empty() {
            bag = kinds.clone();
        }
        if bag.is_empty() {
            break;
        }
        let kind = bag.remove(rng.random_range(0..bag.len()));
        if kind == Kind::PeriodRollover {
            kinds.retain(|other| *other != Kind::PeriodRollover);
        }
        let duration_s = rng.random_range(3.0..8.0_f64);
        if t + duration_s > time_limit_s - tail_s {
            break;
        }
        let round = |x: f64| (x * 10.0).round() / 10.0;
        plan.push(Planned { kind, start_s: round(t), duration_s: round(duration_s), choice: rng.random() });
        t += duration_s + rng.random_range(3.0..6.0_f64);
    }
    plan
}

/// Seconds after the workload starts at which the period rolls over: the middle of the (first)
/// `period-rollover` fault's window.
pub fn rollover_at_s(plan: &[Planned]) -> Option<f64> {
    plan.iter()
        .find(|planned| planned.kind == Kind::PeriodRollover)
        .map(|planned| planned.start_s + planned.duration_s / 2.0)
}

/// Pause period between flaps.
pub fn flap_interval(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.random_range(300..1500))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_names_and_mixed() {
        assert_eq!(parse_list("partition-leader,kill").unwrap(), vec![Kind::PartitionLeader, Kind::Kill]);
        assert_eq!(parse_list("mixed").unwrap().len(), ALL.len());
        let err = parse_list("partition-leader,bogus").unwrap_err().to_string();
        assert!(err.contains("unknown nemesis `bogus`") && err.contains("cut-link"), "{err}");
        assert!(parse_list(" , ").is_err());
        assert!(parse_list("none").unwrap().is_empty());
        assert!(schedule(&[], 60.0, 1).is_empty());
    }

    #[test]
    fn schedules_are_reproducible_and_leave_a_calm_tail() {
        let kinds = parse_list("mixed").unwrap();
        let a = schedule(&kinds, 150.0, 7);
        let b = schedule(&kinds, 150.0, 7);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(format!("{a:?}"), format!("{:?}", schedule(&kinds, 150.0, 8)));
        assert!(a.len() >= 6, "{a:?}");
        let first: std::collections::HashSet<_> = a.iter().take(ALL.len()).map(|p| p.kind).collect();
        assert_eq!(first.len(), ALL.len().min(a.len()), "each kind once before repeats");
        for pair in a.windows(2) {
            assert!(pair[0].start_s + pair[0].duration_s < pair[1].start_s);
        }
        let last = a.last().unwrap();
        assert!(last.start_s + last.duration_s <= 150.0 - 10.0);
        // A CI-sized run still gets both kinds.
        let short = schedule(&parse_list("partition-leader,kill").unwrap(), 60.0, 1);
        assert!(short.len() >= 2, "{short:?}");
    }

    #[test]
    fn a_period_rolls_over_once_mid_window() {
        let only = schedule(&[Kind::PeriodRollover], 60.0, 3);
        assert_eq!(only.len(), 1, "{only:?}");
        let at = rollover_at_s(&only).unwrap();
        assert!(only[0].start_s < at && at < only[0].start_s + only[0].duration_s);
        let mixed = schedule(&parse_list("mixed").unwrap(), 300.0, 5);
        assert_eq!(mixed.iter().filter(|p| p.kind == Kind::PeriodRollover).count(), 1, "{mixed:?}");
        assert!(rollover_at_s(&schedule(&[Kind::Kill], 60.0, 3)).is_none());
    }
}
