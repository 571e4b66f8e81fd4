//! Media the agent makes (CONTRACT §10), as pure decisions: an item's type from its
//! bytes (magic numbers, never its name or the agent's claim), checked against the
//! types Twilio accepts for MMS; the total against `mediaMaxMb`; the item count with
//! `mediaUrls`; and the filename the media route serves it under. A refusal names the
//! item and the rule.

use thiserror::Error;

/// `mediaMaxMb`'s default and maximum: Twilio's 5 MB per message (10^6 bytes a MB).
pub(crate) const MAX_BYTES: u64 = 5_000_000;
/// Media per message, `mediaUrls` and `media` items together (Twilio's `MediaUrl` cap).
pub(crate) const MAX_ITEMS: usize = 10;
/// The longest filename kept in a media URL (longer ones are cut, the extension kept).
const MAX_FILENAME: usize = 40;

/// One item as a source gave it: the bytes, and what it says they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub data: Vec<u8>,
    /// The source's claim: not trusted, only named in errors.
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// An item accepted: its type (from the bytes) and the name it is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub content_type: &'static str,
    pub filename: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(crate) enum Refused {
    #[error("at most {MAX_ITEMS} media items per message ({urls} mediaUrls and {items} media items given)")]
    TooMany { urls: usize, items: usize },
    #[error("media item {index} ({name}) is empty")]
    Empty { index: usize, name: String },
    #[error("media item {index} ({name}) is not a type Twilio accepts for MMS: its bytes are {seen} (accepted: JPEG, PNG, GIF, BMP, TIFF, HEIC, PDF, vCard, iCalendar, common audio and video)")]
    Type {
        index: usize,
        name: String,
        seen: &'static str,
    },
    #[error("media item {index} ({name}) makes the message's media {total} bytes, over mediaMaxMb ({max} bytes)")]
    TooBig {
        index: usize,
        name: String,
        total: u64,
        max: u64,
    },
}

/// How long media is served after Twilio accepted its send (CONTRACT §10: 1 hour);
/// `SMSGATE_MEDIA_TTL_SECS` shortens it for tests, like `SMSGATE_UNKNOWN_SETTLE_MS`.
pub(crate) fn ttl_ms() -> u64 {
    crate::clock::env_span("SMSGATE_MEDIA_TTL_SECS").map_or(3_600_000, |s| s.saturating_mul(1000))
}

/// The longest media waits for its send's final status after the hour (a status
/// callback that never comes must not keep it for ever).
pub(crate) const FINAL_STATUS_WAIT_MS: u64 = 24 * 3_600_000;

/// Whether an item may be deleted (and is no longer served): `accepted_ms` when Twilio
/// accepted its send; `kept` whether that send is still stored (queued, in flight, of
/// unknown outcome, or failed and kept for `queue requeue`); `final_status` whether its
/// SID has a final delivery status. Served for `ttl_ms` after the acceptance, or until
/// the final status if that is later (at most [`FINAL_STATUS_WAIT_MS`]); before its
/// send is accepted, kept while the send is; a send that is gone unaccepted (purged)
/// leaves nothing to fetch it.
pub(crate) fn expired(
    accepted_ms: Option<u64>,
    kept: bool,
    final_status: bool,
    now: u64,
    ttl_ms: u64,
) -> bool {
    match accepted_ms {
        None => !kept,
        Some(at) => {
            let age = now.saturating_sub(at);
            age >= ttl_ms && (final_status || age >= ttl_ms.max(FINAL_STATUS_WAIT_MS))
        }
    }
}

/// The MIME type Twilio accepts for MMS that `data` is, from its first bytes.
pub(crate) fn sniff(data: &[u8]) -> Option<&'static str> {
    let starts = |m: &[u8]| data.starts_with(m);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Some("image/jpeg");
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Some("image/gif");
    }
    if starts(b"BM") && data.len() >= 14 {
        return Some("image/bmp");
    }
    if starts(b"II*\0") || starts(b"MM\0*") {
        return Some("image/tiff");
    }
    if starts(b"%PDF-") {
        return Some("application/pdf");
    }
    if starts(b"OggS") {
        return Some("audio/ogg");
    }
    if starts(b"#!AMR\n") {
        return Some("audio/amr");
    }
    if starts(b"ID3") || (data.len() >= 2 && data[0] == 0xFF && data[1] & 0xE6 == 0xE2) {
        return Some("audio/mpeg");
    }
    if data.len() >= 12 && starts(b"RIFF") && &data[8..12] == b"WAVE" {
        return Some("audio/vnd.wave");
    }
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some("video/webm");
    }
    if data.len() >= 12 && &data[4..8] == b"ftyp" {
        return Some(match &data[8..12] {
            b"qt  " => "video/quicktime",
            b"3gp4" | b"3gp5" | b"3gp6" | b"3ge6" | b"3gs7" => "video/3gpp",
            b"3g2a" | b"3g2b" | b"3g2c" => "video/3gpp2",
            b"M4A " | b"M4B " => "audio/mp4",
            b"heic" | b"heix" | b"heim" | b"heis" => "image/heic",
            b"mif1" | b"msf1" => "image/heif",
            _ => "video/mp4",
        });
    }
    let text = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let head = &text[..text.len().min(16)];
    let upper = head.to_ascii_uppercase();
    if upper.starts_with(b"BEGIN:VCARD") {
        return Some("text/vcard");
    }
    if upper.starts_with(b"BEGIN:VCALENDAR") {
        return Some("text/calendar");
    }
    None
}

/// What bytes that are no accepted type look like, for the error.
fn looks_like(data: &[u8]) -> &'static str {
    if data.starts_with(b"RIFF") && data.get(8..12) == Some(b"WEBP") {
        "WebP (Twilio takes it for WhatsApp stickers only)"
    } else if std::str::from_utf8(&data[..data.len().min(4096)]).is_ok() {
        "plain text"
    } else {
        "of no type Twilio accepts"
    }
}

/// The extension a type is served with when the source named no file.
fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/bmp" => "bmp",
        "image/tiff" => "tiff",
        "image/heic" => "heic",
        "image/heif" => "heif",
        "application/pdf" => "pdf",
        "audio/ogg" => "ogg",
        "audio/amr" => "amr",
        "audio/mpeg" => "mp3",
        "audio/vnd.wave" => "wav",
        "audio/mp4" => "m4a",
        "video/webm" => "webm",
        "video/quicktime" => "mov",
        "video/3gpp" => "3gp",
        "video/3gpp2" => "3g2",
        "text/vcard" => "vcf",
        "text/calendar" => "ics",
        _ => "mp4",
    }
}

/// The filename a media URL ends in: the source's name kept to `[A-Za-z0-9._-]`
/// (Twilio's advice: short, no spaces or specials), cut to [`MAX_FILENAME`]
/// characters, else `media<index>.<ext>`.
pub(crate) fn filename(given: Option<&str>, index: usize, content_type: &str) -> String {
    let base = given
        .map(|g| g.rsplit(['/', '\\']).next().unwrap_or(g))
        .unwrap_or("");
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let clean = clean.trim_start_matches('.');
    if clean.is_empty() || clean.chars().all(|c| c == '_' || c == '.') {
        return format!("media{index}.{}", extension(content_type));
    }
    if clean.len() <= MAX_FILENAME {
        return clean.to_string();
    }
    match clean.rfind('.') {
        Some(dot) if clean.len() - dot <= 8 => {
            let ext = &clean[dot..];
            format!("{}{ext}", &clean[..MAX_FILENAME - ext.len()])
        }
        _ => clean[..MAX_FILENAME].to_string(),
    }
}

/// Checks a message's media: at most [`MAX_ITEMS`] with `urls` (the `mediaUrls`),
/// each of a type Twilio accepts (from its bytes), all together at most `max_bytes`.
/// Items are numbered from 1 in errors.
pub(crate) fn check(
    items: Vec<Item>,
    urls: usize,
    max_bytes: u64,
) -> Result<Vec<Accepted>, Refused> {
    if items.len() + urls > MAX_ITEMS {
        return Err(Refused::TooMany {
            urls,
            items: items.len(),
        });
    }
    let mut total = 0u64;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let index = i + 1;
        let name = item
            .filename
            .clone()
            .map(|n| n.chars().take(60).collect::<String>())
            .unwrap_or_else(|| "no filename".into());
        if item.data.is_empty() {
            return Err(Refused::Empty { index, name });
        }
        let Some(content_type) = sniff(&item.data) else {
            return Err(Refused::Type {
                index,
                name,
                seen: looks_like(&item.data),
            });
        };
        total += item.data.len() as u64;
        if total > max_bytes {
            return Err(Refused::TooBig {
                index,
                name,
                total,
                max: max_bytes,
            });
        }
        out.push(Accepted {
            content_type,
            filename: filename(item.filename.as_deref(), index, content_type),
            data: item.data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_table() {
        let h = 3_600_000;
        // (accepted, kept, final, now, want)
        let cases = [
            (None, true, false, 10 * h, false),
            (None, false, false, 0, true),
            (Some(0), false, true, h - 1, false),
            (Some(0), false, true, h, true),
            (Some(0), false, false, h, false),
            (Some(0), false, false, 24 * h, true),
            (Some(5 * h), true, true, 5 * h + 1, false),
        ];
        for (accepted, kept, fin, now, want) in cases {
            assert_eq!(
                expired(accepted, kept, fin, now, h),
                want,
                "{accepted:?} {kept} {fin} {now}"
            );
        }
    }

    #[test]
    fn sniff_table() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        wav.extend([0; 4]);
        let cases: &[(&[u8], Option<&str>)] = &[
            (&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10], Some("image/jpeg")),
            (&png, Some("image/png")),
            (b"GIF89a\x01\0\x01\0", Some("image/gif")),
            (b"GIF87a\x01\0", Some("image/gif")),
            (b"BM\0\0\0\0\0\0\0\0\0\0\0\0\0\0", Some("image/bmp")),
            (b"BM", None),
            (b"II*\0\x08\0\0\0", Some("image/tiff")),
            (b"%PDF-1.7\n", Some("application/pdf")),
            (b"OggS\0\x02", Some("audio/ogg")),
            (b"ID3\x04\0", Some("audio/mpeg")),
            (&[0xFF, 0xFB, 0x90, 0x64], Some("audio/mpeg")),
            (&wav, Some("audio/vnd.wave")),
            (b"\0\0\0\x18ftypisom\0\0\0\0", Some("video/mp4")),
            (b"\0\0\0\x14ftypqt  \0\0\0\0", Some("video/quicktime")),
            (b"\0\0\0\x18ftypheic\0\0\0\0", Some("image/heic")),
            (b"\0\0\0\x18ftypM4A \0\0\0\0", Some("audio/mp4")),
            (b"BEGIN:VCARD\r\nVERSION:3.0", Some("text/vcard")),
            (b"begin:vcalendar\r\n", Some("text/calendar")),
            (b"hello, this is text pretending to be a PNG", None),
            (b"RIFF\0\0\0\0WEBPVP8 ", None),
            (b"<svg xmlns=", None),
            (b"", None),
        ];
        for (data, want) in cases {
            assert_eq!(sniff(data), *want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn filename_table() {
        let long = format!("{}.png", "a".repeat(60));
        let cases: &[(Option<&str>, &str, String)] = &[
            (Some("chart.png"), "image/png", "chart.png".into()),
            (Some("../../etc/passwd"), "image/png", "passwd".into()),
            (
                Some("my chart (1).png"),
                "image/png",
                "my_chart__1_.png".into(),
            ),
            (Some(".hidden"), "image/png", "hidden".into()),
            (Some(""), "image/jpeg", "media2.jpg".into()),
            (Some("???"), "application/pdf", "media2.pdf".into()),
            (None, "audio/mpeg", "media2.mp3".into()),
            (Some(&long), "image/png", format!("{}.png", "a".repeat(36))),
        ];
        for (given, ty, want) in cases {
            assert_eq!(&filename(*given, 2, ty), want, "{given:?}");
        }
    }

    fn item(data: &[u8], name: &str) -> Item {
        Item {
            data: data.to_vec(),
            content_type: None,
            filename: Some(name.into()),
        }
    }

    #[test]
    fn check_table() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4];
        let ok = check(vec![item(&jpeg, "a.jpg")], 9, 100).expect("fits");
        assert_eq!(ok[0].content_type, "image/jpeg");
        assert_eq!(ok[0].filename, "a.jpg");
        assert_eq!(
            check(vec![item(&jpeg, "a.jpg")], 10, 100),
            Err(Refused::TooMany { urls: 10, items: 1 })
        );
        let e = check(
            vec![item(&jpeg, "a.jpg"), item(b"just text", "b.png")],
            0,
            100,
        )
        .expect_err("text");
        assert_eq!(
            e,
            Refused::Type {
                index: 2,
                name: "b.png".into(),
                seen: "plain text"
            }
        );
        assert!(e.to_string().contains("media item 2 (b.png)"), "{e}");
        let e =
            check(vec![item(&jpeg, "a.jpg"), item(&jpeg, "b.jpg")], 0, 12).expect_err("too big");
        assert_eq!(
            e,
            Refused::TooBig {
                index: 2,
                name: "b.jpg".into(),
                total: 16,
                max: 12
            }
        );
        assert!(e.to_string().contains("mediaMaxMb"), "{e}");
        assert_eq!(
            check(vec![item(b"", "e.png")], 0, 12),
            Err(Refused::Empty {
                index: 1,
                name: "e.png".into()
            })
        );
    }
}
