//! `config patch` edits the file in place, keeping its comments and formatting outside
//! the keys it changes: the patch is applied to a concrete syntax tree of the file
//! (`jsonc-parser`'s CST, which reads JSON5), not to a parsed value that has lost them.
//!
//! The editor and our JSON5 parser are two readers of one text, so the result is
//! checked: it must parse (with the parser every other command uses) to exactly the
//! document the merge patch gives. Anything else is refused and the caller falls back
//! to rewriting the file (see `cli::config_cmd`), so the kept comments can never change
//! what the file means.

use jsonc_parser::cst::{CstInputValue, CstObject, CstRootNode};
use serde_json::Value;

/// Why the file could not be edited in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The editor cannot read the file (a construct it does not know); no detail, since
    /// its message may quote the text, secrets included.
    #[error("the comment-keeping editor cannot read this file")]
    Unreadable,
    #[error("the file's top level is not an object")]
    NotAnObject,
    /// The edited text does not mean the patched document (e.g. a key written twice).
    #[error("the edited file would not mean the patched configuration (is a key written twice?)")]
    Mismatch,
}

/// `text` with the JSON merge patch `patch` (an object) applied in place; `expected`
/// is `patch::merge` of the text's document and `patch`, which the result must match.
pub fn apply(text: &str, patch: &Value, expected: &Value) -> Result<String, EditError> {
    let root = CstRootNode::parse(text, &Default::default()).map_err(|_| EditError::Unreadable)?;
    let obj = root.object_value().ok_or(EditError::NotAnObject)?;
    let Value::Object(patch) = patch else {
        return Err(EditError::NotAnObject);
    };
    apply_object(&obj, patch);
    let out = root.to_string();
    match super::parse_json5(&out) {
        Ok(v) if v == *expected => Ok(out),
        _ => Err(EditError::Mismatch),
    }
}

fn apply_object(obj: &CstObject, patch: &serde_json::Map<String, Value>) {
    for (key, value) in patch {
        let existing = obj.get(key);
        match (value, existing) {
            (Value::Null, Some(prop)) => prop.remove(),
            (Value::Null, None) => {}
            (Value::Object(inner), Some(prop)) => match prop.object_value() {
                Some(child) => apply_object(&child, inner),
                // RFC 7386: an object patch over a non-object starts from `{}`.
                None => prop.set_value(input(&without_nulls(value))),
            },
            (value, Some(prop)) => prop.set_value(input(&without_nulls(value))),
            (value, None) => {
                obj.append(key, input(&without_nulls(value)));
            }
        }
    }
}

/// A patch value as it is stored: `null` members of objects delete, so they vanish.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn input(v: &Value) -> CstInputValue {
    match v {
        Value::Null => CstInputValue::Null,
        Value::Bool(b) => CstInputValue::Bool(*b),
        Value::Number(n) => CstInputValue::Number(n.to_string()),
        Value::String(s) => CstInputValue::String(s.clone()),
        Value::Array(items) => CstInputValue::Array(items.iter().map(input).collect()),
        Value::Object(map) => {
            CstInputValue::Object(map.iter().map(|(k, v)| (k.clone(), input(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = r#"// smsgate: the starter config
{
  gateway: {
    listen: "127.0.0.1:8789", // where Twilio's webhooks arrive
    /* the store */
    stateDir: "/var/lib/smsgate",
  },
  channels: {
    sms: {
      accountSid: 'AC0123456789abcdef0123456789abcdef',
      // who may text the agent
      dmPolicy: "pairing",
      allowFrom: ["+15557654321"],
      textChunkLimit: 0x5dc,
    },
  },
}
"#;

    fn patched(text: &str, patch: Value) -> Result<String, EditError> {
        let mut expected = crate::config::parse_json5(text).unwrap();
        crate::config::patch::merge(&mut expected, &patch);
        apply(text, &patch, &expected)
    }

    #[test]
    fn comments_and_formatting_outside_the_change_are_kept() {
        let cases: Vec<(Value, Vec<&str>, Vec<&str>)> = vec![
            (
                json!({"channels": {"sms": {"dmPolicy": "allowlist"}}}),
                vec!["dmPolicy: \"allowlist\""],
                vec!["\"pairing\""],
            ),
            (
                json!({"channels": {"sms": {"allowFrom": null}}}),
                vec![],
                vec!["allowFrom", "+15557654321"],
            ),
            (
                json!({"channels": {"sms": {"defaultTo": "+15557654321", "accounts": {"b": {"webhookPath": "/webhooks/b", "x": null}}}}}),
                vec![
                    "\"defaultTo\": \"+15557654321\"",
                    "\"webhookPath\": \"/webhooks/b\"",
                ],
                vec!["\"x\""],
            ),
            (
                json!({"gateway": {"stateDir": "/srv/smsgate \"quoted\""}}),
                vec![r#""/srv/smsgate \"quoted\"""#],
                vec!["/var/lib/smsgate"],
            ),
            (
                // Replaces the object, comments inside it included: they were its own.
                json!({"gateway": {"tls": {"certFile": "/c.pem", "keyFile": "/k.pem"}}}),
                vec!["\"tls\": {\n      \"certFile\": \"/c.pem\""],
                vec![],
            ),
        ];
        for (patch, present, absent) in cases {
            let out = patched(FILE, patch.clone()).unwrap_or_else(|e| panic!("{patch}: {e}"));
            for kept in [
                "// smsgate: the starter config",
                "// where Twilio's webhooks arrive",
                "// who may text the agent",
                "accountSid: 'AC0123456789abcdef0123456789abcdef',",
                "textChunkLimit: 0x5dc,",
            ] {
                assert!(out.contains(kept), "{patch}: lost {kept:?}:\n{out}");
            }
            for p in present {
                assert!(out.contains(p), "{patch}: no {p:?}:\n{out}");
            }
            for a in absent {
                assert!(!out.contains(a), "{patch}: still {a:?}:\n{out}");
            }
        }
        let out = patched(FILE, json!({"gateway": "not an object any more"})).unwrap();
        assert!(
            out.contains(r#"gateway: "not an object any more","#),
            "{out}"
        );
        assert!(out.contains("// who may text the agent") && !out.contains("stateDir"));
        // A patch that changes nothing leaves every byte.
        assert_eq!(patched(FILE, json!({})).unwrap(), FILE);
        assert_eq!(
            patched(FILE, json!({"channels": {"sms": {"nothing": null}}})).unwrap(),
            FILE
        );
    }

    fn leaf() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z\"'\\\n/*{} ]{0,8}".prop_map(Value::String),
            Just(json!([1, "x", {"y": null}])),
        ]
    }

    fn patch_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("gateway".to_string()),
            Just("channels".to_string()),
            Just("sms".to_string()),
            Just("dmPolicy".to_string()),
            Just("allowFrom".to_string()),
            "[a-zA-Z\" .]{1,5}",
        ];
        leaf().prop_recursive(4, 24, 4, move |inner| {
            proptest::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]
        /// Any merge patch on a file without repeated keys is edited in place (never the
        /// fallback), and the result means exactly the merged document.
        #[test]
        fn any_patch_edits_in_place(patch in patch_value()) {
            if patch.is_object() {
                let out = patched(FILE, patch.clone());
                proptest::prop_assert!(out.is_ok(), "{patch}: {out:?}");
            }
        }
    }

    #[test]
    fn what_the_editor_cannot_do_is_refused_not_guessed() {
        // Written twice: JSON5 keeps the last, the editor would change the first.
        let twice = "{ a: 1, a: 2 }";
        assert_eq!(patched(twice, json!({"a": 3})), Err(EditError::Mismatch));
        assert_eq!(
            apply("[1, 2]", &json!({"a": 1}), &json!({"a": 1})),
            Err(EditError::NotAnObject)
        );
        assert_eq!(
            apply("{ a: ", &json!({"a": 1}), &json!({"a": 1})),
            Err(EditError::Unreadable)
        );
    }
}
