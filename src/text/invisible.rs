//! Characters that show nothing on a phone but still reach Twilio: C0/C1 controls,
//! bidi overrides, isolates and marks, zero-width characters. One of them in an
//! otherwise GSM-7 text forces the whole message into UCS-2 (70 instead of 160
//! characters a segment, so up to ~2.3× the cost), and bidi controls can make a text
//! read differently from what it says ("Trojan Source"). They are removed from every
//! outgoing text before it is segmented.

/// Whether `c` is removed wherever it stands. Newline and tab are kept (layout);
/// a carriage return is handled by [`strip_invisible`] (it becomes a newline unless a
/// newline follows).
fn always_removed(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c,
            // bidi embeddings and overrides (LRE, RLE, PDF, LRO, RLO)
            '\u{202A}'..='\u{202E}'
            // bidi isolates (LRI, RLI, FSI, PDI)
            | '\u{2066}'..='\u{2069}'
            // bidi marks (LRM, RLM, ALM): as invisible and as misleading
            | '\u{200E}' | '\u{200F}' | '\u{061C}'
            // zero-width space, word joiner, BOM / zero-width no-break space
            | '\u{200B}' | '\u{2060}' | '\u{FEFF}'
            // invisible operators (function application, times, separator, plus)
            | '\u{2061}'..='\u{2064}')
}

/// Whether `c` needs UCS-2 by itself (GSM-7 cannot carry it).
fn needs_ucs2(c: char) -> bool {
    super::segments::gsm7_septets(c).is_none() && c != '\t'
}

/// `text` without invisible characters (see the module). The joiners ZWNJ (U+200C)
/// and ZWJ (U+200D) are kept only between two characters that need UCS-2 anyway:
/// there they shape what the reader sees (emoji sequences like 👨‍👩‍👧, Persian
/// half-spaces, Indic conjuncts) and cost nothing, as the message is UCS-2 already;
/// anywhere else (`he\u{200D}llo`) they are removed. A lone carriage return becomes a
/// newline, `\r\n` a newline.
pub fn strip_invisible(text: &str) -> String {
    let fast = text
        .chars()
        .all(|c| !always_removed(c) && c != '\u{200C}' && c != '\u{200D}');
    if fast {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\r' => {
                if chars.get(i + 1) != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\u{200C}' | '\u{200D}' => {
                // The nearest visible neighbours, skipping other joiners and what is
                // removed anyway (a family emoji chains several ZWJs; a variation
                // selector sits between an emoji and its ZWJ).
                let visible =
                    |c: &&char| !always_removed(**c) && !matches!(**c, '\u{200C}' | '\u{200D}');
                let before = chars[..i].iter().rev().find(visible);
                let after = chars[i + 1..].iter().find(visible);
                if matches!((before, after), (Some(b), Some(a)) if needs_ucs2(*b) && needs_ucs2(*a))
                {
                    out.push(c);
                }
            }
            c if always_removed(c) => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{count_segments, Encoding};

    #[test]
    fn strip_invisible_table() {
        let cases: &[(&str, &str)] = &[
            ("plain text", "plain text"),
            ("", ""),
            ("tab\tand\nnewline", "tab\tand\nnewline"),
            ("crlf\r\nline", "crlf\nline"),
            ("old\rmac", "old\nmac"),
            (
                "bell\u{7}nul\u{0}esc\u{1b}[31m del\u{7f} c1\u{85}\u{9b}",
                "bellnulesc[31m del c1",
            ),
            ("form\u{0C}feed vt\u{0B}", "formfeed vt"),
            (
                "bidi \u{202A}a\u{202B}b\u{202C}c\u{202D}d\u{202E}e",
                "bidi abcde",
            ),
            ("iso \u{2066}a\u{2067}b\u{2068}c\u{2069}", "iso abc"),
            ("marks \u{200E}a\u{200F}b\u{061C}c", "marks abc"),
            ("zw\u{200B}sp wj\u{2060} bom\u{FEFF}", "zwsp wj bom"),
            ("\u{FEFF}starts with a BOM", "starts with a BOM"),
            ("f\u{2061}x", "fx"),
            // Joiners between Latin letters are what forces UCS-2: removed.
            ("he\u{200D}llo wo\u{200C}rld", "hello world"),
            ("edge\u{200D}", "edge"),
            ("\u{200C}edge", "edge"),
            ("😀\u{200D}a", "😀a"),
            // Between two characters that need UCS-2 anyway, kept.
            ("👨\u{200D}👩\u{200D}👧", "👨\u{200D}👩\u{200D}👧"),
            ("❤\u{FE0F}\u{200D}🔥", "❤\u{FE0F}\u{200D}🔥"),
            ("👨\u{200D}\u{200B}👩", "👨\u{200D}👩"),
            ("می\u{200C}خواهم", "می\u{200C}خواهم"),
            ("क्\u{200D}ष", "क्\u{200D}ष"),
            // Visible text is untouched, GSM-7 or not.
            (
                "¡Olé! 1 € ~ [x] {y} ünïcødé 日本語 😀",
                "¡Olé! 1 € ~ [x] {y} ünïcødé 日本語 😀",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(strip_invisible(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn a_hidden_character_no_longer_forces_ucs2() {
        let hidden = "Your order\u{200B} is ready\u{202E}\u{FEFF}\u{2066}.\u{7}";
        assert_eq!(count_segments(hidden).encoding, Encoding::Ucs2);
        let clean = strip_invisible(hidden);
        assert_eq!(clean, "Your order is ready.");
        assert_eq!(count_segments(&clean).encoding, Encoding::Gsm7);
    }

    #[test]
    fn nothing_removable_survives_any_input() {
        // Every code point of the ranges in question, alone and between letters and
        // between emoji: what comes out keeps no control other than \n and \t, and no
        // bidi or zero-width character other than a joiner between UCS-2 neighbours.
        let suspects: Vec<char> = (0u32..0x100)
            .chain(0x2000..0x2070)
            .chain([0x061C, 0xFEFF])
            .filter_map(char::from_u32)
            .collect();
        for &c in &suspects {
            for input in [format!("{c}"), format!("a{c}b"), format!("😀{c}😀")] {
                let out = strip_invisible(&input);
                for o in out.chars() {
                    assert!(!always_removed(o), "{input:?} -> {out:?}");
                    if matches!(o, '\u{200C}' | '\u{200D}') {
                        assert!(input.starts_with('😀'), "{input:?} -> {out:?}");
                    }
                }
            }
        }
    }
}
