#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const INFO: f64 = f64::INFINITY;

fn op(id: usize, op: RegisterOp, call_ms: f64, return_ms: f64) -> TimedOp {
    TimedOp { id, op, call_ms, return_ms }
}

fn w(id: usize, value: u64, call: f64, ret: f64) -> TimedOp {
    op(id, RegisterOp::Write(value), call, ret)
}

fn r(id: usize, value: Option<u64>, call: f64, ret: f64) -> TimedOp {
    op(id, RegisterOp::Read(value), call, ret)
}

fn verdict(ops: &[TimedOp]) -> Verdict {
    check(ops, None, 1_000_000)
}

#[test]
fn sequential_and_concurrent_good_histories_pass() {
    assert_eq!(verdict(&[]), Verdict::Linearizable);
    assert_eq!(verdict(&[w(0, 1, 0.0, 1.0), r(1, Some(1), 2.0, 3.0)]), Verdict::Linearizable);
    // A read overlapping a write may see either value.
    assert_eq!(verdict(&[w(0, 1, 0.0, 10.0), r(1, None, 1.0, 2.0), r(2, Some(1), 3.0, 4.0)]), Verdict::Linearizable);
    // Two overlapping writes, reads agree on the order 2 then 1.
    let history = [w(0, 1, 0.0, 10.0), w(1, 2, 0.0, 10.0), r(2, Some(2), 1.0, 11.0), r(3, Some(1), 12.0, 13.0)];
    assert_eq!(verdict(&history), Verdict::Linearizable);
    // Touching intervals count as concurrent.
    assert_eq!(verdict(&[w(0, 1, 0.0, 5.0), r(1, Some(1), 5.0, 6.0)]), Verdict::Linearizable);
    assert_eq!(verdict(&[r(0, None, 0.0, 5.0), w(1, 1, 5.0, 6.0)]), Verdict::Linearizable);
}

#[test]
fn indeterminate_writes_may_or_may_not_take_effect() {
    // Seen later: took effect, possibly long after its call.
    assert_eq!(verdict(&[w(0, 7, 0.0, INFO), r(1, None, 5.0, 6.0), r(2, Some(7), 50.0, 51.0)]), Verdict::Linearizable);
    // Never seen: never took effect.
    assert_eq!(verdict(&[w(0, 7, 0.0, INFO), w(1, 8, 10.0, 11.0), r(2, Some(8), 20.0, 21.0)]), Verdict::Linearizable);
    // Took effect after an acknowledged write: a later read sees it instead of the acknowledged one.
    assert_eq!(verdict(&[w(0, 7, 0.0, INFO), w(1, 8, 10.0, 11.0), r(2, Some(7), 20.0, 21.0)]), Verdict::Linearizable);
}

#[test]
fn bad_histories_fail_with_the_blocked_operation() {
    // A value nobody wrote.
    assert!(matches!(
        verdict(&[w(0, 1, 0.0, 1.0), r(1, Some(9), 2.0, 3.0)]),
        Verdict::NotLinearizable { blocked: 1, .. }
    ));
    // A stale read: 2 replaced 1 before the read began.
    let stale = [w(0, 1, 0.0, 1.0), w(1, 2, 2.0, 3.0), r(2, Some(1), 4.0, 5.0)];
    assert!(matches!(verdict(&stale), Verdict::NotLinearizable { blocked: 2, .. }), "{:?}", verdict(&stale));
    // A lost acknowledged write.
    let lost = [w(0, 1, 0.0, 1.0), r(1, None, 2.0, 3.0)];
    assert!(matches!(verdict(&lost), Verdict::NotLinearizable { blocked: 1, .. }));
    // An indeterminate write read before it was invoked.
    let early = [r(0, Some(5), 0.0, 1.0), w(1, 5, 2.0, INFO)];
    assert!(matches!(verdict(&early), Verdict::NotLinearizable { blocked: 0, .. }));
    // Reads disagree on the order of two concurrent writes (no single order explains both).
    let flip = [
        w(0, 1, 0.0, 10.0),
        w(1, 2, 0.0, 10.0),
        r(2, Some(1), 11.0, 12.0),
        r(3, Some(2), 13.0, 14.0),
        r(4, Some(1), 15.0, 16.0),
    ];
    assert!(matches!(verdict(&flip), Verdict::NotLinearizable { .. }), "{:?}", verdict(&flip));
}

#[test]
fn reports_the_longest_consistent_prefix() {
    let history = [w(10, 1, 0.0, 1.0), w(11, 2, 2.0, 3.0), r(12, Some(1), 4.0, 5.0)];
    match verdict(&history) {
        Verdict::NotLinearizable { blocked, prefix } => {
            assert_eq!(blocked, 12);
            assert_eq!(prefix, vec![10, 11]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_concurrent_operations_finish_quickly() {
    // 200 ops in overlapping windows of 5, each read seeing the latest write: linearizable.
    let mut history = Vec::new();
    for index in 0..100u64 {
        let t = index as f64 * 10.0;
        history.push(w(history.len(), index + 1, t, t + 30.0));
        history.push(r(history.len(), Some(index + 1), t + 31.0, t + 35.0));
    }
    assert_eq!(check(&history, None, 2_000_000), Verdict::Linearizable);
    let mut broken = history.clone();
    broken.push(r(broken.len(), Some(3), 5_000.0, 5_001.0));
    assert!(matches!(check(&broken, None, 2_000_000), Verdict::NotLinearizable { .. }));
    assert!(matches!(check(&broken, None, 10), Verdict::Unknown { .. }));
}
