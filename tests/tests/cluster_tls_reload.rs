//! Issue 20: the cluster's mutual-TLS files (`[cluster_tls]`) are reloaded while the nodes run, like the
//! listeners' certificates. A node whose certificate and key files are replaced by a new pair from the
//! same CA (made with `deploy/make-certs.sh`) shows the new certificate to new peers, dials with it, and the
//! cluster keeps committing writes; a pair from another CA is refused and the node keeps the one it had.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tollgate::tls_listen::{ClusterTlsFiles, RELOAD_EVERY};
use tollgate_tests::cluster::*;
use tollgate_tests::tls::TestCa;

/// Node `id`'s `[cluster_tls]` files, in a directory of its own so that one node's can be replaced.
fn node_files(ca: &TestCa, id: u64) -> ClusterTlsFiles {
    let dir = ca.dir.path().join(format!("node{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = ca.server_files();
    std::fs::copy(ca.ca_pem(), dir.join("ca.pem")).unwrap();
    std::fs::copy(cert, dir.join("cert.pem")).unwrap();
    std::fs::copy(key, dir.join("key.pem")).unwrap();
    ClusterTlsFiles { ca_file: dir.join("ca.pem"), cert_file: dir.join("cert.pem"), key_file: dir.join("key.pem") }
}

/// A new certificate for `127.0.0.1`/`localhost` from `ca`, made by the deploy script from the CA's own
/// key: (cert, key) paths.
fn new_cert_from(ca: &TestCa, name: &str) -> (PathBuf, PathBuf) {
    let out = ca.dir.path().join(format!("rotation-{name}"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(ca.ca_pem(), out.join("ca.pem")).unwrap();
    std::fs::copy(ca.dir.path().join("ca.key"), out.join("ca.key")).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-certs.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(&out)
        .arg(format!("{name}=127.0.0.1,localhost"))
        .output()
        .expect("deploy/make-certs.sh runs");
    assert!(output.status.success(), "make-certs.sh: {}", String::from_utf8_lossy(&output.stderr));
    (out.join(format!("{name}.pem")), out.join(format!("{name}.key")))
}

/// Replaces the node's certificate and key the way an operator (or cert-manager) would: each file written
/// aside and renamed over the old one.
fn install(files: &ClusterTlsFiles, cert: &Path, key: &Path) {
    for (from, to) in [(key, &files.key_file), (cert, &files.cert_file)] {
        let aside = to.with_extension("new");
        std::fs::copy(from, &aside).unwrap();
        std::fs::rename(&aside, to).unwrap();
    }
}

fn first_cert(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path).unwrap().next().unwrap().unwrap().to_vec()
}

/// The certificate the Raft port at `addr` shows a new client that holds a cluster certificate.
async fn served_cert(ca: &TestCa, addr: std::net::SocketAddr) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca.ca_pem()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let (cert, key) = ca.server_files();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key).unwrap())
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::from(addr.ip());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs.first().map(|cert| cert.to_vec()).unwrap_or_default())
}

/// An org created through `via` (forwarded to the leader over the cluster link) reaches every node.
async fn write_commits(cluster: &TestCluster, via: u64, org: &str) {
    let path = format!("/admin/v1/orgs/{org}");
    let (status, out) = cluster.admin(cluster.node(via), Method::PUT, &path, Some(json!({}))).await;
    assert_eq!(status, 200, "{org} through node {via}: {out}");
    for node in cluster.running() {
        eventually_async(&format!("{org} on every node"), || async {
            node.gateway.consensus.as_ref().unwrap().current().config.orgs.contains_key(org)
        })
        .await;
    }
}

#[tokio::test]
async fn a_rotated_cluster_certificate_is_used_without_a_restart_and_one_from_another_ca_is_refused() {
    let (ca, stranger) = (TestCa::generate(), TestCa::generate());
    let files: Vec<ClusterTlsFiles> = (1..=3).map(|id| node_files(&ca, id)).collect();
    let mock = tollgate_tests::mock_upstream::MockUpstream::start().await;
    let per_node = files.clone();
    let mut cluster = TestCluster::start_full_tweaked(3, mock, "", move |config| {
        config.cluster_tls = Some(per_node[(config.node.id - 1) as usize].clone());
    })
    .await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    write_commits(&cluster, follower, "before-rotation").await;

    // The leader's files get a new certificate from the same CA; new handshakes show it.
    let leader_addr = cluster.members[(leader - 1) as usize].raft_addr;
    let (new_cert, new_key) = new_cert_from(&ca, "rotated");
    install(&files[(leader - 1) as usize], &new_cert, &new_key);
    let rotated = first_cert(&new_cert);
    eventually_async("the leader shows the rotated certificate", || async {
        served_cert(&ca, leader_addr).await.is_ok_and(|served| served == rotated)
    })
    .await;
    // Links made from now on use it both ways: a restarted follower dials the leader (which serves the new
    // certificate) and the leader redials it (presenting the new one as a client).
    cluster.stop(follower).await;
    cluster.restart(follower).await;
    write_commits(&cluster, follower, "after-rotation").await;

    // A pair from another CA would cut the node off: it is refused, the rotated one stays.
    let (cert, key) = stranger.server_files();
    install(&files[(leader - 1) as usize], &cert, &key);
    tokio::time::sleep(RELOAD_EVERY * 3).await;
    assert_eq!(served_cert(&ca, leader_addr).await, Ok(rotated), "the leader keeps the certificate it had");
    cluster.stop(follower).await;
    cluster.restart(follower).await;
    write_commits(&cluster, follower, "after-refused-rotation").await;
}
