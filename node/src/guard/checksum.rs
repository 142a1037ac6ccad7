//! Checks that turn "looks like" into "is": the Luhn checksum of card numbers, the ISO 13616 mod-97 check
//! and per-country length of IBANs, and the Shannon entropy that separates generated secrets from words.

/// Luhn (mod 10) over the ASCII digits of `digits`; anything else is ignored.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for (index, digit) in digits.bytes().rev().filter(u8::is_ascii_digit).map(|b| u32::from(b - b'0')).enumerate() {
        sum += if index % 2 == 1 {
            let doubled = digit * 2;
            if doubled > 9 {
                doubled - 9
            } else {
                doubled
            }
        } else {
            digit
        };
        count += 1;
    }
    count > 0 && sum.is_multiple_of(10)
}

/// Whether the digits start with an issuer prefix of a major card network, with a length it issues.
pub fn card_network_known(digits: &str) -> bool {
    let len = digits.len();
    let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    match digits.as_bytes().first() {
        Some(b'1' | b'2') if matches!(prefix(4), 1800 | 2131) => len == 15, // JCB 15-digit
        Some(b'4') => matches!(len, 13 | 16 | 19),                          // Visa
        Some(b'5') => (12..=19).contains(&len), // Mastercard 51-55, Maestro 50 and 56-59 (12 digits and up)
        Some(b'2') => (2221..=2720).contains(&prefix(4)) && len == 16, // Mastercard 2-series
        Some(b'3') => {
            (matches!(prefix(2), 34 | 37) && len == 15)                              // Amex
                || (prefix(2) == 35 && (16..=19).contains(&len))                      // JCB
                || (matches!(prefix(4), 3088 | 3096 | 3112 | 3158 | 3337) && len == 16) // JCB (older ranges)
                || ((matches!(prefix(2), 36 | 38 | 39) || (300..=305).contains(&prefix(3))) && (14..=19).contains(&len))
            // Diners
        }
        Some(b'6') => (12..=19).contains(&len), // Discover, UnionPay, Maestro
        _ => false,
    }
}

/// IBAN length per country (ISO 13616 registry, the countries in SEPA and a few more).
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "NO" => 15,
        "BE" => 16,
        "DK" | "FI" | "FO" | "GL" | "NL" => 18,
        "MK" | "SI" => 19,
        "AT" | "BA" | "EE" | "KZ" | "LT" | "LU" | "XK" => 20,
        "CH" | "CR" | "HR" | "LI" | "LV" => 21,
        "BG" | "BH" | "DE" | "GB" | "GE" | "IE" | "ME" | "RS" => 22,
        "AE" | "GI" | "IL" | "TL" => 23,
        "AD" | "CZ" | "ES" | "MD" | "PK" | "RO" | "SA" | "SE" | "SK" | "TN" | "VG" => 24,
        "PT" | "ST" => 25,
        "IS" | "TR" => 26,
        "FR" | "GR" | "IT" | "MC" | "MR" | "SM" => 27,
        "AL" | "AZ" | "BY" | "CY" | "DO" | "GT" | "HU" | "LB" | "PL" => 28,
        "BR" | "EG" | "PS" | "QA" | "UA" => 29,
        "JO" | "KW" | "MU" => 30,
        "MT" | "SC" => 31,
        "LC" => 32,
        _ => return None,
    })
}

/// A compact (no spaces) IBAN: known country, its length, and remainder 1 of the mod-97 check.
pub fn iban_valid(compact: &str) -> bool {
    let bytes = compact.as_bytes();
    if bytes.len() < 15 || !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    let (country, check) = (&compact[..2], &compact[2..4]);
    if iban_length(country) != Some(bytes.len()) || !check.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    // Move the first four characters to the end, letters become 10..35, and reduce mod 97 as we go.
    let mut remainder = 0u32;
    for &byte in bytes[4..].iter().chain(&bytes[..4]) {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

/// Shannon entropy in bits per character.
pub fn shannon_entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut total = 0u32;
    for byte in text.bytes() {
        counts[usize::from(byte)] += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let total = f64::from(total);
    counts.iter().filter(|&&count| count > 0).map(|&count| f64::from(count) / total).map(|p| -p * p.log2()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_networks() {
        assert!(luhn_valid("4111 1111 1111 1111"));
        assert!(!luhn_valid("4111 1111 1111 1112"));
        assert!(luhn_valid("378282246310005"));
        assert!(card_network_known("378282246310005"));
        assert!(card_network_known("5555555555554444"));
        assert!(card_network_known("2223003122003222"));
        assert!(!card_network_known("1234567812345678"));
        assert!(!card_network_known("411111111111"));
    }

    #[test]
    fn iban_checksums() {
        for valid in [
            "DE89370400440532013000",
            "GB82WEST12345698765432",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "CH9300762011623852957",
            "NO9386011117947",
        ] {
            assert!(iban_valid(valid), "{valid}");
        }
        for invalid in
            ["DE89370400440532013001", "DE8937040044053201300", "XX89370400440532013000", "de89370400440532013000"]
        {
            assert!(!iban_valid(invalid), "{invalid}");
        }
    }

    #[test]
    fn entropy_separates_keys_from_words() {
        assert!(shannon_entropy("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") > 4.0);
        assert!(shannon_entropy("passwordpassword") < 3.0);
        assert_eq!(shannon_entropy(""), 0.0);
    }
}
