//! Bounded line framing for every newline-delimited stream we read: the agent socket
//! (the daemon's side, and the bridges' and `agent exec`'s side of it) and an ACP
//! agent's stdout. Framing is tokio-util's [`LinesCodec`] with a maximum length: a peer
//! that never sends a newline costs at most `max` bytes of buffer, a line over it is
//! reported once and skipped through its newline (the connection goes on), and a line
//! that is not UTF-8 is reported and skipped likewise. The codec is driven directly
//! rather than through `FramedRead`, which ends the stream after any decode error.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{Decoder, LinesCodec, LinesCodecError};

/// What one read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its `\n` (and a `\r` before it).
    Text(String),
    /// A line over the maximum: reported when the maximum is passed; the rest of it,
    /// through its newline, is discarded.
    TooLong,
    /// A line that is not valid UTF-8 (skipped).
    NotUtf8,
}

/// Reads lines of at most `max` bytes from `R`.
pub struct Lines<R> {
    read: R,
    buf: BytesMut,
    codec: LinesCodec,
    eof: bool,
}

/// Bytes asked of the reader at a time.
const CHUNK: usize = 8 * 1024;

impl<R: AsyncRead + Unpin> Lines<R> {
    pub fn new(read: R, max: usize) -> Self {
        Self {
            read,
            buf: BytesMut::new(),
            codec: LinesCodec::new_with_max_length(max),
            eof: false,
        }
    }

    /// The next line; `None` at the end of the stream (a last line without a newline
    /// is still given).
    pub async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let decoded = if self.eof {
                self.codec.decode_eof(&mut self.buf)
            } else {
                self.codec.decode(&mut self.buf)
            };
            match decoded {
                Ok(Some(line)) => return Ok(Some(Line::Text(line))),
                Ok(None) if self.eof => return Ok(None),
                Ok(None) => {}
                Err(LinesCodecError::MaxLineLengthExceeded) => return Ok(Some(Line::TooLong)),
                Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Ok(Some(Line::NotUtf8))
                }
                Err(LinesCodecError::Io(e)) => return Err(e),
            }
            self.buf.reserve(CHUNK);
            if self.read.read_buf(&mut self.buf).await? == 0 {
                self.eof = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize) -> Vec<Line> {
        let mut lines = Lines::new(input, max);
        let mut out = Vec::new();
        while let Some(l) = lines.next().await.expect("read") {
            out.push(l);
        }
        out
    }

    fn t(s: &str) -> Line {
        Line::Text(s.to_string())
    }

    #[tokio::test]
    async fn lines_table() {
        let cases: &[(&[u8], usize, Vec<Line>)] = &[
            (b"", 8, vec![]),
            (b"a\nb\n", 8, vec![t("a"), t("b")]),
            (b"a\r\nb", 8, vec![t("a"), t("b")]),
            (b"\n\n", 8, vec![t(""), t("")]),
            (b"12345678\n", 8, vec![t("12345678")]),
            (
                b"short\nthis one is too long\nok\n",
                8,
                vec![t("short"), Line::TooLong, t("ok")],
            ),
            (b"0123456789", 8, vec![Line::TooLong]),
            (b"\xff\xfe\nok\n", 8, vec![Line::NotUtf8, t("ok")]),
        ];
        for (input, max, want) in cases {
            assert_eq!(
                &all(input, *max).await,
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// A line far over the maximum, arriving in small pieces, is reported once and
    /// never buffered whole.
    #[tokio::test]
    async fn a_huge_line_in_pieces_is_one_too_long_and_bounded() {
        let (mut w, r) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for _ in 0..1000 {
                w.write_all(&[b'x'; 1024]).await.expect("write");
            }
            w.write_all(b"\nafter\n").await.expect("write");
        });
        let mut lines = Lines::new(r, 4096);
        assert_eq!(lines.next().await.expect("read"), Some(Line::TooLong));
        assert_eq!(lines.next().await.expect("read"), Some(t("after")));
        assert!(lines.buf.capacity() < 64 * 1024, "{}", lines.buf.capacity());
        assert_eq!(lines.next().await.expect("read"), None);
        writer.await.expect("writer");
    }
}
