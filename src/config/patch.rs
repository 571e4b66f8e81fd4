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

/// Keys whose values are secrets: a diff shows that they changed, never what to.
fn is_secret_key(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.eq_ignore_ascii_case("authToken")
        || path.contains("authToken.")
        || last.to_ascii_lowercase().contains("token")
        || last.to_ascii_lowercase().contains("secret")
}

fn render(path: &str, v: &Value) -> String {
    if is_secret_key(path) {
        return "***".into();
    }
    v.to_string()
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
}
