use super::*;

fn ledger(limit: u64) -> (Ledger, String) {
    let mut ledger = Ledger::default();
    let scope = Scope { org: "acme".into(), team: None, key_id: None };
    ledger
        .set_budget(BudgetSpec {
            scope: scope.clone(),
            limit_tokens: Some(limit),
            limit_cost: None,
            period: Period::Day,
            tokens_per_minute: None,
            requests_per_minute: None,
            epoch: 0,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (ledger, scope.id())
}

#[test]
fn grants_never_exceed_the_limit() {
    let (mut ledger, id) = ledger(1000);
    assert_eq!(ledger.grant(&id, 0, 1, 600, 1), Ok((600, 400)));
    assert_eq!(ledger.grant(&id, 0, 2, 600, 1), Ok((400, 0)), "partial grant");
    assert_eq!(ledger.grant(&id, 0, 3, 600, 1), Ok((0, 0)), "nothing left");
    let account = &ledger.accounts[&id][&0];
    assert!(account.outstanding() <= account.limit);
}

#[test]
fn min_amount_refuses_useless_partial_grants() {
    let (mut ledger, id) = ledger(100);
    assert_eq!(ledger.grant(&id, 0, 1, 90, 90), Ok((90, 10)));
    assert_eq!(ledger.grant(&id, 0, 2, 50, 20), Ok((0, 10)));
}

#[test]
fn release_returns_at_most_what_is_held_and_frees_it_for_others() {
    let (mut ledger, id) = ledger(100);
    assert_eq!(ledger.grant(&id, 0, 1, 100, 1), Ok((100, 0)));
    assert_eq!(ledger.report(&id, 0, 1, 30), Ok(()));
    assert_eq!(ledger.release(&id, 0, 1, 500), Ok(70), "only the unused part");
    assert_eq!(ledger.grant(&id, 0, 2, 100, 1), Ok((70, 0)));
    // Invariant S2 after any interleaving: Σ(granted − released) ≤ limit.
    let account = &ledger.accounts[&id][&0];
    assert!(account.outstanding() <= account.limit);
}

#[test]
fn periods_roll_over_to_fresh_accounts() {
    let (mut ledger, id) = ledger(100);
    assert_eq!(ledger.grant(&id, 0, 1, 100, 1), Ok((100, 0)));
    let Some(next_day) = Period::Day.end_ms(0) else { panic!("a day ends") };
    assert_eq!(ledger.grant(&id, next_day, 1, 100, 1), Ok((100, 0)));
    let Some(third) = Period::Day.end_ms(next_day) else { panic!("a day ends") };
    assert_eq!(ledger.grant(&id, third, 1, 1, 1), Ok((1, 99)));
    assert_eq!(ledger.accounts[&id].len(), 2, "old periods are pruned");
}

#[test]
fn lowering_a_budget_stops_further_grants() {
    let (mut ledger, id) = ledger(1000);
    assert_eq!(ledger.grant(&id, 0, 1, 800, 1), Ok((800, 200)));
    ledger
        .set_budget(BudgetSpec {
            scope: Scope { org: "acme".into(), team: None, key_id: None },
            limit_tokens: Some(500),
            limit_cost: None,
            period: Period::Day,
            tokens_per_minute: None,
            requests_per_minute: None,
            epoch: 0,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ledger.grant(&id, 0, 2, 10, 1), Ok((0, 0)));
}

#[test]
fn unknown_scopes_and_bad_specs_are_errors() {
    let mut ledger = Ledger::default();
    assert!(ledger.grant("org:none", 0, 1, 1, 1).is_err());
    let spec = BudgetSpec {
        scope: Scope { org: "a".into(), team: None, key_id: None },
        limit_tokens: None,
        limit_cost: None,
        period: Period::Day,
        tokens_per_minute: None,
        requests_per_minute: None,
        epoch: 0,
    };
    assert!(ledger.set_budget(spec).is_err());
}

#[test]
fn period_boundaries_are_utc_calendar_periods() {
    // 2026-11-25T16:47:44Z
    let now = 1_795_625_264_000;
    assert_eq!(Period::Hour.start_ms(now) % 3_600_000, 0);
    let month_start = Period::Month.start_ms(now);
    assert_eq!(month_start, 1_793_491_200_000, "2026-11-01T00:00:00Z");
    assert_eq!(Period::Month.end_ms(month_start), Some(1_796_083_200_000), "2026-12-01T00:00:00Z");
    assert_eq!(Period::Total.start_ms(now), 0);
    assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
}

#[test]
fn a_budget_cannot_switch_between_tokens_and_cost_while_it_has_accounts() {
    let (mut ledger, id) = ledger(1000);
    assert_eq!(ledger.grant(&id, 0, 1, 100, 1), Ok((100, 900)));
    let cost = BudgetSpec {
        scope: Scope { org: "acme".into(), team: None, key_id: None },
        limit_tokens: None,
        limit_cost: Some(5.0),
        period: Period::Day,
        tokens_per_minute: None,
        requests_per_minute: None,
        epoch: 0,
    };
    let Err(err) = ledger.set_budget(cost.clone()) else { panic!("unit switch must be refused") };
    assert!(err.contains("delete it"), "{err}");
    ledger.delete_budget(&cost.scope).unwrap_or_else(|e| panic!("{e}"));
    ledger.set_budget(cost).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ledger.grant(&id, 0, 1, 1_000_000, 1), Ok((1_000_000, 4_000_000)));
}

#[test]
fn an_overrun_reported_past_the_grants_counts_against_the_limit() {
    let (mut ledger, id) = ledger(1000);
    assert_eq!(ledger.grant(&id, 0, 1, 400, 1), Ok((400, 600)));
    // Node 1 consumed 700 against a grant of 400 (a reservation that did not bound the cost).
    assert_eq!(ledger.report(&id, 0, 1, 700), Ok(()));
    assert_eq!(ledger.accounts[&id][&0].outstanding(), 700);
    assert_eq!(ledger.grant(&id, 0, 2, 600, 1), Ok((300, 0)), "the overrun is not granted again");
    assert_eq!(ledger.release(&id, 0, 1, 100), Ok(0), "nothing held to release");
}

const DAY: u64 = 24 * 3_600_000;

#[test]
fn totals_applied_twice_change_nothing() {
    let (mut ledger, id) = ledger(1000);
    assert_eq!(ledger.grant_to_incarnation(&id, 0, 1, 7, 400, 1, 0), Ok((400, 600, 400)));
    assert_eq!(ledger.grant_to_incarnation(&id, 0, 1, 7, 100, 1, 0), Ok((100, 500, 500)), "the total grows");
    ledger.report_used_total(&id, 0, 1, 7, 120);
    ledger.report_used_total(&id, 0, 1, 7, 120);
    ledger.report_used_total(&id, 0, 1, 7, 90);
    assert_eq!(ledger.release_up_to(&id, 0, 1, 7, 200), 200);
    assert_eq!(ledger.release_up_to(&id, 0, 1, 7, 200), 0, "a resent release is a no-op");
    let account = &ledger.accounts[&id][&0];
    assert_eq!(account.used[&1], 120, "a resent or older report is a no-op");
    assert_eq!(account.released[&1], 200);
    assert_eq!(account.outstanding(), 300);
}

#[test]
fn a_release_never_returns_more_than_the_incarnation_holds() {
    let (mut ledger, id) = ledger(1000);
    assert_eq!(ledger.grant_to_incarnation(&id, 0, 1, 7, 300, 1, 0).map(|g| g.0), Ok(300));
    assert_eq!(ledger.grant_to_incarnation(&id, 0, 1, 8, 300, 1, 0).map(|g| g.0), Ok(300));
    ledger.report_used_total(&id, 0, 1, 7, 100);
    assert_eq!(ledger.release_up_to(&id, 0, 1, 7, 1_000), 200, "only what incarnation 7 holds");
    assert_eq!(ledger.release_up_to(&id, 0, 1, 9, 50), 0, "an incarnation never granted holds nothing");
    assert_eq!(ledger.accounts[&id][&0].outstanding(), 400);
}

#[test]
fn grants_to_an_older_incarnation_are_refused_but_its_releases_count() {
    let (mut ledger, id) = ledger(1000);
    assert_eq!(ledger.grant_to_incarnation(&id, 0, 1, 7, 300, 1, 0).map(|g| g.0), Ok(300));
    assert_eq!(ledger.grant_to_incarnation(&id, 0, 1, 8, 100, 1, 0).map(|g| g.0), Ok(100));
    assert!(ledger.grant_to_incarnation(&id, 0, 1, 7, 100, 1, 0).is_err(), "stale");
    assert_eq!(ledger.release_up_to(&id, 0, 1, 7, 300), 300);
    assert_eq!(ledger.grant_to_incarnation(&id, 0, 2, 1, 900, 1, 0), Ok((900, 0, 900)));
}

#[test]
fn the_leaders_clock_decides_the_period() {
    let (mut ledger, id) = ledger(1000);
    let now = 100 * DAY + 12 * 3_600_000;
    let today = 100 * DAY;
    assert!(ledger.grant_to_incarnation(&id, today, 1, 1, 10, 1, now).is_ok());
    let tomorrow = today + DAY;
    assert!(ledger.grant_to_incarnation(&id, tomorrow, 2, 1, 10, 1, now).is_err(), "a fast clock");
    assert!(ledger.grant_to_incarnation(&id, today - DAY, 3, 1, 10, 1, now).is_err(), "a slow clock");
    // Within the skew allowance of a boundary, either side is accepted.
    let just_after_midnight = tomorrow + PERIOD_SKEW_MS / 2;
    assert!(ledger.grant_to_incarnation(&id, today, 3, 1, 10, 1, just_after_midnight).is_ok());
    assert!(ledger.grant_to_incarnation(&id, tomorrow, 3, 1, 10, 1, just_after_midnight).is_ok());
}

#[test]
fn changing_the_period_kind_never_evicts_the_new_account() {
    let (mut ledger, id) = ledger(1000);
    let month_start = Period::Month.start_ms(100 * DAY);
    assert_eq!(ledger.grant_to_incarnation(&id, month_start + 3 * DAY, 1, 1, 10, 1, 0).map(|g| g.0), Ok(10));
    assert_eq!(ledger.grant_to_incarnation(&id, month_start + 4 * DAY, 1, 1, 10, 1, 0).map(|g| g.0), Ok(10));
    let mut spec = ledger.budgets[&id].clone();
    spec.period = Period::Month;
    ledger.set_budget(spec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ledger.grant_to_incarnation(&id, month_start, 1, 2, 10, 1, 0).map(|g| g.0), Ok(10));
    assert!(ledger.accounts[&id].contains_key(&month_start), "the month's account stays");
}

/// Found by the chaos suite (leader clock skew, seeds 2, 4, 23): a leader restarted with its clock a day
/// behind stamped yesterday's period and granted yesterday's leftover allowance again, today. Once a later
/// period has begun (its account exists and most nodes' own clocks are in it), the earlier one grants
/// nothing, whatever the leader's clock says.
#[test]
fn a_period_never_grants_again_once_a_later_one_began() {
    let (mut ledger, id) = ledger(1000);
    let today = 100 * DAY;
    let yesterday = today - DAY;
    for node in 1..=3 {
        ledger.observe_clock(node, yesterday + 1);
    }
    assert_eq!(ledger.grant_to_incarnation(&id, yesterday, 1, 1, 400, 1, yesterday + 1).map(|g| g.0), Ok(400));
    for node in 1..=3 {
        ledger.observe_clock(node, today + 1);
    }
    assert_eq!(ledger.grant_to_incarnation(&id, today, 1, 2, 1000, 1, today + 1).map(|g| g.0), Ok(1000));
    // Node 2's leader clock jumps back a day (its own reported clock with it): yesterday had 600 left, and
    // it stays unspendable, since nodes 1 and 3 are in today.
    ledger.observe_clock(2, yesterday + 3_600_000);
    let refused = ledger.grant_to_incarnation(&id, yesterday, 2, 1, 600, 1, yesterday + 3_600_000);
    assert!(refused.as_ref().is_err_and(|e| e.contains("has ended")), "{refused:?}");
    // Releases and reports for the old period still land (they only return or account).
    ledger.release_up_to(&id, yesterday, 1, 1, 400);
    assert!(ledger.grant_to_incarnation(&id, yesterday, 3, 1, 10, 1, yesterday + 7_200_000).is_err());
    assert_eq!(ledger.accounts[&id][&today].available(), 0);
}

/// The other direction (seed 4): a leader a day *ahead* stamped tomorrow and opened tomorrow's account, so
/// its node spent tomorrow's budget today. A period opens only when most nodes' own clocks are in it;
/// today is never ended by one fast clock, and a real rollover opens the new day once most nodes see it.
#[test]
fn a_fast_leader_alone_opens_no_period() {
    let (mut ledger, id) = ledger(1000);
    let today = 100 * DAY;
    let tomorrow = today + DAY;
    for node in 1..=3 {
        ledger.observe_clock(node, today + 1);
    }
    assert_eq!(ledger.grant_to_incarnation(&id, today, 2, 1, 100, 1, today + 1).map(|g| g.0), Ok(100));
    ledger.observe_clock(1, tomorrow + 1);
    let refused = ledger.grant_to_incarnation(&id, tomorrow, 1, 1, 100, 1, tomorrow + 1);
    assert!(refused.as_ref().is_err_and(|e| e.contains("has not begun")), "{refused:?}");
    assert!(!ledger.accounts[&id].contains_key(&tomorrow), "no account was opened");
    // Its clock fixed, today goes on.
    ledger.observe_clock(1, today + 2);
    assert_eq!(ledger.grant_to_incarnation(&id, today, 3, 1, 100, 1, today + 2).map(|g| g.0), Ok(100));
    // Midnight for real: one node seeing it is not enough, two of three are.
    ledger.observe_clock(2, tomorrow + 10);
    assert!(ledger.grant_to_incarnation(&id, tomorrow, 2, 2, 100, 1, tomorrow + 10).is_err());
    ledger.observe_clock(3, tomorrow + 20);
    assert_eq!(ledger.grant_to_incarnation(&id, tomorrow, 2, 3, 100, 1, tomorrow + 20).map(|g| g.0), Ok(100));
    // And from then on today is over.
    assert!(ledger.grant_to_incarnation(&id, today, 1, 2, 10, 1, today + 3).is_err());
}
