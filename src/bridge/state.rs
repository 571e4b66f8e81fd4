//! The bridges' state directory: small JSON files, each written atomically (temp file,
//! fsync, rename, fsync of the directory) so a kill -9 leaves the old or the new
//! version, never half of one.
//!
//! Nothing here grows for ever: a conversation idle for [`MAX_IDLE`] (30 days) is
//! forgotten (its ACP session mapping, its OpenAI transcript), so a texter who comes
//! back after that starts a fresh conversation. The rule is [`idle`]; the time comes
//! from a [`Clock`] so tests can move it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON ({source}); move it away to start afresh")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A conversation untouched this long is forgotten (30 days).
pub(crate) const MAX_IDLE: u64 = 30 * 24 * 3600;

/// How often an active conversation's last-use time is written down: pruning only
/// needs it to the day, and a write per turn would rewrite the session map per turn.
pub(crate) const TOUCH_EVERY: u64 = 24 * 3600;

/// How often a long-running bridge looks for idle conversations.
pub(crate) const PRUNE_EVERY: u64 = 3600;

/// Seconds since the Unix epoch; injectable so tests can move time.
pub(crate) type Clock = fn() -> u64;

/// The wall clock.
pub(crate) fn system_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a conversation last used at `last_used` is forgotten at `now`. A time in
/// the future (a clock set back) is not idle.
pub(crate) fn idle(last_used: u64, now: u64, max_idle: u64) -> bool {
    now.saturating_sub(last_used) > max_idle
}

/// Whether a use at `now` must be written down, the last written being `written`.
pub(crate) fn touch_due(written: u64, now: u64) -> bool {
    now.saturating_sub(written) >= TOUCH_EVERY || now < written
}

/// Removes the transcript files (`<sha256>.json`) in `dir` last written more than
/// `max_idle` before `now`; returns how many. Other files are left alone.
pub(crate) fn prune_files(dir: &Path, now: u64, max_idle: u64) -> Result<usize, StateError> {
    let rerr = |source| StateError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(rerr)? {
        let entry = entry.map_err(rerr)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_state_file(name, "json") {
            continue;
        }
        let Ok(md) = entry.metadata() else { continue };
        let written = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now, |d| d.as_secs());
        if md.is_file() && idle(written, now, max_idle) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StateError::Write {
                        path: entry.path(),
                        source,
                    })
                }
            }
        }
    }
    Ok(removed)
}

/// Whether `name` is a file [`file_name`] made.
fn is_state_file(name: &str, ext: &str) -> bool {
    name.strip_suffix(ext)
        .and_then(|n| n.strip_suffix('.'))
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The state directory: `--state-dir`, else `$STATE_DIRECTORY` (systemd's
/// `StateDirectory=`), else `<gateway stateDir>/bridges/<kind>`.
pub(crate) fn resolve_dir(
    flag: Option<PathBuf>,
    env_state_directory: Option<PathBuf>,
    gateway_state_dir: Option<&Path>,
    kind: &str,
) -> Option<PathBuf> {
    flag.or_else(|| {
        // systemd may list several directories separated by ':'; the first is ours.
        env_state_directory.and_then(|d| {
            d.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
    })
    .or_else(|| gateway_state_dir.map(|d| d.join("bridges").join(kind)))
}

/// Creates `dir` (mode 0700: transcripts are private).
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `value` as JSON to `path`, atomically and durably.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let werr = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StateError::Write { path: p, source }
    };
    let data = serde_json::to_vec(value).map_err(|e| StateError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(werr(&tmp))?;
    f.write_all(&data).map_err(werr(&tmp))?;
    f.sync_all().map_err(werr(&tmp))?;
    std::fs::rename(&tmp, path).map_err(werr(path))?;
    // The rename itself must survive a power cut too.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads JSON from `path`; `Ok(None)` when the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|source| StateError::Corrupt {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A file name for a conversation id: its SHA-256 in hex, so an id can never name a
/// path outside the directory, whatever characters it holds.
pub(crate) fn file_name(conversation: &str, ext: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(conversation.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dir_precedence() {
        let gw = Path::new("/var/lib/smsgate");
        let cases = [
            (Some("/x"), Some("/y"), "/x"),
            (None, Some("/y:/z"), "/y"),
            (None, Some(""), "/var/lib/smsgate/bridges/acp"),
            (None, None, "/var/lib/smsgate/bridges/acp"),
        ];
        for (flag, env, want) in cases {
            assert_eq!(
                resolve_dir(
                    flag.map(PathBuf::from),
                    env.map(PathBuf::from),
                    Some(gw),
                    "acp"
                ),
                Some(PathBuf::from(want))
            );
        }
        assert_eq!(resolve_dir(None, None, None, "acp"), None);
    }

    #[test]
    fn round_trip_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("a.json");
        assert!(read_json::<Vec<u32>>(&p).unwrap().is_none());
        write_json(&p, &vec![1, 2, 3]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2, 3]));
        std::fs::write(&p, "{half").unwrap();
        let e = read_json::<Vec<u32>>(&p).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
        let n = file_name("../../etc/passwd", "json");
        assert_eq!(n.len(), 64 + 5);
        assert!(!n.contains('/'));
        assert!(is_state_file(&n, "json"));
        for other in [
            "sessions.json",
            "x.json",
            &n.replace(".json", ".tmp"),
            "a.json.json",
        ] {
            assert!(!is_state_file(other, "json"), "{other}");
        }
    }

    #[test]
    fn idle_table() {
        const DAY: u64 = 24 * 3600;
        let now = 100 * DAY;
        let cases = [
            (now, false),
            (now - DAY, false),
            (now - 30 * DAY, false),
            (now - 30 * DAY - 1, true),
            (0, true),
            // a clock set back: not idle
            (now + DAY, false),
        ];
        for (last, want) in cases {
            assert_eq!(idle(last, now, MAX_IDLE), want, "{last}");
        }
        assert!(!touch_due(now, now));
        assert!(!touch_due(now - DAY + 1, now));
        assert!(touch_due(now - DAY, now));
        assert!(touch_due(now + 5, now), "a clock set back writes again");
    }

    #[test]
    fn prune_files_removes_only_idle_transcripts() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(file_name("old", "json"));
        let fresh = dir.path().join(file_name("fresh", "json"));
        let other = dir.path().join("sessions.json");
        for p in [&old, &fresh, &other] {
            std::fs::write(p, "{}").unwrap();
        }
        let now = system_clock();
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now - MAX_IDLE - 60);
        for p in [&old, &other] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        assert_eq!(prune_files(dir.path(), now, MAX_IDLE).unwrap(), 1);
        assert!(!old.exists());
        assert!(fresh.exists() && other.exists());
        // The same files, 31 days later (an injected clock): the fresh one goes too.
        assert_eq!(
            prune_files(dir.path(), now + MAX_IDLE + 60, MAX_IDLE).unwrap(),
            1
        );
        assert!(!fresh.exists() && other.exists());
    }
}
