//! Listeners and lifecycle: accept loops for the API and admin listeners, and a graceful shutdown that
//! stops accepting, lets in-flight requests and streams drain (bounded by `shutdown_grace_ms`), then returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::accept::{Acceptor, Listener};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::tokens;

/// Bound sockets, so callers (and tests on port 0) know the addresses before serving starts.
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
    /// Raft gRPC, in cluster mode.
    pub raft: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let api = TcpListener::bind(&config.node.listen.api)
            .await
            .map_err(|err| anyhow::anyhow!("node.listen: cannot bind {}: {err}", config.node.listen.api))?;
        let admin = TcpListener::bind(&config.node.listen.admin)
            .await
            .map_err(|err| anyhow::anyhow!("node.admin_listen: cannot bind {}: {err}", config.node.listen.admin))?;
        let raft =
            if config.is_clustered() {
                Some(TcpListener::bind(&config.node.listen.raft).await.map_err(|err| {
                    anyhow::anyhow!("node.raft_listen: cannot bind {}: {err}", config.node.listen.raft)
                })?)
            } else {
                None
            };
        Ok(Listeners { api, admin, raft })
    }
}

/// Runs a node until `shutdown` resolves, then drains. Returns when in-flight requests have finished or
/// the grace period is over.
pub async fn run(config: Config, mut listeners: Listeners, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    crate::idle_spin::set_budget(Duration::from_micros(config.node.idle_spin_us));
    let gateway = build_gateway(&config, &mut listeners).await?;
    let acceptor = Acceptor::new(gateway.clone(), &config.node)?;
    run_gateway(gateway, acceptor, listeners, shutdown).await
}

/// Standalone: the file is the config. Gossip mode: start the Raft member, bootstrap once, and follow
/// the replicated state.
async fn build_gateway(config: &Config, listeners: &mut Listeners) -> anyhow::Result<Arc<Gateway>> {
    let raft_addr = match &listeners.raft {
        Some(raft) => Some(raft.local_addr()?),
        None => None,
    };
    let gateway = build_control_plane(config, listeners).await?;
    start_routing_feeds(config, &gateway, listeners, raft_addr).await?;
    Ok(gateway)
}

/// The GPU-metrics scraper always (it idles without `metrics_url`s), gossip when enabled.
async fn start_routing_feeds(
    config: &Config,
    gateway: &Arc<Gateway>,
    listeners: &Listeners,
    raft_addr: Option<SocketAddr>,
) -> anyhow::Result<()> {
    crate::health::scrape::spawn_scraper(
        Arc::downgrade(&gateway.endpoints),
        Duration::from_millis(config.node.health.gpu_scrape_interval_ms),
        &gateway.upstream_tls,
    )?;
    crate::canary::spawn(gateway);
    crate::admin::status::spawn_sampler(gateway);
    if config.node.gossip_enabled() {
        let mut settings = match crate::gossip::GossipSettings::from_config(config) {
            Ok(settings) => settings,
            Err(err) if config.node.gossip.enabled == Some(true) => return Err(err),
            Err(err) => {
                gossip_not_running(gateway, &err);
                return Ok(());
            }
        };
        settings.api_addr = Some(listeners.api.local_addr()?.to_string());
        settings.admin_addr = Some(listeners.admin.local_addr()?.to_string());
        settings.raft_addr =
            raft_addr.map(|addr| config.node.raft.advertise.clone().unwrap_or_else(|| addr.to_string()));
        if let Some(consensus) = &gateway.consensus {
            settings.accept = Some(raft_member_filter(consensus.clone()));
            // Sealed with the Raft port's live secrets, so a rotation reaches gossip without a restart.
            if settings.secrets.is_some() {
                let auth = consensus.auth().clone();
                settings.secrets = Some(Arc::new(move || auth.secrets()));
            }
        }
        match crate::gossip::Gossip::start(settings, gateway.endpoints.clone()).await {
            Ok(cluster) => {
                let _ = gateway.gossip.set(cluster);
                if let Some(consensus) = &gateway.consensus {
                    spawn_gossip_reachability(gateway, consensus.clone());
                }
            }
            // Asked for explicitly: refuse to start without it.
            Err(err) if config.node.gossip.enabled == Some(true) => return Err(err),
            // On by default: the node still serves (routing falls back to its own observations), and
            // says why in the log and in `GET /admin/v1/cluster/gossip`.
            Err(err) => gossip_not_running(gateway, &err),
        }
    }
    Ok(())
}

/// Gossip is on by default for cluster members but could not start: the node still serves (routing uses
/// its own observations only) and says why in the log and in `GET /admin/v1/cluster/gossip`.
fn gossip_not_running(gateway: &Gateway, err: &anyhow::Error) {
    tracing::error!(
        error = %format!("{err:#}"),
        "gossip is on by default for cluster members but could not start; routing uses this node's own \
         observations only (fix node.gossip_listen / gossip_advertise, or set node.gossip = false)"
    );
    let _ = gateway.gossip_error.set(format!("{err:#}"));
}

/// Logs when gossip stops seeing Raft members (or sees them again): routing then lacks their health and
/// load reports. The same list is in `GET /admin/v1/cluster/gossip` as `unreachable_members`.
fn spawn_gossip_reachability(gateway: &Arc<Gateway>, consensus: tollgate_consensus::ConsensusNode) {
    let weak = Arc::downgrade(gateway);
    tokio::spawn(async move {
        // Give the first gossip rounds time to find everyone.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut reported: Vec<u64> = Vec::new();
        loop {
            let Some(gateway) = weak.upgrade() else { return };
            if gateway.is_shutting_down() {
                return;
            }
            let missing = crate::admin::gossip_unreachable_members(&gateway, &consensus);
            if missing != reported {
                if missing.is_empty() {
                    tracing::info!("gossip reaches every Raft member again");
                } else {
                    tracing::warn!(
                        ?missing,
                        "gossip does not reach these Raft members: their endpoint health and load are missing \
                         from routing (check node.gossip_listen / gossip_advertise and UDP between the nodes)"
                    );
                }
                reported = missing;
            }
            drop(gateway);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
}

/// Gossip reports count only from Raft members (voters and learners), and only from the host of the
/// member's Raft address when that is an IP: a process that learned the gossip cluster id, or that reuses
/// a member's id from elsewhere, is listed but never steers routing.
fn raft_member_filter(consensus: tollgate_consensus::ConsensusNode) -> crate::gossip::MemberFilter {
    std::sync::Arc::new(move |node_id: &str, gossip_addr: SocketAddr| {
        let Ok(id) = node_id.parse::<u64>() else {
            return false;
        };
        consensus.members().iter().any(|(member, info)| {
            *member == id
                && match info.raft_addr.parse::<SocketAddr>() {
                    Ok(raft) if !raft.ip().is_unspecified() => raft.ip() == gossip_addr.ip(),
                    // A DNS name (or an unspecified address): the id has to do.
                    _ => true,
                }
        })
    })
}

async fn build_control_plane(config: &Config, listeners: &mut Listeners) -> anyhow::Result<Arc<Gateway>> {
    let Some(raft_listener) = listeners.raft.take() else {
        return Ok(Arc::new(Gateway::new(config)?));
    };
    let mut consensus_config = crate::control::consensus_config(
        config,
        raft_listener.local_addr()?,
        listeners.api.local_addr()?,
        listeners.admin.local_addr()?,
    );
    consensus_config.cluster_secrets = config.cluster_secrets()?;
    consensus_config.tls = config.cluster_tls.as_ref().map(|files| files.load()).transpose()?;
    if consensus_config.tls.is_none() {
        tracing::warn!("the Raft port speaks plain HTTP/2 (peers authenticate with the cluster secret only); set [cluster_tls] across networks");
    }
    if let (Some(files), Some(tls)) = (&config.cluster_tls, &consensus_config.tls) {
        files.spawn_reload(tls);
    }
    let consensus = tollgate_consensus::ConsensusNode::start(consensus_config, raft_listener).await?;
    crate::control::spawn_secret_reload(config, &consensus);
    let gateway = Arc::new(Gateway::clustered(config, consensus.clone())?);
    crate::control::spawn_state_watcher(&gateway, &consensus);
    crate::control::spawn_bootstrap(config, consensus);
    Ok(gateway)
}

pub async fn run_gateway(
    gateway: Arc<Gateway>,
    acceptor: Acceptor,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokens::warm_up();
    let acceptor = Arc::new(acceptor);
    let graceful = GracefulShutdown::new();
    tracing::info!(
        node_id = gateway.node_id,
        api = %listeners.api.local_addr()?,
        admin = %listeners.admin.local_addr()?,
        "tollgate node serving"
    );
    tokio::pin!(shutdown);
    loop {
        let (accepted, listener) = tokio::select! {
            accepted = listeners.api.accept() => (accepted, Listener::Api),
            accepted = listeners.admin.accept() => (accepted, Listener::Admin),
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, _peer)) => acceptor.serve(stream, listener, Some(&graceful)),
            Err(err) => acceptor.accept_failed(err, listener).await,
        }
    }
    gateway.begin_shutdown();
    // The API listener closes at once; the admin listener keeps answering during the drain, so probes
    // see /readyz 503 `shutting_down` rather than a refused connection.
    let Listeners { api, admin, raft } = listeners;
    drop((api, raft));
    let probes = tokio::spawn({
        let acceptor = acceptor.clone();
        async move {
            loop {
                match admin.accept().await {
                    Ok((stream, _peer)) => acceptor.serve(stream, Listener::Admin, None),
                    Err(err) => acceptor.accept_failed(err, Listener::Admin).await,
                }
            }
        }
    });
    let grace = Duration::from_millis(gateway.limits.shutdown_grace_ms);
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: draining in-flight requests");
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("grace period over; closing remaining connections"),
    }
    probes.abort();
    if let Some(budget) = &gateway.budget {
        // Report what was used and hand unused allowance back before leaving.
        let _ = tokio::time::timeout(Duration::from_secs(3), budget.flush()).await;
    }
    if let Some(usage) = &gateway.usage {
        let _ = tokio::time::timeout(Duration::from_secs(2), usage.flush()).await;
    }
    if let Some(gossip) = gateway.gossip.get() {
        gossip.shutdown().await;
    }
    if let Some(consensus) = &gateway.consensus {
        consensus.shutdown().await;
    }
    Ok(())
}

/// A node running in the background, for tests and `tollgate dev`.
pub struct RunningNode {
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningNode {
    /// Binds the configured addresses (use port 0 in tests) and serves in a background task.
    pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
        let mut listeners = Listeners::bind(&config).await?;
        Self::start_with(config, listeners.raft.take(), listeners).await
    }

    /// Starts with pre-bound listeners (tests bind Raft ports first so peers know each other's addresses).
    pub async fn start_with(
        config: Config,
        raft: Option<TcpListener>,
        mut listeners: Listeners,
    ) -> anyhow::Result<RunningNode> {
        listeners.raft = raft;
        let api_addr = listeners.api.local_addr()?;
        let admin_addr = listeners.admin.local_addr()?;
        let gateway = build_gateway(&config, &mut listeners).await?;
        let acceptor = Acceptor::new(gateway.clone(), &config.node)?;
        let (sender, receiver) = oneshot::channel::<()>();
        let task = tokio::spawn(run_gateway(gateway.clone(), acceptor, listeners, async move {
            let _ = receiver.await;
        }));
        Ok(RunningNode { api_addr, admin_addr, gateway, shutdown: Some(sender), task: Some(task) })
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// Signals shutdown and waits for the drain to finish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
    }
}
