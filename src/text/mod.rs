//! Turning an agent's markdown reply into SMS-ready text.
//!
//! Everything here is pure (no I/O, no async) so the outbound path can be
//! tested without Twilio:
//!
//! * [`to_sms_text`] flattens markdown into plain text, because phones render
//!   `**bold**` and `[label](url)` literally.
//! * [`chunk()`] splits long text into bodies that each fit a length limit
//!   counted the way Twilio counts `Body` (UTF-16 code units).
//! * [`count_segments`] / [`twilio_length`] report how a body will be billed
//!   and measured.
//! * [`strip_invisible`] removes controls, bidi and zero-width characters: they
//!   show nothing, force UCS-2 and can make a text read other than it says.
//! * [`prepare_sms`] is the whole pipeline: strip, flatten, then chunk.

mod chunk;
mod invisible;
mod markdown;
mod segments;

pub use chunk::chunk;
pub use invisible::strip_invisible;
pub use markdown::{to_sms_text, to_whatsapp_text};
pub use segments::{count_segments, twilio_length, Encoding, SegmentCount};

/// Strip invisible characters from `markdown`, flatten it to SMS text and split it
/// into bodies of at most `limit` Twilio length units (see [`chunk()`] for the exact
/// splitting rule). Stripping comes first, so markdown syntax split by a zero-width
/// character (`*\u{200B}*bold**`) is seen as what the reader sees.
///
/// Returns an empty vector when there is nothing to send.
pub fn prepare_sms(markdown: &str, limit: usize) -> Vec<String> {
    chunk(&to_sms_text(&strip_invisible(markdown)), limit)
}

/// [`prepare_sms`] for WhatsApp (CONTRACT §12): markdown converted to WhatsApp's
/// formatting, not flattened; split at `limit` like SMS (Twilio's `Body` takes 1,600
/// characters on both).
pub fn prepare_whatsapp(markdown: &str, limit: usize) -> Vec<String> {
    chunk(&to_whatsapp_text(&strip_invisible(markdown)), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_sms_table() {
        let cases: &[(&str, usize, &[&str])] = &[
            ("", 1600, &[]),
            ("   \n\n ", 1600, &[]),
            ("**Hi** there", 1600, &["Hi there"]),
            ("# Title\n\nBody text.", 1600, &["Title\n\nBody text."]),
            ("# Title\n\nBody text.", 10, &["Title", "Body text."]),
            ("- one\n- two\n- three", 12, &["• one\n• two", "• three"]),
            (
                "See [docs](https://example.com/docs) now",
                1600,
                &["See docs (https://example.com/docs) now"],
            ),
            ("\u{200B}", 1600, &[]),
            ("**Hi**\u{202E} there\u{7}", 1600, &["Hi there"]),
        ];
        for (input, limit, want) in cases {
            assert_eq!(prepare_sms(input, *limit), *want, "input {input:?}");
        }
    }

    #[test]
    fn prepared_chunks_respect_limit() {
        let md = "## Plan\n\n".to_string() + &"Some *words* here. ".repeat(300);
        let chunks = prepare_sms(&md, 1600);
        assert!(chunks.len() > 1);
        for c in &chunks {
            assert!(twilio_length(c) <= 1600);
            assert!(!c.contains('*'));
        }
    }
}
