//! Criterion micro-benchmarks of the functions every proxied request or stream event goes through.
//!
//! Run: `cargo bench -p tollgate-bench` (filter: `cargo bench -p tollgate-bench -- sse`; quick:
//! `-- --warm-up-time 1 --measurement-time 2`). After the criterion groups a short "ratios" section
//! times a few pairs again with a plain loop and prints how they compare (skipped under a filter/`--test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use tollgate::api::openai::probe_chat;
use tollgate::api::{Protocol, RawObject, Usage};
use tollgate::auth::{authenticate, hash_key, KeyStore, StaticKeyStore};
use tollgate::config::KeyConfig;
use tollgate::sse::{SseEvent, SseParser};
use tollgate::tokens::{count_prompt, Encoding};
use tollgate::translate::stream::StreamTranslator;

// ---- inputs ----

/// A typical small SDK request (~300 bytes).
fn small_body() -> Vec<u8> {
    br#"{"model":"gpt-direct","messages":[{"role":"system","content":"You are a concise assistant for an online store."},{"role":"user","content":"Where is my order #48213? It was supposed to arrive on Monday and the tracking page has not changed since."}],"temperature":0.2,"max_tokens":256,"user":"cust-48213"}"#
        .to_vec()
}

/// The prose used for the ~2 KB prompts.
const PROSE: &[&str] = &[
    "The quarterly report shows revenue growth of 14 percent, driven mostly by the new subscription tier that launched in March.",
    "Customer churn fell slightly, but support tickets about billing doubled after the pricing page was redesigned.",
    "Can you summarise the three biggest risks for next quarter and suggest one concrete action for each of them?",
    "Please keep the answer under two hundred words and use plain language; the audience is the whole company, not just finance.",
    "Also mention whether the hiring plan still fits the budget, given that two senior engineers joined earlier than planned.",
    "Sure. Here is a first draft: 1) billing confusion may raise churn again; 2) infrastructure costs grow faster than revenue;",
    "3) the enterprise pipeline depends on a handful of large deals. Actions: fix the pricing page copy, renegotiate the cloud",
    "commitment before renewal, and add two mid-size prospects per account executive. The hiring plan still fits the budget.",
];

/// A multi-turn conversation of about 2 KB.
fn large_body() -> Vec<u8> {
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are an analyst who writes short, precise internal memos."}),
    ];
    let mut role = "user";
    for (index, pair) in PROSE.chunks(2).enumerate() {
        let mut text = pair.join(" ");
        if index == 3 {
            text.push_str(" Thanks, that is close. Make the second risk more specific and add a one-line conclusion.");
        }
        messages.push(serde_json::json!({"role": role, "content": text}));
        role = if role == "user" { "assistant" } else { "user" };
    }
    let context = PROSE[..4].join(" ");
    messages.push(serde_json::json!({"role": "user", "content": format!("Rewrite it with the changes above, keeping the same structure and the numbering of the risks. For reference, last quarter's memo said: {context}")}));
    let body = serde_json::json!({
        "model": "gpt-direct",
        "messages": messages,
        "temperature": 0.3,
        "max_completion_tokens": 400,
        "stream": false,
        "metadata": {"team": "finance", "request_source": "memo-tool"},
    });
    serde_json::to_vec(&body).unwrap()
}

/// ~2 KB of plain prompt text (what an exact count tokenizes).
fn prompt_text() -> String {
    let mut text = String::new();
    while text.len() < 2048 {
        for sentence in PROSE {
            text.push_str(sentence);
            text.push(' ');
        }
    }
    text.truncate(2048);
    text
}

/// A realistic OpenAI chat stream with `include_usage`: a role chunk, 26 content chunks, the finish chunk,
/// the usage chunk and `[DONE]` — 30 events, ~8 KB.
fn openai_stream() -> Vec<u8> {
    let words = [
        "Sure",
        ".",
        " Here",
        " is",
        " the",
        " revised",
        " memo",
        ":",
        " 1",
        ")",
        " Billing",
        " confusion",
        " after",
        " the",
        " pricing",
        " redesign",
        " may",
        " push",
        " churn",
        " back",
        " up",
        ";",
        " fix",
        " the",
        " copy",
        ".",
    ];
    let head = r#"{"id":"chatcmpl-BJ3cPq0m6Jx4YzLrS2XkQ7nT8aDfE","object":"chat.completion.chunk","created":1735689600,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_b8bc95a0ac","choices":["#;
    let mut out = String::new();
    let mut event = |choices: &str, usage: &str| {
        out.push_str("data: ");
        out.push_str(head);
        out.push_str(choices);
        out.push_str(r#"],"usage":"#);
        out.push_str(usage);
        out.push_str("}\n\n");
    };
    event(
        r#"{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}"#,
        "null",
    );
    for word in words {
        let content = serde_json::to_string(word).unwrap();
        event(
            &format!(r#"{{"index":0,"delta":{{"content":{content}}},"logprobs":null,"finish_reason":null}}"#),
            "null",
        );
    }
    event(r#"{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}"#, "null");
    // The usage chunk has no choices.
    let usage = r#"{"prompt_tokens":412,"completion_tokens":26,"total_tokens":438,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;
    out.push_str("data: ");
    out.push_str(&head.replace(r#""choices":["#, r#""choices":[],"usage":"#));
    out.push_str(usage);
    out.push_str("}\n\n");
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

const STREAM_EVENTS: u64 = 30;
const CHUNK: usize = 1024;

/// Feeds the stream in 1 KB chunks and drains every complete event, as `proxy::body` does.
fn parse_stream(stream: &[u8]) -> usize {
    let mut parser = SseParser::new();
    let mut events = 0;
    for chunk in stream.chunks(CHUNK) {
        parser.push(chunk);
        while let Ok(Some(event)) = parser.next_event() {
            black_box(&event);
            events += 1;
        }
    }
    parser.end_of_input();
    while let Ok(Some(event)) = parser.next_event() {
        black_box(&event);
        events += 1;
    }
    events
}

fn stream_events(stream: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    parser.push(stream);
    parser.end_of_input();
    let mut events = Vec::new();
    while let Ok(Some(event)) = parser.next_event() {
        events.push(event);
    }
    events
}

fn no_estimate(_: &str) -> Usage {
    Usage::default()
}

/// Runs one whole stream through a fresh translator; returns the bytes written for the caller.
fn translate_stream(upstream: Protocol, caller: Protocol, events: &[SseEvent], out: &mut BytesMut) -> usize {
    let mut translator = StreamTranslator::new(upstream, caller, true);
    out.clear();
    for event in events {
        translator.on_event(event, out, &no_estimate).unwrap();
    }
    assert!(translator.facts().complete);
    out.len()
}

fn key_store(keys: usize) -> StaticKeyStore {
    let configs: Vec<KeyConfig> = (0..keys)
        .map(|i| KeyConfig {
            key: Some(format!("tg-live-{i:08}-0123456789abcdef")),
            key_sha256: None,
            name: Some(format!("key-{i}")),
            org: format!("org-{}", i % 50),
            team: None,
            models: None,
        })
        .collect();
    StaticKeyStore::from_config(&configs)
}

const KEYS: usize = 1000;
const PRESENTED: &str = "tg-live-00000500-0123456789abcdef";

/// The free upper bound the router uses before paying for an exact count (`proxy::prepare::route`).
fn prompt_bound(body: &[u8]) -> u64 {
    let probe = probe_chat(body).unwrap();
    probe.prompt_bytes as u64 + 4 * probe.message_count as u64 + 3
}

// ---- criterion groups ----

fn bench_request(c: &mut Criterion) {
    let small = small_body();
    let large = large_body();
    let mut group = c.benchmark_group("request");
    for (name, body) in [("300B", &small), ("2KB", &large)] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("probe_chat/{name}"), |b| b.iter(|| probe_chat(black_box(body)).unwrap()));
        // The same-protocol rewrite of `proxy::prepare::target_body`: parse, then re-emit with `model`
        // replaced (non-stream) or `model` + `stream_options` (stream).
        group.bench_function(format!("rawobject_parse_write/{name}"), |b| {
            let mut out = Vec::with_capacity(body.len() + 64);
            b.iter(|| {
                let object = RawObject::parse(black_box(body)).unwrap();
                out.clear();
                object.write_with(&[("model", "\"mock-gpt\"")], &[], &mut out);
                out.len()
            })
        });
        group.bench_function(format!("rawobject_parse_write_stream/{name}"), |b| {
            let mut out = Vec::with_capacity(body.len() + 64);
            b.iter(|| {
                let object = RawObject::parse(black_box(body)).unwrap();
                out.clear();
                object.write_with(
                    &[("model", "\"mock-gpt\""), ("stream_options", r#"{"include_usage":true}"#)],
                    &[],
                    &mut out,
                );
                out.len()
            })
        });
    }
    group.finish();
}

fn bench_stream(c: &mut Criterion) {
    let stream = openai_stream();
    assert_eq!(parse_stream(&stream) as u64, STREAM_EVENTS);
    let events = stream_events(&stream);
    let mut group = c.benchmark_group("stream");
    // Per-event numbers: criterion divides by the element count.
    group.throughput(Throughput::Elements(STREAM_EVENTS));
    group.bench_function("sse_parse_1KB_chunks/30_events", |b| b.iter(|| parse_stream(black_box(&stream))));
    let mut out = BytesMut::with_capacity(16 * 1024);
    group.bench_function("translate/openai_passthrough/30_events", |b| {
        b.iter(|| translate_stream(Protocol::OpenAi, Protocol::OpenAi, black_box(&events), &mut out))
    });
    group.bench_function("translate/openai_to_anthropic/30_events", |b| {
        b.iter(|| translate_stream(Protocol::OpenAi, Protocol::Anthropic, black_box(&events), &mut out))
    });
    // What a proxied stream costs end to end in the gateway's CPU: parse + translate.
    group.bench_function("parse_and_passthrough/30_events", |b| {
        b.iter_batched_ref(
            || (SseParser::new(), StreamTranslator::new(Protocol::OpenAi, Protocol::OpenAi, true)),
            |(parser, translator)| {
                out.clear();
                for chunk in stream.chunks(CHUNK) {
                    parser.push(chunk);
                    while let Ok(Some(event)) = parser.next_event() {
                        translator.on_event(&event, &mut out, &no_estimate).unwrap();
                    }
                }
                out.len()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_tokens(c: &mut Criterion) {
    let text = prompt_text();
    let large = large_body();
    // The vocabulary loads lazily; keep that out of the measurement.
    Encoding::O200k.count("warm up");
    let mut group = c.benchmark_group("tokens");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("o200k_count/2KB_text", |b| b.iter(|| Encoding::O200k.count(black_box(&text))));
    group.bench_function("byte_bound/2KB_text", |b| b.iter(|| black_box(&text).len() as u64 + 4 + 3));
    group.throughput(Throughput::Bytes(large.len() as u64));
    group
        .bench_function("count_prompt_o200k/2KB_body", |b| b.iter(|| count_prompt(Encoding::O200k, black_box(&large))));
    group.bench_function("probe_and_bound/2KB_body", |b| b.iter(|| prompt_bound(black_box(&large))));
    group.finish();
}

fn bench_auth(c: &mut Criterion) {
    let store = key_store(KEYS);
    let hash = hash_key(PRESENTED);
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {PRESENTED}")).unwrap());
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static("OpenAI/Python 1.82.0"));
    let mut group = c.benchmark_group("auth");
    group.bench_function("hash_key", |b| b.iter(|| hash_key(black_box(PRESENTED))));
    group.bench_function("lookup/1000_keys", |b| b.iter(|| store.lookup(black_box(&hash)).unwrap()));
    group.bench_function("authenticate/1000_keys", |b| b.iter(|| authenticate(&store, black_box(&headers)).unwrap()));
    group.finish();
}

// ---- ratios (plain timing loop; criterion's numbers are the reference) ----

/// Nanoseconds per call: the best of 7 batches of ~30 ms each (after a warm-up), which is stable enough
/// for ratios.
fn ns_per_call<R>(mut f: impl FnMut() -> R) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_millis(50) {
        black_box(f());
        calls += 1;
    }
    let per_batch = (calls * 30 / 50).max(1);
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let start = Instant::now();
        for _ in 0..per_batch {
            black_box(f());
        }
        best = best.min(start.elapsed().as_nanos() as f64 / per_batch as f64);
    }
    best
}

fn print_ratios() {
    let small = small_body();
    let large = large_body();
    let text = prompt_text();
    let stream = openai_stream();
    let events = stream_events(&stream);
    let store = key_store(KEYS);
    let hash = hash_key(PRESENTED);
    Encoding::O200k.count("warm up");

    let probe_small = ns_per_call(|| probe_chat(black_box(&small)).unwrap().message_count);
    let probe_large = ns_per_call(|| probe_chat(black_box(&large)).unwrap().message_count);
    let rewrite_small = ns_per_call(|| {
        let object = RawObject::parse(black_box(&small)).unwrap();
        let mut out = Vec::with_capacity(small.len() + 64);
        object.write_with(&[("model", "\"mock-gpt\"")], &[], &mut out);
        out.len()
    });
    let count_text = ns_per_call(|| Encoding::O200k.count(black_box(&text)));
    let count_body = ns_per_call(|| count_prompt(Encoding::O200k, black_box(&large)));
    let bound_body = ns_per_call(|| prompt_bound(black_box(&large)));
    let sse = ns_per_call(|| parse_stream(black_box(&stream))) / STREAM_EVENTS as f64;
    let mut out = BytesMut::with_capacity(16 * 1024);
    let passthrough =
        ns_per_call(|| translate_stream(Protocol::OpenAi, Protocol::OpenAi, &events, &mut out)) / STREAM_EVENTS as f64;
    let to_anthropic = ns_per_call(|| translate_stream(Protocol::OpenAi, Protocol::Anthropic, &events, &mut out))
        / STREAM_EVENTS as f64;
    let hash_ns = ns_per_call(|| hash_key(black_box(PRESENTED)));
    let lookup_ns = ns_per_call(|| store.lookup(black_box(&hash)).map(|p| p.org.len()));

    let exact_text_tokens = Encoding::O200k.count(&text);
    let text_bound = text.len() as u64 + 4 + 3;
    let exact_body_tokens = count_prompt(Encoding::O200k, &large);
    let body_bound = prompt_bound(&large);

    println!();
    println!("== ratios (plain timing loop, best of 7 batches) ==");
    println!(
        "request bodies: small {} B, large {} B; prompt text {} B; stream {} B / {STREAM_EVENTS} events",
        small.len(),
        large.len(),
        text.len(),
        stream.len()
    );
    println!(
        "probe_chat             300B {:>9.0} ns   2KB {:>9.0} ns   (2KB/300B = {:.1}x for {:.1}x the bytes)",
        probe_small,
        probe_large,
        probe_large / probe_small,
        large.len() as f64 / small.len() as f64
    );
    println!(
        "parse+write_with       300B {:>9.0} ns   (rewrite / probe = {:.2}x)",
        rewrite_small,
        rewrite_small / probe_small
    );
    println!(
        "o200k count, 2KB text       {:>9.0} ns   = {:.0} MB/s; vs the byte bound (len+7): bound is free (~1 ns)",
        count_text,
        text.len() as f64 / count_text * 1e3
    );
    println!("count_prompt, 2KB body      {:>9.0} ns   vs probe+bound {:>7.0} ns  => exact costs {:.1}x the bound (which the probe already paid for)", count_body, bound_body, count_body / bound_body);
    println!(
        "bound tightness: text {} tokens exact vs {} bound ({:.1}x); body {} exact vs {} bound ({:.1}x)",
        exact_text_tokens,
        text_bound,
        text_bound as f64 / exact_text_tokens as f64,
        exact_body_tokens,
        body_bound,
        body_bound as f64 / exact_body_tokens as f64
    );
    println!("SSE parse (1KB chunks)      {:>9.0} ns/event", sse);
    println!(
        "translate passthrough       {:>9.0} ns/event;  OpenAI->Anthropic {:>7.0} ns/event ({:.1}x passthrough)",
        passthrough,
        to_anthropic,
        to_anthropic / passthrough
    );
    println!(
        "auth: hash_key {:.0} ns + lookup ({KEYS} keys) {:.0} ns  (hash = {:.0}% of auth)",
        hash_ns,
        lookup_ns,
        100.0 * hash_ns / (hash_ns + lookup_ns)
    );
    let per_request = probe_small + rewrite_small + hash_ns + lookup_ns;
    println!("=> non-stream small request, parse+rewrite+auth: {:.2} us of CPU (1 core: {:.0}k req/s ceiling from these alone)", per_request / 1e3, 1e6 / per_request);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut criterion = Criterion::default().configure_from_args();
    bench_request(&mut criterion);
    bench_stream(&mut criterion);
    bench_tokens(&mut criterion);
    bench_auth(&mut criterion);
    criterion.final_summary();
    // Only for a full `cargo bench` run: not under `--test`/`--list`, nor with a name filter.
    let bench_mode = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list" || a == "--test");
    let filtered = args.iter().skip(1).any(|a| !a.starts_with('-') && !is_option_value(&args, a));
    if bench_mode && !filtered {
        print_ratios();
    }
}

/// True when `arg` is the value of a preceding `--option value` pair (e.g. `--warm-up-time 1`).
fn is_option_value(args: &[String], arg: &str) -> bool {
    args.windows(2)
        .any(|pair| pair[1] == arg && pair[0].starts_with("--") && !pair[0].contains('=') && takes_value(&pair[0]))
}

fn takes_value(option: &str) -> bool {
    matches!(
        option,
        "--warm-up-time"
            | "--measurement-time"
            | "--sample-size"
            | "--nresamples"
            | "--noise-threshold"
            | "--confidence-level"
            | "--significance-level"
            | "--save-baseline"
            | "--baseline"
            | "--baseline-lenient"
            | "--load-baseline"
            | "--output-format"
            | "--color"
            | "--profile-time"
            | "--format"
            | "--plotting-backend"
    )
}
