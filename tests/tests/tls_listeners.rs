//! TLS on the API and admin listeners (issue 20): `[node.tls]` / `[node.admin_tls]` serve HTTPS with the
//! configured certificate, ALPN h2 and http/1.1, plain text refused on that port; a certificate replaced on
//! disk is served to new connections without a restart while open connections stay up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::json;
use tollgate::tls_listen::TlsFiles;
use tollgate_tests::tls::{https_exchange, TestCa};
use tollgate_tests::*;

fn files(dir: &std::path::Path, name: &str, ca: &TestCa) -> TlsFiles {
    let (cert, key) = ca.server_files();
    let (cert_file, key_file) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::copy(cert, &cert_file).unwrap();
    std::fs::copy(key, &key_file).unwrap();
    TlsFiles { cert_file, key_file }
}

#[tokio::test]
async fn both_listeners_serve_tls_and_a_replaced_certificate_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (TestCa::generate(), TestCa::generate());
    let api_files = files(dir.path(), "api", &first);
    let admin_files = files(dir.path(), "admin", &first);
    let h = Harness::start_tweaked("", |config| {
        config.node.tls = Some(api_files.clone());
        config.node.admin_tls = Some(admin_files);
    })
    .await;
    let api = h.node.api_addr;
    let admin = h.node.admin_addr;

    let body = json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let chat = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (negotiated, response) = https_exchange(&first, api, &["http/1.1"], &chat).await.unwrap();
    assert_eq!(negotiated.as_deref(), Some("http/1.1"));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("chat.completion"), "{response}");
    let (negotiated, _) = https_exchange(&first, api, &["h2", "http/1.1"], "").await.unwrap();
    assert_eq!(negotiated.as_deref(), Some("h2"), "HTTP/2 by ALPN");
    let health = "GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let (_, response) = https_exchange(&first, admin, &["http/1.1"], health).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Plain HTTP to a TLS port gets no HTTP answer.
    let plain = reqwest::Client::new().get(format!("http://{admin}/healthz")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "plain text served on a TLS port");
    assert_eq!(h.mock.request_count(), 1);

    // A connection opened now stays up across the certificate change.
    let held = tokio::net::TcpStream::connect(api).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(first.client_config()));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut held = connector.connect(name, held).await.unwrap();

    let (cert, key) = second.server_files();
    std::fs::copy(key, &api_files.key_file).unwrap();
    std::fs::copy(cert, &api_files.cert_file).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while https_exchange(&second, api, &["http/1.1"], "").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        https_exchange(&first, api, &["http/1.1"], "").await.is_err(),
        "the old certificate is gone for new connections"
    );
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    held.write_all(chat.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = held.read_to_end(&mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "the connection opened before the change still serves: {response}");
}

#[tokio::test]
async fn a_key_that_does_not_fit_the_certificate_stops_the_node_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (TestCa::generate(), TestCa::generate());
    let mut mismatched = files(dir.path(), "api", &first);
    mismatched.key_file = second.server_files().1;
    let mock = MockUpstream::start().await;
    let mut config = tollgate::Config::parse(&config_toml(&mock, "")).unwrap();
    config.node.admin_tls = Some(mismatched);
    let Err(err) = tollgate::server::RunningNode::start(config).await else { panic!("the node started") };
    let message = format!("{err:#}");
    assert!(message.starts_with("node.admin_tls: the key in key_file does not fit"), "{message}");
}

// The CLI runs as a blocking child process while this process serves it: a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_an_https_admin_listener_trusting_the_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::generate();
    let admin_files = files(dir.path(), "admin", &ca);
    let h = Harness::start_tweaked("", |config| config.node.admin_tls = Some(admin_files)).await;
    let url = format!("https://localhost:{}", h.node.admin_addr.port());
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(tollgate_tests::process::tollgate_binary())
            .args(["status", "--json", "--admin", &url, "--token", "irrelevant"])
            .args(extra)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
    };
    let trusted = run(&["--ca-file", ca.ca_pem().to_str().unwrap()]);
    assert!(!trusted.to_lowercase().contains("certificate"), "the handshake succeeded: {trusted}");
    assert!(trusted.contains("cluster") || trusted.contains("standalone") || trusted.contains("401"), "{trusted}");
    let untrusted = run(&[]);
    assert!(untrusted.to_lowercase().contains("certificate"), "without the CA the certificate is refused: {untrusted}");
}

/// deploy/make-certs.sh makes a CA and node certificates the node serves and clients verify.
#[tokio::test]
async fn certificates_from_deploy_make_certs_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-certs.sh");
    let output =
        std::process::Command::new("bash").arg(script).arg(dir.path()).arg("n1=127.0.0.1,localhost").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("n1.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "keys are private");
    let files = TlsFiles { cert_file: dir.path().join("n1.pem"), key_file: dir.path().join("n1.key") };
    let h = Harness::start_tweaked("", |config| config.node.tls = Some(files)).await;
    // A client trusting only the script's CA.
    let ca = TestCa { dir: tempfile::tempdir().unwrap() };
    std::fs::copy(dir.path().join("ca.pem"), ca.ca_pem()).unwrap();
    let (negotiated, _) = https_exchange(&ca, h.node.api_addr, &["h2", "http/1.1"], "").await.unwrap();
    assert_eq!(negotiated.as_deref(), Some("h2"));
}
