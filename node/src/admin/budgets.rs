//! `/admin/v1/budgets`: set, read and delete token and cost budgets per org, team or key.

use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_consensus::{BudgetSpec, Command, ControlState, Scope};

use super::api::write;
use super::extract::{json_response, AdminError, AdminQuery, Consensus, Idempotency, Json};
use crate::clock::ledger_ms as now_ms;

/// How long `PUT /admin/v1/budgets` waits for every member to apply the new budget.
const BUDGET_APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Deserialize)]
pub(super) struct ScopeQuery {
    org: Option<String>,
    team: Option<String>,
    key_id: Option<String>,
    /// Which period to describe (its start in Unix ms, as `period_start` in an answer); the current one
    /// when absent. Lets a caller read the final bill of a period that has rolled over.
    period_start: Option<u64>,
}

impl ScopeQuery {
    fn scope(&self) -> Result<Scope, AdminError> {
        let org = self.org.clone().ok_or_else(|| AdminError::bad_request("org: query parameter required"))?;
        Ok(Scope { org, team: self.team.clone(), key_id: self.key_id.clone() })
    }
}

/// `PUT /admin/v1/budgets`: a node enforces a budget from the moment it applies it, so the answer comes
/// once every member has, or says which have not (down or partitioned) so the caller knows where it does
/// not bind yet.
pub(super) async fn put_budget(
    Consensus(node): Consensus,
    Idempotency(idem): Idempotency,
    Json(budget): Json<BudgetSpec>,
) -> Result<Response, AdminError> {
    let index = write(&node, Command::SetBudget { budget }, idem.as_deref()).await?;
    let (applied_on, pending) = node.wait_applied_everywhere(index, BUDGET_APPLY_WAIT).await;
    Ok(json_response(
        StatusCode::OK,
        &json!({"result": "applied", "index": index, "applied_on": applied_on, "pending_on": pending}),
    ))
}

pub(super) async fn delete_budget(
    Consensus(node): Consensus,
    Idempotency(idem): Idempotency,
    AdminQuery(query): AdminQuery<ScopeQuery>,
) -> Result<Response, AdminError> {
    let index = write(&node, Command::DeleteBudget { scope: query.scope()? }, idem.as_deref()).await?;
    Ok(json_response(StatusCode::OK, &json!({"result": "applied", "index": index})))
}

/// `GET /admin/v1/budgets?org=…[&team=…][&key_id=…][&period_start=ms]`: limit, use and what remains in
/// the period (a linearizable read). Without `org`, every budget.
pub(super) async fn get_budgets(
    Consensus(node): Consensus,
    AdminQuery(query): AdminQuery<ScopeQuery>,
) -> Result<Response, AdminError> {
    let state = node.read_linearizable().await?;
    let now = now_ms();
    if query.org.is_none() {
        let all: Vec<Value> =
            state.config.ledger.budgets.values().map(|spec| describe(&state, spec, now, query.period_start)).collect();
        return Ok(json_response(StatusCode::OK, &json!({"data": all})));
    }
    let scope = query.scope()?;
    let spec = state
        .config
        .ledger
        .budgets
        .get(&scope.id())
        .ok_or_else(|| AdminError::not_found(format!("no budget for {}", scope.id())))?;
    Ok(json_response(StatusCode::OK, &describe(&state, spec, now, query.period_start)))
}

fn describe(state: &ControlState, spec: &BudgetSpec, now: u64, period_start: Option<u64>) -> Value {
    let id = spec.scope.id();
    let period_start = spec.period.start_ms(period_start.unwrap_or(now));
    let account = state.config.ledger.accounts.get(&id).and_then(|accounts| accounts.get(&period_start));
    let limit = spec.limit_units().unwrap_or(0);
    let used = account.map_or(0, |a| a.used_total());
    let outstanding = account.map_or(0, |a| a.outstanding());
    // Held: granted to nodes, not yet reported as used or returned. It may still be spent.
    let held = outstanding.saturating_sub(used);
    let unit = if spec.is_cost() { "micro_usd" } else { "tokens" };
    let remaining = limit.saturating_sub(used + held);
    json!({
        "scope": spec.scope, "scope_id": id, "period": spec.period, "period_start": period_start,
        "period_end": spec.period.end_ms(period_start), "unit": unit,
        "limit_tokens": spec.limit_tokens, "limit_cost": spec.limit_cost,
        "limit": limit, "used": used, "held": held, "remaining": remaining,
        "used_tokens": if spec.is_cost() { Value::Null } else { json!(used) },
        "remaining_tokens": if spec.is_cost() { Value::Null } else { json!(remaining) },
        "tokens_per_minute": spec.tokens_per_minute, "requests_per_minute": spec.requests_per_minute,
        "granted_by_node": account.map(|a| json!(a.granted)), "used_by_node": account.map(|a| json!(a.used)),
        // S2 as the state machine checked it at every applied ledger change (the whole ledger, not only
        // this scope): changes checked, violations, the first one.
        "ledger_s2": state.config.ledger.s2_audit,
    })
}
