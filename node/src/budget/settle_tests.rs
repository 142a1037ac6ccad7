use super::*;
use tollgate_consensus::Scope;

fn reserve(reserved: u64) -> (Admission, Arc<LocalAccount>) {
    let spec = BudgetSpec {
        scope: Scope { org: "a".into(), team: None, key_id: None },
        limit_tokens: Some(10_000),
        limit_cost: None,
        period: Period::Day,
        tokens_per_minute: None,
        requests_per_minute: None,
        epoch: 0,
    };
    let account = Arc::new(LocalAccount::new("org:a".into(), 0, spec, 1));
    account.observe_granted_total(10_000);
    assert!(account.try_reserve(reserved));
    let admission = Admission {
        reservations: vec![Reservation { account: account.clone(), units: reserved }],
        rate_reservations: Vec::new(),
        output_cap: reserved / 2,
        input_tokens: reserved / 2,
        choices: 1,
        price: Price::default(),
        settled: false,
        limit: 10_000,
        remaining: 10_000,
        reset_seconds: None,
    };
    (admission, account)
}

#[test]
fn reported_usage_settles_at_what_was_billed() {
    let (mut admission, account) = reserve(500);
    admission.settle(Settlement::Reported { input: 30, output: 70 });
    assert_eq!(account.available(), 10_000 - 100);
    admission.settle(Settlement::NotBilled);
    assert_eq!(account.available(), 10_000 - 100, "settles once");
}

#[test]
fn unknown_usage_charges_the_whole_reservation_or_what_was_seen_if_more() {
    let (mut admission, account) = reserve(500);
    admission.settle(Settlement::Unknown { at_least_input: 30, at_least_output: 41, provider_input: None });
    assert_eq!(account.available(), 10_000 - 500, "a cut stream may have generated up to its cap");
    let (mut admission, account) = reserve(500);
    admission.settle(Settlement::Unknown { at_least_input: 300, at_least_output: 400, provider_input: None });
    assert_eq!(account.available(), 10_000 - 700, "an overrun seen is charged, not forgiven");
    let (admission, account) = reserve(500);
    drop(admission);
    assert_eq!(account.available(), 10_000 - 500, "dropped without a verdict: charged in full");
    let (mut admission, account) = reserve(500);
    admission.settle(Settlement::NotBilled);
    assert_eq!(account.available(), 10_000, "never sent: nothing charged");
}

#[test]
fn an_input_count_the_provider_reported_replaces_the_free_bound() {
    // Reserved 500: a bound of 250 input + 250 output. The provider said the input was 40.
    let (mut admission, account) = reserve(500);
    admission.settle(Settlement::Unknown { at_least_input: 40, at_least_output: 10, provider_input: Some(40) });
    assert_eq!(account.available(), 10_000 - 290, "40 input + the whole output cap");
    let (mut admission, account) = reserve(500);
    admission.settle(Settlement::Unknown { at_least_input: 0, at_least_output: 0, provider_input: Some(900) });
    assert_eq!(account.available(), 10_000 - 500, "a count above the bound is not trusted to lower anything");
}
