//! The gossip key schema, in one place. Every node writes only its own keys; values are compact JSON.
//!
//! | key | value | meaning |
//! |-----|-------|---------|
//! | `node:api`, `node:admin`, `node:raft` | `host:port` | the node's listeners (`node:raft` only in cluster mode) |
//! | `node:roles` | `gateway[,raft]` | what the node does |
//! | `node:version` | semver | the Tollgate version |
//! | `endpoint:{provider}` | [`EndpointReport`] | this node's view of the endpoint: breaker, EWMA latency and TTFT, error rate, in-flight |
//! | `gpu:{provider}` | [`GpuLoad`] | this node's latest scrape of the engine's `/metrics` (absent when it failed) |

use crate::health::{EndpointReport, GpuLoad};

pub const NODE_API: &str = "node:api";
pub const NODE_ADMIN: &str = "node:admin";
pub const NODE_RAFT: &str = "node:raft";
pub const NODE_ROLES: &str = "node:roles";
pub const NODE_VERSION: &str = "node:version";
pub const ENDPOINT_PREFIX: &str = "endpoint:";
pub const GPU_PREFIX: &str = "gpu:";

pub fn endpoint_key(provider: &str) -> String {
    format!("{ENDPOINT_PREFIX}{provider}")
}

pub fn gpu_key(provider: &str) -> String {
    format!("{GPU_PREFIX}{provider}")
}

pub fn encode_report(report: &EndpointReport) -> String {
    serde_json::to_string(report).unwrap_or_default()
}

/// A peer's report; `None` for a value this version cannot read (a newer peer, or garbage).
pub fn decode_report(value: &str) -> Option<EndpointReport> {
    serde_json::from_str(value).ok()
}

pub fn encode_gpu(load: &GpuLoad) -> String {
    serde_json::to_string(load).unwrap_or_default()
}

pub fn decode_gpu(value: &str) -> Option<GpuLoad> {
    serde_json::from_str(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::BreakerState;

    #[test]
    fn values_round_trip_and_garbage_is_ignored() {
        let report = EndpointReport {
            state: BreakerState::Open,
            latency_ms: 12.0,
            ttft_ms: 3.0,
            error_rate: 0.5,
            in_flight: 2,
            samples: 9,
            last_error: Some("refused".into()),
        };
        assert_eq!(decode_report(&encode_report(&report)), Some(report));
        let load = GpuLoad { waiting: 1.0, running: 2.0, kv_use: 0.5, at_ms: 42 };
        assert_eq!(decode_gpu(&encode_gpu(&load)), Some(load));
        assert_eq!(decode_report("{not json"), None);
        assert_eq!(endpoint_key("gpu-east"), "endpoint:gpu-east");
    }
}
