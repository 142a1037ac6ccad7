//! Criterion benchmarks of the budget path (issue 5):
//! - `admission/*`: what a budgeted request adds on the hot path — the local escrow reservation and its
//!   settlement, alone and through `BudgetManager::admit` on a real one-node cluster (allowance already
//!   granted, so no Raft round trip), against the same call with no budget configured.
//! - `ledger/*`: the cost of applying one ledger command in the state machine as the state grows (the
//!   state machine clones the published state per applied batch, then applies).
//!
//! Run: `cargo bench -p tollgate-bench --bench budget` (quick: `-- --warm-up-time 1 --measurement-time 2`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use tollgate::auth::Principal;
use tollgate::budget::LocalAccount;
use tollgate::config::Price;
use tollgate_consensus::resources::OrgConfig;
use tollgate_consensus::{BudgetSpec, Command, ControlState, Period, Request, Scope, UsageKey, UsageTotals};
use tollgate_tests::cluster::TestCluster;

fn spec(limit: u64) -> BudgetSpec {
    BudgetSpec {
        scope: Scope { org: "acme".into(), team: None, key_id: None },
        limit_tokens: Some(limit),
        limit_cost: None,
        period: Period::Month,
        tokens_per_minute: None,
        requests_per_minute: None,
        epoch: 0,
    }
}

fn request(id: u64, command: Command) -> Request {
    Request { request_id: format!("r{id}"), actor: "bench".into(), at_ms: 0, command }
}

/// A state with a full de-duplication window, a full audit trail and `usage_rows` usage rows.
fn large_state(usage_rows: u64) -> ControlState {
    let mut state = ControlState::default();
    let mut index = 0;
    let mut next = |state: &mut ControlState, command: Command| {
        index += 1;
        state.apply(index, &request(index, command));
    };
    next(&mut state, Command::PutOrg { org: OrgConfig::named("acme") });
    next(&mut state, Command::SetBudget { budget: spec(u64::MAX / 4) });
    for i in 0..1_000 {
        next(&mut state, Command::PutOrg { org: OrgConfig::named(format!("org-{i}")) });
    }
    let rows: Vec<(UsageKey, UsageTotals)> = (0..usage_rows)
        .map(|i| {
            let key = UsageKey {
                hour_ms: (i / 100) * 3_600_000,
                org: format!("org-{}", i % 100),
                team: None,
                key_id: format!("key-{}", i % 100),
                model: "gpt-4o-mini".into(),
            };
            (key, UsageTotals { requests: 1, input_tokens: 10, output_tokens: 10, cost_micro_usd: 1 })
        })
        .collect();
    for chunk in rows.chunks(500) {
        next(&mut state, Command::RecordUsage { node: 1, rows: chunk.to_vec() });
    }
    for _ in 0..10_000 {
        next(&mut state, Command::Report { scope_id: "org:acme".into(), period_start: 0, node: 1, delta: 1 });
    }
    state
}

fn bench_ledger(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger");
    for rows in [0u64, 20_000] {
        let state = large_state(rows);
        let mut id = 1_000_000;
        group.bench_function(format!("clone_and_apply_grant/{rows}_usage_rows"), |b| {
            b.iter(|| {
                id += 1;
                // What the state machine does per applied batch: copy-on-write of the published state.
                let mut next = state.clone();
                let command = Command::Grant {
                    scope_id: "org:acme".into(),
                    period_start: 0,
                    node: 2,
                    amount: 1000,
                    min_amount: 1,
                };
                black_box(next.apply(id, &request(id, command)))
            })
        });
    }
    group.finish();
}

fn bench_admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    let account = LocalAccount::new("org:acme".into(), 0, spec(u64::MAX / 4), 1);
    account.observe_granted_total(u64::MAX / 8);
    group.bench_function("local_account/reserve_and_settle", |b| {
        b.iter(|| {
            assert!(account.try_reserve(black_box(1_300)));
            account.settle(1_300, black_box(420));
        })
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = runtime.block_on(TestCluster::start(1));
    let node = cluster.node(1);
    let consensus = node.gateway.consensus.clone().unwrap();
    runtime.block_on(async {
        consensus.write(request(1, Command::PutOrg { org: OrgConfig::named("acme") })).await.unwrap();
        consensus.write(request(2, Command::SetBudget { budget: spec(u64::MAX / 4) })).await.unwrap();
    });
    let budget = node.gateway.budget.clone().unwrap();
    let principal = Principal { key_id: "k1".into(), org: "acme".into(), team: None, allowed_models: None };
    let budgets: HashMap<String, BudgetSpec> = [("org:acme".to_owned(), spec(u64::MAX / 4))].into();
    let none: HashMap<String, BudgetSpec> = HashMap::new();
    let price = Price { input: 0.15, output: 0.6 };
    // The first admission asks the ledger for allowance; later ones spend it locally.
    runtime.block_on(budget.admit(&budgets, &principal, price, 120, 256, 1)).unwrap();
    group.bench_function("admit_and_settle/budgeted", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut admission = budget.admit(&budgets, &principal, price, 120, 256, 1).await.unwrap().unwrap();
                admission.settle(tollgate::budget::Settlement::Reported { input: 118, output: 97 });
            })
        })
    });
    group.bench_function("admit_and_settle/no_budget", |b| {
        b.iter(|| {
            runtime.block_on(async {
                assert!(budget.admit(&none, &principal, price, 120, 256, 1).await.unwrap().is_none());
            })
        })
    });
    group.finish();
    drop(cluster);
    runtime.shutdown_timeout(Duration::from_secs(1));
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_admission(&mut criterion);
    bench_ledger(&mut criterion);
    criterion.final_summary();
}
