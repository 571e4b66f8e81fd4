//! The error collector (every problem found, keyed by path, reported at once) and the
//! value parsers more than one area uses.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};

use serde_json::Value;

use super::super::raw::Field;
use super::super::Problem;

#[derive(Default)]
pub(super) struct Problems(pub(super) BTreeSet<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.insert(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub(super) fn take<'a, T>(
    f: &'a Option<Field<T>>,
    path: &str,
    expected: &str,
    p: &mut Problems,
) -> Option<&'a T> {
    match f {
        // `null` means unset, everywhere.
        None | Some(Field::Invalid(Value::Null)) => None,
        Some(Field::Ok(v)) => Some(v),
        Some(Field::Invalid(v)) if crate::config::redact::is_secret_path(path) => {
            // Say what kind of value it is, never the value: it may be the token.
            p.add(path, format!("expected {expected}, found {}", kind_of(v)));
            None
        }
        Some(Field::Invalid(v)) => {
            p.add(path, format!("expected {expected}, found {}", describe(v)));
            None
        }
    }
}

pub(super) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// A listen address: `host:port` with an IP, or a name resolved once, at load
/// (`gateway.listen`, `gateway.tls.acme`'s HTTP-01 listener).
pub(super) fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse() {
        return Some(addr);
    }
    // "localhost:8789" and other names resolve once, at load.
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return Some(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    (host, port).to_socket_addrs().ok()?.next()
}
