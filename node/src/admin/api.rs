//! `/admin/v1/*`: CRUD for providers, models (alias `routes`), orgs, teams and keys; declarative `apply`;
//! budgets, usage, cluster status and membership; the audit trail. Writes go through Raft from any node
//! (followers forward to the leader); reads are linearizable. Without a quorum, calls fail with 503 within
//! `node.write_timeout_ms`.
//!
//! The routes are in `mod.rs`; what a handler needs (the Raft member, the resource kind, the
//! `Idempotency-Key`, a typed query or JSON body) comes from the extractors in `extract.rs`.

use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate_consensus::{Command, ConsensusNode, Response as CommandResponse};
use tracing::Instrument as _;

use super::extract::{flag, json_response, AdminError, AdminQuery, Body, Consensus, Idempotency, Json, Resource};
use super::redact::{collection, redact_provider};
use super::resource::ResourceKind;
use crate::auth::{generate_key, hash_key, hex};
use crate::clock::ledger_ms as now_ms;
use crate::command::{new_request_id, request};
use crate::config::{Config, KeyRecord, ModelConfig, OrgConfig, ProviderConfig, TeamConfig};
use crate::control::diff;
use crate::guard::GuardrailConfig;

/// Proposes one command and maps the replicated result to a response. An `Idempotency-Key` header becomes
/// the request id, so a client that retries after a timeout cannot apply the same change twice.
pub(super) async fn write(
    node: &ConsensusNode,
    command: Command,
    idempotency_key: Option<&str>,
) -> Result<u64, AdminError> {
    let span = crate::telemetry::admin_write_span(&command.summary());
    let mut request = request(command, &format!("admin-api@node-{}", node.id()));
    if let Some(key) = idempotency_key {
        request.request_id = format!("{}{key}", tollgate_consensus::state::IDEMPOTENCY_PREFIX);
    }
    let result = match node.write(request).instrument(span.clone()).await {
        Ok(CommandResponse::Applied { index } | CommandResponse::Granted { index, .. }) => Ok(index),
        Ok(CommandResponse::Rejected { reason }) => Err(AdminError::bad_request(reason)),
        Ok(CommandResponse::Noop) => Ok(0),
        Err(err) => Err(AdminError::from(err)),
    };
    // Who led is known once the write is through: a node that had not yet learned it won the election when
    // the write arrived still committed it itself (found by a flaky trace test under load).
    span.record("tollgate.raft.forwarded", node.leader() != Some(node.id()));
    match &result {
        Ok(index) => {
            span.record("tollgate.raft.index", *index);
        }
        Err(AdminError(status, _)) => {
            span.record("error.type", status.as_str());
            span.record("otel.status_code", "ERROR");
        }
    }
    result
}

fn applied(index: u64) -> Response {
    json_response(StatusCode::OK, &json!({"result": "applied", "index": index}))
}

async fn list_of(node: &ConsensusNode, kind: ResourceKind) -> Result<Response, AdminError> {
    let state = node.read_linearizable().await?;
    Ok(json_response(StatusCode::OK, &json!({"data": collection(&state, kind)})))
}

pub(super) async fn list(Consensus(node): Consensus, resource: Resource) -> Result<Response, AdminError> {
    list_of(&node, resource.kind).await
}

pub(super) async fn list_keys(Consensus(node): Consensus) -> Result<Response, AdminError> {
    list_of(&node, ResourceKind::Keys).await
}

pub(super) async fn get_one(
    Consensus(node): Consensus,
    Resource { kind, name }: Resource,
) -> Result<Response, AdminError> {
    let state = node.read_linearizable().await?;
    let config = &state.config;
    let found = match kind {
        ResourceKind::Providers => config.providers.get(&name).map(redact_provider),
        ResourceKind::Models => config.models.get(&name).map(|m| json!(m)),
        ResourceKind::Orgs => config.orgs.get(&name).map(|o| json!(o)),
        ResourceKind::Teams => config.teams.get(&name).map(|t| json!(t)),
        ResourceKind::Keys => config.keys.get(&name).map(|k| json!(k)),
        ResourceKind::Guardrails => config.guardrails.get(&name).cloned(),
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

/// A resource from a request body. Unknown fields are refused here, at the edge (the replicated types
/// accept them from newer peers), so a typo is a 400 naming it rather than a setting silently ignored.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T, AdminError> {
    let mut unknown = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_ignored::deserialize(&mut deserializer, |path| unknown.push(crate::config::field_path(&path)))
        .map_err(|err| AdminError::bad_request(format!("invalid {what}: {err}")))?;
    match unknown.first() {
        Some(field) => Err(AdminError::bad_request(format!("invalid {what}: `{field}`: unknown field"))),
        None => Ok(value),
    }
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

/// Teams are addressed as `teams/{org}/{team}`.
fn team_path(name: &str) -> Result<(&str, &str), AdminError> {
    name.split_once('/').ok_or_else(|| AdminError::bad_request("teams are addressed as teams/{org}/{team}"))
}

pub(super) async fn put(
    Consensus(node): Consensus,
    Idempotency(idem): Idempotency,
    Resource { kind, name }: Resource,
    Body(body): Body,
) -> Result<Response, AdminError> {
    let command = match kind {
        ResourceKind::Providers => {
            let provider: ProviderConfig = parse_body(&with_name(&body, "name", &name)?, "provider")?;
            validate_resource(Config { providers: vec![provider.clone()], ..Default::default() }, "providers[0].")?;
            Command::PutProvider { provider }
        }
        ResourceKind::Models => {
            let model: ModelConfig = parse_body(&with_name(&body, "name", &name)?, "model")?;
            // Checked against the cluster's latest state, not this node's applied copy: a provider put a
            // moment ago through this follower may not have been applied here yet.
            let state = node.read_linearizable().await?;
            let providers = state.config.providers.values().cloned().collect();
            let guardrails = GuardrailConfig::from_replicated(state.config.guardrails.iter()).collect();
            let config = Config { providers, guardrails, models: vec![model.clone()], ..Default::default() };
            validate_resource(config, "models[0].")?;
            Command::PutModel { model }
        }
        ResourceKind::Guardrails => {
            let guardrail: GuardrailConfig = parse_body(&with_name(&body, "name", &name)?, "guardrail")?;
            guardrail.validate().map_err(|err| AdminError::bad_request(err.to_string()))?;
            let guardrail = serde_json::to_value(&guardrail).map_err(|err| AdminError::bad_request(err.to_string()))?;
            Command::PutGuardrail { guardrail }
        }
        ResourceKind::Orgs => {
            Command::PutOrg { org: parse_body::<OrgConfig>(&with_name(&body, "name", &name)?, "org")? }
        }
        ResourceKind::Teams => {
            let (org, team) = team_path(&name)?;
            let mut value: Value = parse_body(&body, "team").unwrap_or_else(|_| json!({}));
            value["org"] = json!(org);
            value["name"] = json!(team);
            Command::PutTeam { team: parse_body::<TeamConfig>(value.to_string().as_bytes(), "team")? }
        }
        ResourceKind::Keys => {
            return Err(AdminError(StatusCode::METHOD_NOT_ALLOWED, "keys are created with POST /admin/v1/keys".into()))
        }
    };
    Ok(applied(write(&node, command, idem.as_deref()).await?))
}

pub(super) async fn remove(
    Consensus(node): Consensus,
    Idempotency(idem): Idempotency,
    Resource { kind, name }: Resource,
) -> Result<Response, AdminError> {
    let command = match kind {
        ResourceKind::Providers => Command::DeleteProvider { name },
        ResourceKind::Models => Command::DeleteModel { name },
        ResourceKind::Orgs => Command::DeleteOrg { name },
        ResourceKind::Teams => {
            let (org, team) = team_path(&name)?;
            Command::DeleteTeam { org: org.to_owned(), name: team.to_owned() }
        }
        ResourceKind::Keys => Command::RevokeKey { id: name },
        ResourceKind::Guardrails => Command::DeleteGuardrail { name },
    };
    match write(&node, command, idem.as_deref()).await {
        Ok(index) => Ok(applied(index)),
        Err(AdminError(StatusCode::BAD_REQUEST, message)) if message.starts_with("no ") => {
            Err(AdminError::not_found(message))
        }
        Err(err) => Err(err),
    }
}

#[derive(Deserialize)]
pub(super) struct NewKey {
    org: String,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
}

/// `POST /admin/v1/keys`: the secret is generated here, shown once, and only its hash is replicated.
pub(super) async fn create_key(
    Consensus(node): Consensus,
    Idempotency(idem): Idempotency,
    Json(body): Json<NewKey>,
) -> Result<Response, AdminError> {
    let idem = idem.as_deref();
    let node = &node;
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

#[derive(Deserialize)]
pub(super) struct ApplyQuery {
    #[serde(default, deserialize_with = "flag")]
    dry_run: bool,
}

/// `POST /admin/v1/apply[?dry_run=true]`: a cluster file (TOML, the replicated sections) diffed against
/// the current state and applied as one all-or-nothing batch.
pub(super) async fn apply(
    Consensus(node): Consensus,
    Idempotency(idem): Idempotency,
    AdminQuery(ApplyQuery { dry_run }): AdminQuery<ApplyQuery>,
    Body(body): Body,
) -> Result<Response, AdminError> {
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
    let index = write(&node, Command::Batch { commands }, idem.as_deref()).await.map_err(|err| match err {
        AdminError(StatusCode::PAYLOAD_TOO_LARGE, message) => AdminError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{message}: an apply is one all-or-nothing entry, so apply this file in steps (a file with part of \
                 the new resources first, then the whole file)"
            ),
        ),
        other => other,
    })?;
    Ok(json_response(StatusCode::OK, &json!({"result": "applied", "index": index, "changes": changes})))
}
