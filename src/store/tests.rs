//! The store in-process: a real sled in a temp dir, no sockets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::area::{Batch, Seq};
use super::*;
use crate::phone::E164;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Store::open(&dir.path().join("state")).expect("store opens");
    (dir, s)
}

/// Opens the store at `state` again after this process dropped it. sled lets go of its
/// file lock only when its IO threads have dropped their handles too, a moment after
/// the last `Db` goes; until then `open` says `Locked`. Waits for that (at most 10 s).
fn reopen(state: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(state) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other.expect("the store opens again"),
        }
    }
}

fn msg(id: &str) -> AgentMessage {
    AgentMessage {
        id: id.into(),
        account: "default".into(),
        from: E164::parse("+15557654321").expect("number"),
        to: "+15550001111".into(),
        text: "hi".into(),
        media: Vec::new(),
        received_at_ms: 5,
        media_pending: false,
        conversation: String::new(),
        failures: Default::default(),
        profile_name: None,
    }
}

#[test]
fn admission_and_its_effects_are_one_batch_and_dedupe() {
    let (_d, s) = store();
    assert!(!s.is_seen("SM1").expect("read"));
    let fx = Effects {
        now: 5,
        forward: Some(msg("SM1")),
        ..Default::default()
    };
    let seq = s
        .admit_processed(s.seen("SM1".as_bytes()).expect("read"), 5, &fx)
        .expect("write");
    assert!(seq.is_some());
    assert!(s.is_seen("SM1").expect("read"));
    let inbox = s.inbox().expect("inbox");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].1.id, "SM1");
    // The spool path dedupes against the same marks.
    let rec = InboundRecord {
        sid: "SM1".into(),
        account: "default".into(),
        sms: Default::default(),
        received_at_ms: 6,
    };
    assert_eq!(s.admit(&rec).expect("admit"), Admission::Duplicate);
}

#[test]
fn an_ack_removes_the_body_and_keeps_a_route() {
    let (_d, s) = store();
    let fx = Effects {
        now: 5,
        forward: Some(msg("SM2")),
        ..Default::default()
    };
    let seq = s
        .admit_processed(s.seen("SM2".as_bytes()).expect("read"), 5, &fx)
        .expect("write")
        .expect("seq");
    let mut b = Batch::new();
    s.ack_into(&mut b, seq.0);
    s.apply(b).expect("ack");
    assert!(s.inbox().expect("inbox").is_empty());
    let route = s.route("SM2").expect("read").expect("route");
    assert_eq!(
        route.at_ms, 5,
        "the route is the dedupe mark's: when it arrived"
    );
    assert_eq!(route.from.as_str(), "+15557654321");
    assert_eq!(route.account, msg("SM2").account);
    // A message that did not go to the agent has no route; nor has an unknown id.
    s.admit_processed(
        s.seen("SM3".as_bytes()).expect("read"),
        6,
        &Effects::default(),
    )
    .expect("write");
    assert_eq!(s.route("SM3").expect("read"), None);
    assert_eq!(s.route("SMnone").expect("read"), None);
    // A route record written by an earlier version is still found.
    let mut b = Batch::new();
    let old = Route {
        account: "default".into(),
        from: E164::parse("+15550001111").expect("number"),
        at_ms: 3,
    };
    b.insert(&s.routes, b"SMold", super::enc(&old));
    s.apply(b).expect("legacy route");
    assert_eq!(s.route("SMold").expect("read"), Some(old));
}

#[test]
fn a_record_that_does_not_decode_is_quarantined_not_fatal() {
    let (_d, s) = store();
    let mut b = Batch::new();
    b.insert(&s.inbox, Seq(1).bytes(), b"{not json".to_vec());
    b.insert(&s.inbox, Seq(2).bytes(), enc(&msg("SM3")));
    b.insert(&s.outbound, 7u64.to_be_bytes(), b"garbage".to_vec());
    s.apply(b).expect("write");
    let inbox = s.inbox().expect("the good one is read");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].1.id, "SM3");
    assert!(s.outbound().expect("outbound").is_empty());
    assert_eq!(s.quarantined_len(), 2);
    assert_eq!(s.inbox_len(), 1, "quarantined entries left the inbox");
}

#[test]
fn statuses_dedupe_on_sid_and_status_and_never_go_back() {
    let (_d, s) = store();
    s.note_sent("SMx", "accepted", 1).expect("sent");
    let cases = [
        ("sent", StatusUpdate::Applied, "sent"),
        ("sent", StatusUpdate::Duplicate, "sent"),
        ("delivered", StatusUpdate::Applied, "delivered"),
        ("queued", StatusUpdate::Stale, "delivered"),
    ];
    for (status, want, now_status) in cases {
        assert_eq!(
            s.record_status("SMx", status, None, 1).expect("write"),
            want,
            "{status}"
        );
        assert_eq!(
            s.delivery_status("SMx").expect("read").as_deref(),
            Some(now_status)
        );
    }
}

/// A callback for a SID we never sent stores nothing: no status, no dedupe mark.
#[test]
fn a_status_for_a_sid_we_never_sent_stores_nothing() {
    let (_d, s) = store();
    let before = (s.statuses_len(), s.dedupe.len());
    for status in ["sent", "delivered", "sent"] {
        assert_eq!(
            s.record_status("SMstranger", status, Some("30007"), 1)
                .expect("write"),
            StatusUpdate::NotOurs
        );
    }
    assert_eq!(s.delivery_status("SMstranger").expect("read"), None);
    assert_eq!((s.statuses_len(), s.dedupe.len()), before);
    // A send of ours, recorded with the send, takes callbacks.
    let r = OutboundRecord::new(
        7,
        "default",
        E164::parse("+15557654321").expect("number"),
        "hi".into(),
        Purpose::Cli,
        1,
    );
    s.complete_send(&r, 1, 2, Some(("SMours", "queued")), false)
        .expect("complete");
    assert!(s.is_our_sid("SMours").expect("read"));
    assert_eq!(
        s.record_status("SMours", "delivered", None, 3)
            .expect("write"),
        StatusUpdate::Applied
    );
}

#[test]
fn status_retention_table() {
    let day = 24 * 60 * 60 * 1000;
    let now = 1000 * day;
    let cases = [
        ("just written", Some(now), false),
        ("29 days", Some(now - 29 * day), false),
        ("exactly 30 days", Some(now - 30 * day), false),
        ("30 days and a millisecond", Some(now - 30 * day - 1), true),
        ("a year", Some(now - 365 * day), true),
        (
            "from the future (clock stepped back)",
            Some(now + day),
            false,
        ),
        ("unreadable", None, true),
    ];
    for (name, at, want) in cases {
        assert_eq!(status_expired(at, now), want, "{name}");
    }
}

/// Old delivery statuses are pruned, new ones kept; after a restart the pruned ones
/// are still gone, and a late callback for one brings nothing back.
#[test]
fn pruned_statuses_stay_pruned_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let day = 24 * 60 * 60 * 1000;
    let now = 100 * day;
    {
        let s = Store::open(&state).expect("store");
        s.note_sent("SMold", "queued", now - 31 * day).expect("old");
        s.note_sent("SMnew", "queued", now - day).expect("new");
        let mut b = Batch::new();
        let n = dedupe::bucket_of(b"SMgarbled");
        let bucket = dedupe::with(&[], b"SMgarbled", b"not an entry").expect("bucket");
        b.insert(&s.statuses, n, bucket);
        s.apply(b).expect("garbled");
        assert_eq!(s.prune_statuses(now).expect("prune"), 2);
        s.flush().expect("flush");
    }
    let s = reopen(&state);
    assert!(!s.is_our_sid("SMold").expect("read"));
    assert!(!s.is_our_sid("SMgarbled").expect("read"));
    assert_eq!(
        s.delivery_status("SMnew").expect("read").as_deref(),
        Some("queued")
    );
    assert_eq!(
        s.record_status("SMold", "delivered", None, now)
            .expect("write"),
        StatusUpdate::NotOurs
    );
    drop(s);
    let s = reopen(&state);
    assert_eq!(s.delivery_status("SMold").expect("read"), None);
    assert_eq!(s.prune_statuses(now).expect("prune"), 0);
}

#[test]
fn the_layout_of_earlier_versions_is_migrated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    {
        std::fs::create_dir_all(&state).expect("dir");
        let db = sled::open(state.join("db")).expect("sled");
        db.open_tree("seen")
            .expect("tree")
            .insert("SMold", &5u64.to_be_bytes())
            .expect("insert");
        db.open_tree("inbox")
            .expect("tree")
            .insert(Seq(3).bytes(), enc(&msg("SMold")))
            .expect("insert");
        db.flush().expect("flush");
    }
    let s = reopen(&state);
    assert!(s.is_seen("SMold").expect("read"));
    assert_eq!(s.inbox().expect("inbox")[0].0, 3);
    drop(s);
    let s = reopen(&state);
    assert_eq!(s.inbox().expect("inbox").len(), 1, "migrated once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_shares_fsyncs_and_runs_hooks_only_after_them() {
    let (_d, s) = store();
    let s = Arc::new(s);
    let w = Writer::start(s.clone());
    let hooks = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let (w, hooks) = (w.clone(), hooks.clone());
        tasks.push(tokio::spawn(async move {
            w.write(move |st, h| {
                let fx = Effects {
                    now: i,
                    forward: Some(msg(&format!("SM{i}"))),
                    ..Default::default()
                };
                st.admit_processed(st.seen(format!("SM{i}").as_bytes()).expect("read"), i, &fx)?;
                h.after(move || {
                    hooks.fetch_add(1, Ordering::SeqCst);
                });
                Ok(i)
            })
            .await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.expect("task").expect("write"), i as u64);
    }
    assert_eq!(
        hooks.load(Ordering::SeqCst),
        200,
        "every hook ran before its answer"
    );
    let (flushes, _, requests) = w.stats();
    assert_eq!(requests, 200);
    assert!(flushes < 200, "{flushes} fsyncs for 200 writes");
    assert_eq!(s.inbox().expect("inbox").len(), 200);
    // A failing request answers its error and runs no hook; the rest of its batch and
    // the writer carry on.
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let failed = w
        .write(move |_, h| {
            h.after(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            Err::<(), _>(StoreError::Decode("refused".into()))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert!(w.health().is_ok());
    assert!(w.write(|st, _| st.is_seen("SM1")).await.expect("write"));
}

#[test]
fn finished_sends_move_to_their_own_area_and_back_on_requeue() {
    let (_d, s) = store();
    let mut r = OutboundRecord::new(
        7,
        "default",
        E164::parse("+15557654321").expect("number"),
        "hi".into(),
        Purpose::Cli,
        1,
    );
    s.enqueue(std::slice::from_ref(&r)).expect("enqueue");
    assert_eq!(s.live_outbound().expect("live").len(), 1);
    r.state = OutboundState::Failed;
    s.put_outbound(&r).expect("fail");
    assert!(
        s.live_outbound().expect("live").is_empty(),
        "the sender no longer sees it"
    );
    assert_eq!(s.outbound().expect("all")[0].state, OutboundState::Failed);
    assert_eq!(s.outbound_len(), 1);
    r.state = OutboundState::Queued;
    s.put_outbound(&r).expect("requeue");
    assert_eq!(s.live_outbound().expect("live").len(), 1);
    assert_eq!(s.outbound_len(), 1);
    s.remove_outbound(7).expect("sent");
    assert_eq!(s.outbound_len(), 0);
}

/// The writer's round: requests see each other's pending changes (a SID repeated in the
/// same round is a duplicate), a failed request leaves nothing, scans merge pending
/// changes, and other threads see nothing until the round is applied.
#[test]
fn a_round_sees_its_own_pending_changes_and_rolls_back_a_failed_request() {
    use super::area;
    let (_d, s) = store();
    s.admit_processed(
        s.seen("SMold".as_bytes()).expect("read"),
        1,
        &Effects::default(),
    )
    .expect("direct write outside a round");
    area::pending_begin();
    let fx = Effects {
        now: 2,
        forward: Some(msg("SMa")),
        ..Default::default()
    };
    s.admit_processed(s.seen("SMa".as_bytes()).expect("read"), 2, &fx)
        .expect("pending");
    assert!(
        s.is_seen("SMa").expect("read"),
        "the round sees its own write"
    );
    assert_eq!(
        s.inbox().expect("inbox").len(),
        1,
        "scans merge pending changes"
    );
    // Another thread sees nothing yet.
    let other = std::thread::scope(|t| {
        t.spawn(|| s.is_seen("SMa").expect("read"))
            .join()
            .expect("thread")
    });
    assert!(!other, "pending changes are invisible to other threads");
    // A failed request: its changes go, the earlier ones stay.
    let mark = area::pending_mark();
    s.admit_processed(
        s.seen("SMb".as_bytes()).expect("read"),
        3,
        &Effects::default(),
    )
    .expect("pending");
    assert!(s.is_seen("SMb").expect("read"));
    area::pending_rollback(mark);
    assert!(!s.is_seen("SMb").expect("read"), "rolled back");
    assert!(s.is_seen("SMa").expect("read"), "kept");
    // Removing within the round hides the key from scans and reads.
    let (seq, _) = s.inbox().expect("inbox")[0].clone();
    s.ack_inbox(seq).expect("pending ack");
    assert!(
        s.inbox().expect("inbox").is_empty(),
        "a pending removal hides it"
    );
    let batch = area::pending_take();
    assert!(!area::pending_active());
    s.apply_now(batch).expect("apply");
    assert!(s.is_seen("SMa").expect("read") && !s.is_seen("SMb").expect("read"));
    assert!(s.is_seen("SMold").expect("read"));
    assert!(s.inbox().expect("inbox").is_empty());
}

/// The writer's merged scan, entry by entry: a pending insert between stored keys, a
/// pending value replacing a stored one, a pending removal hiding one, pending keys
/// before and after all stored ones, and other areas untouched.
#[test]
fn a_scan_merges_pending_changes_in_key_order() {
    use super::area;
    let (_d, s) = store();
    let mut b = Batch::new();
    for k in [3u64, 5, 7] {
        b.insert(&s.inbox, Seq(k).bytes(), format!("stored{k}").into_bytes());
    }
    b.insert(&s.dead, b"other", b"x".to_vec());
    s.apply_now(b).expect("stored");
    area::pending_begin();
    let mut b = Batch::new();
    b.insert(&s.inbox, Seq(1).bytes(), b"pending1".to_vec());
    b.insert(&s.inbox, Seq(4).bytes(), b"pending4".to_vec());
    b.insert(&s.inbox, Seq(5).bytes(), b"pending5".to_vec());
    b.remove(&s.inbox, Seq(7).bytes());
    b.insert(&s.inbox, Seq(9).bytes(), b"pending9".to_vec());
    b.remove(&s.inbox, Seq(8).bytes());
    s.apply(b).expect("pending");
    let seen: Vec<(u64, String)> = s
        .inbox
        .iter()
        .map(|r| {
            let (k, v) = r.expect("entry");
            (
                Seq::parse(&k).expect("key").0,
                String::from_utf8(v.to_vec()).expect("utf8"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "pending1"),
            (3, "stored3"),
            (4, "pending4"),
            (5, "pending5"),
            (9, "pending9")
        ]
        .map(|(k, v)| (k, v.to_string()))
    );
    assert_eq!(s.dead.len(), 1, "another area is not affected");
    area::pending_take();
}

/// SIDs that land in one dedupe bucket (searched, since the hash decides).
fn same_bucket_sids(n: usize) -> Vec<String> {
    let target = super::dedupe::bucket_of(b"SM0");
    (0u64..)
        .map(|i| format!("SM{i:032x}"))
        .filter(|s| super::dedupe::bucket_of(s.as_bytes()) == target)
        .take(n)
        .collect()
}

#[test]
fn marks_sharing_a_bucket_stay_apart() {
    let (_d, s) = store();
    let sids = same_bucket_sids(5);
    for (i, sid) in sids.iter().enumerate() {
        let fx = Effects {
            now: 10 + i as u64,
            forward: (i % 2 == 0).then(|| msg(sid)),
            ..Default::default()
        };
        assert!(!s.is_seen(sid).expect("read"), "{sid} not seen yet");
        s.admit_processed(s.seen(sid.as_bytes()).expect("read"), 10 + i as u64, &fx)
            .expect("write");
    }
    for (i, sid) in sids.iter().enumerate() {
        assert!(s.is_seen(sid).expect("read"));
        let route = s.route(sid).expect("read");
        // Only forwarded messages carry a route, with their own arrival time.
        assert_eq!(
            route.map(|r| r.at_ms),
            (i % 2 == 0).then_some(10 + i as u64),
            "{sid}"
        );
    }
    assert!(!s.is_seen("SM-never").expect("read"));
    // A status callback's key lives beside them and dedupes on its own.
    s.note_sent(&sids[0], "queued", 1).expect("sent");
    assert_eq!(
        s.record_status(&sids[0], "sent", None, 1).expect("status"),
        StatusUpdate::Applied
    );
    assert_eq!(
        s.record_status(&sids[0], "sent", None, 2).expect("status"),
        StatusUpdate::Duplicate
    );
    assert!(s.is_seen(&sids[1]).expect("read"));
}

#[test]
fn a_round_with_two_marks_in_one_bucket_keeps_both_and_rolls_back_one() {
    let (_d, s) = store();
    let sids = same_bucket_sids(3);
    area::pending_begin();
    s.admit_rejected(&RejectedRecord {
        sid: sids[0].clone(),
        account: "default".into(),
        reason: "test".into(),
        received_at_ms: 1,
    })
    .expect("first");
    let mark = area::pending_mark();
    s.admit_rejected(&RejectedRecord {
        sid: sids[1].clone(),
        account: "default".into(),
        reason: "test".into(),
        received_at_ms: 1,
    })
    .expect("second");
    area::pending_rollback(mark);
    s.admit_rejected(&RejectedRecord {
        sid: sids[2].clone(),
        account: "default".into(),
        reason: "test".into(),
        received_at_ms: 1,
    })
    .expect("third");
    s.apply_now(area::pending_take()).expect("apply");
    assert!(s.is_seen(&sids[0]).expect("read"));
    assert!(!s.is_seen(&sids[1]).expect("read"), "rolled back");
    assert!(s.is_seen(&sids[2]).expect("read"));
}

#[test]
fn prune_drops_old_marks_and_keeps_new_ones_in_the_same_bucket() {
    let (_d, s) = store();
    let sids = same_bucket_sids(4);
    for (i, sid) in sids.iter().enumerate() {
        // Two old (time 1), two new (time 1_000_000).
        let at = if i < 2 { 1 } else { 1_000_000 };
        s.admit_processed(
            s.seen(sid.as_bytes()).expect("read"),
            at,
            &Effects::default(),
        )
        .expect("write");
    }
    assert_eq!(s.prune_seen(1_000_010, 100).expect("prune"), 2);
    let seen: Vec<bool> = sids.iter().map(|x| s.is_seen(x).expect("read")).collect();
    assert_eq!(seen, vec![false, false, true, true]);
    assert_eq!(s.prune_seen(1_000_010, 100).expect("prune"), 0);
    assert_eq!(s.prune_seen(u64::MAX / 2, 100).expect("prune"), 2);
    assert_eq!(s.dedupe.len(), 0, "an emptied bucket is removed");
}

#[test]
fn per_sid_marks_of_earlier_versions_move_into_buckets_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let sids: Vec<String> = (0..2_500).map(|i| format!("SM{i:032x}")).collect();
    {
        let s = Store::open(&state).expect("store opens");
        // Written as the previous version did: one key per SID in area `s`, the
        // value a seen_value (with a route for one of them).
        let mut b = Batch::new();
        let legacy = area::Area {
            cell: s.dedupe.cell.clone(),
            tag: area::Tag::Seen,
        };
        for sid in &sids {
            b.insert(&legacy, sid.as_bytes(), area::seen_value(7, None));
        }
        b.insert(
            &legacy,
            b"SMrouted",
            area::seen_value(9, Some(("default", "+15557654321"))),
        );
        b.insert(
            &legacy,
            area::status_seen_key("SMx", "sent"),
            area::seen_value(3, None),
        );
        s.apply_now(b).expect("write legacy");
        assert_eq!(legacy.len(), sids.len() + 2);
    }
    let s = reopen(&state);
    let legacy = area::Area {
        cell: s.dedupe.cell.clone(),
        tag: area::Tag::Seen,
    };
    assert_eq!(legacy.len(), 0, "nothing left in the old area");
    assert!(sids.iter().all(|x| s.is_seen(x).expect("read")));
    let route = s.route("SMrouted").expect("read").expect("route kept");
    assert_eq!((route.account.as_str(), route.at_ms), ("default", 9));
    assert_eq!(
        s.record_status("SMx", "sent", None, 4).expect("status"),
        StatusUpdate::Duplicate
    );
    drop((legacy, s));
    let s = reopen(&state);
    assert!(s.is_seen(&sids[0]).expect("read"));
    // 2,500 SIDs in 65,536 buckets: at most one key each, no more.
    assert!(s.dedupe.len() <= sids.len() + 2);
}

#[test]
fn the_migration_reports_progress_as_it_goes() {
    let (_d, s) = store();
    let mut calls = 0;
    s.migrate_seen_marks_with(&mut || calls += 1)
        .expect("nothing to move");
    assert_eq!(calls, 0, "no old marks: no work, no progress");
    let legacy = area::Area {
        cell: s.dedupe.cell.clone(),
        tag: area::Tag::Seen,
    };
    let mut b = Batch::new();
    for i in 0..25_000 {
        b.insert(&legacy, format!("SM{i:032x}"), area::seen_value(7, None));
    }
    s.apply_now(b).expect("write legacy");
    s.migrate_seen_marks_with(&mut || calls += 1)
        .expect("moves");
    // A start this long keeps asking systemd for more time, in every phase. Per pass
    // (4): one at its start, one per 10,000 marks read (3), one per 1,000 buckets
    // written; one before each flush (2); one per chunk of 10,000 removed (3) and one
    // that finds nothing left.
    let mut buckets = [
        std::collections::BTreeSet::new(),
        Default::default(),
        Default::default(),
        Default::default(),
    ];
    for i in 0..25_000 {
        let n = super::dedupe::bucket_of(format!("SM{i:032x}").as_bytes());
        buckets[usize::from(n[0] / 64)].insert(n);
    }
    let writes: usize = buckets.iter().map(|b| b.len() / 1_000).sum();
    assert_eq!(
        calls,
        4 * (1 + 3) + writes + 2 + 3 + 1,
        "{calls} progress calls"
    );
    assert_eq!(legacy.len(), 0);
    assert!(s.is_seen(&format!("SM{:032x}", 24_999)).expect("read"));
}

#[test]
fn prune_never_makes_a_pending_mark_durable_early() {
    let (_d, s) = store();
    let sids = same_bucket_sids(2);
    s.admit_processed(
        s.seen(sids[0].as_bytes()).expect("read"),
        1,
        &Effects::default(),
    )
    .expect("old mark");
    // A writer round: a new mark in the same bucket is pending when the prune runs.
    area::pending_begin();
    s.admit_processed(
        s.seen(sids[1].as_bytes()).expect("read"),
        1_000_000,
        &Effects::default(),
    )
    .expect("new mark, pending");
    assert_eq!(
        s.prune_seen(1_000_010, 100).expect("prune"),
        0,
        "the bucket the round changes is left for the next prune"
    );
    let on_disk: Vec<Vec<u8>> = s
        .dedupe
        .iter_stored()
        .map(|i| i.expect("read").1.to_vec())
        .collect();
    assert!(
        on_disk
            .iter()
            .all(|b| dedupe::find(b, sids[1].as_bytes()) == Ok(None)),
        "the pending mark reached the disk before its round"
    );
    // The round never commits (a kill -9): the new mark is gone, the old one stays.
    drop(area::pending_take());
    assert!(!s.is_seen(&sids[1]).expect("read"));
    assert!(s.is_seen(&sids[0]).expect("read"));
    assert_eq!(s.prune_seen(1_000_010, 100).expect("prune"), 1);
}

#[test]
fn a_corrupt_bucket_keeps_what_it_can_and_its_raw_bytes() {
    let (_d, s) = store();
    let sids = same_bucket_sids(3);
    let mut good = Vec::new();
    for sid in &sids[..2] {
        good = dedupe::with(&good, sid.as_bytes(), &area::seen_value(5, None)).expect("encode");
    }
    let cut = good[..good.len() - 3].to_vec();
    let n = dedupe::bucket_of(sids[0].as_bytes());
    let mut b = Batch::new();
    b.insert(&s.dedupe, n, cut.clone());
    s.apply_now(b).expect("write a cut bucket");
    assert!(
        s.is_seen(&sids[0]).expect("read"),
        "the mark before the bad point"
    );
    assert!(!s.is_seen(&sids[1]).expect("read"), "cut off");
    s.admit_processed(
        s.seen(sids[2].as_bytes()).expect("read"),
        6,
        &Effects::default(),
    )
    .expect("a mark into the corrupt bucket");
    assert!(s.is_seen(&sids[0]).expect("read") && s.is_seen(&sids[2]).expect("read"));
    let stored = s.dedupe.get(n).expect("read").expect("bucket");
    assert_eq!(dedupe::entries(&stored).expect("decodes now").len(), 2);
    let kept = s
        .quarantine
        .get(s.dedupe.full_key(&n))
        .expect("read")
        .expect("quarantined");
    assert_eq!(kept.to_vec(), cut, "the raw bytes are kept");
}

#[test]
fn a_mark_written_from_an_older_read_keeps_what_the_round_added_since() {
    let (_d, s) = store();
    let sids = same_bucket_sids(2);
    area::pending_begin();
    let seen = s.seen(sids[0].as_bytes()).expect("read");
    // The same bucket changes in the round between the read and the write.
    s.admit_rejected(&RejectedRecord {
        sid: sids[1].clone(),
        account: "default".into(),
        reason: "test".into(),
        received_at_ms: 1,
    })
    .expect("other mark");
    s.admit_processed(seen, 2, &Effects::default())
        .expect("mark from the older read");
    s.apply_now(area::pending_take()).expect("apply");
    assert!(s.is_seen(&sids[0]).expect("read") && s.is_seen(&sids[1]).expect("read"));
}

#[test]
fn the_agent_failure_schedule() {
    use AfterFailure::{DeadLetter, RetryIn};
    let first = FIRST_AGENT_RETRY_MS;
    let table = [
        // (failures so far, retry, first delay, what follows)
        (1, true, first, RetryIn(30_000)),
        (2, true, first, RetryIn(60_000)),
        (3, true, first, RetryIn(120_000)),
        (4, true, first, RetryIn(240_000)),
        (5, true, first, DeadLetter),
        (6, true, first, DeadLetter),
        (1, false, first, DeadLetter),
        (4, false, first, DeadLetter),
        // Shortened for tests (SMSGATE_AGENT_RETRY_MS).
        (1, true, 100, RetryIn(100)),
        (4, true, 100, RetryIn(800)),
        // Doubling stops at an hour, and never overflows.
        (4, true, 1_000_000, RetryIn(MAX_AGENT_RETRY_MS)),
        (1, true, u64::MAX, RetryIn(MAX_AGENT_RETRY_MS)),
        (0, true, first, RetryIn(30_000)),
    ];
    for (failures, retry, first, want) in table {
        assert_eq!(
            after_agent_failure(failures, retry, first),
            want,
            "{failures} {retry} {first}"
        );
    }
    // With no failure cap the wait would double to the hour and stay there.
    assert_eq!(MAX_AGENT_FAILURES, 5);
}

#[test]
fn agent_failures_are_counted_durably_then_dead_lettered_and_requeue_resets_them() {
    let (dir, s) = store();
    let fx = Effects {
        now: 5,
        forward: Some(msg("SM7")),
        ..Default::default()
    };
    let seq = s
        .admit_processed(s.seen("SM7".as_bytes()).expect("read"), 5, &fx)
        .expect("write")
        .expect("seq");
    let AgentFailed::Retry(m) = s
        .agent_failed(seq.0, &msg("SM7"), "model down", true, 1_000, 100)
        .expect("write")
    else {
        panic!("the first failure is retried");
    };
    assert_eq!(
        (m.failures.count, m.failures.retry_at_ms),
        (1, 1_100),
        "{m:?}"
    );
    s.flush().expect("flush");
    drop(s);
    // Survives a reopen (what kill -9 leaves is what was flushed).
    let s = reopen(&dir.path().join("state"));
    let inbox = s.inbox().expect("inbox");
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].1.failures.count, 1);
    assert_eq!(inbox[0].1.failures.retry_at_ms, 1_100);
    assert_eq!(
        inbox[0].1.failures.last_error.as_deref(),
        Some("model down")
    );
    let mut m = inbox[0].1.clone();
    for n in 2..=4 {
        match s
            .agent_failed(seq.0, &m, "again", true, 2_000, 100)
            .expect("write")
        {
            AgentFailed::Retry(next) => m = next,
            AgentFailed::Dead(_) => panic!("failure {n} is retried"),
        }
    }
    assert_eq!(m.failures.retry_at_ms, 2_800, "100 ms doubled three times");
    assert!(matches!(
        s.agent_failed(seq.0, &m, "for good", true, 3_000, 100),
        Ok(AgentFailed::Dead(_))
    ));
    assert!(s.inbox().expect("inbox").is_empty());
    let dead = s.dead_letters().expect("dead");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].agent_failed);
    assert_eq!(dead[0].message.failures.count, 5);
    assert_eq!(
        dead[0].message.failures.last_error.as_deref(),
        Some("for good")
    );
    assert!(s.requeue_dead("SM7", 4_000).expect("requeue"));
    let inbox = s.inbox().expect("inbox");
    assert_eq!(inbox.len(), 1);
    assert!(
        inbox[0].1.failures.is_none(),
        "a requeued message starts over"
    );
    // `retry: false` ends it at once.
    assert!(matches!(
        s.agent_failed(inbox[0].0, &inbox[0].1, "cannot", false, 5_000, 100),
        Ok(AgentFailed::Dead(_))
    ));
}

/// Issue 20 item 6: a send made with every limit 0 leaves nothing in the sent log (a
/// key per send would grow sled's in-memory page table with the day's volume); one
/// made under a limit is logged and read back for its account and day only.
#[test]
fn only_counted_sends_are_logged() {
    let (_d, s) = store();
    let to = E164::parse("+15557650001").expect("number");
    let rec = |id| OutboundRecord::new(id, "a", to.clone(), "x".into(), Purpose::Cli, 5);
    let day = 24 * 3_600_000;
    let now = 10 * day;
    s.complete_send(&rec(1), 1, now - 10, None, false)
        .expect("write");
    s.complete_send(&rec(2), 2, now - 9, None, true)
        .expect("write");
    s.complete_send(&rec(3), 3, now - day - 1, None, true)
        .expect("write");
    let other = OutboundRecord::new(4, "b", to.clone(), "x".into(), Purpose::Cli, 5);
    s.complete_send(&other, 4, now - 8, None, true)
        .expect("write");
    let mut seen = Vec::new();
    s.for_each_sent("a", now, day, |at, to, n| {
        seen.push((at, to.to_string(), n))
    })
    .expect("read");
    // Per minute: the time is the minute's start.
    assert_eq!(seen, [(now - 60_000, "+15557650001".to_string(), 2)]);
}

/// Issue 20 item 6: statuses (one key per SID in area `t`) and the sent log (one key
/// per send in area `L`) of earlier versions move into buckets and per-minute records
/// at open, once; a second open finds nothing to move and the same answers.
#[test]
fn per_key_statuses_and_sent_log_of_earlier_versions_are_migrated() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let day = 24 * 3_600_000;
    let now = 10 * day;
    let old = |s: &Store, tag| area::Area {
        cell: s.dedupe.cell.clone(),
        tag,
    };
    {
        let s = Store::open(&state).expect("store opens");
        let (t, l) = (old(&s, area::Tag::Status), old(&s, area::Tag::SentLog));
        let mut b = Batch::new();
        for i in 0..3_000u64 {
            let rec = StatusRecord {
                status: if i % 2 == 0 { "delivered" } else { "sent" }.into(),
                error_code: (i == 5).then(|| "30007".to_string()),
                at: now - i,
            };
            b.insert(&t, format!("SM{i:032x}"), enc(&rec));
            // Three sends a minute to two recipients, for two accounts.
            let to = format!("+1555000000{}", i % 2);
            let account = if i % 3 == 0 { "b" } else { "a" };
            b.insert(
                &l,
                area::sent_key(account, now - i * 20_000, i),
                enc(&(to.as_str(), 1u32)),
            );
        }
        b.insert(&t, b"SMgarbled", b"not json".to_vec());
        b.insert(&l, b"no zero in this key", b"x".to_vec());
        s.apply_now(b).expect("write legacy");
    }
    let check = |s: &Store| {
        assert_eq!(old(s, area::Tag::Status).len(), 0, "nothing left in `t`");
        assert_eq!(old(s, area::Tag::SentLog).len(), 0, "nothing left in `L`");
        assert_eq!(s.statuses_len(), 3_000, "every readable status moved");
        assert_eq!(
            s.delivery_status(&format!("SM{:032x}", 4))
                .expect("read")
                .as_deref(),
            Some("delivered")
        );
        assert_eq!(
            s.delivery_status(&format!("SM{:032x}", 7))
                .expect("read")
                .as_deref(),
            Some("sent")
        );
        assert!(s.is_our_sid(&format!("SM{:032x}", 2_999)).expect("read"));
        assert!(!s.is_our_sid("SMgarbled").expect("read"));
        for (account, want) in [("a", 2_000), ("b", 1_000)] {
            let mut total = 0;
            let mut minutes = std::collections::BTreeSet::new();
            s.for_each_sent(account, now, 30 * day, |at, _, n| {
                total += n;
                minutes.insert(at);
            })
            .expect("read");
            assert_eq!(total, want, "every send of {account} counted once");
            assert!(minutes.len() <= 1_001, "per minute: {}", minutes.len());
        }
        // At most one key per bucket and per account-minute.
        assert!(s.statuses.len() <= 3_000);
        assert!(s.sent_log.len() <= 2 * 1_001);
    };
    let s = reopen(&state);
    check(&s);
    drop(s);
    let s = reopen(&state);
    check(&s);
}

/// A migration cut short (some statuses in buckets, some still per key; some minutes
/// moved, some not) is finished by the next open, counting nothing twice.
#[test]
fn a_migration_cut_short_is_finished_by_the_next_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let now = 100 * 60_000;
    let s = Store::open(&state).expect("store opens");
    let t = area::Area {
        cell: s.dedupe.cell.clone(),
        tag: area::Tag::Status,
    };
    let l = area::Area {
        cell: s.dedupe.cell.clone(),
        tag: area::Tag::SentLog,
    };
    let write_old = |range: std::ops::Range<u64>| {
        let mut b = Batch::new();
        for i in range {
            let rec = StatusRecord {
                status: "sent".into(),
                error_code: None,
                at: now,
            };
            b.insert(&t, format!("SM{i:032x}"), enc(&rec));
            b.insert(
                &l,
                area::sent_key("a", i * 30_000, i),
                enc(&("+15550000000", 1u32)),
            );
        }
        s.apply_now(b).expect("write legacy");
    };
    write_old(0..100);
    // A first open moved all of it...
    s.migrate_statuses(&mut || ()).expect("migrate");
    s.migrate_sent_log(&mut || ()).expect("migrate");
    // ...and was killed before it removed the old keys of the statuses (the sent log
    // removes a minute's old keys with its record, so it leaves none behind); then
    // more old keys (as a crash between minutes leaves the later minutes).
    write_old(50..150);
    drop((t, l, s));
    let s = reopen(&state);
    assert_eq!(s.statuses_len(), 150);
    let mut total = 0;
    s.for_each_sent("a", now, u64::MAX, |_, _, n| total += n)
        .expect("read");
    assert_eq!(
        total,
        150 + 50,
        "50 sends were written twice in the old area"
    );
}

/// After a migration the store is rewritten into a fresh directory (sled keeps freed
/// page ids in memory otherwise): everything is there, ids go on from where they were,
/// nothing is left beside `db`; a compaction killed before its swap (marker and a
/// half-made `db.new` left behind) is redone at the next open.
#[test]
fn a_migration_is_followed_by_a_rewrite_into_a_fresh_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let last_id;
    {
        let s = Store::open(&state).expect("store opens");
        let t = area::Area {
            cell: s.dedupe.cell.clone(),
            tag: area::Tag::Status,
        };
        let mut b = Batch::new();
        for i in 0..2_000u64 {
            let rec = StatusRecord {
                status: "sent".into(),
                error_code: None,
                at: 5,
            };
            b.insert(&t, format!("SM{i:032x}"), enc(&rec));
        }
        s.apply_now(b).expect("write legacy");
        s.note_sent("SMkept", "queued", 5).expect("write");
        for _ in 0..1_234 {
            s.next_id().expect("id");
        }
        last_id = s.next_id().expect("id");
    }
    let names = |state: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(state)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let s = reopen(&state);
    assert_eq!(names(&state), ["db"], "no marker, no db.new left");
    assert_eq!(s.statuses_len(), 2_001);
    assert!(s.is_our_sid("SMkept").expect("read"));
    assert!(s.next_id().expect("id") > last_id, "ids go on");
    drop(s);
    // A compaction killed midway: the marker and a partial db.new.
    std::fs::write(state.join("db.compact-pending"), b"").expect("marker");
    std::fs::create_dir(state.join("db.new")).expect("dir");
    std::fs::write(state.join("db.new/conf"), b"half").expect("junk");
    let s = reopen(&state);
    assert_eq!(names(&state), ["db"]);
    assert_eq!(s.statuses_len(), 2_001);
    drop(s);
    // A db.new without the marker is a leftover: removed, the store untouched.
    std::fs::create_dir(state.join("db.new")).expect("dir");
    let s = reopen(&state);
    assert_eq!(names(&state), ["db"]);
    assert!(s.is_our_sid("SMkept").expect("read"));
}

#[test]
fn inbound_records_of_earlier_versions_still_decode() {
    let old = br#"{"sid":"SM1","account":"default","params":[["From","+15557654321"],["To","+15550001111"],["Body","hi"],["NumMedia","1"],["MediaUrl0","https://api.twilio.com/m"]],"received_at_ms":7}"#;
    let rec: InboundRecord = super::dec(old).expect("decodes");
    assert_eq!(rec.sms.from, "+15557654321");
    assert_eq!(rec.sms.body, "hi");
    assert_eq!(rec.sms.media.len(), 1);
    assert_eq!(rec.sms.media[0].content_type, "application/octet-stream");
    let again: InboundRecord = super::dec(&super::enc(&rec)).expect("round trip");
    assert_eq!(again.sms, rec.sms);
    assert_eq!(again.received_at_ms, 7);
}
