//! `whatsapp` (CONTRACT §12): `{ enabled, from, templates: { reengage } }`, each key
//! checked with its key path. WhatsApp goes through the account's own Twilio
//! credentials and webhook; only the sender and the re-engagement template are its own.

use serde_json::Value;

use super::super::{Sender, WhatsApp};
use super::errors::{describe, take, Problems};
use super::layers::Layers;
use crate::phone::{Channel, E164};

const KEYS: &str = "the keys are enabled, from and templates";
const TEMPLATE_KEYS: &str = "the only template is reengage (a Content SID, HX…)";

/// The account's WhatsApp, `None` when the key is unset or `enabled` is false. `sender`
/// is the account's SMS sender, the default of `from`.
pub(super) fn whatsapp(l: &Layers, sender: Option<&Sender>, p: &mut Problems) -> Option<WhatsApp> {
    let (f, base) = l.get("whatsapp", |r| &r.whatsapp);
    let keys = take(
        f,
        &base,
        "an object such as { enabled: true, from: \"+14155238886\" }",
        p,
    )?;
    let mut enabled = true;
    let mut from: Option<Sender> = None;
    let mut reengage = None;
    for (key, v) in keys {
        let path = format!("{base}.{key}");
        match key.as_str() {
            "enabled" => match v {
                Value::Null => {}
                Value::Bool(b) => enabled = *b,
                _ => p.add(&path, format!("expected true or false, found {}", describe(v))),
            },
            "from" => match v {
                Value::Null => {}
                Value::String(s) => from = from_value(s, &path, p),
                _ => p.add(
                    &path,
                    format!(
                        "expected the WhatsApp sender's number (E.164, e.g. \"+14155238886\") or a Messaging Service SID (MG…), found {}",
                        describe(v)
                    ),
                ),
            },
            "templates" => match v {
                Value::Null => {}
                Value::Object(map) => {
                    for (tkey, tv) in map {
                        let tpath = format!("{path}.{tkey}");
                        match (tkey.as_str(), tv) {
                            ("reengage", Value::Null) => {}
                            ("reengage", Value::String(s)) if is_content_sid(s) => {
                                reengage = Some(s.clone())
                            }
                            ("reengage", _) => p.add(&tpath, format!("expected a Content SID (HX and 32 hex digits, from Twilio's Content Template Builder), found {}", describe_sid(tv))),
                            _ => p.add(&tpath, format!("unknown template; {TEMPLATE_KEYS}")),
                        }
                    }
                }
                _ => p.add(
                    &path,
                    format!("expected an object such as {{ reengage: \"HX…\" }}, found {}", describe(v)),
                ),
            },
            _ => p.add(&path, format!("unknown key; {KEYS}")),
        }
    }
    if !enabled {
        return None;
    }
    let sender = match (from, sender) {
        (Some(s), _) => s,
        (None, Some(Sender::Number(n))) => Sender::Number(n.on(Channel::Whatsapp)),
        (None, Some(Sender::MessagingService(sid))) => Sender::MessagingService(sid.clone()),
        // The account has no sender: its own problem is reported already.
        (None, None) => return None,
    };
    Some(WhatsApp { sender, reengage })
}

/// A template SID is never a secret, but a long wrong value is cut.
fn describe_sid(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
        _ => describe(v),
    }
}

/// `HX` and 32 hex digits.
pub(crate) fn is_content_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("HX") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn from_value(s: &str, path: &str, p: &mut Problems) -> Option<Sender> {
    if s.starts_with("MG") {
        if s.len() == 34 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Some(Sender::MessagingService(s.to_string()));
        }
        p.add(path, "is not a Messaging Service SID; copy it from the Twilio Console: MG followed by 32 characters");
        return None;
    }
    match E164::parse_address(s) {
        Ok(n) => Some(Sender::Number(n.on(Channel::Whatsapp))),
        Err(e) => {
            p.add(
                path,
                format!("{e} (the WhatsApp sender; the Sandbox's is +14155238886)"),
            );
            None
        }
    }
}
