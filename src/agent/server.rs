//! The agent socket: a Unix stream socket (mode 0660) speaking newline-delimited JSON.
//! Each connection has a reader (lines to the hub) and a writer (the hub's lines out),
//! so a slow agent never blocks the daemon.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};

use super::protocol::{self, LineError, MAX_LINE};
use crate::daemon::{App, Shutdown};

pub async fn run(listener: UnixListener, app: Arc<App>, mut shutdown: Shutdown) {
    while let Some(stream) = crate::unix_socket::accept(&listener, "agent", &mut shutdown).await {
        tokio::spawn(connection(app.clone(), stream));
    }
}

enum Read {
    Line,
    TooLong,
    Eof,
}

/// Reads one line into `buf` (without the newline), refusing lines over [`MAX_LINE`].
async fn read_line(r: &mut BufReader<OwnedReadHalf>, buf: &mut Vec<u8>) -> std::io::Result<Read> {
    buf.clear();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(Read::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Read::Line);
    }
    if buf.len() <= MAX_LINE {
        return Ok(Read::Line);
    }
    // Too long: skip through the end of this line.
    loop {
        let mut junk = Vec::new();
        let n = (&mut *r)
            .take(64 * 1024)
            .read_until(b'\n', &mut junk)
            .await?;
        if n == 0 || junk.last() == Some(&b'\n') {
            break;
        }
    }
    buf.clear();
    Ok(Read::TooLong)
}

async fn connection(app: Arc<App>, stream: UnixStream) {
    let (conn, mut rx) = app.agents.connect();
    let (read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(mut line) = rx.recv().await {
            line.push('\n');
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    app.agents.pump(&app);
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        match read_line(&mut reader, &mut buf).await {
            Ok(Read::Line) => {
                let line = match std::str::from_utf8(&buf) {
                    Ok(l) => l.trim(),
                    Err(_) => {
                        let e = LineError {
                            message: "line is not valid UTF-8".into(),
                            reference: None,
                            id: None,
                        };
                        app.agents.send_line(conn, protocol::line_error(&e));
                        continue;
                    }
                };
                if !line.is_empty() {
                    app.agents.handle_line(&app, conn, line);
                }
            }
            Ok(Read::TooLong) => {
                let e = LineError {
                    message: format!("line longer than {} bytes; skipped", MAX_LINE),
                    reference: None,
                    id: None,
                };
                app.agents.send_line(conn, protocol::line_error(&e));
            }
            Ok(Read::Eof) | Err(_) => break,
        }
    }
    app.agents.disconnect(&app, conn);
    // The hub dropped its sender, so the writer drains and ends.
    let _ = writer.await;
}
