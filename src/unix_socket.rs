//! The two local Unix sockets (admin and agent) share how they are bound and accepted.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

use crate::shutdown::Shutdown;

/// What is at a socket's path before we bind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    Nothing,
    /// A socket: `answers` is whether a connect to it succeeded (another instance).
    Socket {
        answers: bool,
    },
    /// Anything else (a regular file, a directory, a symlink, a FIFO, a device),
    /// described for people.
    Other(&'static str),
}

/// What to do about what is at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Bind,
    /// A stale socket nobody answers on: remove it, then bind.
    ReplaceStale,
    /// Another instance answers on it.
    InUse,
    /// Not a socket: never delete what we did not make.
    NotASocket(&'static str),
}

/// Only a socket nobody answers on is ours to replace; a live one is another
/// instance, and anything that is not a socket may be someone's file (a wrong path in
/// the config must not cost a file).
pub(crate) fn decide(found: Found) -> Action {
    match found {
        Found::Nothing => Action::Bind,
        Found::Socket { answers: false } => Action::ReplaceStale,
        Found::Socket { answers: true } => Action::InUse,
        Found::Other(what) => Action::NotASocket(what),
    }
}

fn describe(ft: std::fs::FileType) -> Option<&'static str> {
    Some(if ft.is_socket() {
        return None;
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a socket"
    })
}

/// Looks at `path` without following a symlink (a link to someone's file is not ours
/// either).
fn look(path: &Path) -> std::io::Result<Found> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Nothing),
        Err(e) => return Err(e),
    };
    if let Some(what) = describe(meta.file_type()) {
        return Ok(Found::Other(what));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Ok(Found::Socket { answers: true }),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Ok(Found::Socket { answers: false })
        }
        // Gone between the look and the connect.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::Nothing),
        // EACCES and the like: we cannot tell whether it is stale, so it stays.
        Err(e) => Err(e),
    }
}

/// Binds a Unix socket for the config key `key` (`gateway.agentSocket`…), replacing
/// only a stale socket; anything else at the path is an error naming the key and path,
/// and is left untouched.
pub(crate) fn bind(path: &Path, mode: u32, key: &str) -> std::io::Result<UnixListener> {
    match decide(look(path)?) {
        Action::Bind => {}
        Action::ReplaceStale => match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        },
        Action::InUse => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{key}: {} is in use by a running process (another smsgate?); stop it or set {key} to another path",
                    path.display()
                ),
            ))
        }
        Action::NotASocket(what) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{key}: {} exists and is {what}, not a socket; smsgate leaves it as it is: move it away or set {key} to another path",
                    path.display()
                ),
            ))
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// The next connection, or `None` at shutdown. Accept errors (EMFILE…) back off
/// briefly instead of spinning.
pub(crate) async fn accept(
    listener: &UnixListener,
    what: &str,
    shutdown: &mut Shutdown,
) -> Option<UnixStream> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => return Some(s),
                Err(e) => {
                    tracing::warn!("{what} socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = shutdown.wait() => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let cases = [
            (Found::Nothing, Action::Bind),
            (Found::Socket { answers: false }, Action::ReplaceStale),
            (Found::Socket { answers: true }, Action::InUse),
            (
                Found::Other("a regular file"),
                Action::NotASocket("a regular file"),
            ),
            (
                Found::Other("a directory"),
                Action::NotASocket("a directory"),
            ),
            (
                Found::Other("a symbolic link"),
                Action::NotASocket("a symbolic link"),
            ),
        ];
        for (found, want) in cases {
            assert_eq!(decide(found), want, "{found:?}");
        }
    }

    #[test]
    fn what_is_at_the_path_is_seen_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"keep me").unwrap();
        assert_eq!(look(&file).unwrap(), Found::Other("a regular file"));
        assert_eq!(look(dir.path()).unwrap(), Found::Other("a directory"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(look(&link).unwrap(), Found::Other("a symbolic link"));
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert_eq!(look(&dangling).unwrap(), Found::Other("a symbolic link"));
        assert_eq!(look(&dir.path().join("none")).unwrap(), Found::Nothing);
        let live = dir.path().join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        assert_eq!(look(&live).unwrap(), Found::Socket { answers: true });
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        assert_eq!(look(&stale).unwrap(), Found::Socket { answers: false });
    }
}
