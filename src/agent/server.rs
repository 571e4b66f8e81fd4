//! The agent socket: a Unix stream socket (mode 0660) speaking newline-delimited JSON.
//! Each connection has a reader (lines to [`dispatch`]) and a writer (the hub's lines
//! out), so a slow agent never blocks the daemon. The writer also watches whether the
//! agent reads what it is sent: bytes it wrote that stay unread in the socket for
//! [`NOT_READING`] (Linux `TIOCOUTQ`) mean the agent is not reading, as opposed to
//! thinking (it read the message and has not answered yet: model calls take minutes);
//! such a connection is dropped and its messages go to another agent at once.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Notify};

use super::hub::ConnId;
use super::protocol::{self, AgentLine, Answering, LineError, MAX_LINE};
use super::Agents;
use crate::clock::now_ms;
use crate::lines::{Line, Lines};
use crate::outbound::Waiter;
use crate::shutdown::Shutdown;
use crate::store::{AgentFailed, Purpose, MAX_AGENT_FAILURES};

/// How long sent bytes may stay unread before the agent counts as not reading.
pub(crate) const NOT_READING: Duration = Duration::from_secs(30);
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(listener: UnixListener, agents: Arc<Agents>, mut shutdown: Shutdown) {
    while let Some(stream) = crate::unix_socket::accept(&listener, "agent", &mut shutdown).await {
        tokio::spawn(connection(agents.clone(), stream));
    }
}

/// Bytes written to a Unix socket that its peer has not read yet (`None` if the
/// kernel does not say).
fn unread_bytes(fd: std::os::fd::RawFd) -> Option<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (= SIOCOUTQ) writes one int through the pointer, which points
    // to a live c_int; `fd` is an open socket owned by the caller for the call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    (rc == 0).then_some(n.max(0) as u64)
}

/// Why the writer stopped.
enum WriterEnd {
    Closed,
    NotReading(u64),
}

async fn write_lines(
    mut rx: mpsc::Receiver<String>,
    mut write: OwnedWriteHalf,
    limit: Duration,
) -> WriterEnd {
    let fd = write.as_ref().as_raw_fd();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unread_since: Option<Instant> = None;
    let end = loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(mut line) = line else { break WriterEnd::Closed };
                line.push('\n');
                // A full socket buffer blocks the write: past the limit, not reading.
                match tokio::time::timeout(limit, write.write_all(line.as_bytes())).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break WriterEnd::Closed,
                    Err(_) => break WriterEnd::NotReading(limit.as_secs()),
                }
            }
            _ = tick.tick() => {
                match unread_bytes(fd) {
                    Some(n) if n > 0 => {
                        let since = *unread_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= limit {
                            break WriterEnd::NotReading(since.elapsed().as_secs());
                        }
                    }
                    _ => unread_since = None,
                }
            }
        }
    };
    let _ = write.shutdown().await;
    end
}

async fn connection(agents: Arc<Agents>, stream: UnixStream) {
    // Who is on the other end, for `channels status` (Linux peer credentials).
    let pid = stream
        .peer_cred()
        .ok()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok());
    let (conn, rx, answers) = agents.hub.connect(pid);
    let (read, write) = stream.into_split();
    let stop_reading = Arc::new(Notify::new());
    let writer = {
        let (agents, stop) = (agents.clone(), stop_reading.clone());
        tokio::spawn(async move {
            let end = write_lines(rx, write, agents.not_reading_after).await;
            if let WriterEnd::NotReading(secs) = end {
                agents.hub.drop_not_reading(conn, secs);
            }
            stop.notify_one();
        })
    };
    agents.hub.pump();
    // Bounded framing (see `crate::lines`): an agent that never ends a line costs at
    // most MAX_LINE bytes; a line over it, or not UTF-8, is answered and skipped.
    // Past SMALL_LINE a line takes one of BIG_LINES permits shared by every connection:
    // at most that many hold up to MAX_LINE (8 MiB, for media) at once, and one that
    // does not end its line within lines::BIG_LINE_DEADLINE is disconnected.
    let mut lines = Lines::gated(read, SMALL_LINE, MAX_LINE, big_lines());
    let why = loop {
        let read = tokio::select! {
            r = lines.next() => r,
            () = stop_reading.notified() => break "closed by the daemon",
        };
        let refused = |message: String| LineError {
            message,
            reference: None,
            id: None,
        };
        match read {
            Ok(Some(Line::Text(line))) => {
                let line = line.trim();
                if !line.is_empty() {
                    if let Some(a) = dispatch(&agents, conn, line) {
                        answer(&answers, a).await;
                    }
                }
            }
            Ok(Some(Line::NotUtf8)) => {
                let e = refused("line is not valid UTF-8".into());
                answer(&answers, bad_line(&agents, conn, &e)).await;
            }
            Ok(Some(Line::TooLong)) => {
                let e = refused(format!("line longer than {} bytes; skipped", MAX_LINE));
                answer(&answers, bad_line(&agents, conn, &e)).await;
            }
            Ok(None) => break "the agent closed the connection",
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                break "a line over 1 MiB was not finished within 30 s (it held one of the few big-line permits)"
            }
            Err(_) => break "read error",
        }
    };
    agents.hub.disconnect(conn, why);
    super::approvals::closed(&agents, conn);
    // The hub dropped its sender, so the writer drains and ends.
    let _ = writer.await;
}

/// Lines up to this size need no permit.
const SMALL_LINE: usize = 1024 * 1024;
/// Connections that may buffer a line over [`SMALL_LINE`] (up to `MAX_LINE`) at once.
const BIG_LINES: usize = 8;

fn big_lines() -> Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    PERMITS
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(BIG_LINES)))
        .clone()
}

/// Queues an answer to the connection's own line, waiting while its buffer is full.
async fn answer(answers: &mpsc::WeakSender<String>, line: String) {
    if let Some(tx) = answers.upgrade() {
        let _ = tx.send(line).await;
    }
}

/// The answer to a malformed line; its log line is rate-limited (an agent in a loop
/// must not fill the disk).
fn bad_line(agents: &Agents, conn: ConnId, e: &LineError) -> String {
    if let Some(suppressed) = agents.log_limit.allow(crate::clock::now_secs()) {
        let more = if suppressed > 0 {
            format!(" ({suppressed} similar lines suppressed)")
        } else {
            String::new()
        };
        tracing::warn!(conn, "agent sent a bad line: {}{more}", e.message);
    }
    protocol::line_error(e)
}

/// Handles one line from an agent; returns the immediate answer, if any (refusals).
/// Outcomes that come later (`sent`, a failed write) go through the hub.
pub(crate) fn dispatch(agents: &Arc<Agents>, conn: ConnId, line: &str) -> Option<String> {
    let parsed = match protocol::parse(line) {
        Ok(p) => p,
        Err(e) => return Some(bad_line(agents, conn, &e)),
    };
    match parsed {
        AgentLine::Ack { id } => match agents.hub.begin_ack(conn, &id) {
            Ok(acking) => {
                let hub = agents.hub.clone();
                let hub2 = agents.hub.clone();
                let (id_ok, id_fail) = (id.clone(), id);
                agents.writer.submit(
                    "an agent's ack",
                    move |st, hooks| {
                        st.ack(acking.seq)?;
                        let media = acking.msg.media;
                        hooks.after(move || {
                            hub.acked(&id_ok, true);
                            remove_media(&media);
                        });
                        Ok(())
                    },
                    move |_| hub2.acked(&id_fail, false),
                );
                None
            }
            Err(message) => Some(protocol::error_line(&Answering::Id(id), &message, None)),
        },
        AgentLine::Reply {
            id,
            text,
            media_urls,
            media,
        } => reply(agents, conn, id, &text, media_urls, media),
        AgentLine::Fail { id, error, retry } => fail(agents, conn, id, error, retry),
        AgentLine::Hello { kind } => {
            agents.hub.set_kind(conn, kind);
            None
        }
        AgentLine::Ask {
            reference,
            account,
            conversation,
            title,
            detail,
            timeout_secs,
        } => super::approvals::ask(
            agents,
            conn,
            super::approvals::Ask {
                reference,
                account,
                conversation,
                title,
                detail,
                timeout_secs,
            },
        ),
        AgentLine::Cancel { reference } => {
            super::approvals::cancel(agents, conn, reference);
            None
        }
        AgentLine::Send {
            to,
            channel,
            account,
            text,
            reference,
            media_urls,
            media,
        } => {
            let answering = Answering::Ref(reference.clone());
            let purpose = Purpose::Send { reference };
            let config = agents.config.get();
            match agents.outbox.plan(
                &config,
                &agents.store,
                account.as_deref(),
                crate::outbound::Destination {
                    to: to.as_deref(),
                    channel,
                },
                &text,
                media_urls,
                media,
                purpose,
                Waiter::Agent(agents.hub.author(conn, answering.clone())),
            ) {
                Ok(planned) => {
                    write_planned(agents, conn, answering, None, planned);
                    None
                }
                Err(r) => {
                    if r.reason == Some(crate::outbound::NOT_ALLOWED) {
                        not_allowed_logged(agents, conn, account.as_deref(), to.as_deref());
                    }
                    Some(protocol::refusal_line(
                        &answering, &r.message, r.code, r.reason,
                    ))
                }
            }
        }
    }
}

/// The log line of a send `allowTo` refused: the number redacted, rate-limited like
/// bad lines (a hostile agent trying stranger after stranger must not fill the disk).
fn not_allowed_logged(agents: &Agents, conn: ConnId, account: Option<&str>, to: Option<&str>) {
    let Some(suppressed) = agents.log_limit.allow(crate::clock::now_secs()) else {
        return;
    };
    let more = if suppressed > 0 {
        format!(" ({suppressed} similar lines suppressed)")
    } else {
        String::new()
    };
    let to = to.map_or_else(|| "its defaultTo".to_string(), crate::phone::redact_str);
    let account = account.unwrap_or("(default)");
    tracing::warn!(conn, account, to = %to, "the agent's send was refused: the number is not in the account's allowTo (or, with none set, not a person the account knows); nothing was stored or sent{more}");
}

/// The agent could not handle `id`: the store counts the failure and keeps the
/// message for a later delivery, or moves it to the dead letters
/// ([`crate::store::Store::agent_failed`]); the hub then offers it again when due.
fn fail(
    agents: &Arc<Agents>,
    conn: ConnId,
    id: String,
    error: String,
    retry: bool,
) -> Option<String> {
    let failing = match agents.hub.begin_ack(conn, &id) {
        Ok(f) => f,
        Err(message) => return Some(protocol::error_line(&Answering::Id(id), &message, None)),
    };
    let (hub, hub2) = (agents.hub.clone(), agents.hub.clone());
    let id2 = id.clone();
    let first_ms = super::retry_first_ms();
    agents.writer.submit(
        "an agent's fail",
        move |st, hooks| {
            let now = now_ms();
            let outcome =
                st.agent_failed(failing.seq, &failing.msg, &error, retry, now, first_ms)?;
            hooks.after(move || {
                let m = &failing.msg;
                match outcome {
                    AgentFailed::Retry(msg) => {
                        let wait = msg.failures.retry_at_ms.saturating_sub(now) as f64 / 1000.0;
                        tracing::warn!(%id, account = %m.account, from = %m.from.redacted(), failures = msg.failures.count, "the agent could not handle this message ({error}); delivering it again in {wait} s (failure {} of {MAX_AGENT_FAILURES}); the sender's later messages wait behind it", msg.failures.count);
                        hub.failed(&id, Some(msg));
                    }
                    AgentFailed::Dead(msg) => {
                        let why = if retry {
                            format!("after {} failures", msg.failures.count)
                        } else {
                            "at the agent's word (retry: false)".to_string()
                        };
                        tracing::warn!(%id, account = %m.account, from = %m.from.redacted(), "the agent could not handle this message ({error}); moved to the dead letters {why} (`smsgate queue list` shows it as agent-failed, `smsgate queue requeue {id}` delivers it again)");
                        hub.failed(&id, None);
                    }
                }
            });
            Ok(())
        },
        // Not written: offered again as it was (nothing is lost, the count is not
        // raised by a failure the store did not record).
        move |_| hub2.acked(&id2, false),
    );
    None
}

/// A reply counts as the ack, whatever becomes of the reply itself: the ack and the
/// queued parts are one batch.
fn reply(
    agents: &Arc<Agents>,
    conn: ConnId,
    id: String,
    text: &str,
    media_urls: Vec<String>,
    media: Vec<crate::mms::Item>,
) -> Option<String> {
    let answering = Answering::Id(id.clone());
    let acking = agents.hub.begin_ack(conn, &id).ok();
    if acking.is_none() && agents.hub.held_elsewhere(conn, &id) {
        return Some(protocol::error_line(
            &answering,
            &format!("message {id} is being handled by another agent; only the connection it was delivered to may answer it"),
            None,
        ));
    }
    let route = match &acking {
        Some(a) => Some((a.msg.account.clone(), a.msg.from.clone())),
        // A late reply (the message was acknowledged): its route, while it is no older
        // than gateway.agentQueueMaxAge.
        None => {
            let max_age = agents.config.get().gateway.agent_queue_max_age.as_millis() as u64;
            agents
                .store
                .route(&id)
                .ok()
                .flatten()
                .filter(|r| now_ms().saturating_sub(r.at_ms) <= max_age)
                .map(|r| (r.account, r.from))
        }
    };
    let Some((account, to)) = route else {
        return Some(protocol::error_line(
            &answering,
            &format!("unknown message id {id:?}"),
            None,
        ));
    };
    let config = agents.config.get();
    let planned = agents.outbox.plan(
        &config,
        &agents.store,
        Some(&account),
        crate::outbound::Destination::address(to.as_str()),
        text,
        media_urls,
        media,
        Purpose::Reply {
            message_id: id.clone(),
        },
        Waiter::Agent(agents.hub.author(conn, answering.clone())),
    );
    match planned {
        Ok(planned) => {
            write_planned(agents, conn, answering, acking.map(|a| (id, a)), planned);
            None
        }
        Err(r) => {
            if let Some(a) = acking {
                write_planned_ack_only(agents, id, a);
            }
            Some(protocol::refusal_line(
                &answering, &r.message, r.code, r.reason,
            ))
        }
    }
}

fn write_planned_ack_only(agents: &Arc<Agents>, id: String, a: super::hub::Acking) {
    let (hub, hub2) = (agents.hub.clone(), agents.hub.clone());
    let id2 = id.clone();
    agents.writer.submit(
        "an agent's ack",
        move |st, hooks| {
            st.ack(a.seq)?;
            let media = a.msg.media;
            hooks.after(move || {
                hub.acked(&id, true);
                remove_media(&media);
            });
            Ok(())
        },
        move |_| hub2.acked(&id2, false),
    );
}

/// Writes a planned text (with the ack of the message it answers, if any) as one batch.
fn write_planned(
    agents: &Arc<Agents>,
    conn: ConnId,
    answering: Answering,
    ack: Option<(String, super::hub::Acking)>,
    planned: crate::outbound::Planned,
) {
    let (hub, outbox) = (agents.hub.clone(), agents.outbox.clone());
    let (hub2, outbox2) = (agents.hub.clone(), agents.outbox.clone());
    let group = planned.group;
    let ack_id = ack.as_ref().map(|(id, _)| id.clone());
    agents.writer.submit(
        "a queued text",
        move |st, hooks| {
            st.reply_routed(ack.as_ref().map(|(_, a)| a.seq), &planned.records)?;
            // The media in the same batch: a crash after this line loses nothing.
            st.put_media(&planned.media)?;
            let media = ack
                .as_ref()
                .map(|(_, a)| a.msg.media.clone())
                .unwrap_or_default();
            let n = planned.records.len();
            hooks.after(move || {
                if let Some((id, _)) = ack {
                    hub.acked(&id, true);
                    remove_media(&media);
                }
                tracing::debug!(account = %planned.account, to = %planned.to.redacted(), parts = n, "queued for sending");
                outbox.queued(planned.records);
            });
            Ok(())
        },
        move |e| {
            if let Some(id) = ack_id {
                hub2.acked(&id, false);
            }
            outbox2.abandon(group);
            hub2.send_line(
                conn,
                protocol::error_line(&answering, &format!("cannot queue the message: {e}"), None),
            );
        },
    );
}

fn remove_media(media: &[crate::store::Media]) {
    let paths: Vec<std::path::PathBuf> = media
        .iter()
        .filter_map(|m| m.path.as_ref().map(Into::into))
        .collect();
    if !paths.is_empty() {
        crate::twilio::media::remove_files(&paths);
    }
}
