//! UDP through a link, NAT-style: each client address gets its own upstream socket, so the target's replies
//! (chitchat answers to the sender's address) come back through the proxy over the reverse link. Every
//! datagram is delivered by its own timer (jitter may reorder datagrams, as on a real network).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{watch, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::links::{wait_passable, LinkState, Links};
use super::{Route, SourceMap};

/// Datagrams in flight (delayed or held) per route before new ones are dropped.
const MAX_IN_FLIGHT: usize = 8192;
/// A client address silent for this long loses its upstream socket (the next datagram makes a new one).
const SESSION_IDLE: Duration = Duration::from_secs(120);
const MAX_DATAGRAM: usize = 65_536;

struct Session {
    upstream: Arc<UdpSocket>,
    forward: watch::Receiver<LinkState>,
    replies: AbortHandle,
}

pub(super) async fn serve(socket: UdpSocket, route: Route, sources: SourceMap, links: Links) {
    let socket = Arc::new(socket);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
    // Owned here: the reply tasks stop with the route.
    let mut reply_tasks = JoinSet::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        while reply_tasks.try_join_next().is_some() {}
        let (length, client) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(err) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!(listen = %route.listen, %err, "link proxy: UDP receive failed");
                continue;
            }
        };
        sessions.retain(|_, session| !session.replies.is_finished());
        let session = match sessions.entry(client) {
            Entry::Occupied(existing) => existing.into_mut(),
            Entry::Vacant(vacant) => {
                let from = sources.node_of(client);
                match open_session(&route, &socket, client, &links, from, &in_flight, &mut reply_tasks).await {
                    Ok(session) => vacant.insert(session),
                    Err(err) => {
                        tracing::warn!(target = %route.target, %err, "link proxy: cannot open an upstream UDP socket");
                        continue;
                    }
                }
            }
        };
        let upstream = session.upstream.clone();
        let datagram = buffer[..length].to_vec();
        deliver_later(session.forward.clone(), &in_flight, async move {
            let _ = upstream.send(&datagram).await;
        });
    }
}

async fn open_session(
    route: &Route,
    listener: &Arc<UdpSocket>,
    client: SocketAddr,
    links: &Links,
    from: u64,
    in_flight: &Arc<Semaphore>,
    reply_tasks: &mut JoinSet<()>,
) -> std::io::Result<Session> {
    let upstream = UdpSocket::bind(SocketAddr::new(route.listen.ip(), 0)).await?;
    upstream.connect(route.target).await?;
    let upstream = Arc::new(upstream);
    let backward = links.watch(route.to, from);
    let replies =
        reply_tasks.spawn(relay_replies(upstream.clone(), listener.clone(), client, backward, in_flight.clone()));
    Ok(Session { upstream, forward: links.watch(from, route.to), replies })
}

/// Target → client: replies leave through the listening socket, so the client sees them come from the
/// address it sent to.
async fn relay_replies(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    backward: watch::Receiver<LinkState>,
    in_flight: Arc<Semaphore>,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let length = match tokio::time::timeout(SESSION_IDLE, upstream.recv(&mut buffer)).await {
            Ok(Ok(length)) => length,
            // Refused (nothing listens on the target yet): keep the session, the target may come up.
            Ok(Err(_)) => continue,
            Err(_) => return,
        };
        let listener = listener.clone();
        let datagram = buffer[..length].to_vec();
        deliver_later(backward.clone(), &in_flight, async move {
            let _ = listener.send_to(&datagram, client).await;
        });
    }
}

/// Sends after the link's delay, waits while the link is held, and discards when it is dropped (now or by
/// the time the delay has passed) or when too many datagrams are already in flight.
fn deliver_later(
    mut link: watch::Receiver<LinkState>,
    in_flight: &Arc<Semaphore>,
    send: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let state = *link.borrow();
    if state.is_broken() {
        return;
    }
    let Ok(permit) = in_flight.clone().try_acquire_owned() else {
        return;
    };
    let delivery = Instant::now() + state.sample_delay();
    tokio::spawn(async move {
        let _permit = permit;
        tokio::time::sleep_until(delivery).await;
        if wait_passable(&mut link).await.is_ok() {
            send.await;
        }
    });
}
