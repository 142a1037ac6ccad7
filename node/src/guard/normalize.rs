//! Folding text into the lowercase ASCII the injection rules are written against, with a map back to the
//! original's code points.
//!
//! Attackers spell instructions so that a literal match misses them: fullwidth or "mathematical" letters
//! (`ｉｇｎｏｒｅ`, `𝐢𝐠𝐧𝐨𝐫𝐞`), Cyrillic and Greek lookalikes (`іgnоre`), zero-width characters between letters,
//! invisible Unicode tag characters carrying ASCII, accents, and leetspeak (`1gn0r3`). [`Normalized::new`]
//! undoes all of these in one pass (an NFKC-like folding limited to what matters for Latin-script rules,
//! with no normalisation tables) and counts what it undid, because the obfuscation itself is evidence.

/// The folded text and what folding it took.
#[derive(Debug, Clone, Default)]
pub struct Normalized {
    /// Lowercase; every character the folding knows is ASCII, others are kept (lowercased).
    pub text: String,
    /// For each byte of `text` (plus one past the end): the index of the original character it came from.
    origin: Vec<u32>,
    /// Zero-width and other invisible format characters that were dropped (emoji joiners not counted).
    pub invisible: usize,
    /// Unicode tag characters (U+E0020..U+E007E), which smuggle invisible ASCII; they are decoded.
    pub tag_chars: usize,
    /// Words mixing ASCII letters with Cyrillic or Greek lookalikes.
    pub mixed_script_words: usize,
    /// Fullwidth, mathematical, circled or squared letters and digits folded to ASCII.
    pub styled_chars: usize,
}

/// What one original character becomes.
enum Fold {
    Drop { counted: bool },
    Tag(u8),
    Ascii(u8),
    Styled(u8),
    Lookalike(u8),
    Other(char),
}

impl Normalized {
    /// Folds `original`; linear in its length.
    pub fn new(original: &str) -> Normalized {
        let mut out = Normalized { text: String::with_capacity(original.len()), ..Normalized::default() };
        out.origin.reserve(original.len() + 1);
        let mut word = WordScripts::default();
        let mut index = 0u32;
        for ch in original.chars() {
            match fold(ch) {
                Fold::Drop { counted } => out.invisible += usize::from(counted && index > 0),
                Fold::Tag(byte) => {
                    out.tag_chars += 1;
                    out.push_ascii(byte, index);
                }
                Fold::Ascii(byte) => {
                    word.see(byte.is_ascii_alphabetic(), false);
                    out.mixed_script_words += word.end_if(!byte.is_ascii_alphanumeric());
                    out.push_ascii(byte.to_ascii_lowercase(), index);
                }
                Fold::Styled(byte) => {
                    out.styled_chars += 1;
                    word.see(true, false);
                    out.push_ascii(byte.to_ascii_lowercase(), index);
                }
                Fold::Lookalike(byte) => {
                    word.see(false, true);
                    out.push_ascii(byte, index);
                }
                Fold::Other(other) => {
                    out.mixed_script_words += word.end_if(!other.is_alphanumeric());
                    for lower in other.to_lowercase() {
                        let start = out.text.len();
                        out.text.push(lower);
                        out.origin.extend(std::iter::repeat_n(index, out.text.len() - start));
                    }
                }
            }
            index += 1;
        }
        out.mixed_script_words += word.end_if(true);
        out.origin.push(index);
        fold_leetspeak(&mut out.text);
        out
    }

    fn push_ascii(&mut self, byte: u8, index: u32) {
        self.text.push(char::from(byte));
        self.origin.push(index);
    }

    /// The original code-point range `[start, end)` that the folded byte range `range` came from.
    pub fn original_span(&self, range: std::ops::Range<usize>) -> (usize, usize) {
        let last = self.origin.len().saturating_sub(1);
        let start = self.origin.get(range.start.min(last)).copied().unwrap_or(0) as usize;
        let end = if range.end > range.start {
            self.origin.get((range.end - 1).min(last)).map_or(start, |&index| index as usize + 1)
        } else {
            start
        };
        (start, end)
    }
}

/// Tracks whether the current word mixes ASCII letters with lookalikes from other scripts.
#[derive(Default)]
struct WordScripts {
    latin: bool,
    lookalike: bool,
}

impl WordScripts {
    fn see(&mut self, latin: bool, lookalike: bool) {
        self.latin |= latin;
        self.lookalike |= lookalike;
    }

    /// Ends the word when `boundary`; returns 1 if the word that ended was mixed.
    fn end_if(&mut self, boundary: bool) -> usize {
        if !boundary {
            return 0;
        }
        let mixed = self.latin && self.lookalike;
        *self = WordScripts::default();
        usize::from(mixed)
    }
}

fn fold(ch: char) -> Fold {
    let code = ch as u32;
    if ch.is_ascii() {
        return Fold::Ascii(code as u8);
    }
    match code {
        // Emoji joiner and variation selectors: legitimately common, dropped without counting.
        0x200D | 0xFE00..=0xFE0F | 0xE0100..=0xE01EF => Fold::Drop { counted: false },
        0x00AD => Fold::Drop { counted: false }, // soft hyphen: pasted web text is full of them
        0x200B
        | 0x200C
        | 0x200E
        | 0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x206F
        | 0xFEFF
        | 0x180E
        | 0x034F
        | 0x061C
        | 0x115F
        | 0x1160
        | 0x17B4
        | 0x17B5 => Fold::Drop { counted: true },
        0xE0020..=0xE007E => Fold::Tag((code - 0xE0000) as u8),
        0xE0000..=0xE007F => Fold::Drop { counted: true },
        0x00A0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000 => Fold::Ascii(b' '),
        0x00C0..=0x00FF => latin1(code),
        0x0100..=0x017F => Fold::Ascii(LATIN_EXTENDED_A[(code - 0x100) as usize]),
        0xFF01..=0xFF5E => styled_or_punct(code - 0xFEE0),
        0x1D400..=0x1D6A3 => Fold::Styled(letter((code - 0x1D400) % 52)),
        0x1D7CE..=0x1D7FF => Fold::Styled(b'0' + ((code - 0x1D7CE) % 10) as u8),
        0x24B6..=0x24CF => Fold::Styled(b'a' + (code - 0x24B6) as u8),
        0x24D0..=0x24E9 => Fold::Styled(b'a' + (code - 0x24D0) as u8),
        0x249C..=0x24B5 => Fold::Styled(b'a' + (code - 0x249C) as u8),
        0x1F130..=0x1F149 => Fold::Styled(b'a' + (code - 0x1F130) as u8),
        0x1F150..=0x1F169 => Fold::Styled(b'a' + (code - 0x1F150) as u8),
        0x1F170..=0x1F189 => Fold::Styled(b'a' + (code - 0x1F170) as u8),
        0x1F1E6..=0x1F1FF => Fold::Styled(b'a' + (code - 0x1F1E6) as u8),
        _ => lookalike(ch).map_or(Fold::Other(ch), Fold::Lookalike),
    }
}

fn letter(offset: u32) -> u8 {
    if offset < 26 {
        b'a' + offset as u8
    } else {
        b'a' + (offset - 26) as u8
    }
}

fn styled_or_punct(ascii: u32) -> Fold {
    let byte = ascii as u8;
    if byte.is_ascii_alphanumeric() {
        Fold::Styled(byte)
    } else {
        Fold::Ascii(byte)
    }
}

/// U+00C0..U+00FF without their accents; `×` and `÷` stay.
fn latin1(code: u32) -> Fold {
    const TABLE: &[u8; 64] = b"aaaaaaaceeeeiiiidnooooo\0ouuuuytsaaaaaaaceeeeiiiidnooooo\0ouuuuyty";
    match TABLE[(code - 0xC0) as usize] {
        0 => Fold::Other(char::from_u32(code).unwrap_or(' ')),
        byte => Fold::Ascii(byte),
    }
}

/// U+0100..U+017F (Latin Extended-A) without their accents.
const LATIN_EXTENDED_A: &[u8; 128] = b"aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiiijjjjkkkllllllllllnnnnnnnnnoooooooorrrrrrssssssssttttttuuuuuuuuuuuuwwyyyzzzzzzs";

/// Cyrillic, Greek, IPA and small-capital letters that look like Latin ones.
fn lookalike(ch: char) -> Option<u8> {
    Some(match ch {
        'а' | 'А' | 'α' | 'Α' | 'ɑ' | 'ᴀ' => b'a',
        'в' | 'В' | 'β' | 'Β' | 'ʙ' | 'ь' => b'b',
        'с' | 'С' | 'ϲ' | 'ᴄ' => b'c',
        'ԁ' | 'ᴅ' => b'd',
        'е' | 'Е' | 'ё' | 'ε' | 'Ε' | 'ᴇ' => b'e',
        'ɡ' | 'ɢ' => b'g',
        'һ' | 'Н' | 'Η' | 'ʜ' => b'h',
        'і' | 'І' | 'ι' | 'Ι' | 'ı' | 'ɩ' | 'ɪ' | 'ї' => b'i',
        'ј' | 'Ј' | 'ᴊ' => b'j',
        'к' | 'К' | 'κ' | 'Κ' | 'ᴋ' => b'k',
        'ℓ' | 'ʟ' | 'ӏ' | 'Ӏ' => b'l',
        'М' | 'Μ' | 'м' | 'ᴍ' => b'm',
        'п' | 'η' | 'Ν' | 'ɴ' => b'n',
        'о' | 'О' | 'ο' | 'Ο' | 'σ' | 'օ' | 'ᴏ' => b'o',
        'р' | 'Р' | 'ρ' | 'Ρ' | 'ᴘ' => b'p',
        'ԛ' => b'q',
        'г' | 'ʀ' => b'r',
        'ѕ' | 'Ѕ' | 'ꜱ' => b's',
        'т' | 'Т' | 'τ' | 'Τ' | 'ᴛ' => b't',
        'υ' | 'ս' | 'ᴜ' => b'u',
        'ν' | 'ѵ' | 'ᴠ' => b'v',
        'ԝ' | 'ѡ' | 'ᴡ' => b'w',
        'х' | 'Х' | 'χ' | 'Χ' => b'x',
        'у' | 'У' | 'γ' | 'Υ' | 'ʏ' => b'y',
        'Ζ' | 'ᴢ' => b'z',
        _ => return None,
    })
}

/// Replaces leetspeak digits and symbols next to a letter (`1gn0r3` → `ignore`) in place; same length, so
/// the origin map stays valid. A digit run with no letter beside it (`2024`, `v4` keeps `v`) is left alone
/// except where it touches the letter.
fn fold_leetspeak(text: &mut String) {
    fn leet(byte: u8) -> Option<u8> {
        Some(match byte {
            b'0' => b'o',
            b'1' | b'!' => b'i',
            b'3' => b'e',
            b'4' | b'@' => b'a',
            b'5' | b'$' => b's',
            b'7' => b't',
            _ => return None,
        })
    }
    if !text.bytes().any(|byte| leet(byte).is_some()) {
        return;
    }
    let mut bytes = std::mem::take(text).into_bytes();
    // Forward, then backward: a run of leet characters is folded from whichever end touches a letter
    // (`pr3v10us` from the left, `574rt` from the right).
    let forward: Vec<usize> = (0..bytes.len()).collect();
    for index in forward.iter().copied().chain(forward.iter().rev().copied()) {
        let Some(letter) = leet(bytes[index]) else { continue };
        let left = index.checked_sub(1).is_some_and(|i| bytes[i].is_ascii_lowercase());
        let right = bytes.get(index + 1).is_some_and(u8::is_ascii_lowercase);
        // `!` only inside a word (`h!dden`), never as punctuation after one.
        let fold = if bytes[index] == b'!' { left && right } else { left || right };
        if fold {
            bytes[index] = letter;
        }
    }
    // Only ASCII bytes were replaced by ASCII bytes, so this is still UTF-8.
    *text = String::from_utf8(bytes).unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_styled_lookalike_and_invisible_text() {
        let cases = [
            ("Ignore ALL previous", "ignore all previous"),
            ("ｉｇｎｏｒｅ previous", "ignore previous"),
            ("𝐢𝐠𝐧𝐨𝐫𝐞 𝕡𝕣𝕖𝕧𝕚𝕠𝕦𝕤", "ignore previous"),
            ("іgnоrе", "ignore"),
            ("ig\u{200b}no\u{200b}re", "ignore"),
            ("ⓘⓖⓝⓞⓡⓔ", "ignore"),
            ("ÍGNÖRÊ prévious", "ignore previous"),
            ("1gn0r3 pr3v10u5", "ignore previous"),
            ("the year 2024 and v4", "the year 2024 and va"),
        ];
        for (input, folded) in cases {
            assert_eq!(Normalized::new(input).text, folded, "{input}");
        }
    }

    #[test]
    fn counts_the_obfuscation() {
        let text = Normalized::new("Plеase іgnore\u{200b} the\u{200b} rules \u{200b}");
        assert_eq!(text.mixed_script_words, 2);
        assert_eq!(text.invisible, 3);
        let tags: String = "hi".chars().map(|c| char::from_u32(0xE0000 + c as u32).unwrap_or(' ')).collect();
        let smuggled = Normalized::new(&format!("ok{tags}"));
        assert_eq!((smuggled.text.as_str(), smuggled.tag_chars), ("okhi", 2));
        assert_eq!(Normalized::new("Привет мир").mixed_script_words, 0);
        assert_eq!(Normalized::new("\u{feff}👨\u{200d}👩 fine").invisible, 0);
    }

    #[test]
    fn maps_folded_bytes_back_to_original_code_points() {
        let original = "é ｉｇ\u{200b}ｎｏｒｅ ж!";
        let folded = Normalized::new(original);
        assert_eq!(folded.text, "e ignore ж!");
        let start = folded.text.find("ignore").unwrap_or(0);
        assert_eq!(folded.original_span(start..start + 6), (2, 9));
        let cyrillic = folded.text.find('ж').unwrap_or(0);
        assert_eq!(folded.original_span(cyrillic..cyrillic + 2), (10, 11));
        assert_eq!(folded.original_span(folded.text.len()..folded.text.len()), (12, 12));
    }

    #[test]
    fn latin_extended_a_table_is_aligned() {
        assert!(matches!(fold('Ł'), Fold::Ascii(b'l')));
        assert!(matches!(fold('ž'), Fold::Ascii(b'z')));
        assert!(matches!(fold('ő'), Fold::Ascii(b'o')));
        assert!(matches!(fold('ſ'), Fold::Ascii(b's')));
        assert!(matches!(fold('Ğ'), Fold::Ascii(b'g')));
    }
}
