//! The two inbound API dialects and the small JSON tools the hot path uses to read them without building a
//! full DOM: a top-level object is kept as `(key, raw value)` pairs, only the fields the gateway needs are
//! typed, and a same-protocol request is re-emitted with a handful of fields rewritten.

pub mod anthropic;
pub mod openai;

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{GatewayError, GatewayResult};

pub use crate::protocol::Protocol;

/// What the gateway needs to know about a request body, validated the way the API it came in on does,
/// with everything else left raw. Each API's probe (`openai::probe_chat`, `openai::probe_embeddings`,
/// `anthropic::probe_messages`, `anthropic::probe_count_tokens`) fills the same struct.
#[derive(Debug)]
pub struct RequestProbe<'a> {
    pub object: RawObject<'a>,
    pub model: std::borrow::Cow<'a, str>,
    pub stream: bool,
    /// OpenAI callers: they asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// OpenAI `max_completion_tokens`, else `max_tokens`; Anthropic `max_tokens` (none for count_tokens).
    pub max_output_tokens: Option<u64>,
    /// Raw bytes of the prompt fields (messages and system; embeddings' input): a free upper bound on the
    /// prompt's tokens, for routing's estimates.
    pub prompt_bytes: usize,
    pub message_count: usize,
    /// Choices the provider generates, each up to the output cap (OpenAI `n`).
    pub choices: u64,
}

/// A JSON object as an ordered list of keys and unparsed values, borrowed from the request body.
#[derive(Debug, Default)]
pub struct RawObject<'a> {
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    /// Parses a request body that must be a JSON object.
    pub fn parse(body: &'a [u8]) -> GatewayResult<Self> {
        serde_json::from_slice::<RawObject<'a>>(body)
            .map_err(|err| GatewayError::invalid_request(format!("request body is not a valid JSON object: {err}")))
    }

    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        // Later duplicates win, as in most JSON parsers.
        self.fields.iter().rev().find(|(name, _)| name == key).map(|(_, value)| *value)
    }

    /// Deserializes one field; `null` and absence both give `None`; a wrong type names the field.
    pub fn field<T: Deserialize<'a>>(&self, key: &'static str) -> GatewayResult<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            Some(raw) => serde_json::from_str::<T>(raw.get())
                .map(Some)
                .map_err(|err| GatewayError::invalid_param(key, format!("invalid `{key}`: {err}"))),
        }
    }

    pub fn required<T: Deserialize<'a>>(&self, key: &'static str) -> GatewayResult<T> {
        self.field(key)?.ok_or_else(|| GatewayError::invalid_param(key, format!("missing required parameter `{key}`")))
    }

    /// Writes the object back out, replacing the values of `overrides` (added when absent) and dropping
    /// `remove`. Untouched values are copied byte for byte.
    pub fn write_with(&self, overrides: &[(&str, &str)], remove: &[&str], out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        let mut push_pair = |out: &mut Vec<u8>, key: &str, value: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            write_json_string(out, key);
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
        };
        for (key, value) in &self.fields {
            if remove.contains(&key.as_ref()) {
                continue;
            }
            let replacement = overrides.iter().find(|(name, _)| *name == key.as_ref());
            push_pair(out, key, replacement.map_or(value.get(), |(_, v)| *v));
        }
        for (key, value) in overrides {
            if self.get(key).is_none() {
                push_pair(out, key, value);
            }
        }
        out.push(b'}');
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaper is exact and fast; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<MaybeBorrowed<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    fields.push((key.0, value));
                }
                Ok(RawObject { fields })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A string borrowed from the input when it has no escapes, owned otherwise.
pub struct MaybeBorrowed<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for MaybeBorrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = MaybeBorrowed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeBorrowed(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// Token usage as the gateway meters it, independent of the protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens the provider billed, cached ones included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    /// True when the numbers come from the local tokenizer because the provider reported none.
    pub estimated: bool,
}

/// Why generation stopped, in neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    StopSequence,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn from_openai(reason: &str) -> Self {
        match reason {
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Stop,
        }
    }

    pub fn from_anthropic(reason: &str) -> Self {
        match reason {
            "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
            "tool_use" => FinishReason::ToolCalls,
            "stop_sequence" => FinishReason::StopSequence,
            "refusal" => FinishReason::ContentFilter,
            _ => FinishReason::Stop,
        }
    }

    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopSequence => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    pub fn anthropic(self) -> &'static str {
        match self {
            FinishReason::Stop => "end_turn",
            FinishReason::StopSequence => "stop_sequence",
            FinishReason::Length => "max_tokens",
            FinishReason::ToolCalls => "tool_use",
            FinishReason::ContentFilter => "refusal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_object_keeps_order_and_rewrites_fields() {
        let body = br#"{"model":"a","messages":[{"role":"user","content":"hi \"x\""}],"x-extra":{"k":[1,2]}}"#;
        let object = RawObject::parse(body).unwrap_or_default();
        assert_eq!(object.fields.len(), 3);
        let mut out = Vec::new();
        object.write_with(&[("model", "\"b\""), ("stream", "true")], &["x-extra"], &mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        assert_eq!(value["model"], "b");
        assert_eq!(value["stream"], true);
        assert_eq!(value["messages"][0]["content"], "hi \"x\"");
        assert!(value.get("x-extra").is_none());
    }

    #[test]
    fn raw_object_handles_escaped_keys_and_rejects_non_objects() {
        let object = RawObject::parse(br#"{"mo\u0064el":"a"}"#).unwrap_or_default();
        assert!(object.get("model").is_some());
        assert!(RawObject::parse(b"[1,2]").is_err());
        assert!(RawObject::parse(b"{\"a\":").is_err());
    }

    #[test]
    fn typed_fields_name_the_bad_field() {
        let object = RawObject::parse(br#"{"stream":"yes","max_tokens":null}"#).unwrap_or_default();
        let err = object.field::<bool>("stream").err().map(|e| e.message).unwrap_or_default();
        assert!(err.contains("`stream`"), "{err}");
        assert_eq!(object.field::<u32>("max_tokens").ok().flatten(), None);
        assert!(object.required::<String>("model").is_err());
    }
}
