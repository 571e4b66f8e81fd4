//! The agent socket's lines, both ways, as pure functions: parsing what an agent says
//! (with an error sentence for anything malformed) and rendering what the daemon says.

use serde_json::{json, Map, Value};

use crate::admin::ops::rfc3339;
use crate::store::AgentMessage;

/// Lines longer than this are refused (the rest of the line is skipped): 8 MiB, room
/// for 5 MB of media in base64 (CONTRACT §10). A connection holds that much only while
/// it has one of the socket's few big-line permits (`agent::server`), so many
/// connections cannot each hold 8 MiB.
pub const MAX_LINE: usize = 8 * 1024 * 1024;
/// The longest `text` of a reply or send, in bytes (the line cap before media made
/// lines longer: a text stays bounded to what it was).
pub const MAX_TEXT: usize = 1024 * 1024;
/// `mediaUrls` per reply or send.
pub const MAX_MEDIA_URLS: usize = 10;

/// What an agent may say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentLine {
    Ack {
        id: String,
    },
    Reply {
        id: String,
        text: String,
        media_urls: Vec<String>,
        media: Vec<crate::mms::Item>,
    },
    Send {
        to: Option<String>,
        /// `"channel"`: `sms` (default) or `whatsapp` (CONTRACT §12).
        channel: Option<crate::phone::Channel>,
        account: Option<String>,
        text: String,
        reference: Option<String>,
        media_urls: Vec<String>,
        media: Vec<crate::mms::Item>,
    },
    /// The agent could not handle the message (CONTRACT §11): it is delivered again
    /// later with backoff, or (`retry: false`, or too many failures) moved to the dead
    /// letters. `error` is already cleaned ([`MAX_FAIL_ERROR`] characters at most, no
    /// control or invisible characters): it is stored and shown to the operator.
    Fail {
        id: String,
        error: String,
        retry: bool,
    },
    /// Optional, first: what kind of agent this is, for `channels status`
    /// (`exec`, `acp`, `openai`, or any short name a custom agent picks).
    Hello {
        kind: String,
    },
    /// The agent asks the approvers (CONTRACT §9); answered by an `answer` line.
    Ask {
        reference: String,
        account: Option<String>,
        conversation: Option<String>,
        title: String,
        detail: String,
        timeout_secs: Option<u64>,
    },
    /// The agent no longer waits for its ask `ref`.
    Cancel {
        reference: String,
    },
}

/// The longest `fail` error kept, in characters (the rest is cut and ends in "…").
pub const MAX_FAIL_ERROR: usize = 500;

/// A `fail` line's `error` as stored and shown: invisible and control characters
/// removed (it reaches the log and the terminal), newlines and tabs made spaces, at
/// most [`MAX_FAIL_ERROR`] characters.
pub fn clean_fail_error(raw: &str) -> String {
    let one_line: String = crate::text::strip_invisible(raw)
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    if trimmed.is_empty() {
        return "the agent gave no reason".to_string();
    }
    match trimmed.char_indices().nth(MAX_FAIL_ERROR) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

/// The longest `hello` kind kept (a name for an operator, not a payload).
pub const MAX_KIND: usize = 32;

/// A malformed line: the sentence to send back, and the `ref`/`id` it concerned if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub message: String,
    pub reference: Option<String>,
    pub id: Option<String>,
}

fn err(message: impl Into<String>, obj: Option<&Map<String, Value>>) -> LineError {
    let get = |k: &str| {
        obj.and_then(|o| o.get(k))
            .and_then(Value::as_str)
            .map(String::from)
    };
    LineError {
        message: message.into(),
        reference: get("ref"),
        id: get("id"),
    }
}

fn string_field(
    obj: &Map<String, Value>,
    key: &str,
    required: bool,
    ty: &str,
) -> Result<Option<String>, LineError> {
    match obj.get(key) {
        None | Some(Value::Null) if required => {
            Err(err(format!("{ty} needs \"{key}\""), Some(obj)))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(err(format!("\"{key}\" must be a string"), Some(obj))),
    }
}

fn media_urls(obj: &Map<String, Value>) -> Result<Vec<String>, LineError> {
    let Some(v) = obj.get("mediaUrls").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(list) = v.as_array() else {
        return Err(err("\"mediaUrls\" must be a list of https URLs", Some(obj)));
    };
    if list.len() > MAX_MEDIA_URLS {
        return Err(err(
            format!("at most {MAX_MEDIA_URLS} mediaUrls per message"),
            Some(obj),
        ));
    }
    list.iter()
        .map(|u| match u.as_str().map(url::Url::parse) {
            Some(Ok(url)) if url.scheme() == "https" && url.has_host() => Ok(url.to_string()),
            _ => Err(err(
                format!("mediaUrls entry {u} is not an https URL"),
                Some(obj),
            )),
        })
        .collect()
}

/// `media: [{"data": "<base64>", "contentType": "image/png", "filename": "chart.png"}]`
/// (CONTRACT §10): the bytes decoded; their type is judged later from the bytes.
fn media_items(obj: &Map<String, Value>) -> Result<Vec<crate::mms::Item>, LineError> {
    use base64::Engine as _;
    let Some(v) = obj.get("media").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Some(list) = v.as_array() else {
        return Err(err(
            "\"media\" must be a list of {\"data\": base64, \"contentType\", \"filename\"}",
            Some(obj),
        ));
    };
    if list.len() > crate::mms::MAX_ITEMS {
        return Err(err(
            format!("at most {} media items per message", crate::mms::MAX_ITEMS),
            Some(obj),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let n = i + 1;
        let Some(item) = m.as_object() else {
            return Err(err(format!("media item {n} must be an object"), Some(obj)));
        };
        let text = |key: &str| -> Result<Option<String>, LineError> {
            match item.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(err(
                    format!("media item {n}: \"{key}\" must be a string"),
                    Some(obj),
                )),
            }
        };
        let Some(data) = text("data")? else {
            return Err(err(
                format!("media item {n} needs \"data\" (the bytes in base64)"),
                Some(obj),
            ));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| {
                err(
                    format!("media item {n}: \"data\" is not base64: {e}"),
                    Some(obj),
                )
            })?;
        out.push(crate::mms::Item {
            data: bytes,
            content_type: text("contentType")?,
            filename: text("filename")?,
        });
    }
    Ok(out)
}

fn check_text(text: &str, obj: &Map<String, Value>) -> Result<(), LineError> {
    if text.len() > MAX_TEXT {
        return Err(err(
            format!("\"text\" is over {MAX_TEXT} bytes; send less"),
            Some(obj),
        ));
    }
    Ok(())
}

/// The line agents send most, `{"type":"ack","id":"…"}` written exactly so (no
/// whitespace, no escapes, no control characters in the id): its id, without building
/// a JSON tree. Every other line, this shape with anything more included, goes through
/// the general parse, which gives the same answer for this one (test below).
fn plain_ack(line: &str) -> Option<&str> {
    let id = line
        .strip_prefix(r#"{"type":"ack","id":""#)?
        .strip_suffix(r#""}"#)?;
    id.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\')
        .then_some(id)
}

/// Parses one line from an agent.
pub fn parse(line: &str) -> Result<AgentLine, LineError> {
    match plain_ack(line) {
        Some(id) => Ok(AgentLine::Ack { id: id.to_string() }),
        None => parse_json(line),
    }
}

/// `parse` through a JSON tree: every shape.
fn parse_json(line: &str) -> Result<AgentLine, LineError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| err(format!("line is not valid JSON: {e}"), None))?;
    let Value::Object(obj) = value else {
        return Err(err("line must be a JSON object with a \"type\"", None));
    };
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.clone(),
        _ => {
            return Err(err(
                "missing \"type\" (ack, reply, fail, send, hello, ask or cancel)",
                Some(&obj),
            ))
        }
    };
    match ty.as_str() {
        "ack" => Ok(AgentLine::Ack {
            id: string_field(&obj, "id", true, "ack")?.unwrap_or_default(),
        }),
        "reply" => {
            let id = string_field(&obj, "id", true, "reply")?.unwrap_or_default();
            let text = string_field(&obj, "text", false, "reply")?.unwrap_or_default();
            check_text(&text, &obj)?;
            Ok(AgentLine::Reply {
                id,
                text,
                media_urls: media_urls(&obj)?,
                media: media_items(&obj)?,
            })
        }
        "send" => Ok(AgentLine::Send {
            to: string_field(&obj, "to", false, "send")?,
            channel: match string_field(&obj, "channel", false, "send")? {
                None => None,
                Some(c) => Some(crate::phone::Channel::parse(&c).ok_or_else(|| {
                    err(
                        "send: \"channel\" must be \"sms\" or \"whatsapp\"",
                        Some(&obj),
                    )
                })?),
            },
            account: string_field(&obj, "account", false, "send")?,
            text: {
                let text = string_field(&obj, "text", false, "send")?.unwrap_or_default();
                check_text(&text, &obj)?;
                text
            },
            reference: string_field(&obj, "ref", false, "send")?,
            media_urls: media_urls(&obj)?,
            media: media_items(&obj)?,
        }),
        "fail" => {
            let id = string_field(&obj, "id", true, "fail")?.unwrap_or_default();
            let error = string_field(&obj, "error", false, "fail")?.unwrap_or_default();
            // Absent means retry: a message is never dropped on an omission.
            let retry = match obj.get("retry") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(err("\"retry\" must be true or false", Some(&obj))),
            };
            Ok(AgentLine::Fail {
                id,
                error: clean_fail_error(&error),
                retry,
            })
        }
        "hello" => {
            let kind = string_field(&obj, "kind", true, "hello")?.unwrap_or_default();
            let clean = kind.len() <= MAX_KIND
                && !kind.is_empty()
                && kind
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !clean {
                return Err(err(
                    format!(
                        "hello: \"kind\" must be 1 to {MAX_KIND} letters, digits, '-', '_' or '.'"
                    ),
                    Some(&obj),
                ));
            }
            Ok(AgentLine::Hello { kind })
        }
        "ask" => {
            let reference = string_field(&obj, "ref", true, "ask")?.unwrap_or_default();
            let title = string_field(&obj, "title", true, "ask")?.unwrap_or_default();
            if title.trim().is_empty() {
                return Err(err("ask: \"title\" must say what is asked", Some(&obj)));
            }
            let timeout_secs = match obj.get("timeoutSecs") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => Some(n),
                    _ => {
                        return Err(err(
                            "ask: \"timeoutSecs\" must be a whole number of seconds, 1 or more",
                            Some(&obj),
                        ))
                    }
                },
            };
            Ok(AgentLine::Ask {
                reference,
                account: string_field(&obj, "account", false, "ask")?,
                conversation: string_field(&obj, "conversation", false, "ask")?,
                title,
                detail: string_field(&obj, "detail", false, "ask")?.unwrap_or_default(),
                timeout_secs,
            })
        }
        "cancel" => Ok(AgentLine::Cancel {
            reference: string_field(&obj, "ref", true, "cancel")?.unwrap_or_default(),
        }),
        other => Err(err(
            format!("unknown type {other:?}; use ack, reply, fail, send, hello, ask or cancel"),
            Some(&obj),
        )),
    }
}

/// A `message` line as an agent reads it (the built-in agents and bridges use this).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundMessage {
    pub id: String,
    #[serde(default)]
    pub account: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub media: Vec<InboundMedia>,
    /// Opaque, stable for one (account, sender) until the sender texts `/new`
    /// (CONTRACT §4, §7). Absent from daemons that predate conversations.
    #[serde(default)]
    pub conversation: Option<String>,
    /// `"sms"` or `"whatsapp"` (CONTRACT §12); absent from daemons before it: SMS.
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub profile_name: Option<String>,
}

/// One MMS attachment of a `message` line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundMedia {
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub path: Option<String>,
}

impl InboundMessage {
    /// Parses a `message` line's object; `None` when it has no string `id`.
    pub fn from_value(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    /// The conversation key: the daemon's `conversation`, or `<account>:<from>` from a
    /// daemon that does not send one (then a sender cannot start over).
    pub fn conversation_key(&self) -> String {
        match &self.conversation {
            Some(c) if !c.is_empty() => c.clone(),
            _ => format!("{}:{}", self.account, self.from),
        }
    }
}

/// Who a `sent`/`error` line answers: a `send`'s `ref`, or a `reply`'s message `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answering {
    Ref(Option<String>),
    Id(String),
}

fn with_key(mut v: Value, to: &Answering) -> Value {
    if let Value::Object(o) = &mut v {
        match to {
            Answering::Ref(Some(r)) => {
                o.insert("ref".into(), Value::String(r.clone()));
            }
            Answering::Ref(None) => {}
            Answering::Id(id) => {
                o.insert("id".into(), Value::String(id.clone()));
            }
        }
    }
    v
}

/// The `message` line for an agent. A typed struct, not `json!`: this runs once per
/// message on the store writer's thread, and building a `Value` map (an `IndexMap`,
/// a `String` per key) cost ~5x the serialisation itself. Keys in the same order as
/// before; `path` is `null` until the media is downloaded.
pub fn message_line(m: &AgentMessage) -> String {
    #[derive(serde::Serialize)]
    struct MediaOut<'a> {
        url: &'a str,
        #[serde(rename = "contentType")]
        content_type: &'a str,
        path: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct MessageOut<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: &'a str,
        account: &'a str,
        from: &'a str,
        to: &'a str,
        text: &'a str,
        media: Vec<MediaOut<'a>>,
        #[serde(rename = "receivedAt")]
        received_at: String,
        conversation: std::borrow::Cow<'a, str>,
        channel: &'static str,
        #[serde(rename = "profileName", skip_serializing_if = "Option::is_none")]
        profile_name: Option<&'a str>,
    }
    // `from` and `to` are numbers; `channel` says which (CONTRACT §12).
    let line = MessageOut {
        kind: "message",
        id: &m.id,
        account: &m.account,
        from: m.from.number(),
        to: m
            .to
            .strip_prefix(crate::phone::WHATSAPP_PREFIX)
            .unwrap_or(&m.to),
        text: &m.text,
        media: m
            .media
            .iter()
            .map(|x| MediaOut {
                url: &x.url,
                content_type: &x.content_type,
                path: x.path.as_deref(),
            })
            .collect(),
        received_at: rfc3339(m.received_at_ms),
        conversation: if m.conversation.is_empty() {
            std::borrow::Cow::Owned(m.conversation_id())
        } else {
            std::borrow::Cow::Borrowed(&m.conversation)
        },
        channel: m.from.channel().as_str(),
        profile_name: m.profile_name.as_deref(),
    };
    // Plain strings and numbers serialise without error (documented invariant).
    #[allow(clippy::expect_used)]
    serde_json::to_string(&line).expect("a message line serialises")
}

/// An agent's `fail` line (the built-in agents and bridges use this).
/// The `answer` line to an `ask` (CONTRACT §9); `by` is the approver, redacted.
pub fn answer_line(
    reference: Option<&str>,
    decision: &str,
    by: Option<&str>,
    reason: Option<&str>,
) -> String {
    let mut v = json!({"type": "answer", "ref": reference, "decision": decision});
    if let Value::Object(o) = &mut v {
        if let Some(by) = by {
            o.insert("by".into(), Value::String(by.into()));
        }
        if let Some(reason) = reason {
            o.insert("reason".into(), Value::String(reason.into()));
        }
    }
    v.to_string()
}

pub fn fail_line(id: &str, error: &str, retry: bool) -> String {
    json!({"type": "fail", "id": id, "error": error, "retry": retry}).to_string()
}

/// The optional first line of an agent: what it is, for the operator's status.
pub fn hello_line(kind: &str) -> String {
    json!({"type": "hello", "kind": kind}).to_string()
}

pub fn sent_line(to: &Answering, sids: &[String], segments: u32) -> String {
    with_key(
        json!({"type": "sent", "sids": sids, "segments": segments}),
        to,
    )
    .to_string()
}

pub fn error_line(to: &Answering, message: &str, code: Option<u32>) -> String {
    let mut v = with_key(json!({"type": "error", "message": message}), to);
    if let (Some(code), Value::Object(o)) = (code, &mut v) {
        o.insert("code".into(), json!(code));
        if let Some(hint) = crate::twilio::hints::sentence(Some(code)) {
            o.insert("hint".into(), json!(hint));
        }
    }
    v.to_string()
}

/// An `error` line for a reply or send refused before anything was queued: with smsgate's
/// own string `code` (`reason`, e.g. `"not-allowed"`, CONTRACT §9) when it has one, else
/// as [`error_line`] with the Twilio code the refusal stands for.
pub fn refusal_line(
    to: &Answering,
    message: &str,
    code: Option<u32>,
    reason: Option<&str>,
) -> String {
    let Some(reason) = reason else {
        return error_line(to, message, code);
    };
    let mut v = with_key(json!({"type": "error", "message": message}), to);
    if let Value::Object(o) = &mut v {
        o.insert("code".into(), json!(reason));
    }
    v.to_string()
}

pub fn line_error(e: &LineError) -> String {
    let mut v = json!({"type": "error", "message": e.message});
    if let Value::Object(o) = &mut v {
        if let Some(r) = &e.reference {
            o.insert("ref".into(), json!(r));
        }
        if let Some(id) = &e.id {
            o.insert("id".into(), json!(id));
        }
    }
    v.to_string()
}

pub fn status_line(sid: &str, status: &str, error_code: Option<&str>) -> String {
    let parsed = error_code.and_then(|c| c.parse::<u32>().ok());
    let code: Value = parsed.map_or(Value::Null, |c| json!(c));
    let mut v = json!({"type": "status", "sid": sid, "status": status, "errorCode": code});
    if let (Some(hint), Value::Object(o)) = (crate::twilio::hints::sentence(parsed), &mut v) {
        o.insert("hint".into(), json!(hint));
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ack_same_as_general_parse() {
        let general = parse_json;
        for id in [
            "SM0123456789abcdef0123456789abcdef",
            "",
            "é→漢字",
            "a\\u0041",
            "a\\\"b",
            "a\"",
            "x\ty",
            "\u{7f}",
            "a\"}{\"type\":\"reply",
        ] {
            let line = format!(r#"{{"type":"ack","id":"{id}"}}"#);
            assert_eq!(parse(&line), general(&line), "{line}");
        }
        for line in [
            r#"{"type":"ack","id":"SM1"}x"#,
            r#"{"type":"ack","id":"SM1"} "#,
            r#"{"type":"ack","id":"SM1","id":"SM2"}"#,
        ] {
            assert_eq!(plain_ack(line), None, "{line}");
        }
        assert_eq!(plain_ack(r#"{"type":"ack","id":"SM1"}"#), Some("SM1"));
    }

    #[test]
    fn parse_table() {
        let ok = [
            (
                r#"{"type":"ack","id":"SM1"}"#,
                AgentLine::Ack { id: "SM1".into() },
            ),
            (
                r#"{"type":"reply","id":"SM1","text":"hi","extra":1}"#,
                AgentLine::Reply {
                    id: "SM1".into(),
                    text: "hi".into(),
                    media_urls: vec![],
                    media: vec![],
                },
            ),
            (
                r#"{"type":"send","to":"+15550001111","text":"x","ref":"r1","mediaUrls":["https://a.example/x.png"]}"#,
                AgentLine::Send {
                    to: Some("+15550001111".into()),
                    channel: None,
                    account: None,
                    text: "x".into(),
                    reference: Some("r1".into()),
                    media_urls: vec!["https://a.example/x.png".into()],
                    media: vec![],
                },
            ),
            (
                r#"{"type":"reply","id":"SM1","media":[{"data":"aGk=","contentType":"image/png","filename":"a.png"}]}"#,
                AgentLine::Reply {
                    id: "SM1".into(),
                    text: "".into(),
                    media_urls: vec![],
                    media: vec![crate::mms::Item {
                        data: b"hi".to_vec(),
                        content_type: Some("image/png".into()),
                        filename: Some("a.png".into()),
                    }],
                },
            ),
            (
                r#"{"type":"hello","kind":"acp"}"#,
                AgentLine::Hello { kind: "acp".into() },
            ),
            (
                r#"{"type":"fail","id":"SM1","error":"model down","retry":true}"#,
                AgentLine::Fail {
                    id: "SM1".into(),
                    error: "model down".into(),
                    retry: true,
                },
            ),
            (
                r#"{"type":"fail","id":"SM1","error":"bad input","retry":false}"#,
                AgentLine::Fail {
                    id: "SM1".into(),
                    error: "bad input".into(),
                    retry: false,
                },
            ),
            (
                r#"{"type":"fail","id":"SM1"}"#,
                AgentLine::Fail {
                    id: "SM1".into(),
                    error: "the agent gave no reason".into(),
                    retry: true,
                },
            ),
            (
                r#"{"type":"fail","id":"SM1","error":"a\u001b[31m\u202eb\nc","retry":null}"#,
                AgentLine::Fail {
                    id: "SM1".into(),
                    error: "a[31mb c".into(),
                    retry: true,
                },
            ),
        ];
        for (line, want) in ok {
            assert_eq!(parse(line), Ok(want), "{line}");
        }
        let bad = [
            ("not json", "not valid JSON"),
            ("[1,2]", "JSON object"),
            (r#"{"id":"SM1"}"#, "missing \"type\""),
            (r#"{"type":"dance"}"#, "unknown type"),
            (r#"{"type":"ack"}"#, "ack needs \"id\""),
            (r#"{"type":"reply","text":"x"}"#, "reply needs \"id\""),
            (r#"{"type":"reply","id":5}"#, "must be a string"),
            (
                r#"{"type":"send","text":"x","ref":"r9","mediaUrls":["http://insecure"]}"#,
                "not an https URL",
            ),
            (
                r#"{"type":"send","text":"x","mediaUrls":"https://a"}"#,
                "must be a list",
            ),
            (r#"{"type":"hello"}"#, "hello needs \"kind\""),
            (
                r#"{"type":"reply","id":"SM1","media":[{"filename":"a.png"}]}"#,
                "media item 1 needs \"data\"",
            ),
            (
                r#"{"type":"reply","id":"SM1","media":[{"data":"not base64!"}]}"#,
                "media item 1: \"data\" is not base64",
            ),
            (
                r#"{"type":"reply","id":"SM1","media":{"data":"aGk="}}"#,
                "\"media\" must be a list",
            ),
            (r#"{"type":"fail","error":"x"}"#, "fail needs \"id\""),
            (
                r#"{"type":"fail","id":"SM1","retry":"yes"}"#,
                "true or false",
            ),
            (
                r#"{"type":"fail","id":"SM1","error":5}"#,
                "must be a string",
            ),
            (r#"{"type":"hello","kind":""}"#, "1 to 32"),
            (r#"{"type":"hello","kind":"a b"}"#, "1 to 32"),
            (r#"{"type":"hello","kind":"\u001b[31m"}"#, "1 to 32"),
        ];
        for (line, needle) in bad {
            let e = parse(line).unwrap_err();
            assert!(e.message.contains(needle), "{line}: {}", e.message);
        }
        assert_eq!(
            parse(r#"{"type":"send","text":"x","ref":"r9","mediaUrls":["http://insecure"]}"#)
                .unwrap_err()
                .reference
                .as_deref(),
            Some("r9")
        );
        let eleven: Vec<String> = (0..11)
            .map(|i| format!("\"https://a.example/{i}\""))
            .collect();
        assert!(parse(&format!(
            r#"{{"type":"send","text":"x","mediaUrls":[{}]}}"#,
            eleven.join(",")
        ))
        .is_err());
    }

    #[test]
    fn fail_errors_are_cut_and_the_fail_line_parses_back() {
        let long = "x".repeat(MAX_FAIL_ERROR + 50);
        let cut = clean_fail_error(&long);
        assert_eq!(cut.chars().count(), MAX_FAIL_ERROR + 1);
        assert!(cut.ends_with('…'));
        let multibyte = "é".repeat(MAX_FAIL_ERROR + 1);
        assert_eq!(
            clean_fail_error(&multibyte).chars().count(),
            MAX_FAIL_ERROR + 1
        );
        assert_eq!(clean_fail_error(" \u{200b} "), "the agent gave no reason");
        assert_eq!(
            parse(&fail_line("SM9", "exit status 1", true)),
            Ok(AgentLine::Fail {
                id: "SM9".into(),
                error: "exit status 1".into(),
                retry: true
            })
        );
    }

    #[test]
    fn inbound_message_and_conversation_key() {
        let v: Value = serde_json::from_str(r#"{"type":"message","id":"SM1","account":"default","from":"+15557654321","to":"+15551234567","text":"hi","media":[{"url":"https://x","contentType":"image/png","path":"/tmp/a"}],"receivedAt":"2026-11-22T12:00:00Z","conversation":"c-42"}"#).unwrap();
        let m = InboundMessage::from_value(&v).unwrap();
        assert_eq!(m.conversation_key(), "c-42");
        assert_eq!(m.media[0].content_type, "image/png");
        let v: Value =
            serde_json::from_str(r#"{"type":"message","id":"SM1","account":"a","from":"+1555"}"#)
                .unwrap();
        assert_eq!(
            InboundMessage::from_value(&v).unwrap().conversation_key(),
            "a:+1555"
        );
        assert!(InboundMessage::from_value(&json!({"type":"message"})).is_none());
        assert!(InboundMessage::from_value(&json!({"id": 5})).is_none());
    }

    #[test]
    fn message_line_is_byte_for_byte_what_json_macro_wrote() {
        use crate::store::Media;
        // The line as `json!` (with serde_json's preserve_order) built it before, and
        // the keys of CONTRACT §12 after it (`from` and `to` the numbers alone).
        fn old(m: &AgentMessage) -> String {
            let media: Vec<Value> = m
                .media
                .iter()
                .map(|x| json!({"url": x.url, "contentType": x.content_type, "path": x.path}))
                .collect();
            let mut v = json!({
                "type": "message", "id": m.id, "account": m.account,
                "from": m.from.number(), "to": m.to.trim_start_matches("whatsapp:"),
                "text": m.text, "media": media,
                "receivedAt": rfc3339(m.received_at_ms), "conversation": m.conversation_id(),
                "channel": m.from.channel().as_str(),
            });
            if let Some(p) = &m.profile_name {
                v["profileName"] = json!(p);
            }
            v.to_string()
        }
        let base = AgentMessage {
            id: "SM1".into(),
            account: "default".into(),
            from: crate::phone::E164::parse("+15557654321").unwrap(),
            to: "+15551234567".into(),
            text: "hi \"there\"\n\u{1F600} </script>".into(),
            media: vec![],
            received_at_ms: 1_764_000_000_123,
            media_pending: false,
            conversation: "c-42".into(),
            failures: Default::default(),
            profile_name: None,
        };
        let with_media = AgentMessage {
            media: vec![
                Media {
                    url: "https://x/1".into(),
                    content_type: "image/png".into(),
                    path: Some("/tmp/a".into()),
                },
                Media {
                    url: "https://x/2".into(),
                    content_type: "text/vcard".into(),
                    path: None,
                },
            ],
            conversation: String::new(),
            ..base.clone()
        };
        let whatsapp = AgentMessage {
            from: crate::phone::E164::parse_address("whatsapp:+15557654321").unwrap(),
            to: "whatsapp:+14155238886".into(),
            profile_name: Some("Ann".into()),
            ..base.clone()
        };
        let line = message_line(&whatsapp);
        assert!(
            line.contains(r#""from":"+15557654321","to":"+14155238886""#)
                && line.contains(r#""channel":"whatsapp","profileName":"Ann""#),
            "{line}"
        );
        for m in [base, with_media, whatsapp] {
            assert_eq!(message_line(&m), old(&m));
        }
    }

    #[test]
    fn rendering() {
        assert_eq!(
            sent_line(&Answering::Ref(Some("r1".into())), &["SM1".into()], 2),
            r#"{"type":"sent","sids":["SM1"],"segments":2,"ref":"r1"}"#
        );
        assert_eq!(
            error_line(&Answering::Id("SM9".into()), "nope", Some(21610)),
            r#"{"type":"error","message":"nope","id":"SM9","code":21610,"hint":"the recipient replied STOP: nothing is sent to them until they text START"}"#
        );
        assert_eq!(
            status_line("SM1", "delivered", None),
            r#"{"type":"status","sid":"SM1","status":"delivered","errorCode":null}"#
        );
        assert_eq!(
            status_line("SM1", "undelivered", Some("30034")),
            r#"{"type":"status","sid":"SM1","status":"undelivered","errorCode":30034,"hint":"this number is not registered for US A2P 10DLC: send through a Messaging Service with an approved campaign (messagingServiceSid)"}"#
        );
    }
}
