//! `agent acp -- CMD`: one long-lived Agent Client Protocol agent on stdin/stdout
//! (JSON-RPC 2.0, one message per line, protocol version 1), one ACP session per
//! conversation.
//!
//! Every message is an official schema type (`agent-client-protocol-schema`, see
//! `wire.rs`), so a protocol change arrives as a version bump. The JSON-RPC framing
//! is ours (`client.rs`): it is what bounds a hostile agent (line cap, stdin byte
//! budget, updates only to the prompt running on their session), which the
//! `agent-client-protocol` connection crate leaves to its caller. The tests run the
//! official TypeScript SDK as the agent, which validates every request it receives.
//!
//! A supervisor task runs the agent process and restarts it with backoff when it
//! exits; a turn that loses its agent waits for the next one and is asked again, so a
//! text is never lost to a crash. Replies are assembled from `agent_message_chunk`
//! updates, at most `--max-chars` + 1 characters of them (a flood costs no memory).

use std::path::PathBuf;
use std::time::Duration;

mod client;
mod sessions;
pub(crate) mod wire;

pub(crate) use client::*;
pub(crate) use sessions::AcpBridge;
pub(crate) use sessions::*;

/// A line from the agent longer than this is skipped (and logged), not buffered.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;
/// A picture larger than this is passed as its path, not inlined.
const MAX_IMAGE: u64 = 10 * 1024 * 1024;
const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an agent has to stop after `session/cancel` before it is restarted.
const CANCEL_GRACE: Duration = Duration::from_secs(10);
/// What may wait for the agent's stdin, in bytes (requests, prompts with inlined
/// pictures, answers to its requests): an agent that stops reading costs at most
/// this (and one larger line, queued alone), not all it is sent.
pub(crate) const STDIN_BUDGET: usize = 8 * 1024 * 1024;
/// How long a line may wait for room in [`STDIN_BUDGET`] (at most `--timeout`)
/// before the agent is judged not to read its stdin and restarted.
const STDIN_STALL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct AcpOptions {
    pub(crate) argv: Vec<String>,
    pub(crate) cwd: PathBuf,
    pub(crate) state_dir: PathBuf,
    /// `--permissions allow`: answer permission requests with an allow-once option.
    pub(crate) allow_permissions: bool,
    /// `--permissions ask`: each permission request becomes an `ask` to the
    /// approvers (CONTRACT §9); the answer picks the agent's option.
    pub(crate) ask_permissions: bool,
    pub(crate) timeout: Duration,
    pub(crate) max_chars: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::{InboundMedia, InboundMessage};
    use crate::bridge::{state, Turn};
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    #[test]
    fn classify_table() {
        assert_eq!(
            classify(r#"{"jsonrpc":"2.0","id":3,"result":{"stopReason":"end_turn"}}"#),
            Incoming::Response {
                id: 3,
                result: Ok(json!({"stopReason": "end_turn"}))
            }
        );
        assert_eq!(
            classify(
                r#"{"jsonrpc":"2.0","id":4,"error":{"code":-32000,"message":"auth required"}}"#
            ),
            Incoming::Response {
                id: 4,
                result: Err("auth required (code -32000)".into())
            }
        );
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","id":"p1","method":"session/request_permission","params":{}}"#),
            Incoming::Request { method, .. } if method == "session/request_permission"
        ));
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s"}}"#),
            Incoming::Notification { method, .. } if method == "session/update"
        ));
        for bad in [
            "hello",
            "[1]",
            "{}",
            r#"{"id":1}"#,
            r#"{"id":"x","result":1}"#,
            "42",
        ] {
            assert!(matches!(classify(bad), Incoming::Garbage(_)), "{bad}");
        }
    }

    #[test]
    fn permission_table() {
        use wire::choose_option;
        let all: Vec<wire::PermissionOption> = serde_json::from_value(json!([
            {"optionId": "a1", "kind": "allow_once", "name": "Allow"},
            {"optionId": "aa", "kind": "allow_always", "name": "Always"},
            {"optionId": "r1", "kind": "reject_once", "name": "Reject"},
            {"optionId": "ra", "kind": "reject_always", "name": "Never"},
        ]))
        .unwrap();
        assert_eq!(choose_option(&all, false).as_deref(), Some("r1"));
        assert_eq!(choose_option(&all, true).as_deref(), Some("a1"));
        let always_only = vec![all[1].clone(), all[3].clone()];
        assert_eq!(choose_option(&always_only, true).as_deref(), Some("ra"));
        assert_eq!(choose_option(&always_only, false).as_deref(), Some("ra"));
        assert_eq!(choose_option(&all[..2], false), None);
        assert_eq!(choose_option(&[], true), None);
    }

    /// `--permissions ask` (CONTRACT §9): the approver's decision picks the matching
    /// option, else a reject option.
    #[test]
    fn option_for_table() {
        let all: Vec<wire::PermissionOption> = serde_json::from_value(json!([
            {"optionId": "a1", "kind": "allow_once", "name": "Allow"},
            {"optionId": "aa", "kind": "allow_always", "name": "Always"},
            {"optionId": "r1", "kind": "reject_once", "name": "Reject"},
        ]))
        .unwrap();
        let once_only = vec![all[0].clone(), all[2].clone()];
        let cases: &[(&[wire::PermissionOption], &str, Option<&str>)] = &[
            (&all, "allow_once", Some("a1")),
            (&all, "allow_always", Some("aa")),
            (&all, "deny", Some("r1")),
            (&all, "timeout", Some("r1")),
            (&all, "cancelled", Some("r1")),
            (&all, "anything else", Some("r1")),
            (&once_only, "allow_always", Some("r1")),
            (&all[..2], "deny", None),
        ];
        for (options, decision, want) in cases {
            assert_eq!(
                option_for(options, decision).as_deref(),
                *want,
                "{decision}"
            );
        }
    }

    #[test]
    fn permission_ask_table() {
        let cases = [
            (
                json!({"toolCall": {"title": "Run", "kind": "execute", "rawInput": {"command": ["rm", "-rf", "x"]}}}),
                ("Run (execute)", "rm -rf x"),
            ),
            (
                json!({"toolCall": {"title": "Run", "rawInput": {"command": "ls -l"}}}),
                ("Run", "ls -l"),
            ),
            (
                json!({"toolCall": {"title": "Edit", "kind": "edit", "rawInput": {"file_path": "/a/b.rs", "old": "x"}}}),
                ("Edit (edit)", "/a/b.rs"),
            ),
            (
                json!({"toolCall": {"title": "Fetch", "rawInput": {"q": 1}}}),
                ("Fetch", "{\"q\":1}"),
            ),
            (
                json!({"toolCall": {"title": "Write", "content": [{"type": "diff", "path": "/n.txt", "newText": "x"}]}}),
                ("Write", "/n.txt"),
            ),
            (
                json!({"toolCall": {"title": "Say", "content": [{"type": "content", "content": {"type": "text", "text": "hello"}}]}}),
                ("Say", "hello"),
            ),
            (
                json!({"toolCall": {"title": "Read", "locations": [{"path": "/etc/passwd"}]}}),
                ("Read", "/etc/passwd"),
            ),
            (json!({"toolCall": {"title": " "}}), ("a tool call", "")),
            (json!({}), ("a tool call", "")),
        ];
        for (params, (title, detail)) in cases {
            assert_eq!(
                permission_ask(&params),
                (title.to_string(), detail.to_string()),
                "{params}"
            );
        }
        let huge = json!({"toolCall": {"title": "x".repeat(10_000), "rawInput": {"command": "y".repeat(100_000)}}});
        let (t, d) = permission_ask(&huge);
        assert!(t.chars().count() <= 501 && d.chars().count() <= 2001);
    }

    #[test]
    fn chunk_media_table() {
        let chunk =
            |content: Value| json!({"sessionUpdate": "agent_message_chunk", "content": content});
        let cases = [
            (
                chunk(json!({"type": "image", "mimeType": "image/png", "data": "aGk="})),
                Some(json!({"data": "aGk=", "contentType": "image/png", "filename": null})),
            ),
            (
                chunk(
                    json!({"type": "resource", "resource": {"uri": "file:///x/r.pdf", "mimeType": "application/pdf", "blob": "aGk="}}),
                ),
                Some(
                    json!({"data": "aGk=", "contentType": "application/pdf", "filename": "r.pdf"}),
                ),
            ),
            // Text resources, other types, links without inline data: not media.
            (
                chunk(
                    json!({"type": "resource", "resource": {"uri": "file:///x/a.txt", "mimeType": "text/plain", "text": "hi"}}),
                ),
                None,
            ),
            (
                chunk(
                    json!({"type": "resource", "resource": {"uri": "file:///x/a.zip", "mimeType": "application/zip", "blob": "aGk="}}),
                ),
                None,
            ),
            (
                chunk(
                    json!({"type": "resource_link", "uri": "file:///etc/passwd", "name": "passwd", "mimeType": "image/png"}),
                ),
                None,
            ),
            (
                chunk(
                    json!({"type": "resource_link", "uri": "file:///a/b.mp3", "name": "b.mp3", "mimeType": "audio/mpeg", "data": "aGk="}),
                ),
                Some(json!({"data": "aGk=", "contentType": "audio/mpeg", "filename": "b.mp3"})),
            ),
            (
                json!({"sessionUpdate": "user_message_chunk", "content": {"type": "image", "mimeType": "image/png", "data": "aGk="}}),
                None,
            ),
        ];
        for (update, want) in cases {
            assert_eq!(chunk_media(&update).map(|(v, _)| v), want, "{update}");
        }
        let mut c = Collect::default();
        for _ in 0..12 {
            c.push_media(json!({}), 10);
        }
        assert_eq!((c.media.len(), c.media_dropped), (10, 2));
    }

    #[test]
    fn chunks_and_collect() {
        let chunk_text = |v: serde_json::Value| {
            let u: wire::SessionUpdate = serde_json::from_value(v).unwrap();
            wire::chunk_text(&u).map(String::from)
        };
        let chunk = json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}});
        assert_eq!(chunk_text(chunk).as_deref(), Some("hi"));
        let thought = json!({"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "hmm"}});
        assert_eq!(chunk_text(thought), None);
        let user = json!({"sessionUpdate": "user_message_chunk", "content": {"type": "text", "text": "q"}});
        assert_eq!(chunk_text(user), None);
        let image = json!({"sessionUpdate": "agent_message_chunk", "content": {"type": "image", "data": "", "mimeType": "image/png"}});
        assert_eq!(chunk_text(image), None);
        let mut c = Collect {
            limit: 5,
            ..Collect::default()
        };
        for _ in 0..1000 {
            c.push("abc");
        }
        assert_eq!(c.text, "abcab");
        assert_eq!(c.total_chars, 3000);
        assert_eq!(c.updates, 1000);
    }

    #[test]
    fn blocks_and_delays() {
        let turn = Turn {
            conversation: "c".into(),
            texts: vec![InboundMessage {
                id: "SM1".into(),
                account: "a".into(),
                from: "+15557654321".into(),
                to: "+15551234567".into(),
                text: "look".into(),
                media: vec![
                    InboundMedia {
                        url: "u".into(),
                        content_type: "image/png".into(),
                        path: Some("/m/1.png".into()),
                    },
                    InboundMedia {
                        url: "u".into(),
                        content_type: "audio/amr".into(),
                        path: Some("/m/2.amr".into()),
                    },
                ],
                conversation: Some("c".into()),
                channel: None,
                profile_name: None,
            }],
        };
        let as_json = |b: Vec<wire::ContentBlock>| -> Vec<serde_json::Value> {
            b.iter().map(|b| serde_json::to_value(b).unwrap()).collect()
        };
        let b = as_json(prompt_blocks(&turn, false, &[]));
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0]["text"],
            "look\n[attachment (image/png): /m/1.png]\n[attachment (audio/amr): /m/2.amr]"
        );
        let b = as_json(prompt_blocks(
            &turn,
            true,
            &[("image/png".into(), "AAAA".into())],
        ));
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["text"], "look\n[attachment (audio/amr): /m/2.amr]");
        assert_eq!(
            b[1],
            json!({"type": "image", "mimeType": "image/png", "data": "AAAA"})
        );
        let d: Vec<u64> = (0..8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn judge_table() {
        let interruption =
            "[OpenClaw interruption] The gateway restarted while this run was in progress.";
        // (stopReason, text, cancelled by us, an answer?)
        let cases: &[(Option<&str>, &str, bool, bool)] = &[
            (Some("end_turn"), "hello", false, true),
            (Some("end_turn"), "hello", true, true),
            // OpenClaw when the model fails for good: end_turn, no chunk
            (Some("end_turn"), "", false, false),
            (Some("end_turn"), " \n\t", false, false),
            // our --timeout: the text so far is the answer; none is not one
            (Some("cancelled"), "half done", true, true),
            (Some("cancelled"), "", true, false),
            // a cancel we did not send (OpenClaw's gateway restarted mid-run)
            (Some("cancelled"), interruption, false, false),
            (Some("cancelled"), "", false, false),
            (Some("cancelled"), "a whole reply", false, false),
            (Some("refusal"), "I can't", false, false),
            (Some("refusal"), "", true, false),
            (Some("max_tokens"), "a reply cut sh", false, false),
            (Some("max_tokens"), "", false, false),
            (Some("max_turn_requests"), "partial", false, false),
            (Some("something_new"), "text", false, false),
            (None, "text", false, false),
        ];
        for (stop, text, ours, want) in cases {
            let got = judge(*stop, text, *ours);
            assert_eq!(got.is_ok(), *want, "{stop:?} {text:?} {ours}: {got:?}");
            if let Err(why) = got {
                // The reason names the stop reason and never the text.
                assert!(!why.contains(text) || text.trim().is_empty(), "{why}");
            }
        }
        assert!(judge(Some("cancelled"), interruption, false)
            .unwrap_err()
            .contains("not asked for by smsgate"));
        assert!(
            judge(Some("x".repeat(500).as_str()), "t", false)
                .unwrap_err()
                .chars()
                .count()
                < 200
        );
    }

    #[test]
    fn after_trouble_table() {
        let again = |s| Next::Again(Duration::from_secs(s));
        let remote = Trouble::Remote("auth required (code -32000)".into());
        assert_eq!(after_trouble(&Trouble::Gone, 0), again(0));
        assert_eq!(after_trouble(&Trouble::Gone, 1), again(0));
        assert!(
            matches!(after_trouble(&Trouble::Gone, 2), Next::Fail(e) if e.contains("exited during this turn 3 times"))
        );
        assert_eq!(after_trouble(&remote, 0), again(4));
        assert_eq!(after_trouble(&remote, 1), again(8));
        assert!(matches!(after_trouble(&remote, 2), Next::Fail(e) if e.contains("auth required")));
        for attempt in [0, 1, 2, 50] {
            assert!(
                matches!(after_trouble(&Trouble::Deaf, attempt), Next::Fail(e) if e.contains("did not read its stdin"))
            );
            assert_eq!(
                after_trouble(&Trouble::Refused("no".into()), attempt),
                Next::Fail("no".into())
            );
        }
        assert!(matches!(
            after_trouble(&Trouble::Gone, u32::MAX),
            Next::Fail(_)
        ));
    }

    #[test]
    fn session_map_binding_and_pruning() {
        const DAY: u64 = 86400;
        let now = 1000 * DAY;
        let raw: BTreeMap<String, StoredSession> = serde_json::from_str(
            r#"{"c-old":"sess-1",
                "c-a":{"sessionId":"sess-a","lastUsed":86400000},
                "c-idle":{"sessionId":"sess-i","lastUsed":1},
                "c-29":{"sessionId":"sess-29","lastUsed":83894400}}"#,
        )
        .unwrap();
        let mut map = load_map(raw, now, state::MAX_IDLE);
        // The bare entry of an older file starts its clock now; the idle one is gone.
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(keys, ["c-29", "c-a", "c-old"]);
        assert_eq!(map["c-old"].last_used, now);
        assert_eq!(map["c-29"].last_used, now - 29 * DAY);
        // Written back in the new form, read again the same.
        let text = serde_json::to_string(&map).unwrap();
        let again: BTreeMap<String, StoredSession> = serde_json::from_str(&text).unwrap();
        assert_eq!(load_map(again, now, state::MAX_IDLE), map);
        // One session, one conversation.
        assert_eq!(bound_elsewhere(&map, "c-b", "sess-a"), Some("c-a"));
        assert_eq!(bound_elsewhere(&map, "c-a", "sess-a"), None);
        assert_eq!(bound_elsewhere(&map, "c-b", "sess-new"), None);
        // Two days later c-29 is past 30 days.
        assert_eq!(
            prune_map(&mut map, now + 2 * DAY, state::MAX_IDLE),
            ["sess-29"]
        );
        assert_eq!(map.len(), 2);
        assert!(prune_map(&mut map, now + 2 * DAY, state::MAX_IDLE).is_empty());
        // Once forgotten, its session id may be given out again.
        assert_eq!(bound_elsewhere(&map, "c-b", "sess-29"), None);
    }

    #[test]
    fn stdin_permits() {
        assert_eq!(permits_for(0), 1);
        assert_eq!(permits_for(100), 100);
        assert_eq!(permits_for(STDIN_BUDGET * 3) as usize, STDIN_BUDGET);
    }
}
