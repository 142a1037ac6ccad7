//! TLS on the API and admin listeners (`[node.tls]`, `[node.admin_tls]`: `cert_file`, `key_file`), with
//! rustls. The certificate is served through a resolver whose key pair is swapped when the files change
//! (checked every [`RELOAD_EVERY`]): new handshakes get the new certificate, connections already open keep
//! theirs, nothing is dropped. A file pair that fails to load keeps the current one, with a warning. ALPN
//! offers `h2` then `http/1.1`. `[cluster_tls]` is reloaded the same way (`ClusterTlsFiles::spawn_reload`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

/// How often the certificate and key files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// `[node.tls]` / `[node.admin_tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: the server certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1). Keep it 0600.
    pub key_file: PathBuf,
}

/// `[cluster_tls]`: mutual TLS between nodes (see `tollgate_consensus::tls`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsFiles {
    /// PEM: the cluster CA every node's certificate comes from.
    pub ca_file: PathBuf,
    /// PEM: this node's certificate (server and client authentication; the name peers dial).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl ClusterTlsFiles {
    /// Reads the three files (each error names its setting, never the key's contents).
    fn read(&self) -> anyhow::Result<tollgate_consensus::tls::ClusterTlsPem> {
        let read = |path: &Path, field: &str| {
            std::fs::read(path).with_context(|| format!("cluster_tls.{field}: cannot read {}", path.display()))
        };
        // The pair is checked the way the listeners check theirs.
        load(&TlsFiles { cert_file: self.cert_file.clone(), key_file: self.key_file.clone() }, "cluster_tls")?;
        Ok(tollgate_consensus::tls::ClusterTlsPem {
            ca_pem: read(&self.ca_file, "ca_file")?,
            cert_pem: read(&self.cert_file, "cert_file")?,
            key_pem: read(&self.key_file, "key_file")?,
        })
    }

    /// Reads and checks the three files: the certificate must come from the CA.
    pub fn load(&self) -> anyhow::Result<tollgate_consensus::tls::ClusterTls> {
        Ok(tollgate_consensus::tls::ClusterTls::new(&self.read()?)?)
    }

    /// Swaps new files into `tls` when they change (checked every [`RELOAD_EVERY`], like the listeners'):
    /// new connections to and from peers use them, established ones keep theirs. Files that fail to load
    /// (unreadable, a key that does not fit, a certificate not from the CA) keep the current material, with
    /// a warning. The task ends when the node has dropped `tls`.
    pub fn spawn_reload(&self, tls: &tollgate_consensus::tls::ClusterTls) {
        let files = self.clone();
        let tls = tls.downgrade();
        tokio::spawn(async move {
            let stamp = |files: &ClusterTlsFiles| {
                (modified(&files.ca_file), modified(&files.cert_file), modified(&files.key_file))
            };
            let (mut seen, mut warned) = (stamp(&files), None);
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let Some(tls) = tls.upgrade() else { return };
                let now = stamp(&files);
                if now == seen {
                    continue;
                }
                match files.read().and_then(|pem| Ok(tls.replace(&pem)?)) {
                    Ok(()) => {
                        seen = now;
                        tracing::info!("cluster TLS certificate reloaded");
                    }
                    // Half-written files (cert replaced, key not yet): tried again at the next check, with
                    // one warning per version of the files.
                    Err(err) if warned != Some(now) => {
                        tracing::warn!(error = %format!("{err:#}"), "keeping the current cluster TLS certificate");
                        warned = Some(now);
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

/// Serves the current key pair and swaps in a new one when the files change.
#[derive(Debug)]
struct Reloading {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Reads and checks the pair: every error names the setting (`what`, e.g. `node.tls`) and the file, never
/// the key's contents.
fn load(files: &TlsFiles, what: &str) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .with_context(|| format!("{what}.cert_file: cannot read {}", files.cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what}.cert_file: {} is not a PEM certificate chain", files.cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{what}.cert_file: {} holds no certificate", files.cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|_| {
        anyhow::anyhow!("{what}.key_file: {} holds no readable PEM private key", files.key_file.display())
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|err| {
        anyhow::anyhow!("{what}: the key in key_file does not fit the certificate in cert_file: {err}")
    })?;
    Ok(certified)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|meta| meta.modified()).ok()
}

/// A TLS acceptor for one listener, reloading its certificate in the background (the task ends when the
/// acceptor is dropped).
pub fn acceptor(files: &TlsFiles, what: &'static str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let resolver = Arc::new(Reloading { current: ArcSwap::from_pointee(load(files, what)?) });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    spawn_reload(files.clone(), what, Arc::downgrade(&resolver));
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn spawn_reload(files: TlsFiles, what: &'static str, resolver: std::sync::Weak<Reloading>) {
    tokio::spawn(async move {
        let stamp = |files: &TlsFiles| (modified(&files.cert_file), modified(&files.key_file));
        let mut seen = stamp(&files);
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let Some(resolver) = resolver.upgrade() else { return };
            let now = stamp(&files);
            if now == seen {
                continue;
            }
            match load(&files, what) {
                Ok(certified) => {
                    resolver.current.store(Arc::new(certified));
                    seen = now;
                    tracing::info!(listener = what, "TLS certificate reloaded");
                }
                // Half-written files (cert replaced, key not yet): tried again at the next check.
                Err(err) => tracing::warn!(error = %format!("{err:#}"), "keeping the current TLS certificate"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_refused_naming_the_setting_and_never_quoting_the_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let missing = TlsFiles { cert_file: dir.path().join("none.pem"), key_file: key.clone() };
        let Err(err) = load(&missing, "node.tls") else { panic!("a missing certificate loaded") };
        assert!(format!("{err:#}").starts_with("node.tls.cert_file: cannot read"), "{err:#}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap_or_else(|e| panic!("{e}"));
        let Err(err) = load(&TlsFiles { cert_file: empty, key_file: key }, "node.admin_tls") else {
            panic!("an empty certificate file loaded")
        };
        let message = format!("{err:#}");
        assert!(message.starts_with("node.admin_tls.cert_file:"), "{message}");
        assert!(!message.contains("c2VjcmV0"), "{message}");
    }
}
