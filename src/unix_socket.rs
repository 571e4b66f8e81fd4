//! The two local Unix sockets (admin and agent) share how they are bound and accepted.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

use crate::shutdown::Shutdown;

/// Binds a Unix socket, replacing a stale file only when nothing answers on it.
pub fn bind(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use by a running process (another smsgate?)",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
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
pub async fn accept(
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
