//! Entry points for fuzzing the parsers that read bytes from the network or a file: the SSE parser, the
//! request probes and translators of both APIs, the four stream translators, the response translators,
//! and the config parser. Each takes arbitrary bytes and must neither panic nor hang; where a property is
//! cheap to state it is asserted (an SSE stream parses to the same events however it is split).
//!
//! Two drivers run them: `fuzz/` (cargo-fuzz, libFuzzer on nightly; `scripts/fuzz.sh`) for coverage-guided
//! runs, and `node/tests/fuzz_replay.rs` on stable in the normal test run, which replays the checked-in
//! corpus and every crash kept as a regression input (`fuzz/regressions/`) and a few thousand seeded
//! mutations of it.

use bytes::BytesMut;

use crate::api::{anthropic, openai, Protocol};
use crate::sse::SseParser;
use crate::translate::stream::StreamTranslator;

/// One fuzz target: arbitrary bytes in, no panic.
pub type Target = fn(&[u8]);

/// The targets by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("sse", sse),
    ("chat_request", chat_request),
    ("messages_request", messages_request),
    ("stream_translators", stream_translators),
    ("responses", responses),
    ("config", config),
];

/// The SSE parser on `data` split at a point chosen by the data: the same events as in one piece.
pub fn sse(data: &[u8]) {
    let whole = events(&[data]);
    let split = data.first().map_or(0, |b| usize::from(*b)) % (data.len() + 1);
    let (head, tail) = data.split_at(split);
    assert_eq!(whole, events(&[head, tail]), "the events depend on where the stream was split");
}

fn events(chunks: &[&[u8]]) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        while let Ok(Some(event)) = parser.next_event() {
            out.push((event.event.map(|e| e.to_vec()), event.data.to_vec()));
        }
    }
    parser.end_of_input();
    while let Ok(Some(event)) = parser.next_event() {
        out.push((event.event.map(|e| e.to_vec()), event.data.to_vec()));
    }
    out
}

/// An OpenAI chat request: probed, then translated for an Anthropic upstream.
pub fn chat_request(data: &[u8]) {
    if openai::probe_chat(data).is_err() {
        return;
    }
    if let Ok(request) = serde_json::from_slice::<openai::ChatRequest>(data) {
        if let Ok(translated) = crate::translate::request::openai_to_anthropic(request, "claude-fuzz", 1024) {
            let _ = serde_json::to_vec(&translated.body);
        }
    }
}

/// An Anthropic Messages request: probed, then translated for an OpenAI-compatible upstream.
pub fn messages_request(data: &[u8]) {
    if anthropic::probe_messages(data).is_err() {
        return;
    }
    if let Ok(request) = serde_json::from_slice::<anthropic::MessagesRequest>(data) {
        if let Ok(translated) = crate::translate::request::anthropic_to_openai(request, "o3-fuzz") {
            let _ = serde_json::to_vec(&translated.body);
        }
    }
}

/// Upstream SSE bytes through each of the four stream translators.
pub fn stream_translators(data: &[u8]) {
    for (upstream, caller) in [
        (Protocol::OpenAi, Protocol::OpenAi),
        (Protocol::Anthropic, Protocol::Anthropic),
        (Protocol::Anthropic, Protocol::OpenAi),
        (Protocol::OpenAi, Protocol::Anthropic),
    ] {
        let mut translator = StreamTranslator::new(upstream, caller, true).with_reasoning(true);
        let mut parser = SseParser::new();
        parser.push(data);
        parser.end_of_input();
        let mut out = BytesMut::new();
        let estimate = |_: &str| crate::api::Usage::default();
        while let Ok(Some(event)) = parser.next_event() {
            if translator.on_event(&event, &mut out, &estimate).is_err() {
                break;
            }
        }
    }
}

/// A complete upstream answer through both response translators and probes.
pub fn responses(data: &[u8]) {
    let _ = crate::translate::response::anthropic_to_openai(data);
    let _ = crate::translate::response::openai_to_anthropic(data, true);
    let _ = crate::translate::response::probe_openai(data);
    let _ = crate::translate::response::probe_anthropic(data);
}

/// A config file: parsed and, when it parses, validated.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = crate::config::Config::parse(text) {
        let _ = config.validate();
    }
}
