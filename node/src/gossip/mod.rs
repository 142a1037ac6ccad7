//! Gossip (chitchat over UDP) behind a typed [`Gossip`] handle: membership, and per upstream endpoint the
//! health, latency, error rate, in-flight count and GPU load that every node observes, merged by all.
//!
//! The request path never locks chitchat: it records into lock-free [`crate::health::EndpointStats`] and reads
//! the peers' merged numbers from the same atomics. One background task per node publishes this node's
//! observations into its own keys and rebuilds the [`ClusterView`] (an `ArcSwap`) every gossip interval,
//! and right away when a peer's endpoint key changes. Only [`keys`] knows the key names.

mod admin;
pub mod keys;
pub mod sealed;

pub use admin::{admin_view, collect_metrics};
pub use sealed::{SealStats, SecretSource};

#[cfg(test)]
mod sealed_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chitchat::transport::Transport;
use chitchat::{spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use serde::Serialize;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

use crate::clock::{monotonic_ms, wall_ms};
use crate::health::{EndpointRegistry, EndpointReport, GpuLoad, RemoteSummary};

/// Which gossip members' reports count: given a member's node id and advertised gossip address, whether it
/// is one of ours. Policy comes from outside (the Raft membership); gossip only applies it.
pub type MemberFilter = Arc<dyn Fn(&str, SocketAddr) -> bool + Send + Sync>;

/// How this node joins the gossip and what it tells the others about itself.
#[derive(Clone)]
pub struct GossipSettings {
    pub node_id: u64,
    pub listen: SocketAddr,
    /// Default: the bound listen address.
    pub advertise: Option<SocketAddr>,
    pub seeds: Vec<String>,
    pub interval: Duration,
    pub cluster_id: String,
    pub api_addr: Option<String>,
    pub admin_addr: Option<String>,
    pub raft_addr: Option<String>,
    /// `None`: every member that shares the cluster id counts (standalone gossip without Raft).
    pub accept: Option<MemberFilter>,
    /// The cluster secrets that seal and open every datagram ([`sealed`]); `None` (a node without a
    /// cluster secret) gossips unsealed.
    pub secrets: Option<SecretSource>,
}

impl std::fmt::Debug for GossipSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipSettings")
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("interval", &self.interval)
            .field("filtered", &self.accept.is_some())
            .field("sealed", &self.secrets.is_some())
            .finish_non_exhaustive()
    }
}

impl GossipSettings {
    pub fn from_config(config: &crate::Config) -> anyhow::Result<GossipSettings> {
        let node = &config.node;
        let listen = node.listen.gossip;
        // Port 0 (tests) is advertised once bound; otherwise the configured or derived address.
        let advertise = if listen.port() == 0 {
            node.gossip_advertise_addr().filter(|a| a.port() != 0)
        } else {
            Some(node.gossip_advertise_addr().ok_or_else(|| {
                anyhow::anyhow!("node.gossip_advertise: needed because node.gossip_listen binds every interface")
            })?)
        };
        Ok(GossipSettings {
            node_id: node.id,
            listen,
            advertise,
            seeds: node.effective_gossip_seeds(),
            interval: Duration::from_millis(node.gossip.interval_ms),
            cluster_id: node.gossip.cluster_id.clone(),
            api_addr: None,
            admin_addr: None,
            raft_addr: None,
            accept: None,
            secrets: fixed_secrets(config.cluster_secrets()?),
        })
    }
}

/// Secrets read once (the node replaces the source with its live, reloadable set when it runs Raft).
fn fixed_secrets(secrets: Vec<String>) -> Option<SecretSource> {
    if secrets.is_empty() {
        return None;
    }
    let secrets = Arc::new(secrets);
    Some(Arc::new(move || secrets.clone()))
}

/// A sample stamped further in the future than this is forged or from a broken clock: ignored, so it
/// cannot outlive its time to live.
const MAX_FUTURE_SKEW_MS: u64 = 5_000;

/// One node as gossip sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberView {
    pub node_id: String,
    pub generation: u64,
    pub gossip_addr: String,
    pub alive: bool,
    pub api_addr: Option<String>,
    pub admin_addr: Option<String>,
    pub raft_addr: Option<String>,
    pub roles: Vec<String>,
    pub version: Option<String>,
    /// Passes the member filter (a Raft member at its address): only then do its reports count.
    pub trusted: bool,
}

/// Everything the cluster says about one endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointView {
    /// Each live node's report (this node's included), by node id.
    pub reports: BTreeMap<String, EndpointReport>,
    /// Each live node's latest GPU scrape, by node id.
    pub gpu: BTreeMap<String, GpuLoad>,
    /// Some live node has the breaker open: every node avoids the endpoint.
    pub open_somewhere: bool,
    pub in_flight_total: i64,
}

/// The merged view, rebuilt in the background; readers get a consistent snapshot without locking.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterView {
    pub self_node: String,
    pub members: Vec<MemberView>,
    pub endpoints: BTreeMap<String, EndpointView>,
    pub refreshed_at_ms: u64,
}

impl ClusterView {
    pub fn live_members(&self) -> impl Iterator<Item = &MemberView> {
        self.members.iter().filter(|m| m.alive)
    }
}

/// The gossip handle a node keeps. Dropping it stops gossip.
pub struct Gossip {
    chitchat: Arc<Mutex<Chitchat>>,
    handle: std::sync::Mutex<Option<ChitchatHandle>>,
    view: Arc<ArcSwap<ClusterView>>,
    gossip_addr: SocketAddr,
    task: JoinHandle<()>,
    seal_stats: Option<Arc<SealStats>>,
}

impl Gossip {
    /// Binds `settings.listen` (UDP) and joins through the seeds. Port 0 picks a free port first (tests):
    /// chitchat binds by address, so the port is probed, released and bound again by chitchat.
    pub async fn start(mut settings: GossipSettings, registry: Arc<EndpointRegistry>) -> anyhow::Result<Gossip> {
        let configured = settings.listen;
        let bind_error = move |err: &dyn std::fmt::Display| {
            anyhow::anyhow!("node.gossip_listen: cannot bind {configured}/udp: {err}")
        };
        if settings.listen.port() == 0 {
            let probe = std::net::UdpSocket::bind(settings.listen).map_err(|err| bind_error(&err))?;
            settings.listen = probe.local_addr()?;
        }
        let advertise = settings.advertise.unwrap_or(settings.listen);
        let started = match settings.secrets.clone() {
            Some(secrets) => {
                let stats = Arc::new(SealStats::default());
                let transport = sealed::SealedTransport::new(secrets, stats.clone());
                Self::start_with_transport(settings, advertise, registry, &transport).await.map(|mut gossip| {
                    gossip.seal_stats = Some(stats);
                    gossip
                })
            }
            None => Self::start_with_transport(settings, advertise, registry, &chitchat::transport::UdpTransport).await,
        };
        started.map_err(|err| bind_error(&format!("{err:#}")))
    }

    /// With any chitchat transport (tests use `ChannelTransport`, where `advertise` is the listen address).
    pub async fn start_with_transport(
        settings: GossipSettings,
        advertise: SocketAddr,
        registry: Arc<EndpointRegistry>,
        transport: &dyn Transport,
    ) -> anyhow::Result<Gossip> {
        // Must grow on every restart so peers replace the old incarnation's state.
        let generation = wall_ms();
        let chitchat_id = ChitchatId::new(settings.node_id.to_string(), generation, advertise);
        let interval = settings.interval;
        let config = ChitchatConfig {
            chitchat_id: chitchat_id.clone(),
            cluster_id: settings.cluster_id.clone(),
            gossip_interval: interval,
            listen_addr: settings.listen,
            seed_nodes: settings.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                // A peer silent for a few intervals is dead; its reports stop counting.
                initial_interval: interval * 2,
                max_interval: (interval * 10).max(Duration::from_secs(2)),
                // Forget dead incarnations after a minute instead of chitchat's default day.
                dead_node_grace_period: Duration::from_secs(60),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(60),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        let mut initial = vec![
            (
                keys::NODE_ROLES.to_owned(),
                if settings.raft_addr.is_some() { "gateway,raft" } else { "gateway" }.to_owned(),
            ),
            (keys::NODE_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ];
        for (key, value) in [
            (keys::NODE_API, &settings.api_addr),
            (keys::NODE_ADMIN, &settings.admin_addr),
            (keys::NODE_RAFT, &settings.raft_addr),
        ] {
            if let Some(value) = value {
                initial.push((key.to_owned(), value.clone()));
            }
        }
        let handle = spawn_chitchat(config, initial, transport).await?;
        let chitchat = handle.chitchat();
        let view = Arc::new(ArcSwap::from_pointee(ClusterView::default()));
        let changed = Arc::new(Notify::new());
        {
            let changed = changed.clone();
            let self_id = chitchat_id.clone();
            // Runs under chitchat's lock: only a wake-up, no work.
            chitchat
                .lock()
                .await
                .subscribe_event(keys::ENDPOINT_PREFIX, move |event| {
                    if *event.node != self_id {
                        changed.notify_one();
                    }
                })
                .forever();
        }
        let task = tokio::spawn(refresh_loop(
            chitchat.clone(),
            registry,
            view.clone(),
            changed,
            interval,
            settings.accept.clone(),
        ));
        tracing::info!(
            node_id = settings.node_id,
            gossip = %advertise,
            seeds = ?settings.seeds,
            sealed = settings.secrets.is_some(),
            "gossip started"
        );
        Ok(Gossip {
            chitchat,
            handle: std::sync::Mutex::new(Some(handle)),
            view,
            gossip_addr: advertise,
            task,
            seal_stats: None,
        })
    }

    /// The latest merged view (cheap; no lock).
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// Datagrams refused or dropped by the sealing transport (`None`: gossip is not sealed).
    pub fn seal_stats(&self) -> Option<&SealStats> {
        self.seal_stats.as_deref()
    }

    /// Leaves the gossip: peers see this node die within a few intervals.
    pub async fn shutdown(&self) {
        self.task.abort();
        let handle = self.handle.lock().ok().and_then(|mut handle| handle.take());
        if let Some(handle) = handle {
            let _ = handle.shutdown().await;
        }
    }

    /// For tests: the raw chitchat state.
    pub fn chitchat(&self) -> Arc<Mutex<Chitchat>> {
        self.chitchat.clone()
    }
}

impl Drop for Gossip {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut handle) = self.handle.lock() {
            if let Some(handle) = handle.take() {
                let _ = handle.initiate_shutdown();
            }
        }
    }
}

/// Publishes this node's observations and rebuilds the view, every interval and on peers' key changes.
async fn refresh_loop(
    chitchat: Arc<Mutex<Chitchat>>,
    registry: Arc<EndpointRegistry>,
    view: Arc<ArcSwap<ClusterView>>,
    changed: Arc<Notify>,
    interval: Duration,
    accept: Option<MemberFilter>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => publish(&chitchat, &registry).await,
            () = changed.notified() => {}
        }
        let merged = collect(&chitchat, &registry, accept.as_ref()).await;
        view.store(Arc::new(merged));
    }
}

async fn publish(chitchat: &Mutex<Chitchat>, registry: &EndpointRegistry) {
    let now = monotonic_ms();
    // Serialize outside the lock.
    let endpoints = registry.all();
    let values: Vec<(String, Option<String>, Option<String>)> = endpoints
        .iter()
        .map(|endpoint| {
            if !endpoint.is_active() {
                // Removed from the config: withdraw its keys.
                return (endpoint.name.clone(), None, None);
            }
            let report = keys::encode_report(&endpoint.local_report(now));
            let gpu = endpoint.local_gpu().map(|load| keys::encode_gpu(&load));
            (endpoint.name.clone(), Some(report), gpu)
        })
        .collect();
    let mut chitchat = chitchat.lock().await;
    let state = chitchat.self_node_state();
    for (name, report, gpu) in values {
        let endpoint_key = keys::endpoint_key(&name);
        match report {
            Some(report) => state.set(endpoint_key, report),
            None if state.get(&endpoint_key).is_some() => state.delete(&endpoint_key),
            None => {}
        }
        let gpu_key = keys::gpu_key(&name);
        match gpu {
            Some(gpu) => state.set(gpu_key, gpu),
            None if state.get(&gpu_key).is_some() => state.delete(&gpu_key),
            None => {}
        }
    }
}

/// Reads the peers' keys under the lock (copying strings only), then merges outside it.
async fn collect(
    chitchat: &Mutex<Chitchat>,
    registry: &EndpointRegistry,
    accept: Option<&MemberFilter>,
) -> ClusterView {
    struct Raw {
        id: ChitchatId,
        alive: bool,
        node_keys: [Option<String>; 5],
        endpoints: Vec<(String, String)>,
        gpus: Vec<(String, String)>,
    }
    let (self_id, raw) = {
        let chitchat = chitchat.lock().await;
        let self_id = chitchat.self_chitchat_id().clone();
        let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
        let raw: Vec<Raw> = chitchat
            .node_states()
            .iter()
            .map(|(id, state)| {
                let strip = |prefix: &'static str| {
                    state
                        .iter_prefix(prefix)
                        .map(|(key, value)| (key[prefix.len()..].to_owned(), value.value.clone()))
                        .collect::<Vec<_>>()
                };
                Raw {
                    id: id.clone(),
                    alive: live.contains(id),
                    node_keys: [
                        keys::NODE_API,
                        keys::NODE_ADMIN,
                        keys::NODE_RAFT,
                        keys::NODE_ROLES,
                        keys::NODE_VERSION,
                    ]
                    .map(|key| state.get(key).map(str::to_owned)),
                    endpoints: strip(keys::ENDPOINT_PREFIX),
                    gpus: strip(keys::GPU_PREFIX),
                }
            })
            .collect();
        (self_id, raw)
    };

    let now_wall = wall_ms();
    let mut view =
        ClusterView { self_node: self_id.node_id.to_string(), refreshed_at_ms: now_wall, ..ClusterView::default() };
    for node in &raw {
        let [api, admin, raft, roles, version] = node.node_keys.clone();
        let node_name = node.id.node_id.to_string();
        let trusted =
            node.id == self_id || accept.is_none_or(|accept| accept(&node_name, node.id.gossip_advertise_addr));
        view.members.push(MemberView {
            node_id: node.id.node_id.to_string(),
            generation: node.id.generation_id,
            gossip_addr: node.id.gossip_advertise_addr.to_string(),
            alive: node.alive,
            api_addr: api,
            admin_addr: admin,
            raft_addr: raft,
            roles: roles.map(|r| r.split(',').map(str::to_owned).collect()).unwrap_or_default(),
            version,
            trusted,
        });
        if !node.alive || !trusted {
            continue;
        }
        for (endpoint, value) in &node.endpoints {
            if let Some(report) = keys::decode_report(value) {
                view.endpoints.entry(endpoint.clone()).or_default().reports.insert(node_name.clone(), report);
            }
        }
        for (endpoint, value) in &node.gpus {
            if let Some(load) = keys::decode_gpu(value).filter(|l| {
                l.at_ms <= now_wall.saturating_add(MAX_FUTURE_SKEW_MS)
                    && now_wall.saturating_sub(l.at_ms) <= registry.gpu_ttl_ms
            }) {
                view.endpoints.entry(endpoint.clone()).or_default().gpu.insert(node_name.clone(), load);
            }
        }
    }
    view.members.sort_by(|a, b| (&a.node_id, a.generation).cmp(&(&b.node_id, b.generation)));

    let self_name = view.self_node.clone();
    for endpoint in registry.all() {
        let entry = view.endpoints.get(&endpoint.name);
        let peers = entry.into_iter().flat_map(|e| e.reports.iter()).filter(|(node, _)| **node != self_name);
        let newest_gpu = entry
            .into_iter()
            .flat_map(|e| e.gpu.iter())
            .filter(|(node, _)| **node != self_name)
            .map(|(_, load)| *load)
            .max_by_key(|load| load.at_ms);
        endpoint.set_remote(&RemoteSummary::merge(peers.map(|(_, report)| report), newest_gpu));
    }
    for endpoint in view.endpoints.values_mut() {
        endpoint.open_somewhere = endpoint.reports.values().any(|r| r.state == crate::health::BreakerState::Open);
        endpoint.in_flight_total = endpoint.reports.values().map(|r| r.in_flight.max(0)).sum();
    }
    view
}
