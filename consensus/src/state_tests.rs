use super::*;
use crate::ledger::{BudgetSpec, Scope};
use crate::resources::TeamConfig;

fn provider(name: &str) -> ProviderConfig {
    ProviderConfig::mock(name, None)
}

fn model(name: &str, provider: &str) -> ModelConfig {
    ModelConfig::single_target(name, provider)
}

fn request(id: &str, command: Command) -> Request {
    Request { request_id: id.into(), actor: "test".into(), at_ms: 0, command }
}

fn key(id: &str, org: &str, secret_byte: char) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        key_sha256: secret_byte.to_string().repeat(64),
        name: None,
        org: org.into(),
        team: None,
        models: None,
        created_at_ms: 0,
    }
}

#[test]
fn models_need_existing_providers_and_providers_in_use_cannot_go() {
    let mut state = ControlState::default();
    let rejected = state.apply(1, &request("r1", Command::PutModel { model: model("m", "p") }));
    assert!(matches!(rejected, Response::Rejected { ref reason } if reason.contains("unknown provider")));
    assert!(state.config.models.is_empty());
    assert_eq!(
        state.apply(2, &request("r2", Command::PutProvider { provider: provider("p") })),
        Response::Applied { index: 2 }
    );
    assert_eq!(
        state.apply(3, &request("r3", Command::PutModel { model: model("m", "p") })),
        Response::Applied { index: 3 }
    );
    let rejected = state.apply(4, &request("r4", Command::DeleteProvider { name: "p".into() }));
    assert!(matches!(rejected, Response::Rejected { .. }));
    assert!(state.config.providers.contains_key("p"));
}

#[test]
fn duplicate_request_ids_are_no_ops_that_return_the_first_result() {
    let mut state = ControlState::default();
    state.apply(1, &request("p", Command::PutProvider { provider: provider("p") }));
    state.apply(2, &request("o", Command::PutOrg { org: OrgConfig::named("acme") }));
    let first = state.apply(3, &request("k", Command::CreateKey { key: key("k1", "acme", 'a') }));
    assert_eq!(first, Response::Applied { index: 3 });
    let before = state.clone();
    // The same request retried (e.g. after a leader change) must not apply twice.
    assert_eq!(state.apply(4, &request("k", Command::CreateKey { key: key("k1", "acme", 'a') })), first);
    assert_eq!(state, before);
}

#[test]
fn batches_are_all_or_nothing() {
    let mut state = ControlState::default();
    let batch = Command::Batch {
        commands: vec![
            Command::PutProvider { provider: provider("p") },
            Command::PutModel { model: model("m", "p") },
            Command::PutModel { model: model("bad", "missing") },
        ],
    };
    let result = state.apply(1, &request("b", batch));
    assert!(matches!(result, Response::Rejected { ref reason } if reason.starts_with("commands[2]")));
    assert!(state.config.providers.is_empty() && state.config.models.is_empty());
    assert_eq!(state.history.audit.len(), 1, "rejections are audited too");
}

#[test]
fn keys_need_orgs_and_unique_secrets_and_block_org_deletion() {
    let mut state = ControlState::default();
    assert!(matches!(
        state.apply(1, &request("k0", Command::CreateKey { key: key("k1", "acme", 'a') })),
        Response::Rejected { .. }
    ));
    state.apply(2, &request("o", Command::PutOrg { org: OrgConfig::named("acme") }));
    assert_eq!(
        state.apply(3, &request("k1", Command::CreateKey { key: key("k1", "acme", 'a') })),
        Response::Applied { index: 3 }
    );
    assert!(matches!(
        state.apply(4, &request("k2", Command::CreateKey { key: key("k2", "acme", 'a') })),
        Response::Rejected { .. }
    ));
    assert!(matches!(
        state.apply(5, &request("d", Command::DeleteOrg { name: "acme".into() })),
        Response::Rejected { .. }
    ));
    assert_eq!(state.apply(6, &request("r", Command::RevokeKey { id: "k1".into() })), Response::Applied { index: 6 });
    assert_eq!(
        state.apply(7, &request("d2", Command::DeleteOrg { name: "acme".into() })),
        Response::Applied { index: 7 }
    );
}

#[test]
fn dedup_window_and_audit_are_bounded() {
    let mut state = ControlState::default();
    for index in 0..(DEDUP_WINDOW as u64 + 5) {
        state.apply(index + 1, &request(&format!("r{index}"), Command::PutOrg { org: OrgConfig::named("o") }));
    }
    assert_eq!(state.history.applied_requests.len(), DEDUP_WINDOW);
    assert_eq!(state.history.audit.len(), AUDIT_WINDOW);
    assert!(!state.history.applied_requests.contains_key("r0"));
}

#[test]
fn bootstrap_applies_once() {
    let mut state = ControlState::default();
    let boot = |id: &str, org: &str| {
        request(
            id,
            Command::Bootstrap {
                commands: vec![Command::PutOrg { org: OrgConfig::named(org) }],
                cluster_id: Some(format!("cluster-of-{org}")),
            },
        )
    };
    assert_eq!(state.apply(1, &boot("b1", "first")), Response::Applied { index: 1 });
    assert!(state.config.bootstrapped);
    assert_eq!(state.config.cluster_id.as_deref(), Some("cluster-of-first"));
    assert!(matches!(state.apply(2, &boot("b2", "second")), Response::Rejected { .. }));
    assert!(state.config.orgs.contains_key("first") && !state.config.orgs.contains_key("second"));
    assert_eq!(state.config.cluster_id.as_deref(), Some("cluster-of-first"), "the cluster keeps its id");
}

#[test]
fn a_member_cannot_register_a_replaced_data_dir() {
    let mut state = ControlState::default();
    let info = crate::types::NodeInfo { raft_addr: "a:1".into(), api_addr: "a:2".into(), admin_addr: "a:3".into() };
    let register = |id: &str, data_dir: &str| {
        request(id, Command::RegisterNode { id: 2, info: info.clone(), data_dir: Some(data_dir.into()) })
    };
    assert_eq!(state.apply(1, &register("r1", "d-old")), Response::Applied { index: 1 });
    assert_eq!(state.apply(2, &register("r2", "d-old")), Response::Applied { index: 2 }, "a restart");
    let Response::Rejected { reason } = state.apply(3, &register("r3", "d-new")) else {
        panic!("a wiped data dir registered as if nothing happened")
    };
    assert!(reason.contains("remove-node --id 2"), "{reason}");
    assert_eq!(state.config.data_dirs.get(&2).map(String::as_str), Some("d-old"));
    // Once the membership no longer holds it (remove-node), the state machine forgets the record and the
    // node registers anew (see store::state_machine's membership entries).
    state.config.data_dirs.remove(&2);
    assert_eq!(state.apply(4, &register("r4", "d-new")), Response::Applied { index: 4 });
}

#[test]
fn ledger_commands_apply_in_place_deduplicate_and_skip_the_audit() {
    let mut state = ControlState::default();
    state.apply(1, &request("o", Command::PutOrg { org: OrgConfig::named("acme") }));
    let scope = Scope { org: "acme".into(), team: None, key_id: None };
    let budget = BudgetSpec {
        scope: scope.clone(),
        limit_tokens: Some(100),
        limit_cost: None,
        period: crate::ledger::Period::Day,
        tokens_per_minute: None,
        requests_per_minute: None,
        epoch: 0,
    };
    assert_eq!(state.apply(2, &request("b", Command::SetBudget { budget })), Response::Applied { index: 2 });
    let grant = Command::Grant { scope_id: scope.id(), period_start: 0, node: 1, amount: 60, min_amount: 1 };
    assert_eq!(
        state.apply(3, &request("g1", grant.clone())),
        Response::Granted { index: 3, amount: 60, available: 40, node_total: 0 }
    );
    assert_eq!(
        state.apply(4, &request("g1", grant.clone())),
        Response::Granted { index: 3, amount: 60, available: 40, node_total: 0 },
        "a retried grant is not granted twice"
    );
    assert_eq!(
        state.apply(5, &request("g2", grant)),
        Response::Granted { index: 5, amount: 40, available: 0, node_total: 0 }
    );
    assert_eq!(state.history.audit.len(), 2, "grants are not audited");
    let unknown = Scope { org: "nope".into(), team: None, key_id: None };
    let bad = BudgetSpec {
        scope: unknown,
        limit_tokens: Some(1),
        limit_cost: None,
        period: crate::ledger::Period::Day,
        tokens_per_minute: None,
        requests_per_minute: None,
        epoch: 0,
    };
    assert!(matches!(state.apply(6, &request("bad", Command::SetBudget { budget: bad })), Response::Rejected { .. }));
}

/// Snapshots are JSON: every part of the state must survive a round trip (JSON map keys must be strings;
/// a struct-keyed map once broke snapshot builds and with them the whole cluster).
#[test]
fn the_whole_state_round_trips_through_json() {
    let mut state = ControlState::default();
    state.apply(1, &request("p", Command::PutProvider { provider: provider("p") }));
    state.apply(2, &request("m", Command::PutModel { model: model("m", "p") }));
    state.apply(3, &request("o", Command::PutOrg { org: OrgConfig::named("acme") }));
    state.apply(4, &request("t", Command::PutTeam { team: TeamConfig { org: "acme".into(), name: "ml".into() } }));
    state.apply(5, &request("k", Command::CreateKey { key: key("k1", "acme", 'b') }));
    state.apply(
        6,
        &request(
            "n",
            Command::RegisterNode {
                id: 1,
                info: crate::types::NodeInfo {
                    raft_addr: "a:1".into(),
                    api_addr: "a:2".into(),
                    admin_addr: "a:3".into(),
                },
                data_dir: Some("d-1".into()),
            },
        ),
    );
    let scope = Scope { org: "acme".into(), team: None, key_id: None };
    let budget = BudgetSpec {
        scope: scope.clone(),
        limit_tokens: Some(100),
        limit_cost: None,
        period: crate::ledger::Period::Day,
        tokens_per_minute: None,
        requests_per_minute: None,
        epoch: 0,
    };
    state.apply(7, &request("b", Command::SetBudget { budget }));
    state.apply(
        8,
        &request("g", Command::Grant { scope_id: scope.id(), period_start: 0, node: 1, amount: 10, min_amount: 1 }),
    );
    state.apply(9, &request("r", Command::Report { scope_id: scope.id(), period_start: 0, node: 1, delta: 5 }));
    let usage_key =
        crate::usage::UsageKey { hour_ms: 0, org: "acme".into(), team: None, key_id: "k1".into(), model: "m".into() };
    let totals = crate::usage::UsageTotals { requests: 1, input_tokens: 2, output_tokens: 3, cost_micro_usd: 4 };
    state.apply(10, &request("u", Command::RecordUsage { node: 1, rows: vec![(usage_key, totals)] }));
    assert!(!state.history.usage.rows.is_empty() && !state.config.ledger.accounts.is_empty());
    let json = serde_json::to_vec(&state).unwrap_or_else(|e| panic!("state must serialize: {e}"));
    let back: ControlState = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("state must deserialize: {e}"));
    assert_eq!(back, state);
}

#[test]
fn idempotency_keys_outlive_the_dedup_window_for_a_day() {
    let mut state = ControlState::default();
    let at =
        |ms: u64, id: &str, command: Command| Request { request_id: id.into(), actor: "t".into(), at_ms: ms, command };
    let put = |name: &str| Command::PutOrg { org: OrgConfig::named(name) };
    let first = state.apply(1, &at(1_000, "idem-create-acme", put("acme")));
    assert_eq!(first, Response::Applied { index: 1 });
    // Far more commands than the shared window holds.
    for index in 0..(DEDUP_WINDOW as u64 + 500) {
        state.apply(index + 2, &at(2_000, &format!("r{index}"), put("filler")));
    }
    state.apply(20_000, &at(3_000, "delete", Command::DeleteOrg { name: "acme".into() }));
    assert_eq!(state.apply(20_001, &at(60_000, "idem-create-acme", put("acme"))), first, "the retry applies once");
    assert!(!state.config.orgs.contains_key("acme"), "and did not re-create what was deleted since");
    // A day later the key is forgotten.
    state.apply(20_002, &at(1_000 + IDEMPOTENCY_KEEP_MS + 1, "idem-other", put("other")));
    assert!(!state.history.idempotency.contains_key("idem-create-acme"));
}

/// Snapshots written before the state was split into config and history still load: the two halves are
/// flattened into one object with the same keys as before.
#[test]
fn the_split_state_keeps_its_snapshot_shape() {
    let mut state = ControlState::default();
    state.apply(1, &request("p", Command::PutProvider { provider: provider("p") }));
    let json = serde_json::to_value(&state).unwrap_or_default();
    for key in ["providers", "models", "ledger", "bootstrapped", "audit", "applied_requests", "idempotency"] {
        assert!(json.get(key).is_some(), "top-level `{key}` in {json}");
    }
    assert!(json.get("config").is_none() && json.get("history").is_none(), "{json}");
    let old_shape = serde_json::json!({
        "providers": {"p": serde_json::to_value(provider("p")).unwrap_or_default()},
        "models": {}, "orgs": {}, "teams": {}, "keys": {}, "audit": [],
        "applied_requests": {}, "dedup_order": []
    });
    let loaded: ControlState = serde_json::from_value(old_shape).unwrap_or_default();
    assert!(loaded.config.providers.contains_key("p"));
    let round_trip: ControlState = serde_json::from_value(json).unwrap_or_default();
    assert_eq!(round_trip, state);
}

/// Issue 17.1: a command from a newer peer, carrying fields this version does not know, applies (the
/// fields are ignored) instead of failing every AppendEntries.
#[test]
fn commands_with_fields_from_a_newer_version_apply() {
    let sent = request("r1", Command::PutModel { model: model("m", "p") });
    let mut wire = serde_json::to_value(&sent).unwrap_or_default();
    wire["trace_context"] = serde_json::json!("00-abc-def-01");
    wire["command"]["model"]["cache_ttl_s"] = serde_json::json!(300);
    wire["command"]["model"]["targets"][0]["region"] = serde_json::json!("eu-west");
    let text = wire.to_string();
    assert!(text.contains("cache_ttl_s") && text.contains("region"), "the fields are on the wire: {text}");
    let received: Request = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"));
    let mut state = ControlState::default();
    state.apply(1, &request("r0", Command::PutProvider { provider: provider("p") }));
    assert_eq!(state.apply(2, &received), Response::Applied { index: 2 });
    assert_eq!(state.config.models.get("m"), Some(&model("m", "p")));
}
