//! The running gateway: opens the store, binds its sockets, and runs the webhook
//! server, the inbound processor, the outbound sender, the agent and admin sockets
//! until shutdown; then drains and flushes. SIGHUP (or `reload` on the admin socket)
//! reloads the configuration and the TLS certificate without dropping connections.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Notify;

use crate::acme;
use crate::agent::{Agents, Hub};
use crate::app::App;
use crate::clock::now_ms;
use crate::config::Config;
use crate::http;
use crate::http::tls::CertResolver;
use crate::inbound::Inbound;
use crate::live::LiveConfig;
use crate::metrics::Metrics;
use crate::outbound::Outbox;
use crate::store::{Store, StoreError, Writer};
use crate::twilio::MessagesApi;

pub(crate) use crate::shutdown::Shutdown;

/// How long processed SIDs are remembered for deduplication (the contract asks for at
/// least 24 hours).
pub(crate) const SEEN_RETENTION_MS: u64 = 72 * 60 * 60 * 1000;
/// How often certificate files are checked for renewal.
const CERT_POLL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {path}: {error}")]
    Socket {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
}

/// A daemon whose store is open and whose sockets are bound, ready to serve.
pub(crate) struct Daemon {
    app: Arc<App>,
    media_wake: Arc<Notify>,
    admin: UnixListener,
    agent: UnixListener,
    metrics: Option<TcpListener>,
    tls: Option<http::tls::TlsAcceptor>,
    acme: Option<AcmeStart>,
}

/// What the ACME task starts from.
struct AcmeStart {
    settings: crate::config::AcmeSettings,
    paths: acme::Paths,
    /// The stored certificate, when it may be served.
    current: Option<acme::CertInfo>,
    http01: Option<(TcpListener, acme::http01::Tokens)>,
}

/// Loads the stored certificate into `resolver` when it may be served and binds the
/// HTTP-01 listener. A corrupt or expired certificate is reported, not fatal: the ACME
/// task obtains a new one.
async fn acme_start(
    settings: &crate::config::AcmeSettings,
    state_dir: &std::path::Path,
    resolver: &CertResolver,
) -> Result<AcmeStart, DaemonError> {
    let paths = acme::Paths::new(state_dir);
    let now = acme::now_unix();
    let domains = settings.domains.join(",");
    let current = match acme::load_stored(&paths) {
        Ok(Some((key, info))) => match acme::judge_cached(&info, &settings.domains, now) {
            acme::CacheVerdict::Use => {
                resolver.set(key);
                tracing::info!(%domains, issuer = %info.issuer, "serving the stored certificate: {} days left (expires {})", info.days_left(now), acme::rfc3339(info.not_after));
                Some(info)
            }
            acme::CacheVerdict::DomainsChanged => {
                resolver.set(key);
                tracing::warn!(%domains, "the stored certificate is for {} but gateway.tls.acme.domains changed: serving it until a new one is obtained", info.domains.join(","));
                Some(info)
            }
            acme::CacheVerdict::Expired => {
                tracing::warn!(%domains, "the stored certificate expired at {}: obtaining a new one", acme::rfc3339(info.not_after));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::error!(%domains, "{e}; obtaining a new certificate to replace it");
            None
        }
    };
    let http01 = match settings.http01_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|error| DaemonError::Socket {
                    path: PathBuf::from(addr.to_string()),
                    error,
                })?;
            Some((l, acme::http01::Tokens::default()))
        }
        None => None,
    };
    Ok(AcmeStart {
        settings: settings.clone(),
        paths,
        current,
        http01,
    })
}

impl Daemon {
    pub(crate) async fn open(
        config: Config,
        config_path: Option<PathBuf>,
        twilio: Arc<dyn MessagesApi>,
    ) -> Result<Self, DaemonError> {
        let store = Self::open_store(&config)?;
        Self::with_store(config, config_path, twilio, store).await
    }

    /// Opens the store (migrating an earlier layout) with the process set up for it.
    /// Separate from [`Daemon::with_store`] so the gateway can restart itself after a
    /// migration before anything else exists ([`crate::store::Store::compacted_at_open`]).
    pub(crate) fn open_store(config: &Config) -> Result<Arc<Store>, DaemonError> {
        // Past a file size limit (RLIMIT_FSIZE) the kernel kills with SIGXFSZ; handling
        // the signal turns that into an EFBIG write error the store reports, like a full
        // disk. tokio keeps the handler installed for the life of the process.
        let xfsz = tokio::signal::unix::SignalKind::from_raw(rustix::process::Signal::Xfsz as i32);
        let _ = tokio::signal::unix::signal(xfsz);
        // Everything the daemon creates from here on (sled's later files, media copies,
        // certificates) is owner-only; sockets get their documented modes explicitly.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        Ok(Arc::new(Store::open(&config.gateway.state_dir)?))
    }

    /// The rest of [`Daemon::open`]: binds the sockets around an open store.
    pub(crate) async fn with_store(
        config: Config,
        config_path: Option<PathBuf>,
        twilio: Arc<dyn MessagesApi>,
        store: Arc<Store>,
    ) -> Result<Self, DaemonError> {
        if let Some(mode) = store.state_dir_exposed() {
            tracing::warn!(state_dir = %config.gateway.state_dir.display(), "gateway.stateDir has mode {mode:o}: the group or others can enter it; the database inside is owner-only, but make the directory owner-only too: chmod 700 {}", config.gateway.state_dir.display());
        }
        let mut acme = None;
        let resolver = match (&config.gateway.tls, &config.gateway.acme) {
            (Some(t), _) => Some(Arc::new(CertResolver::new(&t.cert_file, &t.key_file)?)),
            (None, Some(settings)) => {
                let resolver = Arc::new(CertResolver::empty());
                let start = acme_start(settings, &config.gateway.state_dir, &resolver).await?;
                acme = Some(start);
                Some(resolver)
            }
            (None, None) => None,
        };
        let tls = resolver.clone().map(http::tls::acceptor).transpose()?;
        let socket_err = |path: &PathBuf| {
            let path = path.clone();
            move |error| DaemonError::Socket { path, error }
        };
        let admin =
            crate::unix_socket::bind(&config.gateway.admin_socket, 0o600, "gateway.adminSocket")
                .map_err(socket_err(&config.gateway.admin_socket))?;
        let agent =
            crate::unix_socket::bind(&config.gateway.agent_socket, 0o660, "gateway.agentSocket")
                .map_err(socket_err(&config.gateway.agent_socket))?;
        let metrics = match config.gateway.metrics_listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|error| DaemonError::Socket {
                            path: PathBuf::from(addr.to_string()),
                            error,
                        })?,
                )
            }
            None => None,
        };
        let writer = Writer::start(store.clone());
        let config = Arc::new(LiveConfig::new(config, config_path));
        let hub = Arc::new(Hub::default());
        let outbox = Arc::new(Outbox::new());
        let media_wake = Arc::new(Notify::new());
        let agents = Arc::new(Agents {
            hub: hub.clone(),
            outbox: outbox.clone(),
            store: store.clone(),
            writer: writer.clone(),
            config: config.clone(),
            log_limit: crate::logging::LogLimiter::new(20),
            not_reading_after: not_reading_after(),
        });
        let inbound = Arc::new(Inbound {
            writer: writer.clone(),
            config: config.clone(),
            hub: hub.clone(),
            outbox: outbox.clone(),
            media: media_wake.clone(),
        });
        // What waits for agents, in memory from now on; records that do not decode are
        // quarantined on the way.
        hub.load(store.inbox()?);
        // Asks still pending belonged to connections of the previous run: they end
        // `cancelled`, kept in the audit (CONTRACT §9), before any agent connects.
        let now = crate::clock::now_ms();
        match writer.write(move |st, _| st.cancel_stale_asks(now)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} approval ask(s) of the previous run ended cancelled (their connections are gone)"),
            Err(e) => tracing::warn!("cannot end the previous run's approval asks: {e}"),
        }
        let app = Arc::new(App {
            store,
            writer,
            config,
            tls: resolver,
            twilio,
            metrics: Arc::new(Metrics::default()),
            agents,
            outbox,
            inbound,
            log_limit: crate::logging::LogLimiter::new(20),
        });
        Ok(Self {
            app,
            media_wake,
            admin,
            agent,
            metrics,
            tls,
            acme,
        })
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and flushes.
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), DaemonError> {
        let app = self.app;
        let (stop_tx, stop) = Shutdown::new();
        let config = app.config();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        for a in &config.sms.accounts {
            let public = a
                .public_url()
                .map_or("(no publicWebhookUrl)".to_string(), |u| u.raw.clone());
            tracing::info!(account = %a.id, "serving webhook POST {scheme}://{local}{} (public URL {public}), sender {}, dmPolicy {}", a.webhook_path, a.sender, a.dm_policy.as_str());
        }
        for a in &config.sms.inactive {
            tracing::warn!(account = %a.id, "not serving account `{}`: {}", a.id, a.reason);
        }
        let sender = crate::outbound::sender::Sender {
            store: app.store.clone(),
            writer: app.writer.clone(),
            outbox: app.outbox.clone(),
            config: app.config.clone(),
            twilio: app.twilio.clone(),
            metrics: app.metrics.clone(),
            windows: Default::default(),
        };
        let inbound = app.inbound.clone();
        let mut tasks = vec![
            tokio::spawn(async move { inbound.drain_spool().await }),
            tokio::spawn(crate::outbound::sender::run(sender, stop.clone())),
            tokio::spawn(crate::admin::server::run(
                self.admin,
                app.clone(),
                stop.clone(),
            )),
            tokio::spawn(prune(app.writer.clone(), stop.clone())),
            tokio::spawn(prune_media(
                app.store.clone(),
                app.writer.clone(),
                stop.clone(),
            )),
            tokio::spawn(crate::agent::server::run(
                self.agent,
                app.agents.clone(),
                stop.clone(),
            )),
            tokio::spawn(crate::agent::fetch_media(
                app.agents.clone(),
                self.media_wake.clone(),
                stop.clone(),
            )),
            tokio::spawn(crate::agent::maintain(app.agents.clone(), stop.clone())),
            tokio::spawn(crate::agent::pace(app.agents.clone(), stop.clone())),
            tokio::spawn(resync_after_recovery(app.clone(), stop.clone())),
            tokio::spawn(reload_on_sighup(app.clone(), stop.clone())),
            tokio::spawn(watchdog(stop.clone())),
        ];
        // Media downloads for messages that waited for them across a restart.
        self.media_wake.notify_one();
        if app.tls.as_ref().is_some_and(|t| t.files().is_some()) {
            tasks.push(tokio::spawn(watch_certificate(app.clone(), stop.clone())));
        }
        if let (Some(start), Some(resolver)) = (self.acme, app.tls.clone()) {
            if !resolver.has_certificate() {
                tracing::warn!(domains = %start.settings.domains.join(","), directory = %start.settings.directory_url, "HTTPS is not ready yet: no certificate for these names; obtaining one (TLS handshakes fail until then, except the CA's acme-tls/1 challenges)");
            }
            let tokens = match start.http01 {
                Some((listener, tokens)) => {
                    tracing::info!(
                        "answering HTTP-01 challenges on http://{}/.well-known/acme-challenge/",
                        listener
                            .local_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default()
                    );
                    tasks.push(tokio::spawn(acme::http01::serve(
                        listener,
                        tokens.clone(),
                        stop.clone(),
                    )));
                    Some(tokens)
                }
                None => None,
            };
            tasks.push(tokio::spawn(acme::run(
                start.settings,
                start.paths,
                resolver,
                tokens,
                start.current,
                stop.clone(),
            )));
        }
        if let Some(m) = self.metrics {
            tracing::info!(
                "metrics on http://{}/metrics",
                m.local_addr().map(|a| a.to_string()).unwrap_or_default()
            );
            let scraped = app.clone();
            tasks.push(tokio::spawn(crate::metrics::serve(
                m,
                move || scraped.metrics.scrape(&scraped.gauges()),
                stop.clone(),
            )));
        }
        tracing::info!(agent_socket = %config.gateway.agent_socket.display(), "agents connect here");
        let d = app.depths();
        tracing::info!(listen = %local, spool = app.store.spool_len(), inbox = d.waiting, outbound = app.store.outbound_len(), "smsgate ready");
        crate::systemd::notify("READY=1");
        // The stop's budget (CONTRACT §6: exit 0 within 10 s of the signal) counts from
        // the signal: the webhook drain (at most `http::DRAIN_TIMEOUT`) and then the
        // tasks share it.
        let signalled = Arc::new(std::sync::OnceLock::new());
        let mark = signalled.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = mark.set(tokio::time::Instant::now());
        };
        http::run(listener, self.tls, app.clone(), shutdown).await;
        crate::systemd::notify("STOPPING=1");
        tracing::info!("stopping: webhooks drained");
        let _ = stop_tx.send(true);
        // Every task was told at once; they stop together, under one deadline, so a
        // slow one does not add its wait to the others'. What must come last does: the
        // store is flushed only after every task that writes through it has stopped
        // (or was given up), and the sockets are removed after that.
        let from = signalled
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now);
        let left = join_by(tasks, from + TASKS_DEADLINE).await;
        if left > 0 {
            tracing::warn!(
                "{left} task(s) did not stop within {}s of the signal; stopping without them",
                TASKS_DEADLINE.as_secs()
            );
        }
        app.store.flush()?;
        let config = app.config();
        let _ = std::fs::remove_file(&config.gateway.admin_socket);
        let _ = std::fs::remove_file(&config.gateway.agent_socket);
        tracing::info!("stopped");
        Ok(())
    }
}

/// How long after the stop signal the tasks may take to stop, together (the webhook
/// drain included); the flush and the exit fit in the rest of CONTRACT §6's 10 s.
pub(crate) const TASKS_DEADLINE: Duration = Duration::from_secs(9);

/// Waits for all `tasks` together until `deadline`; aborts those still running then
/// (so nothing of theirs runs while the store is flushed and closed; a send cut off
/// in flight is one of unknown outcome, as after a crash) and returns how many.
pub(crate) async fn join_by(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    deadline: tokio::time::Instant,
) -> usize {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let mut set = tokio::task::JoinSet::new();
    for t in tasks {
        set.spawn(async move {
            let _ = t.await;
        });
    }
    let _ =
        tokio::time::timeout_at(deadline, async { while set.join_next().await.is_some() {} }).await;
    let left = aborts.iter().filter(|a| !a.is_finished()).count();
    for a in &aborts {
        a.abort();
    }
    left
}

/// Deletes the agent's media once it is no longer served (CONTRACT §10: an hour after
/// Twilio accepted its send, or its final status; see `mms::expired`). Every minute,
/// or twice per `SMSGATE_MEDIA_TTL_SECS` when that is shorter.
async fn prune_media(store: Arc<crate::store::Store>, writer: Writer, mut stop: Shutdown) {
    let ttl = crate::mms::ttl_ms();
    let every = Duration::from_millis((ttl / 2).clamp(200, 60_000));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.wait() => return,
        }
        // No write (and no fsync) while there is nothing to look at.
        if !store.has_media().unwrap_or(true) {
            continue;
        }
        let pruned = writer
            .write(move |st, _| st.prune_media(now_ms(), ttl, crate::twilio::is_terminal_status))
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::info!("deleted {n} media item(s) whose hour was over"),
            Err(e) => tracing::warn!("deleting expired media failed: {e}"),
        }
    }
}

async fn prune(writer: Writer, mut stop: Shutdown) {
    loop {
        // Not at startup (a big store would delay serving), then hourly.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(600)) => {}
            () = stop.wait() => return,
        }
        let pruned = writer
            .write(|st, _| {
                let now = now_ms();
                st.prune_texted(now, crate::access::budget::DAY_MS)?;
                st.prune_sent_log(now, crate::access::budget::DAY_MS)?;
                // Delivery statuses 30 days after their last update (issue 20 item 10).
                let statuses = st.prune_statuses(now)?;
                // The approvals audit keeps 30 days (CONTRACT §9).
                st.prune_decided(now)?;
                if statuses > 0 {
                    tracing::debug!("forgot {statuses} delivery status(es) older than 30 days");
                }
                st.prune_seen(now, SEEN_RETENTION_MS)
            })
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => tracing::debug!("forgot {n} processed SIDs older than the retention"),
            Err(e) => tracing::warn!("pruning processed SIDs failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3000)) => {}
            () = stop.wait() => return,
        }
    }
}

/// After the store was reopened following a write error, the in-memory queues are
/// rebuilt from what is durable.
async fn resync_after_recovery(app: Arc<App>, mut stop: Shutdown) {
    loop {
        tokio::select! {
            () = app.writer.recovered() => {}
            () = stop.wait() => return,
        }
        // Both snapshots are read on the writer and applied by its hook, in commit
        // order with every other change to the queues (see `Outbox::reload_in`).
        let (hub, outbox) = (app.agents.hub.clone(), app.outbox.clone());
        let resynced = app
            .writer
            .write(move |st, hooks| {
                let inbox = st.inbox()?;
                hooks.after(move || hub.load(inbox));
                outbox.reload_in(st, hooks)
            })
            .await;
        if let Err(e) = resynced {
            tracing::error!(
                "cannot read the agent inbox and outbound queue after the store recovered: {e}"
            );
        }
    }
}

/// `SMSGATE_AGENT_NOT_READING_SECS` shortens the not-reading limit (tests, operators
/// with fast agents); 30 s otherwise.
fn not_reading_after() -> Duration {
    crate::clock::env_span("SMSGATE_AGENT_NOT_READING_SECS")
        .filter(|s| *s > 0)
        .map_or(crate::agent::server::NOT_READING, Duration::from_secs)
}

async fn reload_on_sighup(app: Arc<App>, mut stop: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with `smsgate config patch` or a restart");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            () = stop.wait() => return,
        }
        tracing::info!("SIGHUP received: reloading");
        crate::systemd::notify("RELOADING=1");
        match app.reload() {
            Ok(summary) => tracing::info!("{summary}"),
            Err(e) => tracing::error!("reload refused, the running configuration is kept: {e}"),
        }
        crate::systemd::notify("READY=1");
    }
}

/// Serves renewed certificates (certbot) without a restart.
async fn watch_certificate(app: Arc<App>, mut stop: Shutdown) {
    let Some(tls) = app.tls.clone() else { return };
    let Some((cert_file, _)) = tls.files() else {
        return;
    };
    let cert_file = cert_file.to_path_buf();
    loop {
        tokio::select! {
            () = tokio::time::sleep(CERT_POLL) => {}
            () = stop.wait() => return,
        }
        match tls.reload_if_changed() {
            Ok(true) => tracing::info!(cert = %cert_file.display(), "certificate changed on disk: now serving the new one"),
            Ok(false) => {}
            Err(e) => tracing::error!("certificate files changed but cannot be loaded, still serving the old certificate: {e}"),
        }
    }
}

async fn watchdog(mut stop: Shutdown) {
    let Some(every) = crate::systemd::watchdog_interval() else {
        return;
    };
    loop {
        crate::systemd::notify("WATCHDOG=1");
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.wait() => return,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
/// The handlers are installed when this is called, not when the future is first
/// polled: a SIGTERM right after "smsgate ready" is logged must stop the daemon
/// cleanly, not kill it with the default action.
pub(crate) fn signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
            std::future::pending::<()>().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21 item 9: three tasks that never stop and one that stops at once cost
    /// the one deadline, not a timeout each (the loop before waited 2 s per task, one
    /// after another: 6 s here).
    #[tokio::test]
    async fn slow_tasks_share_one_deadline() {
        let hang = || tokio::spawn(std::future::pending::<()>());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let quick = tokio::spawn(async move {
            let _ = rx.await;
        });
        let tasks = vec![hang(), quick, hang(), hang()];
        let _ = tx.send(());
        let started = tokio::time::Instant::now();
        let wait = Duration::from_millis(300);
        let left = join_by(tasks, started + wait).await;
        let took = started.elapsed();
        assert_eq!(left, 3);
        assert!(took >= wait && took < wait * 3, "{took:?}");

        // Tasks that all stop return at once, long before the deadline.
        let tasks = (0..5).map(|_| tokio::spawn(async {})).collect();
        let started = tokio::time::Instant::now();
        assert_eq!(join_by(tasks, started + Duration::from_secs(30)).await, 0);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A task still running at the deadline is aborted: nothing of it runs on while
    /// the store is flushed.
    #[tokio::test]
    async fn late_tasks_are_aborted() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let ticker = tokio::spawn(async move {
            for i in 0.. {
                if tx.send(i).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let left = join_by(
            vec![ticker],
            tokio::time::Instant::now() + Duration::from_millis(50),
        )
        .await;
        assert_eq!(left, 1);
        // Its sender is dropped with it: the channel closes.
        while rx.recv().await.is_some() {}
    }
}
