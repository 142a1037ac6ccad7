//! Draining a real `tollgate serve` process on SIGTERM: new connections are refused at once while a stream
//! is still in flight, and `limits.shutdown_grace_ms` cuts a stream that outlasts it, after which the
//! process exits cleanly. (That a stream shorter than the grace completes is `process.rs`'s
//! `serve_drains_in_flight_streams_on_sigterm`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_tests::cluster_process::{harness_body, spawn_serve, NodeSection};
use tollgate_tests::process::{wait_healthy, ChildGuard};
use tollgate_tests::*;

const GRACE_MS: u64 = 1_500;

/// A standalone node in front of `mock` with a 1.5 s shutdown grace, ready, and a stream of 12 events
/// 500 ms apart (6 s) whose first event has arrived.
async fn node_with_a_long_stream(
    mock: &MockUpstream,
    dir: &tempfile::TempDir,
) -> (NodeSection, ChildGuard, reqwest::Response) {
    let node = NodeSection::on_free_ports();
    let body = harness_body(mock, "").replace("shutdown_grace_ms = 5000", &format!("shutdown_grace_ms = {GRACE_MS}"));
    assert!(body.contains(&format!("shutdown_grace_ms = {GRACE_MS}")), "the harness config sets the grace");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, node.with_body(&body)).unwrap();
    let child = spawn_serve(&path);
    let client = reqwest::Client::new();
    wait_healthy(&client, &format!("http://127.0.0.1:{}/readyz", node.admin)).await;
    mock.push(Script { delay_between_events: Some(Duration::from_millis(500)), ..Default::default() });
    let mut response = client
        .post(format!("http://127.0.0.1:{}/v1/chat/completions", node.api))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-direct", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    first_event(&mut response).await;
    (node, child, response)
}

/// Whether a new TCP connection to `port` is refused.
async fn refused(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err()
}

#[tokio::test]
async fn a_drain_refuses_new_connections_at_once_and_cuts_streams_at_the_grace() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, mut child, mut response) = node_with_a_long_stream(&mock, &dir).await;
    child.signal("TERM");
    let signalled = Instant::now();
    // Both listeners close at once, while the stream is still in flight (the upstream has not finished it).
    wait_for("both listeners to refuse new connections", Duration::from_secs(5), || async {
        (refused(node.api).await && refused(node.admin).await).then_some(())
    })
    .await;
    let sent = mock.output_tokens_served();
    assert!(sent < 12, "the stream had already finished ({sent} tokens) when new connections were refused");
    // The stream outlasts the grace: it is cut, without the terminal event the upstream never got to send.
    let mut rest = String::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(chunk)) = response.chunk().await {
            rest.push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    read.await.expect("the stream ended within 20 s of SIGTERM");
    assert!(!rest.contains("[DONE]"), "a stream longer than the grace was not cut: {rest}");
    assert_eq!(child.wait_exit(Duration::from_secs(15)).await, Some(0), "a drain that ran out of grace still exits 0");
    let took = signalled.elapsed();
    println!("exited {took:?} after SIGTERM (grace {GRACE_MS} ms)");
    assert!(took >= Duration::from_millis(GRACE_MS - 100), "exited before the grace was over: {took:?}");
    assert!(mock.output_tokens_served() < 12, "the upstream stream was not run to its end");
    eventually("the cut stream's upstream request to be cancelled", || mock.cancelled_streams() == 1).await;
}

/// While draining, `/readyz` should say 503 so that load balancers stop sending traffic before the
/// process is gone.
#[tokio::test]
async fn readyz_answers_503_while_draining() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (node, child, _stream) = node_with_a_long_stream(&mock, &dir).await;
    child.signal("TERM");
    // Once the process has taken the signal, /readyz stops saying 200: it must say 503 instead.
    let url = format!("http://127.0.0.1:{}/readyz", node.admin);
    let status = wait_for("/readyz to stop answering 200 after SIGTERM", Duration::from_secs(5), || async {
        let status = reqwest::get(&url).await.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
        (status != Ok(200)).then_some(status)
    })
    .await;
    assert_eq!(status, Ok(503), "GET /readyz during the drain (the stream is still in flight)");
    assert!(mock.output_tokens_served() < 12, "the drain was still running");
}
