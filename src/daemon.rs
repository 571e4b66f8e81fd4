//! The running gateway: opens the store, binds its sockets, and runs the webhook
//! server, the inbound processor, the outbound sender, the agent and admin sockets
//! until shutdown; then drains and flushes. SIGHUP (or `reload` on the admin socket)
//! reloads the configuration and the TLS certificate without dropping connections.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Mutex, Notify};

use crate::acme;
use crate::config::Config;
use crate::http;
use crate::http::tls::CertResolver;
use crate::metrics::Metrics;
use crate::store::{now_ms, GroupCommit, Store, StoreError};
use crate::twilio::MessagesApi;

/// How long processed SIDs are remembered for deduplication (the contract asks for at
/// least 24 hours).
pub const SEEN_RETENTION_MS: u64 = 72 * 60 * 60 * 1000;
/// How often certificate files are checked for renewal.
const CERT_POLL: Duration = Duration::from_secs(5);

/// State shared by every task of the daemon.
pub struct App {
    pub store: Arc<Store>,
    pub commit: GroupCommit,
    config: RwLock<Arc<Config>>,
    /// Where the config came from, for reloads (`None`: built in memory, e.g. the demo).
    config_path: Option<PathBuf>,
    pub tls: Option<Arc<CertResolver>>,
    pub twilio: Arc<dyn MessagesApi>,
    pub metrics: Metrics,
    /// Serialises changes to access state (pairing, approvals) between the processor
    /// and admin commands, since sled transactions cannot scan.
    pub access_lock: Mutex<()>,
    pub wake_processor: Notify,
    pub wake_outbound: Notify,
    pub wake_media: Notify,
    pub agents: crate::agent::Hub,
    pub log_limit: crate::logging::LogLimiter,
}

impl App {
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The config file this daemon reloads, as it resolves now (symlinks followed), so
    /// `config patch` can tell whether it patched the file the daemon runs from.
    pub fn config_file(&self) -> Option<PathBuf> {
        let path = self.config_path.as_ref()?;
        Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()))
    }

    /// Loads the config file again and applies it; a config that fails validation is
    /// refused and the running one kept. Returns a summary for the log and the CLI.
    pub fn reload(&self) -> Result<String, String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or("this gateway was started without a config file; nothing to reload")?;
        let new = crate::config::load(path).map_err(|e| e.to_string())?;
        let old = self.config();
        let mut notes = Vec::new();
        let g = (&old.gateway, &new.gateway);
        if g.0.listen != g.1.listen
            || g.0.state_dir != g.1.state_dir
            || g.0.agent_socket != g.1.agent_socket
            || g.0.admin_socket != g.1.admin_socket
            || g.0.metrics_listen != g.1.metrics_listen
        {
            notes.push(
                "listen address, stateDir, sockets and metricsListen take effect after a restart"
                    .to_string(),
            );
        }
        let tls_files = |c: &Config| {
            c.gateway
                .tls
                .as_ref()
                .map(|t| (t.cert_file.clone(), t.key_file.clone()))
        };
        if tls_files(&old) != tls_files(&new) {
            notes.push("gateway.tls files changed: restart to serve the new ones".to_string());
        }
        if old.gateway.acme != new.gateway.acme {
            notes.push("gateway.tls.acme changed: restart to apply it".to_string());
        }
        if let Some(tls) = &self.tls {
            tls.reload().map_err(|e| {
                format!("gateway.tls: {e}; the running configuration and certificate are kept")
            })?;
        }
        let accounts: Vec<String> = new
            .sms
            .accounts
            .iter()
            .map(|a| format!("{} ({}, {})", a.id, a.webhook_path, a.dm_policy.as_str()))
            .collect();
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        let mut summary = format!("configuration reloaded: accounts {}", accounts.join(", "));
        for n in notes {
            summary.push_str("; ");
            summary.push_str(&n);
        }
        Ok(summary)
    }
}

/// A shutdown signal every task can wait on.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
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
pub struct Daemon {
    app: Arc<App>,
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
    pub async fn open(
        config: Config,
        config_path: Option<PathBuf>,
        twilio: Arc<dyn MessagesApi>,
    ) -> Result<Self, DaemonError> {
        // Past a file size limit (RLIMIT_FSIZE) the kernel kills with SIGXFSZ; handling
        // the signal turns that into an EFBIG write error the store reports, like a full
        // disk. tokio keeps the handler installed for the life of the process.
        let xfsz = tokio::signal::unix::SignalKind::from_raw(rustix::process::Signal::Xfsz as i32);
        let _ = tokio::signal::unix::signal(xfsz);
        let store = Arc::new(Store::open(&config.gateway.state_dir)?);
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
        let admin = crate::unix_socket::bind(&config.gateway.admin_socket, 0o600)
            .map_err(socket_err(&config.gateway.admin_socket))?;
        let agent = crate::unix_socket::bind(&config.gateway.agent_socket, 0o660)
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
        let app = Arc::new(App {
            commit: GroupCommit::start(store.clone()),
            store,
            config: RwLock::new(Arc::new(config)),
            config_path,
            tls: resolver,
            twilio,
            metrics: Metrics::default(),
            access_lock: Mutex::new(()),
            wake_processor: Notify::new(),
            wake_outbound: Notify::new(),
            wake_media: Notify::new(),
            agents: crate::agent::Hub::default(),
            log_limit: crate::logging::LogLimiter::new(20),
        });
        Ok(Self {
            app,
            admin,
            agent,
            metrics,
            tls,
            acme,
        })
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and flushes.
    pub async fn serve(
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
            tracing::warn!(account = %a.id, "not serving account {:?}: {}", a.id, a.reason);
        }
        let mut tasks = vec![
            tokio::spawn(crate::inbound::run(app.clone(), stop.clone())),
            tokio::spawn(crate::outbound::run(app.clone(), stop.clone())),
            tokio::spawn(crate::admin::server::run(
                self.admin,
                app.clone(),
                stop.clone(),
            )),
            tokio::spawn(prune_seen(app.clone(), stop.clone())),
            tokio::spawn(crate::agent::server::run(
                self.agent,
                app.clone(),
                stop.clone(),
            )),
            tokio::spawn(crate::agent::fetch_media(app.clone(), stop.clone())),
            tokio::spawn(crate::agent::maintain(app.clone(), stop.clone())),
            tokio::spawn(reload_on_sighup(app.clone(), stop.clone())),
            tokio::spawn(watchdog(stop.clone())),
        ];
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
            tasks.push(tokio::spawn(crate::metrics::serve(
                m,
                app.clone(),
                stop.clone(),
            )));
        }
        tracing::info!(agent_socket = %config.gateway.agent_socket.display(), "agents connect here");
        // Anything admitted before a restart and not yet processed.
        app.wake_processor.notify_one();
        tracing::info!(listen = %local, spool = app.store.spool_len(), inbox = app.store.inbox_len(), outbound = app.store.outbound_len(), "smsgate ready");
        crate::systemd::notify("READY=1");
        http::run(listener, self.tls, app.clone(), shutdown).await;
        crate::systemd::notify("STOPPING=1");
        tracing::info!("stopping: webhooks drained");
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        app.store.flush()?;
        let config = app.config();
        let _ = std::fs::remove_file(&config.gateway.admin_socket);
        let _ = std::fs::remove_file(&config.gateway.agent_socket);
        tracing::info!("stopped");
        Ok(())
    }
}

async fn prune_seen(app: Arc<App>, mut stop: Shutdown) {
    loop {
        // Not at startup (a big store would delay serving), then hourly.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(600)) => {}
            () = stop.wait() => return,
        }
        let store = app.store.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            store
                .prune_texted(now, crate::access::budget::DAY_MS)
                .and(store.prune_seen(now, SEEN_RETENTION_MS))
        })
        .await;
        match pruned {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!("forgot {n} processed SIDs older than the retention"),
            Ok(Err(e)) => tracing::warn!("pruning processed SIDs failed: {e}"),
            Err(e) => tracing::warn!("pruning task failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3000)) => {}
            () = stop.wait() => return,
        }
    }
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
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
