//! The sender task's handles ([`Sender`]), what it keeps in memory ([`Windows`]), and
//! the writes both of its drivers make: sending ([`super::sender`]) and looking up
//! sends of unknown outcome ([`super::lookup`]). Every state change goes through the
//! store writer and keeps the in-memory queue in step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::held::Announced;
use super::{Outbox, PartOutcome};
use crate::clock::now_ms;
use crate::limits::SendWindows;
use crate::live::LiveConfig;
use crate::metrics::Metrics;
use crate::store::{OutboundRecord, OutboundState, Store, StoreError, Writer};
use crate::twilio::MessagesApi;

/// The handles the sender needs.
pub(crate) struct Sender {
    pub store: Arc<Store>,
    pub writer: Writer,
    pub outbox: Arc<Outbox>,
    pub config: Arc<LiveConfig>,
    pub twilio: Arc<dyn MessagesApi>,
    pub metrics: Arc<Metrics>,
    /// What the sender remembers in memory (see [`Windows`]).
    pub windows: std::sync::Mutex<Windows>,
}

/// What the sender keeps in memory: the spending limits' windows and what was said
/// about them, and the monotonic times of each send of unknown outcome.
#[derive(Debug, Default)]
pub(crate) struct Windows {
    /// Per account with a limit set, what went out in the last day, per minute (built
    /// from the sent log when a limit first needs it).
    pub(super) sent: SendWindows,
    /// Which full windows were already announced.
    pub(super) announced: Announced,
    /// Record id → its times by the monotonic clock, for sends of unknown outcome.
    /// Lost on restart (the stored wall times are used then).
    pub(super) unknown_attempts: HashMap<u64, Tracked>,
    /// When the log last said that `outboundLimits.maxHeld` was reached, per account.
    pub(super) max_held_announced: HashMap<String, u64>,
}

/// A send of unknown outcome's times by the monotonic clock next to the stored wall
/// times, so that a wall clock stepped meanwhile (NTP after boot, an operator) neither
/// moves "since the attempt" nor makes a lookup come early (two lookups that find
/// nothing must be minutes apart in fact) or hours late.
#[derive(Debug)]
pub(super) struct Tracked {
    /// The stored attempt time and the same moment; `None` if attempted before a
    /// restart.
    pub(super) attempt: Option<(u64, Instant)>,
    /// The stored time of the next lookup and when it falls due.
    pub(super) due: (u64, Instant),
}

/// The monotonic moment of the wall-clock time `at_ms`, as the wall clock reads now.
pub(super) fn monotonic_at(at_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms()))
}

impl Sender {
    pub(super) fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes `rec` (through the writer); the in-memory queue follows from the write's
/// after-commit hook, in commit order (see [`Outbox::reload_in`]).
pub(super) async fn save(s: &Sender, rec: &OutboundRecord) -> Result<(), StoreError> {
    let r = rec.clone();
    let outbox = s.outbox.clone();
    s.writer
        .write(move |st, hooks| {
            st.put_outbound(&r)?;
            hooks.after(move || outbox.update(r));
            Ok(())
        })
        .await
}

/// A send went out: out of the store's queue and into the sent log (one batch), out of
/// the in-memory queue (the write's hook), and into the account's spending window.
pub(super) async fn record_sent(
    s: &Sender,
    rec: &OutboundRecord,
    segments: u32,
    sid: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    let at = now_ms();
    let done = rec.clone();
    let counted = s
        .config
        .get()
        .sms
        .account(&rec.account)
        .is_some_and(|a| a.outbound_limits.any());
    let sid = sid.map(|(sid, status)| (sid.to_string(), status.to_string()));
    let outbox = s.outbox.clone();
    s.writer
        .write(move |st, hooks| {
            let sid = sid.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            st.complete_send(&done, segments, at, sid, counted)?;
            let id = done.id;
            hooks.after(move || outbox.forget(id));
            Ok(())
        })
        .await?;
    s.windows()
        .sent
        .record(&rec.account, at, rec.to.as_str(), segments);
    Ok(())
}

/// A send that ends without going out: recorded as `state` with `why`, and whoever
/// waits hears it.
pub(super) async fn finish(
    s: &Sender,
    mut rec: OutboundRecord,
    state: OutboundState,
    why: String,
    code: Option<u32>,
) -> Result<Option<u64>, StoreError> {
    tracing::warn!(account = %rec.account, to = %rec.to.redacted(), id = rec.id, state = %crate::logging::label(&state), "send not completed: {why}");
    rec.state = state;
    rec.last_error = Some(why.clone());
    rec.last_code = code;
    save(s, &rec).await?;
    s.outbox
        .part_done(&rec, PartOutcome::Failed { message: why, code });
    Ok(None)
}
