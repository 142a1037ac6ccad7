//! Upstream failures in the middle of a stream, over real sockets: the client stream ends with exactly one
//! explicit error event in the caller's shape — never a `finish_reason`, `[DONE]` or `message_stop` the
//! upstream did not send, never a malformed line passed on — chunk boundaries never change what the client
//! sees, and a client that goes away cancels the upstream request at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_tests::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    OpenAi,
    Anthropic,
}

/// (caller, gateway model, the upstream speaks OpenAI?)
const ROUTES: [(Caller, &str, bool); 4] = [
    (Caller::OpenAi, "gpt-direct", true),
    (Caller::Anthropic, "claude-direct", false),
    (Caller::OpenAi, "gpt-via-claude", false),
    (Caller::Anthropic, "claude-via-gpt", true),
];

async fn send_stream(h: &Harness, caller: Caller, model: &str) -> reqwest::Response {
    match caller {
        Caller::OpenAi => {
            let body =
                json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Hello there"}]});
            h.openai("/v1/chat/completions", &body).await
        }
        Caller::Anthropic => {
            let body = json!({"model": model, "stream": true, "max_tokens": 200, "messages": [{"role": "user", "content": "Hello there"}]});
            h.anthropic("/v1/messages", &body).await
        }
    }
}

/// Queues `script`, streams, checks the response started as an event stream, and reads it strictly.
async fn stream_with(h: &Harness, caller: Caller, model: &str, script: Script) -> Vec<Event> {
    h.mock.push(script);
    let response = send_stream(h, caller, model).await;
    assert_eq!(response.status(), 200, "{caller:?} on {model}: the stream started");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    read_events(response).await
}

fn text(caller: Caller, events: &[Event]) -> String {
    match caller {
        Caller::OpenAi => openai_text(events),
        Caller::Anthropic => anthropic_text(events),
    }
}

/// The text an upstream stream carries in its first `n` events: OpenAI sends a role chunk first, Anthropic
/// sends `message_start`, `content_block_start` and `ping` before the first delta.
fn text_of_first_events(upstream_openai: bool, n: usize) -> String {
    let skip = if upstream_openai { 1 } else { 3 };
    mock_upstream::pieces(mock_upstream::DEFAULT_REPLY).into_iter().take(n.saturating_sub(skip)).collect()
}

/// A stream that ended in an upstream failure: exactly one error event, last, in the caller's shape, and no
/// terminal event the upstream never sent. Returns the error object.
fn assert_one_error_at_end(caller: Caller, model: &str, events: &[Event]) -> Value {
    let what = format!("{caller:?} on {model}: {events:#?}");
    assert!(!events.is_empty(), "{what}");
    let last = events.last().unwrap();
    match caller {
        Caller::OpenAi => {
            let errors = events.iter().filter(|e| e.json().get("error").is_some()).count();
            assert_eq!(errors, 1, "exactly one error event: {what}");
            assert!(last.name.is_none(), "OpenAI events are unnamed: {what}");
            let error = last.json()["error"].clone();
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
            assert!(error["type"].is_string(), "{what}");
            assert!(!events.iter().any(Event::is_done), "no [DONE] after a failure: {what}");
            for event in events {
                let value = event.json();
                for choice in value["choices"].as_array().into_iter().flatten() {
                    assert!(choice["finish_reason"].is_null(), "no invented finish_reason: {what}");
                }
                assert!(value.get("type").is_none(), "no Anthropic events for an OpenAI caller: {what}");
            }
            error
        }
        Caller::Anthropic => {
            let errors = events.iter().filter(|e| e.name.as_deref() == Some("error")).count();
            assert_eq!(errors, 1, "exactly one error event: {what}");
            assert_eq!(last.name.as_deref(), Some("error"), "{what}");
            let value = last.json();
            assert_eq!(value["type"], "error", "{what}");
            assert!(value["error"]["type"].is_string(), "{what}");
            assert!(value["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
            for event in events {
                let name = event.name.as_deref().unwrap_or("");
                assert!(name != "message_stop" && name != "message_delta", "no invented end of message: {what}");
                assert!(!event.is_done(), "{what}");
                assert_eq!(event.json()["type"].as_str(), Some(name), "event name matches its data: {what}");
            }
            value["error"].clone()
        }
    }
}

/// A normally completed stream in the caller's shape.
fn assert_complete(caller: Caller, model: &str, events: &[Event]) {
    let what = format!("{caller:?} on {model}: {events:#?}");
    assert_eq!(text(caller, events), mock_upstream::DEFAULT_REPLY, "{what}");
    match caller {
        Caller::OpenAi => {
            assert!(events.last().unwrap().is_done(), "{what}");
            assert_eq!(events.iter().filter(|e| e.is_done()).count(), 1, "{what}");
            let finishes: Vec<Value> = events
                .iter()
                .filter(|e| !e.is_done())
                .map(|e| e.json()["choices"][0]["finish_reason"].clone())
                .filter(|f| !f.is_null())
                .collect();
            assert_eq!(finishes, [json!("stop")], "{what}");
            assert!(events.iter().all(|e| e.json().get("error").is_none()), "{what}");
        }
        Caller::Anthropic => {
            assert_eq!(events.last().unwrap().name.as_deref(), Some("message_stop"), "{what}");
            assert_eq!(events.iter().filter(|e| e.name.as_deref() == Some("message_stop")).count(), 1, "{what}");
            assert!(events.iter().all(|e| e.name.as_deref() != Some("error")), "{what}");
        }
    }
}

#[tokio::test]
async fn upstream_abort_mid_stream_ends_with_one_error_event() {
    let h = Harness::start().await;
    for (caller, model, upstream_openai) in ROUTES {
        let events = stream_with(&h, caller, model, Script { abort_after_events: Some(4), ..Default::default() }).await;
        assert_one_error_at_end(caller, model, &events);
        assert_eq!(
            text(caller, &events),
            text_of_first_events(upstream_openai, 4),
            "{caller:?} on {model}: all text before the cut arrives"
        );
    }
    assert_eq!(h.mock.request_count(), 4, "a stream that already started is never retried");
    // The node is fine afterwards.
    let events = stream_with(&h, Caller::OpenAi, "gpt-direct", Script::default()).await;
    assert_complete(Caller::OpenAi, "gpt-direct", &events);
}

#[tokio::test]
async fn upstream_clean_end_without_final_events_is_an_error() {
    let h = Harness::start().await;
    for (caller, model, upstream_openai) in ROUTES {
        let events =
            stream_with(&h, caller, model, Script { end_early_after_events: Some(4), ..Default::default() }).await;
        let error = assert_one_error_at_end(caller, model, &events);
        assert_eq!(text(caller, &events), text_of_first_events(upstream_openai, 4), "{caller:?} on {model}");
        if caller == Caller::OpenAi {
            assert_eq!(error["code"], "upstream_invalid_response", "{error}");
        } else {
            assert_eq!(error["type"], "api_error", "{error}");
        }
    }
    // Ending right before the terminal event is still an incomplete stream: an OpenAI upstream that sent
    // the finish chunk but neither usage nor [DONE] (role + 12 pieces + finish = 14 events).
    let events = stream_with(
        &h,
        Caller::OpenAi,
        "gpt-direct",
        Script { end_early_after_events: Some(13), ..Default::default() },
    )
    .await;
    assert_one_error_at_end(Caller::OpenAi, "gpt-direct", &events);
    assert_eq!(openai_text(&events), mock_upstream::DEFAULT_REPLY);
}

#[tokio::test]
async fn malformed_upstream_event_is_never_passed_on() {
    let h = Harness::start().await;
    for (caller, model, upstream_openai) in ROUTES {
        // `read_events` rejects any data line that is not JSON or [DONE].
        let events =
            stream_with(&h, caller, model, Script { malformed_after_events: Some(3), ..Default::default() }).await;
        assert_one_error_at_end(caller, model, &events);
        assert_eq!(text(caller, &events), text_of_first_events(upstream_openai, 3), "{caller:?} on {model}");
        assert!(events.iter().all(|e| !e.data.contains("not json")), "{events:#?}");
    }
    // Malformed data split across chunks is caught all the same.
    let script = Script { malformed_after_events: Some(5), split_chunks: Some(7), ..Default::default() };
    let events = stream_with(&h, Caller::Anthropic, "claude-direct", script).await;
    assert_one_error_at_end(Caller::Anthropic, "claude-direct", &events);
    assert_eq!(anthropic_text(&events), text_of_first_events(false, 5));
}

#[tokio::test]
async fn stalled_upstream_hits_the_idle_timeout_and_is_released() {
    let h = Harness::start().await;
    for (n, (caller, model, upstream_openai)) in ROUTES.into_iter().enumerate() {
        let started = Instant::now();
        let events = stream_with(&h, caller, model, Script { stall_after_events: Some(3), ..Default::default() }).await;
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(10), "{caller:?} on {model}: a stall must end, took {elapsed:?}");
        let error = assert_one_error_at_end(caller, model, &events);
        if caller == Caller::OpenAi {
            assert_eq!(error["code"], "upstream_timeout", "{error}");
        }
        assert_eq!(text(caller, &events), text_of_first_events(upstream_openai, 3), "{caller:?} on {model}");
        // The gateway let go of the silent upstream request.
        eventually("the stalled upstream stream is cancelled", || h.mock.cancelled_streams() == n + 1).await;
    }
    eventually("upstream connections closed", || h.mock.active_connections() == 0).await;
}

#[tokio::test]
async fn concurrent_faulty_and_healthy_streams_do_not_mix() {
    let h = Harness::start().await;
    // Scripts are consumed in arrival order, which concurrency makes unpredictable; so count outcomes: every
    // stream either completes normally or ends with exactly one error event, never anything in between.
    let faults = [
        Script { abort_after_events: Some(4), ..Default::default() },
        Script { end_early_after_events: Some(5), ..Default::default() },
        Script { malformed_after_events: Some(3), ..Default::default() },
        Script { stall_after_events: Some(2), ..Default::default() },
    ];
    let total = 24;
    for i in 0..total {
        if i % 3 == 0 {
            h.mock.push(faults[(i / 3) % faults.len()].clone());
        } else {
            h.mock.push(Script { split_chunks: Some(5 + i), ..Default::default() });
        }
    }
    let h = &h;
    let results = futures_util::future::join_all((0..total).map(|_| async move {
        let events = read_events(send_stream(h, Caller::OpenAi, "gpt-direct").await).await;
        if events.last().is_some_and(Event::is_done) {
            assert_complete(Caller::OpenAi, "gpt-direct", &events);
            true
        } else {
            assert_one_error_at_end(Caller::OpenAi, "gpt-direct", &events);
            false
        }
    }))
    .await;
    assert_eq!(results.iter().filter(|ok| !**ok).count(), total / 3, "one failed stream per faulty script");
    assert_eq!(h.mock.request_count(), total);
    // At least the two stalled upstream streams were given up on (a malformed one may also be cut short).
    eventually("stalled upstream streams cancelled", || h.mock.cancelled_streams() >= 2).await;
}

/// Strips what legitimately differs between two runs (ids, timestamps).
fn normalized(events: &[Event]) -> Vec<(Option<String>, Value)> {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("id");
                map.remove("created");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    events
        .iter()
        .map(|event| {
            let mut value = if event.is_done() { json!("[DONE]") } else { event.json() };
            strip(&mut value);
            (event.name.clone(), value)
        })
        .collect()
}

#[tokio::test]
async fn split_chunks_change_nothing_the_client_sees() {
    let h = Harness::start().await;
    for (caller, model, _) in ROUTES {
        let reference = stream_with(&h, caller, model, Script::default()).await;
        assert_complete(caller, model, &reference);
        for split in [3, 1] {
            let events =
                stream_with(&h, caller, model, Script { split_chunks: Some(split), ..Default::default() }).await;
            assert_complete(caller, model, &events);
            assert_eq!(normalized(&events), normalized(&reference), "{caller:?} on {model}, split {split}");
        }
    }
    // Tool calls and the usage chunk survive one-byte chunks too.
    let tool = || Script {
        tool_call: Some(("get_weather".into(), r#"{"city":"Paris","unit":"celsius"}"#.into())),
        ..Default::default()
    };
    let body = json!({"model": "gpt-direct", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "weather?"}]});
    h.mock.push(tool());
    let reference = read_events(h.openai("/v1/chat/completions", &body).await).await;
    h.mock.push(Script { split_chunks: Some(1), ..tool() });
    let events = read_events(h.openai("/v1/chat/completions", &body).await).await;
    assert_eq!(normalized(&events), normalized(&reference));
    assert!(events[events.len() - 2].json()["usage"]["completion_tokens"].as_u64().is_some_and(|n| n > 0));
    let arguments: String = events
        .iter()
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_owned)
        })
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris","unit":"celsius"}"#);
}

#[tokio::test]
async fn garbage_stream_is_an_error_in_the_callers_shape() {
    // The garbage arrives before any valid event, so nothing has been streamed yet: the gateway answers with
    // a plain error response (no half-open event stream, nothing malformed passed on).
    let h = Harness::start().await;
    for (caller, model, _) in ROUTES {
        h.mock.push(Script { garbage_body: true, ..Default::default() });
        let response = send_stream(&h, caller, model).await;
        let status = response.status();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        let text = tokio::time::timeout(Duration::from_secs(10), response.text()).await.unwrap().unwrap();
        assert!(!text.contains("oops"), "garbage is never passed on: {text}");
        assert_eq!(status, 502, "{caller:?} on {model}: {text}");
        assert!(content_type.starts_with("application/json"), "{content_type}");
        let body: Value = serde_json::from_str(&text).unwrap();
        match caller {
            Caller::OpenAi => {
                assert_eq!(body["error"]["type"], "api_error", "{body}");
                assert_eq!(body["error"]["code"], "upstream_invalid_response", "{body}");
            }
            Caller::Anthropic => {
                assert_eq!(body["type"], "error", "{body}");
                assert_eq!(body["error"]["type"], "api_error", "{body}");
            }
        }
    }
    let events = stream_with(&h, Caller::Anthropic, "claude-direct", Script::default()).await;
    assert_complete(Caller::Anthropic, "claude-direct", &events);
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_at_once() {
    let h = Harness::start().await;
    let cases = [
        (Caller::OpenAi, "gpt-direct", Script { stall_after_events: Some(3), ..Default::default() }),
        (
            Caller::Anthropic,
            "claude-direct",
            Script { delay_between_events: Some(Duration::from_millis(400)), ..Default::default() },
        ),
        (
            Caller::OpenAi,
            "gpt-via-claude",
            Script { delay_between_events: Some(Duration::from_millis(400)), ..Default::default() },
        ),
        (Caller::Anthropic, "claude-via-gpt", Script { stall_after_events: Some(3), ..Default::default() }),
    ];
    for (n, (caller, model, script)) in cases.into_iter().enumerate() {
        h.mock.push(script);
        let mut response = send_stream(&h, caller, model).await;
        assert_eq!(response.status(), 200);
        let first = first_event(&mut response).await;
        assert!(first.contains("data: {"), "{first}");
        drop(response);
        eventually("the upstream stream is cancelled", || h.mock.cancelled_streams() == n + 1).await;
        eventually("the upstream connection is closed", || h.mock.active_connections() == 0).await;
    }
    // The node is fine afterwards, and nothing else was cancelled.
    let events = stream_with(&h, Caller::OpenAi, "gpt-direct", Script::default()).await;
    assert_complete(Caller::OpenAi, "gpt-direct", &events);
    assert_eq!(h.mock.cancelled_streams(), 4);
}

/// Sends a stream request the upstream holds (no headers, never released) and drops it once it is held.
/// Well inside the 2 s first-byte budget, so what follows is the client's doing, not a timeout.
async fn leave_before_headers(h: &Harness) {
    h.mock.push(Script { hold: true, ..Default::default() });
    let body = json!({"model": "gpt-direct", "stream": true, "messages": [{"role": "user", "content": "Hello"}]});
    let request = h.client.post(h.url("/v1/chat/completions")).bearer_auth(KEY).json(&body).send();
    let client = tokio::spawn(request);
    eventually("the request to be held at the upstream", || h.mock.held() == 1).await;
    client.abort();
}

#[tokio::test]
async fn client_giving_up_before_headers_cancels_the_upstream() {
    let h = Harness::start().await;
    leave_before_headers(&h).await;
    eventually("the upstream request is cancelled", || h.mock.cancelled_streams() == 1).await;
    eventually("the upstream connection is closed", || h.mock.active_connections() == 0).await;
}

#[tokio::test]
async fn client_giving_up_before_headers_is_metered_as_cancelled() {
    let h = Harness::start().await;
    leave_before_headers(&h).await;
    eventually("the upstream request is cancelled", || h.mock.cancelled_streams() == 1).await;
    let labels = "route=\"gpt-direct\",gen_ai_provider_name=\"up-openai\",gen_ai_request_model=\"mock-gpt\"";
    metric_eventually(&h, "tollgate_upstream_requests_total", &[labels, "outcome=\"cancelled\""], 1.0).await;
}

async fn metric_eventually(h: &Harness, name: &str, parts: &[&str], want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = h.metrics().await;
        let value = metric_value(&metrics, name, parts);
        if value == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{name} {parts:?}: {value:?}, want {want}\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn client_disconnect_is_metered_as_cancelled() {
    let h = Harness::start().await;
    h.mock.push(Script { delay_between_events: Some(Duration::from_millis(300)), ..Default::default() });
    let mut response = send_stream(&h, Caller::OpenAi, "gpt-direct").await;
    first_event(&mut response).await;
    drop(response);
    eventually("the upstream stream is cancelled", || h.mock.cancelled_streams() == 1).await;
    let labels = "route=\"gpt-direct\",gen_ai_provider_name=\"up-openai\",gen_ai_request_model=\"mock-gpt\"";
    metric_eventually(&h, "tollgate_upstream_requests_total", &[labels, "outcome=\"cancelled\""], 1.0).await;
    let metrics = h.metrics().await;
    assert_eq!(metric_value(&metrics, "tollgate_upstream_requests_total", &[labels, "outcome=\"ok\""]), Some(0.0));
    assert_eq!(metric_value(&metrics, "tollgate_upstream_requests_total", &[labels, "outcome=\"error\""]), Some(0.0));

    // Mid-stream upstream failures count as errors, not cancellations.
    let events =
        stream_with(&h, Caller::OpenAi, "gpt-direct", Script { abort_after_events: Some(2), ..Default::default() })
            .await;
    assert_one_error_at_end(Caller::OpenAi, "gpt-direct", &events);
    metric_eventually(&h, "tollgate_upstream_requests_total", &[labels, "outcome=\"error\""], 1.0).await;
    let metrics = h.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tollgate_upstream_requests_total", &[labels, "outcome=\"cancelled\""]),
        Some(1.0)
    );

    // Same for an Anthropic caller.
    h.mock.push(Script { stall_after_events: Some(4), ..Default::default() });
    let mut response = send_stream(&h, Caller::Anthropic, "claude-direct").await;
    first_event(&mut response).await;
    drop(response);
    let labels = "route=\"claude-direct\",gen_ai_provider_name=\"up-anthropic\",gen_ai_request_model=\"mock-claude\"";
    metric_eventually(&h, "tollgate_upstream_requests_total", &[labels, "outcome=\"cancelled\""], 1.0).await;
}
