//! Which certificates the node trusts for upstream HTTPS (providers and GPU metrics endpoints): the
//! Mozilla roots (`webpki-roots`, the same set on every machine, independent of the OS store), plus the
//! CA certificates of `node.upstream_ca_file` — a private CA in front of self-hosted vLLM/TGI/SGLang
//! servers. One [`UpstreamTls`] per node; every HTTPS client it builds shares the same rustls config.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Which HTTP versions a client offers over TLS (ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` then `http/1.1`: providers (HTTP/2 multiplexes many streams over one connection).
    Http2AndHttp1,
    /// `http/1.1` only: metrics scrapes.
    Http1,
}

#[derive(Clone)]
pub struct UpstreamTls {
    config: Arc<rustls::ClientConfig>,
    /// How many certificates `upstream_ca_file` added (for the startup log).
    extra_roots: usize,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls").field("extra_roots", &self.extra_roots).finish_non_exhaustive()
    }
}

impl UpstreamTls {
    /// The public roots only.
    pub fn public_roots() -> anyhow::Result<UpstreamTls> {
        Self::with_ca_file(None)
    }

    /// The public roots plus every certificate in the PEM file at `ca_file`. A file that cannot be read,
    /// holds no certificate, or holds one rustls refuses as a root is an error naming the setting.
    pub fn with_ca_file(ca_file: Option<&Path>) -> anyhow::Result<UpstreamTls> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let mut extra_roots = 0;
        if let Some(path) = ca_file {
            let setting = || format!("node.upstream_ca_file: {}", path.display());
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("{}: cannot read it", setting()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("{}: not a PEM certificate file", setting()))?;
            if certs.is_empty() {
                anyhow::bail!("{}: holds no PEM certificate", setting());
            }
            for cert in certs {
                roots.add(cert).with_context(|| format!("{}: a certificate is not a usable CA", setting()))?;
                extra_roots += 1;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(UpstreamTls { config: Arc::new(config), extra_roots })
    }

    pub fn extra_roots(&self) -> usize {
        self.extra_roots
    }

    /// An HTTPS-or-HTTP connector over `http` that trusts these roots.
    pub fn connector(&self, http: HttpConnector, alpn: Alpn) -> HttpsConnector<HttpConnector> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(&self.config))
            .https_or_http();
        match alpn {
            Alpn::Http2AndHttp1 => builder.enable_all_versions().wrap_connector(http),
            Alpn::Http1 => builder.enable_http1().wrap_connector(http),
        }
    }
}
