//! The agent inbox (messages until an agent acknowledges them), reply routes and dead
//! letters.

use super::area::{seen_route, seen_time, Batch, Seq};
use super::{dec, enc, AgentFailures, AgentMessage, DeadLetter, Route, Store, StoreError};
use crate::phone::E164;

/// `fail` lines a message may get; the last one moves it to the dead letters
/// (CONTRACT §11).
pub const MAX_AGENT_FAILURES: u32 = 5;
/// The wait before the first redelivery of a failed message (CONTRACT §11);
/// `SMSGATE_AGENT_RETRY_MS` shortens it (see [`crate::agent::retry_first_ms`]).
pub const FIRST_AGENT_RETRY_MS: u64 = 30_000;
/// The longest wait between deliveries of a failed message.
pub const MAX_AGENT_RETRY_MS: u64 = 3_600_000;

/// What becomes of a message the agent failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Delivered again after this many milliseconds.
    RetryIn(u64),
    DeadLetter,
}

/// The rule for a message's `failures`-th failure (1 = the first): `retry: false` or
/// the [`MAX_AGENT_FAILURES`]th failure ends in the dead letters; otherwise the wait
/// starts at `first_ms` and doubles with each failure, at most [`MAX_AGENT_RETRY_MS`].
pub fn after_agent_failure(failures: u32, retry: bool, first_ms: u64) -> AfterFailure {
    if !retry || failures >= MAX_AGENT_FAILURES {
        return AfterFailure::DeadLetter;
    }
    let doublings = failures.saturating_sub(1).min(32);
    AfterFailure::RetryIn(
        first_ms
            .saturating_mul(1u64 << doublings)
            .min(MAX_AGENT_RETRY_MS),
    )
}

/// What [`Store::agent_failed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFailed {
    /// Back in the inbox with its failure count and next delivery time: deliver it
    /// again (not before `failures.retry_at_ms`).
    Retry(AgentMessage),
    /// Moved to the dead letters (`queue list` state `agent-failed`).
    Dead(AgentMessage),
}

impl Store {
    /// Every message in the inbox, oldest first. Entries that do not decode are
    /// quarantined and skipped.
    pub fn inbox(&self) -> Result<Vec<(u64, AgentMessage)>, StoreError> {
        let mut out = Vec::new();
        for item in self.inbox.iter() {
            let (k, v) = item?;
            match (Seq::parse(&k), dec::<AgentMessage>(&v)) {
                (Some(seq), Ok(msg)) => out.push((seq.0, msg)),
                (_, Err(e)) => self.quarantine(&self.inbox, &k, &e),
                (None, Ok(_)) => {
                    self.quarantine(&self.inbox, &k, &StoreError::Decode("bad key".into()))
                }
            }
        }
        Ok(out)
    }

    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    pub fn put_inbox(&self, seq: u64, msg: &AgentMessage) -> Result<(), StoreError> {
        let mut b = Batch::new();
        b.insert(&self.inbox, Seq(seq).bytes(), enc(msg));
        self.apply(b)
    }

    /// The changes acknowledging a message makes: its body goes. Its reply route stays
    /// in its dedupe mark (see `area::seen_value`), so an ack is one removal. Added to
    /// `b` so a reply's ack and its queued parts are one batch.
    /// An agent acknowledged message `seq`: it leaves the inbox (in the writer's round).
    pub(crate) fn ack(&self, seq: u64) -> Result<(), StoreError> {
        let mut b = Batch::new();
        self.ack_into(&mut b, seq);
        self.apply(b)
    }

    /// A text routed from the agent side is queued, with the ack of the message it
    /// answers (`ack_seq`), in one batch: the ack and the reply survive a crash together.
    pub(crate) fn reply_routed(
        &self,
        ack_seq: Option<u64>,
        records: &[super::OutboundRecord],
    ) -> Result<(), StoreError> {
        let mut b = Batch::new();
        if let Some(seq) = ack_seq {
            self.ack_into(&mut b, seq);
        }
        self.enqueue_into(&mut b, records);
        self.apply(b)
    }

    pub(crate) fn ack_into(&self, b: &mut Batch, seq: u64) {
        b.remove(&self.inbox, Seq(seq).bytes());
    }

    /// Acknowledges a message (when its body is not at hand, e.g. in tests).
    pub fn ack_inbox(&self, seq: u64) -> Result<Option<AgentMessage>, StoreError> {
        let Some(v) = self.inbox.get(Seq(seq).bytes())? else {
            return Ok(None);
        };
        let msg: AgentMessage = dec(&v)?;
        let mut b = Batch::new();
        self.ack_into(&mut b, seq);
        self.apply(b)?;
        Ok(Some(msg))
    }

    /// Where a reply to message `message_id` goes: from its dedupe mark (`at_ms` is
    /// when it arrived), or from a route record written by an earlier version (`at_ms`
    /// is when it was acknowledged). The caller checks the age.
    pub fn route(&self, message_id: &str) -> Result<Option<Route>, StoreError> {
        if let Some(v) = self.seen_get(message_id.as_bytes())? {
            let route = seen_route(&v).and_then(|(account, sender)| {
                Some(Route {
                    account: account.to_string(),
                    from: E164::parse_address(sender).ok()?,
                    at_ms: seen_time(&v)?,
                })
            });
            if route.is_some() {
                return Ok(route);
            }
        }
        match self.routes.get(message_id.as_bytes())? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// Forgets route records (written by earlier versions) older than `max_age_ms`, and
    /// routes that do not decode; routes now live in the dedupe marks.
    pub fn prune_routes(&self, now: u64, max_age_ms: u64) -> Result<(), StoreError> {
        let mut b = Batch::new();
        for item in self.routes.iter() {
            let (k, v) = item?;
            let old = dec::<Route>(&v).map_or(true, |r| now.saturating_sub(r.at_ms) > max_age_ms);
            if old {
                b.remove(&self.routes, &k);
            }
        }
        self.apply(b)
    }

    /// The agent answered message `seq` with `fail`: counts the failure and either
    /// stores when it may be delivered again or moves it to the dead letters
    /// ([`after_agent_failure`]), in one batch, so the count and the next delivery time
    /// survive `kill -9`.
    pub fn agent_failed(
        &self,
        seq: u64,
        msg: &AgentMessage,
        error: &str,
        retry: bool,
        now: u64,
        first_retry_ms: u64,
    ) -> Result<AgentFailed, StoreError> {
        let count = msg.failures.count.saturating_add(1);
        let mut failed = msg.clone();
        let mut b = Batch::new();
        let outcome = match after_agent_failure(count, retry, first_retry_ms) {
            AfterFailure::RetryIn(ms) => {
                failed.failures = AgentFailures {
                    count,
                    retry_at_ms: now.saturating_add(ms),
                    last_error: Some(error.to_string()),
                };
                b.insert(&self.inbox, Seq(seq).bytes(), enc(&failed));
                AgentFailed::Retry(failed)
            }
            AfterFailure::DeadLetter => {
                failed.failures = AgentFailures {
                    count,
                    retry_at_ms: 0,
                    last_error: Some(error.to_string()),
                };
                let dead = DeadLetter {
                    message: failed.clone(),
                    dead_at_ms: now,
                    agent_failed: true,
                };
                b.remove(&self.inbox, Seq(seq).bytes());
                b.insert(&self.dead, msg.id.as_bytes(), enc(&dead));
                AgentFailed::Dead(failed)
            }
        };
        self.apply(b)?;
        Ok(outcome)
    }

    /// Moves an unacknowledged message to the dead letters.
    pub fn dead_letter(&self, seq: u64, msg: &AgentMessage, now: u64) -> Result<(), StoreError> {
        let dead = DeadLetter {
            message: msg.clone(),
            dead_at_ms: now,
            agent_failed: false,
        };
        let mut b = Batch::new();
        b.remove(&self.inbox, Seq(seq).bytes());
        b.insert(&self.dead, msg.id.as_bytes(), enc(&dead));
        self.apply(b)
    }

    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead.iter().map(|item| dec(&item?.1)).collect()
    }

    /// Puts a dead letter back at the end of the inbox, with a clean slate: the agent
    /// gets all its tries again.
    pub fn requeue_dead(&self, id: &str, now: u64) -> Result<bool, StoreError> {
        let Some(v) = self.dead.get(id.as_bytes())? else {
            return Ok(false);
        };
        let mut d: DeadLetter = dec(&v)?;
        d.message.received_at_ms = now;
        d.message.failures = AgentFailures::default();
        let seq = Seq(self.next_id()?);
        let mut b = Batch::new();
        b.remove(&self.dead, id.as_bytes());
        b.insert(&self.inbox, seq.bytes(), enc(&d.message));
        self.apply(b)?;
        Ok(true)
    }

    pub fn purge_dead(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let Some(v) = self.dead.get(id.as_bytes())? else {
            return Ok(None);
        };
        let mut b = Batch::new();
        b.remove(&self.dead, id.as_bytes());
        self.apply(b)?;
        Ok(Some(dec(&v)?))
    }

    pub fn dead_len(&self) -> usize {
        self.dead.len()
    }
}
