//! Authenticated gossip datagrams: a chitchat [`Transport`] that seals every datagram with an HMAC of the
//! cluster secret and drops every datagram that does not open.
//!
//! Gossip steers routing (endpoint health, breakers, GPU load), so a forged UDP report could mark
//! endpoints open or fake load and pull all traffic one way. A shared cluster id is no protection: it
//! travels in clear in every `Syn`. So each datagram carries
//!
//! ```text
//! "TGS1" | sent_at_ms (u64 LE) | chitchat datagram | HMAC-SHA256(key, "TGS1" | sent_at_ms | datagram)[..16]
//! ```
//!
//! with `key = SHA-256("tollgate-gossip-key\0" | secret)`. The first cluster secret seals; any accepted
//! secret opens, so a secret rotates without a gossip outage (the same order as the Raft port, read live
//! from the same source). A datagram stamped more than [`REPLAY_WINDOW_MS`] from this node's clock is
//! refused, which bounds replays; within the window a replay only repeats state chitchat already holds
//! (versions only grow), which is harmless.
//!
//! Why a relay: chitchat 0.13 keeps its wire (de)serialization crate-private, and forking it for two
//! functions would be a fork to carry. So the socket runs chitchat's own UDP codec on a private loopback
//! socket and relays bytes through a second loopback socket (the "tap"): to send, chitchat's codec encodes
//! to the tap, the tap's bytes are sealed and sent to the peer; to receive, a datagram that opens is
//! handed to the codec through the tap, and the decoded envelope is returned with the peer's address.
//! Gossip sends a few datagrams per peer and second, so the two extra loopback hops cost nothing that
//! matters. A datagram whose sealed form would pass the UDP limit (a delta near 64 KB, hundreds of
//! endpoints) is dropped with a warning: gossip carries hints, and the next round sends a smaller delta.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as CodecSocket};
use chitchat::ChitchatEnvelope;
use hmac::digest::generic_array::GenericArray;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::clock::wall_ms;

const MAGIC: &[u8; 4] = b"TGS1";
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 8;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// A sealed datagram stamped further than this from the receiver's clock is refused.
pub const REPLAY_WINDOW_MS: u64 = 60_000;
/// How long a loopback hop through the codec may take before the datagram counts as lost.
const RELAY_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the accepted cluster secrets come from, read for every datagram: the first seals, any opens.
pub type SecretSource = Arc<dyn Fn() -> Arc<Vec<String>> + Send + Sync>;

/// Counts of datagrams refused, for `GET /admin/v1/cluster/gossip` and the metrics.
#[derive(Debug, Default)]
pub struct SealStats {
    /// Not sealed with an accepted secret (forged, corrupted, or from a node with another secret).
    pub rejected_unauthenticated: AtomicU64,
    /// Authentic but stamped outside the replay window (a replay, or a clock far off).
    pub rejected_stale: AtomicU64,
    /// Too large to seal within one UDP datagram; not sent.
    pub dropped_oversize: AtomicU64,
}

/// Why a datagram did not open.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Unauthenticated,
    Stale,
}

fn key_for(secret: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"tollgate-gossip-key\0");
    hasher.update(secret.as_bytes());
    hasher.finalize().into()
}

fn mac_for(secret: &str, header: &[u8], payload: &[u8]) -> Hmac<Sha256> {
    // HMAC pads a key shorter than the hash's block with zeros; padding it here makes the constructor
    // infallible (the same MAC as `new_from_slice` with the 32-byte key).
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(&key_for(secret));
    let mut mac = <Hmac<Sha256> as KeyInit>::new(GenericArray::from_slice(&block));
    mac.update(header);
    mac.update(payload);
    mac
}

/// Seals `payload` with `secret`, stamped `now_ms`.
pub fn seal(secret: &str, now_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(HEADER_LEN + payload.len() + TAG_LEN);
    sealed.extend_from_slice(MAGIC);
    sealed.extend_from_slice(&now_ms.to_le_bytes());
    let tag = mac_for(secret, &sealed, payload).finalize().into_bytes();
    sealed.extend_from_slice(payload);
    sealed.extend_from_slice(&tag[..TAG_LEN]);
    sealed
}

/// Opens a sealed datagram with any of `secrets`: the chitchat datagram inside, or why it was refused.
/// The tag is compared in constant time.
pub fn open<'a>(secrets: &[String], now_ms: u64, datagram: &'a [u8]) -> Result<&'a [u8], Refused> {
    if datagram.len() < HEADER_LEN + TAG_LEN || &datagram[..MAGIC.len()] != MAGIC {
        return Err(Refused::Unauthenticated);
    }
    let (header, rest) = datagram.split_at(HEADER_LEN);
    let (payload, tag) = rest.split_at(rest.len() - TAG_LEN);
    let authentic = secrets.iter().any(|secret| mac_for(secret, header, payload).verify_truncated_left(tag).is_ok());
    if !authentic {
        return Err(Refused::Unauthenticated);
    }
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&header[MAGIC.len()..]);
    if u64::from_le_bytes(stamp).abs_diff(now_ms) > REPLAY_WINDOW_MS {
        return Err(Refused::Stale);
    }
    Ok(payload)
}

/// A chitchat transport whose datagrams are sealed with the cluster secret.
pub struct SealedTransport {
    secrets: SecretSource,
    stats: Arc<SealStats>,
}

impl SealedTransport {
    pub fn new(secrets: SecretSource, stats: Arc<SealStats>) -> SealedTransport {
        SealedTransport { secrets, stats }
    }
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let codec = CodecSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let tap = tokio::net::UdpSocket::bind(loopback).await.context("binding the gossip relay's loopback socket")?;
        let tap_addr = tap.local_addr()?;
        Ok(Box::new(SealedSocket {
            public,
            codec: Box::new(codec),
            codec_addr,
            tap,
            tap_addr,
            secrets: self.secrets.clone(),
            stats: self.stats.clone(),
            buf: vec![0u8; MAX_DATAGRAM + 1].into_boxed_slice(),
            pending_from: None,
        }))
    }
}

struct SealedSocket {
    /// The gossip port peers talk to.
    public: tokio::net::UdpSocket,
    /// chitchat's own UDP socket on loopback: encodes what we send, decodes what we receive.
    codec: Box<dyn Socket>,
    codec_addr: SocketAddr,
    /// The loopback socket between the codec and the public port.
    tap: tokio::net::UdpSocket,
    tap_addr: SocketAddr,
    secrets: SecretSource,
    stats: Arc<SealStats>,
    buf: Box<[u8]>,
    /// A peer's datagram handed to the codec and not yet decoded (kept across a cancelled `recv`).
    pending_from: Option<SocketAddr>,
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public.local_addr().context("failed to get the gossip socket's address")
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        self.codec.send(self.tap_addr, envelope).await?;
        let Some(len) = self.take_from_codec().await? else {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        };
        let secrets = (self.secrets)();
        let Some(secret) = secrets.first() else {
            anyhow::bail!("gossip is sealed but no cluster secret is configured");
        };
        let sealed = seal(secret, wall_ms(), &self.buf[..len]);
        if sealed.len() > MAX_DATAGRAM {
            self.stats.dropped_oversize.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(bytes = sealed.len(), to = %to, "gossip datagram too large to seal; dropped");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        match self.public.send_to(&sealed, to).await {
            Ok(sent) => Ok(SendOutcome { num_bytes_sent: sent }),
            // A peer that is down or unreachable is chitchat's business, not a broken transport.
            Err(err) => {
                tracing::debug!(error = %err, to = %to, "gossip send failed");
                Ok(SendOutcome { num_bytes_sent: 0 })
            }
        }
    }

    /// Cancel-safe: a datagram already handed to the codec is picked up by the next call.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(from) = self.pending_from {
                match tokio::time::timeout(RELAY_TIMEOUT, self.codec.recv()).await {
                    Ok(Ok(outcome)) if outcome.from_addr == self.tap_addr => {
                        self.pending_from = None;
                        return Ok(RecvOutcome { from_addr: from, ..outcome });
                    }
                    // Something else on this host wrote to the codec's port: ignored.
                    Ok(Ok(_)) => continue,
                    Ok(Err(err)) => return Err(err),
                    // Authentic but not a chitchat message (the codec skipped it): nothing to return.
                    Err(_) => self.pending_from = None,
                }
            }
            let (len, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(received) => received,
                Err(err) if is_transient(&err) => continue,
                Err(err) => return Err(err).context("fatal gossip recv error"),
            };
            let secrets = (self.secrets)();
            match open(&secrets, wall_ms(), &self.buf[..len]) {
                Ok(payload) => {
                    self.pending_from = Some(from);
                    if let Err(err) = self.tap.send_to(payload, self.codec_addr).await {
                        self.pending_from = None;
                        tracing::warn!(error = %err, "gossip relay to the codec failed");
                    }
                }
                Err(refused) => self.refused(refused, from),
            }
        }
    }
}

impl SealedSocket {
    /// The datagram the codec just encoded, read into `buf` (`None` if the loopback hop lost it).
    async fn take_from_codec(&mut self) -> anyhow::Result<Option<usize>> {
        loop {
            let received = tokio::time::timeout(RELAY_TIMEOUT, self.tap.recv_from(&mut self.buf)).await;
            match received {
                Ok(Ok((len, from))) if from == self.codec_addr => return Ok(Some(len)),
                // Something else on this host wrote to the tap: ignored.
                Ok(Ok(_)) => continue,
                Ok(Err(err)) if is_transient(&err) => continue,
                Ok(Err(err)) => return Err(err).context("gossip relay recv error"),
                Err(_) => {
                    tracing::warn!("gossip relay lost a datagram on loopback");
                    return Ok(None);
                }
            }
        }
    }

    fn refused(&self, refused: Refused, from: SocketAddr) {
        let counter = match refused {
            Refused::Unauthenticated => &self.stats.rejected_unauthenticated,
            Refused::Stale => &self.stats.rejected_stale,
        };
        // Logged at the first refusal and then every 100th, so a flood cannot flood the log.
        if counter.fetch_add(1, Ordering::Relaxed) % 100 == 0 {
            tracing::warn!(from = %from, reason = ?refused, "refused a gossip datagram not sealed with the cluster secret");
        }
    }
}

fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
    )
}
