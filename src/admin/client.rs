//! The CLI's side of the admin socket, with the fallback to the store itself when no
//! daemon is running.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::{ops, Request, Response};
use crate::config::Config;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    #[error("the daemon is not running (nothing answers on {0})")]
    NotRunning(String),
    #[error("cannot reach the daemon on {path}: {message}")]
    Unreachable { path: String, message: String },
    #[error("the daemon is not running, and {0}")]
    Store(StoreError),
    #[error("{0}")]
    Failed(String),
}

/// What a failed connect to the admin socket at `path` means: only "nothing there" and
/// "nothing listening" are "not running"; a permission error says so and names the
/// socket (another user's daemon is running, and this user may not talk to it).
pub(crate) fn connect_error(path: &str, e: &std::io::Error) -> AdminError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            AdminError::NotRunning(path.to_string())
        }
        std::io::ErrorKind::PermissionDenied => AdminError::Unreachable {
            path: path.to_string(),
            message: "permission denied (the socket or its directory belongs to the daemon's user); run this as root or as that user".into(),
        },
        _ => AdminError::Unreachable {
            path: path.to_string(),
            message: e.to_string(),
        },
    }
}

/// Sends one request to the running daemon.
pub(crate) fn call(config: &Config, req: &Request) -> Result<Response, AdminError> {
    let path = config.gateway.admin_socket.display().to_string();
    let mut stream =
        UnixStream::connect(&config.gateway.admin_socket).map_err(|e| connect_error(&path, &e))?;
    let io = |e: std::io::Error| AdminError::Unreachable {
        path: path.clone(),
        message: e.to_string(),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| AdminError::Failed(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|e| AdminError::Unreachable {
        path: path.clone(),
        message: format!("unreadable answer: {e}"),
    })
}

/// Runs `req` through the running daemon only (no store fallback): its data, or its
/// refusal as [`AdminError::Failed`].
pub(crate) fn call_daemon(config: &Config, req: &Request) -> Result<serde_json::Value, AdminError> {
    into_result(call(config, req)?)
}

fn into_result(resp: Response) -> Result<serde_json::Value, AdminError> {
    if resp.ok {
        Ok(resp.data)
    } else {
        Err(AdminError::Failed(
            resp.error
                .unwrap_or_else(|| "the daemon reported an error".into()),
        ))
    }
}

/// Runs `req` through the daemon when it runs, else directly on the store.
pub(crate) fn call_or_direct(
    config: &Config,
    req: &Request,
) -> Result<serde_json::Value, AdminError> {
    let resp = match call(config, req) {
        Ok(r) => r,
        Err(AdminError::NotRunning(path)) => {
            let store = Store::open(&config.gateway.state_dir).map_err(|e| match e {
                StoreError::Locked { holder, .. } => AdminError::Failed(format!(
                    "the store in {} is locked by another process{}, but no daemon answers on {path}; is the gateway running with another adminSocket or config?",
                    config.gateway.state_dir.display(),
                    holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
                )),
                other => AdminError::Store(other),
            })?;
            ops::execute(&store, config, req).0
        }
        Err(e) => return Err(e),
    };
    into_result(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn only_nothing_there_is_not_running() {
        let p = "/run/smsgate/admin.sock";
        for kind in [ErrorKind::NotFound, ErrorKind::ConnectionRefused] {
            assert!(
                matches!(
                    connect_error(p, &Error::from(kind)),
                    AdminError::NotRunning(_)
                ),
                "{kind:?}"
            );
        }
        let denied = connect_error(p, &Error::from(ErrorKind::PermissionDenied)).to_string();
        assert!(
            denied.contains("permission denied") && denied.contains(p),
            "{denied}"
        );
        assert!(!denied.contains("not running"), "{denied}");
        let other = connect_error(p, &Error::from(ErrorKind::TimedOut)).to_string();
        assert!(
            other.contains(p) && !other.contains("not running"),
            "{other}"
        );
    }
}
