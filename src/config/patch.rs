//! `config patch`: a JSON merge patch (RFC 7386) applied to the config file, and a
//! readable description of what it changes. Both pure.

use serde_json::{Map, Value};

/// Applies `patch` to `target`: objects merge key by key, `null` deletes the key, any
/// other value replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_map) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                target_map.remove(k);
            } else {
                merge(target_map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// One changed leaf, for `--dry-run` and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        path: String,
        value: String,
    },
    Removed {
        path: String,
        value: String,
    },
    Changed {
        path: String,
        from: String,
        to: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Added { path, value } => write!(f, "+ {path}: {value}"),
            Change::Removed { path, value } => write!(f, "- {path}: {value}"),
            Change::Changed { path, from, to } => write!(f, "~ {path}: {from} -> {to}"),
        }
    }
}

/// A value as a diff shows it: a secret (by its key path, see
/// [`super::redact::is_secret_path`]) as `***`, and inside an object every secret
/// key's value too, so adding or removing a whole account hides its token.
fn render(path: &str, v: &Value) -> String {
    if super::redact::is_secret_path(path) {
        return super::redact::MASK.into();
    }
    masked(v).to_string()
}

fn masked(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if super::redact::is_secret_key(k) {
                        Value::String(super::redact::MASK.into())
                    } else {
                        masked(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(masked).collect()),
        other => other.clone(),
    }
}

/// The leaf-level differences between two documents.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    diff_at("", before, after, &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn diff_at(path: &str, before: &Value, after: &Value, out: &mut Vec<Change>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = join(path, k);
                match b.get(k) {
                    Some(vb) => diff_at(&p, va, vb, out),
                    None => out.push(Change::Removed {
                        value: render(&p, va),
                        path: p,
                    }),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    let p = join(path, k);
                    out.push(Change::Added {
                        value: render(&p, vb),
                        path: p,
                    });
                }
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(Change::Changed {
            path: path.to_string(),
            from: render(path, a),
            to: render(path, b),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_table() {
        let cases = [
            (json!({"a": 1}), json!({"a": 2}), json!({"a": 2})),
            (
                json!({"a": {"b": 1, "c": 2}}),
                json!({"a": {"b": null}}),
                json!({"a": {"c": 2}}),
            ),
            (json!({"a": [1, 2]}), json!({"a": [3]}), json!({"a": [3]})),
            (
                json!({"a": 1}),
                json!({"b": {"c": 1}}),
                json!({"a": 1, "b": {"c": 1}}),
            ),
            (
                json!({"a": "x"}),
                json!({"a": {"b": 1}}),
                json!({"a": {"b": 1}}),
            ),
            (json!({"a": 1}), json!({"missing": null}), json!({"a": 1})),
        ];
        for (mut target, patch, want) in cases {
            merge(&mut target, &patch);
            assert_eq!(target, want);
        }
    }

    #[test]
    fn diff_is_readable_and_hides_secrets() {
        let before = json!({"channels": {"sms": {"dmPolicy": "pairing", "authToken": "old", "allowFrom": ["+1"]}}});
        let after = json!({"channels": {"sms": {"dmPolicy": "allowlist", "authToken": "new", "defaultTo": "+2"}}});
        let lines: Vec<String> = diff(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            vec![
                "~ channels.sms.dmPolicy: \"pairing\" -> \"allowlist\"",
                "~ channels.sms.authToken: *** -> ***",
                "- channels.sms.allowFrom: [\"+1\"]",
                "+ channels.sms.defaultTo: \"+2\"",
            ]
        );
    }

    /// Issue 9, finding 4: signing keys, previous tokens, and secrets inside a whole
    /// object added or removed are never shown.
    #[test]
    fn diff_hides_every_secret() {
        let before = json!({"channels": {"sms": {
            "webhookSigningKeys": {"k1": "sk-one-secret"},
            "previousAuthTokens": ["prev-secret"],
            "accounts": {"old": {"authToken": "old-secret", "fromNumber": "+15550000001"}},
        }}});
        let after = json!({"channels": {"sms": {
            "webhookSigningKeys": {"k1": "sk-two-secret", "k2": {"source": "env", "id": "K2"}},
            "previousAuthTokens": ["prev-secret", "prev2-secret"],
            "accounts": {"new": {"authToken": "new-secret", "webhookSigningKeys": {"a": "nested-secret"}}},
        }}});
        let text: Vec<String> = diff(&before, &after)
            .iter()
            .map(ToString::to_string)
            .collect();
        let text = text.join("\n");
        assert!(!text.contains("secret\""), "{text}");
        assert!(!text.contains("-secret"), "{text}");
        assert!(
            text.contains("~ channels.sms.webhookSigningKeys.k1: *** -> ***"),
            "{text}"
        );
        assert!(
            text.contains("+ channels.sms.webhookSigningKeys.k2: ***"),
            "{text}"
        );
        assert!(
            text.contains("+15550000001"),
            "non-secrets are still shown: {text}"
        );
    }
}
