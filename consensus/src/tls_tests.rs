use std::path::Path;
use std::process::Command;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA `{ca}.pem` / `{ca}.key` in `dir`.
fn make_ca(dir: &Path, ca: &str) {
    let (key, pem, subject) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN={ca}"));
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir,
        &[&["req", "-x509"], &ec[..], &["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject]].concat(),
    );
}

/// A node certificate for 127.0.0.1 from CA `ca`, as PEM with the CA's.
fn make_cert(dir: &Path, ca: &str, name: &str) -> ClusterTlsPem {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    let subject = format!("/CN={name}");
    openssl(dir, &[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", &subject]].concat());
    let ext = "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n";
    std::fs::write(dir.join("ext.cnf"), ext).unwrap_or_else(|e| panic!("{e}"));
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &["x509", "-req", "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-CAcreateserial", "-out", &pem]
            .into_iter()
            .chain(["-days", "2", "-extfile", "ext.cnf"])
            .collect::<Vec<_>>(),
    );
    let read = |file: &str| std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    ClusterTlsPem { ca_pem: read(&ca_pem), cert_pem: read(&pem), key_pem: read(&key) }
}

fn loaded(pem: &ClusterTlsPem) -> ClusterTls {
    ClusterTls::new(pem).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_certificate_from_another_ca_is_refused_and_the_current_material_stays() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    make_ca(dir.path(), "cluster");
    make_ca(dir.path(), "stranger");
    let member = make_cert(dir.path(), "cluster", "member");
    let stranger = make_cert(dir.path(), "stranger", "outsider");
    let tls = loaded(&member);
    let mixed = ClusterTlsPem { ca_pem: member.ca_pem.clone(), ..stranger.clone() };
    let Err(err) = ClusterTls::new(&mixed) else { panic!("a certificate from another CA loaded") };
    let message = err.to_string();
    assert!(message.starts_with("cluster_tls.cert_file: not a client certificate from the CA"), "{message}");
    assert!(tls.replace(&mixed).is_err(), "refused as a replacement too");
    let wrong_key = ClusterTlsPem { key_pem: stranger.key_pem.clone(), ..member.clone() };
    let Err(err) = tls.replace(&wrong_key) else { panic!("a key that does not fit loaded") };
    let key_text = String::from_utf8_lossy(&stranger.key_pem).into_owned();
    let body = key_text.lines().nth(1).unwrap_or_default();
    assert!(!err.to_string().contains(body), "{err}");
}

/// The server certificate a new client connection to `port` is shown, and the client side stream.
async fn dial(tls: &ClusterTls, port: u16) -> (Vec<u8>, TokioIo<tokio_rustls::client::TlsStream<TcpStream>>) {
    let uri: Uri = format!("http://127.0.0.1:{port}").parse().unwrap_or_else(|e| panic!("{e}"));
    let io = tls.connect(uri).await.unwrap_or_else(|e| panic!("{e}"));
    let certs = io.inner().get_ref().1.peer_certificates().unwrap_or_default();
    (certs.first().map(|cert| cert.to_vec()).unwrap_or_default(), io)
}

#[tokio::test]
async fn new_connections_use_the_replacement_and_established_ones_stay_open() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    make_ca(dir.path(), "cluster");
    let (first, second) = (make_cert(dir.path(), "cluster", "first"), make_cert(dir.path(), "cluster", "second"));
    let der = |pem: &ClusterTlsPem| {
        CertificateDer::pem_slice_iter(&pem.cert_pem)
            .next()
            .and_then(Result::ok)
            .map(|c| c.to_vec())
            .unwrap_or_default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let server = loaded(&first);
    let mut incoming = server.incoming(listener);
    let client = loaded(&first);

    let (shown, mut old_client) = dial(&client, port).await;
    assert_eq!(shown, der(&first));
    let Some(Ok(mut old_server)) = incoming.next().await else { panic!("no connection accepted") };

    server.replace(&second).unwrap_or_else(|e| panic!("{e}"));
    client.replace(&second).unwrap_or_else(|e| panic!("{e}"));
    let (shown, _new_client) = dial(&client, port).await;
    assert_eq!(shown, der(&second), "a new handshake gets the new certificate");
    let Some(Ok(new_server)) = incoming.next().await else { panic!("no connection accepted") };
    let client_certs = new_server.get_ref().1.peer_certificates().unwrap_or_default();
    assert_eq!(client_certs.first().map(|c| c.to_vec()), Some(der(&second)), "and the client presents its new one");

    // The connection made before the swap still carries data both ways.
    old_server.write_all(b"ping").await.unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4];
    old_client.inner_mut().read_exact(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf, b"ping");
}
