//! Mutual TLS on the Raft and cluster gRPC port (`[cluster_tls]`): every node presents a certificate from
//! the cluster CA and accepts only peers that present one, on top of the cluster secret. A process without
//! such a certificate cannot join, vote, replicate or read, even knowing the secret. Certificates must name
//! the address peers dial (an IP or DNS subject alternative name) and allow both server and client
//! authentication (`deploy/make-certs.sh` makes such a set).
//!
//! The material (CA, certificate, key) can be replaced while the node runs ([`ClusterTls::replace`]; the
//! gateway calls it when the files change): the server takes each new connection's handshake with the
//! current material, and every new connection to a peer (including a channel's reconnection) dials with it.
//! Connections already established keep the session they negotiated; nothing is dropped. A replacement
//! whose certificate does not chain to its CA is refused, and the current material stays.
//!
//! Rotating the CA itself: `ca_file` may hold several CA certificates. Add the new CA to every node's
//! `ca_file` first, then replace the node certificates, then drop the old CA.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::Stream;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::{Channel, Endpoint, Uri};

/// A TLS handshake on the peer port that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM contents (read by the gateway from `ca_file`, `cert_file`, `key_file`).
#[derive(Clone)]
pub struct ClusterTlsPem {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClusterTlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClusterTlsPem").finish_non_exhaustive()
    }
}

/// The node's current TLS material, shared by the server and every peer channel; cheap to clone.
#[derive(Clone)]
pub struct ClusterTls {
    current: Arc<ArcSwap<Material>>,
}

/// A handle that does not keep the material alive (for a reload task that should end with the node).
pub struct WeakClusterTls(Weak<ArcSwap<Material>>);

/// Both sides' rustls configurations, built from one set of PEM files.
struct Material {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

/// Why a set of PEM files cannot be used. Names the file, never the key's contents.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClusterTlsError(String);

fn error(message: impl Into<String>) -> ClusterTlsError {
    ClusterTlsError(message.into())
}

impl ClusterTls {
    /// Checks and loads the material.
    pub fn new(pem: &ClusterTlsPem) -> Result<ClusterTls, ClusterTlsError> {
        Ok(ClusterTls { current: Arc::new(ArcSwap::from_pointee(Material::build(pem)?)) })
    }

    /// Swaps in new material for connections made from now on; on an error the current material stays.
    pub fn replace(&self, pem: &ClusterTlsPem) -> Result<(), ClusterTlsError> {
        self.current.store(Arc::new(Material::build(pem)?));
        Ok(())
    }

    pub fn downgrade(&self) -> WeakClusterTls {
        WeakClusterTls(Arc::downgrade(&self.current))
    }

    /// The TLS connections accepted on `listener`, each handshake with the material current when its
    /// connection arrived, concurrently (a slow or refused peer holds up no one). Ends when dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> Pin<Box<dyn Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>> + Send>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(accept_loop(listener, self.clone(), tx));
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|tls| (Ok(tls), rx)) }))
    }

    /// Dials `uri` (`http://host:port`) and does the client handshake with the current material, checking
    /// that the peer's certificate names `host`.
    async fn connect(&self, uri: Uri) -> std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} in {uri}"));
        let host = uri.host().ok_or_else(|| invalid("no host"))?.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|_| invalid("not a DNS name or IP address"))?;
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let config = self.current.load().client.clone();
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
        Ok(TokioIo::new(tls))
    }
}

impl WeakClusterTls {
    pub fn upgrade(&self) -> Option<ClusterTls> {
        self.0.upgrade().map(|current| ClusterTls { current })
    }
}

impl Material {
    fn build(pem: &ClusterTlsPem) -> Result<Material, ClusterTlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem.ca_pem) {
            let cert = cert.map_err(|_| error("cluster_tls.ca_file: not a PEM certificate file"))?;
            roots.add(cert).map_err(|err| error(format!("cluster_tls.ca_file: not a usable CA: {err}")))?;
        }
        if roots.is_empty() {
            return Err(error("cluster_tls.ca_file: holds no certificate"));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| error("cluster_tls.cert_file: not a PEM certificate chain"))?;
        let Some(leaf) = chain.first() else { return Err(error("cluster_tls.cert_file: holds no certificate")) };
        let key = PrivateKeyDer::from_pem_slice(&pem.key_pem)
            .map_err(|_| error("cluster_tls.key_file: holds no readable PEM private key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
            .build()
            .map_err(|err| error(format!("cluster_tls.ca_file: {err}")))?;
        // Peers check this certificate against the same CA: one that does not chain to it would cut the
        // node off, so it is refused here (at start, and at a reload, which keeps the old one).
        verifier.verify_client_cert(leaf, &chain[1..], UnixTime::now()).map_err(|err| {
            error(format!("cluster_tls.cert_file: not a client certificate from the CA in ca_file: {err}"))
        })?;
        let versions = |err: rustls::Error| error(format!("cluster_tls: {err}"));
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|err| error(format!("cluster_tls: the key does not fit the certificate: {err}")))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|err| error(format!("cluster_tls: the key does not fit the certificate: {err}")))?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Material { server: Arc::new(server), client: Arc::new(client) })
    }
}

type Accepted = tokio_rustls::server::TlsStream<TcpStream>;

async fn accept_loop(listener: TcpListener, tls: ClusterTls, tx: tokio::sync::mpsc::Sender<Accepted>) {
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(%err, "raft port accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current.load().server.clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(stream).await;
                }
                Ok(Err(err)) => tracing::debug!(%peer, %err, "cluster TLS handshake refused"),
                Err(_) => tracing::debug!(%peer, "cluster TLS handshake timed out"),
            }
        });
    }
}

/// A peer's endpoint: tonic's settings in `endpoint` (always `http://host:port`), and the TLS material to
/// dial with, if any.
#[derive(Clone)]
pub struct PeerEndpoint {
    pub endpoint: Endpoint,
    pub tls: Option<ClusterTls>,
}

impl PeerEndpoint {
    /// A channel that connects on first use and reconnects as needed, each time with the current material.
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(connector(tls)),
            None => self.endpoint.connect_lazy(),
        }
    }

    /// A channel, connected now.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(connector(tls)).await,
            None => self.endpoint.connect().await,
        }
    }
}

/// The connector tonic calls for each new connection to a peer.
fn connector(
    tls: &ClusterTls,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl std::future::Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send,
> + Send
       + 'static {
    let tls = tls.clone();
    tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move { tls.connect(uri).await }
    })
}

/// The endpoint for a peer's `host:port`, with mutual TLS when `tls` is set.
pub fn peer_endpoint(addr: &str, tls: Option<&ClusterTls>) -> Result<PeerEndpoint, tonic::transport::Error> {
    // TLS is done by this module's connector, so tonic sees plain `http://` (with `https://` it would
    // insist on its own, fixed TLS configuration).
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    Ok(PeerEndpoint { endpoint, tls: tls.cloned() })
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
