//! Local token counting with tiktoken-rs: used when a provider reports no usage (the result is marked
//! estimated), for `count_tokens` without an Anthropic upstream, and for context-window checks.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tollgate_consensus::resources::TokenEncoding;

use crate::api::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k,
    Cl100k,
}

impl Encoding {
    /// The configured encoding, else a guess from the model name: GPT-4o/4.1/5 and o-series use o200k,
    /// everything else (older GPTs, Claude, open models) is approximated with cl100k.
    pub fn for_model(model: &str, configured: Option<TokenEncoding>) -> Encoding {
        match configured {
            Some(TokenEncoding::O200kBase) => return Encoding::O200k,
            Some(TokenEncoding::Cl100kBase) => return Encoding::Cl100k,
            None => {}
        }
        let model = model.to_ascii_lowercase();
        let o200k = ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss"];
        if o200k.iter().any(|prefix| model.starts_with(prefix)) {
            Encoding::O200k
        } else {
            Encoding::Cl100k
        }
    }

    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        let bpe = match self {
            Encoding::O200k => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        };
        bpe.count_ordinary(text) as u64
    }
}

/// Loads both vocabularies on a background thread so the first estimate on the request path is cheap.
pub fn warm_up() {
    let _ = std::thread::Builder::new().name("tokenizer-warmup".into()).spawn(|| {
        Encoding::O200k.count("warm up");
        Encoding::Cl100k.count("warm up");
    });
}

/// Most tokens one image, audio, document or file part is assumed to cost. Its bytes do not bound it (an
/// image by URL is a few bytes; providers bill images by pixels): Claude caps an image at ~1,600 tokens,
/// GPT-4o/4.1 high detail at ~1,500–2,500, a PDF page costs ~1,500–3,000. Parts that cost more (long PDFs
/// by URL; gpt-4o-mini, which bills images at ~33× the tokens at a lower price) can overrun a reservation:
/// the overrun is charged to the ledger when the provider reports it (docs/ARCHITECTURE.md, "Budget invariants").
pub const MEDIA_PART_TOKENS: u64 = 6_000;

/// Keys that open a media part in either protocol: OpenAI `image_url`, `input_audio`, `file`; Anthropic
/// image and document blocks carry a `source`.
const MEDIA_KEYS: [&[u8]; 4] = [b"\"image_url\"", b"\"input_audio\"", b"\"file\"", b"\"source\""];

/// Counts media parts in a request body without parsing it: occurrences of a media key used as a key (the
/// next non-blank byte is `:`). A string value that merely equals a key name is not counted; a tool schema
/// with a property of that name is (an over-count only makes the reservation larger).
pub fn media_parts(body: &[u8]) -> u64 {
    let mut parts = 0;
    for key in MEDIA_KEYS {
        for at in memchr::memmem::find_iter(body, key) {
            let rest = &body[at + key.len()..];
            if rest.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b':') {
                parts += 1;
            }
        }
    }
    parts
}

/// A free upper bound on a chat request's input tokens: every byte-level BPE token covers at least one
/// byte, so the whole body's length bounds the text of every field the provider tokenizes (messages,
/// system, tools, response format), plus per-message overhead and [`MEDIA_PART_TOKENS`] per media part.
pub fn chat_input_bound(body: &[u8], message_count: u64) -> u64 {
    (body.len() as u64)
        .saturating_add(TOKENS_PER_MESSAGE.saturating_mul(message_count))
        .saturating_add(TOKENS_PER_REPLY)
        .saturating_add(MEDIA_PART_TOKENS.saturating_mul(media_parts(body)))
}

/// Tokens a chat format adds per message (role markers) and per reply, as OpenAI documents them.
const TOKENS_PER_MESSAGE: u64 = 4;
const TOKENS_PER_REPLY: u64 = 3;

/// Counts the prompt of an OpenAI or Anthropic request body: every string in `messages`, `system` and
/// `tools` except structural ones (`role`, `type`, ids), plus per-message overhead.
pub fn count_prompt(encoding: Encoding, body: &[u8]) -> u64 {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let mut text = String::new();
    let mut messages = 0u64;
    for field in ["system", "messages", "tools", "functions", "tool_choice", "response_format", "input"] {
        if let Some(part) = value.get(field) {
            if field == "messages" {
                messages = part.as_array().map_or(0, |m| m.len() as u64);
            }
            collect_text(part, &mut text);
        }
    }
    encoding.count(&text) + messages * TOKENS_PER_MESSAGE + TOKENS_PER_REPLY
}

fn collect_text(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|item| collect_text(item, out)),
        Value::Object(map) => {
            for (key, item) in map {
                if matches!(
                    key.as_str(),
                    "role" | "type" | "id" | "tool_call_id" | "tool_use_id" | "media_type" | "data" | "url"
                ) {
                    continue;
                }
                collect_text(item, out);
            }
        }
        _ => {}
    }
}

/// Prompts at least this large are counted on the blocking pool, one at a time, never on a runtime worker:
/// tokenizing costs ~0.4 µs a byte (a 10 MB prompt ~4 s), and the runtime also serves health checks,
/// every other request and Raft.
const COUNT_INLINE_MAX_BYTES: usize = 64 * 1024;

fn counting_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(1))
}

/// [`count_prompt`] for the request path: small prompts inline, large ones on the blocking pool behind a
/// semaphore (so a few huge prompts cannot take every core). If counting fails, the answer is `u64::MAX`
/// (nothing fits), never a small number.
pub async fn count_prompt_off_reactor(encoding: Encoding, body: &Bytes) -> u64 {
    if body.len() < COUNT_INLINE_MAX_BYTES {
        return count_prompt(encoding, body);
    }
    let Ok(_permit) = counting_slots().acquire().await else {
        return u64::MAX;
    };
    let body = body.clone();
    tokio::task::spawn_blocking(move || count_prompt(encoding, &body)).await.unwrap_or(u64::MAX)
}

/// Estimates usage for a request whose provider reported none. Counting is deferred to the end of the
/// request, so the common case (usage reported) costs nothing.
#[derive(Clone)]
pub struct UsageEstimator {
    pub encoding: Encoding,
    pub request_body: Bytes,
}

impl UsageEstimator {
    /// Runs where a stream ends (possibly in a drop on a runtime worker): a prompt too large to count
    /// cheaply is estimated at a quarter of its bytes (marked estimated, like every local count).
    pub fn estimate(&self, output_text: &str) -> Usage {
        let input_tokens = if self.request_body.len() < COUNT_INLINE_MAX_BYTES {
            count_prompt(self.encoding, &self.request_body)
        } else {
            self.request_body.len() as u64 / 4
        };
        Usage {
            input_tokens,
            output_tokens: self.encoding.count(output_text),
            cached_input_tokens: 0,
            reasoning_tokens: 0,
            estimated: true,
        }
    }
}

pub type SharedEstimator = Arc<UsageEstimator>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_bound_covers_tools_and_media_parts() {
        let plain = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(media_parts(plain), 0);
        let tools = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f","description":"a long description of the tool"}}]}"#;
        assert!(chat_input_bound(tools, 1) > count_prompt(Encoding::O200k, tools), "tool definitions are bounded");
        let images =
            br#"{"messages":[{"role":"user","content":[{"type": "image_url", "image_url" : {"url":"https://x/y.png"}},
            {"type":"image","source":{"type":"url","url":"https://x/z.png"}},{"type":"text","text":""image_url""}]}]}"#;
        assert_eq!(media_parts(images), 2, "keys count, a string equal to a key name does not");
        assert!(chat_input_bound(images, 1) >= 2 * MEDIA_PART_TOKENS);
    }

    #[test]
    fn picks_encodings_by_model_family() {
        assert_eq!(Encoding::for_model("gpt-4o-mini", None), Encoding::O200k);
        assert_eq!(Encoding::for_model("gpt-3.5-turbo", None), Encoding::Cl100k);
        assert_eq!(Encoding::for_model("claude-3-5-haiku", Some(TokenEncoding::O200kBase)), Encoding::O200k);
    }

    #[test]
    fn counts_prompt_text_not_json_structure() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}]}"#;
        let count = count_prompt(Encoding::O200k, body);
        // "Hello world\n" is 3 tokens, plus 4 per message and 3 for the reply.
        assert_eq!(count, 3 + 4 + 3);
        assert_eq!(Encoding::O200k.count("Hello world"), 2);
    }
}
