//! Checks that tell an operator what will not work before Twilio finds out (CONTRACT
//! §11): no account that can send, an unwritable `stateDir`, a token readable by others,
//! a `publicWebhookUrl` Twilio cannot call as written, a misspelt key. Each decision is a
//! pure function with a table test; only [`state_dir_problem`] touches the file system.

use std::net::IpAddr;
use std::path::Path;

use serde::de::{self, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::raw::{RawAccount, RawAcme, RawChannels, RawConfig, RawGateway, RawLog, RawTls};

// ---- did you mean ------------------------------------------------------------------

/// A deserializer that only records the field names a `#[derive(Deserialize)]` struct
/// asks for, so the known keys come from the raw types themselves (a key added there is
/// suggested without being listed twice).
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

fn fields_of<T: Deserialize<'static>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The error is the point: the derive stops after naming its fields.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// The keys valid inside the object at `parent` (key path segments), if it is one of
/// the config's fixed-shape objects.
pub(crate) fn keys_at(parent: &[&str]) -> &'static [&'static str] {
    match parent {
        [] => fields_of::<RawConfig>(),
        ["gateway"] => fields_of::<RawGateway>(),
        ["gateway", "tls"] => fields_of::<RawTls>(),
        ["gateway", "tls", "acme"] => fields_of::<RawAcme>(),
        ["gateway", "log"] => fields_of::<RawLog>(),
        ["channels"] => fields_of::<RawChannels>(),
        ["channels", "sms"] | ["channels", "sms", "accounts", _] => fields_of::<RawAccount>(),
        _ => &[],
    }
}

/// The known key nearest to an unknown one at `path` (dotted), when one is near enough
/// to be a slip: the same letters in another case or with `_`/`-`, or a few edits away.
pub(crate) fn did_you_mean(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('.').collect();
    let (key, parent) = segments.split_last()?;
    nearest(key, keys_at(parent))
}

fn nearest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let k = norm(key);
    if k.is_empty() {
        return None;
    }
    known
        .iter()
        .map(|cand| (edit_distance(&k, &norm(cand)), *cand))
        .filter(|(d, cand)| *d <= (cand.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, cand)| cand)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- accounts that cannot send ---------------------------------------------------------

/// Why an account named in the config is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// `enabled: false`: on purpose.
    Disabled,
    /// Keys no layer sets (`accountSid`, `authToken`, `fromNumber or messagingServiceSid`).
    Missing(Vec<&'static str>),
    /// A value is set but wrong: that problem is already reported at its key.
    Invalid,
}

/// The errors for a channel that cannot send (CONTRACT §11). `accounts` are the
/// accounts the config names that are not usable, with the key path their fix goes
/// under; `usable` counts the usable ones; `top_missing` is what the top level and the
/// environment leave unset (used when no account is named at all).
pub(crate) fn cannot_send(
    enabled: bool,
    usable: usize,
    accounts: &[(String, Unusable)],
    top_missing: &[&'static str],
) -> Vec<(String, String)> {
    if !enabled {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (path, why) in accounts {
        if let Unusable::Missing(keys) = why {
            out.push((
                path.clone(),
                format!(
                    "{}: missing {}; set {} (the default account also reads the TWILIO_* environment variables), or set enabled: false on the account",
                    if usable == 0 { "no account can send" } else { "this account cannot send" },
                    keys.join(", "),
                    if keys.len() == 1 { "it" } else { "them" }
                ),
            ));
        }
    }
    let invalid = accounts.iter().any(|(_, w)| *w == Unusable::Invalid);
    if usable == 0 && out.is_empty() && !invalid {
        let message = if accounts.iter().any(|(_, w)| *w == Unusable::Disabled) {
            "no account can send: every account has enabled: false; enable one, or set channels.sms.enabled: false to run without SMS".to_string()
        } else {
            let missing = if top_missing.is_empty() {
                vec!["fromNumber or messagingServiceSid"]
            } else {
                top_missing.to_vec()
            };
            format!(
                "no account can send: missing {}; set them here (or TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER), or set channels.sms.enabled: false to run without SMS; `smsgate config init` writes a starter file",
                missing.join(", ")
            )
        };
        out.push(("channels.sms".to_string(), message));
    }
    out
}

// ---- allowTo that refuses the account's own defaultTo ---------------------------------

/// A set `allowTo` replaces the default list (CONTRACT §9), so a `defaultTo` it does not
/// name makes every agent send without `to` fail: said at load, not at the first send.
pub(crate) fn allow_to_warning(a: &super::Account) -> Option<String> {
    let (list, to) = (a.allow_to.as_ref()?, a.default_to.as_ref()?);
    (!list.permits(to)).then(|| format!("account {:?}: allowTo does not include defaultTo, so the agent's sends that name no \"to\" will be refused (not-allowed); add defaultTo's number to allowTo, or remove allowTo to allow the people the account knows", a.id))
}

// ---- publicWebhookUrl that Twilio cannot use as written -----------------------------

/// Warnings for an account's `publicWebhookUrl` (raw as configured, parsed) against its
/// `webhookPath`. None of them is an error: a proxy or tunnel may make them right.
pub(crate) fn public_url_warnings(
    account: &str,
    url: &url::Url,
    webhook_path: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let shown = {
        let mut u = url.clone();
        u.set_fragment(None);
        u.to_string()
    };
    if let Some(why) = url.host().and_then(|h| unreachable_host(&h)) {
        out.push(format!("account {account:?}: publicWebhookUrl {shown} names {why}, which Twilio cannot reach from the internet; use the public https URL of this gateway (or of the proxy or tunnel in front of it)"));
    }
    if url.scheme() == "http" {
        out.push(format!("account {account:?}: publicWebhookUrl {shown} is http: texts and signatures cross the internet unencrypted; use https (gateway.tls, or a proxy that terminates TLS)"));
    }
    let path = url.path();
    if path.len() > 1 && path.ends_with('/') {
        out.push(format!("account {account:?}: publicWebhookUrl's path {path:?} ends in `/`, and Twilio signs and calls the URL exactly as written; remove the trailing slash (webhookPath is {webhook_path:?})"));
    } else if path != webhook_path {
        out.push(format!("account {account:?}: publicWebhookUrl's path {path:?} differs from webhookPath {webhook_path:?}, where the gateway listens; make them the same unless a proxy rewrites {path:?} to {webhook_path:?}"));
    }
    out
}

/// Why a host cannot be reached by Twilio, if it cannot.
fn unreachable_host(host: &url::Host<&str>) -> Option<String> {
    let ip: IpAddr = match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            return (d == "localhost" || d.ends_with(".localhost"))
                .then(|| format!("the loopback name {d}"));
        }
        url::Host::Ipv4(v4) => IpAddr::V4(*v4),
        url::Host::Ipv6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(*v6),
        },
    };
    let kind = match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "a loopback address",
        IpAddr::V4(v4) if v4.is_unspecified() => "the unspecified address",
        IpAddr::V4(v4) if v4.is_private() => "a private address",
        IpAddr::V4(v4) if v4.is_link_local() => "a link-local address",
        // 100.64.0.0/10: carrier-grade NAT, and Tailscale's addresses.
        IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 => {
            "a shared (CGNAT/Tailscale) address"
        }
        IpAddr::V6(v6) if v6.is_loopback() => "a loopback address",
        IpAddr::V6(v6) if v6.is_unspecified() => "the unspecified address",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "a private (ULA) address",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "a link-local address",
        _ => return None,
    };
    Some(format!("{kind} ({ip})"))
}

// ---- a readable file with an inline token ---------------------------------------------

/// Key paths in the file's document that hold a secret written inline (not a SecretRef).
pub(crate) fn inline_secret_paths(doc: &Value) -> Vec<String> {
    fn literal(v: &Value) -> bool {
        match v {
            Value::String(s) => !s.is_empty(),
            Value::Array(items) => items.iter().any(literal),
            // A SecretRef names where the secret is; anything else may hold one.
            Value::Object(map) => !map.contains_key("source") && map.values().any(literal),
            _ => false,
        }
    }
    fn walk(path: &str, v: &Value, out: &mut Vec<String>) {
        if let Value::Object(map) = v {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if super::redact::is_secret_key(k) {
                    if literal(v) {
                        out.push(p);
                    }
                } else {
                    walk(&p, v, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk("", doc, &mut out);
    out
}

/// The warning for a config file of `mode` that holds the secrets at `inline`.
pub(crate) fn readable_secret_warning(file: &Path, mode: u32, inline: &[String]) -> Option<String> {
    let others = mode & 0o077;
    if others == 0 || inline.is_empty() {
        return None;
    }
    let who = match (others & 0o070 != 0, others & 0o007 != 0) {
        (true, true) => "its group and every user",
        (true, false) => "its group",
        _ => "every user",
    };
    Some(format!(
        "{} (mode {:04o}) is readable by {who} and holds {} inline; run `chmod 600 {}`, or move the token out of the file with a SecretRef such as authToken: {{ source: \"env\", id: \"TWILIO_AUTH_TOKEN\" }}",
        file.display(),
        mode & 0o7777,
        inline.join(", "),
        file.display()
    ))
}

// ---- stateDir -----------------------------------------------------------------------

/// Why `stateDir` cannot be used, if it cannot: it must be a directory this process can
/// write, or be creatable (its nearest existing ancestor a writable directory). Checked
/// by creating and removing a probe file, the one test that `ProtectSystem=`, read-only
/// mounts and ACLs cannot fool. Nothing is created at `dir` itself.
pub(crate) fn state_dir_problem(dir: &Path) -> Option<String> {
    let mut probe_in = dir;
    let mut exists = true;
    loop {
        match std::fs::metadata(probe_in) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if exists => {
                return Some(format!(
                    "{} exists and is not a directory; point stateDir at a directory",
                    dir.display()
                ))
            }
            Ok(_) => {
                return Some(format!(
                    "{} cannot be created: {} is not a directory",
                    dir.display(),
                    probe_in.display()
                ))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                exists = false;
                match probe_in.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => probe_in = parent,
                    _ => return Some(format!("{} cannot be created", dir.display())),
                }
            }
            Err(e) => {
                return Some(format!(
                    "{} cannot be checked: {}: {e}",
                    dir.display(),
                    probe_in.display()
                ))
            }
        }
    }
    let probe = probe_in.join(format!(".smsgate-write-check-{}", std::process::id()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match result {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(e) => {
            let user = rustix::process::geteuid().as_raw();
            Some(if exists {
                format!("{} cannot be written by this user (uid {user}): {e}; give the service user the directory (chown), or choose another stateDir", dir.display())
            } else {
                format!("{} cannot be created: {} cannot be written by this user (uid {user}): {e}; create it for the service user, or choose another stateDir", dir.display(), probe_in.display())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_keys_come_from_the_raw_types() {
        assert!(keys_at(&[]).contains(&"gateway"));
        assert!(keys_at(&["gateway"]).contains(&"stateDir"));
        assert!(keys_at(&["channels", "sms"]).contains(&"allowFrom"));
        assert!(keys_at(&["channels", "sms", "accounts", "b"]).contains(&"webhookPath"));
        assert!(keys_at(&["gateway", "tls", "acme"]).contains(&"http01Listen"));
        assert!(keys_at(&["nowhere"]).is_empty());
    }

    #[test]
    fn did_you_mean_table() {
        let cases = [
            ("channels.sms.alowFrom", Some("allowFrom")),
            ("channels.sms.allowfrom", Some("allowFrom")),
            ("channels.sms.allow_from", Some("allowFrom")),
            ("channels.sms.allowto", Some("allowTo")),
            ("channels.sms.accounts.b.allow_to", Some("allowTo")),
            ("channels.sms.accounts.b.dmpolicy", Some("dmPolicy")),
            ("channels.sms.authTken", Some("authToken")),
            ("gateway.lisen", Some("listen")),
            ("gateway.state_dir", Some("stateDir")),
            ("gateway.tls.certfile", Some("certFile")),
            ("chanels", Some("channels")),
            ("channels.sms.webhookUrl", None),
            ("channels.sms.zzz", None),
            ("channels.sms.", None),
            ("somewhere.else.key", None),
        ];
        for (path, want) in cases {
            assert_eq!(did_you_mean(path), want, "{path}");
        }
    }

    #[test]
    fn edit_distance_table() {
        for (a, b, d) in [
            ("", "", 0),
            ("a", "", 1),
            ("kitten", "sitting", 3),
            ("allowfrom", "alowfrom", 1),
            ("é", "e", 1),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} {b}");
        }
    }

    #[test]
    fn cannot_send_table() {
        let miss = |p: &str, k: Vec<&'static str>| (p.to_string(), Unusable::Missing(k));
        let paths = |v: Vec<(String, String)>| v.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        // Disabled channel: nothing to say.
        assert!(cannot_send(false, 0, &[miss("channels.sms", vec!["authToken"])], &[]).is_empty());
        // A usable account and nothing else: fine.
        assert!(cannot_send(true, 1, &[], &[]).is_empty());
        // A named account that cannot send is an error even next to a usable one.
        let e = cannot_send(
            true,
            1,
            &[miss("channels.sms.accounts.b", vec!["authToken"])],
            &[],
        );
        assert_eq!(paths(e.clone()), vec!["channels.sms.accounts.b"]);
        assert!(e[0].1.contains("missing authToken"), "{e:?}");
        // Nothing named: the channel, with what is missing.
        let e = cannot_send(true, 0, &[], &["accountSid", "authToken"]);
        assert_eq!(paths(e.clone()), vec!["channels.sms"]);
        assert!(e[0].1.contains("missing accountSid, authToken"), "{e:?}");
        let e = cannot_send(true, 0, &[], &[]);
        assert!(
            e[0].1.contains("fromNumber or messagingServiceSid"),
            "{e:?}"
        );
        // Every account off on purpose while the channel is on.
        let e = cannot_send(
            true,
            0,
            &[("channels.sms.accounts.b".into(), Unusable::Disabled)],
            &[],
        );
        assert!(e[0].1.contains("enabled: false"), "{e:?}");
        // A disabled named account next to a usable one is fine.
        assert!(cannot_send(
            true,
            1,
            &[("channels.sms.accounts.b".into(), Unusable::Disabled)],
            &[]
        )
        .is_empty());
        // An invalid value is reported at its key already: no second message.
        assert!(
            cannot_send(true, 0, &[("channels.sms".into(), Unusable::Invalid)], &[]).is_empty()
        );
    }

    #[test]
    fn public_url_warnings_table() {
        let cases: Vec<(&str, &str, Vec<&str>)> = vec![
            (
                "https://sms.example.com/webhooks/sms",
                "/webhooks/sms",
                vec![],
            ),
            (
                "https://sms.example.com/webhooks/sms#rc=2",
                "/webhooks/sms",
                vec![],
            ),
            (
                "http://sms.example.com/webhooks/sms",
                "/webhooks/sms",
                vec!["is http"],
            ),
            (
                "https://127.0.0.1:8789/webhooks/sms",
                "/webhooks/sms",
                vec!["loopback address"],
            ),
            (
                "https://localhost/webhooks/sms",
                "/webhooks/sms",
                vec!["loopback name"],
            ),
            (
                "https://192.168.1.20/webhooks/sms",
                "/webhooks/sms",
                vec!["private address"],
            ),
            (
                "https://10.0.0.1/webhooks/sms",
                "/webhooks/sms",
                vec!["private address"],
            ),
            (
                "https://100.101.1.2/webhooks/sms",
                "/webhooks/sms",
                vec!["CGNAT"],
            ),
            (
                "https://[::1]/webhooks/sms",
                "/webhooks/sms",
                vec!["loopback address"],
            ),
            (
                "https://[fd00::1]/webhooks/sms",
                "/webhooks/sms",
                vec!["ULA"],
            ),
            (
                "https://[::ffff:10.1.1.1]/webhooks/sms",
                "/webhooks/sms",
                vec!["private address"],
            ),
            ("https://8.8.8.8/webhooks/sms", "/webhooks/sms", vec![]),
            (
                "https://sms.example.com/webhooks/sms/",
                "/webhooks/sms",
                vec!["ends in `/`"],
            ),
            (
                "https://sms.example.com/sms",
                "/webhooks/sms",
                vec!["differs from webhookPath \"/webhooks/sms\""],
            ),
            (
                "http://localhost/x/",
                "/webhooks/sms",
                vec!["loopback name", "is http", "ends in `/`"],
            ),
        ];
        for (url, path, want) in cases {
            let got = public_url_warnings("default", &url::Url::parse(url).unwrap(), path);
            assert_eq!(got.len(), want.len(), "{url}: {got:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!(g.contains(w), "{url}: {g:?} lacks {w:?}");
                assert!(g.starts_with("account \"default\""), "{g}");
            }
        }
    }

    #[test]
    fn inline_secrets_table() {
        let cases = [
            (
                json!({"channels": {"sms": {"authToken": "t"}}}),
                vec!["channels.sms.authToken"],
            ),
            (
                json!({"channels": {"sms": {"authToken": {"source": "env", "id": "T"}}}}),
                vec![],
            ),
            (
                json!({"channels": {"sms": {"accounts": {"b": {"authToken": "t"}}, "previousAuthTokens": [{"source": "file", "id": "x"}]}}}),
                vec!["channels.sms.accounts.b.authToken"],
            ),
            (
                json!({"channels": {"sms": {"webhookSigningKeys": {"k1": "s"}}}}),
                vec!["channels.sms.webhookSigningKeys"],
            ),
            (json!({"gateway": {"tls": {"keyFile": "/k.pem"}}}), vec![]),
        ];
        for (doc, want) in cases {
            assert_eq!(inline_secret_paths(&doc), want, "{doc}");
        }
    }

    #[test]
    fn readable_secret_warning_table() {
        let f = Path::new("/etc/smsgate/smsgate.json5");
        let inline = vec!["channels.sms.authToken".to_string()];
        assert_eq!(readable_secret_warning(f, 0o600, &inline), None);
        assert_eq!(readable_secret_warning(f, 0o644, &[]), None);
        let w = readable_secret_warning(f, 0o644, &inline).unwrap();
        assert!(w.contains("mode 0644") && w.contains("every user"), "{w}");
        assert!(
            w.contains("chmod 600 /etc/smsgate/smsgate.json5") && w.contains("SecretRef"),
            "{w}"
        );
        let w = readable_secret_warning(f, 0o640, &inline).unwrap();
        assert!(w.contains("mode 0640") && w.contains("its group"), "{w}");
    }

    #[test]
    fn state_dir_table() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(state_dir_problem(t.path()), None);
        assert_eq!(state_dir_problem(&t.path().join("new/deeper")), None);
        let e = state_dir_problem(&file).unwrap();
        assert!(e.contains("not a directory"), "{e}");
        let e = state_dir_problem(&file.join("state")).unwrap();
        assert!(
            e.contains("cannot be created") && e.contains("not a directory"),
            "{e}"
        );
        // Nothing was left behind, and nothing created.
        let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        // /proc cannot be written, even by root.
        let e = state_dir_problem(Path::new("/proc/smsgate-state")).unwrap();
        assert!(e.contains("cannot be created"), "{e}");
    }
}
