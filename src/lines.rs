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
pub(crate) enum Line {
    /// A line, without its `\n` (and a `\r` before it).
    Text(String),
    /// A line over the maximum: reported when the maximum is passed; the rest of it,
    /// through its newline, is discarded.
    TooLong,
    /// A line that is not valid UTF-8 (skipped).
    NotUtf8,
}

/// Reads lines of at most `max` bytes from `R`.
pub(crate) struct Lines<R> {
    read: R,
    buf: BytesMut,
    codec: LinesCodec,
    eof: bool,
    gate: Option<Gate>,
}

/// Lines over `small` bytes need one of a few shared permits (many connections must
/// not each buffer `max` bytes): buffering past `small` waits for a permit, held until
/// the buffer is back under `small`.
struct Gate {
    small: usize,
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    held: Option<(tokio::sync::OwnedSemaphorePermit, tokio::time::Instant)>,
    /// How long a permit may be held: a reader that takes longer to end its big line
    /// gets a `TimedOut` error (the connection ends), so a few stalled readers cannot
    /// keep every permit.
    deadline: std::time::Duration,
}

/// [`Gate::deadline`] of [`Lines::gated`].
pub(crate) const BIG_LINE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Bytes asked of the reader at a time.
const CHUNK: usize = 8 * 1024;

impl<R: AsyncRead + Unpin> Lines<R> {
    pub(crate) fn new(read: R, max: usize) -> Self {
        Self {
            read,
            buf: BytesMut::new(),
            codec: LinesCodec::new_with_max_length(max),
            eof: false,
            gate: None,
        }
    }

    /// Like [`Lines::new`], but buffering more than `small` bytes takes one of
    /// `permits` (waiting for one): at most that many readers hold up to `max` at once.
    pub(crate) fn gated(
        read: R,
        small: usize,
        max: usize,
        permits: std::sync::Arc<tokio::sync::Semaphore>,
    ) -> Self {
        let mut lines = Self::new(read, max);
        lines.gate = Some(Gate {
            small,
            permits,
            held: None,
            deadline: BIG_LINE_DEADLINE,
        });
        lines
    }

    /// Changes how long a big-line permit may be held (tests).
    #[cfg(test)]
    pub(crate) fn with_deadline(mut self, deadline: std::time::Duration) -> Self {
        if let Some(g) = &mut self.gate {
            g.deadline = deadline;
        }
        self
    }

    /// Takes a permit before the buffer grows past `small`; gives it back below it.
    async fn pass_gate(&mut self) {
        let len = self.buf.len();
        let Some(gate) = &mut self.gate else { return };
        if len < gate.small {
            gate.held = None;
        } else if gate.held.is_none() {
            // The semaphore is never closed: `acquire_owned` fails only when closed.
            gate.held = gate
                .permits
                .clone()
                .acquire_owned()
                .await
                .ok()
                .map(|p| (p, tokio::time::Instant::now() + gate.deadline));
        }
    }

    /// When the permit held (if any) runs out.
    fn permit_deadline(&self) -> Option<tokio::time::Instant> {
        self.gate.as_ref()?.held.as_ref().map(|(_, at)| *at)
    }

    /// The next line; `None` at the end of the stream (a last line without a newline
    /// is still given).
    pub(crate) async fn next(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            let decoded = if self.eof {
                self.codec.decode_eof(&mut self.buf)
            } else {
                self.codec.decode(&mut self.buf)
            };
            match decoded {
                Ok(Some(line)) => {
                    self.pass_gate().await;
                    return Ok(Some(Line::Text(line)));
                }
                Ok(None) if self.eof => return Ok(None),
                Ok(None) => {}
                Err(LinesCodecError::MaxLineLengthExceeded) => {
                    self.pass_gate().await;
                    return Ok(Some(Line::TooLong));
                }
                Err(LinesCodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Ok(Some(Line::NotUtf8))
                }
                Err(LinesCodecError::Io(e)) => return Err(e),
            }
            self.pass_gate().await;
            self.buf.reserve(CHUNK);
            let n = match self.permit_deadline() {
                None => self.read.read_buf(&mut self.buf).await?,
                Some(at) => tokio::time::timeout_at(at, self.read.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "a long line was not finished in time",
                        )
                    })??,
            };
            if n == 0 {
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

    /// Past `small` bytes a reader needs a permit: with one permit, a second reader's
    /// big line waits until the first reader's is done; small lines never wait.
    #[tokio::test]
    async fn big_lines_wait_for_a_permit() {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let (mut w1, r1) = tokio::io::duplex(64 * 1024);
        let (mut w2, r2) = tokio::io::duplex(64 * 1024);
        let mut a = Lines::gated(r1, 16, 1 << 20, permits.clone());
        let mut b = Lines::gated(r2, 16, 1 << 20, permits.clone());
        use tokio::io::AsyncWriteExt;
        // a: half of a big line, so it holds the permit.
        w1.write_all(&[b'x'; 40_000]).await.expect("write");
        let a_task = tokio::spawn(async move { (a.next().await, a) });
        while permits.available_permits() == 1 {
            tokio::task::yield_now().await;
        }
        w2.write_all(b"small\n").await.expect("write");
        assert_eq!(b.next().await.expect("read"), Some(t("small")));
        w2.write_all(&[b'y'; 40_000]).await.expect("write");
        w2.write_all(b"\n").await.expect("write");
        let b_task = tokio::spawn(async move {
            b.next()
                .await
                .map(|l| matches!(l, Some(Line::Text(s)) if s.len() == 40_000))
        });
        tokio::task::yield_now().await;
        assert!(!b_task.is_finished(), "b waits for the permit");
        w1.write_all(b"\n").await.expect("write");
        let (got, _a) = a_task.await.expect("task");
        assert!(matches!(got.expect("read"), Some(Line::Text(s)) if s.len() == 40_000));
        assert!(b_task.await.expect("task").expect("read"));
    }

    /// A reader that holds a permit and stalls mid-line gets `TimedOut`, and its permit
    /// goes back.
    #[tokio::test]
    async fn a_stalled_big_line_loses_its_permit() {
        use tokio::io::AsyncWriteExt;
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let mut a = Lines::gated(r, 16, 1 << 20, permits.clone())
            .with_deadline(std::time::Duration::from_millis(50));
        w.write_all(&[b'x'; 1000]).await.expect("write");
        let e = a.next().await.expect_err("stalled");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        drop(a);
        assert_eq!(permits.available_permits(), 1);
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
