//! An HTTPS upstream (a local TLS front for the mock, certificate from a test CA): the gateway speaks TLS
//! to it, offers HTTP/2 and HTTP/1.1 by ALPN, refuses a certificate no trusted root vouches for before it
//! sends the request, and with the CA in `node.upstream_ca_file` serves over HTTP/2, streams included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tollgate_tests::tls::{https_get_status_line, TestCa, TlsFront};
use tollgate_tests::*;

/// A model `over-tls` served by an OpenAI-kind provider behind `front`.
fn over_tls(front: &TlsFront) -> String {
    format!(
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
    )
}

#[tokio::test]
async fn an_https_upstream_whose_certificate_no_trusted_root_signed_is_refused_before_the_request() {
    let backend = MockUpstream::start().await;
    let ca = TestCa::generate();
    let front = TlsFront::start(&ca, backend.addr()).await;
    // The front works for a client that trusts the test CA.
    let status = https_get_status_line(&ca, front.addr, "/v1/models").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(backend.request_count(), 1);

    let h = Harness::start_with(&over_tls(&front)).await;
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

#[tokio::test]
async fn with_the_private_ca_in_upstream_ca_file_the_gateway_serves_over_http2() {
    let backend = MockUpstream::start().await;
    let ca = TestCa::generate();
    let front = TlsFront::start(&ca, backend.addr()).await;
    let ca_file = ca.ca_pem();
    let h = Harness::start_tweaked(&over_tls(&front), |config| config.node.upstream_ca_file = Some(ca_file)).await;

    let response = h.openai("/v1/chat/completions", &chat_body("over-tls", "hi")).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{answer}");

    let mut streamed = chat_body("over-tls", "hi");
    streamed["stream"] = serde_json::json!(true);
    let response = h.openai("/v1/chat/completions", &streamed).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "the stream ends properly over h2: {text}");

    let requests = backend.requests();
    assert_eq!(requests.len(), 2, "both requests reached the upstream through TLS");
    assert_eq!(requests[1].body["stream"], true);
    let handshakes = front.handshakes.lock().unwrap().clone();
    assert!(!handshakes.is_empty() && handshakes.iter().all(|h| h.completed), "{handshakes:?}");
    assert!(
        handshakes.iter().all(|h| h.negotiated.as_deref() == Some("h2")),
        "HTTP/2 negotiated by ALPN: {handshakes:?}"
    );
}

#[test]
fn an_unusable_upstream_ca_file_refuses_to_start_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n").unwrap();
    let missing = dir.path().join("missing.pem");
    for path in [&empty, &garbage, &missing] {
        let err = tollgate::providers::UpstreamTls::with_ca_file(Some(path)).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.starts_with("node.upstream_ca_file: "), "{}: {message}", path.display());
    }
}
