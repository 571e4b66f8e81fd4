//! The running configuration, swappable on reload, and the reload rules (which keys
//! are live, which only take effect at start). It sits below every user of the config
//! (agent, inbound, outbound, app, HTTP) and imports only `config`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::config::Config;

/// The running configuration, swappable on reload.
pub struct LiveConfig {
    current: RwLock<Arc<Config>>,
    /// Where the config came from, for reloads (`None`: built in memory, e.g. the demo).
    path: Option<PathBuf>,
}

impl LiveConfig {
    pub fn new(config: Config, path: Option<PathBuf>) -> Self {
        Self {
            current: RwLock::new(Arc::new(config)),
            path,
        }
    }

    /// The config file this daemon reloads, as it resolves now (symlinks followed), so
    /// `config patch` can tell whether it patched the file the daemon runs from.
    pub fn file(&self) -> Option<PathBuf> {
        let path = self.path.as_ref()?;
        Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.clone()))
    }

    pub fn get(&self) -> Arc<Config> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, config: Config) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Loads the config file again and swaps in its live part; a config that fails
    /// validation is refused and the running one kept. Settings that only take effect
    /// at start are named in the summary (and so in the log and the admin reply).
    ///
    /// `before_swap` runs after the new file validated and before it is swapped in
    /// (the daemon reloads the TLS certificate there); its error refuses the reload.
    /// It is a parameter so this module stays below the HTTP side it would otherwise
    /// import.
    pub fn reload(
        &self,
        before_swap: impl FnOnce() -> Result<(), String>,
    ) -> Result<String, String> {
        let path = self
            .path
            .as_ref()
            .ok_or("this gateway was started without a config file; nothing to reload")?;
        let new = crate::config::load(path).map_err(|e| e.to_string())?;
        let old = self.get();
        let restart = startup_changes(&old, &new);
        before_swap()?;
        let accounts: Vec<String> = new
            .sms
            .accounts
            .iter()
            .map(|a| format!("{} ({}, {})", a.id, a.webhook_path, a.dm_policy.as_str()))
            .collect();
        self.set(new);
        let mut summary = format!("configuration reloaded: accounts {}", accounts.join(", "));
        if !restart.is_empty() {
            summary.push_str(&format!(
                "; changed but only applied after a restart (the running values are kept): {}",
                restart.join(", ")
            ));
        }
        Ok(summary)
    }
}

/// The settings a running gateway reads once, at start (sockets it bound, the store it
/// opened, the log it installed, the certificate source it chose), that differ between
/// `old` and `new`, by their config key path. Everything else (accounts, policies,
/// tokens, `agentQueueMaxAge`) is live and swapped on reload.
pub(crate) fn startup_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.gateway, &new.gateway);
    let tls_files = |g: &crate::config::Gateway| {
        g.tls
            .as_ref()
            .map(|t| (t.cert_file.clone(), t.key_file.clone()))
    };
    let checks: [(&'static str, bool); 11] = [
        ("gateway.listen", o.listen != n.listen),
        ("gateway.stateDir", o.state_dir != n.state_dir),
        ("gateway.agentSocket", o.agent_socket != n.agent_socket),
        ("gateway.adminSocket", o.admin_socket != n.admin_socket),
        (
            "gateway.metricsListen",
            o.metrics_listen != n.metrics_listen,
        ),
        (
            "gateway.maxConnections",
            o.max_connections != n.max_connections,
        ),
        // The serve loop takes them when the listener starts.
        (
            "gateway.trustedProxies",
            o.trusted_proxies != n.trusted_proxies,
        ),
        ("gateway.log.level", o.log.level != n.log.level),
        ("gateway.log.format", o.log.format != n.log.format),
        (
            "gateway.tls (certFile, keyFile)",
            tls_files(o) != tls_files(n),
        ),
        ("gateway.tls.acme", o.acme != n.acme),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.json5");
        std::fs::write(
            &path,
            r#"{ gateway: { listen: "127.0.0.1:0", stateDir: "/tmp/x" }, channels: { sms: { accountSid: "AC0123456789abcdef0123456789abcdef", authToken: "t", fromNumber: "+15550001111", publicWebhookUrl: "https://sms.example.test/webhooks/sms" } } }"#,
        )
        .expect("write config");
        crate::config::load(&path).expect("test config loads")
    }

    #[test]
    fn startup_and_live_settings_table() {
        type Edit = fn(&mut Config);
        let cases: [(&str, Edit, &[&str]); 8] = [
            ("nothing", |_| {}, &[]),
            (
                "trustedProxies",
                |c| {
                    c.gateway.trusted_proxies = crate::http::forwarded::TrustedProxies::new(vec![
                        crate::http::forwarded::parse_net("10.0.0.1").expect("net"),
                    ])
                },
                &["gateway.trustedProxies"],
            ),
            (
                "maxConnections",
                |c| c.gateway.max_connections += 1,
                &["gateway.maxConnections"],
            ),
            (
                "log level",
                |c| c.gateway.log.level = "debug".into(),
                &["gateway.log.level"],
            ),
            (
                "listen",
                |c| c.gateway.listen = "127.0.0.1:1".parse().expect("addr"),
                &["gateway.listen"],
            ),
            (
                "agentQueueMaxAge is live",
                |c| c.gateway.agent_queue_max_age *= 2,
                &[],
            ),
            ("accounts are live", |c| c.sms.accounts.clear(), &[]),
            (
                "two at once",
                |c| {
                    c.gateway.state_dir = "/elsewhere".into();
                    c.gateway.metrics_listen = Some("127.0.0.1:9".parse().expect("addr"));
                },
                &["gateway.stateDir", "gateway.metricsListen"],
            ),
        ];
        for (name, edit, want) in cases {
            let old = base();
            let mut new = base();
            edit(&mut new);
            assert_eq!(startup_changes(&old, &new), want, "{name}");
        }
    }
}
