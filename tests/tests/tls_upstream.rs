//! An HTTPS upstream (a local TLS front for the mock, certificate from a test CA): the gateway speaks TLS
//! to it, offers HTTP/2 and HTTP/1.1 by ALPN, and refuses a certificate no trusted root vouches for before
//! it sends the request. (Trusting a private CA takes a product option that does not exist yet: upstream
//! certificates are checked against the built-in web PKI roots only.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollgate_tests::tls::{https_get_status_line, TestCa, TlsFront};
use tollgate_tests::*;

#[tokio::test]
async fn an_https_upstream_whose_certificate_no_trusted_root_signed_is_refused_before_the_request() {
    let backend = MockUpstream::start().await;
    let ca = TestCa::generate();
    let front = TlsFront::start(&ca, backend.addr()).await;
    // The front works for a client that trusts the test CA.
    let status = https_get_status_line(&ca, front.addr, "/v1/models").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(backend.request_count(), 1);

    let h = Harness::start_with(&format!(
        r#"
[[providers]]
name = "tls-up"
kind = "openai"
base_url = "{}/v1"

[[models]]
name = "over-tls"
targets = [ {{ provider = "tls-up", model = "mock-gpt" }} ]
"#,
        front.base_url()
    ))
    .await;
    let response = h.openai("/v1/chat/completions", &chat_body("over-tls", "hi")).await;
    let status = response.status().as_u16();
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 502, "{error}");
    assert_eq!(error["error"]["code"], "upstream_unavailable", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("TLS"), "the refusal names TLS: {message}");
    assert_eq!(backend.request_count(), 1, "nothing was sent past the failed handshake");
    // The gateway did speak TLS to the front, offering HTTP/2 first, and gave up on the certificate.
    let handshakes = front.handshakes.lock().unwrap().clone();
    println!("handshakes: {handshakes:?}");
    assert!(handshakes.len() > 1, "the gateway never reached the TLS front");
    for handshake in &handshakes[1..] {
        assert_eq!(handshake.offered, ["h2", "http/1.1"], "ALPN offered");
        assert!(!handshake.completed, "a handshake with an untrusted certificate completed");
    }
    assert_eq!(front.completed(), 1, "only the control's handshake completed");
}
