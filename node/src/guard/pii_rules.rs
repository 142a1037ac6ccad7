//! The PII and secret recognizers: a candidate pattern per entity type and the check that confirms it
//! (Luhn and issuer prefix for cards, mod-97 for IBANs, address parsing for IPv6, entropy and placeholder
//! filters for secrets). Candidates that fail their check are dropped, which is where the precision comes
//! from; the patterns themselves are deliberately wide for recall.
//!
//! Each pattern may name its entity with a group `v`; otherwise the whole match is the entity. Matches are
//! in byte offsets of the text; `pii.rs` resolves overlaps between types.

use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::checksum::{card_network_known, iban_valid, luhn_valid, shannon_entropy};
use super::config::EntityKind;

/// A compiled recognizer.
pub struct Recognizer {
    pub kind: EntityKind,
    regex: Regex,
    confirm: Confirm,
}

/// Confirms (and possibly narrows) a candidate: `(text, captures, candidate range) -> entity range`.
type Confirm = fn(&str, &Captures, Range<usize>) -> Option<Range<usize>>;

/// Characters a secret value may contain (the `v` group of the SECRET pattern).
pub fn is_secret_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+/=_-.~!@#$%^&*".contains(c)
}

const PEM: &str = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\z)";
/// Header and payload suffice (both base64 of a JSON object): a JWT is recognised before its signature
/// arrives, which the streaming redactor needs for tokens longer than its hold.
const JWT: &str = r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?";
const API_KEY: &str = concat!(
    r"(?-u:\b)(?P<v>",
    r"sk-ant-[A-Za-z0-9_-]{20,}",
    r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
    r"|gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,}",
    r"|xox[abposr]-[A-Za-z0-9-]{10,}",
    r"|(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}",
    r"|AIza[0-9A-Za-z_-]{35}",
    r"|gl(?:pat|ptt|dt|rt|cbt|soat)-[A-Za-z0-9_-]{20,}",
    r"|hf_[A-Za-z]{30,}|api_org_[A-Za-z]{30,}",
    r"|npm_[A-Za-z0-9]{36}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}",
    r"|gsk_[A-Za-z0-9]{48,}|r8_[A-Za-z0-9]{37}|xai-[A-Za-z0-9]{70,}",
    r"|dapi[0-9a-f]{32}|dop_v1_[0-9a-f]{64}|shp(?:at|ca|pa|ss)_[0-9a-fA-F]{32}",
    r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
    r"|tg-(?:dev-)?[0-9a-f]{24,}|tga-[0-9a-f]{24,}|tgc-[0-9a-f]{24,}",
    r"|https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+",
    r")(?P<end>[A-Za-z0-9_-]?)",
);
/// A key word (possibly inside an identifier like `DB_PASSWORD` or `aws_secret_access_key`), a separator,
/// and the value.
const SECRET: &str = concat!(
    r"(?i)(?P<key>[A-Za-z0-9_.-]*(?:passw(?:or)?d|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|",
    r"private[_-]?key|signing[_-]?key|encryption[_-]?key|credentials?|auth[_-]?key|pwd)[A-Za-z0-9_-]*)",
    r#"(?:["']?\s*(?::=|=>|[:=])\s*|\s+(?:is|was|=)\s+|\s+bearer\s+)["'`]?"#,
    r"(?P<v>[A-Za-z0-9+/=_\-.~!@#$%^&*]{6,256})",
);
/// A key word, a few words, then a generated-looking value: `the webhook secret for the endpoint: 3f9a...`.
const SECRET_NEARBY: &str = concat!(
    r"(?i)(?-u:\b)(?P<key>secrets?|tokens?|passwords?|api[ _-]?keys?|access keys?|credentials?)(?-u:\b)[^\n]{0,48}?[:=\s]\s*",
    r#"["'`]?(?P<v>[A-Za-z0-9+/=_\-.~!@#$%^&*]{16,256})"#,
);
const BEARER: &str = r"(?i)(?-u:\b)bearer\s+(?P<v>[A-Za-z0-9+/=_\-.~]{16,256})";
const CARD: &str = r"(?-u:\b)(?:\d[ -]?){11,22}\d(?-u:\b)";
const IBAN: &str = r"(?-u:\b)[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]{4}){2,8}(?:[ ]?[A-Za-z0-9]{1,3})?(?-u:\b)";
const EMAIL: &str = r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?-u:\b)";
const IPV4: &str = r"(?-u:\b)(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?-u:\b)";
const IPV6: &str = r"(?:^|[^0-9A-Za-z:.])(?P<v>[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?:$|[^0-9A-Za-z:])";
/// International numbers: `+` or `00`, a country code, groups (an optional `(0)` trunk).
const PHONE_INTERNATIONAL: &str =
    r"(?:^|[^0-9A-Za-z+])(?P<v>(?:\+|00)[1-9]\d{0,2}(?:[ .\-]?\(0?\d{0,4}\))?(?:[ .\-/]?\d{1,5}){1,6})";
/// North American numbers with separators: `(415) 555-0132`, `415-555-0132`, `415.555.0132`.
const PHONE_NANP: &str =
    r"(?:^|[^0-9A-Za-z+\-.(])(?P<v>(?:\(\d{3}\)\s?|\d{3}[-.\s])\d{3}[-.\s]\d{4})(?:$|[^0-9A-Za-z\-])";
/// National numbers with a trunk 0 and separators: `020 7946 0958`, `030 12345678`, `06 12 34 56 78`.
const PHONE_NATIONAL: &str = r"(?:^|[^0-9A-Za-z+\-./:])(?P<v>0\d{1,4}(?:[ \-/]\d{2,8}){1,4})(?:$|[^0-9A-Za-z\-./:])";
/// Any 7-15 digit run right after words that announce a phone number.
const PHONE_CONTEXT: &str = concat!(
    r"(?i)(?-u:\b)(?:phone|tel|telephone|mobile|cell|fax|whatsapp|sms|hotline|dial|call(?:ing)?(?: me| us)?(?: at| on)?|",
    r"text(?: me| us)?(?: at| on)|ring(?: me| us)?(?: at| on)?|reach (?:me|us|him|her|them) (?:at|on)|answering at|messages to|",
    r"(?:phone|mobile|cell) number(?: is)?)(?-u:\b)[^0-9(+\n]{0,12}(?P<v>\+?\(?\d[\d \-.()]{5,18}\d)",
);
/// A digit group run followed by the kind of line a phone number has in an address block (`... office`).
const PHONE_LABELLED: &str = r"(?im)(?:^|[^0-9A-Za-z+\-.])(?P<v>\+?\(?\d[\d \-.()]{5,18}\d)[ \t]*(?:-[ \t]*)?(?:office|fax|mobile|cell|home|work|tel|phone|direct|desk)\b";

/// A street name right after a number (`2437 Main St`, `3911 Fourth Avenue Suite 697`): the number is a
/// house number, maybe after a postcode, as in the addresses of the presidio-research tuning split.
const STREET_AFTER: &str = concat!(
    r"\A[ \t]+(?:[A-Z0-9][A-Za-z0-9'.-]*[ \t]+){1,3}(?:St|Street|Ave|Avenue|Rd|Road|Dr|Drive|Ln|Lane|Blvd|",
    r"Boulevard|Way|Ct|Court|Pl|Place|Ter|Terrace|Cres|Crescent|Hwy|Highway|Pkwy|Parkway|Sq|Square|Cir|Circle|",
    r"Close|Row|Trail|Gateway|Gardens)(?-u:\b)",
);
static STREET_AFTER_REGEX: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(STREET_AFTER).ok());

pub static RECOGNIZERS: LazyLock<Result<Vec<Recognizer>, String>> = LazyLock::new(|| {
    let specs: [(EntityKind, &str, Confirm); 16] = [
        (EntityKind::PrivateKey, PEM, accept),
        (EntityKind::Jwt, JWT, accept),
        (EntityKind::ApiKey, API_KEY, confirm_api_key),
        (EntityKind::Secret, SECRET, confirm_secret),
        (EntityKind::Secret, BEARER, confirm_secret),
        (EntityKind::Secret, SECRET_NEARBY, confirm_nearby_secret),
        (EntityKind::CreditCard, CARD, confirm_card),
        (EntityKind::Iban, IBAN, confirm_iban),
        (EntityKind::Email, EMAIL, confirm_email),
        (EntityKind::IpAddress, IPV4, confirm_ipv4),
        (EntityKind::IpAddress, IPV6, confirm_ipv6),
        (EntityKind::Phone, PHONE_INTERNATIONAL, confirm_international_phone),
        (EntityKind::Phone, PHONE_NANP, confirm_nanp_phone),
        (EntityKind::Phone, PHONE_NATIONAL, confirm_national_phone),
        (EntityKind::Phone, PHONE_CONTEXT, confirm_context_phone),
        (EntityKind::Phone, PHONE_LABELLED, confirm_context_phone),
    ];
    specs
        .into_iter()
        .map(|(kind, pattern, confirm)| {
            Regex::new(pattern)
                .map(|regex| Recognizer { kind, regex, confirm })
                .map_err(|err| format!("{kind} pattern: {err}"))
        })
        .collect::<Result<Vec<_>, String>>()
        .and_then(|recognizers| match *STREET_AFTER_REGEX {
            Some(_) => Ok(recognizers),
            None => Err("street pattern does not compile".to_string()),
        })
});

impl Recognizer {
    /// Confirmed matches of this recognizer, as byte ranges of `text`.
    pub fn find(&self, text: &str, out: &mut Vec<(EntityKind, Range<usize>)>) {
        for captures in self.regex.captures_iter(text) {
            let range = captures.name("v").or_else(|| captures.get(0)).map(|m| m.range()).unwrap_or_default();
            if let Some(range) = (self.confirm)(text, &captures, range) {
                out.push((self.kind, range));
            }
        }
    }
}

fn accept(_: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    Some(range)
}

fn confirm_api_key(text: &str, captures: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    // A fixed-length key followed by more token characters is part of something else.
    if captures.name("end").is_some_and(|end| !end.as_str().is_empty()) {
        return None;
    }
    let value = &text[range.clone()];
    let body = value.rsplit(['-', '_']).next().unwrap_or(value);
    let has_digit_or_mixed = value.bytes().any(|b| b.is_ascii_digit())
        || (value.bytes().any(|b| b.is_ascii_uppercase()) && value.bytes().any(|b| b.is_ascii_lowercase()));
    (has_digit_or_mixed && (body.len() < 12 || shannon_entropy(body) >= 2.5)).then_some(range)
}

/// Values that are clearly not secrets: placeholders, references to where the secret lives, prose.
fn placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    const MARKERS: [&str; 12] =
        ["your", "xxxx", "****", "<", "${", "{{", "placeholder", "changeme", "redacted", "example.", "here", "env"];
    MARKERS.iter().any(|marker| lower.contains(marker))
        || value.bytes().all(|b| b == value.as_bytes()[0])
        || value.starts_with(['/', '.', '~', '$', '%'])
        || lower.starts_with("os.")
        || lower.starts_with("process.")
        || lower.starts_with("http")
}

fn confirm_secret(text: &str, captures: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let value = text[range.clone()].trim_end_matches(['.', ',', ';']);
    let range = range.start..range.start + value.len();
    if placeholder(value) {
        return None;
    }
    let key = captures.name("key").map_or("", |key| key.as_str()).to_ascii_lowercase();
    let letters = value.bytes().filter(u8::is_ascii_alphabetic).count();
    let digits = value.bytes().filter(u8::is_ascii_digit).count();
    let symbols = value.bytes().filter(|b| b"!@#$%^&*+=?~".contains(b)).count();
    let mixed_case = value.bytes().any(|b| b.is_ascii_uppercase()) && value.bytes().any(|b| b.is_ascii_lowercase());
    let generated = value.len() >= 16 && shannon_entropy(value) >= 3.0 && (digits > 0 || mixed_case);
    let password_like = (key.contains("pass") || key.contains("pwd"))
        && value.len() >= 6
        && letters > 0
        && (digits > 0 || symbols > 0)
        && !value.contains('.');
    (generated || password_like).then_some(range)
}

/// Only generated-looking values count when the key word is a few words away.
fn confirm_nearby_secret(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let value = text[range.clone()].trim_end_matches(['.', ',', ';']);
    let digits = value.bytes().any(|b| b.is_ascii_digit());
    let mixed_case = value.bytes().any(|b| b.is_ascii_uppercase()) && value.bytes().any(|b| b.is_ascii_lowercase());
    let generated = value.len() >= 16 && shannon_entropy(value) >= 3.0 && (digits || mixed_case);
    (generated && !placeholder(value)).then_some(range.start..range.start + value.len())
}

/// Tries the digits of `candidate` and, when its separator groups run on past the card (an expiry, a CVV),
/// the longest prefix of whole groups that is a card.
fn confirm_card(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[range.clone()];
    let separators: Vec<char> = candidate.chars().filter(|c| !c.is_ascii_digit()).collect();
    if separators.windows(2).any(|pair| pair[0] != pair[1]) {
        return None;
    }
    // Cards are printed in groups of four to six digits; pairs are a hex dump or a list of numbers.
    if candidate.split([' ', '-']).rev().skip(1).any(|group| group.len() < 3) {
        return None;
    }
    let mut ends: Vec<usize> = candidate.match_indices([' ', '-']).map(|(index, _)| index).collect();
    ends.push(candidate.len());
    for &end in ends.iter().rev() {
        let digits: String = candidate[..end].chars().filter(char::is_ascii_digit).collect();
        // Twelve-digit (Maestro) numbers only where the text says it is a card.
        let length_ok =
            (13..=19).contains(&digits.len()) || (digits.len() == 12 && card_word_before(text, range.start));
        if length_ok && luhn_valid(&digits) && card_network_known(&digits) {
            return Some(range.start..range.start + end);
        }
    }
    None
}

fn card_word_before(text: &str, start: usize) -> bool {
    let window = &text[start.saturating_sub(40)..start];
    let window = window.get(..).unwrap_or("").to_ascii_lowercase();
    ["card", "credit", "debit", "visa", "mastercard", "maestro", "cc "].iter().any(|word| window.contains(word))
}

/// The country's IBAN length decides where the IBAN ends inside a wider candidate.
fn confirm_iban(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[range.clone()];
    let mut compact = String::with_capacity(34);
    for (index, ch) in candidate.char_indices() {
        if ch == ' ' {
            continue;
        }
        compact.push(ch.to_ascii_uppercase());
        if compact.len() >= 15 && iban_valid(&compact) {
            let end = index + ch.len_utf8();
            let next = candidate[end..].chars().next();
            if next.is_none_or(|next| next == ' ') {
                return Some(range.start..range.start + end);
            }
        }
    }
    None
}

fn confirm_email(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let value = &text[range.clone()];
    let (local, domain) = value.split_once('@')?;
    let tld = domain.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    const FILE_EXTENSIONS: [&str; 16] = [
        "png", "jpg", "jpeg", "gif", "svg", "webp", "css", "js", "json", "yaml", "yml", "toml", "lock", "html", "txt",
        "zip",
    ];
    let ok = !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && !FILE_EXTENSIONS.contains(&tld.as_str());
    ok.then_some(range)
}

fn confirm_ipv4(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let before = text[..range.start].chars().next_back();
    let after = text[range.end..].chars().next();
    let after_two = text[range.end..].chars().nth(1);
    // Part of a longer dotted number (a version, an OID) or a `v1.2.3.4` version.
    let dotted_neighbour = (before == Some('.') && text[..range.start - 1].ends_with(|c: char| c.is_ascii_digit()))
        || (after == Some('.') && after_two.is_some_and(|c| c.is_ascii_digit()));
    let version = before.is_some_and(|c| c == 'v' || c == 'V')
        || text[..range.start].to_ascii_lowercase().trim_end().ends_with("version");
    (!dotted_neighbour && !version).then_some(range)
}

fn confirm_ipv6(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let value = &text[range.clone()];
    let hex_digits = value.bytes().filter(u8::is_ascii_hexdigit).count();
    let has_digit = value.bytes().any(|b| b.is_ascii_digit());
    let parses = value.parse::<std::net::Ipv6Addr>().is_ok();
    (parses && hex_digits >= 3 && has_digit).then_some(range)
}

fn digit_count(value: &str) -> usize {
    value.bytes().filter(u8::is_ascii_digit).count()
}

/// Phone-shaped digits that are something else: the `123-45-6789` layout of a US social security number
/// (no numbering plan groups a phone number 3-2-4; the tuning split's SSNs are written so), or a house
/// number followed by its street.
fn phone_lookalike(text: &str, range: &Range<usize>) -> bool {
    let value = text[range.clone()].as_bytes();
    let ssn_layout = value.len() == 11
        && value.iter().enumerate().all(|(index, &b)| match index {
            3 | 6 => b == b'-' || b == b' ',
            _ => b.is_ascii_digit(),
        });
    // The street pattern only runs where a word follows on the same line (rarely, after a phone number).
    let after = &text[range.end..];
    let word_follows = after.trim_start_matches([' ', '\t']).starts_with(|c: char| c.is_ascii_alphanumeric())
        && after.starts_with([' ', '\t']);
    let street_after = word_follows && STREET_AFTER_REGEX.as_ref().is_some_and(|street| street.is_match(after));
    ssn_layout || street_after
}

fn confirm_international_phone(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let value = text[range.clone()].trim_end_matches(['-', '.', ' ', '/']);
    // `00 44 ...` after a four-character group is the middle of an account number, not a dialling prefix.
    let before = &text.as_bytes()[..range.start];
    let in_groups = before.len() >= 5
        && before[before.len() - 1] == b' '
        && before[before.len() - 5..before.len() - 1].iter().all(u8::is_ascii_alphanumeric);
    if value.starts_with("00") && in_groups {
        return None;
    }
    let digits = digit_count(value) - if value.starts_with("00") { 2 } else { 0 };
    let range = range.start..range.start + value.len();
    let followed_by_digit = text[range.end..].starts_with(|c: char| c.is_ascii_digit());
    ((8..=15).contains(&digits) && !followed_by_digit && !phone_lookalike(text, &range)).then_some(range)
}

fn confirm_nanp_phone(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let digits: Vec<u8> = text[range.clone()].bytes().filter(u8::is_ascii_digit).collect();
    // NANP area codes start with 2-9 (exchanges do too, but made-up numbers often ignore that).
    (digits.len() == 10 && digits[0] >= b'2' && !phone_lookalike(text, &range)).then_some(range)
}

fn confirm_national_phone(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let value = &text[range.clone()];
    let separators: Vec<char> = value.chars().filter(|c| !c.is_ascii_digit()).collect();
    let consistent = separators.windows(2).all(|pair| pair[0] == pair[1]);
    let digits_ok = (9..=12).contains(&digit_count(value));
    (digits_ok && consistent && !separators.is_empty() && !phone_lookalike(text, &range)).then_some(range)
}

fn confirm_context_phone(text: &str, _: &Captures, range: Range<usize>) -> Option<Range<usize>> {
    let value = &text[range.clone()];
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    // A card number after "number" is a card; a date is not a phone.
    let card_like = (13..=19).contains(&digits.len()) && luhn_valid(&digits);
    let date_like = value.len() == 10 && value.as_bytes().get(4) == Some(&b'-');
    let lookalike = phone_lookalike(text, &range);
    ((7..=15).contains(&digits.len()) && !card_like && !date_like && !lookalike).then_some(range)
}
