//! Outbound text: markdown flattening, chunking to a length limit, segment counting.
//!
//! Input: two bytes giving the limit (big-endian, mapped to 1..=1600), then the text
//! (UTF-8; other inputs are skipped). Checked for `prepare_sms` (markdown) and for
//! `chunk` on the raw text:
//! - no chunk is empty or starts/ends with whitespace;
//! - every chunk is at most `limit` UTF-16 units, unless it is a single grapheme
//!   cluster (one cluster longer than the limit cannot be split);
//! - `chunk` keeps the non-whitespace content, in order;
//! - `count_segments` is 0 exactly for the empty text, and its units are the UTF-16
//!   length for UCS-2.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smsgate::text::{self, Encoding};
use unicode_segmentation::UnicodeSegmentation;

fn check_chunks(chunks: &[String], limit: usize, what: &str) {
    for c in chunks {
        assert!(!c.is_empty(), "{what}: empty chunk in {chunks:?}");
        assert_eq!(c.trim(), c, "{what}: chunk {c:?} has outer whitespace");
        let units = text::twilio_length(c);
        assert!(
            units <= limit || c.graphemes(true).count() == 1,
            "{what}: chunk of {units} units over the limit {limit}: {c:?}"
        );
        check_segments(c);
    }
}

fn check_segments(s: &str) {
    let count = text::count_segments(s);
    assert_eq!(count.segments == 0, s.is_empty(), "{s:?}: {count:?}");
    assert_eq!(count.units == 0, s.is_empty(), "{s:?}: {count:?}");
    if count.encoding == Encoding::Ucs2 {
        assert_eq!(
            count.units as usize,
            text::twilio_length(s),
            "{s:?}: {count:?}"
        );
    }
    assert!(count.segments <= count.units.max(1), "{s:?}: {count:?}");
}

fn non_whitespace(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

fuzz_target!(|data: &[u8]| {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let limit = 1 + usize::from(u16::from_be_bytes([*hi, *lo])) % 1600;
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };

    let prepared = text::prepare_sms(input, limit);
    check_chunks(&prepared, limit, "prepare_sms");
    let _ = text::to_sms_text(input);

    let chunks = text::chunk(input, limit);
    check_chunks(&chunks, limit, "chunk");
    assert_eq!(
        non_whitespace(&chunks.concat()),
        non_whitespace(input),
        "chunk lost or reordered content"
    );
    check_segments(input);
});
