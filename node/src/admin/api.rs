//! `/admin/v1/*`: CRUD for providers, models (alias `routes`), orgs, teams and keys; declarative `apply`;
//! cluster status and membership; the audit trail. Writes go through Raft from any node (followers
//! forward to the leader); reads are linearizable. Without a quorum, calls fail with 503 within
//! `node.write_timeout_ms`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_consensus::{
    BudgetSpec, ClusterError, Command, ConsensusNode, NodeInfo, Response as CommandResponse, Scope,
};

use super::redact::{collection, redact_provider};
use super::resource::ResourceKind;
use crate::auth::{generate_key, hash_key, hex};
use crate::clock::ledger_ms as now_ms;
use crate::command::{new_request_id, request};
use crate::config::{Config, KeyRecord, ModelConfig, OrgConfig, ProviderConfig, TeamConfig};
use crate::control::diff;
use crate::gateway::Gateway;
use crate::proxy::ResponseBody;

const MAX_ADMIN_BODY: usize = 4 * 1024 * 1024;

type AdminResult = Result<Response<ResponseBody>, AdminError>;

/// An admin API error: status plus message, rendered as `{"error": {"type", "message"}}`.
pub struct AdminError(StatusCode, String);

impl AdminError {
    fn bad_request(message: impl Into<String>) -> Self {
        AdminError(StatusCode::BAD_REQUEST, message.into())
    }
    fn not_found(message: impl Into<String>) -> Self {
        AdminError(StatusCode::NOT_FOUND, message.into())
    }
}

impl From<ClusterError> for AdminError {
    fn from(err: ClusterError) -> Self {
        let status = match &err {
            ClusterError::NoQuorum(_) => StatusCode::SERVICE_UNAVAILABLE,
            ClusterError::Invalid(_) => StatusCode::BAD_REQUEST,
            ClusterError::NotFound(_) => StatusCode::NOT_FOUND,
            ClusterError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError(status, err.to_string())
    }
}

fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        404 => "not_found_error",
        405 => "method_not_allowed",
        409 => "conflict",
        503 => "unavailable",
        _ => "api_error",
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<ResponseBody> {
    match route(&gateway, request).await {
        Ok(response) => response,
        Err(AdminError(status, message)) => {
            json_response(status, &json!({"error": {"type": error_type(status), "message": message}}))
        }
    }
}

fn authorize(gateway: &Gateway, request: &Request<Incoming>) -> Result<(), AdminError> {
    let Some(expected) = gateway.admin_token.as_ref().filter(|token| !token.trim().is_empty()) else {
        return Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "the admin API is disabled: set node.admin_token, node.admin_token_file or TOLLGATE_ADMIN_TOKEN".into(),
        ));
    };
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty());
    // Compare hashes so the comparison time does not depend on where the strings differ.
    match presented {
        Some(token) if hash_key(token) == hash_key(expected) => Ok(()),
        Some(_) => Err(AdminError(StatusCode::UNAUTHORIZED, "invalid admin token".into())),
        None => Err(AdminError(
            StatusCode::UNAUTHORIZED,
            "missing admin token: send `Authorization: Bearer <admin token>`".into(),
        )),
    }
}

fn consensus(gateway: &Gateway) -> Result<&ConsensusNode, AdminError> {
    gateway.consensus.as_ref().ok_or_else(|| {
        AdminError(
            StatusCode::CONFLICT,
            "this node runs standalone from its config file; set node.peers to run the replicated control plane".into(),
        )
    })
}

async fn read_json<T: for<'de> Deserialize<'de>>(request: Request<Incoming>) -> Result<T, AdminError> {
    let bytes = read_bytes(request).await?;
    serde_json::from_slice(&bytes).map_err(|err| AdminError::bad_request(format!("invalid JSON body: {err}")))
}

async fn read_bytes(request: Request<Incoming>) -> Result<Bytes, AdminError> {
    Limited::new(request.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|err| AdminError::bad_request(format!("could not read the body: {err}")))
}

async fn route(gateway: &Gateway, request: Request<Incoming>) -> AdminResult {
    authorize(gateway, &request)?;
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let Some(rest) = path.strip_prefix("/admin/v1/") else {
        return Err(AdminError::not_found(format!("no admin endpoint {path}")));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let method = request.method().clone();
    let idempotency: Option<String> =
        request.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let idem = idempotency.as_deref();
    if method == Method::GET && segments.as_slice() == ["cluster", "gossip"] {
        // Works in standalone mode too: this node's own endpoint observations.
        let mut view = crate::gossip::admin_view(&gateway.endpoints, gateway.gossip.get());
        if let Some(object) = view.as_object_mut() {
            if let Some(error) = gateway.gossip_error.get() {
                object.insert("error".into(), serde_json::json!(error));
            }
            if let (Some(consensus), Some(_)) = (&gateway.consensus, gateway.gossip.get()) {
                let missing = super::gossip_unreachable_members(gateway, consensus);
                object.insert("unreachable_members".into(), serde_json::json!(missing));
            }
        }
        return Ok(json_response(StatusCode::OK, &view));
    }
    let node = consensus(gateway)?;
    match (method, segments.as_slice()) {
        (Method::GET, ["cluster"]) => Ok(json_response(StatusCode::OK, &cluster_status(node).await)),
        (Method::POST, ["cluster", "nodes"]) => {
            #[derive(Deserialize)]
            struct AddNode {
                id: u64,
                raft_addr: String,
                #[serde(default)]
                api_addr: String,
                #[serde(default)]
                admin_addr: String,
            }
            let body: AddNode = read_json(request).await?;
            node.add_node(
                body.id,
                NodeInfo { raft_addr: body.raft_addr, api_addr: body.api_addr, admin_addr: body.admin_addr },
            )
            .await?;
            Ok(json_response(StatusCode::OK, &cluster_status(node).await))
        }
        (Method::DELETE, ["cluster", "nodes", id]) => {
            let id = id.parse::<u64>().map_err(|_| AdminError::bad_request(format!("`{id}` is not a node id")))?;
            node.remove_node(id).await?;
            Ok(json_response(StatusCode::OK, &cluster_status(node).await))
        }
        (Method::GET, ["audit"]) => {
            let state = node.read_linearizable().await?;
            Ok(json_response(StatusCode::OK, &json!({"entries": state.history.audit})))
        }
        (Method::POST, ["apply"]) => apply(node, request, query_flag(&query, "dry_run")?, idem).await,
        (Method::POST, ["keys"]) => create_key(node, request, idem).await,
        (Method::PUT, ["budgets"]) => {
            let budget: BudgetSpec = read_json(request).await?;
            let index = write(node, Command::SetBudget { budget }, idem).await?;
            // A node enforces a budget from the moment it applies it: answer once every member has, or
            // say which have not (down or partitioned) so the caller knows where it does not bind yet.
            let (applied_on, pending) = node.wait_applied_everywhere(index, BUDGET_APPLY_WAIT).await;
            Ok(json_response(
                StatusCode::OK,
                &json!({"result": "applied", "index": index, "applied_on": applied_on, "pending_on": pending}),
            ))
        }
        (Method::GET, ["budgets"]) => get_budgets(node, &query).await,
        (Method::GET, ["usage"]) => get_usage(node, &query).await,
        (Method::DELETE, ["budgets"]) => {
            let scope = scope_from_query(&query)?;
            let index = write(node, Command::DeleteBudget { scope }, idem).await?;
            Ok(json_response(StatusCode::OK, &json!({"result": "applied", "index": index})))
        }
        (Method::GET, [kind]) => list(node, kind).await,
        (Method::GET, [kind, name @ ..]) if !name.is_empty() => get(node, kind, &name.join("/")).await,
        (Method::PUT, [kind, name @ ..]) if !name.is_empty() => {
            let body = read_bytes(request).await?;
            put(node, kind, &name.join("/"), &body, idem).await
        }
        (Method::DELETE, [kind, name @ ..]) if !name.is_empty() => delete(node, kind, &name.join("/"), idem).await,
        _ => Err(AdminError::not_found(format!("no admin endpoint {} {path}", request_method_name(&segments)))),
    }
}

fn request_method_name(segments: &[&str]) -> String {
    segments.join("/")
}

async fn cluster_status(node: &ConsensusNode) -> Value {
    let status = node.status().await;
    let members: Vec<Value> = status
        .members
        .iter()
        .map(|member| {
            json!({
                "id": member.id, "raft_addr": member.raft_addr, "api_addr": member.api_addr,
                "admin_addr": member.admin_addr, "role": member.role,
                "applied_index": member.matched_index, "lag": member.lag, "alive": member.alive,
            })
        })
        .collect();
    json!({
        "leader": status.leader, "term": status.term, "node_id": status.node_id,
        "applied_index": status.applied_index, "last_log_index": status.last_log_index, "members": members,
    })
}

/// Proposes one command and maps the replicated result to a response. An `Idempotency-Key` header becomes
/// the request id, so a client that retries after a timeout cannot apply the same change twice.
async fn write(node: &ConsensusNode, command: Command, idempotency_key: Option<&str>) -> Result<u64, AdminError> {
    let mut request = request(command, &format!("admin-api@node-{}", node.id()));
    if let Some(key) = idempotency_key {
        request.request_id = format!("{}{key}", tollgate_consensus::state::IDEMPOTENCY_PREFIX);
    }
    match node.write(request).await? {
        CommandResponse::Applied { index } | CommandResponse::Granted { index, .. } => Ok(index),
        CommandResponse::Rejected { reason } => Err(AdminError::bad_request(reason)),
        CommandResponse::Noop => Ok(0),
    }
}

/// A boolean query flag: absent or `false` is false, `true` is true, anything else is a 400.
fn query_flag(query: &str, name: &str) -> Result<bool, AdminError> {
    match query_value(query, name).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") | Some("") => Ok(true),
        Some(other) => Err(AdminError::bad_request(format!("{name}: `{other}` is not true or false"))),
    }
}

async fn list(node: &ConsensusNode, kind: &str) -> AdminResult {
    let kind = ResourceKind::parse(kind).map_err(AdminError::not_found)?;
    let state = node.read_linearizable().await?;
    Ok(json_response(StatusCode::OK, &json!({"data": collection(&state, kind)})))
}

async fn get(node: &ConsensusNode, kind: &str, name: &str) -> AdminResult {
    let kind = ResourceKind::parse(kind).map_err(AdminError::not_found)?;
    let state = node.read_linearizable().await?;
    let config = &state.config;
    let found = match kind {
        ResourceKind::Providers => config.providers.get(name).map(redact_provider),
        ResourceKind::Models => config.models.get(name).map(|m| json!(m)),
        ResourceKind::Orgs => config.orgs.get(name).map(|o| json!(o)),
        ResourceKind::Teams => config.teams.get(name).map(|t| json!(t)),
        ResourceKind::Keys => config.keys.get(name).map(|k| json!(k)),
    };
    found
        .map(|value| json_response(StatusCode::OK, &value))
        .ok_or_else(|| AdminError::not_found(format!("no {} named `{name}`", kind.singular())))
}

/// Validates one resource with the same checks as a config file, reporting the field without the
/// file's list index.
fn validate_resource(config: Config, prefix: &str) -> Result<(), AdminError> {
    config.validate().map_err(|err| AdminError::bad_request(err.to_string().replacen(prefix, "", 1)))
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|err| AdminError::bad_request(format!("invalid {what}: {err}")))
}

/// Puts `name` into the body when absent and rejects a mismatch.
fn with_name(body: &[u8], field: &str, name: &str) -> Result<Vec<u8>, AdminError> {
    let mut value: Value = parse_body(body, "JSON body")?;
    let object = value.as_object_mut().ok_or_else(|| AdminError::bad_request("the body must be a JSON object"))?;
    match object.get(field).and_then(Value::as_str) {
        Some(given) if given != name => {
            return Err(AdminError::bad_request(format!(
                "{field}: `{given}` does not match the name in the path `{name}`"
            )));
        }
        _ => {
            object.insert(field.to_owned(), json!(name));
        }
    }
    serde_json::to_vec(&value).map_err(|err| AdminError::bad_request(err.to_string()))
}

async fn put(node: &ConsensusNode, kind: &str, name: &str, body: &[u8], idem: Option<&str>) -> AdminResult {
    let kind = ResourceKind::parse(kind).map_err(AdminError::not_found)?;
    let command = match kind {
        ResourceKind::Providers => {
            let provider: ProviderConfig = parse_body(&with_name(body, "name", name)?, "provider")?;
            validate_resource(Config { providers: vec![provider.clone()], ..Default::default() }, "providers[0].")?;
            Command::PutProvider { provider }
        }
        ResourceKind::Models => {
            let model: ModelConfig = parse_body(&with_name(body, "name", name)?, "model")?;
            // Checked against the cluster's latest state, not this node's applied copy: a provider put a
            // moment ago through this follower may not have been applied here yet.
            let state = node.read_linearizable().await?;
            let providers = state.config.providers.values().cloned().collect();
            validate_resource(Config { providers, models: vec![model.clone()], ..Default::default() }, "models[0].")?;
            Command::PutModel { model }
        }
        ResourceKind::Orgs => Command::PutOrg { org: parse_body::<OrgConfig>(&with_name(body, "name", name)?, "org")? },
        ResourceKind::Teams => {
            let (org, team) = name
                .split_once('/')
                .ok_or_else(|| AdminError::bad_request("teams are addressed as teams/{org}/{team}"))?;
            let mut value: Value = parse_body(body, "team").unwrap_or_else(|_| json!({}));
            value["org"] = json!(org);
            value["name"] = json!(team);
            Command::PutTeam { team: parse_body::<TeamConfig>(value.to_string().as_bytes(), "team")? }
        }
        ResourceKind::Keys => {
            return Err(AdminError(StatusCode::METHOD_NOT_ALLOWED, "keys are created with POST /admin/v1/keys".into()))
        }
    };
    let index = write(node, command, idem).await?;
    Ok(json_response(StatusCode::OK, &json!({"result": "applied", "index": index})))
}

async fn delete(node: &ConsensusNode, kind: &str, name: &str, idem: Option<&str>) -> AdminResult {
    let kind = ResourceKind::parse(kind).map_err(AdminError::not_found)?;
    let command = match kind {
        ResourceKind::Providers => Command::DeleteProvider { name: name.to_owned() },
        ResourceKind::Models => Command::DeleteModel { name: name.to_owned() },
        ResourceKind::Orgs => Command::DeleteOrg { name: name.to_owned() },
        ResourceKind::Teams => {
            let (org, team) = name
                .split_once('/')
                .ok_or_else(|| AdminError::bad_request("teams are addressed as teams/{org}/{team}"))?;
            Command::DeleteTeam { org: org.to_owned(), name: team.to_owned() }
        }
        ResourceKind::Keys => Command::RevokeKey { id: name.to_owned() },
    };
    match write(node, command, idem).await {
        Ok(index) => Ok(json_response(StatusCode::OK, &json!({"result": "applied", "index": index}))),
        Err(AdminError(StatusCode::BAD_REQUEST, message)) if message.starts_with("no ") => {
            Err(AdminError::not_found(message))
        }
        Err(err) => Err(err),
    }
}

async fn create_key(node: &ConsensusNode, request: Request<Incoming>, idem: Option<&str>) -> AdminResult {
    #[derive(Deserialize)]
    struct NewKey {
        org: String,
        #[serde(default)]
        team: Option<String>,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        models: Option<Vec<String>>,
    }
    let body: NewKey = read_json(request).await?;
    let secret = generate_key();
    // With an idempotency key the id is derived from it, so a retry lands on the same record.
    let id = match idem {
        Some(key) => format!("key_{}", &hex(&hash_key(key))[..16]),
        None => format!("key_{}", &new_request_id()[..16]),
    };
    let secret_hash = hex(&hash_key(&secret));
    let record = KeyRecord {
        id: id.clone(),
        key_sha256: secret_hash.clone(),
        name: body.name,
        org: body.org,
        team: body.team,
        models: body.models,
        created_at_ms: now_ms(),
    };
    write(node, Command::CreateKey { key: record }, idem).await?;
    // A retried request is de-duplicated by Raft, and the secret generated now was never stored: the
    // original one was shown once and cannot be shown again.
    let duplicate = match idem {
        // Read after the write is applied on this node (the write may have been forwarded to the leader).
        Some(_) => node.read_linearizable().await?.config.keys.get(&id).map(|k| &k.key_sha256) != Some(&secret_hash),
        None => false,
    };
    if duplicate {
        return Err(AdminError(
            StatusCode::CONFLICT,
            format!(
                "this Idempotency-Key already created key `{id}`; its secret was shown once and cannot be shown again"
            ),
        ));
    }
    Ok(json_response(StatusCode::CREATED, &json!({"id": id, "key": secret})))
}

/// `POST /admin/v1/apply`: a cluster file (TOML, the replicated sections) diffed against the current
/// state and applied as one all-or-nothing batch.
async fn apply(node: &ConsensusNode, request: Request<Incoming>, dry_run: bool, idem: Option<&str>) -> AdminResult {
    let body = read_bytes(request).await?;
    let text = std::str::from_utf8(&body).map_err(|_| AdminError::bad_request("the config must be UTF-8 TOML"))?;
    let desired = Config::parse(text).map_err(|err| AdminError::bad_request(format!("{err:#}")))?;
    let state = node.read_linearizable().await?;
    let commands = diff(&state, &desired);
    let changes: Vec<String> = commands.iter().map(Command::summary).collect();
    if dry_run || commands.is_empty() {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"result": if dry_run { "dry_run" } else { "unchanged" }, "changes": changes}),
        ));
    }
    let index = write(node, Command::Batch { commands }, idem).await?;
    Ok(json_response(StatusCode::OK, &json!({"result": "applied", "index": index, "changes": changes})))
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.replace("%2F", "/").replace('+', " "))
}

fn scope_from_query(query: &str) -> Result<Scope, AdminError> {
    let org = query_value(query, "org").ok_or_else(|| AdminError::bad_request("org: query parameter required"))?;
    Ok(Scope { org, team: query_value(query, "team"), key_id: query_value(query, "key_id") })
}

/// How long `PUT /admin/v1/budgets` waits for every member to apply the new budget.
const BUDGET_APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /admin/v1/budgets?org=…[&team=…][&key_id=…]`: limit, use and what remains in the current period
/// (a linearizable read). Without `org`, every budget.
async fn get_budgets(node: &ConsensusNode, query: &str) -> AdminResult {
    let state = node.read_linearizable().await?;
    let now = now_ms();
    let describe = |spec: &BudgetSpec| {
        let id = spec.scope.id();
        let period_start = spec.period.start_ms(now);
        let account = state.config.ledger.accounts.get(&id).and_then(|accounts| accounts.get(&period_start));
        let limit = spec.limit_units().unwrap_or(0);
        let used = account.map_or(0, |a| a.used_total());
        let outstanding = account.map_or(0, |a| a.outstanding());
        // Held: granted to nodes, not yet reported as used or returned. It may still be spent.
        let held = outstanding.saturating_sub(used);
        let unit = if spec.is_cost() { "micro_usd" } else { "tokens" };
        json!({
            "scope": spec.scope, "scope_id": id, "period": spec.period, "period_start": period_start,
            "period_end": spec.period.end_ms(period_start), "unit": unit,
            "limit_tokens": spec.limit_tokens, "limit_cost": spec.limit_cost,
            "limit": limit, "used": used, "held": held, "remaining": limit.saturating_sub(used + held),
            "used_tokens": if spec.is_cost() { Value::Null } else { json!(used) },
            "remaining_tokens": if spec.is_cost() { Value::Null } else { json!(limit.saturating_sub(used + held)) },
            "tokens_per_minute": spec.tokens_per_minute, "requests_per_minute": spec.requests_per_minute,
            "granted_by_node": account.map(|a| json!(a.granted)), "used_by_node": account.map(|a| json!(a.used)),
        })
    };
    if query_value(query, "org").is_none() {
        let all: Vec<Value> = state.config.ledger.budgets.values().map(describe).collect();
        return Ok(json_response(StatusCode::OK, &json!({"data": all})));
    }
    let scope = scope_from_query(query)?;
    let spec = state
        .config
        .ledger
        .budgets
        .get(&scope.id())
        .ok_or_else(|| AdminError::not_found(format!("no budget for {}", scope.id())))?;
    Ok(json_response(StatusCode::OK, &describe(spec)))
}

/// Parses `2026-11-25T16:00:00Z` / `…+02:00` (fractional seconds allowed) into Unix ms.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_minutes) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0i64)
    } else {
        let split = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(split);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset[1..].split_once(':')?;
        (clock, sign * (hours.parse::<i64>().ok()? * 60 + minutes.parse::<i64>().ok()?))
    };
    let mut clock_parts = clock.split(':');
    let hour: i64 = clock_parts.next()?.parse().ok()?;
    let minute: i64 = clock_parts.next()?.parse().ok()?;
    let second: f64 = clock_parts.next().unwrap_or("0").parse().ok()?;
    let days = tollgate_consensus::ledger::days_from_civil(year, month, day);
    let ms =
        days * 86_400_000 + hour * 3_600_000 + minute * 60_000 + (second * 1000.0) as i64 - offset_minutes * 60_000;
    u64::try_from(ms).ok()
}

/// `GET /admin/v1/usage?org=acme&since=RFC3339[&until=RFC3339][&group_by=team,key,model]`: requests,
/// tokens in/out and cost per group, from the replicated hourly usage log (hour granularity).
async fn get_usage(node: &ConsensusNode, query: &str) -> AdminResult {
    let org = query_value(query, "org").ok_or_else(|| AdminError::bad_request("org: query parameter required"))?;
    let since = match query_value(query, "since") {
        Some(text) => parse_rfc3339(&text.replace("%3A", ":").replace("%2B", "+"))
            .ok_or_else(|| AdminError::bad_request(format!("since: `{text}` is not an RFC 3339 time")))?,
        None => 0,
    };
    let until = match query_value(query, "until") {
        Some(text) => parse_rfc3339(&text.replace("%3A", ":").replace("%2B", "+"))
            .ok_or_else(|| AdminError::bad_request(format!("until: `{text}` is not an RFC 3339 time")))?,
        None => u64::MAX,
    };
    let group_by: Vec<String> = query_value(query, "group_by")
        .map(|g| g.replace("%2C", ",").split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if let Some(bad) = group_by.iter().find(|g| !matches!(g.as_str(), "team" | "key" | "model")) {
        return Err(AdminError::bad_request(format!("group_by: `{bad}` is not one of team, key, model")));
    }
    let state = node.read_linearizable().await?;
    /// (team, key, model), each present only when grouped by.
    type Group = (Option<String>, Option<String>, Option<String>);
    let mut groups: std::collections::BTreeMap<Group, tollgate_consensus::UsageTotals> =
        std::collections::BTreeMap::new();
    for (key, totals) in &state.history.usage.rows {
        // An hour counts when it overlaps [since, until).
        if key.org != org || key.hour_ms + 3_600_000 <= since || key.hour_ms >= until {
            continue;
        }
        let group = (
            group_by.iter().any(|g| g == "team").then(|| key.team.clone().unwrap_or_default()),
            group_by.iter().any(|g| g == "key").then(|| key.key_id.clone()),
            group_by.iter().any(|g| g == "model").then(|| key.model.clone()),
        );
        groups.entry(group).or_default().add(totals);
    }
    let rows: Vec<Value> = groups
        .into_iter()
        .map(|((team, key, model), totals)| {
            let mut row = json!({
                "org": org, "requests": totals.requests, "input_tokens": totals.input_tokens,
                "output_tokens": totals.output_tokens, "cost_usd": totals.cost_micro_usd as f64 / 1e6,
            });
            if let Some(team) = team {
                row["team"] = json!(if team.is_empty() { Value::Null } else { json!(team) });
            }
            if let Some(key) = key {
                row["key_id"] = json!(key);
            }
            if let Some(model) = model {
                row["model"] = json!(model);
            }
            row
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"org": org, "since_ms": since, "group_by": group_by, "rows": rows})))
}

#[cfg(test)]
mod tests {
    use super::parse_rfc3339;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("2026-11-01T00:00:00Z"), Some(1_793_491_200_000));
        assert_eq!(parse_rfc3339("2026-11-01T02:00:00+02:00"), Some(1_793_491_200_000));
        assert_eq!(parse_rfc3339("2026-11-01T00:00:00.5Z"), Some(1_793_491_200_500));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }
}
