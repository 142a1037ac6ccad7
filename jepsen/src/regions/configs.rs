//! The files `up` writes: one `tollgate serve` config per region (the equivalent of `tollgate dev`: the
//! built-in mock provider, models `gpt-4o-mini`/`claude-3-5-haiku`/`text-embedding-3-small`, org `demo` and
//! a key) and the link proxy's config.

use std::fmt::Write as _;
use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::layout::{Layout, ADMIN_PORT, API_PORT, GOSSIP_PORT, RAFT_PORT};
use crate::linkproxy::{Protocol, ProxyConfig, Route};

/// Raft timing and WAN shape (defaults and why: `jepsen regions up --help`, jepsen/README.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Delay between streamed tokens of the mock provider.
    pub token_delay_ms: u64,
}

pub fn random_token(prefix: &str) -> String {
    let mut rng = rand::rng();
    let mut out = String::from(prefix);
    for _ in 0..32 {
        let _ = write!(out, "{:x}", rng.random_range(0..16u8));
    }
    out
}

fn toml_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// `tollgate serve` config of region `node`: listens on its namespace's address, advertises the link
/// proxy's addresses for Raft and gossip (so peers reach it across the WAN), and joins the others through
/// the proxy too.
pub fn node_config(
    layout: &Layout,
    node: u64,
    dir: &Path,
    token_file: &Path,
    key: &str,
    settings: &Settings,
) -> String {
    let ip = layout.node_ip(node);
    let peers: Vec<String> = layout.nodes().map(|id| format!("{id} = \"{}\"", layout.proxy_raft(id))).collect();
    let seeds: Vec<String> =
        layout.nodes().filter(|id| *id != node).map(|id| format!("\"{}\"", layout.proxy_gossip(id))).collect();
    let data_dir = dir.join(format!("n{node}")).join("data");
    let token_delay = settings.token_delay_ms;
    format!(
        r#"# Region {node} of `jepsen regions up` (generated; see jepsen/README.md for the topology).
[node]
id = {node}
data_dir = {data_dir}
listen = "{ip}:{API_PORT}"
admin_listen = "{ip}:{ADMIN_PORT}"
raft_listen = "{ip}:{RAFT_PORT}"
gossip_listen = "{ip}:{GOSSIP_PORT}"
# Peers reach this node through the link proxy (WAN delay), never directly.
advertise_raft = "{advertise_raft}"
gossip_advertise = "{advertise_gossip}"
gossip = true
gossip_seeds = [{seeds}]
peers = {{ {peers} }}
admin_token_file = {token_file}
cluster_secret_file = {secret_file}
heartbeat_ms = {heartbeat}
election_timeout_min_ms = {election_min}
election_timeout_max_ms = {election_max}

[[providers]]
name = "mock-openai"
kind = "mock"
mock = {{ style = "openai", token_delay_ms = {token_delay} }}

[[providers]]
name = "mock-anthropic"
kind = "mock"
mock = {{ style = "anthropic", token_delay_ms = {token_delay} }}

[[models]]
name = "gpt-4o-mini"
context_window = 128000
max_output_tokens = 8192
price_per_mtok = {{ input = 0.15, output = 0.60 }}
targets = [ {{ provider = "mock-openai" }} ]

[[models]]
name = "claude-3-5-haiku"
context_window = 200000
max_output_tokens = 8192
price_per_mtok = {{ input = 0.80, output = 4.00 }}
targets = [ {{ provider = "mock-anthropic" }} ]

[[models]]
name = "text-embedding-3-small"
context_window = 8191
price_per_mtok = {{ input = 0.02, output = 0.0 }}
targets = [ {{ provider = "mock-openai" }} ]

[[orgs]]
name = "demo"

[[keys]]
name = "demo"
org = "demo"
key = {key}
"#,
        data_dir = toml_string(&data_dir.to_string_lossy()),
        advertise_raft = layout.proxy_raft(node),
        advertise_gossip = layout.proxy_gossip(node),
        seeds = seeds.join(", "),
        peers = peers.join(", "),
        token_file = toml_string(&token_file.to_string_lossy()),
        secret_file = toml_string(&token_file.with_file_name("cluster-secret").to_string_lossy()),
        heartbeat = settings.heartbeat_ms,
        election_min = settings.election_timeout_min_ms,
        election_max = settings.election_timeout_max_ms,
        key = toml_string(key),
    )
}

/// The proxy: per destination node one TCP route (Raft and cluster gRPC) and one UDP route (gossip) on
/// the bridge address; the sending region is told by source address.
pub fn proxy_config(layout: &Layout, control: &Path, settings: &Settings) -> ProxyConfig {
    let mut routes = Vec::new();
    for node in layout.nodes() {
        let ip = layout.node_ip(node);
        routes.push(Route {
            protocol: Protocol::Tcp,
            listen: layout.proxy_raft(node),
            target: std::net::SocketAddr::new(ip, RAFT_PORT),
            to: node,
            from: None,
        });
        routes.push(Route {
            protocol: Protocol::Udp,
            listen: layout.proxy_gossip(node),
            target: std::net::SocketAddr::new(ip, GOSSIP_PORT),
            to: node,
            from: None,
        });
    }
    ProxyConfig {
        delay_ms: settings.delay_ms,
        jitter_ms: settings.jitter_ms,
        sources: layout.nodes().map(|node| (layout.node_ip(node), node)).collect(),
        routes,
        control: Some(control.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_config_points_peers_at_the_proxy() {
        let settings = Settings {
            delay_ms: 25,
            jitter_ms: 2,
            heartbeat_ms: 200,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            token_delay_ms: 5,
        };
        let text =
            node_config(&Layout::default(), 2, Path::new("/tmp/r"), Path::new("/tmp/r/token"), "tg-k", &settings);
        assert!(text.contains(r#"peers = { 1 = "10.77.0.1:17071", 2 = "10.77.0.1:17072", 3 = "10.77.0.1:17073" }"#));
        assert!(text.contains(r#"gossip_seeds = ["10.77.0.1:17947", "10.77.0.1:17949"]"#));
        assert!(text.contains(r#"listen = "10.77.0.12:8080""#));
        assert!(text.contains(r#"key = "tg-k""#));
        let proxy = proxy_config(&Layout::default(), Path::new("/tmp/r/c.sock"), &settings);
        assert_eq!(proxy.routes.len(), 6);
        assert_eq!(proxy.sources.get(&"10.77.0.13".parse().unwrap_or(Layout::default().bridge_ip())), Some(&3));
    }
}
