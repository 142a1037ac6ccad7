//! The control plane as the gateway uses it (Raft through `tollgate_consensus`): start the consensus node, bootstrap
//! the replicated config from the first node's file, turn a declarative file into commands (diff), and
//! hot-reload the data plane's snapshot whenever the applied state changes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tollgate_consensus::{BudgetSpec, Command, ConsensusConfig, ConsensusNode, ControlState, NodeInfo, Request};

use crate::auth::{hash_key, hex};
use crate::clock::ledger_ms as now_ms;
use crate::config::{Config, KeyConfig, KeyRecord, OrgConfig, TeamConfig};
use crate::gateway::Gateway;

/// Where a node keeps its Raft data: `node.data_dir`, else `./data/n{id}`.
pub fn data_dir(config: &Config) -> PathBuf {
    config.node.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("./data/n{}", config.node.id)))
}

pub fn consensus_config(
    config: &Config,
    raft_addr: SocketAddr,
    api_addr: SocketAddr,
    admin_addr: SocketAddr,
) -> ConsensusConfig {
    let node = &config.node;
    let advertise = NodeInfo {
        raft_addr: node.raft.advertise.clone().unwrap_or_else(|| raft_addr.to_string()),
        api_addr: api_addr.to_string(),
        admin_addr: admin_addr.to_string(),
    };
    let mut consensus = ConsensusConfig::new(node.id, advertise, data_dir(config));
    let raft = &node.raft;
    consensus.initial_members = raft.peers.clone();
    consensus.heartbeat_ms = raft.heartbeat_ms;
    consensus.election_timeout_min_ms = raft.election_timeout_min_ms;
    consensus.election_timeout_max_ms = raft.election_timeout_max_ms;
    consensus.write_timeout = Duration::from_millis(raft.write_timeout_ms);
    consensus.snapshot_after_logs = raft.snapshot_after_logs.max(2);
    consensus
}

/// Re-reads `node.cluster_secret_file` every few seconds and hands a changed set of secrets to the Raft
/// port: a secret rotates without a restart (add the new one as a second line everywhere, then first, then
/// drop the old). A file that cannot be read or holds no valid secret keeps the current set, with a warning.
pub fn spawn_secret_reload(config: &Config, consensus: &ConsensusNode) {
    if config.node.secrets.cluster_secret_file.is_none() || config.node.secrets.cluster_secret.is_some() {
        return;
    }
    let config = config.clone();
    let auth = consensus.auth().clone();
    tokio::spawn(async move {
        let mut current = config.cluster_secrets().unwrap_or_default();
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            match config.cluster_secrets() {
                Ok(secrets) if secrets != current && !secrets.is_empty() => {
                    tracing::info!(count = secrets.len(), "cluster secrets reloaded");
                    auth.set_secrets(secrets.clone());
                    current = secrets;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "keeping the current cluster secrets"),
            }
        }
    });
}

/// A key from a config file as the cluster stores it (hash only).
pub fn key_record(index: usize, key: &KeyConfig) -> KeyRecord {
    let key_sha256 = match (&key.key, &key.key_sha256) {
        (Some(plain), _) => hex(&hash_key(plain)),
        (None, Some(hash)) => hash.to_ascii_lowercase(),
        (None, None) => String::new(),
    };
    KeyRecord {
        id: key.name.clone().unwrap_or_else(|| format!("key-{index}")),
        key_sha256,
        name: key.name.clone(),
        org: key.org.clone(),
        team: key.team.clone(),
        models: key.models.clone(),
        created_at_ms: now_ms(),
    }
}

/// An org's `budget = { limit_tokens = …, period = "month" }` from a file, as a ledger budget.
pub fn org_budget(org: &OrgConfig) -> Option<BudgetSpec> {
    let value = org.budget.as_ref()?;
    let mut spec = value.clone();
    if let Some(object) = spec.as_object_mut() {
        object.insert("scope".into(), serde_json::json!({"org": org.name}));
    }
    serde_json::from_value(spec).ok()
}

/// Orgs and teams a file declares, plus those its keys name without declaring them.
fn declared_orgs_and_teams(config: &Config) -> (Vec<OrgConfig>, Vec<TeamConfig>) {
    let mut orgs = config.orgs.clone();
    let mut teams = config.teams.clone();
    for key in &config.keys {
        if !orgs.iter().any(|org| org.name == key.org) {
            orgs.push(OrgConfig::named(key.org.clone()));
        }
        if let Some(team) = &key.team {
            if !teams.iter().any(|t| t.org == key.org && &t.name == team) {
                teams.push(TeamConfig { org: key.org.clone(), name: team.clone() });
            }
        }
    }
    (orgs, teams)
}

/// The replicated sections of a file as commands, in dependency order.
pub fn file_commands(config: &Config) -> Vec<Command> {
    let mut commands = Vec::new();
    let (orgs, teams) = declared_orgs_and_teams(config);
    let guardrails = config.guardrails.iter().filter_map(|guardrail| serde_json::to_value(guardrail).ok());
    commands.extend(guardrails.map(|guardrail| Command::PutGuardrail { guardrail }));
    commands.extend(config.providers.iter().cloned().map(|provider| Command::PutProvider { provider }));
    commands.extend(config.models.iter().cloned().map(|model| Command::PutModel { model }));
    commands.extend(orgs.iter().cloned().map(|org| Command::PutOrg { org }));
    commands.extend(teams.into_iter().map(|team| Command::PutTeam { team }));
    commands.extend(orgs.iter().filter_map(org_budget).map(|budget| Command::SetBudget { budget }));
    commands
        .extend(config.keys.iter().enumerate().map(|(index, key)| Command::CreateKey { key: key_record(index, key) }));
    commands
}

/// What `tollgate apply -f` changes: providers and models become exactly the file's (added, updated,
/// removed); orgs and teams are added or updated (never removed, since keys hang off them); keys in the
/// file that do not exist yet are created.
pub fn diff(current: &ControlState, desired: &Config) -> Vec<Command> {
    // Guardrails are put first (models and orgs may name them) and deleted last (once nothing does).
    let (mut commands, guardrail_deletes) = guardrail_changes(current, desired);
    for provider in &desired.providers {
        if current.config.providers.get(&provider.name) != Some(provider) {
            commands.push(Command::PutProvider { provider: provider.clone() });
        }
    }
    for model in &desired.models {
        if current.config.models.get(&model.name) != Some(model) {
            commands.push(Command::PutModel { model: model.clone() });
        }
    }
    for name in current.config.models.keys() {
        if !desired.models.iter().any(|m| &m.name == name) {
            commands.push(Command::DeleteModel { name: name.clone() });
        }
    }
    for name in current.config.providers.keys() {
        if !desired.providers.iter().any(|p| &p.name == name) {
            commands.push(Command::DeleteProvider { name: name.clone() });
        }
    }
    let (orgs, teams) = declared_orgs_and_teams(desired);
    for org in &orgs {
        if current.config.orgs.get(&org.name) != Some(org)
            && !(org.budget.is_none()
                && current.config.orgs.contains_key(&org.name)
                && !desired.orgs.iter().any(|o| o.name == org.name))
        {
            commands.push(Command::PutOrg { org: org.clone() });
        }
    }
    for budget in orgs.iter().filter_map(org_budget) {
        if !current.config.ledger.budgets.get(&budget.scope.id()).is_some_and(|existing| existing.same_terms(&budget)) {
            commands.push(Command::SetBudget { budget });
        }
    }
    for team in &teams {
        if !current.config.teams.contains_key(&format!("{}/{}", team.org, team.name)) {
            commands.push(Command::PutTeam { team: team.clone() });
        }
    }
    for (index, key) in desired.keys.iter().enumerate() {
        let record = key_record(index, key);
        if !current.config.keys.values().any(|k| k.key_sha256 == record.key_sha256) {
            commands.push(Command::CreateKey { key: record });
        }
    }
    commands.extend(guardrail_deletes);
    commands
}

/// The guardrails a file puts (new or changed) and deletes (gone from the file), as two lists.
fn guardrail_changes(current: &ControlState, desired: &Config) -> (Vec<Command>, Vec<Command>) {
    let puts = desired
        .guardrails
        .iter()
        .filter_map(|guardrail| serde_json::to_value(guardrail).ok())
        .filter(|value| {
            value.get("name").and_then(|n| n.as_str()).and_then(|n| current.config.guardrails.get(n)) != Some(value)
        })
        .map(|guardrail| Command::PutGuardrail { guardrail })
        .collect();
    let deletes = current
        .config
        .guardrails
        .keys()
        .filter(|name| !desired.guardrails.iter().any(|g| &g.name == *name))
        .map(|name| Command::DeleteGuardrail { name: name.clone() })
        .collect();
    (puts, deletes)
}

/// The lowest-id initial member proposes the file's config once, when the cluster has never been
/// bootstrapped. Retries until it lands (the cluster may still be electing its first leader).
pub fn spawn_bootstrap(config: &Config, consensus: ConsensusNode) {
    let lowest = config.node.raft.peers.keys().min().copied();
    if lowest != Some(config.node.id) {
        return;
    }
    let commands = file_commands(config);
    // Made once: every retry of the bootstrap carries the same id (and the same request id).
    let cluster_id = tollgate_consensus::identity::new_id("cluster");
    tokio::spawn(async move {
        loop {
            if consensus.current().config.bootstrapped {
                return;
            }
            let request = Request {
                request_id: format!("bootstrap-{}", consensus.id()),
                actor: format!("node-{}", consensus.id()),
                at_ms: now_ms(),
                command: Command::Bootstrap { commands: commands.clone(), cluster_id: Some(cluster_id.clone()) },
            };
            match consensus.write(request).await {
                Ok(tollgate_consensus::Response::Rejected { reason }) => {
                    tracing::error!(%reason, "the bootstrap config was rejected; fix the file or use `tollgate apply`");
                    return;
                }
                Ok(response) => {
                    tracing::info!(?response, "bootstrap config applied");
                    return;
                }
                Err(err @ tollgate_consensus::ClusterError::TooLarge(_)) => {
                    // One entry, so a retry cannot help (README, cluster section: the entry limit).
                    tracing::error!(
                        %err,
                        "the config file's replicated sections are too large to bootstrap the cluster from; \
                         bootstrap from a smaller file and `tollgate apply` the rest in steps"
                    );
                    return;
                }
                Err(err) => {
                    tracing::debug!(%err, "bootstrap not yet possible; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
}

/// Rebuilds the data plane's snapshot on every applied change (no restart, no RPC per request).
///
/// Holds the gateway weakly: the gateway owns the consensus node, which owns the sender of `changes`, so a
/// strong reference here would keep the whole node (and its sled lock) alive forever.
pub fn spawn_state_watcher(gateway: &Arc<Gateway>, consensus: &ConsensusNode) {
    spawn_catch_up(gateway, consensus);
    let mut changes = consensus.subscribe();
    let gateway = Arc::downgrade(gateway);
    tokio::spawn(async move {
        loop {
            let state = changes.borrow_and_update().clone();
            let Some(gateway) = gateway.upgrade() else {
                return;
            };
            if gateway.is_shutting_down() {
                return;
            }
            if let Err(err) = gateway.reload_from_state(&state) {
                tracing::error!(%err, "applied control state could not be loaded; keeping the previous one");
            }
            drop(gateway);
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
}

/// A restarted node's applied state comes back from its last snapshot and may lag the cluster by keys
/// created or revoked since. It serves nothing (503 `not_ready`, `/readyz` 503) until one linearizable read
/// barrier has passed: then it has applied everything the cluster had committed when it came back.
fn spawn_catch_up(gateway: &Arc<Gateway>, consensus: &ConsensusNode) {
    let gateway = Arc::downgrade(gateway);
    let consensus = consensus.clone();
    tokio::spawn(async move {
        loop {
            let Some(alive) = gateway.upgrade() else { return };
            if alive.is_shutting_down() {
                return;
            }
            drop(alive);
            match consensus.read_linearizable().await {
                Ok(_) => {
                    if let Some(gateway) = gateway.upgrade() {
                        gateway.mark_caught_up();
                    }
                    return;
                }
                Err(err) => {
                    tracing::debug!(%err, "not caught up with the cluster yet");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::request;

    const FILE: &str = r#"
[[providers]]
name = "p"
kind = "mock"
[[models]]
name = "m"
targets = [ { provider = "p" } ]
[[orgs]]
name = "acme"
budget = { limit_tokens = 5000000, period = "month" }
[[keys]]
key = "tg-x"
org = "beta"
team = "ml"
"#;

    #[test]
    fn file_commands_declare_implicit_orgs_teams_and_org_budgets() {
        let config = Config::parse(FILE).unwrap_or_else(|e| panic!("{e:#}"));
        let summaries: Vec<String> = file_commands(&config).iter().map(Command::summary).collect();
        assert!(summaries.contains(&"put org beta".to_owned()), "{summaries:?}");
        assert!(summaries.contains(&"put team beta/ml".to_owned()));
        assert!(summaries.contains(&"set budget org:acme".to_owned()));
        let mut state = ControlState::default();
        let result =
            state.apply(1, &request(Command::Bootstrap { commands: file_commands(&config), cluster_id: None }, "test"));
        assert!(matches!(result, tollgate_consensus::Response::Applied { .. }), "{result:?}");
        assert_eq!(state.config.ledger.budgets["org:acme"].limit_tokens, Some(5_000_000));
        assert!(diff(&state, &config).is_empty(), "a bootstrapped file has nothing left to apply");
    }
}
