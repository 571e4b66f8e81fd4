//! Durable state in sled: admissions and their dedupe marks, the agent inbox, reply
//! routes, dead letters, delivery statuses, the outbound queue and the access state
//! (pairing requests, approved senders, opt-outs).
//!
//! Layout: one sled tree split into areas by key prefix ([`area`]); every event's
//! changes are one atomic `Batch`. Writes happen on ONE thread, the [`Writer`], which
//! applies every waiting request, fsyncs once for all of them, and only then answers
//! (and runs their after-commit hooks, which feed the in-memory queues). Reads go
//! straight to sled from any thread. The CLI, when no daemon runs, writes directly and
//! flushes (sled's lock guarantees there is no daemon then).
//!
//! Files: `mod.rs` opening, permissions, migration and quarantine; `inbound.rs`
//! admission, spool, dedupe and statuses; `access.rs` pairing, approvals, opt-outs;
//! `agent.rs` the inbox, routes and dead letters; `outbound.rs` the send queue; `media.rs` the agent's outbound media;
//! `writer.rs` the single writer.

pub(crate) mod access;
pub(crate) mod agent;
pub(crate) mod approvals;
pub mod area;
mod compact;
pub mod dedupe;
pub(crate) mod inbound;
pub(crate) mod media;
pub(crate) mod outbound;
pub(crate) mod records;
pub mod sent;
pub mod statuses;
pub(crate) mod whatsapp;
pub(crate) mod writer;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use crate::clock::now_ms;
pub use agent::{
    after_agent_failure, AfterFailure, AgentFailed, FIRST_AGENT_RETRY_MS, MAX_AGENT_FAILURES,
    MAX_AGENT_RETRY_MS,
};
pub use approvals::AskRecord;
pub use area::Seq;
use area::{Area, Batch, Cell, Handles, Tag};
pub use media::{MediaBlob, MediaMeta};
pub use records::*;
pub use writer::{Hooks, Writer};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is locked by another process{} (is `smsgate gateway` running as another user, or another copy?)", holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        path: PathBuf,
        /// Who holds sled's lock, from /proc/locks (None when it cannot be told).
        holder: Option<u32>,
    },
    #[error(
        "the store at {path} belongs to uid {owner} ({name}), but smsgate runs as uid {me}; {fix}"
    )]
    WrongOwner {
        path: PathBuf,
        owner: u32,
        name: String,
        me: u32,
        /// What to do about it: [`ownership_fix`].
        fix: String,
    },
    #[error("cannot open the store at {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("the store at {path} is corrupt: {message}; move it aside and restart to begin with an empty store")]
    Corrupt { path: PathBuf, message: String },
    #[error("store write failed: {0}")]
    Io(String),
    #[error("stored record is unreadable: {0}")]
    Decode(String),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Records are JSON: readable with any sled tool, tolerant of added fields across
/// versions; after the rebuild each record is encoded once on its way in and decoded
/// once at start (the queues keep them in memory), so the format is off the hot path.
pub(crate) fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own plain records to JSON cannot fail (no maps with non-string
    // keys, no custom serialisers that error): documented invariant.
    #[allow(clippy::expect_used)]
    serde_json::to_vec(v).expect("records serialise")
}

pub(crate) fn dec<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode(e.to_string()))
}

/// Outcome of a delivery status callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusUpdate {
    Duplicate,
    /// For a SID we never sent (or whose record was pruned): nothing is stored.
    NotOurs,
    /// Older than what is recorded (callbacks arrive out of order): not applied.
    Stale,
    Applied,
}

/// Outcome of offering a webhook to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    Duplicate,
}

/// Tree names of the layout before the single tree (one tree per area); migrated into
/// the single tree at open.
const LEGACY_TREES: [(&str, Tag); 12] = [
    ("spool", Tag::Spool),
    ("seen", Tag::Seen),
    ("rejected", Tag::Rejected),
    ("pairing", Tag::Pairing),
    ("approved", Tag::Approved),
    ("optout", Tag::OptOut),
    ("inbox", Tag::Inbox),
    ("outbound", Tag::Outbound),
    ("status", Tag::Status),
    ("routes", Tag::Route),
    ("dead", Tag::Dead),
    ("texted", Tag::Texted),
];

#[derive(Clone)]
pub struct Store {
    cell: Cell,
    path: PathBuf,
    state_dir: PathBuf,
    /// Whether this open rewrote the store into a fresh directory ([`compact`]): the
    /// process then holds the migration's fragmented heap, which the gateway gives back
    /// by starting itself afresh once ([`Store::compacted_at_open`]).
    compacted: bool,
    /// Dedupe marks in buckets ([`dedupe`]).
    pub(crate) dedupe: Area,
    pub(crate) spool: Area,
    pub(crate) rejected: Area,
    pub(crate) pairing: Area,
    pub(crate) approved: Area,
    pub(crate) optout: Area,
    pub(crate) inbox: Area,
    pub(crate) outbound: Area,
    pub(crate) finished: Area,
    /// Delivery statuses in buckets ([`statuses`]).
    pub(crate) statuses: Area,
    pub(crate) routes: Area,
    pub(crate) dead: Area,
    pub(crate) texted: Area,
    pub(crate) quarantine: Area,
    pub(crate) conversations: Area,
    /// The sent log per account-minute ([`sent`]).
    pub(crate) sent_log: Area,
    pub(crate) asks: Area,
    pub(crate) decided: Area,
    pub(crate) media_blobs: Area,
    pub(crate) media_index: Area,
    pub(crate) whatsapp_seen: Area,
    pub(crate) whatsapp_holds: Area,
}

impl Store {
    /// Opens (creating if needed) the store in `state_dir`. Refuses a state dir owned by
    /// another user, so root never leaves files the service cannot open. The database
    /// directory and its files are made owner-only whatever mode they had.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let path = state_dir.join("db");
        let open_err = |message: String| StoreError::Open {
            path: state_dir.to_path_buf(),
            message,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| open_err(format!("cannot create the state directory: {e}")))?;
        let meta = std::fs::metadata(state_dir).map_err(|e| open_err(e.to_string()))?;
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(wrong_owner(state_dir, meta.uid()));
        }
        compact::remove_leftover(state_dir)?;
        let handles = open_db(&path, state_dir, meta.uid())?;
        let legacy_trees = handles.db.tree_names().iter().any(|n| {
            LEGACY_TREES
                .iter()
                .any(|(name, _)| n.as_ref() == name.as_bytes())
        });
        if legacy_trees || compact::has_legacy_keys(&handles.data) {
            compact::request(state_dir)?;
        }
        restrict_permissions(&path)
            .map_err(|e| open_err(format!("cannot make the database owner-only (chmod): {e}")))?;
        let cell: Cell = Arc::new(RwLock::new(Some(handles)));
        let area = |tag| Area {
            cell: cell.clone(),
            tag,
        };
        let mut store = Self {
            dedupe: area(Tag::Dedupe),
            spool: area(Tag::Spool),
            rejected: area(Tag::Rejected),
            pairing: area(Tag::Pairing),
            approved: area(Tag::Approved),
            optout: area(Tag::OptOut),
            inbox: area(Tag::Inbox),
            outbound: area(Tag::Outbound),
            finished: area(Tag::Finished),
            statuses: area(Tag::Statuses),
            routes: area(Tag::Route),
            dead: area(Tag::Dead),
            texted: area(Tag::Texted),
            quarantine: area(Tag::Quarantine),
            conversations: area(Tag::Conversation),
            sent_log: area(Tag::SentMinutes),
            asks: area(Tag::Asks),
            decided: area(Tag::Decided),
            media_blobs: area(Tag::MediaBlob),
            media_index: area(Tag::MediaIndex),
            whatsapp_seen: area(Tag::WhatsappSeen),
            whatsapp_holds: area(Tag::WhatsappHeld),
            cell,
            path,
            state_dir: state_dir.to_path_buf(),
            compacted: false,
        };
        store.migrate_legacy_trees()?;
        store.migrate_seen_marks()?;
        let mut keepalive = crate::systemd::StartKeepalive::default();
        store.migrate_statuses(&mut || keepalive.tick())?;
        store.migrate_sent_log(&mut || keepalive.tick())?;
        store.compacted = store.compact_if_requested(&mut || keepalive.tick())?;
        Ok(store)
    }

    /// Whether this open migrated an earlier layout and rewrote the store into a fresh
    /// directory. The store is complete either way; the process's heap is not: the
    /// migration's peak (~300 MiB for a million statuses and sends) leaves glibc's heap
    /// fragmented, so such a process idles at ~40 MiB against ~18 MiB for the same store
    /// opened by a fresh one (docs/performance.md). The gateway restarts itself then.
    pub fn compacted_at_open(&self) -> bool {
        self.compacted
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `stateDir` can be read or entered by the group or others (a hand-made
    /// directory, a Docker bind mount): the daemon warns about it at start.
    pub fn state_dir_exposed(&self) -> Option<u32> {
        let mode = std::fs::metadata(&self.state_dir)
            .ok()?
            .permissions()
            .mode()
            & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }

    fn handles(&self) -> Result<Handles, StoreError> {
        area::handles(&self.cell)
    }

    /// Makes every write so far durable (fsync). The writer calls this once per batch;
    /// on the writer thread in the middle of a round it does nothing, because the
    /// round's changes are not applied yet and the writer flushes them after.
    pub fn flush(&self) -> Result<(), StoreError> {
        if area::pending_active() {
            return Ok(());
        }
        self.handles()?
            .db
            .flush()
            .map(|_| ())
            .map_err(StoreError::from)
    }

    pub(crate) fn next_id(&self) -> Result<u64, StoreError> {
        self.handles()?.db.generate_id().map_err(StoreError::from)
    }

    /// Applies `batch` atomically: at once, or on the writer thread with the rest of
    /// its round (see `area.rs`, "the writer's pending batch").
    pub(crate) fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(batch) = area::pending_push(batch) {
            self.apply_now(batch)?;
        }
        Ok(())
    }

    /// Applies `batch` to sled at once, even on the writer thread in a round: for the
    /// round's own batch, and for maintenance whose changes must not pile up in memory
    /// (pruning a million old dedupe keys) and that is safe to apply early.
    pub(crate) fn apply_now(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.handles()?.data.apply_batch(batch.into_sled())?;
        Ok(())
    }

    /// Closes and reopens the database: after a write error (a full disk) sled refuses
    /// every later operation, so the writer recovers by reopening once writes work
    /// again. Only what was flushed is there afterwards, which is everything that was
    /// acknowledged.
    pub(crate) fn reopen(&self) -> Result<(), StoreError> {
        let uid = rustix::process::geteuid().as_raw();
        let mut guard = self.cell.write().unwrap_or_else(|p| p.into_inner());
        // Drop our handles first: sled closes the files when the last handle goes.
        *guard = None;
        let handles = open_db(&self.path, &self.state_dir, uid)?;
        // A write must work again before the store counts as recovered.
        handles.db.insert(b"probe", &[])?;
        handles.db.flush()?;
        *guard = Some(handles);
        Ok(())
    }

    /// Moves the one-tree-per-area layout of earlier versions into the single tree.
    fn migrate_legacy_trees(&self) -> Result<(), StoreError> {
        let h = self.handles()?;
        let names = h.db.tree_names();
        let mut moved = 0usize;
        for (name, tag) in LEGACY_TREES {
            if !names.iter().any(|n| n.as_ref() == name.as_bytes()) {
                continue;
            }
            let old = h.db.open_tree(name)?;
            let mut batch = sled::Batch::default();
            for item in old.iter() {
                let (k, v) = item?;
                let mut key = vec![tag as u8];
                key.extend_from_slice(&k);
                batch.insert(key, v);
                moved += 1;
            }
            h.data.apply_batch(batch)?;
            h.db.flush()?;
            h.db.drop_tree(name)?;
        }
        if moved > 0 {
            h.db.flush()?;
            tracing::info!(records = moved, "moved the store to the single-tree layout");
        }
        Ok(())
    }

    /// Moves an entry that does not decode out of its area, so one bad record never
    /// blocks a queue; the raw bytes stay for inspection.
    pub(crate) fn quarantine(&self, from: &Area, key: &[u8], why: &StoreError) {
        let raw = from
            .get(key)
            .ok()
            .flatten()
            .map(|v| v.to_vec())
            .unwrap_or_default();
        let mut b = Batch::new();
        b.remove(from, key);
        b.insert(&self.quarantine, from.full_key(key), raw);
        match self.apply(b) {
            Ok(()) => {
                tracing::error!(area = %(from.tag as u8 as char), "a stored record could not be decoded ({why}); moved it to the quarantine area and carried on")
            }
            Err(e) => {
                tracing::error!("a stored record could not be decoded ({why}) nor quarantined: {e}")
            }
        }
    }

    pub fn quarantined_len(&self) -> usize {
        self.quarantine.len()
    }
}

/// Removes every key starting with `prefix` (an area's tag), in chunks in key order,
/// each chunk starting after the last key removed (rescanning from the start would
/// step over everything removed so far); returns how many.
pub(crate) fn remove_prefix(
    h: &Handles,
    prefix: &[u8],
    progress: &mut dyn FnMut(),
) -> Result<usize, StoreError> {
    const CHUNK: usize = 10_000;
    let mut from = prefix.to_vec();
    let mut removed = 0;
    loop {
        progress();
        let keys: Vec<sled::IVec> = h
            .data
            .range(from.as_slice()..)
            .keys()
            .take_while(|k| k.as_ref().map_or(true, |k| k.starts_with(prefix)))
            .take(CHUNK)
            .collect::<Result<_, _>>()?;
        let Some(last) = keys.last() else { break };
        from = last.to_vec();
        from.push(0);
        removed += keys.len();
        let mut b = sled::Batch::default();
        keys.into_iter().for_each(|k| b.remove(k));
        h.data.apply_batch(b)?;
    }
    Ok(removed)
}

/// How the store configures sled at `path` (public for the benchmarks in `examples/`,
/// which must measure sled exactly as the daemon runs it).
pub fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(16 * 1024 * 1024)
        .flush_every_ms(Some(1000))
}

/// Opens sled at `path`, mapping its errors to ones that say what to do.
fn open_db(path: &Path, state_dir: &Path, owner: u32) -> Result<Handles, StoreError> {
    let db = sled_config(path).open().map_err(|e| match e {
        sled::Error::Io(io)
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock") =>
        {
            StoreError::Locked {
                path: path.to_path_buf(),
                holder: lock_holder(&path.join("db")),
            }
        }
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            wrong_owner(state_dir, owner)
        }
        sled::Error::Corruption { .. }
        | sled::Error::ReportableBug(_)
        | sled::Error::Unsupported(_) => StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
        other => StoreError::Open {
            path: state_dir.to_path_buf(),
            message: other.to_string(),
        },
    })?;
    let data = db.open_tree("data")?;
    Ok(Handles { db, data })
}

/// The pid holding the flock sled takes on its `db` file: /proc/locks lists each lock
/// with the holder's pid and the file's device and inode (Linux; None elsewhere).
fn lock_holder(file: &Path) -> Option<u32> {
    let meta = std::fs::metadata(file).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, meta.dev(), meta.ino())
}

/// The pid of a lock on device `dev`, inode `ino` in /proc/locks' text, whose lines are
/// `1: FLOCK  ADVISORY  WRITE 1234 08:01:131090 0 EOF` (major:minor in hex).
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    // The kernel's dev_t encoding (glibc's major()/minor()).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "->" marks a waiter, not the holder.
        if fields.get(1) == Some(&"->") {
            return None;
        }
        let at = fields.iter().position(|f| *f == want)?;
        fields.get(at.checked_sub(1)?)?.parse().ok()
    })
}

/// Owner-only database: the directory 0700, every file in it 0600 (sled creates its
/// files with the umask's mode; message bodies and phone numbers are in them).
fn restrict_permissions(db_dir: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(db_dir, std::fs::Permissions::from_mode(0o700))?;
    let mut dirs = vec![db_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))?;
                dirs.push(entry.path());
            } else if ty.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

fn wrong_owner(state_dir: &Path, owner: u32) -> StoreError {
    let me = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    let name = user_name(owner);
    let in_container = ["/.dockerenv", "/run/.containerenv"]
        .iter()
        .any(|p| Path::new(p).exists())
        || std::env::var_os("container").is_some();
    StoreError::WrongOwner {
        path: state_dir.to_path_buf(),
        fix: ownership_fix(state_dir, owner, &name, me, gid, in_container),
        owner,
        name,
        me,
    }
}

/// What an operator should do when the state directory belongs to `owner` and smsgate
/// runs as `me`:`gid`. Running as the owner suits an operator's CLI command run as the
/// wrong user (root, say); it is the wrong advice for the daemon in a container, which
/// runs as a fixed uid (10001 in our image): there the directory, usually a bind mount
/// created by root on the host, must be given to that uid.
pub fn ownership_fix(
    state_dir: &Path,
    owner: u32,
    owner_name: &str,
    me: u32,
    gid: u32,
    in_container: bool,
) -> String {
    let dir = state_dir.display();
    let chown = format!("chown -R {me}:{gid} {dir}");
    if me == 0 && in_container {
        format!("run this command as that user: `docker exec -u {owner} …`")
    } else if me == 0 {
        format!("run this command as that user, e.g. `sudo -u {owner_name} smsgate …`")
    } else if in_container {
        format!("this container runs smsgate as uid {me}, so give it the directory: `{chown}` (for a bind mount, run that on the host's directory, e.g. `sudo chown -R {me}:{gid} /srv/smsgate`)")
    } else if owner == 0 {
        format!("give the directory to the user smsgate runs as: `sudo {chown}`")
    } else {
        format!("run this command as that user (`sudo -u {owner_name} smsgate …`), or, if smsgate should run as uid {me}, give it the directory: `sudo {chown}`")
    }
}

fn user_name(uid: u32) -> String {
    // /etc/passwd is the portable answer without NSS bindings; good enough for a hint.
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The state changes that processing one inbound message makes.
#[derive(Debug, Default)]
pub struct Effects {
    pub now: u64,
    pub forward: Option<AgentMessage>,
    pub new_pairing: Option<crate::access::pairing::PairingRequest>,
    pub expire_pairing: Vec<crate::access::pairing::PairingRequest>,
    /// (account, number, opted out?)
    pub opt: Option<(String, crate::phone::E164, bool)>,
    pub outbound: Vec<OutboundRecord>,
    /// A pairing text went to (account, number): counts against the SMS budget.
    pub texted: Option<(String, crate::phone::E164)>,
    /// (account, number, id): the sender's conversation is now `id` (a first message,
    /// or `/new`).
    pub conversation: Option<(String, crate::phone::E164, String)>,
    /// Stored with `conversation`: when the sender's last `/new` confirmation was
    /// texted (at most one a minute, [`crate::inbound::confirms_new_conversation`]).
    pub conversation_texted_at: Option<u64>,
    /// An approver's answer decided this ask (CONTRACT §9): it leaves the pending
    /// asks for the audit in the same batch.
    pub decided: Option<AskRecord>,
    /// A WhatsApp sender wrote (account, address): their 24-hour window starts now.
    pub whatsapp_seen: Option<(String, crate::phone::E164)>,
    /// The ids of the held texts this message releases (of `whatsapp_seen`'s sender):
    /// they leave `W` in this batch, and are in `outbound` (queued again, same id;
    /// [`Store::whatsapp_released`]).
    pub whatsapp_released: Vec<u64>,
}

#[cfg(test)]
mod ownership_tests {
    use super::ownership_fix;
    use std::path::Path;

    #[test]
    fn the_fix_depends_on_who_runs_and_where() {
        let dir = Path::new("/var/lib/smsgate");
        // (owner, owner name, me, in a container) -> must contain, must not contain
        let table: &[(u32, &str, u32, bool, &str, &str)] = &[
            // The image's fixed uid on a root-owned bind mount: chown, never "run as root".
            (
                0,
                "root",
                10001,
                true,
                "chown -R 10001:10001",
                "sudo -u root",
            ),
            // Same, the mount made by a host user.
            (
                1000,
                "uid 1000",
                10001,
                true,
                "chown -R 10001:10001",
                "sudo -u",
            ),
            // An operator's CLI run as root on the service's store: run as its owner.
            (998, "smsgate", 0, false, "sudo -u smsgate smsgate", "chown"),
            // A service user on a root-owned directory on a VPS: chown, not "run as root".
            (
                0,
                "root",
                998,
                false,
                "sudo chown -R 998:10001",
                "sudo -u root",
            ),
            // `docker exec -u 0` on the image's store: as its owner, not chown to root.
            (10001, "uid 10001", 0, true, "docker exec -u 10001", "chown"),
            // Two ordinary users: either way, both named.
            (
                1000,
                "alice",
                998,
                false,
                "sudo -u alice smsgate",
                "-u root",
            ),
        ];
        for &(owner, name, me, container, want, never) in table {
            let fix = ownership_fix(dir, owner, name, me, 10001, container);
            assert!(fix.contains(want), "{owner} {me} {container}: {fix}");
            assert!(!fix.contains(never), "{owner} {me} {container}: {fix}");
        }
    }
}

#[cfg(test)]
mod lock_holder_tests {
    use super::{holder_in, lock_holder, Store, StoreError};

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 999 08:01:55 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 103:02:131090 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 7 103:02:131090 0 EOF\n";
        // dev 0x10302 is major 0x103, minor 0x02.
        assert_eq!(holder_in(locks, 0x10302, 131090), Some(4242));
        assert_eq!(holder_in(locks, 0x801, 55), Some(999));
        assert_eq!(holder_in(locks, 0x801, 131090), None);
        assert_eq!(holder_in("", 0x801, 55), None);
    }

    #[test]
    fn a_locked_store_names_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path()).unwrap();
        let db = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path().join("db")))
            .find(|p| p.exists())
            .expect("sled's db file");
        assert_eq!(lock_holder(&db), Some(std::process::id()));
        let e = StoreError::Locked {
            path: db,
            holder: Some(4242),
        };
        assert!(e.to_string().contains("(pid 4242)"), "{e}");
    }
}

#[cfg(test)]
pub(crate) mod tests;
