//! Accuracy of the guardrail detectors on the labelled corpus in tests/data/guard (sources and licences in
//! its README). The `*_eval` tests score the evaluation split, print the numbers and fail below thresholds
//! set from a measurement; the detectors were tuned on the tuning split only. The `*_tune` tests hold the
//! tuning split to its own measurement (so a change that helps the evaluation split by hurting the tuning
//! split shows), and with `TOLLGATE_GUARD_VERBOSE=1` print every miss and false positive
//! (`TOLLGATE_GUARD_VERBOSE=1 cargo test -p tollgate --test guard_eval -- --nocapture`).

/// Every miss, false positive and found entity printed, for tuning.
fn verbose() -> bool {
    std::env::var("TOLLGATE_GUARD_VERBOSE").is_ok_and(|v| v == "1")
}

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use tollgate::guard::{EntityKind, EntitySpan, InjectionDetector, PiiDetector};

#[derive(Deserialize)]
struct InjectionSample {
    text: String,
    label: String,
    source: String,
    /// `in`: an injection whatever the system prompt; `context`: only an attack against a particular system
    /// prompt (asking for "the password"), reported separately.
    scope: String,
}

#[derive(Deserialize)]
struct PiiSample {
    text: String,
    entities: Vec<GoldEntity>,
}

#[derive(Deserialize)]
struct GoldEntity {
    #[serde(rename = "type")]
    kind: String,
    start: usize,
    end: usize,
}

fn corpus_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/guard").join(file)
}

fn read_lines<T: for<'de> Deserialize<'de>>(file: &str) -> Vec<T> {
    let path = corpus_path(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(index, line)| serde_json::from_str(line).unwrap_or_else(|err| panic!("{file}:{}: {err}", index + 1)))
        .collect()
}

#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    tn: usize,
    fn_: usize,
}

impl Counts {
    fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

struct InjectionReport {
    counts: Counts,
    context_caught: usize,
    context_total: usize,
    per_source: BTreeMap<String, (usize, usize)>,
}

fn score_injection(file: &str, verbose: bool) -> InjectionReport {
    let detector = InjectionDetector::default();
    let mut report =
        InjectionReport { counts: Counts::default(), context_caught: 0, context_total: 0, per_source: BTreeMap::new() };
    for sample in read_lines::<InjectionSample>(file) {
        let verdict = detector.scan(&sample.text);
        let positive = sample.label == "injection";
        let family = sample.source.split(':').take(2).collect::<Vec<_>>().join(":");
        let entry = report.per_source.entry(format!("{} {family}", sample.label)).or_default();
        entry.0 += usize::from(verdict.flagged == positive);
        entry.1 += 1;
        if sample.scope == "context" {
            report.context_total += 1;
            report.context_caught += usize::from(verdict.flagged);
            continue;
        }
        let counts = &mut report.counts;
        match (positive, verdict.flagged) {
            (true, true) => counts.tp += 1,
            (false, true) => counts.fp += 1,
            (false, false) => counts.tn += 1,
            (true, false) => counts.fn_ += 1,
        }
        if verbose && !positive && !verdict.flagged && verdict.score >= 0.25 {
            let head: String = sample.text.chars().take(140).collect::<String>().replace('\n', " ");
            println!("NEAR {:.2} {:?} [{}] {head}", verdict.score, verdict.rules(), sample.source);
        }
        if verbose && positive != verdict.flagged {
            let head = head_and_tail(&sample.text);
            let kind = if positive { "MISS" } else { "FALSE" };
            println!("{kind} {:.2} {:?} [{}] {head}", verdict.score, verdict.rules(), sample.source);
        }
    }
    report
}

/// The first and, for a long text, the last 160 characters (an injection in a document is often at its end).
fn head_and_tail(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let head: String = chars.iter().take(160).collect();
    let tail: String = chars.iter().skip(chars.len().saturating_sub(160).max(160)).collect();
    let joined = if tail.is_empty() { head } else { format!("{head} … {tail}") };
    joined.replace('\n', " ")
}

fn print_injection(split: &str, report: &InjectionReport) {
    let counts = &report.counts;
    println!("injection detector, {split} split (threshold {:.2}):", InjectionDetector::default().threshold());
    println!(
        "  precision {:.3}  recall {:.3}  F1 {:.3}  false-positive rate {:.3}   (tp {} fp {} tn {} fn {})",
        counts.precision(),
        counts.recall(),
        counts.f1(),
        counts.fpr(),
        counts.tp,
        counts.fp,
        counts.tn,
        counts.fn_
    );
    println!("  context-only attacks (not counted above): {}/{} flagged", report.context_caught, report.context_total);
    for (source, (right, total)) in &report.per_source {
        println!("    {source:<60} {right:>4}/{total:<4} correct");
    }
}

#[test]
fn injection_eval() {
    let report = score_injection("injection_eval.jsonl", false);
    print_injection("evaluation", &report);
    // Floors a little under the measurement recorded in tests/data/guard/README.md (precision 0.946,
    // recall 0.744, F1 0.833, false-positive rate 0.016 at threshold 0.30): a regression fails, noise does
    // not. The false-positive ceiling is the aim.
    let counts = &report.counts;
    assert!(counts.f1() >= 0.81, "F1 {:.3} below 0.81", counts.f1());
    assert!(counts.recall() >= 0.72, "recall {:.3} below 0.72", counts.recall());
    assert!(counts.precision() >= 0.93, "precision {:.3} below 0.93", counts.precision());
    assert!(counts.fpr() <= 0.02, "false-positive rate {:.3} above 0.02", counts.fpr());
}

#[test]
fn injection_tune() {
    let report = score_injection("injection_tune.jsonl", verbose());
    print_injection("tuning", &report);
    // Measured: precision 1.000, recall 0.830, F1 0.907, false-positive rate 0.000 (threshold 0.30).
    let counts = &report.counts;
    assert!(
        counts.f1() >= 0.89 && counts.fpr() <= 0.005,
        "tuning split: F1 {:.3}, FPR {:.3}",
        counts.f1(),
        counts.fpr()
    );
    // Threshold sweep on the tuning split: the default is the threshold with the best F1 among those with a
    // false-positive rate of at most 1 %.
    let detector = InjectionDetector::default();
    let scored: Vec<(bool, f32)> = read_lines::<InjectionSample>("injection_tune.jsonl")
        .into_iter()
        .filter(|sample| sample.scope == "in")
        .map(|sample| (sample.label == "injection", detector.scan(&sample.text).score))
        .collect();
    for step in 4..=14 {
        let threshold = step as f32 * 0.05;
        let mut counts = Counts::default();
        for &(positive, score) in &scored {
            match (positive, score >= threshold && score > 0.0) {
                (true, true) => counts.tp += 1,
                (false, true) => counts.fp += 1,
                (false, false) => counts.tn += 1,
                (true, false) => counts.fn_ += 1,
            }
        }
        println!(
            "  threshold {threshold:.2}: precision {:.3} recall {:.3} F1 {:.3} FPR {:.3}",
            counts.precision(),
            counts.recall(),
            counts.f1(),
            counts.fpr()
        );
    }
    print_scan_latency(&detector, "injection_tune.jsonl");
}

/// Per-prompt scan time over a split, best of three per prompt. Printed, never asserted (machines differ);
/// an unoptimised test build overstates it, `cargo bench -p tollgate-bench --bench guard` measures release.
fn print_scan_latency(detector: &InjectionDetector, file: &str) {
    let mut timings: Vec<std::time::Duration> = read_lines::<InjectionSample>(file)
        .iter()
        .map(|sample| {
            (0..3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    std::hint::black_box(detector.scan(std::hint::black_box(&sample.text)));
                    start.elapsed()
                })
                .min()
                .unwrap_or_default()
        })
        .collect();
    timings.sort();
    let at = |fraction: f64| timings[((timings.len() - 1) as f64 * fraction).round() as usize].as_secs_f64() * 1e6;
    println!(
        "  scan time per prompt ({} prompts, this build): p50 {:.0} us  p95 {:.0} us  max {:.0} us",
        timings.len(),
        at(0.5),
        at(0.95),
        at(1.0)
    );
}

/// Overlap of two code-point spans.
fn overlap(a: (usize, usize), b: (usize, usize)) -> usize {
    a.1.min(b.1).saturating_sub(a.0.max(b.0))
}

/// Per entity type: a found entity is right when it covers at least half of a labelled one of the same type
/// and at least half of it is that labelled entity.
fn score_pii(files: &[&str], verbose: bool) -> BTreeMap<String, Counts> {
    let detector = PiiDetector::new(&[], Default::default()).unwrap_or_else(|err| panic!("{err}"));
    let mut table: BTreeMap<String, Counts> = BTreeMap::new();
    for sample in files.iter().flat_map(|file| read_lines::<PiiSample>(file)) {
        let found: Vec<EntitySpan> = detector.entities(&sample.text);
        let matches = |gold: &GoldEntity, entity: &EntitySpan| {
            let shared = overlap((gold.start, gold.end), (entity.start, entity.end));
            entity.kind.as_str() == gold.kind
                && shared * 2 >= gold.end - gold.start
                && shared * 2 >= entity.end - entity.start
        };
        for gold in &sample.entities {
            let counts = table.entry(gold.kind.clone()).or_default();
            if found.iter().any(|entity| matches(gold, entity)) {
                counts.tp += 1;
            } else {
                counts.fn_ += 1;
                if verbose {
                    let value: String = sample.text.chars().skip(gold.start).take(gold.end - gold.start).collect();
                    println!("MISS {} {value:?} in {:?}", gold.kind, sample.text.chars().take(120).collect::<String>());
                }
            }
        }
        for entity in &found {
            if !sample.entities.iter().any(|gold| matches(gold, entity)) {
                table.entry(entity.kind.as_str().to_string()).or_default().fp += 1;
                if verbose {
                    let value: String =
                        sample.text.chars().skip(entity.start).take(entity.end - entity.start).collect();
                    println!(
                        "FALSE {} {value:?} in {:?}",
                        entity.kind,
                        sample.text.chars().take(120).collect::<String>()
                    );
                }
            }
        }
    }
    table
}

fn print_pii(split: &str, table: &BTreeMap<String, Counts>) -> Counts {
    println!("PII detector, {split} split:");
    println!("  {:<12} {:>9} {:>7} {:>6} {:>5} {:>5} {:>5}", "type", "precision", "recall", "F1", "tp", "fp", "fn");
    let mut total = Counts::default();
    for kind in EntityKind::ALL {
        let Some(counts) = table.get(kind.as_str()).copied() else { continue };
        println!(
            "  {:<12} {:>9.3} {:>7.3} {:>6.3} {:>5} {:>5} {:>5}",
            kind.as_str(),
            counts.precision(),
            counts.recall(),
            counts.f1(),
            counts.tp,
            counts.fp,
            counts.fn_
        );
        total.tp += counts.tp;
        total.fp += counts.fp;
        total.fn_ += counts.fn_;
    }
    println!("  {:<12} {:>9.3} {:>7.3} {:>6.3}", "all", total.precision(), total.recall(), total.f1());
    total
}

#[test]
fn pii_eval() {
    // Two evaluation sets: our templates with generated values, and presidio-research's own synthetic set
    // (Faker values, its templates), which none of the recognizers were written against.
    print_pii("evaluation (tollgate templates)", &score_pii(&["pii_eval.jsonl"], false));
    let presidio = score_pii(&["pii_presidio_eval.jsonl"], false);
    print_pii("evaluation (presidio-research synth_dataset_v2)", &presidio);
    // The independent set on its own: precision at least 0.95 for every type, and phone recall well above
    // that of Presidio's own pattern recognizers on this dataset (0.46).
    for (kind, counts) in &presidio {
        assert!(counts.precision() >= 0.95, "presidio-research set: {kind} precision {:.3}", counts.precision());
    }
    let phone = presidio.get("PHONE").copied().unwrap_or_default();
    assert!(phone.recall() >= 0.70, "presidio-research set: PHONE recall {:.3} below 0.70", phone.recall());
    let table = score_pii(&["pii_eval.jsonl", "pii_presidio_eval.jsonl"], false);
    let total = print_pii("evaluation (both)", &table);
    assert!(total.precision() >= 0.95, "overall precision {:.3} below 0.95", total.precision());
    for kind in EntityKind::ALL {
        let Some(counts) = table.get(kind.as_str()) else { panic!("no {kind} in the evaluation split") };
        let (precision_floor, recall_floor) = pii_floor(kind);
        assert!(
            counts.precision() >= precision_floor,
            "{kind} precision {:.3} below {precision_floor}",
            counts.precision()
        );
        assert!(counts.recall() >= recall_floor, "{kind} recall {:.3} below {recall_floor}", counts.recall());
    }
}

/// (precision, recall) floors per type, a little under the measurement on the evaluation splits recorded in
/// tests/data/guard/README.md (phone: precision 1.000, recall 0.874; every other type at least 0.99).
fn pii_floor(kind: EntityKind) -> (f64, f64) {
    match kind {
        EntityKind::Phone => (0.98, 0.85),
        _ => (0.95, 0.97),
    }
}

#[test]
fn pii_tune() {
    // Measured: precision and recall 1.000 for every type on both tuning splits.
    for (split, file) in [("tollgate templates", "pii_tune.jsonl"), ("presidio-research", "pii_presidio_tune.jsonl")] {
        let total = print_pii(&format!("tuning ({split})"), &score_pii(&[file], verbose()));
        assert!(total.precision() >= 0.99 && total.recall() >= 0.99, "{split}: {total:?}");
    }
}

/// The injection corpus's ~1,300 prompts hold no secrets, keys or cards: only the odd example contact
/// (an email or a phone number in a self-instruct task). Anything else found there is a false positive.
#[test]
fn pii_on_prompts() {
    let detector = PiiDetector::new(&[], Default::default()).unwrap_or_else(|err| panic!("{err}"));
    let mut found = Vec::new();
    for sample in read_lines::<InjectionSample>("injection_tune.jsonl") {
        for entity in detector.entities(&sample.text) {
            let value: String = sample.text.chars().skip(entity.start).take(entity.end - entity.start).collect();
            if verbose() {
                println!("{} {value:?} [{}]", entity.kind, sample.source);
            }
            found.push((entity.kind, value));
        }
    }
    let unexpected: Vec<_> =
        found.iter().filter(|(kind, _)| !matches!(kind, EntityKind::Email | EntityKind::Phone)).collect();
    assert!(unexpected.is_empty(), "false positives on ordinary prompts: {unexpected:?}");
    assert!(found.len() <= 12, "measured 8 contacts in these prompts, found {}: {found:?}", found.len());
}
