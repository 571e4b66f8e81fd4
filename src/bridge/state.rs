//! The bridges' state directory: small JSON files, each written atomically (temp file,
//! fsync, rename, fsync of the directory) so a kill -9 leaves the old or the new
//! version, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
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

/// The state directory: `--state-dir`, else `$STATE_DIRECTORY` (systemd's
/// `StateDirectory=`), else `<gateway stateDir>/bridges/<kind>`.
pub fn resolve_dir(
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
pub fn ensure_dir(dir: &Path) -> Result<(), StateError> {
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
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
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
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
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
pub fn file_name(conversation: &str, ext: &str) -> String {
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
    }
}
