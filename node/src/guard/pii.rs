//! The PII and secret detector: runs the recognizers of the configured entity types (`pii_rules.rs`),
//! resolves overlaps (a private key beats the base64 inside it, a card beats the phone-shaped digits of it),
//! and rewrites what it found with the configured replacement.
//!
//! [`PiiDetector::find`] reports byte ranges (for rewriting); [`PiiDetector::entities`] reports Unicode
//! code points (for `guard scan` and anything else that leaves the process). `stream.rs`'s `StreamRedactor`
//! applies the same detector to text arriving in pieces.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::config::{EntityKind, GuardConfigError, GuardrailConfig, Replacement};
use super::decode::CharIndex;
use super::pii_rules::{Recognizer, RECOGNIZERS};

/// Finds and rewrites PII and secrets of a configured set of types.
#[derive(Clone)]
pub struct PiiDetector {
    inner: Arc<Inner>,
}

struct Inner {
    kinds: Vec<EntityKind>,
    replacement: Replacement,
    recognizers: &'static [Recognizer],
}

/// One entity: its type and byte range in the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub kind: EntityKind,
    pub range: Range<usize>,
}

/// An entity with Unicode code-point offsets (end exclusive), as `guard scan` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntitySpan {
    #[serde(rename = "type")]
    pub kind: EntityKind,
    pub start: usize,
    pub end: usize,
}

/// A redacted text and what was replaced in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    pub text: String,
    /// Byte ranges in the original text.
    pub entities: Vec<Entity>,
}

impl PiiDetector {
    /// A detector for `kinds` (all of them when empty) rewriting with `replacement`.
    pub fn new(kinds: &[EntityKind], replacement: Replacement) -> Result<Self, GuardConfigError> {
        let recognizers = RECOGNIZERS.as_ref().map_err(|err| GuardConfigError(err.clone()))?;
        let mut kinds = if kinds.is_empty() { EntityKind::ALL.to_vec() } else { kinds.to_vec() };
        kinds.sort();
        kinds.dedup();
        Ok(PiiDetector { inner: Arc::new(Inner { kinds, replacement, recognizers }) })
    }

    /// The detector a `kind = "pii"` guardrail describes.
    pub fn from_config(config: &GuardrailConfig) -> Result<Self, GuardConfigError> {
        config.validate()?;
        Self::new(&config.effective_entities(), config.replacement.unwrap_or_default())
    }

    pub fn kinds(&self) -> &[EntityKind] {
        &self.inner.kinds
    }

    pub fn replacement(&self) -> Replacement {
        self.inner.replacement
    }

    /// The entities in `text`, sorted, without overlaps, as byte ranges.
    pub fn find(&self, text: &str) -> Vec<Entity> {
        let mut candidates = Vec::new();
        for recognizer in self.inner.recognizers {
            if self.inner.kinds.contains(&recognizer.kind) {
                recognizer.find(text, &mut candidates);
            }
        }
        resolve_overlaps(candidates)
    }

    /// The entities in `text` with code-point offsets.
    pub fn entities(&self, text: &str) -> Vec<EntitySpan> {
        to_code_points(text, &self.find(text))
    }

    /// `text` with every entity replaced.
    pub fn redact(&self, text: &str) -> Redacted {
        let entities = self.find(text);
        let text = self.rewrite(text, &entities);
        Redacted { text, entities }
    }

    /// `text` with `entities` (sorted byte ranges of it) replaced.
    pub fn rewrite(&self, text: &str, entities: &[Entity]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut position = 0;
        for entity in entities {
            out.push_str(&text[position..entity.range.start]);
            out.push_str(&self.replacement_for(entity.kind, &text[entity.range.clone()]));
            position = entity.range.end;
        }
        out.push_str(&text[position..]);
        out
    }

    /// What one entity becomes.
    pub fn replacement_for(&self, kind: EntityKind, value: &str) -> String {
        match self.inner.replacement {
            Replacement::Label => format!("[REDACTED:{kind}]"),
            Replacement::Hash => hash_tag(kind, Sha256::digest(value.as_bytes()).as_slice()),
            Replacement::Mask => mask(kind, value),
        }
    }
}

/// `[EMAIL:1f2e3d4c]` from a SHA-256 digest.
pub(super) fn hash_tag(kind: EntityKind, digest: &[u8]) -> String {
    let mut tag = format!("[{kind}:");
    for byte in digest.iter().take(4) {
        let _ = write!(tag, "{byte:02x}");
    }
    tag.push(']');
    tag
}

/// Kinds whose mask keeps the last four characters (enough to recognise one's own card or account).
pub(super) fn keeps_last_four(kind: EntityKind) -> bool {
    matches!(kind, EntityKind::CreditCard | EntityKind::Iban | EntityKind::Phone)
}

fn mask(kind: EntityKind, value: &str) -> String {
    let count = value.chars().count();
    let keep = if keeps_last_four(kind) && count > 8 { 4 } else { 0 };
    let mut out: String = "*".repeat(count - keep);
    out.extend(value.chars().skip(count - keep));
    out
}

/// Priority when two entities overlap: the more specific (and more sensitive) type wins.
fn priority(kind: EntityKind) -> u8 {
    match kind {
        EntityKind::PrivateKey => 9,
        EntityKind::Jwt => 8,
        EntityKind::ApiKey => 7,
        EntityKind::Secret => 6,
        EntityKind::CreditCard => 5,
        EntityKind::Iban => 4,
        EntityKind::Email => 3,
        EntityKind::IpAddress => 2,
        EntityKind::Phone => 1,
    }
}

/// Keeps the highest-priority, then longest, candidates that do not overlap an already kept one.
fn resolve_overlaps(mut candidates: Vec<(EntityKind, Range<usize>)>) -> Vec<Entity> {
    candidates.retain(|(_, range)| !range.is_empty());
    candidates.sort_by(|(a_kind, a), (b_kind, b)| {
        priority(*b_kind)
            .cmp(&priority(*a_kind))
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: Vec<Entity> = Vec::with_capacity(candidates.len());
    for (kind, range) in candidates {
        if !kept.iter().any(|entity| entity.range.start < range.end && range.start < entity.range.end) {
            kept.push(Entity { kind, range });
        }
    }
    kept.sort_by_key(|entity| entity.range.start);
    kept
}

/// Byte ranges of `text` to code points.
pub fn to_code_points(text: &str, entities: &[Entity]) -> Vec<EntitySpan> {
    let mut chars = CharIndex::new(text);
    entities
        .iter()
        .map(|entity| {
            let start = chars.at(entity.range.start);
            EntitySpan { kind: entity.kind, start, end: chars.at(entity.range.end) }
        })
        .collect()
}

#[cfg(test)]
#[path = "pii_tests.rs"]
mod tests;
