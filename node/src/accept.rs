//! Accepting and serving client connections on the API and admin listeners: the HTTP/1 and HTTP/2
//! settings, the per-listener connection cap, the handshake and idle deadlines (see `connection.rs`), and
//! dispatch to the proxy or the admin router. `server.rs` owns the loop and the shutdown around it.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tokio_rustls::TlsAcceptor;

use crate::config::{LimitsConfig, NodeConfig};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::{admin, connection, proxy};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Api,
    Admin,
}

/// Everything needed to serve one accepted connection.
pub struct Acceptor {
    gateway: Arc<Gateway>,
    admin_router: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    api_slots: Arc<Semaphore>,
    admin_slots: Arc<Semaphore>,
    handshake: Duration,
    idle: Duration,
    /// TLS on the API listener (`[node.tls]`); plain text without.
    api_tls: Option<TlsAcceptor>,
    /// TLS on the admin listener (`[node.admin_tls]`).
    admin_tls: Option<TlsAcceptor>,
}

impl Acceptor {
    /// Fails when a configured certificate or key cannot be loaded (the error names the setting).
    pub fn new(gateway: Arc<Gateway>, node: &NodeConfig) -> anyhow::Result<Acceptor> {
        let limits = gateway.limits.clone();
        let tls = |files: &Option<crate::tls_listen::TlsFiles>, what: &'static str| {
            files.as_ref().map(|files| crate::tls_listen::acceptor(files, what)).transpose()
        };
        let (api_tls, admin_tls) = (tls(&node.tls, "node.tls")?, tls(&node.admin_tls, "node.admin_tls")?);
        for (listener, on) in [("API", api_tls.is_some()), ("admin", admin_tls.is_some())] {
            if !on {
                tracing::warn!("the {listener} listener speaks plain text: fine on loopback, not across a network");
            }
        }
        Ok(Acceptor {
            api_tls,
            admin_tls,
            admin_router: admin::router(gateway.clone()),
            builder: http_builder(&limits),
            api_slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            admin_slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            handshake: Duration::from_millis(limits.handshake_timeout_ms),
            idle: Duration::from_millis(limits.client_idle_timeout_ms),
            gateway,
        })
    }

    /// A failed `accept` (EMFILE and friends): counted, then a short back-off instead of a spin.
    pub async fn accept_failed(&self, err: std::io::Error, listener: Listener) {
        self.gateway.metrics.accept_errors.inc();
        tracing::warn!(%err, ?listener, "accept failed; backing off 50 ms");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Serves `stream` in its own task, or refuses it with a 503 when the listener is at its cap. A
    /// connection watched by `graceful` is one a shutdown waits for; during the drain the admin listener
    /// serves its probes unwatched (`None`), so they do not hold the drain up.
    pub fn serve(&self, mut stream: TcpStream, listener: Listener, graceful: Option<&GracefulShutdown>) {
        let _ = stream.set_nodelay(true);
        let slots = if listener == Listener::Admin { &self.admin_slots } else { &self.api_slots };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            self.gateway.metrics.connections_refused.inc();
            tracing::warn!(?listener, "connection refused: listener at limits.max_connections");
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(connection::OVER_CAPACITY)).await;
            });
            return;
        };
        let activity = connection::Activity::new();
        let io = TokioIo::new(connection::Watched::new(stream, activity.clone()));
        let (gateway, admin_router, requests) = (self.gateway.clone(), self.admin_router.clone(), activity.clone());
        let service = service_fn(move |request| {
            let (gateway, admin_router) = (gateway.clone(), admin_router.clone());
            let guard = requests.begin_request();
            async move {
                let response = match listener {
                    Listener::Admin => admin::handle(admin_router, request).await,
                    Listener::Api => proxy::handle(gateway, request).await,
                };
                Ok::<_, std::convert::Infallible>(response.map(|body| connection::Tracked::new(body, guard)))
            }
        });
        let deadlines = Deadlines { activity, handshake: self.handshake, idle: self.idle };
        let metrics = self.gateway.metrics.clone();
        let watcher = graceful.map(GracefulShutdown::watcher);
        let tls = if listener == Listener::Admin { self.admin_tls.clone() } else { self.api_tls.clone() };
        let Some(tls) = tls else {
            let connection = self.builder.serve_connection(io, service).into_owned();
            match watcher {
                Some(watcher) => tokio::spawn(deadlines.enforce(watcher.watch(connection), slot, metrics)),
                None => tokio::spawn(deadlines.enforce(connection, slot, metrics)),
            };
            return;
        };
        let builder = self.builder.clone();
        tokio::spawn(async move {
            // The handshake has the connection's handshake deadline; a failed one is a client's problem.
            let stream = match tokio::time::timeout(deadlines.handshake, tls.accept(io.into_inner())).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return tracing::debug!(%err, ?listener, "TLS handshake failed"),
                Err(_) => {
                    metrics.connections_timed_out.inc();
                    return tracing::debug!(?listener, "TLS handshake not finished at the handshake deadline");
                }
            };
            let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            match watcher {
                Some(watcher) => deadlines.enforce(watcher.watch(connection), slot, metrics).await,
                None => deadlines.enforce(connection, slot, metrics).await,
            }
        });
    }
}

/// hyper's server settings from `[limits]`: header sizes and counts, HTTP/2 keep-alive.
fn http_builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(100);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes.min(u32::MAX as usize) as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// One connection's handshake and idle deadlines.
struct Deadlines {
    activity: Arc<connection::Activity>,
    handshake: Duration,
    idle: Duration,
}

impl Deadlines {
    /// Drives `connection` to its end, or drops (closes) it at a deadline; holds its slot until then.
    async fn enforce<C, E>(self, connection: C, _slot: OwnedSemaphorePermit, metrics: Arc<Metrics>)
    where
        C: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        tokio::pin!(connection);
        loop {
            let deadline = self.activity.deadline(self.handshake, self.idle);
            let expired = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    // A request in flight: look again a little later.
                    None => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            };
            tokio::select! {
                result = &mut connection => {
                    if let Err(err) = result {
                        tracing::debug!(%err, "connection ended with an error");
                    }
                    return;
                }
                () = expired => {
                    let now = std::time::Instant::now();
                    if self.activity.deadline(self.handshake, self.idle).is_some_and(|at| at <= now) {
                        metrics.connections_timed_out.inc();
                        tracing::debug!("closing a client connection at its handshake or idle deadline");
                        return; // dropping the connection closes it
                    }
                }
            }
        }
    }
}
