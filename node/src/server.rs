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
}

impl Listeners {
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let api = TcpListener::bind(&config.node.listen)
            .await
            .map_err(|err| anyhow::anyhow!("node.listen: cannot bind {}: {err}", config.node.listen))?;
        let admin = TcpListener::bind(&config.node.admin_listen)
            .await
            .map_err(|err| anyhow::anyhow!("node.admin_listen: cannot bind {}: {err}", config.node.admin_listen))?;
        Ok(Listeners { api, admin })
    }
}

/// Runs a node until `shutdown` resolves, then drains. Returns when in-flight requests have finished or
/// the grace period is over.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let gateway = Arc::new(Gateway::new(&config)?);
    run_gateway(gateway, listeners, shutdown).await
}

pub async fn run_gateway(gateway: Arc<Gateway>, listeners: Listeners, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
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
        let listeners = Listeners::bind(&config).await?;
        let api_addr = listeners.api.local_addr()?;
        let admin_addr = listeners.admin.local_addr()?;
        let gateway = Arc::new(Gateway::new(&config)?);
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
