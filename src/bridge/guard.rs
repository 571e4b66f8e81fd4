//! The pure decisions both bridges share: which texts of a burst become one turn
//! (`--coalesce`), and how a long reply is cut (`--max-chars`).

use unicode_segmentation::UnicodeSegmentation;

/// Whether a text that arrived at `next_ms` joins the burst whose latest text arrived at
/// `prev_ms`. A window of 0 turns coalescing off.
pub(crate) fn joins(prev_ms: u64, next_ms: u64, window_ms: u64) -> bool {
    window_ms > 0 && next_ms.saturating_sub(prev_ms) <= window_ms
}

/// How many texts each turn takes, for texts arriving at `arrivals_ms` (in order) when
/// all of them are already waiting. The workers make the same decision one text at a
/// time with [`joins`]; this form is for tests and docs.
#[cfg(test)]
pub(crate) fn bursts(arrivals_ms: &[u64], window_ms: u64) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prev: Option<u64> = None;
    for &t in arrivals_ms {
        match prev {
            Some(p) if joins(p, t, window_ms) => {
                if let Some(last) = out.last_mut() {
                    *last += 1;
                }
            }
            _ => out.push(1),
        }
        prev = Some(t);
    }
    out
}

/// The prompt for a burst: its texts joined by newlines (empty texts, such as a bare
/// picture, are left out of the join).
pub(crate) fn join_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> String {
    texts
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The cost guard: `text` cut to at most `max_chars` characters, ending with "…" when
/// cut, never inside a grapheme (an emoji with a skin tone stays whole). The flag says
/// whether it cut.
pub(crate) fn cap(text: &str, max_chars: usize) -> (String, bool) {
    if text.chars().count() <= max_chars {
        return (text.to_string(), false);
    }
    let budget = max_chars.saturating_sub(1);
    let mut out = String::new();
    let mut used = 0;
    for g in text.graphemes(true) {
        let n = g.chars().count();
        if used + n > budget {
            break;
        }
        out.push_str(g);
        used += n;
    }
    let mut out = out.trim_end().to_string();
    out.push('…');
    (out, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_table() {
        let cases: &[(&[u64], u64, &[usize])] = &[
            // three texts within the window: one turn
            (&[0, 500, 1900], 2000, &[3]),
            // the window runs from the previous text, not the first
            (&[0, 1500, 3000, 4500], 2000, &[4]),
            // a text after the window starts its own turn
            (&[0, 500, 2501], 2000, &[2, 1]),
            // exactly at the window still joins
            (&[0, 2000], 2000, &[2]),
            // 0 = off: every text is a turn
            (&[0, 0, 0], 0, &[1, 1, 1]),
            (&[], 2000, &[]),
            (&[7], 2000, &[1]),
        ];
        for (arrivals, window, want) in cases {
            assert_eq!(bursts(arrivals, *window), *want, "{arrivals:?} / {window}");
        }
        // a clock that went backwards (it cannot with Instant, but still) joins
        assert!(joins(100, 50, 10));
    }

    #[test]
    fn join_table() {
        assert_eq!(
            join_texts(["hey", "can you", "check my 3pm"]),
            "hey\ncan you\ncheck my 3pm"
        );
        assert_eq!(join_texts(["", "x", "  "]), "x");
        assert_eq!(join_texts(Vec::<&str>::new()), "");
    }

    #[test]
    fn cap_table() {
        let cases: &[(&str, usize, &str, bool)] = &[
            ("short", 10, "short", false),
            ("exactly10!", 10, "exactly10!", false),
            ("hello world", 8, "hello w…", true),
            // trailing space before the cut is dropped
            ("hello world", 7, "hello…", true),
            ("ααααα", 3, "αα…", true),
            // a family emoji (several chars, one grapheme) is never split
            ("ab👨‍👩‍👧", 4, "ab…", true),
            ("anything", 1, "…", true),
            ("anything", 0, "…", true),
        ];
        for (text, max, want, cut) in cases {
            assert_eq!(
                cap(text, *max),
                (want.to_string(), *cut),
                "{text:?} / {max}"
            );
        }
        let (long, cut) = cap(&"x".repeat(100_000), 4000);
        assert!(cut);
        assert_eq!(long.chars().count(), 4000);
        assert!(long.ends_with('…'));
    }
}
