//! The org-wide budget ledger (docs/ARCHITECTURE.md, "Budget invariants"): budgets per scope (org, team or key) and, per scope and
//! period, an account of what each node was granted, released and reported as used. Nodes spend only from
//! grants; a grant is applied only while `Σ(granted − released) ≤ limit` stays true (invariant S2), so no
//! interleaving of nodes, partitions or crashes can let the cluster spend past the limit (S1).

use std::collections::BTreeMap;

use imbl::OrdMap;

use serde::{Deserialize, Serialize};

use crate::member::NodeId;

#[path = "ledger_audit.rs"]
pub mod audit;
pub use audit::S2Audit;

/// Who a budget applies to. The tightest of the org, team and key budgets applies to a request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub org: String,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
}

impl Scope {
    /// A stable string id: `org:acme`, `org:acme/team:ml`, `org:acme/key:k1`.
    pub fn id(&self) -> String {
        let mut id = format!("org:{}", self.org);
        if let Some(team) = &self.team {
            id.push_str(&format!("/team:{team}"));
        }
        if let Some(key) = &self.key_id {
            id.push_str(&format!("/key:{key}"));
        }
        id
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hour,
    #[default]
    Day,
    Month,
    /// Never resets.
    Total,
}

impl Period {
    /// Start (Unix ms, UTC) of the period containing `now_ms`.
    pub fn start_ms(self, now_ms: u64) -> u64 {
        const HOUR: u64 = 3_600_000;
        const DAY: u64 = 24 * HOUR;
        match self {
            Period::Hour => now_ms - now_ms % HOUR,
            Period::Day => now_ms - now_ms % DAY,
            Period::Month => {
                let days = (now_ms / DAY) as i64;
                let (year, month, _) = civil_from_days(days);
                days_from_civil(year, month, 1) as u64 * DAY
            }
            Period::Total => 0,
        }
    }

    /// End (exclusive) of the period starting at `start_ms`; `None` for `Total`.
    pub fn end_ms(self, start_ms: u64) -> Option<u64> {
        const HOUR: u64 = 3_600_000;
        const DAY: u64 = 24 * HOUR;
        match self {
            Period::Hour => Some(start_ms + HOUR),
            Period::Day => Some(start_ms + DAY),
            Period::Month => {
                let (year, month, _) = civil_from_days((start_ms / DAY) as i64);
                let (year, month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                Some(days_from_civil(year, month, 1) as u64 * DAY)
            }
            Period::Total => None,
        }
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A budget as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSpec {
    pub scope: Scope,
    /// Tokens (input + output as billed) per period.
    #[serde(default)]
    pub limit_tokens: Option<u64>,
    /// USD per period, at the models' configured prices. Accounted in micro-USD.
    #[serde(default)]
    pub limit_cost: Option<f64>,
    #[serde(default)]
    pub period: Period,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    /// Which creation of this scope's budget this is, set by the ledger (whatever a client sends): a budget
    /// deleted and created again has a new epoch, so a node drops allowance it held under the old one.
    #[serde(default)]
    pub epoch: u64,
}

impl BudgetSpec {
    /// The limit in ledger units: tokens, or micro-USD for cost budgets.
    pub fn limit_units(&self) -> Option<u64> {
        match (self.limit_tokens, self.limit_cost) {
            (Some(tokens), _) => Some(tokens),
            (None, Some(cost)) => Some((cost * 1e6).floor().max(0.0) as u64),
            (None, None) => None,
        }
    }

    /// The same budget as `other` but for the epoch the ledger assigns (what a config file can state).
    pub fn same_terms(&self, other: &BudgetSpec) -> bool {
        BudgetSpec { epoch: other.epoch, ..self.clone() } == *other
    }

    pub fn is_cost(&self) -> bool {
        self.limit_tokens.is_none() && self.limit_cost.is_some()
    }
}

/// One scope's money for one period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub limit: u64,
    pub granted: BTreeMap<NodeId, u64>,
    pub released: BTreeMap<NodeId, u64>,
    /// Reported consumption (monotone; billed ≥ served).
    pub used: BTreeMap<NodeId, u64>,
    /// Per node, per incarnation of its local account (a process start, or a limit lowered under it): the
    /// running totals that node has been granted, released and used. Releases and reports carry totals, so
    /// applying one twice changes nothing; a grant's result carries the incarnation's granted total, which
    /// the node can also read from its applied state when the answer was lost (a grant that committed after
    /// the node stopped waiting).
    #[serde(default)]
    pub incarnations: BTreeMap<NodeId, BTreeMap<u64, IncarnationTotals>>,
}

/// What one incarnation of a node's local account was granted, released and used (running totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncarnationTotals {
    pub granted: u64,
    pub released: u64,
    pub used: u64,
}

impl IncarnationTotals {
    /// Allowance this incarnation holds: granted, not released, not used.
    pub fn held(&self) -> u64 {
        self.granted.saturating_sub(self.released).saturating_sub(self.used)
    }
}

/// How far a grant's period may stray from the period of the leader's clock: a node whose clock is this
/// close to a boundary may still be granted for its side of it. Beyond it, grants are refused: a fast
/// clock cannot spend the next period early, a slow one cannot take allowance returned at rollover.
pub const PERIOD_SKEW_MS: u64 = 5_000;

/// Whether `period_start` is the period of `at_ms` (the leader's clock), give or take [`PERIOD_SKEW_MS`].
/// `at_ms == 0` (entries written before the leader stamped time) is not checked.
pub fn period_is_current(period: Period, period_start: u64, at_ms: u64) -> bool {
    at_ms == 0
        || [at_ms, at_ms.saturating_sub(PERIOD_SKEW_MS), at_ms + PERIOD_SKEW_MS]
            .iter()
            .any(|at| period.start_ms(*at) == period_start)
}

impl Account {
    /// Allowance handed out and not returned, or (for a node whose reported use ran past its grants, an
    /// overrun its reservation did not bound) the use itself: what S2 bounds by the limit. Counting the
    /// overrun here means no node is granted the tokens it already consumed.
    pub fn outstanding(&self) -> u64 {
        let nodes: std::collections::BTreeSet<NodeId> = self.granted.keys().chain(self.used.keys()).copied().collect();
        nodes.into_iter().map(|node| self.committed_by(node)).sum()
    }

    /// What `node` holds or has consumed: the larger of its grants net of releases and its reported use.
    pub fn committed_by(&self, node: NodeId) -> u64 {
        let granted = self.granted.get(&node).copied().unwrap_or(0);
        let released = self.released.get(&node).copied().unwrap_or(0);
        let used = self.used.get(&node).copied().unwrap_or(0);
        granted.saturating_sub(released).max(used)
    }

    pub fn available(&self) -> u64 {
        self.limit.saturating_sub(self.outstanding())
    }

    /// What a grant of `amount` gets: all of it, or what is left if that is at least `min_amount`, or 0.
    fn grantable(&self, amount: u64, min_amount: u64) -> u64 {
        let available = self.available();
        if available >= amount {
            amount
        } else if available >= min_amount.max(1) {
            available
        } else {
            0
        }
    }

    pub fn used_total(&self) -> u64 {
        self.used.values().sum()
    }

    /// What `node` holds and has not returned or reported as used.
    pub fn held_by(&self, node: NodeId) -> u64 {
        let granted = self.granted.get(&node).copied().unwrap_or(0);
        let released = self.released.get(&node).copied().unwrap_or(0);
        let used = self.used.get(&node).copied().unwrap_or(0);
        granted.saturating_sub(released).saturating_sub(used)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// Budgets by scope id.
    pub budgets: OrdMap<String, BudgetSpec>,
    /// Budgets created so far: the next one's epoch.
    #[serde(default)]
    pub budgets_created: u64,
    /// Accounts by scope id, then period start.
    pub accounts: OrdMap<String, OrdMap<u64, Account>>,
    /// Each node's own clock as of its latest grant request: independent of the leader's, so a leader
    /// whose clock is off cannot by itself decide that a period has begun.
    #[serde(default)]
    pub node_clocks: OrdMap<NodeId, u64>,
    /// S2 checked after every applied change to an account ([`audit`]).
    #[serde(default)]
    pub s2_audit: S2Audit,
}

/// How many periods of history an account keeps (the current one and the one before).
const PERIODS_KEPT: usize = 2;

impl Ledger {
    /// The account's granted − released before a change (0 when it has no account yet).
    fn net_granted(&self, scope_id: &str, period_start: u64) -> u64 {
        self.accounts.get(scope_id).and_then(|accounts| accounts.get(&period_start)).map_or(0, audit::net_granted)
    }

    /// Checks S2 on the account after a change (see [`audit`]).
    fn audit(&mut self, scope_id: &str, period_start: u64, before: u64, what: impl FnOnce() -> String) {
        let account = self.accounts.get(scope_id).and_then(|accounts| accounts.get(&period_start));
        self.s2_audit.check(before, account, what);
    }

    pub fn set_budget(&mut self, spec: BudgetSpec) -> Result<(), String> {
        if spec.limit_units().is_none() && spec.tokens_per_minute.is_none() && spec.requests_per_minute.is_none() {
            return Err("set limit_tokens, limit_cost, tokens_per_minute or requests_per_minute".into());
        }
        // Rate-limit-only budgets have no period limit: nothing to grant from.
        let limit = spec.limit_units().unwrap_or(u64::MAX);
        if spec.limit_tokens.is_some() && spec.limit_cost.is_some() {
            return Err("set only one of limit_tokens and limit_cost".into());
        }
        if spec.limit_cost.is_some_and(|cost| !cost.is_finite() || cost < 0.0) {
            return Err("limit_cost: must be a non-negative number".into());
        }
        let id = spec.scope.id();
        let mut spec = spec;
        match self.budgets.get(&id) {
            Some(existing) => spec.epoch = existing.epoch,
            None => {
                self.budgets_created += 1;
                spec.epoch = self.budgets_created;
            }
        }
        if let Some(existing) = self.budgets.get(&id) {
            let counted = existing.limit_units().is_some() && spec.limit_units().is_some();
            if counted && existing.is_cost() != spec.is_cost() {
                // Grants and reports so far are in the old unit; mixing them would miscount the period.
                return Err(format!(
                    "{id} is a {} budget; delete it before setting a {} budget",
                    if existing.is_cost() { "cost" } else { "token" },
                    if spec.is_cost() { "cost" } else { "token" }
                ));
            }
        }
        // A changed limit applies to the current accounts at once; lowering it below what is outstanding
        // simply stops further grants.
        let periods: Vec<(u64, u64)> = self.accounts.get(&id).map_or_else(Vec::new, |accounts| {
            accounts.iter().map(|(period, account)| (*period, audit::net_granted(account))).collect()
        });
        if let Some(accounts) = self.accounts.get_mut(&id) {
            for (period, _) in &periods {
                if let Some(account) = accounts.get_mut(period) {
                    account.limit = limit;
                }
            }
        }
        for (period, before) in periods {
            self.audit(&id, period, before, || format!("limit of {id} set to {limit}"));
        }
        self.budgets.insert(id, spec);
        Ok(())
    }

    pub fn delete_budget(&mut self, scope: &Scope) -> Result<(), String> {
        let id = scope.id();
        self.budgets.remove(&id).ok_or_else(|| format!("no budget for {id}"))?;
        self.accounts.remove(&id);
        Ok(())
    }

    fn account(&mut self, scope_id: &str, period_start: u64) -> Result<&mut Account, String> {
        let limit = self
            .budgets
            .get(scope_id)
            .and_then(BudgetSpec::limit_units)
            .ok_or_else(|| format!("no budget for {scope_id}"))?;
        let accounts = self.accounts.entry(scope_id.to_owned()).or_default();
        if !accounts.contains_key(&period_start) {
            accounts.insert(period_start, Account { limit, ..Default::default() });
            // Evict the oldest of the *other* periods: after a change of period kind (day → month) the new
            // account's start can be the smallest, and evicting it would lock the scope out.
            while accounts.len() > PERIODS_KEPT {
                let Some(oldest) = accounts.keys().copied().find(|start| *start != period_start) else {
                    break;
                };
                accounts.remove(&oldest);
            }
        }
        accounts.get_mut(&period_start).ok_or_else(|| "period is too old".to_owned())
    }

    /// Records a node's own clock (from its grant request; 0 means not sent).
    pub fn observe_clock(&mut self, node: NodeId, node_ms: u64) {
        if node_ms > 0 {
            self.node_clocks.insert(node, node_ms);
        }
    }

    /// Whether most nodes' own clocks agree that `period_start`'s period has begun (give or take
    /// [`PERIOD_SKEW_MS`]): needed to open its account. The leader's clock alone is not enough: a leader
    /// a day ahead would otherwise open tomorrow's account and spend tomorrow's budget today (chaos suite,
    /// leader clock skew, seed 4). An existing account is open already; with no clock reports (entries
    /// from older nodes) the leader's clock decides as before.
    fn begun(&self, scope_id: &str, period: Period, period_start: u64) -> bool {
        if period == Period::Total || self.existing(scope_id, period_start) || self.node_clocks.is_empty() {
            return true;
        }
        self.most_clocks_past(period_start.saturating_sub(PERIOD_SKEW_MS))
    }

    fn existing(&self, scope_id: &str, period_start: u64) -> bool {
        self.accounts.get(scope_id).is_some_and(|accounts| accounts.contains_key(&period_start))
    }

    /// More than half of the nodes that report their clocks last reported `ms` or later.
    fn most_clocks_past(&self, ms: u64) -> bool {
        let past = self.node_clocks.values().filter(|clock| **clock >= ms).count();
        past * 2 > self.node_clocks.len()
    }

    /// Periods never run backwards: once a later period has begun, nothing more is granted for the earlier
    /// one. Without this, a leader whose clock went back a day (restarted with a bad clock, or a new leader
    /// with one) grants yesterday's remaining allowance a second time, today (found by the chaos suite's
    /// leader clock skew, seeds 2, 4, 23).
    ///
    /// "Begun" needs more than an account of the later period: a leader whose clock ran a day *ahead* opens
    /// tomorrow's account, and if that alone superseded today, today's budget would be locked once its
    /// clock is fixed. So it also needs a majority of the nodes that report their clocks to have reported
    /// one inside the later period or after it.
    fn superseded(&self, scope_id: &str, period: Period, period_start: u64) -> bool {
        let Some(ends) = period.end_ms(period_start) else {
            return false;
        };
        let Some(accounts) = self.accounts.get(scope_id) else {
            return false;
        };
        !self.node_clocks.is_empty() && accounts.keys().any(|later| *later >= ends && self.most_clocks_past(*later))
    }

    /// An existing account (releases and reports never create one: for a period already evicted, or a
    /// budget deleted since, there is nothing to return to).
    fn existing_account(&mut self, scope_id: &str, period_start: u64) -> Option<&mut Account> {
        self.accounts.get_mut(scope_id)?.get_mut(&period_start)
    }

    /// Grants up to `amount` to one incarnation of `node`'s local account (see [`Account::incarnations`]),
    /// for the period the leader's clock `at_ms` is in. Refused for another period (beyond the skew
    /// allowance) and for an incarnation older than the node's newest (a stale request). Returns (granted,
    /// still available, the incarnation's granted total).
    #[allow(clippy::too_many_arguments)]
    pub fn grant_to_incarnation(
        &mut self,
        scope_id: &str,
        period_start: u64,
        node: NodeId,
        incarnation: u64,
        amount: u64,
        min_amount: u64,
        at_ms: u64,
    ) -> Result<(u64, u64, u64), String> {
        let period =
            self.budgets.get(scope_id).map(|spec| spec.period).ok_or_else(|| format!("no budget for {scope_id}"))?;
        if !period_is_current(period, period_start, at_ms) {
            return Err(format!(
                "period {period_start} of {scope_id} is not the current one by the leader's clock ({at_ms}): check this node's clock"
            ));
        }
        if !self.begun(scope_id, period, period_start) {
            return Err(format!(
                "period {period_start} of {scope_id} has not begun by most nodes' clocks (the leader's or this node's clock is ahead)"
            ));
        }
        if self.superseded(scope_id, period, period_start) {
            return Err(format!(
                "period {period_start} of {scope_id} has ended: a later period has begun (the leader's clock is behind)"
            ));
        }
        let before = self.net_granted(scope_id, period_start);
        let account = self.account(scope_id, period_start)?;
        let newest = account.incarnations.get(&node).and_then(|i| i.keys().next_back().copied()).unwrap_or(0);
        if incarnation < newest {
            return Err(format!("stale grant: node {node} has a newer incarnation than {incarnation}"));
        }
        let granted = account.grantable(amount, min_amount);
        *account.granted.entry(node).or_default() += granted;
        let totals = account.incarnations.entry(node).or_default().entry(incarnation).or_default();
        totals.granted += granted;
        let node_total = totals.granted;
        let available = account.available();
        self.audit(scope_id, period_start, before, || format!("grant {granted} of {scope_id} to node {node}"));
        Ok((granted, available, node_total))
    }

    /// Raises an incarnation's released total to `released_total` (never lowers it: a resent release is a
    /// no-op). What it returns to the ledger is bounded by what the incarnation holds. Returns that amount.
    pub fn release_up_to(
        &mut self,
        scope_id: &str,
        period_start: u64,
        node: NodeId,
        incarnation: u64,
        released_total: u64,
    ) -> u64 {
        let before = self.net_granted(scope_id, period_start);
        let Some(account) = self.existing_account(scope_id, period_start) else {
            return 0;
        };
        let totals = account.incarnations.entry(node).or_default().entry(incarnation).or_default();
        let returned = released_total.saturating_sub(totals.released).min(totals.held());
        totals.released = totals.released.max(released_total);
        *account.released.entry(node).or_default() += returned;
        self.audit(scope_id, period_start, before, || format!("release {returned} of {scope_id} by node {node}"));
        returned
    }

    /// Raises an incarnation's used total to `used_total` (monotone: a resent report is a no-op).
    pub fn report_used_total(
        &mut self,
        scope_id: &str,
        period_start: u64,
        node: NodeId,
        incarnation: u64,
        used_total: u64,
    ) {
        let before = self.net_granted(scope_id, period_start);
        let Some(account) = self.existing_account(scope_id, period_start) else {
            return;
        };
        let totals = account.incarnations.entry(node).or_default().entry(incarnation).or_default();
        let delta = used_total.saturating_sub(totals.used);
        totals.used += delta;
        *account.used.entry(node).or_default() += delta;
        self.audit(scope_id, period_start, before, || format!("use {delta} of {scope_id} reported by node {node}"));
    }

    /// Grants up to `amount` (never below `min_amount`: then nothing) while S2 holds. Returns
    /// (granted, still available after the grant).
    pub fn grant(
        &mut self,
        scope_id: &str,
        period_start: u64,
        node: NodeId,
        amount: u64,
        min_amount: u64,
    ) -> Result<(u64, u64), String> {
        let before = self.net_granted(scope_id, period_start);
        let account = self.account(scope_id, period_start)?;
        let granted = account.grantable(amount, min_amount);
        *account.granted.entry(node).or_default() += granted;
        // S2. (A limit lowered below what is already outstanding is the one case it can be above: then
        // nothing more is granted.)
        let available = account.available();
        self.audit(scope_id, period_start, before, || format!("grant {granted} of {scope_id} to node {node}"));
        Ok((granted, available))
    }

    /// Returns unused allowance; never more than the node holds.
    pub fn release(&mut self, scope_id: &str, period_start: u64, node: NodeId, amount: u64) -> Result<u64, String> {
        let before = self.net_granted(scope_id, period_start);
        let account = self.account(scope_id, period_start)?;
        let returned = amount.min(account.held_by(node));
        *account.released.entry(node).or_default() += returned;
        self.audit(scope_id, period_start, before, || format!("release {returned} of {scope_id} by node {node}"));
        Ok(returned)
    }

    /// Adds consumption reported by a node (deltas, de-duplicated by request id upstream).
    pub fn report(&mut self, scope_id: &str, period_start: u64, node: NodeId, delta: u64) -> Result<(), String> {
        let before = self.net_granted(scope_id, period_start);
        let account = self.account(scope_id, period_start)?;
        *account.used.entry(node).or_default() += delta;
        self.audit(scope_id, period_start, before, || format!("use {delta} of {scope_id} reported by node {node}"));
        Ok(())
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
