//! Redacting text that arrives in pieces (SSE deltas) with the same result as redacting it whole.
//!
//! The redactor holds back only the tail that could still be, or still be growing into, an entity:
//! the last [`SETTLE_CHARS`] characters, extended back to the start of any entity that ends inside them.
//! Everything before that is final and emitted (in pieces of at least [`EMIT_BATCH_CHARS`]). The hold never exceeds [`MAX_HOLD_CHARS`]: an
//! entity still growing at that length (a huge JWT, a PEM block) is committed — its replacement emitted —
//! and the rest of it is dropped as it arrives, without buffering, until it ends (the PEM `END` line, or
//! the first character that cannot continue the token). `finish` flushes what is held.
//!
//! Detection runs over the last [`CONTEXT_CHARS`] characters already emitted plus the held text, so key
//! words (`password:`) and word boundaries just before a chunk boundary still count.

use sha2::{Digest, Sha256};

use super::config::{EntityKind, Replacement};
use super::pii::{hash_tag, Entity, PiiDetector};
use super::pii_rules::is_secret_char;

/// The trailing characters always held back: longer than the text any recognizer needs to see before it
/// matches (an IBAN with spaces, a card, a phone number with its key word, a PEM `BEGIN` line).
pub const SETTLE_CHARS: usize = 128;
/// The most a redactor ever holds back.
pub const MAX_HOLD_CHARS: usize = 1024;
/// Already-emitted text kept as look-behind for detection (not re-emitted).
pub const CONTEXT_CHARS: usize = 64;
/// Detection runs once this many characters beyond the settle zone have arrived, not on every small chunk:
/// output leaves in pieces of about this size, and a stream of 4-character deltas costs a scan per ~16
/// deltas instead of one per delta.
pub const EMIT_BATCH_CHARS: usize = 64;

/// Redacts one stream of text chunks; see the module docs. One per response stream:
/// `StreamRedactor::new(detector.clone())` (the detector is shared, cheap to clone).
pub struct StreamRedactor {
    detector: PiiDetector,
    pending: String,
    context: String,
    swallow: Option<Swallow>,
    found: Vec<EntityKind>,
}

/// An entity committed before its end: the rest of it is dropped as it arrives.
struct Swallow {
    kind: EntityKind,
    hasher: Option<Sha256>,
    /// JWT: how many more `.` may continue the token.
    dots_left: usize,
    /// PEM: the most recent dropped text, to find the `END` line across chunk boundaries.
    tail: String,
}

impl StreamRedactor {
    pub fn new(detector: PiiDetector) -> Self {
        StreamRedactor { detector, pending: String::new(), context: String::new(), swallow: None, found: Vec::new() }
    }

    /// Feeds a chunk; returns the text that is now final (possibly empty).
    pub fn push(&mut self, chunk: &str) -> String {
        let mut out = String::new();
        let rest = match self.swallow.take() {
            Some(swallow) => self.continue_swallow(swallow, chunk, &mut out),
            None => chunk,
        };
        if self.swallow.is_none() {
            self.pending.push_str(rest);
            if self.pending.len() >= SETTLE_CHARS + EMIT_BATCH_CHARS
                && self.held_chars() >= SETTLE_CHARS + EMIT_BATCH_CHARS
            {
                self.drain(false, &mut out);
            }
        }
        out
    }

    /// Ends the stream; returns everything still held, redacted.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        if let Some(swallow) = self.swallow.take() {
            self.end_swallow(swallow, &mut out);
        }
        self.drain(true, &mut out);
        out
    }

    /// Characters currently held back.
    pub fn held_chars(&self) -> usize {
        self.pending.chars().count()
    }

    /// The types of the entities redacted so far, in order.
    pub fn found(&self) -> &[EntityKind] {
        &self.found
    }

    /// Emits the final part of `pending`.
    fn drain(&mut self, last: bool, out: &mut String) {
        let entities = self.pending_entities();
        if last {
            self.emit(self.pending.len(), &entities, out);
            return;
        }
        let held_from = char_boundary_from_end(&self.pending, SETTLE_CHARS);
        let mut cut = held_from;
        for entity in entities.iter().filter(|entity| entity.range.end > held_from) {
            cut = cut.min(entity.range.start);
        }
        if self.pending[cut..].chars().count() > MAX_HOLD_CHARS {
            if let Some(entity) = entities.iter().find(|entity| entity.range.start == cut).cloned() {
                let complete_pem = entity.kind == EntityKind::PrivateKey
                    && find_pem_end(&self.pending[entity.range.clone()]).is_some();
                if entity.range.end == self.pending.len() && continues(entity.kind) && !complete_pem {
                    self.commit(&entity, &entities, out);
                    return;
                }
                cut = entity.range.end;
            }
        }
        self.emit(cut, &entities, out);
    }

    /// Entities touching `pending`, in its byte offsets, found with the look-behind context.
    fn pending_entities(&self) -> Vec<Entity> {
        let offset = self.context.len();
        let scanned = format!("{}{}", self.context, self.pending);
        self.detector
            .find(&scanned)
            .into_iter()
            .filter(|entity| entity.range.end > offset)
            .map(|entity| Entity {
                kind: entity.kind,
                range: entity.range.start.max(offset) - offset..entity.range.end - offset,
            })
            .collect()
    }

    /// Emits `pending[..cut]` redacted, keeps the rest.
    fn emit(&mut self, cut: usize, entities: &[Entity], out: &mut String) {
        let done: Vec<Entity> = entities.iter().filter(|entity| entity.range.end <= cut).cloned().collect();
        self.found.extend(done.iter().map(|entity| entity.kind));
        out.push_str(&self.detector.rewrite(&self.pending[..cut], &done));
        let emitted: String = self.pending.drain(..cut).collect();
        self.remember(&emitted);
    }

    /// Emits everything before `entity` and the start of its replacement, then drops the rest of it.
    fn commit(&mut self, entity: &Entity, entities: &[Entity], out: &mut String) {
        self.emit(entity.range.start, entities, out);
        let value = std::mem::take(&mut self.pending);
        self.found.push(entity.kind);
        let mut hasher = None;
        match self.detector.replacement() {
            Replacement::Label => out.push_str(&self.detector.replacement_for(entity.kind, &value)),
            Replacement::Mask => out.extend(std::iter::repeat_n('*', value.chars().count())),
            Replacement::Hash => hasher = Some(Sha256::new_with_prefix(value.as_bytes())),
        }
        let dots_left = 2usize.saturating_sub(value.matches('.').count());
        self.remember(&value);
        self.swallow = Some(Swallow { kind: entity.kind, hasher, dots_left, tail: tail_chars(&value, 96) });
    }

    /// Drops the part of `chunk` that continues the committed entity; returns what follows it.
    fn continue_swallow<'a>(&mut self, mut swallow: Swallow, chunk: &'a str, out: &mut String) -> &'a str {
        let consumed = if swallow.kind == EntityKind::PrivateKey {
            pem_end(&mut swallow, chunk)
        } else {
            token_end(&mut swallow, chunk)
        };
        let (dropped, rest) = chunk.split_at(consumed.unwrap_or(chunk.len()));
        if let Some(hasher) = swallow.hasher.as_mut() {
            hasher.update(dropped.as_bytes());
        }
        if self.detector.replacement() == Replacement::Mask {
            out.extend(std::iter::repeat_n('*', dropped.chars().count()));
        }
        self.remember(dropped);
        match consumed {
            Some(_) => self.end_swallow(swallow, out),
            None => self.swallow = Some(swallow),
        }
        rest
    }

    fn end_swallow(&mut self, swallow: Swallow, out: &mut String) {
        if let Some(hasher) = swallow.hasher {
            out.push_str(&hash_tag(swallow.kind, hasher.finalize().as_slice()));
        }
    }

    /// Keeps the last [`CONTEXT_CHARS`] characters of emitted (original) text as look-behind.
    fn remember(&mut self, emitted: &str) {
        self.context.push_str(emitted);
        let keep_from = char_boundary_from_end(&self.context, CONTEXT_CHARS);
        self.context.drain(..keep_from);
    }
}

/// Kinds that can run longer than the hold and are continued by dropping.
fn continues(kind: EntityKind) -> bool {
    matches!(
        kind,
        EntityKind::PrivateKey | EntityKind::Jwt | EntityKind::ApiKey | EntityKind::Secret | EntityKind::Email
    )
}

/// Where a token continued into `chunk` ends, if it does within it.
fn token_end(swallow: &mut Swallow, chunk: &str) -> Option<usize> {
    for (index, c) in chunk.char_indices() {
        let continues = match swallow.kind {
            EntityKind::Jwt if c == '.' && swallow.dots_left > 0 => {
                swallow.dots_left -= 1;
                true
            }
            EntityKind::Jwt | EntityKind::ApiKey => c.is_ascii_alphanumeric() || c == '_' || c == '-',
            EntityKind::Secret => is_secret_char(c),
            _ => c.is_ascii_alphanumeric() || c == '.' || c == '-',
        };
        if !continues {
            return Some(index);
        }
    }
    None
}

/// Where the PEM `END ... PRIVATE KEY-----` line ends in `chunk`, if it does (it may start in earlier chunks).
fn pem_end(swallow: &mut Swallow, chunk: &str) -> Option<usize> {
    let before = swallow.tail.len();
    swallow.tail.push_str(chunk);
    let found = find_pem_end(&swallow.tail).filter(|&end| end > before).map(|end| end - before);
    swallow.tail = tail_chars(&swallow.tail, 96);
    found
}

/// The end of the first `-----END ... PRIVATE KEY-----` (or `... PRIVATE KEY BLOCK-----`) in `text`.
fn find_pem_end(text: &str) -> Option<usize> {
    let mut search = 0;
    while let Some(found) = text[search..].find("-----END ") {
        let start = search + found + "-----END ".len();
        let line_end = text[start..].find("-----").map(|end| start + end)?;
        let label = &text[start..line_end];
        if (label.ends_with("PRIVATE KEY") || label.ends_with("PRIVATE KEY BLOCK"))
            && label.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ')
        {
            return Some(line_end + "-----".len());
        }
        search = start;
    }
    None
}

/// The byte offset where the last `count` characters of `text` begin.
fn char_boundary_from_end(text: &str, count: usize) -> usize {
    if count == 0 {
        return text.len();
    }
    text.char_indices().rev().nth(count - 1).map_or(0, |(index, _)| index)
}

fn tail_chars(text: &str, count: usize) -> String {
    text[char_boundary_from_end(text, count)..].to_string()
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
