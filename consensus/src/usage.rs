//! Replicated usage accounting for reports: per hour, org, team, key and model, the requests, tokens and
//! cost nodes served. Nodes send aggregated rows about once a second; the log keeps a bounded history.

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UsageKey {
    /// Start of the hour (Unix ms, UTC).
    pub hour_ms: u64,
    pub org: String,
    #[serde(default)]
    pub team: Option<String>,
    pub key_id: String,
    pub model: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Cost at the model's configured prices, in micro-USD.
    pub cost_micro_usd: u64,
}

impl UsageTotals {
    pub fn add(&mut self, other: &UsageTotals) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost_micro_usd += other.cost_micro_usd;
    }
}

/// Hours of history kept (35 days: a month report always has its data).
pub const RETENTION_HOURS: u64 = 35 * 24;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageLog {
    /// Serialized as a list of `[key, totals]` pairs: JSON map keys must be strings, and snapshots are JSON.
    #[serde(with = "rows_as_list")]
    pub rows: OrdMap<UsageKey, UsageTotals>,
}

mod rows_as_list {
    use imbl::OrdMap;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{UsageKey, UsageTotals};

    pub fn serialize<S: Serializer>(rows: &OrdMap<UsageKey, UsageTotals>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(rows.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OrdMap<UsageKey, UsageTotals>, D::Error> {
        let pairs: Vec<(UsageKey, UsageTotals)> = Vec::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

impl UsageLog {
    pub fn record(&mut self, rows: &[(UsageKey, UsageTotals)]) {
        let mut newest = 0;
        for (key, totals) in rows {
            newest = newest.max(key.hour_ms);
            self.rows.entry(key.clone()).or_default().add(totals);
        }
        // Pure pruning relative to the newest data (no clock in apply).
        let horizon = newest.saturating_sub(RETENTION_HOURS * 3_600_000);
        while let Some((oldest, _)) = self.rows.get_min().filter(|(key, _)| key.hour_ms < horizon) {
            let oldest = oldest.clone();
            self.rows.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hour: u64, model: &str) -> UsageKey {
        UsageKey { hour_ms: hour * 3_600_000, org: "acme".into(), team: None, key_id: "k".into(), model: model.into() }
    }

    #[test]
    fn the_log_round_trips_through_json() {
        let mut log = UsageLog::default();
        log.record(&[(key(1, "m"), UsageTotals { requests: 1, input_tokens: 2, output_tokens: 3, cost_micro_usd: 4 })]);
        let json = serde_json::to_string(&log).unwrap_or_default();
        let back: UsageLog = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, log);
    }

    #[test]
    fn rows_add_up_and_old_hours_are_pruned() {
        let mut log = UsageLog::default();
        let one = UsageTotals { requests: 1, input_tokens: 10, output_tokens: 5, cost_micro_usd: 7 };
        log.record(&[(key(1, "m"), one), (key(1, "m"), one), (key(1, "n"), one)]);
        assert_eq!(log.rows[&key(1, "m")].requests, 2);
        log.record(&[(key(1 + RETENTION_HOURS + 1, "m"), one)]);
        assert!(!log.rows.contains_key(&key(1, "m")));
        assert_eq!(log.rows.len(), 1);
    }
}
