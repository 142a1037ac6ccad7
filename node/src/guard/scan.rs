//! `tollgate guard scan --kind injection|pii [--config FILE] [--name NAME]`: the gateway's detectors over
//! JSON lines, so a guardrail configuration can be tried offline (CONTRACT.md, "CLI").
//!
//! Input: one JSON object per line with a `text` string (other fields are ignored, except `id`, which is
//! echoed). Output: one JSON line per input line, in order —
//! injection: `{"score", "flagged", "rules", "matches": [{"rule", "start", "end"}]}`;
//! pii: `{"entities": [{"type", "start", "end"}], "redacted"}`; offsets are Unicode code points, end
//! exclusive. A line that is not such an object gets `{"error": "..."}` and the command exits non-zero
//! after the last line. Blank lines are skipped.

use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::{GuardrailConfig, GuardrailKind};
use super::injection::InjectionDetector;
use super::pii::{to_code_points, PiiDetector};

/// One configured detector, ready to scan lines.
pub enum Scanner {
    Injection(InjectionDetector),
    Pii(PiiDetector),
}

/// What a run saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanSummary {
    pub lines: usize,
    pub errors: usize,
    /// Injection: lines flagged; pii: lines with at least one entity.
    pub hits: usize,
}

#[derive(Deserialize)]
struct InputLine {
    text: String,
    #[serde(default)]
    id: Option<Value>,
}

impl Scanner {
    /// The detector for `kind`: from the named (or first) guardrail of that kind in `config`, else the
    /// defaults (threshold 0.4; every entity type, `[REDACTED:TYPE]`).
    pub fn new(kind: GuardrailKind, config: Option<&Path>, name: Option<&str>) -> anyhow::Result<Scanner> {
        let guardrail = match config {
            Some(path) => Some(pick_guardrail(&read_guardrails(path)?, kind, name, path)?),
            None if name.is_some() => bail!("--name needs --config"),
            None => None,
        };
        let fallback = GuardrailConfig {
            name: "default".into(),
            kind,
            action: None,
            threshold: None,
            entities: None,
            replacement: None,
        };
        let guardrail = guardrail.unwrap_or(fallback);
        Ok(match kind {
            GuardrailKind::Injection => Scanner::Injection(InjectionDetector::from_config(&guardrail)?),
            GuardrailKind::Pii => Scanner::Pii(PiiDetector::from_config(&guardrail)?),
        })
    }

    /// The output object for one text.
    pub fn scan_text(&self, text: &str) -> (Value, bool) {
        match self {
            Scanner::Injection(detector) => {
                let verdict = detector.scan(text);
                let out = json!({
                    "score": verdict.score,
                    "flagged": verdict.flagged,
                    "rules": verdict.rules(),
                    "matches": verdict.matches,
                });
                (out, verdict.flagged)
            }
            Scanner::Pii(detector) => {
                let redacted = detector.redact(text);
                let entities = to_code_points(text, &redacted.entities);
                let hit = !entities.is_empty();
                (json!({ "entities": entities, "redacted": redacted.text }), hit)
            }
        }
    }
}

/// The `[[guardrails]]` of a TOML file; any other section (a whole node config) is ignored.
fn read_guardrails(path: &Path) -> anyhow::Result<Vec<GuardrailConfig>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(guardrails) = table.get("guardrails") else {
        bail!("{} has no [[guardrails]]", path.display());
    };
    let guardrails: Vec<GuardrailConfig> =
        guardrails.clone().try_into().with_context(|| format!("{}: guardrails", path.display()))?;
    for guardrail in &guardrails {
        guardrail.validate().with_context(|| path.display().to_string())?;
    }
    Ok(guardrails)
}

fn pick_guardrail(
    guardrails: &[GuardrailConfig],
    kind: GuardrailKind,
    name: Option<&str>,
    path: &Path,
) -> anyhow::Result<GuardrailConfig> {
    let found = match name {
        Some(name) => guardrails.iter().find(|guardrail| guardrail.name == name),
        None => guardrails.iter().find(|guardrail| guardrail.kind == kind),
    };
    match found {
        Some(guardrail) if guardrail.kind == kind => Ok(guardrail.clone()),
        Some(guardrail) => bail!("guardrail \"{}\" is kind = \"{}\", not {kind}", guardrail.name, guardrail.kind),
        None => match name {
            Some(name) => bail!("{} has no guardrail named \"{name}\"", path.display()),
            None => bail!("{} has no guardrail of kind = \"{kind}\"", path.display()),
        },
    }
}

/// Scans every line of `input` into `output`. Fails after the last line if any line was unusable.
pub fn run(scanner: &Scanner, input: impl BufRead, output: impl Write) -> anyhow::Result<ScanSummary> {
    let mut output = BufWriter::new(output);
    let mut summary = ScanSummary::default();
    for (index, line) in input.lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        let out = match serde_json::from_str::<InputLine>(&line) {
            Ok(parsed) => {
                let (mut out, hit) = scanner.scan_text(&parsed.text);
                summary.hits += usize::from(hit);
                if let (Some(id), Some(object)) = (parsed.id, out.as_object_mut()) {
                    object.insert("id".into(), id);
                }
                out
            }
            Err(err) => {
                summary.errors += 1;
                json!({ "error": format!("line {}: expected {{\"text\": \"...\"}}: {err}", index + 1) })
            }
        };
        serde_json::to_writer(&mut output, &out)?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    if summary.errors > 0 {
        bail!("{} of {} lines could not be scanned", summary.errors, summary.lines);
    }
    Ok(summary)
}

/// The CLI entry: stdin to stdout.
pub fn run_stdio(kind: GuardrailKind, config: Option<&Path>, name: Option<&str>) -> anyhow::Result<()> {
    let scanner = Scanner::new(kind, config, name)?;
    run(&scanner, std::io::stdin().lock(), std::io::stdout().lock()).map(|_| ())
}

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;
