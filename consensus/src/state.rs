//! The replicated state machine: the control state and the pure [`ControlState::apply`] of one command.
//! `apply` never does I/O and never fails: a command that would break the state's invariants (a model
//! pointing at a missing provider, a key for a missing org…) is *rejected*, and the rejection is itself the
//! deterministic, replicated result. Every command carries a request id; a retried command with an id the
//! state has already seen returns the first result and changes nothing.

use imbl::{OrdMap, Vector};

use serde::{Deserialize, Serialize};

use crate::ledger::Ledger;
use crate::member::NodeInfo;
use crate::resources::{KeyRecord, ModelConfig, OrgConfig, ProviderConfig, TeamConfig};
use crate::usage::UsageLog;

pub use crate::command::Command;

/// How many applied request ids are remembered for de-duplication, and how many audit entries are kept.
pub const DEDUP_WINDOW: usize = 10_000;

/// Request ids that start with this are client idempotency keys (`Idempotency-Key` on the admin API): kept
/// for [`IDEMPOTENCY_KEEP_MS`] of leader time, apart from the shared window, so a retry a minute later
/// under heavy ledger traffic still applies once.
pub const IDEMPOTENCY_PREFIX: &str = "idem-";
pub const IDEMPOTENCY_KEEP_MS: u64 = 24 * 3_600_000;
/// At most this many idempotency keys are kept (the oldest go first), bounding the state.
pub const IDEMPOTENCY_MAX_KEYS: usize = 100_000;
pub const AUDIT_WINDOW: usize = 1_000;

/// A command with its identity: who asked, when (leader clock, informational), and an id for de-duplication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub request_id: String,
    #[serde(default)]
    pub actor: String,
    #[serde(default)]
    pub at_ms: u64,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Applied at this log index.
    Applied { index: u64 },
    /// A grant: how much was granted (possibly less than asked, or 0), what is left for everyone, and (for
    /// an incarnation's grant) its granted total so far.
    Granted {
        index: u64,
        amount: u64,
        available: u64,
        #[serde(default)]
        node_total: u64,
    },
    /// The state was left unchanged because the command is invalid against it.
    Rejected { reason: String },
    /// Membership changes and blank entries carry no command.
    Noop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub index: u64,
    pub at_ms: u64,
    pub actor: String,
    pub request_id: String,
    pub summary: String,
    pub result: Response,
}

/// Everything the cluster agrees on. Cloned into snapshots; the data plane reads a converted copy.
///
/// Two halves: [`ControlConfig`], what commands change (a configuration command is applied to a copy of it
/// and committed with one assignment, so a new field cannot be left behind), and [`ControlHistory`], what
/// the log leaves behind (audit trail, de-duplication windows, usage rows). On the wire both halves are one
/// flat JSON object, the shape snapshots had before the split (see `mod wire` below).
///
/// Every collection is persistent (`imbl`: B-trees and RRB vectors with structural sharing), so cloning the
/// state is O(1) and an applied command copies only the O(log n) path it changes. The state machine clones
/// the published state once per applied batch; with plain `BTreeMap`s that copied the whole state, including
/// the de-duplication window and usage history, on every budget grant and report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlState {
    pub config: ControlConfig,
    pub history: ControlHistory,
}

/// The replicated configuration and budget ledger: what commands change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlConfig {
    pub providers: OrdMap<String, ProviderConfig>,
    pub models: OrdMap<String, ModelConfig>,
    pub orgs: OrdMap<String, OrgConfig>,
    /// Keyed by `org/team`.
    pub teams: OrdMap<String, TeamConfig>,
    pub keys: OrdMap<String, KeyRecord>,
    /// Addresses each node last announced.
    #[serde(default)]
    pub nodes: OrdMap<u64, NodeInfo>,
    /// Budgets and the per-period accounts of grants, releases and reported use.
    #[serde(default)]
    pub ledger: Ledger,
    /// Set by the first `Bootstrap`; later ones are ignored so a restarted node never resets the config.
    #[serde(default)]
    pub bootstrapped: bool,
    /// Made at bootstrap (clusters bootstrapped before it existed have none); see the `identity` module.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Each member's data dir id as it registered it, kept while the node is in the membership.
    #[serde(default)]
    pub data_dirs: OrdMap<u64, String>,
    /// Guardrails by name, as the JSON the nodes validated (the gateway builds the detectors).
    #[serde(default)]
    pub guardrails: OrdMap<String, serde_json::Value>,
}

/// What the log leaves behind besides the configuration: the audit trail, the windows that make retried
/// commands apply once, and usage rows for reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlHistory {
    /// Usage by hour, org, team, key and model, for reports.
    #[serde(default)]
    pub usage: UsageLog,
    pub audit: Vector<AuditEntry>,
    /// request id → result, for de-duplicating retried commands; `dedup_order` evicts the oldest.
    pub applied_requests: OrdMap<String, Response>,
    pub dedup_order: Vector<String>,
    /// Client idempotency keys → (leader time applied, result), kept for a day (see
    /// [`IDEMPOTENCY_KEEP_MS`]); `idempotency_order` evicts the oldest.
    #[serde(default)]
    pub idempotency: OrdMap<String, (u64, Response)>,
    #[serde(default)]
    pub idempotency_order: Vector<String>,
}

impl ControlState {
    /// Applies one request at log `index`. Pure: the same state and request always give the same result.
    pub fn apply(&mut self, index: u64, request: &Request) -> Response {
        if let Some(previous) = self.history.previous_result(&request.request_id) {
            return previous;
        }
        if request.command.is_ledger_traffic() {
            let result = self.apply_ledger(index, request);
            if !request.command.is_idempotent_total() {
                self.history.remember_request(&request.request_id, result.clone());
            }
            return result;
        }
        // All or nothing: applied to a copy (O(1) with persistent maps), committed with one assignment.
        let mut scratch = self.config.clone();
        let result = match scratch.apply_command(&request.command) {
            Ok(()) => {
                self.config = scratch;
                Response::Applied { index }
            }
            Err(reason) => Response::Rejected { reason },
        };
        self.history.remember(index, request, result.clone());
        result
    }

    /// Grant, release and report touch one account: applied in place (no copy of the state).
    fn apply_ledger(&mut self, index: u64, request: &Request) -> Response {
        let ledger = &mut self.config.ledger;
        let result = match &request.command {
            Command::Grant { scope_id, period_start, node, amount, min_amount } => ledger
                .grant(scope_id, *period_start, *node, *amount, *min_amount)
                .map(|(amount, available)| Response::Granted { index, amount, available, node_total: 0 }),
            Command::GrantForIncarnation { scope_id, period_start, node, incarnation, amount, min_amount, node_ms } => {
                ledger.observe_clock(*node, *node_ms);
                ledger
                    .grant_to_incarnation(
                        scope_id,
                        *period_start,
                        *node,
                        *incarnation,
                        *amount,
                        *min_amount,
                        request.at_ms,
                    )
                    .map(|(amount, available, node_total)| Response::Granted { index, amount, available, node_total })
            }
            Command::ReleaseUpTo { scope_id, period_start, node, incarnation, released_total } => {
                ledger.release_up_to(scope_id, *period_start, *node, *incarnation, *released_total);
                Ok(Response::Applied { index })
            }
            Command::ReportUsedTotal { scope_id, period_start, node, incarnation, used_total } => {
                ledger.report_used_total(scope_id, *period_start, *node, *incarnation, *used_total);
                Ok(Response::Applied { index })
            }
            Command::Release { scope_id, period_start, node, amount } => {
                ledger.release(scope_id, *period_start, *node, *amount).map(|_| Response::Applied { index })
            }
            Command::Report { scope_id, period_start, node, delta } => {
                ledger.report(scope_id, *period_start, *node, *delta).map(|()| Response::Applied { index })
            }
            Command::ReportClock { node, node_ms } => {
                ledger.observe_clock(*node, *node_ms);
                Ok(Response::Applied { index })
            }
            Command::RecordUsage { rows, .. } => {
                self.history.usage.record(rows);
                Ok(Response::Applied { index })
            }
            _ => Err("not a ledger command".into()),
        };
        result.unwrap_or_else(|reason| Response::Rejected { reason })
    }
}

impl ControlHistory {
    /// The result a request id already got: a retried command or a client idempotency key.
    fn previous_result(&self, request_id: &str) -> Option<Response> {
        self.applied_requests.get(request_id).or_else(|| self.idempotency.get(request_id).map(|(_, r)| r)).cloned()
    }

    fn remember_request(&mut self, request_id: &str, result: Response) {
        self.applied_requests.insert(request_id.to_owned(), result);
        self.dedup_order.push_back(request_id.to_owned());
        while self.dedup_order.len() > DEDUP_WINDOW {
            if let Some(oldest) = self.dedup_order.pop_front() {
                self.applied_requests.remove(&oldest);
            }
        }
    }

    fn remember_idempotency_key(&mut self, request: &Request, result: &Response) {
        self.idempotency.insert(request.request_id.clone(), (request.at_ms, result.clone()));
        self.idempotency_order.push_back(request.request_id.clone());
        // Keys expire by the leader time in the log (deterministic on every node), and by count.
        while let Some(oldest) = self.idempotency_order.front().cloned() {
            let expired = self
                .idempotency
                .get(&oldest)
                .is_none_or(|(at, _)| request.at_ms.saturating_sub(*at) > IDEMPOTENCY_KEEP_MS);
            if !expired && self.idempotency_order.len() <= IDEMPOTENCY_MAX_KEYS {
                break;
            }
            self.idempotency_order.pop_front();
            self.idempotency.remove(&oldest);
        }
    }

    fn remember(&mut self, index: u64, request: &Request, result: Response) {
        if request.request_id.starts_with(IDEMPOTENCY_PREFIX) {
            self.remember_idempotency_key(request, &result);
        } else {
            self.remember_request(&request.request_id, result.clone());
        }
        self.audit.push_back(AuditEntry {
            index,
            at_ms: request.at_ms,
            actor: request.actor.clone(),
            request_id: request.request_id.clone(),
            summary: request.command.summary(),
            result,
        });
        while self.audit.len() > AUDIT_WINDOW {
            self.audit.pop_front();
        }
    }
}

impl ControlConfig {
    /// One configuration command, validated against the current config. Callers apply it to a copy and
    /// commit only on `Ok` (all or nothing, also for batches).
    fn apply_command(&mut self, command: &Command) -> Result<(), String> {
        match command {
            Command::PutProvider { provider } => {
                non_empty("provider.name", &provider.name)?;
                self.providers.insert(provider.name.clone(), provider.clone());
            }
            Command::DeleteProvider { name } => {
                if let Some(model) = self.models.values().find(|m| m.targets.iter().any(|t| &t.provider == name)) {
                    return Err(format!("provider `{name}` is used by model `{}`", model.name));
                }
                self.providers.remove(name).ok_or_else(|| format!("no provider `{name}`"))?;
            }
            Command::PutModel { model } => self.put_model(model)?,
            Command::DeleteModel { name } => {
                self.models.remove(name).ok_or_else(|| format!("no model `{name}`"))?;
            }
            Command::PutOrg { org } => {
                non_empty("org.name", &org.name)?;
                self.known_guardrails("org.guardrails", &org.guardrails)?;
                self.orgs.insert(org.name.clone(), org.clone());
            }
            Command::PutGuardrail { guardrail } => self.put_guardrail(guardrail)?,
            Command::DeleteGuardrail { name } => self.delete_guardrail(name)?,
            Command::DeleteOrg { name } => self.delete_org(name)?,
            Command::PutTeam { team } => {
                self.known_org("team.org", &team.org)?;
                non_empty("team.name", &team.name)?;
                self.teams.insert(format!("{}/{}", team.org, team.name), team.clone());
            }
            Command::DeleteTeam { org, name } => {
                if self.keys.values().any(|k| &k.org == org && k.team.as_ref() == Some(name)) {
                    return Err(format!("team `{org}/{name}` still has keys; revoke them first"));
                }
                self.teams.remove(&format!("{org}/{name}")).ok_or_else(|| format!("no team `{org}/{name}`"))?;
            }
            Command::CreateKey { key } => self.create_key(key)?,
            Command::RevokeKey { id } => {
                self.keys.remove(id).ok_or_else(|| format!("no key `{id}`"))?;
            }
            Command::Batch { commands } => self.apply_all(commands, "commands")?,
            Command::Bootstrap { commands, cluster_id } => {
                if self.bootstrapped {
                    return Err("the cluster is already bootstrapped; use `tollgate apply` to change its config".into());
                }
                self.apply_all(commands, "bootstrap commands")?;
                self.bootstrapped = true;
                self.cluster_id.clone_from(cluster_id);
            }
            Command::RegisterNode { id, info, data_dir } => {
                if let Some(data_dir) = data_dir {
                    match self.data_dirs.get(id) {
                        Some(recorded) if recorded != data_dir => {
                            return Err(format!(
                                "node {id} registered with data dir {recorded} and now presents {data_dir}: its \
                                 data dir was replaced or wiped. Remove it (`tollgate cluster remove-node --id \
                                 {id}`) and add it back as a new member"
                            ))
                        }
                        _ => {
                            self.data_dirs.insert(*id, data_dir.clone());
                        }
                    }
                }
                self.nodes.insert(*id, info.clone());
            }
            Command::Unknown => return Err("a command of a newer version; upgrade this node".into()),
            Command::SetBudget { budget } => {
                self.known_scope(&budget.scope)?;
                self.ledger.set_budget(budget.clone())?;
            }
            Command::DeleteBudget { scope } => self.ledger.delete_budget(scope)?,
            ledger_command if ledger_command.is_ledger_traffic() => {
                return Err("ledger commands cannot be batched".into());
            }
            _ => return Err("not a configuration command".into()),
        }
        Ok(())
    }

    fn apply_all(&mut self, commands: &[Command], what: &str) -> Result<(), String> {
        for (index, command) in commands.iter().enumerate() {
            self.apply_command(command).map_err(|reason| format!("{what}[{index}]: {reason}"))?;
        }
        Ok(())
    }

    fn put_model(&mut self, model: &ModelConfig) -> Result<(), String> {
        non_empty("model.name", &model.name)?;
        if model.targets.is_empty() {
            return Err("model.targets: a model needs at least one target".into());
        }
        for (index, target) in model.targets.iter().enumerate() {
            if !self.providers.contains_key(&target.provider) {
                return Err(format!("model.targets[{index}].provider: unknown provider `{}`", target.provider));
            }
        }
        self.known_guardrails("model.guardrails", &model.guardrails)?;
        self.models.insert(model.name.clone(), model.clone());
        Ok(())
    }

    fn put_guardrail(&mut self, guardrail: &serde_json::Value) -> Result<(), String> {
        let name = guardrail.get("name").and_then(|name| name.as_str()).unwrap_or_default();
        non_empty("guardrail.name", name)?;
        self.guardrails.insert(name.to_owned(), guardrail.clone());
        Ok(())
    }

    /// A guardrail goes once no model or org names it.
    fn delete_guardrail(&mut self, name: &str) -> Result<(), String> {
        let names = |list: &[String]| list.iter().any(|g| g == name);
        let user = self.models.values().find(|m| names(&m.guardrails)).map(|m| format!("model `{}`", m.name));
        let user =
            user.or_else(|| self.orgs.values().find(|o| names(&o.guardrails)).map(|o| format!("org `{}`", o.name)));
        if let Some(user) = user {
            return Err(format!("guardrail `{name}` is used by {user}"));
        }
        self.guardrails.remove(name).ok_or_else(|| format!("no guardrail `{name}`"))?;
        Ok(())
    }

    fn known_guardrails(&self, field: &str, names: &[String]) -> Result<(), String> {
        match names.iter().position(|name| !self.guardrails.contains_key(name)) {
            Some(index) => Err(format!("{field}[{index}]: unknown guardrail `{}`", names[index])),
            None => Ok(()),
        }
    }

    /// An org goes with its teams, once it has no keys left.
    fn delete_org(&mut self, name: &str) -> Result<(), String> {
        if self.keys.values().any(|k| k.org == name) {
            return Err(format!("org `{name}` still has keys; revoke them first"));
        }
        self.orgs.remove(name).ok_or_else(|| format!("no org `{name}`"))?;
        self.teams =
            self.teams.iter().filter(|(_, team)| team.org != name).map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(())
    }

    fn create_key(&mut self, key: &KeyRecord) -> Result<(), String> {
        self.known_org("key.org", &key.org)?;
        if let Some(team) = &key.team {
            if !self.teams.contains_key(&format!("{}/{team}", key.org)) {
                return Err(format!("key.team: unknown team `{}/{team}`", key.org));
            }
        }
        if key.key_sha256.len() != 64 || !key.key_sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err("key.key_sha256: must be 64 hex characters".into());
        }
        if self.keys.contains_key(&key.id) {
            return Err(format!("key id `{}` already exists", key.id));
        }
        if self.keys.values().any(|k| k.key_sha256 == key.key_sha256) {
            return Err("a key with this secret already exists".into());
        }
        self.keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    fn known_org(&self, field: &str, org: &str) -> Result<(), String> {
        if self.orgs.contains_key(org) {
            Ok(())
        } else {
            Err(format!("{field}: unknown org `{org}`"))
        }
    }

    /// A budget's scope names an org, team and key that exist.
    fn known_scope(&self, scope: &crate::ledger::Scope) -> Result<(), String> {
        self.known_org("scope.org", &scope.org)?;
        if let Some(team) = &scope.team {
            if !self.teams.contains_key(&format!("{}/{team}", scope.org)) {
                return Err(format!("scope.team: unknown team `{}/{team}`", scope.org));
            }
        }
        if let Some(key) = &scope.key_id {
            if !self.keys.contains_key(key) {
                return Err(format!("scope.key_id: unknown key `{key}`"));
            }
        }
        Ok(())
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("{field}: must not be empty"))
    } else {
        Ok(())
    }
}

/// The snapshot encoding of [`ControlState`]: one flat object, as before the split. Not `#[serde(flatten)]`,
/// which buffers maps and turns integer keys into strings it then cannot read back. Both directions
/// destructure every field, so a field added to either half without its wire name does not compile.
#[path = "state_wire.rs"]
mod wire;

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
