//! The config file: JSON5 parsing, validation (against an empty environment), and
//! `config patch`'s merge and diff.
//!
//! Input: a config document, optionally followed by a NUL byte and a merge patch
//! document (JSON5 too). Without a patch the document is merged into itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use smsgate::config::{self, patch, validate, Env};

/// Keeps validation off the network and away from device files: `gateway.listen`
/// with a host name would be resolved (a DNS query per input), and a `file` secret is
/// read whole (`/dev/zero` never ends). Such values are replaced by harmless ones that
/// take the same code paths (`localhost` resolves from /etc/hosts).
fn sanitise(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "listen" {
                    if let Value::String(s) = child {
                        if s.parse::<std::net::SocketAddr>().is_err() {
                            if let Some((host, port)) = s.rsplit_once(':') {
                                if !host.is_empty() && host != "localhost" {
                                    *s = format!("localhost:{port}");
                                }
                            }
                        }
                    }
                }
                sanitise(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sanitise),
        Value::String(s) => {
            if ["/dev", "/proc", "/sys", "/run"]
                .iter()
                .any(|p| s.starts_with(p))
                || s.contains("..")
            {
                *s = "/nonexistent/smsgate-fuzz".into();
            }
        }
        _ => {}
    }
}

fn check(doc: &Value) {
    let mut doc = doc.clone();
    sanitise(&mut doc);
    let _ = validate::validate_value(&doc, &Env::default());
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (doc_text, patch_text) = input.split_once('\0').unwrap_or((input, input));
    let Ok(doc) = config::parse_json5(doc_text) else {
        return;
    };
    check(&doc);

    let Ok(patch_doc) = config::parse_json5(patch_text) else {
        return;
    };
    let mut merged = doc.clone();
    patch::merge(&mut merged, &patch_doc);

    // `config patch` edits the text in place: never a panic, and what the editor returns
    // means exactly the merged document.
    if patch_doc.is_object() && doc.is_object() {
        if let Ok(text) = config::edit::apply(doc_text, &patch_doc, &merged) {
            assert_eq!(config::parse_json5(&text).ok(), Some(merged.clone()));
        }
    }

    // A merge patch is idempotent.
    let mut twice = merged.clone();
    patch::merge(&mut twice, &patch_doc);
    assert_eq!(
        twice, merged,
        "merging the same patch twice changed the result"
    );

    // diff is empty exactly when the documents are equal.
    let changes = patch::diff(&doc, &merged);
    assert_eq!(
        changes.is_empty(),
        doc == merged,
        "diff disagrees with ==: {changes:?}"
    );
    assert!(patch::diff(&merged, &merged).is_empty());
    for change in &changes {
        let _ = change.to_string();
    }

    check(&merged);
});
