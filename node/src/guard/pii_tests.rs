use super::*;

fn detector() -> PiiDetector {
    match PiiDetector::new(&[], Replacement::Label) {
        Ok(detector) => detector,
        Err(err) => panic!("{err}"),
    }
}

/// (type, matched text) for every entity in `text`.
fn found(text: &str) -> Vec<(EntityKind, String)> {
    detector().find(text).into_iter().map(|entity| (entity.kind, text[entity.range].to_string())).collect()
}

fn one(kind: EntityKind, value: &str) -> Vec<(EntityKind, String)> {
    vec![(kind, value.to_string())]
}

#[test]
fn the_recognizers_compile() {
    assert!(RECOGNIZERS.is_ok(), "{:?}", RECOGNIZERS.as_ref().err());
}

#[test]
fn finds_each_entity_type() {
    use EntityKind::*;
    let cases: &[(&str, EntityKind, &str)] = &[
        ("mail maria.garcia+news@mail.example.org today", Email, "maria.garcia+news@mail.example.org"),
        ("call (415) 555-0132 now", Phone, "(415) 555-0132"),
        ("call +44 (0)20 7946 0958.", Phone, "+44 (0)20 7946 0958"),
        ("Tel. 030 12345678", Phone, "030 12345678"),
        ("+49 30 12345678", Phone, "+49 30 12345678"),
        ("mobile: 4155550123", Phone, "4155550123"),
        ("card 4111 1111 1111 1111, exp 09/27", CreditCard, "4111 1111 1111 1111"),
        ("amex 3782-822463-10005", CreditCard, "3782-822463-10005"),
        ("IBAN DE89 3704 0044 0532 0130 00 BIC DEUTDEFF", Iban, "DE89 3704 0044 0532 0130 00"),
        ("to GB82WEST12345698765432.", Iban, "GB82WEST12345698765432"),
        ("host 192.168.10.4 down", IpAddress, "192.168.10.4"),
        ("gw 2001:db8::8a2e:370:7334 up", IpAddress, "2001:db8::8a2e:370:7334"),
        ("key ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 leaked", ApiKey, "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
        ("AKIAIOSFODNN7EXAMPLE", ApiKey, "AKIAIOSFODNN7EXAMPLE"),
        ("x sk-ant-api03-abcDEF123_ghiJKL456-mnoPQR789stu y", ApiKey, "sk-ant-api03-abcDEF123_ghiJKL456-mnoPQR789stu"),
        ("db_password = \"hunter22!\"", Secret, "hunter22!"),
        ("client_secret: 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", Secret, "3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"),
    ];
    for (text, kind, value) in cases {
        assert_eq!(found(text), one(*kind, value), "{text}");
    }
}

#[test]
fn finds_jwts_and_private_keys_whole() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    assert_eq!(found(&format!("Bearer {jwt} ok")), one(EntityKind::Jwt, jwt));
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----";
    assert_eq!(found(&format!("key:\n{pem}\nthanks")), one(EntityKind::PrivateKey, pem));
    let unterminated = "-----BEGIN PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj";
    assert_eq!(found(unterminated), one(EntityKind::PrivateKey, unterminated));
}

#[test]
fn ignores_lookalikes() {
    for text in [
        "Release 2.14.3 fixed a crash with more than 4096 entries.",
        "Order #48213927 shipped on 2024-03-15 at 14:32:07.",
        "uuid 123e4567-e89b-12d3-a456-426614174000, commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
        "ISBN 978-3-16-148410-0 and windows build 10.0.19045.2965, python v3.12.1.4",
        "The test card 4111 1111 1111 1112 fails the checksum.",
        "Set api_key = os.environ[\"OPENAI_API_KEY\"]; the token field is required; password: ********",
        "Use sklearn and sk-learn; the function std::vector::push_back; meeting ID 845 2231 9901",
        "we grew from 12 345 678 to 13 002 117 users; error 0x80070005; RFC 7519",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
        "icon@2x.png and DE89 3704 0044 0532 0130 01 (bad checksum)",
        "the time is 10:12:01 and the MAC is 00:1A:2B:3C:4D:5E",
    ] {
        assert_eq!(found(text), vec![], "{text}");
    }
}

#[test]
fn overlaps_go_to_the_more_specific_type() {
    // A card number after "call" is still a card; the base64 in a key block is the key block.
    assert_eq!(found("call 4111111111111111"), one(EntityKind::CreditCard, "4111111111111111"));
    let text = "token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N";
    assert_eq!(found(text)[0].0, EntityKind::Jwt);
}

#[test]
fn honours_the_entity_set_and_replacement() {
    let text = "mail bob@example.com or call +1 415 555 0132, card 4111-1111-1111-1111";
    let Ok(emails) = PiiDetector::new(&[EntityKind::Email], Replacement::Label) else { panic!("detector") };
    assert_eq!(emails.redact(text).text, "mail [REDACTED:EMAIL] or call +1 415 555 0132, card 4111-1111-1111-1111");
    let Ok(masked) = PiiDetector::new(&[], Replacement::Mask) else { panic!("detector") };
    assert_eq!(masked.redact(text).text, "mail *************** or call ***********0132, card ***************1111");
    let Ok(hashed) = PiiDetector::new(&[EntityKind::Email], Replacement::Hash) else { panic!("detector") };
    let redacted = hashed.redact("a bob@example.com b bob@example.com").text;
    let tags: Vec<&str> = redacted.split(' ').filter(|word| word.starts_with("[EMAIL:")).collect();
    assert_eq!(tags.len(), 2);
    assert_eq!(tags[0], tags[1], "equal values hash equally");
    assert_eq!(tags[0].len(), "[EMAIL:12345678]".len());
}

#[test]
fn reports_code_point_offsets() {
    let text = "é✓ bob@example.com";
    assert_eq!(detector().entities(text), vec![EntitySpan { kind: EntityKind::Email, start: 3, end: 18 }]);
}

#[test]
fn social_security_layout_is_not_a_phone() {
    // Grouped 3-2-4 with a trunk-0 start: the national pattern's shape, the SSN's layout.
    for text in ["Here's my SSN: 054-28-6917", "ssn 023 01 0866 on file", "Phone: 012-34-5678"] {
        assert_eq!(found(text), vec![], "{text}");
    }
    // The same digits grouped as phone numbers are.
    assert_eq!(found("Tel. 054 286 917"), one(EntityKind::Phone, "054 286 917"));
    assert_eq!(found("call 0542-86917 now"), one(EntityKind::Phone, "0542-86917"));
}

#[test]
fn house_number_before_a_street_is_not_a_phone() {
    for text in [
        "Billing address: Ada Lovelace\n    03262 2437 Main St Suite 442\n   Mill Village",
        "ship to 0170 5551 Fourth Avenue, Springfield",
        "at 020 7946 0958 Old Kent Road",
        "Phone: 0301 2345678 Crown St",
    ] {
        assert_eq!(found(text), vec![], "{text}");
    }
    // A street further on, or a capitalised word that is no street, leaves the phone number alone.
    for (text, phone) in [
        ("call 020 7946 0958 before you visit 12 Main Street", "020 7946 0958"),
        ("Tel. 030 12345678 Monday to Friday", "030 12345678"),
        ("(415) 555-0132 Office", "(415) 555-0132"),
    ] {
        assert_eq!(found(text), one(EntityKind::Phone, phone), "{text}");
    }
}
