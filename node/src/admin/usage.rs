//! `GET /admin/v1/usage`: requests, tokens and cost per org over a time range, from the replicated
//! hourly usage log, grouped by team, key and/or model.

use std::collections::BTreeMap;

use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_consensus::UsageTotals;

use super::extract::{json_response, AdminError, AdminQuery, Consensus};

/// What `group_by` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupBy {
    Team,
    Key,
    Model,
}

impl GroupBy {
    fn parse(text: &str) -> Result<GroupBy, AdminError> {
        match text {
            "team" => Ok(GroupBy::Team),
            "key" => Ok(GroupBy::Key),
            "model" => Ok(GroupBy::Model),
            other => Err(AdminError::bad_request(format!("group_by: `{other}` is not one of team, key, model"))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            GroupBy::Team => "team",
            GroupBy::Key => "key",
            GroupBy::Model => "model",
        }
    }
}

#[derive(Deserialize)]
pub(super) struct UsageQuery {
    org: Option<String>,
    since: Option<String>,
    until: Option<String>,
    group_by: Option<String>,
}

/// Parses `2026-11-25T16:00:00Z` / `…+02:00` (fractional seconds allowed) into Unix ms.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_minutes) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0i64)
    } else {
        let split = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(split);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset[1..].split_once(':')?;
        (clock, sign * (hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?))
    };
    let mut clock_parts = clock.split(':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: f64 = clock_parts.next().unwrap_or("0").parse().ok()?;
    let days = tollgate_consensus::ledger::days_from_civil(year, month, day);
    let ms =
        days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + (second * 1000.0) as i64 - offset_minutes * 60_000;
    u64::try_from(ms).ok()
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<u64>, AdminError> {
    value
        .map(|text| {
            parse_rfc3339(text)
                .ok_or_else(|| AdminError::bad_request(format!("{name}: `{text}` is not an RFC 3339 time")))
        })
        .transpose()
}

/// `GET /admin/v1/usage?org=acme&since=RFC3339[&until=RFC3339][&group_by=team,key,model]`: requests,
/// tokens in/out and cost per group (hour granularity: an hour counts when it overlaps [since, until)).
pub(super) async fn get_usage(
    Consensus(node): Consensus,
    AdminQuery(query): AdminQuery<UsageQuery>,
) -> Result<Response, AdminError> {
    let org = query.org.ok_or_else(|| AdminError::bad_request("org: query parameter required"))?;
    let since = time_param("since", query.since.as_deref())?.unwrap_or(0);
    let until = time_param("until", query.until.as_deref())?.unwrap_or(u64::MAX);
    let group_by: Vec<GroupBy> = query
        .group_by
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(GroupBy::parse)
        .collect::<Result<_, _>>()?;
    let state = node.read_linearizable().await?;
    /// (team, key, model), each present only when grouped by.
    type Group = (Option<String>, Option<String>, Option<String>);
    let mut groups: BTreeMap<Group, UsageTotals> = BTreeMap::new();
    for (key, totals) in &state.history.usage.rows {
        if key.org != org || key.hour_ms + 3_600_000 <= since || key.hour_ms >= until {
            continue;
        }
        let group = (
            group_by.contains(&GroupBy::Team).then(|| key.team.clone().unwrap_or_default()),
            group_by.contains(&GroupBy::Key).then(|| key.key_id.clone()),
            group_by.contains(&GroupBy::Model).then(|| key.model.clone()),
        );
        groups.entry(group).or_default().add(totals);
    }
    let rows: Vec<Value> = groups.into_iter().map(|(group, totals)| usage_row(&org, group, &totals)).collect();
    let group_by: Vec<&str> = group_by.iter().map(|g| g.name()).collect();
    Ok(json_response(StatusCode::OK, &json!({"org": org, "since_ms": since, "group_by": group_by, "rows": rows})))
}

fn usage_row(
    org: &str,
    (team, key, model): (Option<String>, Option<String>, Option<String>),
    totals: &UsageTotals,
) -> Value {
    let mut row = json!({
        "org": org, "requests": totals.requests, "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens, "cost_usd": totals.cost_micro_usd as f64 / 1e6,
    });
    if let Some(team) = team {
        row["team"] = if team.is_empty() { Value::Null } else { json!(team) };
    }
    if let Some(key) = key {
        row["key_id"] = json!(key);
    }
    if let Some(model) = model {
        row["model"] = json!(model);
    }
    row
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("2026-11-01T00:00:00Z"), Some(1_793_491_200_000));
        assert_eq!(parse_rfc3339("2026-11-01T02:00:00+02:00"), Some(1_793_491_200_000));
        assert_eq!(parse_rfc3339("2026-11-01T00:00:00.5Z"), Some(1_793_491_200_500));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }
}
