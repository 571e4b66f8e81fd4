//! systemd's notify protocol (`Type=notify`): READY, STOPPING, RELOADING and watchdog
//! pings, sent as datagrams to `$NOTIFY_SOCKET`. Nothing happens when it is unset.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Sends one notification; errors are logged, never fatal.
pub(crate) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let result = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket name.
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("cannot notify systemd ({}): {e}", state.escape_debug());
    }
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any and if it is ours.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// How much more time one `EXTEND_TIMEOUT_USEC` asks for.
const EXTEND_BY: Duration = Duration::from_secs(30);
/// How often a long start step asks: well within [`EXTEND_BY`].
const EXTEND_EVERY: Duration = Duration::from_secs(5);

/// Keeps systemd's start timeout (`TimeoutStartSec=`, 90 s by default) from running out
/// during a long step before READY (moving a big store to a new layout): each
/// [`StartKeepalive::tick`] asks for [`EXTEND_BY`] more, at most every [`EXTEND_EVERY`].
/// Without it a start that takes longer is killed and restarted, and never finishes.
#[derive(Debug, Default)]
pub(crate) struct StartKeepalive {
    last: Option<Instant>,
}

impl StartKeepalive {
    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        if extend_due(self.last, now) {
            self.last = Some(now);
            notify(&format!("EXTEND_TIMEOUT_USEC={}", EXTEND_BY.as_micros()));
        }
    }
}

/// Whether to ask again: the first time, then once [`EXTEND_EVERY`] has passed.
fn extend_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= EXTEND_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_first_then_every_five_seconds() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let cases = [
            (None, t, true),
            (Some(t), t, false),
            (Some(t), t + s(4), false),
            (Some(t), t + s(5), true),
            (Some(t + s(9)), t, false),
        ];
        for (last, now, want) in cases {
            assert_eq!(extend_due(last, now), want, "{last:?} {now:?}");
        }
        assert!(
            EXTEND_EVERY * 3 < EXTEND_BY,
            "several chances before it runs out"
        );
    }
}
