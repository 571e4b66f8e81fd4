//! `gateway`: listen address, TLS, state directory, sockets, proxies, metrics, log.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;

use super::super::raw::{Field, RawConfig};
use super::super::{Gateway, LogFormat, LogSettings, TlsFiles};
use super::acme::acme;
use super::errors::{parse_listen, take, Problems};
use super::Env;

/// Unix socket paths are limited to 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

pub(super) fn gateway(raw: &RawConfig, env: &Env, p: &mut Problems) -> Option<Gateway> {
    let default = Default::default();
    let g = raw.gateway.as_ref().unwrap_or(&default);
    let listen = match take(&g.listen, "gateway.listen", "a host:port string", p) {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8789))),
        Some(s) => match parse_listen(s) {
            Some(addr) => Some(addr),
            None => {
                p.add("gateway.listen", format!("{s:?} is not a host:port address; use e.g. \"127.0.0.1:8789\" or \"0.0.0.0:443\""));
                None
            }
        },
    };
    let acme = g
        .tls
        .as_ref()
        .and_then(|t| t.acme.as_ref())
        .and_then(|a| acme(a, p));
    let tls = g.tls.as_ref().and_then(|t| {
        let cert = take(&t.cert_file, "gateway.tls.certFile", "a file path", p);
        let key = take(&t.key_file, "gateway.tls.keyFile", "a file path", p);
        if t.acme.is_some() {
            if t.cert_file.is_some() || t.key_file.is_some() {
                p.add("gateway.tls.acme", "cannot be combined with gateway.tls.certFile/keyFile: remove certFile and keyFile to have certificates obtained automatically, or remove acme to serve your own files");
            }
            return None;
        }
        for (v, path, what) in [(cert, "gateway.tls.certFile", "certificate chain"), (key, "gateway.tls.keyFile", "private key")] {
            match v {
                None => p.add(path, format!("missing; HTTPS needs both certFile and keyFile: set it to the PEM {what} file, set gateway.tls.acme to obtain one automatically, or remove gateway.tls to serve plain HTTP")),
                Some(f) => {
                    if let Err(e) = std::fs::metadata(f) {
                        p.add(path, format!("cannot read {f:?}: {e}; point it at the PEM {what} file"));
                    }
                }
            }
        }
        Some(TlsFiles {
            cert_file: PathBuf::from(cert?),
            key_file: PathBuf::from(key?),
        })
    });
    let state_dir = match take(&g.state_dir, "gateway.stateDir", "a directory path", p) {
        Some(s) => PathBuf::from(s),
        None => env
            .get("STATE_DIRECTORY")
            .and_then(|s| s.split(':').next())
            .map_or_else(|| PathBuf::from("/var/lib/smsgate"), PathBuf::from),
    };
    if !state_dir.is_absolute() {
        p.add(
            "gateway.stateDir",
            format!(
                "{:?} is relative; use an absolute path such as /var/lib/smsgate",
                state_dir.display().to_string()
            ),
        );
    } else if env.probe_state_dir && !env.tolerate_unresolved_secrets {
        if let Some(problem) = crate::config::checks::state_dir_problem(&state_dir) {
            p.add("gateway.stateDir", problem);
        }
    }
    let socket = |f: &Option<Field<String>>, key: &str, name: &str, p: &mut Problems| -> PathBuf {
        let path = format!("gateway.{key}");
        let sock =
            take(f, &path, "a file path", p).map_or_else(|| state_dir.join(name), PathBuf::from);
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            p.add(path, format!("{} is {} bytes long; Unix socket paths allow at most {MAX_SOCKET_PATH}: choose a shorter path", sock.display(), sock.as_os_str().len()));
        }
        sock
    };
    let agent_socket = socket(&g.agent_socket, "agentSocket", "agent.sock", p);
    let admin_socket = socket(&g.admin_socket, "adminSocket", "admin.sock", p);
    if agent_socket == admin_socket {
        p.add(
            "gateway.adminSocket",
            "is the same path as gateway.agentSocket; give each socket its own path",
        );
    }
    let max_connections = match take(
        &g.max_connections,
        "gateway.maxConnections",
        "a whole number",
        p,
    ) {
        None => 1024,
        Some(&0) => {
            p.add("gateway.maxConnections", "must be at least 1");
            1
        }
        Some(&n) => n as usize,
    };
    let mut trusted = Vec::new();
    if let Some(list) = take(
        &g.trusted_proxies,
        "gateway.trustedProxies",
        "a list of IP addresses or CIDRs",
        p,
    ) {
        for (i, entry) in list.iter().enumerate() {
            match crate::http::forwarded::parse_net(entry) {
                Ok(net) => trusted.push(net),
                Err(why) => p.add(format!("gateway.trustedProxies[{i}]"), why),
            }
        }
    }
    let trusted_proxies = crate::http::forwarded::TrustedProxies::new(trusted);
    let metrics_listen = take(&g.metrics_listen, "gateway.metricsListen", "a host:port string", p).and_then(|s| match parse_listen(s) {
        Some(addr) if addr.ip().is_loopback() => Some(addr),
        Some(_) => {
            p.add("gateway.metricsListen", format!("{s:?} is not a loopback address; metrics are served on localhost only, e.g. \"127.0.0.1:9464\""));
            None
        }
        None => {
            p.add("gateway.metricsListen", format!("{s:?} is not a host:port address; use e.g. \"127.0.0.1:9464\""));
            None
        }
    });
    let agent_queue_max_age = match take(&g.agent_queue_max_age, "gateway.agentQueueMaxAge", "a duration", p) {
        None => std::time::Duration::from_secs(7 * 24 * 3600),
        Some(v) => parse_duration(v).unwrap_or_else(|| {
            p.add("gateway.agentQueueMaxAge", format!("{v} is not a duration; write seconds as a number, or a string such as \"7d\", \"12h\", \"30m\""));
            std::time::Duration::from_secs(7 * 24 * 3600)
        }),
    };
    let default_log = Default::default();
    let log = g.log.as_ref().unwrap_or(&default_log);
    let level = take(&log.level, "gateway.log.level", "a string", p)
        .cloned()
        .unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        p.add(
            "gateway.log.level",
            format!("{level:?} is not a log level; use error, warn, info, debug or trace"),
        );
    }
    let format = match take(&log.format, "gateway.log.format", "a string", p).map(String::as_str) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add(
                "gateway.log.format",
                format!("{other:?} is not a log format; use \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    Some(Gateway {
        listen: listen?,
        tls,
        acme,
        state_dir,
        agent_socket,
        admin_socket,
        max_connections,
        trusted_proxies,
        metrics_listen,
        agent_queue_max_age,
        log: LogSettings { level, format },
    })
}

/// `604800`, `"7d"`, `"12h"`, `"30m"`, `"90s"`.
pub(super) fn parse_duration(v: &Value) -> Option<std::time::Duration> {
    let secs = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let n: u64 = s[..split].parse().ok()?;
            let unit = match s[split..].trim() {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                _ => return None,
            };
            n.checked_mul(unit)?
        }
        _ => return None,
    };
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}
