//! The sender's due-index: the live outbound sends (queued, held, of unknown outcome)
//! kept so that finding what is due now, and how long to sleep until the next one, takes
//! O(log n) plus what is due, instead of a scan of every live send.
//!
//! The rules it keeps (the same as the scan it replaces):
//! - a recipient's queued sends go in id order (chunk order): only the recipient's
//!   first queued send (its head) can be due; the rest wait behind it;
//! - a held send with a release time (`releaseHeld: "auto"`) is due at that time and
//!   blocks nobody; one held until the operator releases it (`u64::MAX`) never falls due;
//! - a send of unknown outcome (`Unknown`, `Checking`) is due for a lookup at its time,
//!   blocking nobody. Its time is moved by the sender's monotonic clock (a stepped wall
//!   clock must not bring a lookup early or late), so it cannot sit in a set ordered by
//!   stored time: these few (only sends whose answer was lost) are kept apart and asked
//!   for their time on every pass.
//!
//! Pure: no clock, no store; the [`super::Outbox`] keeps it in step on every insert,
//! update and removal.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::store::{OutboundRecord, OutboundState};

/// A recipient's line: (account id, number).
type Line = (String, String);

#[derive(Debug, Default)]
pub(crate) struct DueIndex {
    /// Every live send, by id.
    records: BTreeMap<u64, OutboundRecord>,
    /// Each recipient's queued sends, by id; the first is the recipient's head.
    lines: HashMap<Line, BTreeSet<u64>>,
    /// (next attempt, id) of every send that falls due by its stored time: each
    /// recipient's head and each held send with a release time.
    by_time: BTreeSet<(u64, u64)>,
    /// Sends of unknown outcome (their due time is the sender's to say).
    lookups: BTreeSet<u64>,
    /// How many sends are `Queued`.
    queued: usize,
    /// How many sends are `Held`, per account (`outboundLimits.maxHeld`).
    held: HashMap<String, usize>,
}

fn line_of(rec: &OutboundRecord) -> Line {
    (rec.account.clone(), rec.to.as_str().to_string())
}

impl DueIndex {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Live sends in all.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Sends in state `Queued` (held sends and lookups do not count).
    pub(crate) fn queued_len(&self) -> usize {
        self.queued
    }

    /// Sends in state `Held` for `account`.
    pub(crate) fn held_len(&self, account: &str) -> usize {
        self.held.get(account).copied().unwrap_or(0)
    }

    /// The live sends of one reply or send (its parts): (id, state), by id.
    pub(crate) fn group(&self, group: u64) -> Vec<(u64, OutboundState)> {
        self.records
            .values()
            .filter(|r| r.group == Some(group))
            .map(|r| (r.id, r.state))
            .collect()
    }

    pub(crate) fn get(&self, id: u64) -> Option<&OutboundRecord> {
        self.records.get(&id)
    }

    /// Adds `rec`, or replaces the send with its id (a new state, a new time); a send
    /// no longer pending (sent, failed) is removed.
    pub(crate) fn upsert(&mut self, rec: OutboundRecord) {
        self.remove(rec.id);
        if !rec.state.is_pending() {
            return;
        }
        let id = rec.id;
        if rec.state == OutboundState::Held {
            *self.held.entry(rec.account.clone()).or_default() += 1;
        }
        match rec.state {
            OutboundState::Queued => {
                self.queued += 1;
                let line = self.lines.entry(line_of(&rec)).or_default();
                let old_head = line.first().copied();
                line.insert(id);
                if line.first() == Some(&id) {
                    // The new send goes before the recipient's old head: it waits now.
                    if let Some(old) = old_head.and_then(|h| self.records.get(&h)) {
                        self.by_time.remove(&(old.next_attempt_ms, old.id));
                    }
                    self.by_time.insert((rec.next_attempt_ms, id));
                }
            }
            OutboundState::Held if rec.next_attempt_ms != u64::MAX => {
                self.by_time.insert((rec.next_attempt_ms, id));
            }
            OutboundState::Unknown | OutboundState::Checking => {
                self.lookups.insert(id);
            }
            _ => {}
        }
        self.records.insert(id, rec);
    }

    /// Removes the send with this id (if live), promoting the recipient's next queued
    /// send when it was their head.
    pub(crate) fn remove(&mut self, id: u64) -> Option<OutboundRecord> {
        let rec = self.records.remove(&id)?;
        self.by_time.remove(&(rec.next_attempt_ms, id));
        self.lookups.remove(&id);
        if rec.state == OutboundState::Held {
            if let Some(n) = self.held.get_mut(&rec.account) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.held.remove(&rec.account);
                }
            }
        }
        if rec.state == OutboundState::Queued {
            self.queued -= 1;
            let key = line_of(&rec);
            if let Some(line) = self.lines.get_mut(&key) {
                let was_head = line.first() == Some(&id);
                line.remove(&id);
                if was_head {
                    if let Some(next) = line.first().and_then(|h| self.records.get(h)) {
                        self.by_time.insert((next.next_attempt_ms, next.id));
                    }
                }
                if line.is_empty() {
                    self.lines.remove(&key);
                }
            }
        }
        Some(rec)
    }

    /// What is due at `now` (ids, in id order, as the scan gave them) and the earliest
    /// time anything else falls due. `lookup_due` gives a lookup's due time.
    pub(crate) fn due(
        &self,
        now: u64,
        lookup_due: impl Fn(&OutboundRecord) -> u64,
    ) -> (Vec<u64>, Option<u64>) {
        let mut attempt: Vec<u64> = self
            .by_time
            .range(..=(now, u64::MAX))
            .map(|&(_, id)| id)
            .collect();
        let mut next = now
            .checked_add(1)
            .and_then(|after| self.by_time.range((after, 0)..).next())
            .map(|&(at, _)| at);
        for rec in self.lookups.iter().filter_map(|id| self.records.get(id)) {
            let at = lookup_due(rec);
            if at > now {
                next = Some(next.map_or(at, |n| n.min(at)));
            } else {
                attempt.push(rec.id);
            }
        }
        attempt.sort_unstable();
        (attempt, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::E164;
    use crate::store::Purpose;
    use std::collections::HashSet;

    fn rec(id: u64, to: &str, state: OutboundState, next: u64) -> OutboundRecord {
        let mut r = OutboundRecord::new(
            id,
            "default",
            E164::parse(to).unwrap(),
            "hi".into(),
            Purpose::PairingCode,
            0,
        );
        r.state = state;
        r.next_attempt_ms = next;
        r
    }

    const A: &str = "+15550000001";
    const B: &str = "+15550000002";

    fn stored(r: &OutboundRecord) -> u64 {
        r.next_attempt_ms
    }

    /// The scan the index replaces, kept as the reference the index must agree with.
    fn scan(queue: &[OutboundRecord], now: u64) -> (Vec<u64>, Option<u64>) {
        let mut blocked = HashSet::new();
        let mut attempt = Vec::new();
        let mut next: Option<u64> = None;
        let mut sorted: Vec<&OutboundRecord> = queue.iter().collect();
        sorted.sort_by_key(|r| r.id);
        for rec in sorted {
            if rec.state == OutboundState::Held && rec.next_attempt_ms == u64::MAX {
                continue;
            }
            if matches!(
                rec.state,
                OutboundState::Unknown | OutboundState::Checking | OutboundState::Held
            ) {
                if rec.next_attempt_ms > now {
                    next = Some(next.map_or(rec.next_attempt_ms, |n| n.min(rec.next_attempt_ms)));
                } else {
                    attempt.push(rec.id);
                }
                continue;
            }
            if rec.state != OutboundState::Queued {
                continue;
            }
            if !blocked.insert((rec.account.clone(), rec.to.as_str().to_string())) {
                continue;
            }
            if rec.next_attempt_ms > now {
                next = Some(next.map_or(rec.next_attempt_ms, |n| n.min(rec.next_attempt_ms)));
            } else {
                attempt.push(rec.id);
            }
        }
        (attempt, next)
    }

    #[test]
    fn insert_and_due_in_id_order() {
        let mut ix = DueIndex::new();
        ix.upsert(rec(3, B, OutboundState::Queued, 50));
        ix.upsert(rec(1, A, OutboundState::Queued, 100));
        assert_eq!(ix.due(40, stored), (vec![], Some(50)));
        assert_eq!(ix.due(50, stored), (vec![3], Some(100)));
        assert_eq!(ix.due(100, stored), (vec![1, 3], None));
        assert_eq!(ix.queued_len(), 2);
    }

    #[test]
    fn a_recipient_waits_behind_their_head() {
        let mut ix = DueIndex::new();
        ix.upsert(rec(1, A, OutboundState::Queued, 500));
        ix.upsert(rec(2, A, OutboundState::Queued, 0));
        // The second part is due by its time but waits for the first.
        assert_eq!(ix.due(10, stored), (vec![], Some(500)));
        // The first is sent: the second is the head now.
        ix.upsert(rec(1, A, OutboundState::Failed, 500));
        assert_eq!(ix.due(10, stored), (vec![2], None));
        assert_eq!(ix.queued_len(), 1);
        assert_eq!(ix.len(), 1);
    }

    #[test]
    fn a_send_inserted_before_the_head_becomes_the_head() {
        let mut ix = DueIndex::new();
        ix.upsert(rec(5, A, OutboundState::Queued, 0));
        ix.upsert(rec(2, A, OutboundState::Queued, 900));
        assert_eq!(ix.due(10, stored), (vec![], Some(900)));
        ix.remove(2);
        assert_eq!(ix.due(10, stored), (vec![5], None));
    }

    #[test]
    fn reschedule_moves_the_wake() {
        let mut ix = DueIndex::new();
        ix.upsert(rec(1, A, OutboundState::Queued, 0));
        assert_eq!(ix.due(10, stored), (vec![1], None));
        // A retry after backoff: due later, and the recipient still waits for it.
        ix.upsert(rec(1, A, OutboundState::Queued, 2_000));
        ix.upsert(rec(2, A, OutboundState::Queued, 0));
        assert_eq!(ix.due(10, stored), (vec![], Some(2_000)));
        assert_eq!(ix.due(2_000, stored), (vec![1], None));
    }

    #[test]
    fn equal_times_are_all_due_and_all_kept() {
        let mut ix = DueIndex::new();
        ix.upsert(rec(7, A, OutboundState::Queued, 100));
        ix.upsert(rec(4, B, OutboundState::Queued, 100));
        ix.upsert(rec(9, "+15550000003", OutboundState::Held, 100));
        assert_eq!(ix.due(99, stored), (vec![], Some(100)));
        assert_eq!(ix.due(100, stored), (vec![4, 7, 9], None));
        // Removing one of equal times leaves the others.
        ix.remove(4);
        assert_eq!(ix.due(100, stored), (vec![7, 9], None));
    }

    #[test]
    fn held_and_lookups_block_nobody() {
        let mut ix = DueIndex::new();
        ix.upsert(rec(1, A, OutboundState::Held, u64::MAX));
        ix.upsert(rec(2, A, OutboundState::Unknown, 1_000));
        ix.upsert(rec(3, A, OutboundState::Queued, 0));
        // Held for the operator: never due, no wake for it.
        assert_eq!(ix.due(10, stored), (vec![3], Some(1_000)));
        assert_eq!(ix.queued_len(), 1);
        // The lookup's time is the sender's to say (its monotonic clock).
        assert_eq!(ix.due(10, |_| 5), (vec![2, 3], None));
        assert_eq!(ix.due(10, |_| 40), (vec![3], Some(40)));
        // Auto release: due at the window's end.
        ix.upsert(rec(1, A, OutboundState::Held, 600));
        assert_eq!(ix.due(10, stored), (vec![3], Some(600)));
        ix.upsert(rec(2, A, OutboundState::Checking, 1_000));
        ix.remove(1);
        assert_eq!(ix.due(700, stored), (vec![3], Some(1_000)));
        assert_eq!(ix.get(2).map(|r| r.state), Some(OutboundState::Checking));
    }

    #[test]
    fn the_earliest_wake_is_the_smallest_time_after_now() {
        let mut ix = DueIndex::new();
        assert_eq!(ix.due(0, stored), (vec![], None));
        ix.upsert(rec(1, A, OutboundState::Queued, 300));
        ix.upsert(rec(2, B, OutboundState::Queued, 200));
        ix.upsert(rec(3, "+15550000003", OutboundState::Unknown, 250));
        assert_eq!(ix.due(100, stored).1, Some(200));
        assert_eq!(ix.due(200, stored).1, Some(250));
        assert_eq!(ix.due(250, stored).1, Some(300));
        assert_eq!(ix.due(u64::MAX, stored), (vec![1, 2, 3], None));
    }

    /// Random inserts, reschedules, state changes and removals: the index agrees with
    /// the scan it replaces at every step.
    #[test]
    fn agrees_with_the_scan() {
        use rand::{Rng, SeedableRng};
        let states = [
            OutboundState::Queued,
            OutboundState::Queued,
            OutboundState::Queued,
            OutboundState::Held,
            OutboundState::Unknown,
            OutboundState::Checking,
            OutboundState::Sending,
            OutboundState::Failed,
        ];
        let numbers = [A, B, "+15550000003"];
        for seed in 0..200 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut ix = DueIndex::new();
            let mut model: BTreeMap<u64, OutboundRecord> = BTreeMap::new();
            for _ in 0..60 {
                let id = rng.gen_range(1..20);
                if rng.gen_bool(0.2) {
                    ix.remove(id);
                    model.remove(&id);
                } else {
                    let state = states[rng.gen_range(0..states.len())];
                    let next = if rng.gen_bool(0.1) {
                        u64::MAX
                    } else {
                        rng.gen_range(0..10) * 100
                    };
                    let to = numbers[rng.gen_range(0..numbers.len())];
                    let r = rec(id, to, state, next);
                    if state.is_pending() {
                        model.insert(id, r.clone());
                    } else {
                        model.remove(&id);
                    }
                    ix.upsert(r);
                }
                let all: Vec<OutboundRecord> = model.values().cloned().collect();
                for now in [0, 250, 500, 1_000] {
                    assert_eq!(ix.due(now, stored), scan(&all, now), "seed {seed}");
                }
                let queued = all
                    .iter()
                    .filter(|r| r.state == OutboundState::Queued)
                    .count();
                assert_eq!(ix.queued_len(), queued, "seed {seed}");
                assert_eq!(ix.len(), model.len(), "seed {seed}");
            }
        }
    }
}
