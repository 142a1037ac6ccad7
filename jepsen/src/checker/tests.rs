#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use super::*;
use crate::history::{pair, History};

fn sample(history: &History, org: &str, used: u64, held: u64, limit: u64, served: u64) {
    history.record("sampler", OpType::Invoke, "budget", json!({"org": org}));
    history.record(
        "sampler",
        OpType::Ok,
        "budget",
        json!({"org": org, "node": 1, "period_start": 5, "limit": limit, "used": used, "held": held,
            "used_by_node": {"1": used}, "served": served}),
    );
}

#[test]
fn s1_passes_within_the_limit_and_shows_operations_when_over() {
    let history = History::new(Instant::now());
    history.record("chat-1-0", OpType::Invoke, "chat", json!({"org": "acme"}));
    history.record("chat-1-0", OpType::Ok, "chat", json!({"status": 200}));
    sample(&history, "acme", 90, 0, 100, 120);
    let events = history.events();
    let ops = pair(&events);
    let within = [Served { org: "acme".into(), limit: Some(100), input: 40, output: 60 }];
    assert_eq!(s1(&within, &events, &ops).verdict, Verdict::Pass);
    let over = [
        Served { org: "acme".into(), limit: Some(100), input: 41, output: 60 },
        Served { org: "ctl".into(), limit: None, input: 1000, output: 1000 },
    ];
    let result = s1(&over, &events, &ops);
    assert_eq!(result.verdict, Verdict::Fail);
    assert!(result.summary.contains("acme served 101 of 100"), "{}", result.summary);
    assert_eq!(result.evidence.len(), 3, "totals, the first sample over, the chat op: {:?}", result.evidence);
}

#[test]
fn s2_catches_overcommit_and_used_going_backwards() {
    let good = History::new(Instant::now());
    sample(&good, "acme", 10, 50, 100, 0);
    sample(&good, "acme", 40, 60, 100, 0);
    assert_eq!(s2(&good.events()).verdict, Verdict::Pass);
    let bad = History::new(Instant::now());
    sample(&bad, "acme", 40, 61, 100, 0);
    sample(&bad, "acme", 30, 0, 100, 0);
    let result = s2(&bad.events());
    assert_eq!(result.verdict, Verdict::Fail);
    assert_eq!(result.evidence.len(), 2, "{:?}", result.evidence);
    assert_eq!(s2(&[]).verdict, Verdict::Unknown);
}

/// The state machine's own count (`ledger_s2`, every applied ledger change) fails S2 even when every
/// sampled ledger state looked sound; without it S2 says the check was not available.
#[test]
fn s2_reads_the_state_machines_check_of_every_applied_index() {
    let audited = |history: &History, checked: u64, violations: u64, first: Option<&str>| {
        history.record("sampler", OpType::Invoke, "budget", json!({"org": "acme"}));
        history.record(
            "sampler",
            OpType::Ok,
            "budget",
            json!({"org": "acme", "period_start": 5, "limit": 100,
            "used": 10, "held": 20, "used_by_node": {"1": 10},
            "ledger_s2": {"checked": checked, "violations": violations, "first_violation": first}}),
        );
    };
    let sound = History::new(Instant::now());
    audited(&sound, 40, 0, None);
    audited(&sound, 95, 0, None);
    let result = s2(&sound.events());
    assert_eq!(result.verdict, Verdict::Pass);
    assert!(result.summary.contains("95 ledger changes checked, 0 violations"), "{}", result.summary);

    let broken = History::new(Instant::now());
    audited(&broken, 40, 0, None);
    audited(&broken, 60, 1, Some("grant 50 of org:acme to node 2: granted − released 130 > limit 100"));
    let result = s2(&broken.events());
    assert_eq!(result.verdict, Verdict::Fail);
    assert_eq!(result.evidence.len(), 1, "{:?}", result.evidence);
    assert!(result.evidence[0]["first_violation"].as_str().unwrap().starts_with("grant 50"));

    let older = History::new(Instant::now());
    sample(&older, "acme", 10, 50, 100, 0);
    assert!(s2(&older.events()).summary.contains("not exposed by this tollgate"));
}

#[test]
fn s3_needs_billed_at_least_served() {
    let served = [Served { org: "acme".into(), limit: Some(100), input: 10, output: 20 }];
    let billed = |used: Option<u64>| BTreeMap::from([("acme".to_owned(), used)]);
    assert_eq!(s3(&served, &billed(Some(30)), &[], &[]).verdict, Verdict::Pass);
    assert_eq!(s3(&served, &billed(Some(29)), &[], &[]).verdict, Verdict::Fail);
    assert_eq!(s3(&served, &billed(None), &[], &[]).verdict, Verdict::Unknown);
    // A failure shows what is still held (a killed node's unreported allowance) next to the bill.
    let history = History::new(Instant::now());
    sample(&history, "acme", 20, 15, 100, 25);
    let result = s3(&served, &billed(Some(20)), &history.events(), &[]);
    assert_eq!(result.verdict, Verdict::Fail, "still a failure: held is not billed");
    assert_eq!(result.evidence[0]["held_at_last_sample"], json!(15));
    assert_eq!(result.evidence[0]["billed_plus_held_covers_served"], json!(true));
}

#[test]
fn l1_requires_agreement_and_every_region_serving_in_time() {
    let good = Convergence {
        agreed_after_s: Some(1.0),
        leader: Some(2),
        applied_indexes: vec![Some(9); 3],
        probes: vec![(1, Some(0.1), None), (2, Some(0.2), None), (3, Some(4.0), None)],
    };
    assert_eq!(l1(&good, 10.0).verdict, Verdict::Pass);
    let mut late = good.clone();
    late.probes[2] = (3, None, Some("503 budget_unavailable".into()));
    assert_eq!(l1(&late, 10.0).verdict, Verdict::Fail);
    let mut split = good;
    split.agreed_after_s = None;
    assert_eq!(l1(&split, 10.0).verdict, Verdict::Fail);
}

#[test]
fn linearizability_reads_the_history_and_honours_indeterminate_writes() {
    let history = History::new(Instant::now());
    history.record("config-0", OpType::Invoke, "write", json!({"key": 1, "value": 7}));
    history.record("config-0", OpType::Info, "write", json!({"key": 1, "value": 7, "error": "timeout"}));
    history.record("config-1", OpType::Invoke, "write", json!({"key": 1, "value": 8}));
    history.record("config-1", OpType::Fail, "write", json!({"key": 1, "value": 8, "status": 400}));
    history.record("config-1", OpType::Invoke, "read", json!({"key": 1}));
    history.record("config-1", OpType::Ok, "read", json!({"key": 1, "value": 7}));
    let ops = pair(&history.events());
    assert_eq!(linearizability(&ops, 100_000).verdict, Verdict::Pass);
    // The failed write's value showing up is a violation.
    history.record("config-1", OpType::Invoke, "read", json!({"key": 1}));
    history.record("config-1", OpType::Ok, "read", json!({"key": 1, "value": 8}));
    let result = linearizability(&pair(&history.events()), 100_000);
    assert_eq!(result.verdict, Verdict::Fail);
    assert_eq!(result.evidence[0]["cannot_linearize"]["complete"]["value"]["value"], 8);
}

#[test]
fn valid_requests_fails_on_any_non_budget_4xx() {
    let clean = serde_json::json!({"counts": {}, "examples": []});
    assert_eq!(super::valid_requests(&clean).verdict, super::Verdict::Pass);
    let bad = serde_json::json!({"counts": {"401 invalid_api_key": 2}, "examples": [{"invoke": 1}]});
    let result = super::valid_requests(&bad);
    assert_eq!(result.verdict, super::Verdict::Fail);
    assert!(result.summary.contains("2 × 401 invalid_api_key"), "{}", result.summary);
    assert_eq!(result.evidence.len(), 1);
}

#[test]
fn s1_and_s3_count_per_period_across_a_rollover() {
    let history = History::new(Instant::now());
    history.record("chat-1-0", OpType::Invoke, "chat", json!({"org": "acme", "prompt_bytes": 20}));
    std::thread::sleep(std::time::Duration::from_millis(2));
    // 100 tokens served in the old period, one request (≤ 20 + 16 + 64 = 100 tokens) in flight at the boundary.
    history.record("nemesis", OpType::Info, "period-boundary", json!({"served": {"acme": 100}}));
    std::thread::sleep(std::time::Duration::from_millis(2));
    history.record("chat-1-0", OpType::Ok, "chat", json!({"status": 200}));
    let events = history.events();
    let ops = pair(&events);
    let org = |total: u64| [Served { org: "acme".into(), limit: Some(100), input: 0, output: total }];
    // 100 + 100 (new period) + up to 100 of the old period's request in flight: within both limits.
    assert_eq!(s1(&org(300), &events, &ops).verdict, Verdict::Pass, "{:?}", s1(&org(300), &events, &ops));
    let over = s1(&org(301), &events, &ops);
    assert_eq!(over.verdict, Verdict::Fail);
    assert!(over.evidence[0]["violation"].as_str().unwrap().contains("new period"), "{:?}", over.evidence);
    // The old period over its limit by the boundary.
    let early = History::new(Instant::now());
    early.record("nemesis", OpType::Info, "period-boundary", json!({"served": {"acme": 101}}));
    let result = s1(&org(101), &early.events(), &pair(&early.events()));
    assert_eq!(result.verdict, Verdict::Fail);
    assert!(result.evidence[0]["violation"].as_str().unwrap().contains("old period"));
    // S3: the new period must bill at least 300 − 100 − 100.
    let billed = |used: u64| BTreeMap::from([("acme".to_owned(), Some(used))]);
    assert_eq!(s3(&org(300), &billed(100), &events, &ops).verdict, Verdict::Pass);
    assert_eq!(s3(&org(300), &billed(99), &events, &ops).verdict, Verdict::Fail);
    // The old period's bill, read after heal, must cover the 100 served before the boundary.
    let old_bill = |used: u64| {
        let mut with_bill = events.clone();
        let last = with_bill.last().map_or(0.0, |event| event.time_ms);
        with_bill.push(crate::history::Event {
            index: with_bill.len(),
            time_ms: last + 1.0,
            process: "settle-old-acme".into(),
            kind: OpType::Ok,
            f: "budget-old-period".into(),
            value: json!({"org": "acme", "used": used}),
        });
        with_bill
    };
    let covered = s3(&org(300), &billed(100), &old_bill(100), &ops);
    assert_eq!(covered.verdict, Verdict::Pass);
    assert!(covered.summary.contains("old period billed 100 ≥ served before the boundary 100"), "{}", covered.summary);
    let short = s3(&org(300), &billed(100), &old_bill(99), &ops);
    assert_eq!(short.verdict, Verdict::Fail);
    assert_eq!(short.evidence[0]["period"], json!("old"));
}

#[test]
fn calm_windows_leave_out_faults_and_the_time_after_them() {
    let windows = budget::calm_windows(&[(5_000.0, 9_000.0), (10_000.0, 14_000.0)], 30_000.0, 3_000.0);
    assert_eq!(windows, vec![(0.0, 5_000.0), (17_000.0, 30_000.0)], "9+3 s is past the second start");
    assert_eq!(budget::calm_windows(&[], 4_000.0, 3_000.0), vec![(0.0, 4_000.0)]);
}

#[test]
fn utilisation_in_calm_phases_judges_refusals_on_the_ledger() {
    let refused = |history: &History, handed_out: u64| {
        history.record("chat-1-0", OpType::Invoke, "chat", json!({"org": "acme"}));
        history.record(
            "chat-1-0",
            OpType::Fail,
            "chat",
            json!({"status": 429, "code": "budget_exceeded", "served_then": 50}),
        );
        sample(history, "acme", handed_out, 0, 100, 50);
    };
    let served = [Served { org: "acme".into(), limit: Some(100), input: 0, output: 50 }];
    let good = History::new(Instant::now());
    refused(&good, 95);
    let events = good.events();
    let result = budget::utilisation_calm(&served, &events, &pair(&events), &[], 60_000.0, 0.9);
    assert_eq!(result.verdict, Verdict::Pass, "{result:?}");
    let bad = History::new(Instant::now());
    refused(&bad, 60);
    let events = bad.events();
    let result = budget::utilisation_calm(&served, &events, &pair(&events), &[], 60_000.0, 0.9);
    assert_eq!(result.verdict, Verdict::Fail, "{result:?}");
    // The same refusal during a fault (and its margin) is not judged.
    let result = budget::utilisation_calm(&served, &events, &pair(&events), &[(0.0, 50_000.0)], 60_000.0, 0.9);
    assert_eq!(result.verdict, Verdict::Pass, "{result:?}");
}
