//! Scripted misbehaviour: chunk splitting, aborts, early ends, malformed
//! events, stalls + cancellation, pacing, garbage bodies.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tollgate_tests::mock_upstream::{parse_sse, MockUpstream};

use super::{
    anthropic_body, chat_body, chat_url, client, content_type, eventually, json_events, messages_url, post, post_text,
    sc, DONE, P_OPENAI,
};

#[tokio::test]
async fn split_chunks_same_bytes() {
    let m = MockUpstream::start().await;
    let whole = post_text(messages_url(&m), anthropic_body(true)).await;
    m.push(sc(|s| s.split_chunks = Some(7)));
    let mut stream = post(messages_url(&m), anthropic_body(true)).await.bytes_stream();
    let (mut got, mut chunks) = (Vec::new(), 0);
    while let Some(c) = stream.next().await {
        let c = c.unwrap();
        assert!(c.len() <= 7, "chunk of {} bytes", c.len());
        chunks += 1;
        got.extend_from_slice(&c);
    }
    assert!(chunks > 20);
    let got = String::from_utf8(got).unwrap();
    // identical except for the per-request message id
    let id_of = |t: &str| json_events(t)[0]["message"]["id"].as_str().unwrap().to_owned();
    assert_eq!(got.replace(&id_of(&got), "ID"), whole.replace(&id_of(&whole), "ID"));
    assert_eq!(m.output_tokens_served(), 24);
}

#[tokio::test]
async fn abort_after_events_is_a_body_error() {
    let m = MockUpstream::start().await;
    m.push(sc(|s| s.abort_after_events = Some(3)));
    let resp = post(chat_url(&m), chat_body(true)).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    let mut error = false;
    while let Some(c) = stream.next().await {
        match c {
            Ok(b) => got.extend_from_slice(&b),
            Err(_) => {
                error = true;
                break;
            }
        }
    }
    assert!(error, "abort must surface as a body error");
    let got = String::from_utf8(got).unwrap();
    assert_eq!(parse_sse(&got).len(), 3);
    assert!(!got.contains("[DONE]"));
    assert_eq!(m.output_tokens_served(), 2, "role chunk + 2 content pieces");
    assert_eq!(m.cancelled_streams(), 0);
}

#[tokio::test]
async fn end_early_and_malformed() {
    let m = MockUpstream::start().await;
    m.push(sc(|s| s.end_early_after_events = Some(5)));
    let text = post_text(messages_url(&m), anthropic_body(true)).await;
    assert_eq!(parse_sse(&text).len(), 5);
    assert!(!text.contains("message_stop"));
    assert_eq!(m.output_tokens_served(), 2);

    m.push(sc(|s| s.malformed_after_events = Some(2)));
    let text = post_text(chat_url(&m), chat_body(true)).await;
    let evs = parse_sse(&text);
    assert_eq!(evs[2].1, "{not json");
    assert_eq!(evs.len(), 16);
    assert!(text.ends_with(DONE));
}

#[tokio::test]
async fn stall_then_client_drop_counts_cancelled() {
    let m = MockUpstream::start().await;
    m.push(sc(|s| s.stall_after_events = Some(4)));
    let mut stream = post(chat_url(&m), chat_body(true)).await.bytes_stream();
    let mut got = String::new();
    while parse_sse(&got).len() < 4 || !got.ends_with("\n\n") {
        let c = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap();
        got.push_str(std::str::from_utf8(&c.unwrap().unwrap()).unwrap());
    }
    // nothing more arrives
    let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(next.is_err());
    assert_eq!((m.cancelled_streams(), m.active_connections()), (0, 1));
    assert_eq!(m.output_tokens_served(), 3);
    drop(stream);
    eventually("the stalled stream counted as cancelled and its connection closed", || {
        m.cancelled_streams() == 1 && m.active_connections() == 0
    })
    .await;
    assert_eq!(m.output_tokens_served(), 3);

    // client gives up while the upstream is still "thinking" (before headers)
    m.push(sc(|s| s.delay_headers = Some(Duration::from_secs(30))));
    let fut = client().post(chat_url(&m)).json(&chat_body(true)).send();
    assert!(tokio::time::timeout(Duration::from_millis(100), fut).await.is_err());
    eventually("the stream abandoned before its headers counted as cancelled", || {
        m.cancelled_streams() == 2 && m.active_connections() == 0
    })
    .await;
    assert_eq!(m.input_tokens_served(), P_OPENAI);
}

#[tokio::test]
async fn streaming_is_incremental() {
    let m = MockUpstream::start().await;
    m.push(sc(|s| s.delay_between_events = Some(Duration::from_millis(30))));
    let t0 = Instant::now();
    let mut stream = post(messages_url(&m), anthropic_body(true)).await.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    let first_at = t0.elapsed();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("event: message_start\n"));
    while let Some(c) = stream.next().await {
        c.unwrap();
    }
    let total = t0.elapsed();
    // 18 events -> 17 gaps of 30ms
    assert!(total >= Duration::from_millis(500), "{total:?}");
    assert!(first_at < Duration::from_millis(300), "{first_at:?}");

    m.push(sc(|s| s.delay_headers = Some(Duration::from_millis(200))));
    let t0 = Instant::now();
    assert_eq!(post(chat_url(&m), chat_body(false)).await.status(), 200);
    assert!(t0.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn garbage_bodies() {
    let m = MockUpstream::start().await;
    m.push(sc(|s| s.garbage_body = true));
    let resp = post(chat_url(&m), chat_body(false)).await;
    assert_eq!((resp.status().as_u16(), content_type(&resp)), (200, "application/json".to_owned()));
    assert_eq!(resp.text().await.unwrap(), "<html>oops</html>");
    m.push(sc(|s| s.garbage_body = true));
    let resp = post(messages_url(&m), anthropic_body(true)).await;
    assert!(content_type(&resp).starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    assert!(parse_sse(&text).iter().all(|(_, d)| serde_json::from_str::<Value>(d).is_err()));
}
