//! One line from the local agent, as the daemon parses it, and the lines rendered back.
//! Input: the line (bytes that are not UTF-8 are rejected before `parse` is reached in
//! the daemon too, so they are skipped here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use smsgate::agent::protocol::{self, AgentLine, Answering};

fn json(line: &str) -> serde_json::Map<String, Value> {
    match serde_json::from_str(line) {
        Ok(Value::Object(o)) => o,
        other => panic!("rendered line {line:?} is not a JSON object: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match protocol::parse(line) {
        Ok(parsed) => {
            let (to, media) = match &parsed {
                AgentLine::Ack { id } => (Answering::Id(id.clone()), &[][..]),
                AgentLine::Reply { id, media_urls, .. } => {
                    (Answering::Id(id.clone()), &media_urls[..])
                }
                AgentLine::Send {
                    reference,
                    media_urls,
                    ..
                } => (Answering::Ref(reference.clone()), &media_urls[..]),
                AgentLine::Fail { error, .. } => {
                    // Cleaned for the dead letters and the log: bounded, no control
                    // characters.
                    assert!(error.chars().count() <= protocol::MAX_FAIL_ERROR + 1, "cut, plus its ellipsis");
                    assert!(!error.chars().any(|c| c.is_control()), "{error:?}");
                    return;
                }
                // Approvals (CONTRACT §9): parsed or refused, never a panic.
                AgentLine::Ask { .. } | AgentLine::Cancel { .. } => return,
                AgentLine::Hello { kind } => {
                    // A name for the operator's status: short, no control characters.
                    assert!(!kind.is_empty() && kind.len() <= protocol::MAX_KIND);
                    assert!(kind.chars().all(|c| c.is_ascii_graphic()), "{kind:?}");
                    return;
                }
            };
            assert!(media.len() <= protocol::MAX_MEDIA_URLS);
            for url in media {
                assert!(url.starts_with("https://"), "accepted media URL {url:?}");
            }
            let sids = vec!["SM0".to_string(), line.chars().take(40).collect()];
            let sent = json(&protocol::sent_line(&to, &sids, 2));
            let error = json(&protocol::error_line(&to, line, Some(21610)));
            for rendered in [&sent, &error] {
                match &to {
                    Answering::Id(id) => {
                        assert_eq!(rendered.get("id"), Some(&Value::from(id.as_str())))
                    }
                    Answering::Ref(Some(r)) => {
                        assert_eq!(rendered.get("ref"), Some(&Value::from(r.as_str())))
                    }
                    Answering::Ref(None) => assert!(rendered.get("ref").is_none()),
                }
            }
            assert_eq!(error.get("message"), Some(&Value::from(line)));
        }
        Err(e) => {
            let rendered = json(&protocol::line_error(&e));
            assert_eq!(rendered.get("type"), Some(&Value::from("error")));
            assert_eq!(
                rendered.get("message"),
                Some(&Value::from(e.message.as_str()))
            );
        }
    }
});
