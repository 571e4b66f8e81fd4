//! Every ACP message the bridge writes or reads, in the official schema crate's types
//! (`agent-client-protocol-schema`, protocol v1), so a protocol change arrives as a
//! version bump and a compile error, not as a silent mismatch in hand-written JSON.
//!
//! Why the schema crate and not the `agent-client-protocol` connection crate: our
//! JSON-RPC side (`client.rs`) is what bounds a hostile agent — the line cap, the stdin
//! byte budget that kills an agent that does not read, updates routed only to the
//! prompt running on their session. The schema types give the wire format; the
//! framing stays ours. Pure functions, tested below and against the TypeScript SDK.

use std::path::Path;

use agent_client_protocol_schema::v1 as acp;
use agent_client_protocol_schema::ProtocolVersion;
use serde_json::Value;

pub(crate) use acp::{ContentBlock, PermissionOption, PermissionOptionKind, SessionUpdate};

/// Method names (the schema crate's own constants).
pub(crate) const INITIALIZE: &str = acp::AGENT_METHOD_NAMES.initialize;
pub(crate) const SESSION_NEW: &str = acp::AGENT_METHOD_NAMES.session_new;
pub(crate) const SESSION_LOAD: &str = acp::AGENT_METHOD_NAMES.session_load;
pub(crate) const SESSION_PROMPT: &str = acp::AGENT_METHOD_NAMES.session_prompt;
pub(crate) const SESSION_CANCEL: &str = acp::AGENT_METHOD_NAMES.session_cancel;
pub(crate) const SESSION_UPDATE: &str = acp::CLIENT_METHOD_NAMES.session_update;
pub(crate) const REQUEST_PERMISSION: &str = acp::CLIENT_METHOD_NAMES.session_request_permission;

/// The protocol version we speak.
pub(crate) const VERSION: ProtocolVersion = ProtocolVersion::V1;

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // The schema types are plain data with string keys: serialising cannot fail
    // (documented invariant).
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn from_value<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("the agent's {what} does not follow ACP v1: {e}"))
}

/// `initialize`: protocol v1; no file system, no terminal (smsgate offers neither).
pub(crate) fn initialize() -> Value {
    let caps = acp::ClientCapabilities::new().fs(acp::FileSystemCapabilities::new()
        .read_text_file(false)
        .write_text_file(false));
    to_value(
        &acp::InitializeRequest::new(VERSION)
            .client_capabilities(caps)
            .client_info(acp::Implementation::new(
                "smsgate",
                env!("CARGO_PKG_VERSION"),
            )),
    )
}

/// What an agent's `initialize` answer tells the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Agent {
    pub(crate) version: ProtocolVersion,
    pub(crate) load_session: bool,
    pub(crate) image: bool,
}

pub(crate) fn initialized(result: Value) -> Result<Agent, String> {
    let r: acp::InitializeResponse = from_value("initialize answer", result)?;
    Ok(Agent {
        version: r.protocol_version,
        load_session: r.agent_capabilities.load_session,
        image: r.agent_capabilities.prompt_capabilities.image,
    })
}

pub(crate) fn new_session(cwd: &Path) -> Value {
    to_value(&acp::NewSessionRequest::new(cwd))
}

/// The session id of a `session/new` answer.
pub(crate) fn session_created(result: Value) -> Result<String, String> {
    let r: acp::NewSessionResponse = from_value("session/new answer", result)?;
    Ok(r.session_id.0.to_string())
}

pub(crate) fn load_session(session: &str, cwd: &Path) -> Value {
    to_value(&acp::LoadSessionRequest::new(session.to_string(), cwd))
}

pub(crate) fn prompt(session: &str, blocks: Vec<ContentBlock>) -> Value {
    to_value(&acp::PromptRequest::new(session.to_string(), blocks))
}

pub(crate) fn cancel(session: &str) -> Value {
    to_value(&acp::CancelNotification::new(session.to_string()))
}

pub(crate) fn text_block(text: String) -> ContentBlock {
    ContentBlock::Text(acp::TextContent::new(text))
}

pub(crate) fn image_block(mime: &str, data: &str) -> ContentBlock {
    ContentBlock::Image(acp::ImageContent::new(data, mime))
}

/// A `session/prompt` answer's stop reason as its wire word (`end_turn`, …), for
/// [`super::judge`]. An answer that is not a `PromptResponse` (no `stopReason`, or one
/// ACP v1 does not define) still gives its word when it has one, so the log names it.
pub(crate) fn stop_reason(result: &Value) -> Option<String> {
    match serde_json::from_value::<acp::PromptResponse>(result.clone()) {
        Ok(r) => match to_value(&r.stop_reason) {
            Value::String(s) => Some(s),
            _ => None,
        },
        Err(_) => result
            .get("stopReason")
            .and_then(Value::as_str)
            .map(String::from),
    }
}

/// The answer a prompt gets when smsgate cancelled it and the agent never said.
pub(crate) fn cancelled_answer() -> Value {
    to_value(&acp::PromptResponse::new(acp::StopReason::Cancelled))
}

/// A `session/update` notification: its session and update, or why it is refused.
pub(crate) fn update(params: Value) -> Result<(String, SessionUpdate), String> {
    let n: acp::SessionNotification = from_value("session/update", params)?;
    Ok((n.session_id.0.to_string(), n.update))
}

/// The session of a `session/update` that [`update`] refused although it claims to
/// be an `agent_message_chunk`: a kind we read, so what it carries is part of the
/// reply and cannot be skipped like an update of a kind this schema does not know.
pub(crate) fn unreadable_chunk(params: &Value) -> Option<&str> {
    let kind = params.get("update")?.get("sessionUpdate")?.as_str()?;
    if kind != "agent_message_chunk" {
        return None;
    }
    params.get("sessionId")?.as_str()
}

/// A schema error as it may be logged: serde quotes the offending value (`invalid
/// type: string "…"`), which may be part of a reply; every quoted span becomes "…".
pub(crate) fn without_quoted(error: &str) -> String {
    let mut out = String::with_capacity(error.len());
    for (i, part) in error.split('"').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        } else {
            out.push_str("\"…\"");
        }
    }
    out
}

/// The text a session update adds to the reply, if it is an agent message chunk of
/// text (thoughts, tool calls, plans and the user's own echo are not the answer).
pub(crate) fn chunk_text(update: &SessionUpdate) -> Option<&str> {
    match update {
        SessionUpdate::AgentMessageChunk(chunk) => match &chunk.content {
            ContentBlock::Text(t) => Some(&t.text),
            _ => None,
        },
        _ => None,
    }
}

/// A `session/request_permission` request as the bridge judges it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PermissionAsk {
    pub(crate) session: String,
    /// The tool call's title, or `None` when the agent gave none.
    pub(crate) title: Option<String>,
    /// The tool call's kind (`execute`, `edit`, …) as its wire word.
    pub(crate) kind: Option<String>,
    /// The command or files the tool call touches, as the agent described them.
    pub(crate) raw_input: Option<Value>,
    pub(crate) locations: Vec<String>,
    pub(crate) options: Vec<PermissionOption>,
}

pub(crate) fn permission_ask(params: Value) -> Result<PermissionAsk, String> {
    let r: acp::RequestPermissionRequest = from_value("session/request_permission", params)?;
    let f = r.tool_call.fields;
    Ok(PermissionAsk {
        session: r.session_id.0.to_string(),
        title: f.title,
        kind: f.kind.map(|k| to_value(&k)).and_then(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        }),
        raw_input: f.raw_input,
        locations: f
            .locations
            .unwrap_or_default()
            .into_iter()
            .map(|l| l.path.display().to_string())
            .collect(),
        options: r.options,
    })
}

/// The `optionId` to answer a permission request with, or `None` for the `cancelled`
/// outcome (no suitable option offered). Deny: a reject option. Allow: allow-once,
/// else a reject option (never "always": one text cannot grant a standing right).
pub(crate) fn choose_option(options: &[PermissionOption], allow: bool) -> Option<String> {
    use PermissionOptionKind::*;
    let kinds: &[PermissionOptionKind] = if allow {
        &[AllowOnce, RejectOnce, RejectAlways]
    } else {
        &[RejectOnce, RejectAlways]
    };
    kinds.iter().find_map(|k| {
        options
            .iter()
            .find(|o| o.kind == *k)
            .map(|o| o.option_id.0.to_string())
    })
}

/// The answer to a permission request: the option chosen, or `cancelled`.
pub(crate) fn permission_answer(option: Option<&str>) -> Value {
    let outcome = match option {
        Some(id) => acp::RequestPermissionOutcome::Selected(acp::SelectedPermissionOutcome::new(
            id.to_string(),
        )),
        None => acp::RequestPermissionOutcome::Cancelled,
    };
    to_value(&acp::RequestPermissionResponse::new(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_we_write_is_what_acp_v1_says() {
        assert_eq!(
            initialize(),
            json!({
                "protocolVersion": 1,
                "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false, "auth": {"terminal": false}},
                "clientInfo": {"name": "smsgate", "version": env!("CARGO_PKG_VERSION")},
            })
        );
        assert_eq!(
            new_session(Path::new("/w")),
            json!({"cwd": "/w", "mcpServers": []})
        );
        assert_eq!(
            load_session("s1", Path::new("/w")),
            json!({"sessionId": "s1", "cwd": "/w", "mcpServers": []})
        );
        assert_eq!(
            prompt(
                "s1",
                vec![text_block("hi".into()), image_block("image/png", "AAAA")]
            ),
            json!({"sessionId": "s1", "prompt": [
                {"type": "text", "text": "hi"},
                {"type": "image", "mimeType": "image/png", "data": "AAAA"}]})
        );
        assert_eq!(cancel("s1"), json!({"sessionId": "s1"}));
        assert_eq!(
            permission_answer(Some("a1")),
            json!({"outcome": {"outcome": "selected", "optionId": "a1"}})
        );
        assert_eq!(
            permission_answer(None),
            json!({"outcome": {"outcome": "cancelled"}})
        );
    }

    #[test]
    fn what_we_read() {
        let a = initialized(json!({"protocolVersion": 1, "agentCapabilities": {"loadSession": true, "promptCapabilities": {"image": true}}})).unwrap();
        assert_eq!((a.version, a.load_session, a.image), (VERSION, true, true));
        let a = initialized(json!({"protocolVersion": 1})).unwrap();
        assert!(!a.load_session && !a.image);
        assert!(initialized(json!({"agentCapabilities": {}})).is_err());
        assert_eq!(session_created(json!({"sessionId": "s"})).unwrap(), "s");
        let e = session_created(json!({"id": "s"})).unwrap_err();
        assert!(e.contains("session/new answer"), "{e}");
        assert_eq!(
            stop_reason(&json!({"stopReason": "end_turn"})).as_deref(),
            Some("end_turn")
        );
        assert_eq!(
            stop_reason(&json!({"stopReason": "made_up"})).as_deref(),
            Some("made_up")
        );
        assert_eq!(stop_reason(&json!({})), None);
        assert_eq!(
            stop_reason(&cancelled_answer()).as_deref(),
            Some("cancelled")
        );
        let (s, u) = update(json!({"sessionId": "s", "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}}})).unwrap();
        assert_eq!((s.as_str(), chunk_text(&u)), ("s", Some("hi")));
        assert!(update(json!({"sessionId": "s"})).is_err());
        // A message chunk that does not parse is named; other kinds are not.
        let bad = json!({"sessionId": "s", "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "txt", "text": "lost"}}});
        assert!(update(bad.clone()).is_err());
        assert_eq!(unreadable_chunk(&bad), Some("s"));
        let unknown = json!({"sessionId": "s", "update": {"sessionUpdate": "brand_new_kind"}});
        assert!(update(unknown.clone()).is_err());
        assert_eq!(unreadable_chunk(&unknown), None);
        assert_eq!(
            unreadable_chunk(&json!({"update": {"sessionUpdate": "agent_message_chunk"}})),
            None
        );
        assert_eq!(
            without_quoted(r#"invalid type: string "a reply", expected u64 at "x"#),
            r#"invalid type: string "…", expected u64 at "…""#
        );
        let p = permission_ask(json!({
            "sessionId": "s",
            "toolCall": {"toolCallId": "t1", "title": "Run ls", "kind": "execute",
                         "rawInput": {"command": "ls"}, "locations": [{"path": "/w/a"}]},
            "options": [{"optionId": "a1", "name": "Allow", "kind": "allow_once"}]
        }))
        .unwrap();
        assert_eq!(p.title.as_deref(), Some("Run ls"));
        assert_eq!(p.kind.as_deref(), Some("execute"));
        assert_eq!(p.locations, ["/w/a"]);
        assert_eq!(p.raw_input, Some(json!({"command": "ls"})));
        assert_eq!(choose_option(&p.options, true).as_deref(), Some("a1"));
    }
}
