//! The running gateway: opens the store, binds its sockets, and runs the webhook
//! server, the inbound processor, the outbound sender and the admin socket until
//! shutdown; then drains and flushes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Mutex, Notify};

use crate::config::Config;
use crate::http;
use crate::metrics::Metrics;
use crate::store::{now_ms, GroupCommit, Store, StoreError};
use crate::twilio::MessagesApi;

/// How long processed SIDs are remembered for deduplication (the contract asks for at
/// least 24 hours).
pub const SEEN_RETENTION_MS: u64 = 72 * 60 * 60 * 1000;

/// State shared by every task of the daemon.
pub struct App {
    pub store: Arc<Store>,
    pub commit: GroupCommit,
    config: RwLock<Arc<Config>>,
    pub twilio: Arc<dyn MessagesApi>,
    pub metrics: Metrics,
    /// Serialises changes to access state (pairing, approvals) between the processor
    /// and admin commands, since sled transactions cannot scan.
    pub access_lock: Mutex<()>,
    pub wake_processor: Notify,
    pub wake_outbound: Notify,
    pub wake_media: Notify,
    pub agents: crate::agent::Hub,
}

impl App {
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
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
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("gateway.tls: {0}")]
    Tls(#[from] http::tls::TlsError),
}

/// A daemon whose store is open and whose sockets are bound, ready to serve.
pub struct Daemon {
    app: Arc<App>,
    admin: UnixListener,
    agent: UnixListener,
    tls: Option<http::tls::TlsAcceptor>,
}

impl Daemon {
    pub async fn open(config: Config, twilio: Arc<dyn MessagesApi>) -> Result<Self, DaemonError> {
        let store = Arc::new(Store::open(&config.gateway.state_dir)?);
        let tls = match &config.gateway.tls {
            Some(t) => Some(http::tls::load(&t.cert_file, &t.key_file)?),
            None => None,
        };
        let admin_path = config.gateway.admin_socket.clone();
        let admin = crate::admin::server::bind_unix(&admin_path, 0o600).map_err(|source| {
            DaemonError::Socket {
                path: admin_path,
                source,
            }
        })?;
        let agent_path = config.gateway.agent_socket.clone();
        let agent = crate::admin::server::bind_unix(&agent_path, 0o660).map_err(|source| {
            DaemonError::Socket {
                path: agent_path,
                source,
            }
        })?;
        let app = Arc::new(App {
            commit: GroupCommit::start(store.clone()),
            store,
            config: RwLock::new(Arc::new(config)),
            twilio,
            metrics: Metrics::default(),
            access_lock: Mutex::new(()),
            wake_processor: Notify::new(),
            wake_outbound: Notify::new(),
            wake_media: Notify::new(),
            agents: crate::agent::Hub::default(),
        });
        Ok(Self {
            app,
            admin,
            agent,
            tls,
        })
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
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
        let tasks = vec![
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
        ];
        tracing::info!(agent_socket = %config.gateway.agent_socket.display(), "agents connect here");
        // Anything admitted before a restart and not yet processed.
        app.wake_processor.notify_one();
        tracing::info!(listen = %local, spool = app.store.spool_len(), inbox = app.store.inbox_len(), outbound = app.store.outbound_len(), "smsgate ready");
        http::run(listener, self.tls, app.clone(), shutdown).await;
        tracing::info!("stopping: webhooks drained");
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        app.store.flush()?;
        let _ = std::fs::remove_file(&config.gateway.admin_socket);
        let _ = std::fs::remove_file(&config.gateway.agent_socket);
        tracing::info!("stopped");
        Ok(())
    }
}

async fn prune_seen(app: Arc<App>, mut stop: Shutdown) {
    loop {
        match app.store.prune_seen(now_ms(), SEEN_RETENTION_MS) {
            Ok(0) => {}
            Ok(n) => tracing::debug!("forgot {n} processed SIDs older than the retention"),
            Err(e) => tracing::warn!("pruning processed SIDs failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
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
