//! SMS segment accounting (GSM 03.38 / UCS-2) and Twilio's length measure.

/// The character encoding a carrier will use for a message body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// GSM 03.38 7-bit default alphabet (plus its extension table).
    Gsm7,
    /// UCS-2, used as soon as any character falls outside GSM-7.
    Ucs2,
}

/// How a message body will be split into billable SMS segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCount {
    /// Encoding the whole body needs.
    pub encoding: Encoding,
    /// Number of SMS segments; 0 for an empty body.
    pub segments: u32,
    /// Septets for [`Encoding::Gsm7`], UTF-16 code units for [`Encoding::Ucs2`].
    pub units: u32,
}

/// Septets in a single-segment GSM-7 message.
const GSM7_SINGLE: u32 = 160;
/// Septets per segment once a User Data Header (concatenation) is needed.
const GSM7_MULTI: u32 = 153;
/// UTF-16 units in a single-segment UCS-2 message.
const UCS2_SINGLE: u32 = 70;
/// UTF-16 units per segment of a concatenated UCS-2 message.
const UCS2_MULTI: u32 = 67;

/// Septets `c` costs in GSM-7: 1 for the basic table, 2 for the extension
/// table (escape + code), `None` if GSM-7 cannot encode it.
pub(super) fn gsm7_septets(c: char) -> Option<u32> {
    match c {
        // ASCII ranges of the basic table; note the backtick is *not* in it.
        'A'..='Z' | 'a'..='z' | '0'..='9' => Some(1),
        ' ' | '!' | '"' | '#' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.'
        | '/' | ':' | ';' | '<' | '=' | '>' | '?' | '@' | '$' | '_' | '\n' | '\r' => Some(1),
        // Non-ASCII members of the basic table.
        '£' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | 'Ø' | 'ø' | 'Å' | 'å' | 'Δ' | 'Φ' | 'Γ'
        | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' | '¤' | '¡' | 'Ä'
        | 'Ö' | 'Ñ' | 'Ü' | '§' | '¿' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => Some(1),
        // Extension table: sent as ESC + code, so two septets.
        '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' | '\u{0C}' => Some(2),
        _ => None,
    }
}

/// Count segments by packing `costs` greedily into segments of `per_segment`
/// units without splitting any single item across a boundary (an escaped
/// GSM-7 character or a UTF-16 surrogate pair must stay in one segment).
fn pack(costs: impl Iterator<Item = u32>, per_segment: u32) -> u32 {
    let mut segments = 1;
    let mut used = 0;
    for cost in costs {
        if used + cost > per_segment {
            segments += 1;
            used = 0;
        }
        used += cost;
    }
    segments
}

/// Saturating conversion: bodies anywhere near `u32::MAX` units are not
/// sendable anyway, and this keeps the function panic-free.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// How many SMS segments `text` occupies and in which encoding.
///
/// GSM-7 is used if every character is in the GSM 03.38 basic or extension
/// table (extension characters cost two septets); 160 septets fit one
/// segment, longer bodies use 153-septet segments. Otherwise UCS-2: 70 UTF-16
/// units fit one segment, longer bodies use 67-unit segments. Multi-segment
/// counts are computed by walking the characters, because carriers never
/// split an escape sequence or surrogate pair, so the count can exceed
/// `ceil(units / 153)` (or `/ 67`).
///
/// An empty body reports 0 segments (Twilio rejects empty bodies, so there
/// is nothing to bill) with encoding [`Encoding::Gsm7`].
pub fn count_segments(text: &str) -> SegmentCount {
    let gsm: Option<Vec<u32>> = text.chars().map(gsm7_septets).collect();
    let (encoding, costs, single, multi) = match gsm {
        Some(costs) => (Encoding::Gsm7, costs, GSM7_SINGLE, GSM7_MULTI),
        None => {
            let costs = text.chars().map(|c| to_u32(c.len_utf16())).collect();
            (Encoding::Ucs2, costs, UCS2_SINGLE, UCS2_MULTI)
        }
    };
    let units = costs.iter().fold(0u32, |acc, c| acc.saturating_add(*c));
    let segments = match units {
        0 => 0,
        n if n <= single => 1,
        _ => pack(costs.into_iter(), multi),
    };
    SegmentCount {
        encoding,
        segments,
        units,
    }
}

/// Body length as Twilio measures it against its 1600-character limit:
/// UTF-16 code units (so an emoji outside the BMP counts as 2).
pub fn twilio_length(text: &str) -> usize {
    text.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gsm(segments: u32, units: u32) -> SegmentCount {
        SegmentCount {
            encoding: Encoding::Gsm7,
            segments,
            units,
        }
    }

    fn ucs(segments: u32, units: u32) -> SegmentCount {
        SegmentCount {
            encoding: Encoding::Ucs2,
            segments,
            units,
        }
    }

    #[test]
    fn count_segments_table() {
        let cases: Vec<(String, SegmentCount)> = vec![
            (String::new(), gsm(0, 0)),
            ("a".into(), gsm(1, 1)),
            ("Call me at 5pm, ok?".into(), gsm(1, 19)),
            ("a".repeat(160), gsm(1, 160)),
            ("a".repeat(161), gsm(2, 161)),
            ("a".repeat(306), gsm(2, 306)),
            ("a".repeat(307), gsm(3, 307)),
            // Extension chars cost two septets.
            ("€".into(), gsm(1, 2)),
            ("{}[]~^|\\\u{0C}".into(), gsm(1, 18)),
            ("€".repeat(80), gsm(1, 160)),
            ("€".repeat(81), gsm(2, 162)),
            // The escape pair may not straddle septets 153/154, so it moves to
            // segment 2 and pushes the tail into a third: 3 segments although
            // ceil(306 / 153) == 2.
            ("a".repeat(152) + "€" + &"a".repeat(152), gsm(3, 306)),
            // The whole basic table (128 codes less ESC) is one septet each.
            (
                concat!(
                    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?",
                    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
                )
                .into(),
                gsm(1, 127),
            ),
            // Backtick is not GSM-7.
            ("`".into(), ucs(1, 1)),
            ("ç".into(), ucs(1, 1)),
            ("héllo wörld ✓".into(), ucs(1, 13)),
            ("😀".into(), ucs(1, 2)),
            ("ж".repeat(70), ucs(1, 70)),
            ("ж".repeat(71), ucs(2, 71)),
            ("ж".repeat(134), ucs(2, 134)),
            ("ж".repeat(135), ucs(3, 135)),
            // The surrogate pair may not straddle units 67/68: 3 segments
            // although ceil(134 / 67) == 2.
            ("ж".repeat(66) + "😀" + &"ж".repeat(66), ucs(3, 134)),
            ("😀".repeat(35), ucs(1, 70)),
            ("😀".repeat(36), ucs(2, 72)),
        ];
        for (text, want) in cases {
            assert_eq!(count_segments(&text), want, "text {text:?}");
        }
    }

    #[test]
    fn twilio_length_table() {
        let cases: &[(&str, usize)] = &[
            ("", 0),
            ("abc", 3),
            ("é", 1),
            ("€", 1),
            ("😀", 2),
            ("👨‍👩‍👧", 8),
            ("日本語", 3),
        ];
        for (text, want) in cases {
            assert_eq!(twilio_length(text), *want, "text {text:?}");
        }
    }
}
