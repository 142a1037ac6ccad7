//! OTLP traces from a real `tollgate serve` process into a test collector (a real gRPC server): one span per
//! request with the GenAI attributes, a child per upstream attempt, the caller's trace continued, and no
//! difference for clients when the collector is down (issue 19).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_tests::otlp_collector::OtlpCollector;
use tollgate_tests::process::*;
use tollgate_tests::*;

/// A node exporting to `endpoint`, flushing its batch every 100 ms.
async fn node(mock: &MockUpstream, endpoint: &str, name: &str) -> (ChildGuard, u16, tempfile::TempDir) {
    let (child, api, _admin, dir) = node_with(mock, endpoint, name, &[]).await;
    (child, api, dir)
}

/// The same with more environment variables; also returns the admin port (for `/metrics`).
async fn node_with(
    mock: &MockUpstream,
    endpoint: &str,
    name: &str,
    env: &[(&str, &str)],
) -> (ChildGuard, u16, u16, tempfile::TempDir) {
    node_with_config(mock, endpoint, name, env, "").await
}

/// The same with `extra` appended to the harness's config (more models, guardrails…).
async fn node_with_config(
    mock: &MockUpstream,
    endpoint: &str,
    name: &str,
    env: &[(&str, &str)],
    extra: &str,
) -> (ChildGuard, u16, u16, tempfile::TempDir) {
    let (api, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config_toml(mock, extra)).unwrap();
    let child = ChildGuard::spawn(
        Command::new(tollgate_binary())
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{api}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_SERVICE_NAME", name)
            .envs(env.iter().copied()),
    );
    wait_healthy(&reqwest::Client::new(), &format!("http://127.0.0.1:{admin}/healthz")).await;
    (child, api, admin, dir)
}

/// The exporter's span counter `name` (with `labels`) on the node's `/metrics`, parsed.
async fn otlp_counter(admin: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    let url = format!("http://127.0.0.1:{admin}/metrics");
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    sample(&parse_metrics(&text), name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
}

async fn chat(api: u16, model: &str, stream: bool, traceparent: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("traceparent", traceparent)
        .json(&json!({"model": model, "stream": stream, "max_tokens": 30,
            "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn requests_are_traced_with_the_genai_attributes_and_the_callers_trace() {
    let collector = OtlpCollector::start().await;
    let mock = MockUpstream::start().await;
    let (_child, api, _dir) = node(&mock, &collector.endpoint(), "tollgate-under-test").await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = chat(api, "gpt-direct", false, &format!("00-{trace_id}-00f067aa0ba902b7-01")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let within = Duration::from_secs(15);
    let span = collector.wait_for("chat gpt-direct", within, |s| s.name == "chat gpt-direct").await;
    assert_eq!(span.trace_id, trace_id, "the caller's trace continues");
    assert_eq!(span.parent_span_id, "00f067aa0ba902b7", "a child of the caller's span");
    assert_eq!(span.service_name.as_deref(), Some("tollgate-under-test"));
    // Usage as the provider reported it (the mock's counts, also in the response), not a local estimate.
    let usage = &body["usage"];
    assert_eq!(span.attr("gen_ai.usage.input_tokens"), Some(usage["prompt_tokens"].to_string().as_str()));
    assert_eq!(span.attr("gen_ai.usage.output_tokens"), Some(usage["completion_tokens"].to_string().as_str()));
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "gpt-direct"),
        ("gen_ai.provider.name", "up-openai"),
        ("gen_ai.response.model", "mock-gpt"),
        ("gen_ai.request.max_tokens", "30"),
        ("tollgate.org", "acme"),
        ("tollgate.route", "gpt-direct"),
        ("tollgate.target", "up-openai/mock-gpt"),
        ("tollgate.usage_estimated", "false"),
        ("gen_ai.response.finish_reasons", "stop"),
        ("server.address", mock.addr().to_string().as_str()),
    ] {
        assert_eq!(span.attr(key), Some(value), "{key} in {span:#?}");
    }
    assert!(span.attr("tollgate.cost_usd").is_some_and(|cost| cost.parse::<f64>().unwrap() > 0.0), "{span:#?}");
    let text = serde_json::to_string(&span.attributes).unwrap();
    assert!(!text.contains(KEY) && !text.contains("hello there"), "no key, no prompt: {text}");
    let attempt = collector.wait_for("attempt", within, |s| s.name.starts_with("attempt ")).await;
    assert_eq!((attempt.parent_span_id.as_str(), attempt.trace_id.as_str()), (span.span_id.as_str(), trace_id));
    assert_eq!(attempt.attr("http.response.status_code"), Some("200"));
    // The provider got the attempt's trace context, not the caller's: its spans hang under the attempt.
    let upstream = mock.requests().into_iter().find(|r| r.path.ends_with("/chat/completions")).unwrap();
    let sent = upstream.header("traceparent").unwrap_or_default().to_owned();
    assert_eq!(sent, format!("00-{trace_id}-{}-01", attempt.span_id), "{sent}");

    // A stream: the span ends when the stream does, with its usage and time to first token.
    let response = chat(api, "gpt-via-claude", true, &format!("00-{trace_id}-00f067aa0ba902b8-01")).await;
    assert_eq!(response.status(), 200);
    let _ = response.text().await.unwrap();
    let streamed = collector.wait_for("chat gpt-via-claude", within, |s| s.name == "chat gpt-via-claude").await;
    assert_eq!(streamed.attr("gen_ai.provider.name"), Some("up-anthropic"), "translated to Anthropic");
    assert!(streamed.attr("gen_ai.usage.output_tokens").is_some_and(|n| n != "0"), "{streamed:#?}");
    assert!(streamed.attr("tollgate.ttft_ms").is_some(), "{streamed:#?}");
    assert_eq!(streamed.events, ["tollgate.first_token", "tollgate.stream.end"], "{streamed:#?}");

    // A refusal and a fallback are visible too.
    let refused = chat(api, "no-such-model", false, &format!("00-{trace_id}-00f067aa0ba902b9-01")).await;
    assert_eq!(refused.status(), 404);
    let response = chat(api, "gpt-fallback", false, &format!("00-{trace_id}-00f067aa0ba902ba-01")).await;
    assert_eq!(response.status(), 200);
    let failed = collector.wait_for("error", within, |s| s.attr("error.type") == Some("model_not_found")).await;
    assert_eq!(failed.parent_span_id, "00f067aa0ba902b9");
    let fallback = collector.wait_for("chat gpt-fallback", within, |s| s.name == "chat gpt-fallback").await;
    let attempts: Vec<_> = collector.spans().into_iter().filter(|s| s.parent_span_id == fallback.span_id).collect();
    assert_eq!(attempts.len(), 2, "the dead target, then the live one: {attempts:#?}");
    assert!(attempts.iter().any(|a| a.attr("error.type") == Some("upstream_connect")), "{attempts:#?}");
}

/// Issue 19: prompt and completion text are recorded only on a route that opts in (`trace_content`), with
/// secrets and the route's PII redacted; a default route's span has neither.
#[tokio::test]
async fn only_a_route_that_opts_in_records_prompt_and_completion() {
    let collector = OtlpCollector::start().await;
    let mock = MockUpstream::start().await;
    let extra = r#"
[[guardrails]]
name = "emails"
kind = "pii"
action = "flag"
entities = ["EMAIL"]

[[models]]
name = "gpt-content"
trace_content = true
guardrails = ["emails"]
targets = [ { provider = "up-openai", model = "mock-gpt" } ]

[[models]]
name = "claude-content"
trace_content = true
targets = [ { provider = "up-anthropic", model = "mock-claude" } ]
"#;
    let (_child, api, _admin, _dir) =
        node_with_config(&mock, &collector.endpoint(), "tollgate-content", &[], extra).await;
    let secret = format!("sk-proj-{}", "a1B2c3D4e5F6g7H8".repeat(3));
    let prompt = format!("hello there, my key is {secret} and my mail is bob@example.com");
    for (model, stream) in [("gpt-content", false), ("claude-content", true), ("gpt-direct", false)] {
        let response = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let _ = response.text().await.unwrap();
    }
    let within = Duration::from_secs(15);
    let reply = mock_upstream::DEFAULT_REPLY;
    for (name, stream) in [("chat gpt-content", false), ("chat claude-content", true)] {
        let span = collector.wait_for(name, within, |s| s.name == name).await;
        let input: Value = serde_json::from_str(span.attr("gen_ai.input.messages").unwrap()).unwrap();
        assert_eq!(input[0]["role"], "user", "{input}");
        let text = input[0]["parts"][0]["content"].as_str().unwrap();
        assert!(text.starts_with("hello there, my key is [REDACTED:API_KEY]"), "{text}");
        assert!(!text.contains(&secret), "secrets never recorded: {text}");
        let output: Value = serde_json::from_str(span.attr("gen_ai.output.messages").unwrap()).unwrap();
        assert_eq!(output[0]["role"], "assistant", "{output}");
        assert_eq!(output[0]["parts"][0]["content"], reply, "stream {stream}: {output}");
        assert!(output[0]["finish_reason"].is_string(), "{output}");
        assert_eq!(span.attr("tollgate.trace_content.truncated"), None);
        if !stream {
            assert!(text.ends_with("my mail is [REDACTED:EMAIL]"), "the route's PII guardrail applies: {text}");
        }
    }
    let default = collector.wait_for("chat gpt-direct", within, |s| s.name == "chat gpt-direct").await;
    let text = serde_json::to_string(&default.attributes).unwrap();
    assert!(!text.contains("hello there") && !text.contains("gen_ai.input.messages"), "{text}");
    assert!(!text.contains("gen_ai.output.messages"), "{text}");
}

#[tokio::test]
async fn a_collector_that_is_down_changes_nothing_for_clients() {
    let mock = MockUpstream::start().await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (_child, api, admin, _dir) = node_with(&mock, &closed, "tollgate-no-collector", &[]).await;
    for stream in [false, true, false] {
        let response = chat(api, "gpt-direct", stream, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").await;
        assert_eq!(response.status(), 200);
        assert!(!response.text().await.unwrap().is_empty());
    }
    // The spans are lost, and counted: their export failed.
    let failed = ("reason", "export_failed");
    wait_for("failed exports counted", Duration::from_secs(15), || async {
        (otlp_counter(admin, "tollgate_otlp_spans_dropped_total", &[failed]).await > 0.0).then_some(())
    })
    .await;
    assert_eq!(otlp_counter(admin, "tollgate_otlp_spans_exported_total", &[]).await, 0.0);
}

/// A collector that accepts connections and never answers: exports hang until their timeout, the queue
/// (4 spans here) fills, and every span past it is dropped and counted — while clients see nothing.
#[tokio::test]
async fn a_stalled_collector_fills_the_queue_and_drops_are_counted() {
    let mock = MockUpstream::start().await;
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", stalled.local_addr().unwrap());
    let _held = std::thread::spawn(move || {
        let held: Vec<_> = stalled.incoming().collect();
        drop(held);
    });
    let env = [("OTEL_BSP_MAX_QUEUE_SIZE", "4"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000")];
    let (_child, api, admin, _dir) = node_with(&mock, &endpoint, "tollgate-stalled-collector", &env).await;
    assert_eq!(otlp_counter(admin, "tollgate_otlp_queue_capacity", &[]).await, 4.0);
    for i in 0..12 {
        let response =
            chat(api, "gpt-direct", i % 3 == 1, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").await;
        assert_eq!(response.status(), 200);
        assert!(!response.text().await.unwrap().is_empty());
    }
    // 24 spans (a request and its attempt each), at most 4 queued and 4 in the hanging export.
    let full = ("reason", "queue_full");
    let dropped = otlp_counter(admin, "tollgate_otlp_spans_dropped_total", &[full]).await;
    assert!(dropped >= 16.0, "{dropped} spans dropped");
    assert!(otlp_counter(admin, "tollgate_otlp_queue_spans", &[]).await <= 4.0);
}

#[tokio::test]
async fn admin_writes_are_traced_to_their_raft_commit() {
    let collector = OtlpCollector::start().await;
    let mock = MockUpstream::start().await;
    let (api, admin, raft) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config_toml(&mock, "")).unwrap();
    let _child = ChildGuard::spawn(
        Command::new(tollgate_binary())
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{api}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--raft-listen", &format!("127.0.0.1:{raft}"), "--peers", &format!("1=127.0.0.1:{raft}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("TOLLGATE_CLUSTER_SECRET", "otlp-test-cluster-secret")
            .env("TOLLGATE_ADMIN_TOKEN", "otlp-admin-token")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    );
    let client = reqwest::Client::new();
    let admin_url = format!("http://127.0.0.1:{admin}");
    wait_healthy(&client, &format!("{admin_url}/healthz")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let index = loop {
        let response = client
            .put(format!("{admin_url}/admin/v1/orgs/traced"))
            .bearer_auth("otlp-admin-token")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.json::<Value>().await.unwrap()["index"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "the one-node cluster never took a write: {}", response.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let span = collector
        .wait_for("admin write", Duration::from_secs(15), |s| {
            s.attr("tollgate.admin.change") == Some("put org traced") && s.attr("tollgate.raft.index").is_some()
        })
        .await;
    assert_eq!(span.attr("tollgate.raft.index"), Some(index.to_string().as_str()), "{span:#?}");
    assert_eq!(span.attr("tollgate.raft.forwarded"), Some("false"), "the only node leads");
    assert!(!serde_json::to_string(&span.attributes).unwrap().contains("otlp-admin-token"));
    let proposal = collector
        .wait_for("raft propose", Duration::from_secs(15), |s| {
            s.name == "raft propose" && s.parent_span_id == span.span_id
        })
        .await;
    assert_eq!(proposal.trace_id, span.trace_id);
    assert_eq!(proposal.attr("tollgate.raft.index"), Some(index.to_string().as_str()), "{proposal:#?}");
    assert!(proposal.attr("tollgate.raft.term").is_some_and(|term| term != "0"), "{proposal:#?}");

    // A budgeted request says so, with the output cap its reservation covers.
    let budget = json!({"scope": {"org": "acme"}, "limit_tokens": 100_000});
    let response =
        client.put(format!("{admin_url}/admin/v1/budgets")).bearer_auth("otlp-admin-token").json(&budget).send().await;
    assert_eq!(response.unwrap().status(), 200);
    assert_eq!(
        chat(api, "gpt-direct", false, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").await.status(),
        200
    );
    let span = collector
        .wait_for("budgeted chat", Duration::from_secs(15), |s| s.attr("tollgate.budget") == Some("admitted"))
        .await;
    assert_eq!(span.attr("tollgate.budget.output_cap"), Some("30"), "{span:#?}");
}

/// Issue 19: a config write sent to a follower is one trace across both nodes: the follower's admin write,
/// the leader's forwarded write (its child: `traceparent` rides on the cluster RPC) and, under that, the
/// leader's Raft proposal with the log index the write committed at.
#[tokio::test]
async fn a_write_forwarded_to_the_leader_continues_the_followers_trace() {
    use tollgate_tests::cluster_process::{spawn_serve_with, NodeSection, ADMIN_TOKEN};
    let collector = OtlpCollector::start().await;
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let raft = [free_port(), free_port()];
    let peers = vec![(1, raft[0]), (2, raft[1])];
    let mut nodes = Vec::new();
    for id in 1..=2u64 {
        let node = NodeSection {
            id: Some(id),
            raft: Some(raft[id as usize - 1]),
            gossip: Some(false),
            data_dir: Some(dir.path().join(format!("n{id}"))),
            cluster_secret: Some("otlp-test-cluster-secret".into()),
            peers: peers.clone(),
            fast_raft: true,
            ..NodeSection::on_free_ports()
        };
        let path = dir.path().join(format!("n{id}.toml"));
        std::fs::write(&path, node.with_body(&tollgate_tests::cluster_process::harness_body(&mock, ""))).unwrap();
        let service = format!("tollgate-node-{id}");
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ("OTEL_SERVICE_NAME", service),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        nodes.push((spawn_serve_with(&path, &env), node.admin));
    }
    let client = reqwest::Client::new();
    // The write goes to the node that does not lead, once there is a leader.
    let status_url = format!("http://127.0.0.1:{}/admin/v1/cluster", nodes[0].1);
    let leader = wait_for("a leader", Duration::from_secs(30), || async {
        let response = client.get(&status_url).bearer_auth(ADMIN_TOKEN).send().await.ok()?;
        response.json::<Value>().await.ok()?["leader"].as_u64()
    })
    .await;
    let follower = nodes[if leader == 1 { 1 } else { 0 }].1;
    let index = wait_for("the follower to take the write", Duration::from_secs(30), || async {
        let response = client
            .put(format!("http://127.0.0.1:{follower}/admin/v1/orgs/forwarded"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({}))
            .send()
            .await
            .ok()?;
        (response.status() == 200).then_some(())?;
        response.json::<Value>().await.ok()?["index"].as_u64()
    })
    .await;
    let within = Duration::from_secs(15);
    let change = Some("put org forwarded");
    let write = collector
        .wait_for("the follower's admin write", within, |s| {
            s.name == "admin write"
                && s.attr("tollgate.admin.change") == change
                && s.attr("tollgate.raft.index").is_some()
        })
        .await;
    assert_eq!(write.attr("tollgate.raft.forwarded"), Some("true"), "written through a follower ({follower})");
    let forwarded =
        collector.wait_for("the leader's forwarded write", within, |s| s.name == "raft forwarded write").await;
    assert_eq!(
        (forwarded.trace_id.as_str(), forwarded.parent_span_id.as_str()),
        (write.trace_id.as_str(), write.span_id.as_str())
    );
    assert_ne!(forwarded.service_name, write.service_name, "spans from both nodes: {forwarded:#?} {write:#?}");
    let proposal = collector
        .wait_for("the leader's proposal", within, |s| {
            s.name == "raft propose" && s.parent_span_id == forwarded.span_id
        })
        .await;
    assert_eq!(proposal.trace_id, write.trace_id);
    assert_eq!(proposal.service_name, forwarded.service_name, "proposed on the leader");
    assert_eq!(proposal.attr("tollgate.raft.index"), Some(index.to_string().as_str()), "{proposal:#?}");
    assert_eq!(proposal.attr("tollgate.raft.command"), change);
}

/// Issue 19: `[node] access_log` writes one JSON line per request with the span's fields, written when the
/// request ends (a stream's after its last event, usage included), the caller's trace id, never the key.
#[tokio::test]
async fn the_access_log_has_one_json_line_per_request_and_no_secret() {
    let mock = MockUpstream::start().await;
    let (api, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config =
        config_toml(&mock, "").replacen("[node]\n", &format!("[node]\naccess_log = {:?}\n", log.to_str().unwrap()), 1);
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let _child = ChildGuard::spawn(Command::new(tollgate_binary()).args(["serve", "--config"]).arg(&path).args([
        "--listen",
        &format!("127.0.0.1:{api}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
    ]));
    wait_healthy(&reqwest::Client::new(), &format!("http://127.0.0.1:{admin}/healthz")).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let plain: Value = chat(api, "gpt-direct", false, &traceparent).await.json().await.unwrap();
    let streamed = chat(api, "claude-direct", true, &traceparent).await.text().await.unwrap();
    assert!(streamed.contains("[DONE]"));
    let refused = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
        .bearer_auth("tg-not-a-key")
        .json(&json!({"model": "gpt-direct", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        if lines.len() >= 3 {
            assert!(!text.contains(KEY) && !text.contains("tg-not-a-key"), "a key in the access log: {text}");
            break lines;
        }
        assert!(std::time::Instant::now() < deadline, "three lines expected: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_status = |status: u64, route: Option<&str>| {
        lines
            .iter()
            .find(|l| l["http.response.status_code"] == status && route.is_none_or(|r| l["tollgate.route"] == r))
            .unwrap_or_else(|| panic!("a {status} line for {route:?}: {lines:#?}"))
    };
    let ok = by_status(200, Some("gpt-direct"));
    assert_eq!(ok["trace_id"], trace_id, "{ok}");
    assert_eq!(ok["tollgate.org"], "acme");
    assert_eq!(ok["tollgate.key_id"], "test");
    assert_eq!(ok["http.request.method"], "POST");
    assert_eq!(ok["url.path"], "/v1/chat/completions");
    assert_eq!(ok["gen_ai.usage.output_tokens"], plain["usage"]["completion_tokens"], "{ok}");
    assert_eq!(ok["gen_ai.usage.input_tokens"], plain["usage"]["prompt_tokens"], "{ok}");
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0 && ok["ts"].as_str().unwrap().ends_with('Z'), "{ok}");
    let stream = by_status(200, Some("claude-direct"));
    assert_eq!(
        stream["gen_ai.usage.output_tokens"],
        mock_upstream::pieces(mock_upstream::DEFAULT_REPLY).len(),
        "{stream}"
    );
    assert!(stream["tollgate.ttft_ms"].as_f64().is_some(), "{stream}");
    assert_eq!(ok["gen_ai.response.finish_reasons"], "stop", "the provider's own reason: {ok}");
    assert_eq!(stream["gen_ai.response.finish_reasons"], "end_turn", "Anthropic's, streamed: {stream}");
    let unauthorized = by_status(401, None);
    assert_eq!(unauthorized["error.type"], "unauthenticated", "{unauthorized}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
}

/// Issue 19: `[node.otlp]` configures export from the file (endpoint, headers, sampling) when no `OTEL_*`
/// variable says otherwise. A ratio of 0 records no new trace, but a caller's sampled trace is continued.
#[tokio::test]
async fn otlp_export_is_configured_from_the_file() {
    let collector = OtlpCollector::start().await;
    let mock = MockUpstream::start().await;
    let (api, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let otlp = format!(
        "\n[node.otlp]\nendpoint = {:?}\nsample_ratio = 0.0\ntimeout_ms = 2000\nheaders = {{ x-collector-key = \"secret-1\" }}\n",
        collector.endpoint()
    );
    let config = config_toml(&mock, "") + &otlp;
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let _child = ChildGuard::spawn(
        Command::new(tollgate_binary())
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{api}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100"),
    );
    wait_healthy(&reqwest::Client::new(), &format!("http://127.0.0.1:{admin}/healthz")).await;
    let root = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{api}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "claude-direct", "messages": [{"role": "user", "content": "not traced"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 200);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    assert_eq!(chat(api, "gpt-direct", false, &format!("00-{trace_id}-b7ad6b7169203331-01")).await.status(), 200);
    let span =
        collector.wait_for("the continued trace", Duration::from_secs(15), |s| s.name == "chat gpt-direct").await;
    assert_eq!(span.trace_id, trace_id);
    assert!(
        collector.spans().iter().all(|s| s.name != "chat claude-direct"),
        "a sample ratio of 0 records no trace of its own"
    );
}
