//! One serve loop for every TCP listener (webhook, ACME HTTP-01, metrics): a
//! connection cap, one idle clock that covers every stage of a connection, rate-limited
//! log lines for what strangers can cause, and back-off instead of spinning when
//! `accept` fails (EMFILE).
//!
//! It knows nothing of the daemon: each listener passes its [`Limits`], an optional TLS
//! acceptor and a request handler.
//!
//! **Idle clock.** A connection must send the headers of its next request within
//! `idle_timeout` of the moment it became idle: accepted, or its last request answered.
//! That one rule covers a socket that never sends a byte, a slow or stalled TLS
//! handshake, a TLS session idle after its handshake (either ALPN), an HTTP/2
//! connection that sent only its preface and SETTINGS (or only PINGs), trickled
//! HTTP/1 headers, HTTP/1 keep-alive and the gap between HTTP/2 streams, and a client
//! that never reads its response. hyper's own header timeout is not enough: the auto
//! (HTTP/1 or HTTP/2) builder only starts it after the first bytes, and HTTP/2 has
//! none. While a request is in flight the handler bounds it (the webhook reads its body
//! within 10 s); `stall_timeout` is the backstop for a connection that keeps requests
//! in flight without finishing any.
//!
//! **Cap.** At most `max_connections` connections are open. When a new one arrives at
//! the cap, the open connection that has gone longest without finishing a request is
//! closed to make room (idle strangers go first; a fresh connection, such as Twilio's,
//! is the newest and goes last). A connection with a request in flight is only evicted
//! once that request has run for [`BUSY_GRACE`], so an admitted webhook is never cut
//! before its 200. Only when every connection is busy is the new one refused.
//! Refusing at the cap instead would let anyone who holds `max_connections` idle
//! sockets starve Twilio.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::tls::{TlsAcceptor, ACME_TLS_ALPN};
use crate::logging::{suppressed, LogLimiter};

/// A connection with a request in flight for less than this is never evicted: a
/// webhook takes milliseconds, so only a slow (or stalled) one reaches it.
pub const BUSY_GRACE: Duration = Duration::from_secs(5);
/// How long an idle connection told to close gracefully (HTTP/2 GOAWAY) may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long to wait after `accept` fails (EMFILE, ENFILE, ENOBUFS) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Log lines a second, per listener, for connection events strangers can cause.
const LOG_LINES_PER_SECOND: u64 = 5;
/// The idle clock of every listener: the README promises headers within 10 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Backstop for a connection with requests in flight that finishes none.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long draining in-flight requests may take at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// What one listener allows.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Names the listener in log lines (`webhook`, `HTTP-01`, `metrics`).
    pub name: &'static str,
    /// Open connections at most; see the module docs for what happens at the cap.
    pub max_connections: usize,
    /// The next request's headers must arrive within this of the connection going idle.
    pub idle_timeout: Duration,
    /// A connection with requests in flight must finish one within this.
    pub stall_timeout: Duration,
    /// Serve HTTP/2 as well as HTTP/1.1 (the webhook listener only).
    pub http2: bool,
    pub drain_timeout: Duration,
}

impl Limits {
    /// The defaults with this name and cap.
    pub fn new(name: &'static str, max_connections: usize) -> Self {
        Self {
            name,
            max_connections: max_connections.max(1),
            idle_timeout: IDLE_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            http2: false,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

// ---- decisions (pure) -------------------------------------------------------------

/// What a connection is doing, as the idle clock sees it. Times are milliseconds on
/// one monotonic clock ([`now_ms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Requests handed to the handler and not answered yet.
    pub in_flight: usize,
    /// When the connection was accepted or last answered a request.
    pub last_done_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No request headers within `idle_timeout` of going idle.
    Idle,
    /// Requests in flight but none finished within `stall_timeout`.
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Look again at this time (or sooner, when a request finishes).
    KeepUntil(u64),
    Close(CloseReason),
}

/// The idle clock: whether a connection with activity `a` may stay open at `now_ms`.
pub fn judge(limits: &Limits, a: Activity, now_ms: u64) -> Verdict {
    let (limit, reason) = if a.in_flight == 0 {
        (limits.idle_timeout, CloseReason::Idle)
    } else {
        (limits.stall_timeout, CloseReason::Stalled)
    };
    let deadline = a.last_done_ms.saturating_add(millis(limit));
    if now_ms >= deadline {
        Verdict::Close(reason)
    } else {
        Verdict::KeepUntil(deadline)
    }
}

/// Which connection to close so a new one fits under the cap: the one that has gone
/// longest without finishing a request, among those that are idle or busy for longer
/// than [`BUSY_GRACE`]; ties go to the older connection (smaller id). `None` when every
/// connection is busy with a recent request: then the new connection is refused.
pub fn pick_victim(conns: impl IntoIterator<Item = (u64, Activity)>, now_ms: u64) -> Option<u64> {
    conns
        .into_iter()
        .filter(|(_, a)| {
            a.in_flight == 0 || now_ms.saturating_sub(a.last_done_ms) >= millis(BUSY_GRACE)
        })
        .min_by_key(|(id, a)| (a.last_done_ms, *id))
        .map(|(id, _)| id)
}

/// The connection cap a listener can afford: `requested`, but never so many that its
/// sockets plus `reserved` other descriptors (store files, agent and admin sockets, the
/// other listeners, outbound HTTPS) exceed the open-file limit. At least 1.
pub fn affordable_cap(requested: usize, fd_limit: Option<u64>, reserved: usize) -> usize {
    let Some(limit) = fd_limit else {
        return requested.max(1);
    };
    let room = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserved);
    requested.min(room).max(1)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---- the open-file limit ------------------------------------------------------------

/// The soft open-file limit after raising it to the hard one (once per process), or
/// `None` when unlimited or unknown. Every connection is a descriptor; at the usual soft
/// limit of 1024 the default `maxConnections` alone would exhaust it, and then the admin
/// and agent sockets could not accept either.
pub fn fd_limit() -> Option<u64> {
    static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut lim = getrlimit(Resource::Nofile);
        if lim.current < lim.maximum {
            let raised = rustix::process::Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                lim = raised;
            }
        }
        lim.current
    })
}

// ---- the clock ------------------------------------------------------------------------

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds on the monotonic clock [`Activity`] uses.
pub fn now_ms() -> u64 {
    millis(epoch().elapsed())
}

fn instant_at(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(epoch() + Duration::from_millis(ms))
}

// ---- connections ----------------------------------------------------------------------

/// One open connection, shared by its task, its requests and the accept loop.
struct Conn {
    in_flight: AtomicUsize,
    last_done_ms: AtomicU64,
    /// A request finished: the idle clock looks again.
    changed: Notify,
    /// Closed by the cap to make room.
    evicted: Notify,
}

impl Conn {
    fn activity(&self) -> Activity {
        Activity {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            last_done_ms: self.last_done_ms.load(Ordering::SeqCst),
        }
    }
}

/// A request in flight on a connection, from its headers to its answer (or until it is
/// dropped with the connection).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_done_ms.store(now_ms(), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_one();
    }
}

/// The open connections of one listener.
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// How many are open, for draining at shutdown.
    open: watch::Sender<usize>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes its connection from the registry when the connection's task ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut conns = self.registry.lock();
        if conns.remove(&self.id).is_some() {
            self.registry.open.send_replace(conns.len());
        }
    }
}

/// What makes room for a new connection.
enum Admission {
    Room,
    Evicted { idle_ms: u64 },
    Refused,
}

/// Serves `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish (bounded by `limits.drain_timeout`) and returns. `handler` answers
/// each request; TLS, when given, is terminated first (ALPN h2 and http/1.1; a bare
/// `acme-tls/1` handshake is a TLS-ALPN-01 answer and ends there).
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let limits = Arc::new(limits);
    let registry = Arc::new(Registry {
        conns: Mutex::new(HashMap::new()),
        open: watch::channel(0).0,
    });
    let (closing_tx, closing_rx) = watch::channel(false);
    let cap_log = LogLimiter::new(LOG_LINES_PER_SECOND);
    let accept_log = LogLimiter::new(LOG_LINES_PER_SECOND);
    let mut next_id: u64 = 0;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends leave the connection in the backlog, so accepting
                // again at once would spin.
                if let Some(n) = accept_log.allow_now() {
                    tracing::warn!(
                        listener = limits.name,
                        "accept failed: {e}; retrying in {} ms{}",
                        ACCEPT_BACKOFF.as_millis(),
                        suppressed(n)
                    );
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(now_ms()),
            changed: Notify::new(),
            evicted: Notify::new(),
        });
        let admission = {
            let mut conns = registry.lock();
            let admission = if conns.len() < limits.max_connections {
                Admission::Room
            } else {
                let now = now_ms();
                match pick_victim(conns.iter().map(|(id, c)| (*id, c.activity())), now) {
                    Some(victim) => {
                        let idle_ms = conns.remove(&victim).map_or(0, |c| {
                            c.evicted.notify_one();
                            now.saturating_sub(c.activity().last_done_ms)
                        });
                        Admission::Evicted { idle_ms }
                    }
                    None => Admission::Refused,
                }
            };
            if !matches!(admission, Admission::Refused) {
                conns.insert(id, conn.clone());
                registry.open.send_replace(conns.len());
            }
            admission
        };
        match admission {
            Admission::Room => {}
            Admission::Evicted { idle_ms } => {
                if let Some(n) = cap_log.allow_now() {
                    tracing::warn!(
                        listener = limits.name,
                        max = limits.max_connections,
                        "gateway.maxConnections reached: closed the connection that went longest without a request ({:.1} s) to admit {peer}{}",
                        idle_ms as f64 / 1000.0,
                        suppressed(n)
                    );
                }
            }
            Admission::Refused => {
                if let Some(n) = cap_log.allow_now() {
                    tracing::warn!(
                        listener = limits.name,
                        max = limits.max_connections,
                        %peer,
                        "connection refused: gateway.maxConnections reached and every connection has a request in flight{}",
                        suppressed(n)
                    );
                }
                drop(stream);
                continue;
            }
        }
        let _ = stream.set_nodelay(true);
        let registered = Registered {
            registry: registry.clone(),
            id,
        };
        tokio::spawn(connection(
            stream,
            peer,
            tls.clone(),
            conn,
            limits.clone(),
            handler.clone(),
            closing_rx.clone(),
            registered,
        ));
    }
    drop(listener);
    let _ = closing_tx.send(true);
    let mut open = registry.open.subscribe();
    let drained = tokio::time::timeout(limits.drain_timeout, open.wait_for(|n| *n == 0)).await;
    if drained.is_err() {
        tracing::warn!(
            listener = limits.name,
            "some connections were still open after {}s; closing them",
            limits.drain_timeout.as_secs()
        );
    }
}

/// Resolves when the idle clock says the connection must close.
async fn watchdog(conn: &Conn, limits: &Limits) -> CloseReason {
    loop {
        match judge(limits, conn.activity(), now_ms()) {
            Verdict::Close(reason) => return reason,
            Verdict::KeepUntil(at) => {
                // A finished request moves the clock: look again then.
                tokio::select! {
                    () = tokio::time::sleep_until(instant_at(at)) => {}
                    () = conn.changed.notified() => {}
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    conn: Arc<Conn>,
    limits: Arc<Limits>,
    handler: H,
    mut closing: watch::Receiver<bool>,
    _registered: Registered,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let name = limits.name;
    let watch = watchdog(&conn, &limits);
    let mut watch = std::pin::pin!(watch);
    let Some(acceptor) = tls else {
        serve_io(stream, peer, &conn, &limits, handler, closing, watch).await;
        return;
    };
    // The handshake runs on the same idle clock as everything else.
    let handshake = tokio::select! {
        r = acceptor.accept(stream) => r,
        reason = &mut watch => {
            tracing::debug!(listener = name, %peer, ?reason, "closed during the TLS handshake");
            return;
        }
        () = conn.evicted.notified() => return,
        _ = closing.wait_for(|c| *c) => return,
    };
    match handshake {
        Ok(s) if s.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN) => {
            // A CA validating TLS-ALPN-01: the handshake was the answer.
            tracing::debug!(%peer, "answered an acme-tls/1 challenge handshake");
        }
        Ok(s) => serve_io(s, peer, &conn, &limits, handler, closing, watch).await,
        Err(e) => tracing::debug!(listener = name, %peer, "TLS handshake failed: {e}"),
    }
}

async fn serve_io<I, H, F>(
    io: I,
    peer: SocketAddr,
    conn: &Arc<Conn>,
    limits: &Limits,
    handler: H,
    mut closing: watch::Receiver<bool>,
    mut watch: std::pin::Pin<&mut impl Future<Output = CloseReason>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let name = limits.name;
    let requests = conn.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        // Counted from the moment the headers are in, not from the first poll.
        let in_flight = InFlight::start(&requests);
        let answer = handler(req);
        async move {
            let resp = answer.await;
            drop(in_flight);
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(64 * 1024);
    // Bounded so one connection cannot make the daemon buffer much: Twilio sends one
    // small form per request. A stream's window holds one whole webhook body (32 KiB).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(8)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(128 * 1024)
        .max_header_list_size(16 * 1024)
        .max_send_buf_size(64 * 1024);
    let builder = if limits.http2 {
        builder
    } else {
        builder.http1_only()
    };
    let served = builder.serve_connection(TokioIo::new(io), service);
    let mut served = std::pin::pin!(served);
    let grace = tokio::time::sleep(Duration::from_secs(3600));
    let mut grace = std::pin::pin!(grace);
    let (mut closing_idle, mut draining) = (false, false);
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = name, %peer, "connection ended: {e}");
                }
                return;
            }
            reason = watch.as_mut(), if !closing_idle => {
                tracing::debug!(listener = name, %peer, ?reason, "closing the connection");
                closing_idle = true;
                // HTTP/2 gets a GOAWAY; a peer that does not take it is dropped.
                served.as_mut().graceful_shutdown();
                grace.as_mut().reset(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            () = grace.as_mut(), if closing_idle => return,
            () = conn.evicted.notified() => {
                tracing::debug!(listener = name, %peer, "closed to make room under the cap");
                return;
            }
            _ = closing.wait_for(|c| *c), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new("test", 8)
    }

    fn idle(last_done_ms: u64) -> Activity {
        Activity {
            in_flight: 0,
            last_done_ms,
        }
    }

    fn busy(last_done_ms: u64) -> Activity {
        Activity {
            in_flight: 1,
            last_done_ms,
        }
    }

    #[test]
    fn the_idle_clock_closes_idle_and_stalled_connections() {
        let cases = [
            // (activity, now, verdict)
            (idle(0), 0, Verdict::KeepUntil(10_000)),
            (idle(0), 9_999, Verdict::KeepUntil(10_000)),
            (idle(0), 10_000, Verdict::Close(CloseReason::Idle)),
            (idle(5_000), 12_000, Verdict::KeepUntil(15_000)),
            (busy(0), 10_000, Verdict::KeepUntil(30_000)),
            (busy(0), 30_000, Verdict::Close(CloseReason::Stalled)),
            (
                idle(u64::MAX - 1),
                u64::MAX,
                Verdict::Close(CloseReason::Idle),
            ),
        ];
        for (a, now, want) in cases {
            assert_eq!(judge(&limits(), a, now), want, "{a:?} at {now}");
        }
    }

    #[test]
    fn the_cap_evicts_the_connection_longest_without_progress() {
        let now = 100_000;
        type Case<'a> = (&'a [(u64, Activity)], Option<u64>);
        let cases: &[Case] = &[
            (&[], None),
            // Idle strangers go first, the longest idle first.
            (
                &[(1, idle(90_000)), (2, idle(50_000)), (3, idle(99_999))],
                Some(2),
            ),
            // Ties go to the older connection.
            (&[(7, idle(50_000)), (3, idle(50_000))], Some(3)),
            // A fresh request in flight (Twilio's) is never cut...
            (&[(1, busy(99_000)), (2, idle(99_500))], Some(2)),
            (&[(1, busy(99_000)), (2, busy(98_000))], None),
            // ...but one stuck for longer than BUSY_GRACE (a slow body) is fair game.
            (&[(1, busy(90_000)), (2, idle(95_000))], Some(1)),
            (&[(1, busy(95_000)), (2, busy(96_000))], Some(1)),
        ];
        for (conns, want) in cases {
            assert_eq!(pick_victim(conns.iter().copied(), now), *want, "{conns:?}");
        }
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        let cases = [
            (1024, None, 200, 1024),
            (1024, Some(1_048_576), 200, 1024),
            (1024, Some(1024), 200, 824),
            (8, Some(1024), 200, 8),
            (1024, Some(100), 200, 1),
            (1024, Some(u64::MAX), 200, 1024),
        ];
        for (requested, limit, reserved, want) in cases {
            assert_eq!(
                affordable_cap(requested, limit, reserved),
                want,
                "{requested} {limit:?} {reserved}"
            );
        }
    }
}
