//! The commands the replicated state machine applies: one control-plane change each, with what kind of
//! traffic it is (configuration or ledger) and a one-line summary for the audit trail.

use serde::{Deserialize, Serialize};

use crate::ledger::{BudgetSpec, Scope};
use crate::member::NodeInfo;
use crate::resources::{KeyRecord, ModelConfig, OrgConfig, ProviderConfig, TeamConfig};
use crate::usage::{UsageKey, UsageTotals};

/// One control-plane change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    PutProvider {
        provider: ProviderConfig,
    },
    DeleteProvider {
        name: String,
    },
    PutModel {
        model: ModelConfig,
    },
    DeleteModel {
        name: String,
    },
    /// A guardrail (`[[guardrails]]` entry) as JSON: the nodes validate it before proposing it (the
    /// detectors live in the gateway crate); here only its name and its references matter.
    PutGuardrail {
        guardrail: serde_json::Value,
    },
    DeleteGuardrail {
        name: String,
    },
    PutOrg {
        org: OrgConfig,
    },
    DeleteOrg {
        name: String,
    },
    PutTeam {
        team: TeamConfig,
    },
    DeleteTeam {
        org: String,
        name: String,
    },
    CreateKey {
        key: KeyRecord,
    },
    RevokeKey {
        id: String,
    },
    /// Several commands applied all-or-nothing (a declarative `apply -f`).
    Batch {
        commands: Vec<Command>,
    },
    /// The initial config from the first node's file: applied once in the cluster's life, ignored after.
    Bootstrap {
        commands: Vec<Command>,
        /// Made by the bootstrapping node; identifies the cluster for its life (see the `identity` module).
        #[serde(default)]
        cluster_id: Option<String>,
    },
    /// A node announces its current addresses (API and admin listeners) and its data dir's id.
    RegisterNode {
        id: u64,
        info: NodeInfo,
        #[serde(default)]
        data_dir: Option<String>,
    },
    SetBudget {
        budget: BudgetSpec,
    },
    DeleteBudget {
        scope: Scope,
    },
    /// A node asks for allowance; applied only as far as the limit allows (S2).
    Grant {
        scope_id: String,
        period_start: u64,
        node: u64,
        amount: u64,
        min_amount: u64,
    },
    /// A node returns allowance it did not use.
    Release {
        scope_id: String,
        period_start: u64,
        node: u64,
        amount: u64,
    },
    /// A node reports consumption since its last report.
    Report {
        scope_id: String,
        period_start: u64,
        node: u64,
        delta: u64,
    },
    /// A node asks for allowance for one incarnation of its local account (see
    /// [`Account::incarnations`](crate::ledger::Account)); refused for a period other than the leader's.
    GrantForIncarnation {
        scope_id: String,
        period_start: u64,
        node: u64,
        incarnation: u64,
        amount: u64,
        min_amount: u64,
        /// The asking node's own clock (the entry's `at_ms` is the leader's): the ledger's independent
        /// evidence of what time the cluster thinks it is (see `Ledger::superseded`). 0 from older nodes.
        #[serde(default)]
        node_ms: u64,
    },
    /// An incarnation's running total of released allowance: applying it twice changes nothing.
    ReleaseUpTo {
        scope_id: String,
        period_start: u64,
        node: u64,
        incarnation: u64,
        released_total: u64,
    },
    /// An incarnation's running total of used units: applying it twice changes nothing.
    ReportUsedTotal {
        scope_id: String,
        period_start: u64,
        node: u64,
        incarnation: u64,
        used_total: u64,
    },
    /// A node's aggregated usage rows for reports.
    RecordUsage {
        node: u64,
        rows: Vec<(UsageKey, UsageTotals)>,
    },
    /// A node's own clock, sent at start and when its hour changes: the evidence the ledger needs to
    /// open a new period (a majority of nodes' clocks must be in it, not only the leader's).
    ReportClock {
        node: u64,
        node_ms: u64,
    },
    /// A command of a newer version (an `op` this version does not know), in a log entry replicated by a
    /// newer leader during a rolling upgrade. Never proposed. The state machine refuses to apply it (see
    /// `StateMachineStore::apply`): skipping it would leave this node's state behind the others'.
    #[serde(other)]
    Unknown,
}

impl Command {
    /// This command, or one inside a batch, is of a newer version.
    pub fn is_from_a_newer_version(&self) -> bool {
        match self {
            Command::Unknown => true,
            Command::Batch { commands } | Command::Bootstrap { commands, .. } => {
                commands.iter().any(Command::is_from_a_newer_version)
            }
            _ => false,
        }
    }

    /// Ledger traffic: frequent, applied in place, kept out of the audit trail.
    pub(crate) fn is_ledger_traffic(&self) -> bool {
        matches!(
            self,
            Command::Grant { .. }
                | Command::Release { .. }
                | Command::Report { .. }
                | Command::RecordUsage { .. }
                | Command::ReportClock { .. }
                | Command::GrantForIncarnation { .. }
                | Command::ReleaseUpTo { .. }
                | Command::ReportUsedTotal { .. }
        )
    }

    /// Idempotent by construction (running totals): kept out of the de-duplication window, which is then
    /// left to commands that need it, so a report resent after a long partition cannot count twice.
    pub(crate) fn is_idempotent_total(&self) -> bool {
        matches!(self, Command::ReleaseUpTo { .. } | Command::ReportUsedTotal { .. } | Command::ReportClock { .. })
    }
}

impl Command {
    /// A one-line description for the audit trail (never includes secrets: keys are stored hashed anyway).
    pub fn summary(&self) -> String {
        match self {
            Command::PutProvider { provider } => format!("put provider {}", provider.name),
            Command::DeleteProvider { name } => format!("delete provider {name}"),
            Command::PutModel { model } => format!("put model {}", model.name),
            Command::DeleteModel { name } => format!("delete model {name}"),
            Command::PutGuardrail { guardrail } => {
                format!("put guardrail {}", guardrail.get("name").and_then(|name| name.as_str()).unwrap_or("?"))
            }
            Command::DeleteGuardrail { name } => format!("delete guardrail {name}"),
            Command::PutOrg { org } => format!("put org {}", org.name),
            Command::DeleteOrg { name } => format!("delete org {name}"),
            Command::PutTeam { team } => format!("put team {}/{}", team.org, team.name),
            Command::DeleteTeam { org, name } => format!("delete team {org}/{name}"),
            Command::CreateKey { key } => format!("create key {} for {}", key.id, key.org),
            Command::RevokeKey { id } => format!("revoke key {id}"),
            Command::Batch { commands } => format!("batch of {} commands", commands.len()),
            Command::Unknown => "a command of a newer version".into(),
            Command::Bootstrap { commands, .. } => format!("bootstrap with {} commands", commands.len()),
            Command::RegisterNode { id, info, .. } => format!("register node {id} ({info})"),
            Command::SetBudget { budget } => format!("set budget {}", budget.scope.id()),
            Command::DeleteBudget { scope } => format!("delete budget {}", scope.id()),
            Command::Grant { scope_id, node, amount, .. } => format!("grant {amount} of {scope_id} to node {node}"),
            Command::Release { scope_id, node, amount, .. } => {
                format!("release {amount} of {scope_id} from node {node}")
            }
            Command::Report { scope_id, node, delta, .. } => {
                format!("report {delta} of {scope_id} used by node {node}")
            }
            Command::GrantForIncarnation { scope_id, node, incarnation, amount, .. } => {
                format!("grant {amount} of {scope_id} to node {node} (incarnation {incarnation})")
            }
            Command::ReleaseUpTo { scope_id, node, incarnation, released_total, .. } => {
                format!("node {node} (incarnation {incarnation}) released {released_total} of {scope_id} in all")
            }
            Command::ReportUsedTotal { scope_id, node, incarnation, used_total, .. } => {
                format!("node {node} (incarnation {incarnation}) used {used_total} of {scope_id} in all")
            }
            Command::RecordUsage { node, rows } => format!("record {} usage rows from node {node}", rows.len()),
            Command::ReportClock { node, node_ms } => format!("node {node}'s clock reads {node_ms}"),
        }
    }
}
