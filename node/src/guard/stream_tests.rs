use super::*;
use crate::guard::config::Replacement;

fn detector(replacement: Replacement) -> PiiDetector {
    match PiiDetector::new(&[], replacement) {
        Ok(detector) => detector,
        Err(err) => panic!("{err}"),
    }
}

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----";

fn samples() -> Vec<String> {
    vec![
        "Write to maria.garcia@example.org or call (415) 555-0132.".to_string(),
        "IBAN DE89 3704 0044 0532 0130 00, card 4111 1111 1111 1111 exp 09/27, ip 10.0.0.1".to_string(),
        format!("Authorization: Bearer {JWT}\nnext line"),
        format!("here is the key\n{PEM}\nand the rest"),
        "export OPENAI_API_KEY=sk-proj-Abc123Def456Ghi789Jkl012Mno345 && run; password: hunter22!".to_string(),
        "no entities at all, just a sentence about 12 apples and version 1.2.3".to_string(),
        "é✓ ünïcødé bob@example.com ✓ +44 20 7946 0958 ✓".to_string(),
        "gw 2001:db8::8a2e:370:7334 and ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789".to_string(),
    ]
}

/// Streams `chunks` through a fresh redactor, checking the hold bound after every push.
fn stream(detector: &PiiDetector, chunks: &[&str]) -> String {
    let mut redactor = StreamRedactor::new(detector.clone());
    let mut out = String::new();
    for chunk in chunks {
        out.push_str(&redactor.push(chunk));
        assert!(redactor.held_chars() <= MAX_HOLD_CHARS, "held {} chars", redactor.held_chars());
    }
    out.push_str(&redactor.finish());
    out
}

fn char_splits(text: &str) -> Vec<usize> {
    text.char_indices().map(|(index, _)| index).chain([text.len()]).collect()
}

#[test]
fn every_two_way_split_matches_the_whole_text() {
    for replacement in [Replacement::Label, Replacement::Hash, Replacement::Mask] {
        let detector = detector(replacement);
        for text in samples() {
            let whole = detector.redact(&text).text;
            for split in char_splits(&text) {
                let (left, right) = text.split_at(split);
                assert_eq!(stream(&detector, &[left, right]), whole, "{replacement:?} split at {split}: {text}");
            }
        }
    }
}

#[test]
fn many_small_chunks_match_the_whole_text() {
    let detector = detector(Replacement::Label);
    let text: String = samples().join(" | ");
    let whole = detector.redact(&text).text;
    for size in [1, 2, 3, 5, 7, 16, 64] {
        let bounds: Vec<usize> = char_splits(&text).into_iter().step_by(size).chain([text.len()]).collect();
        let chunks: Vec<&str> = bounds.windows(2).map(|pair| &text[pair[0]..pair[1]]).collect();
        assert_eq!(stream(&detector, &chunks), whole, "chunks of {size} chars");
    }
}

#[test]
fn emits_early_and_holds_little() {
    let detector = detector(Replacement::Label);
    let mut redactor = StreamRedactor::new(detector.clone());
    let prose = "All quiet on the western front. ".repeat(20);
    let emitted = redactor.push(&prose);
    assert_eq!(emitted, prose[..prose.len() - SETTLE_CHARS]);
    assert_eq!(redactor.held_chars(), SETTLE_CHARS);
    // Small chunks are held until a batch has built up beyond the settle zone.
    assert_eq!(redactor.push("bob@exam"), "");
    let rest = redactor.push("ple.com, thanks") + &redactor.push(&" ".repeat(EMIT_BATCH_CHARS)) + &redactor.finish();
    assert_eq!(emitted + &rest, format!("{prose}[REDACTED:EMAIL], thanks{}", " ".repeat(EMIT_BATCH_CHARS)));
    assert_eq!(redactor.found(), &[EntityKind::Email]);
}

#[test]
fn long_tokens_are_committed_not_buffered() {
    // A JWT far longer than the hold, arriving in small pieces: nothing of its body may leak.
    let payload = "A".repeat(3000);
    let long_jwt = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{payload}.c2lnbmF0dXJlc2lnbmF0dXJl");
    let text = format!("token {long_jwt} end.");
    for replacement in [Replacement::Label, Replacement::Hash, Replacement::Mask] {
        let detector = detector(replacement);
        let chunks: Vec<&str> = text.as_bytes().chunks(7).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
        let streamed = stream(&detector, &chunks);
        assert_eq!(streamed, detector.redact(&text).text, "{replacement:?}");
        assert!(!streamed.contains("AAAA"), "{replacement:?} leaked the token");
    }
}

#[test]
fn long_key_blocks_are_dropped_until_their_end_line() {
    let body: String = (0..60).map(|i| format!("{:064}\n", i)).collect();
    let pem = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{body}-----END OPENSSH PRIVATE KEY-----");
    let text = format!("key:\n{pem}\nafter the key");
    let detector = detector(Replacement::Label);
    for size in [1, 5, 64, 500] {
        let chunks: Vec<&str> = text.as_bytes().chunks(size).map(|c| std::str::from_utf8(c).unwrap_or("")).collect();
        assert_eq!(stream(&detector, &chunks), "key:\n[REDACTED:PRIVATE_KEY]\nafter the key", "chunks of {size}");
    }
    // Cut off mid-block: the rest is redacted, never flushed.
    let cut = &text[..text.len() / 2];
    assert_eq!(stream(&detector, &[cut]), "key:\n[REDACTED:PRIVATE_KEY]");
}
