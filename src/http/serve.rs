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
//! none.
//!
//! **Rate and deadline.** Every request must also arrive at a minimum rate
//! ([`MIN_BYTES_PER_SEC`] after [`RATE_GRACE`], counted on the socket from its first
//! byte: TLS handshake, headers and body alike) and have its body complete within
//! [`REQUEST_TIMEOUT`] of its first byte; otherwise it is dropped without an answer
//! ([`judge`]). A request whose body has been read to its end is the server's work and
//! is judged only by the `stall_timeout` backstop. The serve loop learns that the body
//! ended from the [`Body`] it hands the handler, so this holds for every listener.
//!
//! **Cap.** At most `max_connections` connections are open. When a new one arrives at
//! the cap, an open one is closed to make room ([`pick_victim`]): never one processing
//! a request; young ones (within [`YOUNG`]) last; first one of an address holding more
//! than its [`fair_share`] (an address at its share can only replace its own), then the
//! slowest (a connection mid-body but trickling is fair game), then the longest at it.
//! Among young connections only age counts (a fresh connection's byte rate is 0 until
//! it is read: ranking young ones by rate cut Twilio's first, 43 of 50 in the flood
//! test). An address cut before it ever answered a request is on [`PROBATION`], a
//! guard against a cascade of attackers reconnecting at once. Behind `gateway.trustedProxies` the address is the forwarded client's.
//! Refusing at the cap instead (as long ago) let anyone holding `max_connections` idle
//! sockets starve Twilio; protecting any request in flight for 5 s (as before) let 64
//! addresses trickling bodies at a byte a second do the same. Each eviction or refusal
//! is a log line, at most [`LOG_LINES_PER_SECOND`] a second per listener with a count of
//! those suppressed.
//!
//! **Descriptors.** Every connection is one. [`fd_limit`] raises the soft open-file
//! limit to the hard one, and the webhook listener's cap is fitted under it
//! ([`affordable_cap`]), so a full listener never leaves the admin and agent sockets
//! unable to accept.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::forwarded::{Origin, TrustedProxies};
use super::tls::{TlsAcceptor, ACME_TLS_ALPN};
use crate::logging::{suppressed, LogLimiter};

/// How long a request may take before the minimum rate applies: a slow start, a
/// round trip, a scheduler hiccup on a loaded machine. A webhook arrives in
/// milliseconds.
pub(crate) const RATE_GRACE: Duration = Duration::from_secs(2);
/// After [`RATE_GRACE`], a request (its TLS handshake, headers and body) must have
/// sent at least this many bytes a second since its first byte. Twilio sends a whole
/// webhook (about 2 KiB) at once; a trickle of a byte a second fails it within 3 s.
pub(crate) const MIN_BYTES_PER_SEC: u64 = 1024;
/// A request's headers and body must be in within this of its first byte.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection accepted less than this ago is closed to make room only after every
/// older one: it has not had the time to send anything, and Twilio's own connection is
/// always this young when it arrives. Counted from the accept, not from the last
/// answer, so a keep-alive connection kept busy with quick requests does not stay
/// young. Shorter than [`RATE_GRACE`], so a trickle becomes fair game before the rate
/// rule closes it.
pub(crate) const YOUNG: Duration = Duration::from_secs(1);
/// An address whose connection was closed to make room before it ever answered a
/// request is on probation this long: its next connections get no [`YOUNG`]
/// protection until they answer one. A guard against an eviction cascade: attackers
/// that reconnect the moment they are cut evict one another, young ones oldest first,
/// and a cascade that runs round the whole cap faster than Twilio's request is read
/// would reach Twilio's connection. With probation the cascade runs among the
/// attackers' own fresh connections. (The 64-address flood tests pass without it on
/// our machines; it is there for faster attackers and bigger caps.)
pub(crate) const PROBATION: Duration = Duration::from_secs(10);
/// Addresses on probation remembered at most (a flood of addresses forgets some).
const PROBATION_MAX: usize = 4096;
/// At the cap, an address may hold the cap divided by the addresses connected, but
/// never fewer than this: Twilio sends concurrent webhooks from one address too.
pub(crate) const FAIR_SHARE_FLOOR: usize = 4;
/// How long an idle connection told to close gracefully (HTTP/2 GOAWAY) may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How long to wait after `accept` fails (EMFILE, ENFILE, ENOBUFS) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Log lines a second, per listener, for connection events strangers can cause.
const LOG_LINES_PER_SECOND: u64 = 5;
/// The idle clock of every listener: the README promises headers within 10 s.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Backstop for a connection with requests in flight that finishes none.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long draining in-flight requests may take at shutdown.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// What one listener allows.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Names the listener in log lines (`webhook`, `HTTP-01`, `metrics`).
    pub name: &'static str,
    /// Open connections at most; see the module docs for what happens at the cap.
    pub max_connections: usize,
    /// The next request's headers must arrive within this of the connection going idle.
    pub idle_timeout: Duration,
    /// A request's headers and body must arrive within this of its first byte.
    pub request_timeout: Duration,
    /// The minimum rate (bytes a second) of a request once `rate_grace` has passed;
    /// 0 turns the rule off.
    pub min_bytes_per_sec: u64,
    pub rate_grace: Duration,
    /// See [`YOUNG`].
    pub young: Duration,
    /// A connection with requests in flight must finish one within this.
    pub stall_timeout: Duration,
    /// Serve HTTP/2 as well as HTTP/1.1 (the webhook listener only).
    pub http2: bool,
    pub drain_timeout: Duration,
    /// Peers whose `X-Forwarded-*` headers count (`gateway.trustedProxies`).
    pub trusted_proxies: Arc<TrustedProxies>,
}

impl Limits {
    /// The defaults with this name and cap.
    pub(crate) fn new(name: &'static str, max_connections: usize) -> Self {
        Self {
            name,
            max_connections: max_connections.max(1),
            idle_timeout: IDLE_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            min_bytes_per_sec: MIN_BYTES_PER_SEC,
            rate_grace: RATE_GRACE,
            young: YOUNG,
            stall_timeout: STALL_TIMEOUT,
            http2: false,
            drain_timeout: DRAIN_TIMEOUT,
            trusted_proxies: Arc::default(),
        }
    }
}

// ---- decisions (pure) -------------------------------------------------------------

/// What a connection is doing, as the idle clock sees it. Times are milliseconds on
/// one monotonic clock ([`now_ms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Activity {
    /// Requests handed to the handler and not answered yet.
    pub in_flight: usize,
    /// Of those, the ones whose body has not been read to its end.
    pub receiving: usize,
    /// When the connection was accepted.
    pub accepted_ms: u64,
    /// When the connection was accepted or last answered a request.
    pub last_done_ms: u64,
    /// When it last made progress: accepted, finished its TLS handshake, read a
    /// request's body to its end, or answered. The byte count starts again then.
    pub progress_ms: u64,
    /// The first byte read since `progress_ms`, if any.
    pub first_byte_ms: Option<u64>,
    /// Bytes read since `progress_ms` (TLS records included).
    pub bytes: u64,
}

impl Activity {
    /// A connection accepted at `ms` that has sent nothing.
    #[cfg(test)]
    pub(crate) fn fresh(ms: u64) -> Self {
        Self {
            in_flight: 0,
            receiving: 0,
            accepted_ms: ms,
            last_done_ms: ms,
            progress_ms: ms,
            first_byte_ms: None,
            bytes: 0,
        }
    }

    /// A request whose body is complete is being answered: the server is working,
    /// the client has done its part.
    pub(crate) fn processing(&self) -> bool {
        self.in_flight > self.receiving
    }

    /// When the work in progress (a request being sent, or idleness) began.
    fn started_ms(&self) -> u64 {
        self.first_byte_ms.unwrap_or(self.progress_ms)
    }

    /// Bytes a second since the work in progress began (0 for an idle connection).
    fn rate(&self, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(self.started_ms()).max(1);
        self.bytes.saturating_mul(1000) / elapsed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// No request headers within `idle_timeout` of going idle.
    Idle,
    /// A request (handshake, headers, body) slower than `min_bytes_per_sec`.
    TooSlow,
    /// A request's body not complete within `request_timeout` of its first byte.
    TooLong,
    /// Requests in flight but none finished within `stall_timeout`.
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Look again at this time (or sooner, when a request finishes).
    KeepUntil(u64),
    Close(CloseReason),
}

/// The idle clock: whether a connection with activity `a` may stay open at `now_ms`.
///
/// - processing (a request with its body complete is being answered): only the
///   stall backstop;
/// - receiving a body: complete within `request_timeout` of the request's first byte;
/// - otherwise (idle, or a handshake or headers coming): the next headers within
///   `idle_timeout` of going idle;
/// - and whenever bytes are coming (a handshake, headers, a body), at least
///   `min_bytes_per_sec` since the first of them, once `rate_grace` has passed.
pub(crate) fn judge(limits: &Limits, a: Activity, now_ms: u64) -> Verdict {
    let close_at = |deadline: u64, reason| {
        if now_ms >= deadline {
            Verdict::Close(reason)
        } else {
            Verdict::KeepUntil(deadline)
        }
    };
    if a.processing() {
        return close_at(
            a.last_done_ms.saturating_add(millis(limits.stall_timeout)),
            CloseReason::Stalled,
        );
    }
    let (mut deadline, mut reason) = if a.in_flight == 0 {
        (
            a.last_done_ms.saturating_add(millis(limits.idle_timeout)),
            CloseReason::Idle,
        )
    } else {
        (
            a.started_ms()
                .saturating_add(millis(limits.request_timeout)),
            CloseReason::TooLong,
        )
    };
    if limits.min_bytes_per_sec > 0 && (a.receiving > 0 || a.first_byte_ms.is_some()) {
        // The moment the bytes so far stop covering the minimum rate.
        let covered_ms = a.bytes.saturating_mul(1000) / limits.min_bytes_per_sec;
        let slow_at = a
            .started_ms()
            .saturating_add(millis(limits.rate_grace))
            .saturating_add(covered_ms);
        if slow_at < deadline {
            (deadline, reason) = (slow_at, CloseReason::TooSlow);
        }
    }
    close_at(deadline, reason)
}

/// One open connection as the cap sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: u64,
    /// The client: the peer, or the address a trusted proxy forwarded for.
    pub addr: IpAddr,
    /// A trusted proxy's connection that has not said for whom yet: many clients
    /// share it, so the fair share does not apply to it.
    pub shared: bool,
    /// From an address on probation ([`PROBATION`]) and no request answered yet.
    pub probation: bool,
    pub activity: Activity,
}

/// The connections one address may hold when the cap is reached: the cap split
/// evenly among the addresses connected (the newcomer's included), at least
/// [`FAIR_SHARE_FLOOR`] (and at most the cap).
pub(crate) fn fair_share(cap: usize, addresses: usize) -> usize {
    cap.div_ceil(addresses.max(1))
        .max(FAIR_SHARE_FLOOR)
        .min(cap.max(1))
}

/// Which connection to close so a new one from `newcomer` (`shared`: a trusted proxy)
/// fits under the cap, or `None` to refuse it.
///
/// Never chosen: a connection processing a request (its body complete). Every other
/// one may be: idle, sending its handshake or headers, or mid-body. When the
/// newcomer's address already holds its [`fair_share`], it can only replace one of its
/// own. The order: young ones last (accepted within `limits.young`: they have not had
/// the time to send; Twilio's is young when it arrives), unless on probation, and
/// among them the oldest first; then those of addresses over their fair share, then
/// the slowest (fewest bytes a second since the request or the idleness began; idle is
/// 0), then the longest at it, then the older connection (smaller id). `None` (refuse
/// the newcomer) only when nothing may be chosen.
pub(crate) fn pick_victim(
    limits: &Limits,
    conns: &[Candidate],
    newcomer: IpAddr,
    newcomer_shared: bool,
    now_ms: u64,
) -> Option<u64> {
    let mut per_addr: HashMap<IpAddr, usize> = HashMap::new();
    for c in conns.iter().filter(|c| !c.shared) {
        *per_addr.entry(c.addr).or_default() += 1;
    }
    let addresses =
        per_addr.len() + usize::from(!newcomer_shared && !per_addr.contains_key(&newcomer));
    let fair = fair_share(limits.max_connections, addresses);
    let over = |c: &Candidate| !c.shared && per_addr.get(&c.addr).copied().unwrap_or(0) > fair;
    let own_only = !newcomer_shared && per_addr.get(&newcomer).copied().unwrap_or(0) >= fair;
    let young_ms = millis(limits.young);
    conns
        .iter()
        .filter(|c| !c.activity.processing())
        .filter(|c| !own_only || (!c.shared && c.addr == newcomer))
        .min_by_key(|c| {
            let a = &c.activity;
            let young = !c.probation && now_ms.saturating_sub(a.accepted_ms) < young_ms;
            if young {
                // Only age counts: a young one's rate says nothing yet (Twilio's is 0
                // until it is read), and ranking by it cut Twilio's first.
                (true, false, 0, a.accepted_ms, c.id)
            } else {
                (false, !over(c), a.rate(now_ms), a.started_ms(), c.id)
            }
        })
        .map(|c| c.id)
}

/// The connection cap a listener can afford: `requested`, but never so many that its
/// sockets plus `reserved` other descriptors (store files, agent and admin sockets, the
/// other listeners, outbound HTTPS) exceed the open-file limit. At least 1.
pub(crate) fn affordable_cap(requested: usize, fd_limit: Option<u64>, reserved: usize) -> usize {
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

/// Pending connections the kernel queues for `accept`. The usual 128 overflows within
/// milliseconds under a connection flood, and every overflow costs the client a 1 s SYN
/// retransmit: Twilio's connection would wait behind strangers before the cap (which
/// evicts them) ever sees it.
const BACKLOG: u32 = 4096;

/// Binds a listener for [`serve`] with a deep accept queue ([`BACKLOG`]; the kernel
/// caps it at `net.core.somaxconn`).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

// ---- the open-file limit ------------------------------------------------------------

/// The soft open-file limit after raising it to the hard one (once per process), or
/// `None` when unlimited or unknown. Every connection is a descriptor; at the usual soft
/// limit of 1024 the default `maxConnections` alone would exhaust it, and then the admin
/// and agent sockets could not accept either.
pub(crate) fn fd_limit() -> Option<u64> {
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
pub(crate) fn now_ms() -> u64 {
    millis(epoch().elapsed())
}

fn instant_at(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(epoch() + Duration::from_millis(ms))
}

// ---- connections ----------------------------------------------------------------------

/// `first_byte_ms` when no byte has come since the last progress.
const NO_BYTE: u64 = u64::MAX;

/// One open connection, shared by its task, its requests and the accept loop.
struct Conn {
    peer: SocketAddr,
    /// Who the fair share counts this connection as: the peer, or the client a trusted
    /// proxy forwarded its latest request for; `true` while it is a trusted proxy's own.
    client: Mutex<(IpAddr, bool)>,
    in_flight: AtomicUsize,
    receiving: AtomicUsize,
    accepted_ms: u64,
    last_done_ms: AtomicU64,
    progress_ms: AtomicU64,
    first_byte_ms: AtomicU64,
    bytes: AtomicU64,
    /// Its address is on probation ([`PROBATION`]).
    probation: bool,
    /// Requests answered on it.
    answered: AtomicU64,
    /// A request started, finished its body or was answered: the idle clock looks again.
    changed: Notify,
    /// Closed by the cap to make room.
    evicted: Notify,
}

impl Conn {
    fn new(peer: SocketAddr, trusted: &TrustedProxies, probation: bool) -> Self {
        let now = now_ms();
        Self {
            peer,
            client: Mutex::new((peer.ip(), trusted.contains(peer.ip()))),
            in_flight: AtomicUsize::new(0),
            receiving: AtomicUsize::new(0),
            accepted_ms: now,
            last_done_ms: AtomicU64::new(now),
            progress_ms: AtomicU64::new(now),
            first_byte_ms: AtomicU64::new(NO_BYTE),
            bytes: AtomicU64::new(0),
            probation,
            answered: AtomicU64::new(0),
            changed: Notify::new(),
            evicted: Notify::new(),
        }
    }

    fn activity(&self) -> Activity {
        let first = self.first_byte_ms.load(Ordering::SeqCst);
        Activity {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            receiving: self.receiving.load(Ordering::SeqCst),
            accepted_ms: self.accepted_ms,
            last_done_ms: self.last_done_ms.load(Ordering::SeqCst),
            progress_ms: self.progress_ms.load(Ordering::SeqCst),
            first_byte_ms: (first != NO_BYTE).then_some(first),
            bytes: self.bytes.load(Ordering::SeqCst),
        }
    }

    fn client(&self) -> (IpAddr, bool) {
        *self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn candidate(&self, id: u64) -> Candidate {
        let (addr, shared) = self.client();
        Candidate {
            id,
            addr,
            shared,
            probation: self.probation && self.answered.load(Ordering::SeqCst) == 0,
            activity: self.activity(),
        }
    }

    /// Bytes came in from the peer.
    fn read(&self, n: usize) {
        let _ = self.first_byte_ms.compare_exchange(
            NO_BYTE,
            now_ms(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.bytes.fetch_add(n as u64, Ordering::SeqCst);
    }

    /// The connection got somewhere (handshake done, a body complete, an answer): the
    /// rate and the request deadline count from here.
    fn progressed(&self) {
        self.progress_ms.store(now_ms(), Ordering::SeqCst);
        self.first_byte_ms.store(NO_BYTE, Ordering::SeqCst);
        self.bytes.store(0, Ordering::SeqCst);
        self.changed.notify_one();
    }
}

/// The connection's stream, counting what the peer sends for the rate rule.
struct Counted<I> {
    io: I,
    conn: Arc<Conn>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.conn.read(n);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One request from its headers to its answer, shared by its body and its answer.
struct RequestState {
    conn: Arc<Conn>,
    /// Its body has not been read to its end yet.
    receiving: AtomicBool,
}

impl RequestState {
    /// The body is complete: from now on the request is the server's work, protected
    /// from the cap and the rate rule.
    fn body_done(&self, progressed: bool) {
        if self.receiving.swap(false, Ordering::SeqCst) {
            self.conn.receiving.fetch_sub(1, Ordering::SeqCst);
            if progressed {
                self.conn.progressed();
            }
        }
    }
}

/// A request in flight on a connection, from its headers to its answer (or until it is
/// dropped with the connection).
struct InFlight(Arc<RequestState>);

impl InFlight {
    fn start(conn: &Arc<Conn>, has_body: bool) -> Self {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        if has_body {
            conn.receiving.fetch_add(1, Ordering::SeqCst);
        }
        conn.changed.notify_one();
        Self(Arc::new(RequestState {
            conn: conn.clone(),
            receiving: AtomicBool::new(has_body),
        }))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.0.conn;
        self.0.body_done(false);
        conn.last_done_ms.store(now_ms(), Ordering::SeqCst);
        conn.answered.fetch_add(1, Ordering::SeqCst);
        conn.progressed();
        conn.in_flight.fetch_sub(1, Ordering::SeqCst);
        conn.changed.notify_one();
    }
}

/// A request's body as handlers see it: hyper's, telling the serve loop when it has
/// been read to its end (the request is then being processed, see [`pick_victim`]).
pub(crate) struct Body {
    inner: Incoming,
    state: Arc<RequestState>,
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &r {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            self.state.body_done(true);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
    /// The closed connection's client and what it was doing.
    Evicted {
        addr: IpAddr,
        doing: String,
    },
    /// `Some(share)` when the newcomer's address holds its fair share.
    Refused {
        share: Option<usize>,
    },
}

/// What a connection closed by the cap was doing, for the log line.
fn doing(a: &Activity, now_ms: u64) -> String {
    let secs = |from: u64| now_ms.saturating_sub(from) as f64 / 1000.0;
    if a.first_byte_ms.is_none() && a.receiving == 0 {
        format!("idle for {:.1} s", secs(a.progress_ms))
    } else {
        format!(
            "sending at {} B/s for {:.1} s",
            a.rate(now_ms),
            secs(a.started_ms())
        )
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish (bounded by `limits.drain_timeout`) and returns. `handler` answers
/// each request; TLS, when given, is terminated first (ALPN h2 and http/1.1; a bare
/// `acme-tls/1` handshake is a TLS-ALPN-01 answer and ends there). Each request carries
/// its [`Origin`] in its extensions.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
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
    // Addresses on probation, until when (ms).
    let mut probation: HashMap<IpAddr, u64> = HashMap::new();
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
        let on_probation = probation
            .get(&peer.ip())
            .is_some_and(|until| now_ms() < *until);
        let conn = Arc::new(Conn::new(peer, &limits.trusted_proxies, on_probation));
        let admission = {
            let mut conns = registry.lock();
            let admission = if conns.len() < limits.max_connections {
                Admission::Room
            } else {
                let now = now_ms();
                let all: Vec<Candidate> = conns.iter().map(|(id, c)| c.candidate(*id)).collect();
                let (addr, shared) = conn.client();
                match pick_victim(&limits, &all, addr, shared, now) {
                    Some(victim) => match conns.remove(&victim) {
                        Some(c) => {
                            c.evicted.notify_one();
                            let (victim_addr, victim_shared) = c.client();
                            if !victim_shared && c.answered.load(Ordering::SeqCst) == 0 {
                                if probation.len() >= PROBATION_MAX {
                                    probation.retain(|_, until| now < *until);
                                }
                                if probation.len() < PROBATION_MAX {
                                    probation
                                        .insert(victim_addr, now.saturating_add(millis(PROBATION)));
                                }
                            }
                            Admission::Evicted {
                                addr: c.client().0,
                                doing: doing(&c.activity(), now),
                            }
                        }
                        None => Admission::Room,
                    },
                    None => {
                        let mut addresses: Vec<IpAddr> = all
                            .iter()
                            .filter(|c| !c.shared)
                            .map(|c| c.addr)
                            .chain((!shared).then_some(addr))
                            .collect();
                        addresses.sort();
                        addresses.dedup();
                        let share = fair_share(limits.max_connections, addresses.len());
                        let held = all.iter().filter(|c| !c.shared && c.addr == addr).count();
                        Admission::Refused {
                            share: (!shared && held >= share).then_some(share),
                        }
                    }
                }
            };
            if !matches!(admission, Admission::Refused { .. }) {
                conns.insert(id, conn.clone());
                registry.open.send_replace(conns.len());
            }
            admission
        };
        match admission {
            Admission::Room => {}
            Admission::Evicted { addr, doing } => {
                if let Some(n) = cap_log.allow_now() {
                    tracing::warn!(
                        listener = limits.name,
                        max = limits.max_connections,
                        "gateway.maxConnections reached: closed a connection of {addr} ({doing}) to admit {peer}{}",
                        suppressed(n)
                    );
                }
            }
            Admission::Refused { share } => {
                if let Some(n) = cap_log.allow_now() {
                    match share {
                        Some(share) => tracing::warn!(
                            listener = limits.name,
                            max = limits.max_connections,
                            %peer,
                            "connection refused: gateway.maxConnections reached and {} holds its fair share ({share}), each processing a request{}",
                            peer.ip(),
                            suppressed(n)
                        ),
                        None => tracing::warn!(
                            listener = limits.name,
                            max = limits.max_connections,
                            %peer,
                            "connection refused: gateway.maxConnections reached and every connection is processing a request{}",
                            suppressed(n)
                        ),
                    }
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
                // A request starting, completing its body or finishing moves the
                // clock: look again then. Bytes only ever push the deadline later.
                tokio::select! {
                    () = tokio::time::sleep_until(instant_at(at)) => {}
                    () = conn.changed.notified() => {}
                }
            }
        }
    }
}

async fn connection<H, F>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    conn: Arc<Conn>,
    limits: Arc<Limits>,
    handler: H,
    mut closing: watch::Receiver<bool>,
    _registered: Registered,
) where
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let name = limits.name;
    let peer = conn.peer;
    let stream = Counted {
        io: stream,
        conn: conn.clone(),
    };
    let watch = watchdog(&conn, &limits);
    let mut watch = std::pin::pin!(watch);
    let Some(acceptor) = tls else {
        serve_io(stream, false, &conn, &limits, handler, closing, watch).await;
        return;
    };
    // The handshake runs on the same clock as everything else: it is bytes coming.
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
        Ok(s) => {
            // A finished handshake is progress: what follows is idle or a request.
            conn.progressed();
            serve_io(s, true, &conn, &limits, handler, closing, watch).await
        }
        Err(e) => tracing::debug!(listener = name, %peer, "TLS handshake failed: {e}"),
    }
}

async fn serve_io<I, H, F>(
    io: I,
    tls: bool,
    conn: &Arc<Conn>,
    limits: &Arc<Limits>,
    handler: H,
    mut closing: watch::Receiver<bool>,
    mut watch: std::pin::Pin<&mut impl Future<Output = CloseReason>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let name = limits.name;
    let peer = conn.peer;
    let requests = conn.clone();
    let trusted = limits.trusted_proxies.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let origin = Origin::new(peer, tls, req.headers(), &trusted);
        // The fair share counts a trusted proxy's connection as the client it
        // forwards for (until the next request says otherwise).
        *requests.client.lock().unwrap_or_else(|p| p.into_inner()) =
            (origin.client, trusted.contains(origin.client));
        // Counted from the moment the headers are in, not from the first poll.
        let in_flight = InFlight::start(&requests, !req.body().is_end_stream());
        let (mut parts, inner) = req.into_parts();
        parts.extensions.insert(origin);
        let body = Body {
            inner,
            state: in_flight.0.clone(),
        };
        let answer = handler(Request::from_parts(parts, body));
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
                if conn.activity().in_flight > 0 {
                    // A request too slow or too long: waiting for it to finish is
                    // what it wants. Dropped without an answer.
                    return;
                }
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
        Activity::fresh(last_done_ms)
    }

    /// Sending its handshake or headers since `first`, `bytes` so far.
    fn sending(last_done_ms: u64, first: u64, bytes: u64) -> Activity {
        Activity {
            first_byte_ms: Some(first),
            bytes,
            ..Activity::fresh(last_done_ms)
        }
    }

    /// Headers in at `progress`, its body coming since `first` (`bytes` so far).
    fn body(progress: u64, first: Option<u64>, bytes: u64) -> Activity {
        Activity {
            in_flight: 1,
            receiving: 1,
            accepted_ms: 0,
            last_done_ms: 0,
            progress_ms: progress,
            first_byte_ms: first,
            bytes,
        }
    }

    /// Its body complete, being answered.
    fn processing(last_done_ms: u64) -> Activity {
        Activity {
            in_flight: 1,
            ..Activity::fresh(last_done_ms)
        }
    }

    #[test]
    fn the_idle_clock_closes_idle_slow_long_and_stalled_connections() {
        use CloseReason::*;
        use Verdict::*;
        let cases = [
            // (activity, now, verdict)
            (idle(0), 0, KeepUntil(10_000)),
            (idle(0), 9_999, KeepUntil(10_000)),
            (idle(0), 10_000, Close(Idle)),
            (idle(5_000), 12_000, KeepUntil(15_000)),
            (idle(u64::MAX - 1), u64::MAX, Close(Idle)),
            // Headers coming: 2 s grace, then 1 KiB/s since the first byte.
            (sending(0, 1_000, 0), 2_999, KeepUntil(3_000)),
            (sending(0, 1_000, 0), 3_000, Close(TooSlow)),
            (sending(0, 1_000, 512), 3_000, KeepUntil(3_500)),
            (sending(0, 1_000, 3), 3_500, Close(TooSlow)),
            // Fast enough, but the headers are still due 10 s after going idle.
            (sending(0, 1_000, 1 << 20), 9_000, KeepUntil(10_000)),
            (sending(0, 1_000, 1 << 20), 10_000, Close(Idle)),
            // A body: the same rate, and complete within 10 s of its first byte.
            (body(4_000, Some(4_000), 100), 6_000, KeepUntil(6_097)),
            (body(4_000, Some(4_000), 100), 6_100, Close(TooSlow)),
            (body(4_000, Some(4_000), 1 << 20), 13_999, KeepUntil(14_000)),
            (body(4_000, Some(4_000), 1 << 20), 14_000, Close(TooLong)),
            // Headers read before the last progress: the body's clock starts there.
            (body(4_000, None, 0), 5_999, KeepUntil(6_000)),
            (body(4_000, None, 0), 6_000, Close(TooSlow)),
            // A trickle of a byte a second is out within ~3 s.
            (body(0, Some(0), 3), 2_000, KeepUntil(2_002)),
            (body(0, Some(0), 3), 3_000, Close(TooSlow)),
            // Processing: only the stall backstop, however slow the client was.
            (processing(0), 10_000, KeepUntil(30_000)),
            (processing(0), 30_000, Close(Stalled)),
        ];
        for (a, now, want) in cases {
            assert_eq!(judge(&limits(), a, now), want, "{a:?} at {now}");
        }
        // The rate rule can be turned off.
        let mut off = limits();
        off.min_bytes_per_sec = 0;
        assert_eq!(judge(&off, sending(0, 1_000, 0), 5_000), KeepUntil(10_000));
    }

    #[test]
    fn the_fair_share_splits_the_cap_among_addresses() {
        let cases = [
            // (cap, addresses, share)
            (64, 1, 64),
            (64, 2, 32),
            (64, 3, 22),
            (64, 65, 4),
            (1024, 64, 16),
            (8, 100, 4),
            (2, 5, 2),
            (1, 0, 1),
        ];
        for (cap, n, want) in cases {
            assert_eq!(fair_share(cap, n), want, "{cap} {n}");
        }
    }

    fn c(id: u64, addr: IpAddr, activity: Activity) -> Candidate {
        Candidate {
            id,
            addr,
            shared: false,
            probation: false,
            activity,
        }
    }

    #[test]
    fn the_cap_evicts_the_least_progressed_connection() {
        let now = 100_000;
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "198.51.100.7".parse().unwrap();
        let twilio: IpAddr = "203.0.113.5".parse().unwrap();
        type Case<'a> = (&'a str, &'a [Candidate], IpAddr, Option<u64>);
        let cases: &[Case] = &[
            ("nothing open", &[], twilio, None),
            (
                "the longest idle first",
                &[
                    c(1, a, idle(90_000)),
                    c(2, a, idle(50_000)),
                    c(3, a, idle(95_000)),
                ],
                twilio,
                Some(2),
            ),
            (
                "ties go to the older connection",
                &[c(7, a, idle(50_000)), c(3, a, idle(50_000))],
                twilio,
                Some(3),
            ),
            (
                "a request being processed is never cut",
                &[c(1, a, processing(10_000)), c(2, a, processing(20_000))],
                twilio,
                None,
            ),
            (
                "a body mid-way is fair game, however recent its headers",
                &[
                    c(1, a, processing(10_000)),
                    c(2, b, body(97_000, Some(97_000), 3)),
                ],
                twilio,
                Some(2),
            ),
            (
                "the slowest sender before a faster one",
                &[
                    c(1, a, body(90_000, Some(90_000), 50_000)),
                    c(2, b, body(95_000, Some(95_000), 5)),
                ],
                twilio,
                Some(2),
            ),
            (
                "a young connection (Twilio's, just accepted) after every older one",
                &[
                    c(1, twilio, idle(99_900)),
                    c(2, a, body(90_000, Some(90_000), 9_000)),
                ],
                b,
                Some(2),
            ),
            (
                "among young ones, the oldest",
                &[
                    c(1, twilio, idle(99_900)),
                    c(2, a, body(99_500, Some(99_500), 3)),
                ],
                b,
                Some(2),
            ),
            (
                "a keep-alive connection answered just now is not young: age counts from the accept",
                &[
                    c(1, twilio, idle(99_900)),
                    c(
                        2,
                        a,
                        Activity {
                            accepted_ms: 10_000,
                            ..idle(99_990)
                        },
                    ),
                ],
                b,
                Some(2),
            ),
            (
                "a young one on probation goes before a young one that is not",
                &[
                    c(1, twilio, idle(99_900)),
                    Candidate {
                        probation: true,
                        ..c(2, a, idle(99_950))
                    },
                ],
                b,
                Some(2),
            ),
            (
                "an address over its fair share pays first",
                &[
                    c(1, b, idle(10_000)),
                    c(2, a, body(97_000, Some(97_000), 300)),
                    c(3, a, body(97_000, Some(97_000), 300)),
                    c(4, a, body(97_000, Some(97_000), 300)),
                    c(5, a, body(97_000, Some(97_000), 300)),
                    c(6, a, body(97_000, Some(97_000), 300)),
                    c(7, a, body(97_000, Some(97_000), 300)),
                    c(8, a, body(97_000, Some(97_000), 300)),
                ],
                twilio,
                Some(2),
            ),
            (
                "an address at its fair share replaces only its own",
                &[
                    c(1, b, idle(10_000)),
                    c(2, a, idle(99_000)),
                    c(3, a, idle(99_000)),
                    c(4, a, idle(99_500)),
                    c(5, a, idle(99_500)),
                ],
                a,
                Some(2),
            ),
            (
                "...and is refused when all of its own are processing",
                &[
                    c(1, b, idle(10_000)),
                    c(2, a, processing(99_000)),
                    c(3, a, processing(99_000)),
                    c(4, a, processing(99_500)),
                    c(5, a, processing(99_500)),
                ],
                a,
                None,
            ),
        ];
        for (why, conns, newcomer, want) in cases {
            assert_eq!(
                pick_victim(&limits(), conns, *newcomer, false, now),
                *want,
                "{why}"
            );
        }
    }

    #[test]
    fn a_trusted_proxys_own_connections_have_no_fair_share() {
        let now = 100_000;
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let shared = |id, a| Candidate {
            id,
            addr: proxy,
            shared: true,
            probation: false,
            activity: a,
        };
        // Eight of the proxy's connections, not yet said for whom: a new one from the
        // proxy is not held to a share; the longest idle goes.
        let conns: Vec<Candidate> = (1..=8).map(|i| shared(i, idle(90_000 + i))).collect();
        assert_eq!(pick_victim(&limits(), &conns, proxy, true, now), Some(1));
        // Its connections count as the clients they forward for: one client holding
        // five through the proxy is over its share and pays first.
        let mut conns: Vec<Candidate> = (1..=5).map(|i| c(i, client, idle(90_000))).collect();
        conns.push(c(6, "198.51.100.7".parse().unwrap(), idle(50_000)));
        conns.push(shared(7, idle(40_000)));
        conns.push(shared(8, idle(40_000)));
        assert_eq!(pick_victim(&limits(), &conns, proxy, true, now), Some(1));
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
