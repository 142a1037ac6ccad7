//! S2 checked at every applied ledger change, by the state machine itself: after each grant, release, use
//! report or limit change applied to an account, `Σ(granted − released) ≤ limit` — or, where a lowered
//! limit left the account above it, that the sum did not grow — and no node released more than it was
//! granted. The result is replicated state like the rest of the ledger (the same on every node, kept in
//! snapshots): how many changes were checked, how many broke S2, and the first that did. The chaos suite
//! reads it through `GET /admin/v1/budgets` (`ledger_s2`), so S2 is judged at every applied index, not
//! only at the states a client happens to sample.

use serde::{Deserialize, Serialize};

use super::Account;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S2Audit {
    /// Ledger changes to an account that were applied and checked.
    pub checked: u64,
    /// Changes after which S2 did not hold (0 in a sound ledger).
    pub violations: u64,
    /// The first of them: what was applied and the account's figures after it.
    pub first_violation: Option<String>,
}

/// Allowance handed out and not returned: Σ over nodes of granted − released (the sum S2 bounds).
pub fn net_granted(account: &Account) -> u64 {
    account
        .granted
        .iter()
        .map(|(node, granted)| granted.saturating_sub(account.released.get(node).copied().unwrap_or(0)))
        .sum()
}

/// What is wrong with `account` after a change, given its [`net_granted`] before it (`None`: S2 holds).
pub fn violation(before: u64, account: &Account) -> Option<String> {
    if let Some((node, released)) =
        account.released.iter().find(|(node, released)| **released > account.granted.get(node).copied().unwrap_or(0))
    {
        return Some(format!("node {node} released {released}, more than it was granted"));
    }
    let after = net_granted(account);
    (after > account.limit && after > before)
        .then(|| format!("granted − released {after} > limit {} (it was {before} before this change)", account.limit))
}

impl S2Audit {
    /// Checks one applied change (`what` describes it, formatted only on a violation). A change to an
    /// account that does not exist (any more) has nothing to check.
    pub fn check(&mut self, before: u64, account: Option<&Account>, what: impl FnOnce() -> String) {
        let Some(account) = account else { return };
        self.checked += 1;
        if let Some(problem) = violation(before, account) {
            self.violations += 1;
            tracing::error!(violations = self.violations, %problem, "S2 broken by an applied ledger change");
            if self.first_violation.is_none() {
                self.first_violation = Some(format!("{}: {problem}", what()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{BudgetSpec, Ledger, Period, Scope};

    fn spec(limit: u64) -> BudgetSpec {
        BudgetSpec {
            scope: Scope { org: "acme".into(), team: None, key_id: None },
            limit_tokens: Some(limit),
            limit_cost: None,
            period: Period::Day,
            tokens_per_minute: None,
            requests_per_minute: None,
            epoch: 0,
        }
    }

    /// Grants up to the limit, use, releases, a limit lowered under what is out and grants refused after
    /// it: every change is checked and none breaks S2.
    #[test]
    fn every_applied_change_is_checked_and_a_sound_ledger_has_no_violation() {
        let mut ledger = Ledger::default();
        ledger.set_budget(spec(1000)).unwrap_or_else(|e| panic!("{e}"));
        let id = spec(1000).scope.id();
        assert_eq!(ledger.grant_to_incarnation(&id, 0, 1, 1, 600, 1, 0), Ok((600, 400, 600)));
        assert_eq!(ledger.grant_to_incarnation(&id, 0, 2, 1, 600, 1, 0), Ok((400, 0, 400)));
        ledger.report_used_total(&id, 0, 1, 1, 500);
        assert_eq!(ledger.release_up_to(&id, 0, 1, 1, 100), 100);
        ledger.set_budget(spec(700)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ledger.grant_to_incarnation(&id, 0, 3, 1, 100, 1, 0), Ok((0, 0, 0)), "900 out of 700");
        assert_eq!(ledger.s2_audit.checked, 6);
        assert_eq!(ledger.s2_audit.violations, 0, "{:?}", ledger.s2_audit.first_violation);
        // Reports and releases for an account that does not exist check nothing.
        ledger.report_used_total(&id, 86_400_000, 1, 1, 5);
        assert_eq!(ledger.s2_audit.checked, 6);
    }

    #[test]
    fn an_account_over_its_limit_by_a_change_is_a_violation_and_the_first_one_is_kept() {
        let mut account = Account { limit: 100, ..Account::default() };
        account.granted.insert(1, 80);
        assert_eq!(violation(0, &account), None);
        account.granted.insert(2, 30);
        let problem = violation(80, &account).unwrap_or_default();
        assert!(problem.contains("110 > limit 100"), "{problem}");
        // Above a lowered limit but not grown by this change: allowed (the nodes drain).
        account.limit = 50;
        assert_eq!(violation(110, &account), None);
        // Releasing more than was granted.
        account.released.insert(2, 31);
        assert!(violation(110, &account).unwrap_or_default().contains("node 2 released 31"));

        let mut audit = S2Audit::default();
        audit.check(0, Some(&account), || "first".into());
        audit.check(0, Some(&account), || "second".into());
        audit.check(0, None, || "no account".into());
        assert_eq!((audit.checked, audit.violations), (2, 2));
        assert!(audit.first_violation.unwrap_or_default().starts_with("first: node 2 released 31"));
    }
}
