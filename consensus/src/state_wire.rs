//! The snapshot encoding of [`ControlState`]: one flat object, as before the split. Not `#[serde(flatten)]`,
//! which buffers maps and turns integer keys into strings it then cannot read back. Both directions
//! destructure every field, so a field added to either half without its wire name does not compile.

use super::*;
use serde::{Deserializer, Serializer};

#[derive(Serialize)]
struct Out<'a> {
    providers: &'a OrdMap<String, ProviderConfig>,
    models: &'a OrdMap<String, ModelConfig>,
    orgs: &'a OrdMap<String, OrgConfig>,
    teams: &'a OrdMap<String, TeamConfig>,
    keys: &'a OrdMap<String, KeyRecord>,
    nodes: &'a OrdMap<u64, NodeInfo>,
    ledger: &'a Ledger,
    usage: &'a UsageLog,
    audit: &'a Vector<AuditEntry>,
    bootstrapped: bool,
    cluster_id: &'a Option<String>,
    data_dirs: &'a OrdMap<u64, String>,
    guardrails: &'a OrdMap<String, serde_json::Value>,
    applied_requests: &'a OrdMap<String, Response>,
    dedup_order: &'a Vector<String>,
    idempotency: &'a OrdMap<String, (u64, Response)>,
    idempotency_order: &'a Vector<String>,
}

#[derive(Deserialize)]
struct In {
    providers: OrdMap<String, ProviderConfig>,
    models: OrdMap<String, ModelConfig>,
    orgs: OrdMap<String, OrgConfig>,
    teams: OrdMap<String, TeamConfig>,
    keys: OrdMap<String, KeyRecord>,
    #[serde(default)]
    nodes: OrdMap<u64, NodeInfo>,
    #[serde(default)]
    ledger: Ledger,
    #[serde(default)]
    usage: UsageLog,
    audit: Vector<AuditEntry>,
    #[serde(default)]
    bootstrapped: bool,
    #[serde(default)]
    cluster_id: Option<String>,
    #[serde(default)]
    data_dirs: OrdMap<u64, String>,
    #[serde(default)]
    guardrails: OrdMap<String, serde_json::Value>,
    applied_requests: OrdMap<String, Response>,
    dedup_order: Vector<String>,
    #[serde(default)]
    idempotency: OrdMap<String, (u64, Response)>,
    #[serde(default)]
    idempotency_order: Vector<String>,
}

impl Serialize for ControlState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ControlConfig {
            providers,
            models,
            orgs,
            teams,
            keys,
            nodes,
            ledger,
            bootstrapped,
            cluster_id,
            data_dirs,
            guardrails,
        } = &self.config;
        let ControlHistory { usage, audit, applied_requests, dedup_order, idempotency, idempotency_order } =
            &self.history;
        Out {
            providers,
            models,
            orgs,
            teams,
            keys,
            nodes,
            ledger,
            usage,
            audit,
            bootstrapped: *bootstrapped,
            cluster_id,
            data_dirs,
            guardrails,
            applied_requests,
            dedup_order,
            idempotency,
            idempotency_order,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ControlState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let In {
            providers,
            models,
            orgs,
            teams,
            keys,
            nodes,
            ledger,
            usage,
            audit,
            bootstrapped,
            cluster_id,
            data_dirs,
            guardrails,
            applied_requests,
            dedup_order,
            idempotency,
            idempotency_order,
        } = In::deserialize(deserializer)?;
        Ok(ControlState {
            config: ControlConfig {
                providers,
                models,
                orgs,
                teams,
                keys,
                nodes,
                ledger,
                bootstrapped,
                cluster_id,
                data_dirs,
                guardrails,
            },
            history: ControlHistory { usage, audit, applied_requests, dedup_order, idempotency, idempotency_order },
        })
    }
}
