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
        epoch: 0,
    };
    LocalAccount::new("org:a".into(), 0, spec, 1)
}

#[test]
fn reservations_never_take_more_than_is_there() {
    let account = account();
    account.observe_granted_total(100);
    assert!(account.try_reserve(60));
    assert!(!account.try_reserve(60));
    assert!(account.try_reserve(40));
    assert_eq!(account.available(), 0);
}

#[test]
fn a_granted_total_seen_twice_is_added_once() {
    let account = account();
    assert_eq!(account.observe_granted_total(100), 100);
    assert_eq!(account.observe_granted_total(100), 0, "the answer and the applied ledger agree");
    assert_eq!(account.observe_granted_total(80), 0, "an older total changes nothing");
    assert_eq!(account.observe_granted_total(150), 50);
    assert_eq!(account.available(), 150);
}

#[test]
fn settle_returns_the_unused_part_and_records_debt() {
    let account = account();
    account.observe_granted_total(100);
    assert!(account.try_reserve(100));
    account.settle(100, 30);
    assert_eq!(account.available(), 70);
    assert!(account.try_reserve(70));
    account.settle(70, 90);
    assert_eq!(account.available(), -20, "overrun is debt paid before the next admission");
    assert!(!account.try_reserve(1));
    assert_eq!(account.report_due(), Some(120));
    account.confirm_report(120);
    assert_eq!(account.report_due(), None);
}

#[test]
fn released_allowance_is_never_spendable_again_even_unconfirmed() {
    let account = account();
    account.observe_granted_total(100);
    assert_eq!(account.release_unreserved(), 100);
    assert_eq!(account.release_due(), Some(100));
    assert!(!account.try_reserve(1), "a release whose write failed is not put back");
    account.confirm_release(100);
    assert!(account.is_settled());
}

#[test]
fn a_draining_account_hands_back_refunds_and_late_grants() {
    let account = account();
    account.observe_granted_total(500);
    assert!(account.try_reserve(300));
    account.start_draining();
    assert_eq!(account.release_due(), Some(200), "the unreserved part at once");
    account.settle(300, 120);
    assert_eq!(account.release_due(), Some(380), "the in-flight request's refund too");
    account.observe_granted_total(600);
    assert_eq!(account.release_due(), Some(480), "and a grant answered after the lowering");
    assert_eq!(account.available(), 0);
    assert!(!account.try_reserve(1));
}

#[test]
fn concurrent_reservations_are_exact() {
    let account = std::sync::Arc::new(account());
    account.observe_granted_total(10_000);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let account = account.clone();
            std::thread::spawn(move || (0..10_000).filter(|_| account.try_reserve(1)).count())
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    assert_eq!(total, 10_000);
}
