//! Inputs the fuzzers (fuzz/, docs/fuzzing.md) once crashed on, replayed through the
//! same functions. Each file in `tests/fuzz_regressions/<target>/` is one input, read
//! exactly as the fuzz target `<target>` reads its bytes.
//!
//! Every input runs in a child process (this test binary, re-run for one input), so an
//! abort that takes the process down, such as a stack overflow, fails only that input's
//! check, with the file named, instead of killing the whole test binary (every integration
//! test).
//!
//! The child runs the input on threads of many stack sizes, 512 KiB to 8 MiB (the
//! CLI's main thread; a tokio worker, where the daemon reloads its config, has 2 MiB).
//! A stack overflow depends on the stack size and on frame sizes, which differ between
//! debug, release and the fuzz build (ASan): pest, for one, gives up cleanly when the
//! stack runs low, so a recursion bug shows only for stack sizes where the parser just
//! fits and what comes after it does not. Trying many sizes finds that window in any
//! build profile; code that bounds its recursion passes them all.

use std::path::{Path, PathBuf};
use std::process::Command;

use smsgate::agent::protocol;
use smsgate::config::{self, patch, validate::validate_value, Env};
use smsgate::text;
use smsgate::twilio::{fields, form, signature};

const CHILD_INPUT: &str = "SMSGATE_FUZZ_REGRESSION_INPUT";
/// Thread stack sizes each input is replayed on.
const MIN_STACK: usize = 512 << 10;
const MAX_STACK: usize = 8 << 20;
const STACK_STEP: usize = 32 << 10;

/// The fuzz target `form_and_signature`: fields split at 0xFF.
fn form_and_signature(data: &[u8]) {
    let mut fields = data.splitn(5, |b| *b == 0xFF);
    let body = fields.next().unwrap_or_default();
    let mut text = || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let (url, query, sig, header) = (text(), text(), text(), text());
    let params = form::parse(body);
    let _ = form::message_sid(&params);
    let _ = form::delivery_status(&params);
    let _ = signature::is_valid(&["token"], &url, Some(&query), &params, &sig);
    let _ = signature::settings(Some(&header));
    let _ = signature::url_variants(&url);
}

/// The fuzz target `config`: a document, then optionally NUL and a merge patch.
fn config_target(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (doc_text, patch_text) = input.split_once('\0').unwrap_or((input, input));
    let Ok(doc) = config::parse_json5(doc_text) else {
        return;
    };
    let _ = validate_value(&doc, &Env::default());
    let Ok(patch_doc) = config::parse_json5(patch_text) else {
        return;
    };
    let mut merged = doc.clone();
    patch::merge(&mut merged, &patch_doc);
    let _ = patch::diff(&doc, &merged);
    let _ = validate_value(&merged, &Env::default());
    // The comment-keeping editor: never a panic; what it returns means `merged`.
    if patch_doc.is_object() && doc.is_object() {
        if let Ok(text) = config::edit::apply(doc_text, &patch_doc, &merged) {
            assert_eq!(config::parse_json5(&text).ok(), Some(merged));
        }
    }
}

/// The fuzz target `text`: two bytes of limit (1..=1600), then the text.
fn text_target(data: &[u8]) {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let limit = 1 + usize::from(u16::from_be_bytes([*hi, *lo])) % 1600;
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let _ = text::prepare_sms(input, limit);
    let _ = text::chunk(input, limit);
    let _ = text::count_segments(input);
}

/// The fuzz target `agent_line`: one line.
fn agent_line(data: &[u8]) {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = protocol::parse(line);
    }
}

/// The fuzz target `webhook_fields`: a form body; its field check, and the re-splits
/// of it that keep the signature, which must never pass with another SID.
fn webhook_fields(data: &[u8]) {
    let params = form::parse(data);
    let checked = fields::check(&params);
    if let Some(body) = form::field(&params, "Body") {
        let _ = smsgate::access::keyword(body);
    }
    let sig = signature::compute("token", "https://a.test/w", &params);
    let mut sorted = params.clone();
    sorted.sort();
    sorted.dedup();
    for i in 0..sorted.len().saturating_sub(1).min(64) {
        let mut forged = sorted.clone();
        let (name, value) = forged.remove(i + 1);
        forged[i].1 = format!("{}{name}{value}", forged[i].1);
        let still_signed = signature::is_valid(&["token"], "https://a.test/w", None, &forged, &sig);
        if let (true, Ok(original), Ok(f)) = (still_signed, &checked, fields::check(&forged)) {
            assert_eq!(f.sid, original.sid, "re-split passes as a new message");
        }
    }
}

fn target_fn(target: &str) -> fn(&[u8]) {
    match target {
        "form_and_signature" => form_and_signature,
        "webhook_fields" => webhook_fields,
        "config" => config_target,
        "text" => text_target,
        "agent_line" => agent_line,
        other => panic!("no fuzz target {other:?}"),
    }
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("reading tests/fuzz_regressions").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// Replays every saved input of `target`, each in a child process (see the module doc).
fn replay(test_name: &str, target: &str) {
    if let Some(path) = std::env::var_os(CHILD_INPUT) {
        // The child: run the one input on every stack size (see the module doc).
        let data = std::sync::Arc::new(std::fs::read(&path).expect("reading the input"));
        let run = target_fn(target);
        for stack in (MIN_STACK..=MAX_STACK).step_by(STACK_STEP) {
            let data = data.clone();
            std::thread::Builder::new()
                .stack_size(stack)
                .spawn(move || run(&data))
                .expect("spawning the replay thread")
                .join()
                .unwrap_or_else(|_| panic!("the input panicked (stack {stack} bytes)"));
        }
        return;
    }
    // The test's full name in this crate is its module path without the crate name.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let full_name = format!("{module}::{test_name}");
    for path in inputs(target) {
        let out = Command::new(std::env::current_exe().expect("test binary path"))
            .args([&full_name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_INPUT, &path)
            .output()
            .expect("running the test binary for one input");
        assert!(
            out.status.success(),
            "fuzz target {target} crashes on {} ({}):\n{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn form_and_signature_regressions() {
    replay("form_and_signature_regressions", "form_and_signature");
}

/// `deep-nesting-1221`: `[[[…]]]` nested 1221 deep (2442 bytes) overflows the stack in
/// `config::parse_json5`: json5 0.4's deserializer recurses once per level with no depth
/// limit (its pest parser stops at a stack limit, the deserializer does not). The process
/// aborts instead of reporting a syntax error; a running gateway reloading such a file
/// dies instead of keeping its configuration.
#[test]
fn config_regressions() {
    replay("config_regressions", "config");
}

/// `resplit-nummedia`: issue 9's replay, a signed inbound body with `NumMedia=0` folded
/// into `MessageSid`; today it is refused by the field check.
#[test]
fn webhook_fields_regressions() {
    replay("webhook_fields_regressions", "webhook_fields");
}

#[test]
fn text_regressions() {
    replay("text_regressions", "text");
}

#[test]
fn agent_line_regressions() {
    replay("agent_line_regressions", "agent_line");
}
