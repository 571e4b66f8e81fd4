//! The running gateway's handles, in one thin struct (the configuration and its reload
//! rules live in [`crate::live`]). Tasks take the handles they need (`Arc<Store>`, `Writer`, `Arc<Hub>`,
//! …), not the whole `App`; `App` exists so the daemon can wire them and so the HTTP
//! side, which needs several, gets one value.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::http::tls::CertResolver;
use crate::live::LiveConfig;
use crate::metrics::Metrics;
use crate::store::{Store, Writer};
use crate::twilio::MessagesApi;

/// State shared by the daemon's tasks: handles only, no logic.
pub(crate) struct App {
    pub store: Arc<Store>,
    pub writer: Writer,
    pub config: Arc<LiveConfig>,
    pub tls: Option<Arc<CertResolver>>,
    pub twilio: Arc<dyn MessagesApi>,
    pub metrics: Arc<Metrics>,
    pub agents: Arc<crate::agent::Agents>,
    pub outbox: Arc<crate::outbound::Outbox>,
    pub inbound: Arc<crate::inbound::Inbound>,
    /// Webhook rejections are logged at this rate at most.
    pub log_limit: crate::logging::LogLimiter,
}

/// Queue depths from memory (no store walk), for status and the quiescence barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Depths {
    /// Messages durable for the agent, not yet delivered.
    pub waiting: usize,
    /// Delivered, not yet acknowledged.
    pub in_flight: usize,
    /// Sends queued for their (next) attempt.
    pub outbound: usize,
}

impl App {
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config.get()
    }

    pub(crate) fn reload(&self) -> Result<String, String> {
        let tls = self.tls.clone();
        self.config.reload(move || match tls {
            Some(tls) => tls.reload().map_err(|e| {
                format!("gateway.tls: {e}; the running configuration and certificate are kept")
            }),
            None => Ok(()),
        })
    }

    /// The config file this daemon reloads, as it resolves now (symlinks followed), so
    /// `config patch` can tell whether it patched the file the daemon runs from.
    pub(crate) fn config_file(&self) -> Option<PathBuf> {
        self.config.file()
    }

    /// The gauges a metrics scrape reports, read now.
    pub(crate) fn gauges(&self) -> crate::metrics::Gauges {
        let (flushes, flush_micros, _) = self.writer.stats();
        crate::metrics::Gauges {
            spool: self.store.spool_len() as u64,
            agent_queue: self.store.inbox_len() as u64,
            outbound_queue: self.store.outbound_len() as u64,
            dead_letters: self.store.dead_len() as u64,
            agent_connections: self.agents.hub.connections() as u64,
            tls_not_after: self.tls.as_ref().and_then(|t| t.not_after()),
            flushes,
            flush_micros,
        }
    }

    pub(crate) fn depths(&self) -> Depths {
        let hub = self.agents.hub.counts();
        Depths {
            waiting: hub.waiting,
            in_flight: hub.in_flight,
            outbound: self.outbox.queued_len(),
        }
    }
}
