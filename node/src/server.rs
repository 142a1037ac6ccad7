//! Listeners and lifecycle: accept loops for the API and admin listeners, and a graceful shutdown that
//! stops accepting, lets in-flight requests and streams drain (bounded by `shutdown_grace_ms`), then returns.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::{admin, proxy, tokens};

/// Bound sockets, so callers (and tests on port 0) know the addresses before serving starts.
pub struct Listeners {
    pub api: TcpListener,
    pub admin: TcpListener,
    /// Raft gRPC, in cluster mode.
    pub raft: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let api = TcpListener::bind(&config.node.listen)
            .await
            .map_err(|err| anyhow::anyhow!("node.listen: cannot bind {}: {err}", config.node.listen))?;
        let admin = TcpListener::bind(&config.node.admin_listen)
            .await
            .map_err(|err| anyhow::anyhow!("node.admin_listen: cannot bind {}: {err}", config.node.admin_listen))?;
        let raft =
            if config.is_clustered() {
                Some(TcpListener::bind(&config.node.raft_listen).await.map_err(|err| {
                    anyhow::anyhow!("node.raft_listen: cannot bind {}: {err}", config.node.raft_listen)
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
    run_gateway(gateway, listeners, shutdown).await
}

/// Standalone: the file is the config. Cluster mode: start the Raft member, bootstrap once, and follow
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
    crate::gossip::scrape::spawn_scraper(
        Arc::downgrade(&gateway.endpoints),
        Duration::from_millis(config.node.gpu_scrape_interval_ms),
    )?;
    crate::canary::spawn(gateway);
    if config.node.gossip_enabled() {
        let mut settings = crate::gossip::GossipSettings::from_config(config)?;
        settings.api_addr = Some(listeners.api.local_addr()?.to_string());
        settings.admin_addr = Some(listeners.admin.local_addr()?.to_string());
        settings.raft_addr =
            raft_addr.map(|addr| config.node.advertise_raft.clone().unwrap_or_else(|| addr.to_string()));
        let cluster = crate::gossip::Cluster::start(settings, gateway.endpoints.clone()).await?;
        let _ = gateway.gossip.set(cluster);
    }
    Ok(())
}

async fn build_control_plane(config: &Config, listeners: &mut Listeners) -> anyhow::Result<Arc<Gateway>> {
    let Some(raft_listener) = listeners.raft.take() else {
        return Ok(Arc::new(Gateway::new(config)?));
    };
    let mut consensus_config = crate::cluster::consensus_config(
        config,
        raft_listener.local_addr()?,
        listeners.api.local_addr()?,
        listeners.admin.local_addr()?,
    );
    consensus_config.cluster_secrets = config.cluster_secrets()?;
    let consensus = tollgate_consensus::ConsensusNode::start(consensus_config, raft_listener).await?;
    crate::cluster::spawn_secret_reload(config, &consensus);
    let gateway = Arc::new(Gateway::clustered(config, consensus.clone())?);
    crate::cluster::spawn_state_watcher(&gateway, &consensus);
    crate::cluster::spawn_bootstrap(config, consensus);
    Ok(gateway)
}

pub async fn run_gateway(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokens::warm_up();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tracing::info!(
        node_id = gateway.node_id,
        api = %listeners.api.local_addr()?,
        admin = %listeners.admin.local_addr()?,
        "tollgate node serving"
    );
    tokio::pin!(shutdown);
    loop {
        let (stream, is_admin) = tokio::select! {
            accepted = listeners.api.accept() => (accepted, false),
            accepted = listeners.admin.accept() => (accepted, true),
            () = &mut shutdown => break,
        };
        let stream = match stream {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        let gateway = gateway.clone();
        if is_admin {
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, std::convert::Infallible>(admin::handle(gateway, request).await) }
            });
            let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
            tokio::spawn(async move {
                let _ = connection.await;
            });
        } else {
            let service = service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy::handle(gateway, request).await) }
            });
            let connection = graceful.watch(builder.serve_connection(io, service).into_owned());
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(%err, "connection ended with an error");
                }
            });
        }
    }
    gateway.begin_shutdown();
    drop(listeners);
    let grace = Duration::from_millis(gateway.limits.shutdown_grace_ms);
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: draining in-flight requests");
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => tracing::warn!("grace period over; closing remaining connections"),
    }
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
        let (sender, receiver) = oneshot::channel::<()>();
        let task = tokio::spawn(run_gateway(gateway.clone(), listeners, async move {
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
