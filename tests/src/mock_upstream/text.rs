//! Deterministic text helpers shared by both API flavours: reply splitting,
//! token counting and the reply/stop planning logic.
//!
//! Token counting rules (documented contract for tests):
//! * input tokens  = ceil(total UTF-8 bytes of all message text content
//!   (+ the system prompt) / 4) + 3 per message, minimum 1. "Text content" is
//!   a string `content`, the `text` of content blocks / parts, and (recursively)
//!   the `content` of Anthropic `tool_result` blocks. Tool_use inputs and OpenAI
//!   `tool_calls` are not counted. Like the real APIs, the mock also bills the
//!   request's tool definitions (ceil(bytes of the `tools` JSON / 4)) and
//!   [`IMAGE_TOKENS`] per image part (OpenAI `image_url`, Anthropic `image`).
//! * output tokens = number of content pieces generated: word pieces of the
//!   reply text (see [`pieces`]), or for a tool call the number of pieces the
//!   arguments string is split into (see [`split_args`]); OpenAI `n` choices
//!   each generate that many.

use serde_json::Value;

use super::Script;

/// Default assistant text when the script has no `reply`. It is a fixed string
/// (it does not depend on the request) and splits into 12 pieces.
pub const DEFAULT_REPLY: &str = "Hello from the mock upstream! This is a deterministic answer.";

/// Reply used for OpenAI `response_format` json_object / json_schema requests.
pub const JSON_REPLY: &str = "{\"answer\": \"mock\"}";

/// Split text into "word pieces": each piece is an optional run of leading
/// whitespace followed by either a run of word characters or a single ASCII
/// punctuation character. `"Hello world!"` -> `["Hello", " world", "!"]`.
/// Concatenating the pieces always yields the original text.
pub fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has_body = false;
    let mut body_is_punct = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if has_body {
                out.push(std::mem::take(&mut cur));
                has_body = false;
            }
            cur.push(c);
        } else if c.is_ascii_punctuation() {
            if has_body {
                out.push(std::mem::take(&mut cur));
            }
            cur.push(c);
            has_body = true;
            body_is_punct = true;
        } else {
            if has_body && body_is_punct {
                out.push(std::mem::take(&mut cur));
            }
            cur.push(c);
            has_body = true;
            body_is_punct = false;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Split a tool-call arguments string into 3 pieces (fewer if it is shorter
/// than 3 characters), on char boundaries. Empty arguments give one empty piece.
pub fn split_args(args: &str) -> Vec<String> {
    let chars: Vec<char> = args.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    let n = chars.len().min(3);
    let base = chars.len() / n;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let end = if i + 1 == n { chars.len() } else { start + base };
        out.push(chars[start..end].iter().collect());
        start = end;
    }
    out
}

/// ceil(bytes / 4)
pub fn bytes_to_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

/// UTF-8 bytes of the text inside a `content` value (string, or array of
/// blocks/parts).
pub fn content_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(block_bytes).sum(),
        _ => 0,
    }
}

fn block_bytes(b: &Value) -> usize {
    match b {
        Value::String(s) => s.len(),
        Value::Object(o) => {
            let text = o.get("text").and_then(Value::as_str).map_or(0, str::len);
            // tool_result blocks carry nested content
            let nested = if o.get("type").and_then(Value::as_str) == Some("tool_result") {
                o.get("content").map_or(0, content_bytes)
            } else {
                0
            };
            text + nested
        }
        _ => 0,
    }
}

/// Tokens billed per image part, whatever its size (real APIs bill by pixels: ~85–1,600).
pub const IMAGE_TOKENS: u64 = 1_000;

fn count_images(v: &Value) -> u64 {
    match v {
        Value::Array(items) => items.iter().map(count_images).sum(),
        Value::Object(o) => {
            let own = u64::from(matches!(o.get("type").and_then(Value::as_str), Some("image_url" | "image")));
            own + o.values().map(count_images).sum::<u64>()
        }
        _ => 0,
    }
}

/// Input tokens the request is billed: its messages and system prompt (see [`input_tokens`]), tool
/// definitions and image parts.
pub fn billed_input_tokens(body: &Value, messages: &[Value], system: Option<&Value>) -> u64 {
    let tools = body.get("tools").filter(|t| !t.is_null()).map_or(0, |t| bytes_to_tokens(t.to_string().len()));
    let images: u64 = messages.iter().map(|m| count_images(m.get("content").unwrap_or(&Value::Null))).sum();
    input_tokens(messages, system) + tools + images * IMAGE_TOKENS
}

/// Input tokens for a request with the given messages and optional system prompt.
pub fn input_tokens(messages: &[Value], system: Option<&Value>) -> u64 {
    let mut bytes = system.map_or(0, content_bytes);
    for m in messages {
        bytes += m.get("content").map_or(0, content_bytes);
    }
    (bytes_to_tokens(bytes) + 3 * messages.len() as u64).max(1)
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// natural end ("stop" / "end_turn")
    Stop,
    /// max_tokens hit ("length" / "max_tokens")
    Length,
    /// a stop sequence matched (OpenAI reports "stop", Anthropic "stop_sequence")
    StopSequence,
    /// tool call ("tool_calls" / "tool_use")
    ToolCalls,
}

/// What the mock "generates" for one request.
#[derive(Clone, Debug)]
pub enum Output {
    Text { pieces: Vec<String>, finish: Finish, stop_sequence: Option<String> },
    Tool { name: String, arguments: String, pieces: Vec<String> },
}

impl Output {
    /// Output tokens = number of pieces.
    pub fn tokens(&self) -> u64 {
        match self {
            Output::Text { pieces, .. } | Output::Tool { pieces, .. } => pieces.len() as u64,
        }
    }

    pub fn finish(&self) -> Finish {
        match self {
            Output::Text { finish, .. } => *finish,
            Output::Tool { .. } => Finish::ToolCalls,
        }
    }
}

/// Decide the output for a request.
/// * `script.tool_call` wins over text.
/// * text = `script.reply`, else `JSON_REPLY` when `json_mode`, else `DEFAULT_REPLY`.
/// * the text is cut before the earliest matching stop sequence (if any);
/// * then truncated to `max_tokens` pieces (finish = Length);
/// * `script.finish_max_tokens` forces finish = Length without shortening further.
pub fn plan_output(script: &Script, json_mode: bool, max_tokens: Option<u64>, stops: &[String]) -> Output {
    if let Some((name, arguments)) = &script.tool_call {
        return Output::Tool { name: name.clone(), arguments: arguments.clone(), pieces: split_args(arguments) };
    }
    let text: &str = match &script.reply {
        Some(r) => r,
        None if json_mode => JSON_REPLY,
        None => DEFAULT_REPLY,
    };
    let mut cut: Option<(usize, &String)> = None;
    for s in stops.iter().filter(|s| !s.is_empty()) {
        if let Some(pos) = text.find(s.as_str()) {
            if cut.is_none_or(|(p, _)| pos < p) {
                cut = Some((pos, s));
            }
        }
    }
    let (text, mut finish, mut stop_sequence) = match cut {
        Some((pos, s)) => (&text[..pos], Finish::StopSequence, Some(s.clone())),
        None => (text, Finish::Stop, None),
    };
    let mut ps = pieces(text);
    if let Some(max) = max_tokens {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if ps.len() > max {
            ps.truncate(max);
            finish = Finish::Length;
            stop_sequence = None;
        }
    }
    if script.finish_max_tokens {
        finish = Finish::Length;
        stop_sequence = None;
    }
    Output::Text { pieces: ps, finish, stop_sequence }
}

/// Stop sequences from a JSON value that is a string or an array of strings.
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_roundtrip() {
        assert_eq!(pieces("Hello world!"), vec!["Hello", " world", "!"]);
        assert_eq!(pieces(DEFAULT_REPLY).len(), 12);
        assert_eq!(pieces(DEFAULT_REPLY).concat(), DEFAULT_REPLY);
        let odd = "  a, b!!  c d  ";
        assert_eq!(pieces(odd).concat(), odd);
        assert!(pieces("").is_empty());
    }

    #[test]
    fn args_split() {
        let a = "{\"city\":\"Paris\"}";
        let p = split_args(a);
        assert_eq!(p.len(), 3);
        assert_eq!(p.concat(), a);
        assert_eq!(split_args("{}"), vec!["{", "}"]);
    }
}
