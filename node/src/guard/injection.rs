//! The prompt-injection detector: fold the text (`normalize.rs`), run the rule table (`injection_rules.rs`)
//! over it and over any encoded payload found in it (`decode.rs`), count the kinds of jailbreak talk in it
//! (`vocabulary.rs`), and combine the rules that matched into a score in [0, 1].
//!
//! Everything is local and allocation-light; the rules are compiled once per process and shared by every
//! detector. A verdict names each rule that matched with the code-point span of its first match in the
//! scanned text, so a block message or `guard scan` can point at it.

use std::sync::{Arc, LazyLock};

use regex::{Regex, RegexSet};
use serde::Serialize;

use super::config::{GuardConfigError, GuardrailConfig, DEFAULT_INJECTION_THRESHOLD};
use super::decode::{self, Encoding};
use super::injection_rules::{signal, RuleSpec, RULES};
use super::normalize::Normalized;
use super::vocabulary::{vocabulary_weight, CUE_KINDS};

/// Scores text for prompt injection against a threshold.
#[derive(Clone)]
pub struct InjectionDetector {
    rules: Arc<CompiledRules>,
    threshold: f32,
}

/// The result of scanning one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InjectionVerdict {
    /// In [0, 1]: `1 - Π(1 - weight)` over the distinct rules that matched.
    pub score: f32,
    /// `score >= threshold`.
    pub flagged: bool,
    /// One entry per distinct rule, in order of first match.
    pub matches: Vec<RuleMatch>,
}

/// A rule that matched, and where (code points of the scanned text, end exclusive).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleMatch {
    pub rule: &'static str,
    pub start: usize,
    pub end: usize,
    #[serde(skip)]
    pub weight: f32,
}

struct CompiledRules {
    rules: Vec<(&'static RuleSpec, Regex)>,
    /// One pattern per kind of jailbreak talk (`vocabulary.rs`), matched in one pass.
    vocabulary: RegexSet,
}

static COMPILED: LazyLock<Result<Arc<CompiledRules>, String>> = LazyLock::new(|| {
    let rules = RULES
        .iter()
        .map(|spec| {
            Regex::new(&ascii_word_boundaries(spec.pattern))
                .map(|regex| (spec, regex))
                .map_err(|err| format!("injection rule {}: {err}", spec.name))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let vocabulary = RegexSet::new(CUE_KINDS.iter().map(|kind| ascii_word_boundaries(kind.pattern)))
        .map_err(|err| format!("jailbreak vocabulary: {err}"))?;
    Ok(Arc::new(CompiledRules { rules, vocabulary }))
});

/// `\b` as ASCII word boundaries: Unicode ones make the regex engine give up its fast DFA on non-ASCII text,
/// and folded text is ASCII wherever a rule can match. `\w` likewise.
fn ascii_word_boundaries(pattern: &str) -> String {
    pattern.replace(r"\b", r"(?-u:\b)").replace(r"\w", "[0-9a-z_]")
}

impl InjectionDetector {
    /// A detector flagging at `threshold` (in [0, 1]).
    pub fn new(threshold: f32) -> Result<Self, GuardConfigError> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(GuardConfigError(format!("threshold must be within [0, 1], got {threshold}")));
        }
        let rules = COMPILED.as_ref().map_err(|err| GuardConfigError(err.clone()))?.clone();
        Ok(InjectionDetector { rules, threshold })
    }

    /// The detector a `kind = "injection"` guardrail describes.
    pub fn from_config(config: &GuardrailConfig) -> Result<Self, GuardConfigError> {
        config.validate()?;
        Self::new(config.effective_threshold())
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Scans one text (a message, a tool result). Cost is linear in its length.
    pub fn scan(&self, text: &str) -> InjectionVerdict {
        let folded = Normalized::new(text);
        let mut matches = Vec::new();
        self.run_rules(&folded, None, &mut matches);
        obfuscation_signals(&folded, &mut matches);
        self.vocabulary_signal(&folded, &mut matches);
        for payload in decode::payloads(text) {
            let before = matches.len();
            self.run_rules(&Normalized::new(&payload.text), Some(payload.span), &mut matches);
            if matches.len() > before {
                let rule = encoding_rule(payload.encoding);
                let (start, end) = payload.span;
                push_distinct(&mut matches, RuleMatch { rule, start, end, weight: signal::ENCODED_INSTRUCTION });
            }
        }
        let score = combine(&matches);
        InjectionVerdict { score, flagged: score >= self.threshold && !matches.is_empty(), matches }
    }

    /// `role.jailbreak_vocabulary`, over the whole text, when it holds several kinds of jailbreak talk.
    fn vocabulary_signal(&self, folded: &Normalized, matches: &mut Vec<RuleMatch>) {
        let kinds = self.rules.vocabulary.matches(&folded.text).iter().count();
        if let Some(weight) = vocabulary_weight(kinds) {
            let (start, end) = folded.original_span(0..folded.text.len());
            push_distinct(matches, RuleMatch { rule: signal::JAILBREAK_VOCABULARY, start, end, weight });
        }
    }

    /// Runs every rule over `folded`; with `span`, matches are reported at that span (a decoded payload's).
    fn run_rules(&self, folded: &Normalized, span: Option<(usize, usize)>, matches: &mut Vec<RuleMatch>) {
        for (spec, regex) in &self.rules.rules {
            if let Some(found) = regex.find(&folded.text) {
                let (start, end) = span.unwrap_or_else(|| folded.original_span(found.range()));
                let mention = quoted_mention(&folded.text, found.range());
                let weight = if mention { spec.weight * signal::QUOTED_MENTION } else { spec.weight };
                push_distinct(matches, RuleMatch { rule: spec.name, start, end, weight });
            }
        }
    }
}

impl Default for InjectionDetector {
    /// The default-threshold detector; falls back to an empty rule set only if the built-in rules failed to
    /// compile, which the unit tests rule out.
    fn default() -> Self {
        Self::new(DEFAULT_INJECTION_THRESHOLD).unwrap_or_else(|_| InjectionDetector {
            rules: Arc::new(CompiledRules { rules: Vec::new(), vocabulary: RegexSet::empty() }),
            threshold: DEFAULT_INJECTION_THRESHOLD,
        })
    }
}

impl InjectionVerdict {
    /// The distinct rule names, in order of first match.
    pub fn rules(&self) -> Vec<&'static str> {
        self.matches.iter().map(|found| found.rule).collect()
    }
}

/// Keeps one match per rule: the first, with the highest weight seen.
fn push_distinct(matches: &mut Vec<RuleMatch>, found: RuleMatch) {
    match matches.iter_mut().find(|existing| existing.rule == found.rule) {
        Some(existing) => existing.weight = existing.weight.max(found.weight),
        None => matches.push(found),
    }
}

/// Whether `range` of `text` is exactly a quoted phrase: a quote mark right before and right after it.
fn quoted_mention(text: &str, range: std::ops::Range<usize>) -> bool {
    const QUOTES: &[char] = &['"', '\'', '`', '“', '”', '‘', '’', '«', '»'];
    let before = text[..range.start].trim_end_matches(' ').chars().next_back();
    let after = text[range.end..].trim_start_matches(' ').chars().next();
    before.is_some_and(|c| QUOTES.contains(&c)) && after.is_some_and(|c| QUOTES.contains(&c))
}

/// Noisy-OR over the rules that matched, where only the strongest rule of each family counts fully and
/// further rules of the same family count at [`signal::SAME_FAMILY`] of their weight: cues of one kind
/// (three role-play phrasings) are correlated, cues of different kinds (a persona and a prompt-leak
/// request) are not.
fn combine(matches: &[RuleMatch]) -> f32 {
    let family = |rule: &str| rule.split('.').next().unwrap_or(rule).to_string();
    let mut weights: Vec<(String, f32)> =
        matches.iter().map(|found| (family(found.rule), found.weight.clamp(0.0, 1.0))).collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut miss = 1.0f32;
    for (index, (name, weight)) in weights.iter().enumerate() {
        let strongest = index == 0 || weights[index - 1].0 != *name;
        miss *= 1.0 - if strongest { *weight } else { weight * signal::SAME_FAMILY };
    }
    ((1.0 - miss) * 1000.0).round() / 1000.0
}

fn obfuscation_signals(folded: &Normalized, matches: &mut Vec<RuleMatch>) {
    let whole = folded.original_span(0..folded.text.len());
    let mut add = |(rule, weight): (&'static str, f32)| {
        push_distinct(matches, RuleMatch { rule, start: whole.0, end: whole.1, weight });
    };
    if folded.tag_chars > 0 {
        add(signal::TAG_CHARS);
    }
    if folded.invisible >= 10 {
        add(signal::MANY_INVISIBLE_CHARS);
    } else if folded.invisible >= 3 {
        add(signal::INVISIBLE_CHARS);
    }
    match folded.mixed_script_words {
        0 => {}
        1 => add(signal::HOMOGLYPHS),
        _ => add(signal::MANY_HOMOGLYPHS),
    }
    if folded.styled_chars >= 24 {
        add(signal::MANY_STYLED_LETTERS);
    } else if folded.styled_chars >= 8 {
        add(signal::STYLED_LETTERS);
    }
}

fn encoding_rule(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Base64 => "obfuscation.base64",
        Encoding::Hex => "obfuscation.hex",
        Encoding::Binary => "obfuscation.binary",
        Encoding::Percent => "obfuscation.percent_encoding",
        Encoding::SpacedLetters => "obfuscation.spaced_letters",
        Encoding::Rot13 => "obfuscation.rot13",
        Encoding::Reversed => "obfuscation.reversed",
    }
}

#[cfg(test)]
#[path = "injection_tests.rs"]
mod tests;
