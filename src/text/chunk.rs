//! Splitting SMS text into bodies that fit a length limit.

use unicode_segmentation::UnicodeSegmentation;

use super::segments::twilio_length;

/// Split `text` into pieces of at most `limit` Twilio length units (UTF-16
/// code units, see [`twilio_length`]), breaking at the most natural place.
///
/// Rule, applied repeatedly to the (trimmed) remaining text:
///
/// 1. If the rest fits, it is the last chunk.
/// 2. Otherwise take the *window*: the longest prefix that fits, ending on a
///    grapheme-cluster boundary.
/// 3. Cut before the last paragraph break (a whitespace run holding two or
///    more `\n`) that starts inside the window, if that cut keeps at least
///    half of the window; else the last line break (a whitespace run holding
///    a `\n`) under the same condition; else the last whitespace run of any
///    kind. The half-window condition stops a break near the start of the
///    window from producing a pathologically small chunk. A whitespace run
///    starting right after the window counts as "inside" it, so a word that
///    ends exactly at the limit is not split.
/// 4. With no whitespace at all (one long word, CJK text), cut at the window
///    end, which is a grapheme-cluster boundary: surrogate pairs, combining
///    sequences and ZWJ emoji are never split. A single grapheme cluster
///    longer than `limit` becomes a chunk of its own (so `limit == 0` yields
///    one chunk per cluster).
///
/// The whitespace at each cut is dropped and every chunk is trimmed, so no
/// chunk is empty or starts/ends with whitespace, and the non-whitespace
/// content is preserved in order. Empty or all-whitespace text gives an
/// empty vector. No "(1/3)"-style markers are added.
pub fn chunk(text: &str, limit: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let cut = find_cut(rest, limit);
        let (head, tail) = rest.split_at(cut);
        // `rest` starts with non-whitespace and `cut > 0`, so `head` is never
        // empty after trimming.
        chunks.push(head.trim_end().to_string());
        rest = tail.trim_start();
    }
    chunks
}

/// Byte index at which to end the next chunk of `rest` (which is non-empty
/// and starts with non-whitespace). Always `> 0`; `rest.len()` if it all fits.
fn find_cut(rest: &str, limit: usize) -> usize {
    // Longest prefix that fits, on grapheme boundaries.
    let mut window_units = 0;
    let mut window_end = 0;
    for (start, grapheme) in rest.grapheme_indices(true) {
        let units = twilio_length(grapheme);
        if window_units + units > limit {
            break;
        }
        window_units += units;
        window_end = start + grapheme.len();
    }
    if window_end == rest.len() {
        return window_end;
    }
    if window_end == 0 {
        // The first grapheme cluster alone is over the limit.
        return rest
            .graphemes(true)
            .next()
            .map_or(rest.len(), |first| first.len());
    }

    // Last whitespace runs starting within (0, window_end], by kind, as
    // (byte index of the run start, UTF-16 units before it).
    let mut last_paragraph = None;
    let mut last_newline = None;
    let mut last_space = None;
    let mut units = 0;
    let mut chars = rest.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        if index > window_end {
            break;
        }
        if !c.is_whitespace() {
            units += c.len_utf16();
            continue;
        }
        let run = (index, units);
        // Count newlines over the whole run, even past the window: all of it
        // is dropped at the cut, so it all tells what kind of break this is.
        let mut newlines = usize::from(c == '\n');
        units += c.len_utf16();
        while let Some(&(_, next)) = chars.peek() {
            if !next.is_whitespace() {
                break;
            }
            newlines += usize::from(next == '\n');
            units += next.len_utf16();
            chars.next();
        }
        // `rest` starts with non-whitespace, so `index > 0` here.
        last_space = Some(run);
        if newlines >= 1 {
            last_newline = Some(run);
        }
        if newlines >= 2 {
            last_paragraph = Some(run);
        }
    }

    let late_enough = |run: &(usize, usize)| run.1 * 2 >= window_units;
    last_paragraph
        .filter(late_enough)
        .or(last_newline.filter(late_enough))
        .or(last_space)
        .map_or(window_end, |(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// Non-whitespace characters of `s`, in order.
    fn non_whitespace(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// Check every invariant of [`chunk`] for one input.
    fn check_invariants(text: &str, limit: usize, chunks: &[String]) {
        for c in chunks {
            assert!(!c.is_empty(), "empty chunk for {text:?}");
            assert_eq!(c.trim(), c, "untrimmed chunk {c:?}");
            let fits = twilio_length(c) <= limit;
            let single_cluster = c.graphemes(true).count() == 1;
            assert!(
                fits || single_cluster,
                "chunk {c:?} is {} units, limit {limit}",
                twilio_length(c)
            );
        }
        assert_eq!(
            non_whitespace(&chunks.concat()),
            non_whitespace(text),
            "content changed for {text:?}"
        );
    }

    #[test]
    fn chunk_table() {
        let cases: &[(&str, &str, usize, &[&str])] = &[
            // (name, input, limit, expected)
            ("empty", "", 10, &[]),
            ("whitespace only", " \n\t\n ", 10, &[]),
            ("short", "hello", 10, &["hello"]),
            ("short trimmed", "  hello \n", 10, &["hello"]),
            ("exactly limit", "0123456789", 10, &["0123456789"]),
            (
                "one over limit, no spaces",
                "0123456789a",
                10,
                &["0123456789", "a"],
            ),
            ("word ends at limit", "aaaa bbbb", 4, &["aaaa", "bbbb"]),
            ("space split", "aaa bbb ccc ddd", 8, &["aaa bbb", "ccc ddd"]),
            (
                "paragraph beats later newline and space",
                "aaaa bbbb\n\ncc\ndd ee ff",
                16,
                &["aaaa bbbb", "cc\ndd ee ff"],
            ),
            (
                "newline beats later space",
                "aaaa bbbb\ncc dd ee ff",
                16,
                &["aaaa bbbb", "cc dd ee ff"],
            ),
            (
                "early paragraph break ignored",
                "aa\n\nbbbb cccc dddd eeee",
                16,
                &["aa\n\nbbbb cccc", "dddd eeee"],
            ),
            (
                "early newline ignored",
                "aa\nbbbb cccc dddd eeee",
                16,
                &["aa\nbbbb cccc", "dddd eeee"],
            ),
            (
                "paragraphs",
                "First paragraph.\n\nSecond paragraph.\n\nThird.",
                30,
                &["First paragraph.", "Second paragraph.\n\nThird."],
            ),
            (
                "lines",
                "line one\nline two\nline three",
                20,
                &["line one\nline two", "line three"],
            ),
            (
                "crlf paragraph",
                "aaaa bbbb\r\n\r\ncc dd ee ff",
                16,
                &["aaaa bbbb", "cc dd ee ff"],
            ),
            ("long word", "abcdefghij", 4, &["abcd", "efgh", "ij"]),
            (
                "long word between short ones",
                "hi abcdefghij yo",
                6,
                &["hi", "abcdef", "ghij", "yo"],
            ),
            // Surrogate pairs: 😀 is 2 units and must not be split.
            ("emoji at cut", "ab😀cd", 3, &["ab", "😀c", "d"]),
            ("emoji only", "😀😀😀", 3, &["😀", "😀", "😀"]),
            ("emoji after space at cut", "abc 😀😀", 5, &["abc", "😀😀"]),
            // Combining sequences stay whole: e + U+0301 is one cluster.
            (
                "combining at cut",
                "abe\u{301}cd",
                3,
                &["ab", "e\u{301}c", "d"],
            ),
            // ZWJ family (8 units) is one cluster, longer than the limit.
            ("zwj family over limit", "a👨‍👩‍👧b", 4, &["a", "👨‍👩‍👧", "b"]),
            ("zwj family at cut", "abc👨‍👩‍👧", 9, &["abc", "👨‍👩‍👧"]),
            ("zwj family fits", "a👨‍👩‍👧", 9, &["a👨‍👩‍👧"]),
            ("cjk", "你好世界你好世界", 3, &["你好世", "界你好", "世界"]),
            ("limit zero", "ab c", 0, &["a", "b", "c"]),
        ];
        for (name, input, limit, want) in cases {
            let got = chunk(input, *limit);
            assert_eq!(got, *want, "case {name}");
            check_invariants(input, *limit, &got);
        }
    }

    #[test]
    fn long_reply_1500() {
        // ~5,000 characters of prose with paragraphs and lines.
        let mut text = String::new();
        let mut n = 0;
        while text.chars().count() < 5000 {
            n += 1;
            text.push_str(&format!("Sentence number {n} says something useful. "));
            if n % 7 == 0 {
                text.push('\n');
            }
            if n % 19 == 0 {
                text.push_str("\n\n");
            }
        }
        let chunks = chunk(&text, 1500);
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        for c in &chunks {
            assert!(twilio_length(c) <= 1500);
            // Greedy with the half-window rule: never pathologically small,
            // except possibly the last one.
            assert!(twilio_length(c) >= 750 || c == chunks.last().unwrap_or(c));
            // Whole words only.
            assert!(c.ends_with('.'), "chunk ends mid-sentence: {c:?}");
        }
        check_invariants(&text, 1500, &chunks);
    }

    #[test]
    fn single_long_word_1500() {
        let word = "x".repeat(2000);
        let chunks = chunk(&word, 1500);
        assert_eq!(chunks, vec!["x".repeat(1500), "x".repeat(500)]);
        check_invariants(&word, 1500, &chunks);
    }

    #[test]
    fn emoji_word_splits_on_pairs() {
        // 2000 units of emoji: an odd limit must not split a surrogate pair.
        let text = "🙂".repeat(1000);
        let chunks = chunk(&text, 1599);
        assert_eq!(chunks.len(), 2);
        assert_eq!(twilio_length(&chunks[0]), 1598);
        check_invariants(&text, 1599, &chunks);
    }

    #[test]
    fn cjk_1600() {
        let text = "日本語のテキストは空白なしで続きます。".repeat(200);
        let chunks = chunk(&text, 1600);
        assert_eq!(chunks.len(), 3);
        assert_eq!(twilio_length(&chunks[0]), 1600);
        assert_eq!(twilio_length(&chunks[1]), 1600);
        check_invariants(&text, 1600, &chunks);
    }

    #[test]
    fn family_emoji_at_1600_boundary() {
        let text = "a".repeat(1595) + "👨‍👩‍👧" + " tail";
        let chunks = chunk(&text, 1600);
        assert_eq!(chunks, vec!["a".repeat(1595), "👨‍👩‍👧 tail".to_string()]);
        check_invariants(&text, 1600, &chunks);
    }

    /// Text made of the things that make splitting hard.
    fn tricky_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[a-z]{1,12}",
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("\n\n".to_string()),
            Just("\r\n".to_string()),
            Just("\t".to_string()),
            Just("😀".to_string()),
            Just("👨‍👩‍👧".to_string()),
            Just("e\u{301}".to_string()),
            Just("\u{301}".to_string()),
            Just("🇫🇷".to_string()),
            Just("日本語".to_string()),
            Just("\u{a0}".to_string()),
            Just("\u{3000}".to_string()),
        ];
        prop::collection::vec(piece, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn chunk_invariants_arbitrary(text in any::<String>(), limit in 1usize..200) {
            check_invariants(&text, limit, &chunk(&text, limit));
        }

        #[test]
        fn chunk_invariants_tricky(text in tricky_text(), limit in 1usize..200) {
            check_invariants(&text, limit, &chunk(&text, limit));
        }
    }
}
