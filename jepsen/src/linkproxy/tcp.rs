//! TCP through a link: each accepted connection is joined to a fresh connection to the route's target,
//! and each direction is pumped through a timestamped queue (reader stamps chunks with their delivery time,
//! writer waits for it), so delay never reorders bytes or caps throughput.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::links::{wait_broken, wait_passable, LinkState, Links};
use super::{Route, SourceMap};

/// Chunks in flight per direction before the reader stops reading (backpressure on a held link).
const QUEUE_CHUNKS: usize = 256;
const READ_SIZE: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn serve(listener: TcpListener, route: Route, sources: SourceMap, links: Links) {
    // Owned here: when the route stops, every connection it carries stops with it.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(listen = %route.listen, %err, "link proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let from = sources.node_of(peer);
        let forward = links.watch(from, route.to);
        let backward = links.watch(route.to, from);
        connections.spawn(forward_connection(client, route.target, forward, backward));
    }
}

/// Closes the socket with a RST instead of a FIN, as a broken network path looks to the peer.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn forward_connection(
    mut client: TcpStream,
    target: std::net::SocketAddr,
    forward: watch::Receiver<LinkState>,
    backward: watch::Receiver<LinkState>,
) {
    if forward.borrow().is_broken() || backward.borrow().is_broken() {
        // Refused: the caller sees its connection reset at once, as if nothing answered.
        reset(&client);
        return;
    }
    let mut server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(server)) => server,
        Ok(Err(err)) => {
            tracing::debug!(%target, %err, "link proxy: target refused");
            reset(&client);
            return;
        }
        Err(_) => {
            reset(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let broken = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let both = async {
            tokio::try_join!(
                pump(client_read, server_write, forward.clone()),
                pump(server_read, client_write, backward.clone())
            )
        };
        tokio::select! {
            result = both => result.is_err(),
            _ = wait_broken(forward.clone()) => true,
            _ = wait_broken(backward.clone()) => true,
        }
    };
    if broken {
        reset(&client);
        reset(&server);
    }
}

/// A chunk of one direction and when it may be delivered; `None` is the end of the stream (FIN).
type Stamped = (Instant, Option<Vec<u8>>);

/// Moves one direction with the link's delay. Returns an error when the connection broke (I/O error or
/// the link was dropped while data waited), so the caller resets both sides.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, link: watch::Receiver<LinkState>) -> std::io::Result<()> {
    let (queue, mut pending) = mpsc::channel::<Stamped>(QUEUE_CHUNKS);
    let reader_link = link.clone();
    let reader = async move {
        let mut buffer = vec![0u8; READ_SIZE];
        let mut last_delivery = Instant::now();
        loop {
            let read = from.read(&mut buffer).await?;
            let delay = reader_link.borrow().sample_delay();
            // Jitter never reorders: a chunk is not delivered before the one read before it.
            let delivery = (Instant::now() + delay).max(last_delivery);
            last_delivery = delivery;
            let chunk = (read > 0).then(|| buffer[..read].to_vec());
            let done = chunk.is_none();
            if queue.send((delivery, chunk)).await.is_err() || done {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let writer = async move {
        let mut link = link;
        while let Some((delivery, chunk)) = pending.recv().await {
            tokio::time::sleep_until(delivery).await;
            if wait_passable(&mut link).await.is_err() {
                return Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "link dropped"));
            }
            match chunk {
                Some(bytes) => to.write_all(&bytes).await?,
                None => {
                    to.shutdown().await?;
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    tokio::try_join!(reader, writer).map(|_| ())
}
