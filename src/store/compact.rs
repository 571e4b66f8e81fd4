//! Rewriting the store into a fresh sled directory after a migration removed many keys.
//!
//! Why: sled 0.34 keeps an in-memory entry for every page id it ever allocated, freed
//! ones included, so a store upgraded from the one-key-per-status and one-key-per-send
//! layouts idled at 66 MiB after the migration removed their million keys, against
//! ~17 MiB for the same data grown fresh (issue 20 item 6; docs/performance.md). No
//! sled setting gives those ids back; a copy into a new directory has none.
//!
//! Crash safety, at every step `db` is a complete store:
//! 1. before a migration changes anything, the marker file `db.compact-pending` is
//!    written and fsynced (so a kill during the migration still compacts after it);
//! 2. every tree is copied into `db.new` (removed first if a killed run left one),
//!    sled's id generator is advanced past the old one's, flushed, fsynced;
//! 3. `db` and `db.new` are exchanged in one `renameat2(RENAME_EXCHANGE)` (atomic:
//!    either name always holds a complete store), and the state directory fsynced;
//! 4. the marker is removed (fsynced), then `db.new` (now the old store).
//!
//! A kill before 3 leaves the old store in `db` and the marker: the next open copies
//! again. After 3 and before 4 the next open copies the new store once more
//! (harmless). A `db.new` without the marker is a leftover and is removed.

use std::path::{Path, PathBuf};

use super::area::Tag;
use super::{Store, StoreError};

const MARKER: &str = "db.compact-pending";
const NEW: &str = "db.new";

fn io(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("compacting the store: {what}: {e}"))
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io(&format!("fsync {}", dir.display()), e))
}

fn marker(state_dir: &Path) -> PathBuf {
    state_dir.join(MARKER)
}

/// Whether any area of an earlier layout has keys (a migration is due).
pub(crate) fn has_legacy_keys(data: &sled::Tree) -> bool {
    [Tag::Seen, Tag::Status, Tag::SentLog]
        .iter()
        .any(|t| data.scan_prefix([*t as u8]).next().is_some())
}

/// Step 1: asks for a compaction at this open (and, if it is killed, the next).
pub(crate) fn request(state_dir: &Path) -> Result<(), StoreError> {
    let m = marker(state_dir);
    std::fs::File::create(&m)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("writing the marker", e))?;
    fsync_dir(state_dir)
}

/// Removes a `db.new` a killed compaction left without a marker (nothing wants it).
pub(crate) fn remove_leftover(state_dir: &Path) -> Result<(), StoreError> {
    let new = state_dir.join(NEW);
    if new.exists() && !marker(state_dir).exists() {
        std::fs::remove_dir_all(&new).map_err(|e| io("removing a leftover db.new", e))?;
    }
    Ok(())
}

impl Store {
    /// Steps 2–4 if the marker asks for them (then `true`). Runs at open, before the
    /// writer starts.
    pub(crate) fn compact_if_requested(
        &self,
        progress: &mut dyn FnMut(),
    ) -> Result<bool, StoreError> {
        if !marker(&self.state_dir).exists() {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        let new = self.state_dir.join(NEW);
        if new.exists() {
            std::fs::remove_dir_all(&new).map_err(|e| io("removing an unfinished db.new", e))?;
        }
        let mut guard = self.cell.write().unwrap_or_else(|p| p.into_inner());
        let old = guard
            .take()
            .ok_or_else(|| StoreError::Io("the store is not open".into()))?;
        let copied = (|| -> Result<usize, StoreError> {
            let fresh = super::sled_config(&new).open()?;
            let mut n = 0;
            for name in old.db.tree_names() {
                let from = old.db.open_tree(&name)?;
                let to = fresh.open_tree(&name)?;
                let mut batch = sled::Batch::default();
                for (i, item) in from.iter().enumerate() {
                    let (k, v) = item?;
                    batch.insert(k, v);
                    n += 1;
                    if i % 1_000 == 999 {
                        progress();
                        to.apply_batch(std::mem::take(&mut batch))?;
                    }
                }
                to.apply_batch(batch)?;
            }
            // Sequence numbers (spool, inbox, sends) come from sled's id generator,
            // which a copy does not carry: the new one must not hand out an old id.
            let last = old.db.generate_id()?;
            let mut i = 0u64;
            while fresh.generate_id()? <= last {
                i += 1;
                if i.is_multiple_of(1_000_000) {
                    progress();
                }
            }
            fresh.flush()?;
            Ok(n)
        })();
        let copied = match copied {
            Ok(n) => n,
            Err(e) => {
                *guard = Some(old);
                return Err(e);
            }
        };
        // sled closes its files when the last handle goes.
        drop(old);
        super::restrict_permissions(&new).map_err(|e| io("chmod db.new", e))?;
        fsync_dir(&new)?;
        fsync_dir(&self.state_dir)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.path,
            rustix::fs::CWD,
            &new,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| io("exchanging db and db.new", e))?;
        fsync_dir(&self.state_dir)?;
        let uid = rustix::process::geteuid().as_raw();
        *guard = Some(super::open_db(&self.path, &self.state_dir, uid)?);
        drop(guard);
        std::fs::remove_file(marker(&self.state_dir)).map_err(|e| io("removing the marker", e))?;
        fsync_dir(&self.state_dir)?;
        std::fs::remove_dir_all(&new).map_err(|e| io("removing the old store", e))?;
        release_freed_memory();
        tracing::info!(
            records = copied,
            millis = started.elapsed().as_millis() as u64,
            "rewrote the store into a fresh directory after the migration (sled keeps freed page ids in memory otherwise)"
        );
        Ok(true)
    }
}

/// Gives the memory the migration and the old store's sled instance freed back to the
/// system: glibc keeps freed heap in its arenas, so the first run after an upgrade
/// idled at 330 MiB (a million statuses and sends migrated) against 18 MiB at the next
/// start without it.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no
    // pointers and is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}
