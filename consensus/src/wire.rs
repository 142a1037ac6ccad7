//! The JSON encoding of everything replicated: log entries on disk and on the Raft wire, requests
//! forwarded to the leader, and snapshots. One function, so that a rolling-upgrade test can make a
//! process write what the *next* version would.
//!
//! With `TOLLGATE_TEST_NEWER_WIRE=1` (issue 17.1; read once, warned about at start like
//! `TOLLGATE_CLOCK_SKEW_MS`), this process plays the next version of the replicated formats: every
//! request, command and resource it encodes carries an optional field this version does not know, and its
//! snapshots carry one at the top and one in the state. Real nodes of this version must read all of it
//! (docs/ARCHITECTURE.md, "Upgrades of the replicated formats"): `tests/tests/rolling_upgrade.rs` runs
//! three processes through an upgrade to such a "v+1" and back. Without the variable, [`to_vec`] is
//! `serde_json::to_vec`.

use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value};

/// The environment variable that makes this process encode like the next version (tests only).
pub const NEWER_WIRE_ENV: &str = "TOLLGATE_TEST_NEWER_WIRE";

/// The field a "next version" adds everywhere it can.
const NEWER_FIELD: &str = "added_in_next_version";

/// Resources inside commands (the replicated types of `resources.rs` and the ledger's budget). Guardrails
/// are kept as the admin API's JSON and validated like it (strictly), so they get no extra field.
const RESOURCES: &[&str] = &["provider", "model", "org", "team", "key", "budget", "scope", "info"];

/// Whether this process encodes like the next version.
pub fn newer_wire() -> bool {
    static NEWER: OnceLock<bool> = OnceLock::new();
    *NEWER.get_or_init(|| {
        let on = std::env::var(NEWER_WIRE_ENV).is_ok_and(|value| value.trim() == "1");
        if on {
            tracing::warn!("{NEWER_WIRE_ENV}=1: this process writes replicated data like the next version (tests)");
        }
        on
    })
}

/// Encodes a replicated value: `serde_json::to_vec`, or the next version's encoding under
/// [`NEWER_WIRE_ENV`].
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    if !newer_wire() {
        return serde_json::to_vec(value);
    }
    let mut json = serde_json::to_value(value)?;
    as_next_version(&mut json);
    serde_json::to_vec(&json)
}

/// Adds the next version's field to every request, command, resource and snapshot in `json`, found by
/// shape. Maps keyed by ids (node ids, scope ids) are never given a key: only objects of known shapes.
pub fn as_next_version(json: &mut Value) {
    match json {
        Value::Array(items) => items.iter_mut().for_each(as_next_version),
        Value::Object(object) => {
            let request = object.contains_key("request_id") && object.contains_key("command");
            let snapshot = object.contains_key("format") && object.contains_key("state");
            if request {
                mark(object, "request");
                if let Some(Value::Object(command)) = object.get_mut("command") {
                    mark_command(command);
                }
            } else if snapshot {
                mark(object, "snapshot");
                if let Some(Value::Object(state)) = object.get_mut("state") {
                    mark(state, "state");
                }
            } else {
                object.values_mut().for_each(as_next_version);
            }
        }
        _ => {}
    }
}

fn mark_command(command: &mut Map<String, Value>) {
    if !command.contains_key("op") {
        return;
    }
    mark(command, "command");
    for (name, value) in command.iter_mut() {
        match value {
            Value::Object(resource) if RESOURCES.contains(&name.as_str()) => mark(resource, name),
            // Batches and bootstraps hold commands.
            Value::Array(items) if name == "commands" => {
                for item in items {
                    if let Value::Object(inner) = item {
                        mark_command(inner);
                    }
                }
            }
            _ => {}
        }
    }
}

fn mark(object: &mut Map<String, Value>, what: &str) {
    object.insert(NEWER_FIELD.into(), serde_json::json!({ "what": what, "since": "next" }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_commands_resources_and_snapshots_get_the_field_and_id_maps_do_not() {
        let mut entry = json!({
            "log_id": {"leader_id": {"term": 1, "node_id": 1}, "index": 3},
            "payload": {"Normal": {"request_id": "r", "actor": "a", "at_ms": 0, "command": {
                "op": "batch", "commands": [{"op": "put_model", "model": {"name": "m"}}]
            }}}
        });
        as_next_version(&mut entry);
        let request = &entry["payload"]["Normal"];
        assert!(request[NEWER_FIELD].is_object() && request["command"][NEWER_FIELD].is_object());
        assert!(request["command"]["commands"][0]["model"][NEWER_FIELD].is_object());
        assert!(entry["log_id"].get(NEWER_FIELD).is_none(), "openraft's own types are left alone");

        let mut snapshot = json!({"format": 1, "state": {"config": {"nodes": {"1": {"raft_addr": "x"}}}}});
        as_next_version(&mut snapshot);
        assert!(snapshot[NEWER_FIELD].is_object() && snapshot["state"][NEWER_FIELD].is_object());
        let nodes = snapshot["state"]["config"]["nodes"].as_object().map(|nodes| nodes.len());
        assert_eq!(nodes, Some(1), "a map keyed by node id gets no key");
    }
}
