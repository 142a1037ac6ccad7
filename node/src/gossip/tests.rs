//! Multi-node gossip in one process: chitchat's `ChannelTransport` (partitions with `remove_link`), and
//! real UDP on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chitchat::transport::ChannelTransport;

use super::*;
use crate::error::GatewayError;
use crate::health::{BreakerConfig, EndpointRegistry, GpuLoad};

struct Node {
    registry: Arc<EndpointRegistry>,
    cluster: Gossip,
    addr: SocketAddr,
}

pub(super) fn settings(node_id: u64, listen: SocketAddr, seeds: Vec<String>) -> GossipSettings {
    GossipSettings {
        node_id,
        listen,
        advertise: None,
        seeds,
        interval: Duration::from_millis(50),
        cluster_id: "test".into(),
        api_addr: Some(format!("127.0.0.1:{}", 8000 + node_id)),
        admin_addr: None,
        raft_addr: None,
        accept: None,
        secrets: None,
    }
}

pub(super) fn registry() -> Arc<EndpointRegistry> {
    let registry = Arc::new(EndpointRegistry::new(
        BreakerConfig { failures: 2, cooldown: Duration::from_secs(30) },
        Duration::from_secs(1),
    ));
    registry.set_active(&[("gpu-a".into(), None), ("gpu-b".into(), None)]);
    registry
}

async fn channel_nodes(transport: &ChannelTransport, n: u64) -> Vec<Node> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        let addr: SocketAddr = ([10, 0, 0, id as u8], 7946).into();
        let seeds = if id == 1 { Vec::new() } else { vec!["10.0.0.1:7946".to_owned()] };
        let registry = registry();
        let cluster = Gossip::start_with_transport(settings(id, addr, seeds), addr, registry.clone(), transport)
            .await
            .unwrap_or_else(|e| panic!("node {id} starts: {e:#}"));
        nodes.push(Node { registry, cluster, addr });
    }
    nodes
}

pub(super) async fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

pub(super) fn break_endpoint(registry: &EndpointRegistry, name: &str) {
    let endpoint = registry.endpoint(name);
    for _ in 0..2 {
        endpoint.record_failure(&GatewayError::upstream_connect("connection refused"));
    }
}

#[tokio::test]
async fn members_discover_each_other_and_an_open_breaker_spreads_within_two_seconds() {
    let transport = ChannelTransport::default();
    let nodes = channel_nodes(&transport, 3).await;
    for node in &nodes {
        wait_for("three live members", Duration::from_secs(5), || node.cluster.view().live_members().count() == 3)
            .await;
    }
    let view = nodes[2].cluster.view();
    let first = view.members.iter().find(|m| m.node_id == "1").unwrap_or_else(|| panic!("node 1 listed: {view:?}"));
    assert_eq!(first.api_addr.as_deref(), Some("127.0.0.1:8001"));
    assert_eq!(first.roles, ["gateway"]);

    break_endpoint(&nodes[0].registry, "gpu-a");
    let started = Instant::now();
    for node in &nodes[1..] {
        let endpoint = node.registry.endpoint("gpu-a");
        wait_for("peers see gpu-a open", Duration::from_secs(2), || endpoint.remote_open()).await;
        assert!(!endpoint.is_routable(crate::clock::monotonic_ms()), "peers avoid it without failing themselves");
        assert!(!node.registry.endpoint("gpu-b").remote_open(), "only the broken endpoint");
    }
    let spread = started.elapsed();
    assert!(!nodes[0].registry.endpoint("gpu-a").remote_open(), "a node does not count its own report as remote");
    let view = nodes[1].cluster.view();
    assert!(view.endpoints["gpu-a"].open_somewhere, "{view:?}");
    eprintln!("open breaker reached both peers in {spread:?}");

    // Recovery spreads the same way.
    nodes[0].registry.endpoint("gpu-a").record_success();
    for node in &nodes[1..] {
        let endpoint = node.registry.endpoint("gpu-a");
        wait_for("peers see gpu-a closed", Duration::from_secs(2), || !endpoint.remote_open()).await;
    }
}

/// Issue 12.8: a process that shares the cluster id (say it leaked) but is not a Raft member may gossip,
/// yet its reports never count: a forged open breaker does not steer traffic away.
#[tokio::test]
async fn reports_from_members_the_filter_refuses_are_ignored() {
    let transport = ChannelTransport::default();
    let members =
        |id: &str, addr: SocketAddr| matches!(id, "1" | "2") && addr.ip() != std::net::Ipv4Addr::new(10, 0, 0, 66);
    let mut nodes = Vec::new();
    for (id, ip) in [(1u64, 1u8), (2, 2), (9, 9), (2, 66)] {
        let addr: SocketAddr = ([10, 0, 0, ip], 7946).into();
        let seeds = if id == 1 { Vec::new() } else { vec!["10.0.0.1:7946".to_owned()] };
        let mut settings = settings(id, addr, seeds);
        settings.accept = Some(Arc::new(members));
        let registry = registry();
        let cluster = Gossip::start_with_transport(settings, addr, registry.clone(), &transport)
            .await
            .unwrap_or_else(|e| panic!("node {id} starts: {e:#}"));
        nodes.push(Node { registry, cluster, addr });
    }
    wait_for("four live members", Duration::from_secs(5), || nodes[0].cluster.view().live_members().count() == 4).await;
    // The stranger (id 9) and an impostor using member 2's id from another address both claim gpu-a is down.
    break_endpoint(&nodes[2].registry, "gpu-a");
    break_endpoint(&nodes[3].registry, "gpu-a");
    // The real member 2 says gpu-b is down: that one counts.
    break_endpoint(&nodes[1].registry, "gpu-b");
    let gpu_b = nodes[0].registry.endpoint("gpu-b");
    wait_for("member 2's report arrives", Duration::from_secs(3), || gpu_b.remote_open()).await;
    // Several more rounds for the others' reports, which have long arrived if they were counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!nodes[0].registry.endpoint("gpu-a").remote_open(), "a stranger steered routing");
    let view = nodes[0].cluster.view();
    let trusted: Vec<(&str, bool)> = view.members.iter().map(|m| (m.node_id.as_str(), m.trusted)).collect();
    assert!(
        trusted.contains(&("9", false)) && trusted.contains(&("2", true)) && trusted.contains(&("2", false)),
        "{trusted:?}"
    );
    assert!(!view.endpoints.get("gpu-a").is_some_and(|e| e.open_somewhere), "{view:?}");
}

#[tokio::test]
async fn gpu_load_and_in_flight_are_shared() {
    let transport = ChannelTransport::default();
    let nodes = channel_nodes(&transport, 2).await;
    let sample = GpuLoad { waiting: 7.0, running: 3.0, kv_use: 0.5, at_ms: crate::clock::wall_ms() };
    nodes[0].registry.endpoint("gpu-b").set_local_gpu(Some(sample));
    let _outstanding = [nodes[0].registry.endpoint("gpu-b").begin(), nodes[0].registry.endpoint("gpu-b").begin()];
    let remote = nodes[1].registry.endpoint("gpu-b");
    wait_for("node 2 sees node 1's scrape", Duration::from_secs(2), || {
        remote.fresh_gpu(crate::clock::wall_ms(), 3_000).is_some_and(|g| g.waiting == 7.0 && g.kv_use == 0.5)
    })
    .await;
    wait_for("node 2 counts node 1's in-flight requests", Duration::from_secs(2), || {
        remote.load_signal(crate::clock::wall_ms(), 3_000).outstanding == 2.0
    })
    .await;
}

#[tokio::test]
async fn a_partitioned_node_is_declared_dead_and_its_reports_stop_counting() {
    let transport = ChannelTransport::default();
    let nodes = channel_nodes(&transport, 3).await;
    for node in &nodes {
        wait_for("three live members", Duration::from_secs(5), || node.cluster.view().live_members().count() == 3)
            .await;
    }
    break_endpoint(&nodes[2].registry, "gpu-a");
    let at_one = nodes[0].registry.endpoint("gpu-a");
    wait_for("node 1 sees node 3's open breaker", Duration::from_secs(2), || at_one.remote_open()).await;

    // Cut node 3 off from both others.
    for other in &nodes[..2] {
        transport.remove_link(nodes[2].addr, other.addr).await;
    }
    for node in &nodes[..2] {
        wait_for("nodes 1 and 2 declare node 3 dead", Duration::from_secs(10), || {
            node.cluster.view().live_members().count() == 2
        })
        .await;
    }
    assert!(!at_one.remote_open(), "a dead node's reports no longer steer routing");
    let view = nodes[1].cluster.view();
    assert!(view.members.iter().any(|m| m.node_id == "3" && !m.alive), "node 3 listed as dead: {view:?}");

    // Healing the partition brings it (and its report) back.
    for other in &nodes[..2] {
        transport.add_link(nodes[2].addr, other.addr).await;
    }
    wait_for("node 3 alive again", Duration::from_secs(10), || nodes[0].cluster.view().live_members().count() == 3)
        .await;
    wait_for("its open breaker counts again", Duration::from_secs(2), || at_one.remote_open()).await;
}

#[tokio::test]
async fn gossips_over_real_udp_on_loopback() {
    let first_registry = registry();
    let first = Gossip::start(settings(1, ([127, 0, 0, 1], 0).into(), Vec::new()), first_registry.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let seed = first.gossip_addr().to_string();
    assert_ne!(first.gossip_addr().port(), 0, "the bound port is advertised");
    let second_registry = registry();
    let second = Gossip::start(settings(2, ([127, 0, 0, 1], 0).into(), vec![seed]), second_registry.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    wait_for("both see two live members", Duration::from_secs(5), || {
        first.view().live_members().count() == 2 && second.view().live_members().count() == 2
    })
    .await;
    break_endpoint(&second_registry, "gpu-b");
    let endpoint = first_registry.endpoint("gpu-b");
    wait_for("node 1 sees node 2's open breaker over UDP", Duration::from_secs(2), || endpoint.remote_open()).await;
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_removed_from_the_config_is_withdrawn_from_gossip() {
    let transport = ChannelTransport::default();
    let nodes = channel_nodes(&transport, 2).await;
    let reported_by_one = |node: &Node| {
        node.cluster.view().endpoints.get("gpu-a").is_some_and(|endpoint| endpoint.reports.contains_key("1"))
    };
    wait_for("node 2 sees node 1's gpu-a report", Duration::from_secs(2), || reported_by_one(&nodes[1])).await;
    nodes[0].registry.set_active(&[("gpu-b".into(), None)]);
    wait_for("node 1's gpu-a report withdrawn", Duration::from_secs(2), || !reported_by_one(&nodes[1])).await;
    assert!(nodes[1].cluster.view().endpoints["gpu-b"].reports.contains_key("1"), "gpu-b is still reported");
}
