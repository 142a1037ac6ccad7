//! Mutual TLS on the Raft and cluster gRPC port (`[cluster_tls]`): every node presents a certificate from
//! the cluster CA and accepts only peers that present one, on top of the cluster secret. A process without
//! such a certificate cannot join, vote, replicate or read, even knowing the secret. Certificates must name
//! the address peers dial (an IP or DNS subject alternative name) and allow both server and client
//! authentication (`deploy/make-certs.sh` makes such a set).
//!
//! Loaded at start; replacing the files takes a restart of the node (one at a time keeps the quorum).

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The PEM contents (read by the gateway from `ca_file`, `cert_file`, `key_file`).
#[derive(Clone)]
pub struct ClusterTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

impl ClusterTls {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// The server side: this node's certificate, and client certificates required from the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity()).client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// The client side: only servers with a certificate from the CA, and this node's certificate presented.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).identity(self.identity())
    }
}

/// The endpoint for a peer's `host:port`: `https://` with mutual TLS when `tls` is set, else `http://`.
pub fn peer_endpoint(addr: &str, tls: Option<&ClusterTls>) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.client()),
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}
