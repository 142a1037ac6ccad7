//! An HTTPS front for the mock upstream: a test CA and a `localhost` / `127.0.0.1` server certificate made
//! with the `openssl` command, TLS (ALPN `h2`, `http/1.1`) terminated here and the plain bytes relayed to
//! the mock (which speaks HTTP/1.1 and h2c). It records the ALPN protocols each client offered.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A test CA and a server certificate it signed, as PEM files in a temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes a CA and a server certificate for `localhost` and `127.0.0.1` (EC P-256, valid two days).
    pub fn generate() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            dir.path(),
            &[
                &["req", "-x509"],
                &ec[..],
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=tollgate-test-ca"],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[&["req"], &ec[..], &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat(),
        );
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext.cnf");
        openssl(
            dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        TestCa { dir }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn server_config(&self) -> rustls::ServerConfig {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(self.dir.path().join("server.pem"))
            .expect("server.pem")
            .map(|c| c.expect("a certificate"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(self.dir.path().join("server.key")).expect("server.key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    /// A TLS client that trusts only this CA.
    pub fn client_config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca_pem()).expect("ca.pem") {
            roots.add(cert.expect("a CA certificate")).expect("a usable CA certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("the openssl command runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// One TLS connection a client opened to the front.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// The ALPN protocols the client offered, in its order.
    pub offered: Vec<String>,
    /// Whether the handshake completed.
    pub completed: bool,
    /// The protocol ALPN settled on (`h2`, `http/1.1`), once completed.
    pub negotiated: Option<String>,
}

/// TLS on `127.0.0.1:0`, relayed in the clear to `backend`.
pub struct TlsFront {
    pub addr: SocketAddr,
    pub handshakes: Arc<Mutex<Vec<Handshake>>>,
    task: JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    pub async fn start(ca: &TestCa, backend: SocketAddr) -> TlsFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the TLS front");
        let addr = listener.local_addr().expect("addr");
        let config = Arc::new(ca.server_config());
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (config, seen) = (config.clone(), seen.clone());
                tokio::spawn(async move {
                    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
                    let Ok(start) = acceptor.await else { return };
                    let offered: Vec<String> = start
                        .client_hello()
                        .alpn()
                        .map(|protocols| protocols.map(|p| String::from_utf8_lossy(p).into_owned()).collect())
                        .unwrap_or_default();
                    let index = {
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        seen.push(Handshake { offered, completed: false, negotiated: None });
                        seen.len() - 1
                    };
                    let Ok(mut tls) = start.into_stream(config).await else { return };
                    let negotiated = tls.get_ref().1.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                    {
                        let mut record = seen.lock().unwrap_or_else(|e| e.into_inner());
                        record[index].completed = true;
                        record[index].negotiated = negotiated;
                    }
                    let Ok(mut plain) = TcpStream::connect(backend).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { addr, handshakes, task }
    }

    /// `https://localhost:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Handshakes completed so far.
    pub fn completed(&self) -> usize {
        self.handshakes.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|h| h.completed).count()
    }
}

/// One HTTP/1.1 `GET path` over TLS to `addr` with a client that trusts only `ca`: the response's status
/// line.
pub async fn https_get_status_line(ca: &TestCa, addr: SocketAddr, path: &str) -> String {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config()));
    let tcp = TcpStream::connect(addr).await.expect("connect to the TLS front");
    let name = ServerName::try_from("localhost").expect("a server name");
    let mut tls = connector.connect(name, tcp).await.expect("a TLS handshake trusting the test CA");
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write the request");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).lines().next().unwrap_or_default().to_owned()
}
