//! Output to a closed pipe (`smsgate … | head -1`) ends the command quietly with exit 0.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE: `println!` then
//! panics, library writers (`clap_complete`) panic or return the error. Restoring
//! SIGPIPE's default would instead kill the process by signal (status 141, not 0) and,
//! in the gateway and the bridges, kill the daemon when a socket peer goes away. So
//! SIGPIPE stays ignored and the CLI edge recognises the two shapes a closed stdout or
//! stderr takes, whatever printed: a returned `BrokenPipe` error and a panic about one.
//! A panic unwinds, so destructors run (the demo's temporary directory is removed);
//! this relies on `panic = "unwind"`, the default, which the release profile keeps.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// True when `fd` is a pipe or socket whose reader has gone (poll reports an error or
/// hang-up for writing).
fn closed(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout; poll only reads and writes `p`.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Whether stdout or stderr is a closed pipe.
pub(super) fn output_closed() -> bool {
    closed(libc::STDOUT_FILENO) || closed(libc::STDERR_FILENO)
}

/// What a panic message about a closed pipe looks like (std's "failed printing to
/// stdout: Broken pipe (os error 32)", an `expect` on an `io::Error`'s Debug form).
pub(super) fn mentions_broken_pipe(message: &str) -> bool {
    message.contains("Broken pipe")
        || message.contains("BrokenPipe")
        || message.contains("os error 32")
}

/// Whether an error (anywhere in its chain) is a write to a closed pipe.
pub(super) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    }) && output_closed()
}

fn payload_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    let p = info.payload();
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Installs a panic hook that keeps a closed-pipe panic quiet (and remembers it, for
/// [`was_closed_pipe`]); every other panic is reported as before.
pub(super) fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if mentions_broken_pipe(&payload_text(info)) && output_closed() {
            QUIET.store(true, Ordering::SeqCst);
            return;
        }
        default(info);
    }));
}

/// Whether a panic was a closed pipe's.
pub(super) fn was_closed_pipe() -> bool {
    QUIET.load(Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_pipe_messages_are_recognised_and_others_are_not() {
        for m in [
            "failed printing to stdout: Broken pipe (os error 32)",
            "failed to write completion file: Os { code: 32, kind: BrokenPipe, message: \"Broken pipe\" }",
        ] {
            assert!(mentions_broken_pipe(m), "{m}");
        }
        for m in [
            "index out of bounds",
            "called `Option::unwrap()` on a `None` value",
        ] {
            assert!(!mentions_broken_pipe(m), "{m}");
        }
    }

    #[test]
    fn a_pipe_without_reader_is_closed_and_one_with_a_reader_is_not() {
        let mut fds = [0; 2];
        // SAFETY: a fresh pipe; both ends closed below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        assert!(!closed(fds[1]));
        unsafe { libc::close(fds[0]) };
        assert!(closed(fds[1]));
        unsafe { libc::close(fds[1]) };
    }
}
