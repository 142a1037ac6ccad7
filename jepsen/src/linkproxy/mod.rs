//! The userspace WAN between regions (this kernel has no `tc netem`). Every inter-node stream and datagram
//! goes through a route of this proxy: a listener that forwards to one node's real port. Which region sent
//! the traffic is known from the route (`from`, for tests on loopback) or from the source address of the
//! connection or datagram (`sources`, one address per region namespace), so one route per destination
//! serves every directed link `from → to` into it.
//!
//! Per directed link: a one-way delay plus jitter applied by a timestamped queue (TCP order and throughput
//! are preserved: the reader never sleeps, the writer waits for each chunk's delivery time), and a mode set
//! by commands — `drop`, `hold`, `cut` (drop both ways), `heal` (see [`links`] and [`control`]).

pub mod control;
pub mod links;
mod tcp;
mod udp;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

pub use links::{LinkMode, LinkState, Links, NodeId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One listener of the proxy, forwarding to node `to` at `target`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Route {
    pub protocol: Protocol,
    pub listen: SocketAddr,
    pub target: SocketAddr,
    pub to: NodeId,
    /// The sending region when the route serves a single link (e.g. tests on loopback, where every
    /// source address is 127.0.0.1). Absent: looked up by source address in [`ProxyConfig::sources`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NodeId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// Default one-way delay of every link.
    pub delay_ms: u64,
    /// Default jitter (extra delay drawn from `0..=jitter_ms`).
    pub jitter_ms: u64,
    /// Source IP address → the region it belongs to. Unknown sources count as node 0 ("outside").
    #[serde(default)]
    pub sources: BTreeMap<IpAddr, NodeId>,
    pub routes: Vec<Route>,
    /// Unix socket the proxy takes commands on (`jepsen link ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<PathBuf>,
}

impl ProxyConfig {
    /// Every node the config knows: route ends and source regions.
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        let route_ends = self.routes.iter().flat_map(|route| [Some(route.to), route.from]).flatten();
        route_ends.chain(self.sources.values().copied()).filter(|id| *id != 0).collect()
    }
}

/// Tells which region sent traffic that arrived on a route.
#[derive(Clone)]
struct SourceMap {
    fixed: Option<NodeId>,
    by_ip: Arc<BTreeMap<IpAddr, NodeId>>,
}

impl SourceMap {
    fn node_of(&self, peer: SocketAddr) -> NodeId {
        self.fixed.or_else(|| self.by_ip.get(&peer.ip()).copied()).unwrap_or(0)
    }
}

/// A running proxy; dropping it (or [`LinkProxy::shutdown`]) stops every listener and connection.
pub struct LinkProxy {
    pub links: Links,
    /// The bound address of each route, in config order (useful when routes listen on port 0).
    pub bound: Vec<SocketAddr>,
    tasks: JoinSet<()>,
}

impl LinkProxy {
    /// Binds every route (and the control socket, if configured) and starts forwarding.
    pub async fn start(config: &ProxyConfig) -> anyhow::Result<LinkProxy> {
        let links = Links::new(config.delay_ms, config.jitter_ms);
        let by_ip = Arc::new(config.sources.clone());
        let mut tasks = JoinSet::new();
        let mut bound = Vec::new();
        for route in &config.routes {
            let sources = SourceMap { fixed: route.from, by_ip: by_ip.clone() };
            match route.protocol {
                Protocol::Tcp => {
                    let listener = tokio::net::TcpListener::bind(route.listen)
                        .await
                        .with_context(|| format!("link proxy: binding TCP {}", route.listen))?;
                    bound.push(listener.local_addr()?);
                    tasks.spawn(tcp::serve(listener, route.clone(), sources, links.clone()));
                }
                Protocol::Udp => {
                    let socket = tokio::net::UdpSocket::bind(route.listen)
                        .await
                        .with_context(|| format!("link proxy: binding UDP {}", route.listen))?;
                    bound.push(socket.local_addr()?);
                    tasks.spawn(udp::serve(socket, route.clone(), sources, links.clone()));
                }
            }
        }
        if let Some(path) = &config.control {
            let listener = control::bind(path)?;
            tasks.spawn(control::serve(listener, links.clone(), config.nodes()));
        }
        Ok(LinkProxy { links, bound, tasks })
    }

    /// Runs until the process gets SIGINT or SIGTERM.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        self.shutdown().await;
        Ok(())
    }

    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

#[cfg(test)]
mod tests;
