//! Turns the raw file and the environment into a [`Config`], collecting every problem.
//!
//! Pure except for reading secret and certificate files named by the config, which is
//! what an operator expects `config validate` to check.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde_json::Value;
use url::Url;

use super::raw::{is_unset, Field, RawAccount, RawAcme, RawConfig, SecretInput, SecretRef};
use super::{
    Account, AcmeSettings, AllowFrom, Config, ConfigErrors, DmPolicy, Gateway, InactiveAccount,
    InboundCheck, LogFormat, LogSettings, Problem, PublicUrl, Sender, SmsChannel, TlsFiles,
    LETSENCRYPT_PRODUCTION, LETSENCRYPT_STAGING,
};
use crate::phone::E164;
use crate::secret::Secret;

/// The environment a config is resolved in: variables (a snapshot) and where relative
/// `file` secrets live.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: BTreeMap<String, String>,
    /// Leave SecretRefs that cannot be resolved here empty instead of failing: for CLI
    /// commands that never use the token (pairing, senders, queue), which an operator
    /// runs outside the service, where `$CREDENTIALS_DIRECTORY` does not exist.
    pub tolerate_unresolved_secrets: bool,
    /// Check that `stateDir` can be created or written (file system access, so off in
    /// [`Env::default`] for pure validation). Only strict loads check it: an operator's
    /// `pairing list` need not be able to write the service's directory.
    pub probe_state_dir: bool,
}

impl Env {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
            tolerate_unresolved_secrets: false,
            probe_state_dir: true,
        }
    }

    /// A variable that is set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

const SMS: &str = "channels.sms";
const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];
/// Unix socket paths are limited to 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Default)]
struct Problems(BTreeSet<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.insert(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Validates an already parsed JSON value (the file's content).
pub fn validate_value(value: &Value, env: &Env) -> Result<Config, ConfigErrors> {
    let mut unknown = Vec::new();
    let raw: Result<RawConfig, _> = serde_ignored::deserialize(value, |path| {
        // serde_ignored marks each Option layer with a `?` segment; operators write keys.
        let clean: Vec<String> = path
            .to_string()
            .split('.')
            .filter(|seg| *seg != "?")
            .map(String::from)
            .collect();
        unknown.push(clean.join("."));
    });
    match raw {
        Ok(raw) => validate(&raw, &unknown, env),
        Err(e) => Err(ConfigErrors(vec![Problem {
            path: "(file)".into(),
            message: format!("{e}; the file must be an object like {{ gateway: {{…}}, channels: {{ sms: {{…}} }} }}"),
        }])),
    }
}

/// Validates the raw config. `unknown` are the key paths serde did not recognise.
pub fn validate(raw: &RawConfig, unknown: &[String], env: &Env) -> Result<Config, ConfigErrors> {
    let mut p = Problems::default();
    for path in unknown {
        match super::checks::did_you_mean(path) {
            Some(key) => p.add(path.clone(), format!("unknown key; did you mean `{key}`? (keys are camelCase, see the configuration reference)")),
            None => p.add(path.clone(), "unknown key; remove it or check its spelling (keys are camelCase, see the configuration reference)"),
        }
    }
    let gateway = gateway(raw, env, &mut p);
    let sms = sms_channel(raw, env, &mut p);
    if p.0.is_empty() {
        let mut warnings = Vec::new();
        if sms.enabled && sms.accounts.is_empty() {
            warnings.push("no SMS account is usable yet: set channels.sms.accountSid, authToken and fromNumber (or messagingServiceSid), or the TWILIO_* environment variables".to_string());
        }
        for a in &sms.inactive {
            warnings.push(format!("account {:?} is not usable: {}", a.id, a.reason));
        }
        for a in &sms.accounts {
            if let Some(url) = a.public_url() {
                warnings.extend(super::checks::public_url_warnings(
                    &a.id,
                    &url.parsed,
                    &a.webhook_path,
                ));
            }
        }
        if let Some(gw) = gateway {
            return Ok(Config {
                gateway: gw,
                sms,
                warnings,
            });
        }
    }
    Err(ConfigErrors(p.0.into_iter().collect()))
}

fn take<'a, T>(
    f: &'a Option<Field<T>>,
    path: &str,
    expected: &str,
    p: &mut Problems,
) -> Option<&'a T> {
    match f {
        // `null` means unset, everywhere.
        None | Some(Field::Invalid(Value::Null)) => None,
        Some(Field::Ok(v)) => Some(v),
        Some(Field::Invalid(v)) if super::redact::is_secret_path(path) => {
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

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn gateway(raw: &RawConfig, env: &Env, p: &mut Problems) -> Option<Gateway> {
    let default = Default::default();
    let g = raw.gateway.as_ref().unwrap_or(&default);
    let listen = match take(&g.listen, "gateway.listen", "a host:port string", p) {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8789))),
        Some(s) => match parse_listen(s) {
            Some(addr) => Some(addr),
            None => {
                p.add("gateway.listen", format!("{s:?} is not a host:port address; use e.g. \"127.0.0.1:8789\" or \"0.0.0.0:443\""));
                None
            }
        },
    };
    let acme = g
        .tls
        .as_ref()
        .and_then(|t| t.acme.as_ref())
        .and_then(|a| acme(a, p));
    let tls = g.tls.as_ref().and_then(|t| {
        let cert = take(&t.cert_file, "gateway.tls.certFile", "a file path", p);
        let key = take(&t.key_file, "gateway.tls.keyFile", "a file path", p);
        if t.acme.is_some() {
            if t.cert_file.is_some() || t.key_file.is_some() {
                p.add("gateway.tls.acme", "cannot be combined with gateway.tls.certFile/keyFile: remove certFile and keyFile to have certificates obtained automatically, or remove acme to serve your own files");
            }
            return None;
        }
        for (v, path, what) in [(cert, "gateway.tls.certFile", "certificate chain"), (key, "gateway.tls.keyFile", "private key")] {
            match v {
                None => p.add(path, format!("missing; HTTPS needs both certFile and keyFile: set it to the PEM {what} file, set gateway.tls.acme to obtain one automatically, or remove gateway.tls to serve plain HTTP")),
                Some(f) => {
                    if let Err(e) = std::fs::metadata(f) {
                        p.add(path, format!("cannot read {f:?}: {e}; point it at the PEM {what} file"));
                    }
                }
            }
        }
        Some(TlsFiles {
            cert_file: PathBuf::from(cert?),
            key_file: PathBuf::from(key?),
        })
    });
    let state_dir = match take(&g.state_dir, "gateway.stateDir", "a directory path", p) {
        Some(s) => PathBuf::from(s),
        None => env
            .get("STATE_DIRECTORY")
            .and_then(|s| s.split(':').next())
            .map_or_else(|| PathBuf::from("/var/lib/smsgate"), PathBuf::from),
    };
    if !state_dir.is_absolute() {
        p.add(
            "gateway.stateDir",
            format!(
                "{:?} is relative; use an absolute path such as /var/lib/smsgate",
                state_dir.display().to_string()
            ),
        );
    } else if env.probe_state_dir && !env.tolerate_unresolved_secrets {
        if let Some(problem) = super::checks::state_dir_problem(&state_dir) {
            p.add("gateway.stateDir", problem);
        }
    }
    let socket = |f: &Option<Field<String>>, key: &str, name: &str, p: &mut Problems| -> PathBuf {
        let path = format!("gateway.{key}");
        let sock =
            take(f, &path, "a file path", p).map_or_else(|| state_dir.join(name), PathBuf::from);
        if sock.as_os_str().len() > MAX_SOCKET_PATH {
            p.add(path, format!("{} is {} bytes long; Unix socket paths allow at most {MAX_SOCKET_PATH}: choose a shorter path", sock.display(), sock.as_os_str().len()));
        }
        sock
    };
    let agent_socket = socket(&g.agent_socket, "agentSocket", "agent.sock", p);
    let admin_socket = socket(&g.admin_socket, "adminSocket", "admin.sock", p);
    if agent_socket == admin_socket {
        p.add(
            "gateway.adminSocket",
            "is the same path as gateway.agentSocket; give each socket its own path",
        );
    }
    let max_connections = match take(
        &g.max_connections,
        "gateway.maxConnections",
        "a whole number",
        p,
    ) {
        None => 1024,
        Some(&0) => {
            p.add("gateway.maxConnections", "must be at least 1");
            1
        }
        Some(&n) => n as usize,
    };
    let mut trusted = Vec::new();
    if let Some(list) = take(
        &g.trusted_proxies,
        "gateway.trustedProxies",
        "a list of IP addresses or CIDRs",
        p,
    ) {
        for (i, entry) in list.iter().enumerate() {
            match crate::http::forwarded::parse_net(entry) {
                Ok(net) => trusted.push(net),
                Err(why) => p.add(format!("gateway.trustedProxies[{i}]"), why),
            }
        }
    }
    let trusted_proxies = crate::http::forwarded::TrustedProxies::new(trusted);
    let metrics_listen = take(&g.metrics_listen, "gateway.metricsListen", "a host:port string", p).and_then(|s| match parse_listen(s) {
        Some(addr) if addr.ip().is_loopback() => Some(addr),
        Some(_) => {
            p.add("gateway.metricsListen", format!("{s:?} is not a loopback address; metrics are served on localhost only, e.g. \"127.0.0.1:9464\""));
            None
        }
        None => {
            p.add("gateway.metricsListen", format!("{s:?} is not a host:port address; use e.g. \"127.0.0.1:9464\""));
            None
        }
    });
    let agent_queue_max_age = match take(&g.agent_queue_max_age, "gateway.agentQueueMaxAge", "a duration", p) {
        None => std::time::Duration::from_secs(7 * 24 * 3600),
        Some(v) => parse_duration(v).unwrap_or_else(|| {
            p.add("gateway.agentQueueMaxAge", format!("{v} is not a duration; write seconds as a number, or a string such as \"7d\", \"12h\", \"30m\""));
            std::time::Duration::from_secs(7 * 24 * 3600)
        }),
    };
    let default_log = Default::default();
    let log = g.log.as_ref().unwrap_or(&default_log);
    let level = take(&log.level, "gateway.log.level", "a string", p)
        .cloned()
        .unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        p.add(
            "gateway.log.level",
            format!("{level:?} is not a log level; use error, warn, info, debug or trace"),
        );
    }
    let format = match take(&log.format, "gateway.log.format", "a string", p).map(String::as_str) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add(
                "gateway.log.format",
                format!("{other:?} is not a log format; use \"text\" or \"json\""),
            );
            LogFormat::Text
        }
    };
    Some(Gateway {
        listen: listen?,
        tls,
        acme,
        state_dir,
        agent_socket,
        admin_socket,
        max_connections,
        trusted_proxies,
        metrics_listen,
        agent_queue_max_age,
        log: LogSettings { level, format },
    })
}

/// `604800`, `"7d"`, `"12h"`, `"30m"`, `"90s"`.
/// `gateway.tls.acme`.
fn acme(a: &RawAcme, p: &mut Problems) -> Option<AcmeSettings> {
    const P: &str = "gateway.tls.acme";
    let mut ok = true;
    let mut domains = Vec::new();
    match take(
        &a.domains,
        &format!("{P}.domains"),
        "a list of domain names",
        p,
    ) {
        None => {
            p.add(
                format!("{P}.domains"),
                "missing; list the names the certificate is for, e.g. [\"sms.example.com\"]",
            );
            ok = false;
        }
        Some(list) if list.is_empty() => {
            p.add(
                format!("{P}.domains"),
                "is empty; list the names the certificate is for, e.g. [\"sms.example.com\"]",
            );
            ok = false;
        }
        Some(list) => {
            for (i, d) in list.iter().enumerate() {
                let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
                if is_domain_name(&d) {
                    if !domains.contains(&d) {
                        domains.push(d);
                    }
                } else {
                    p.add(format!("{P}.domains[{i}]"), format!("{d:?} is not a domain name; use a fully qualified name such as \"sms.example.com\" (no wildcards, IP addresses, ports or URLs)"));
                    ok = false;
                }
            }
        }
    }
    let email = take(&a.email, &format!("{P}.email"), "an email address", p).cloned();
    if let Some(e) = &email {
        if !e.contains('@') || e.contains(char::is_whitespace) || e.starts_with("mailto:") {
            p.add(format!("{P}.email"), format!("{e:?} is not an email address; write e.g. \"you@example.com\" (the CA sends expiry warnings there)"));
            ok = false;
        }
    }
    let staging = take(&a.staging, &format!("{P}.staging"), "true or false", p).copied();
    let directory_url = match take(&a.directory_url, &format!("{P}.directoryUrl"), "a URL", p) {
        Some(u) => {
            if staging == Some(true) {
                p.add(
                    format!("{P}.staging"),
                    "cannot be combined with directoryUrl: remove one of them",
                );
                ok = false;
            }
            match Url::parse(u) {
                Ok(url) if url.scheme() == "https" => Some(url),
                _ => {
                    p.add(format!("{P}.directoryUrl"), format!("{u:?} is not an https:// URL; use the ACME directory URL, e.g. {LETSENCRYPT_STAGING:?}, or remove it for Let's Encrypt"));
                    ok = false;
                    None
                }
            }
        }
        None => Url::parse(if staging == Some(true) {
            LETSENCRYPT_STAGING
        } else {
            LETSENCRYPT_PRODUCTION
        })
        .ok(),
    };
    let http01_listen = match take(
        &a.http01_listen,
        &format!("{P}.http01Listen"),
        "a host:port string",
        p,
    ) {
        None => None,
        Some(s) => match parse_listen(s) {
            Some(addr) => Some(addr),
            None => {
                p.add(
                    format!("{P}.http01Listen"),
                    format!("{s:?} is not a host:port address; use e.g. \"0.0.0.0:80\""),
                );
                ok = false;
                None
            }
        },
    };
    let directory_ca_file = take(
        &a.directory_ca_file,
        &format!("{P}.directoryCaFile"),
        "a file path",
        p,
    )
    .map(PathBuf::from);
    if let Some(f) = &directory_ca_file {
        if let Err(e) = std::fs::metadata(f) {
            p.add(format!("{P}.directoryCaFile"), format!("cannot read {f:?}: {e}; point it at the PEM CA certificate of a test ACME server, or remove it"));
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(AcmeSettings {
        domains,
        email,
        directory_url: directory_url?,
        http01_listen,
        directory_ca_file,
    })
}

/// A DNS name a CA can issue for: dot-separated LDH labels, at least two.
fn is_domain_name(d: &str) -> bool {
    let labels: Vec<&str> = d.split('.').collect();
    d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

pub fn parse_duration(v: &Value) -> Option<std::time::Duration> {
    let secs = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let n: u64 = s[..split].parse().ok()?;
            let unit = match s[split..].trim() {
                "" | "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                _ => return None,
            };
            n.checked_mul(unit)?
        }
        _ => return None,
    };
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

fn parse_listen(s: &str) -> Option<SocketAddr> {
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

/// One layer of account settings, with how to name its keys in messages.
struct Layer<'a> {
    raw: &'a RawAccount,
    origin: Origin,
}

#[derive(Clone)]
enum Origin {
    Named(String),
    Top,
    Env,
}

fn env_name(key: &str, env: &Env) -> &'static str {
    match key {
        "accountSid" => "TWILIO_ACCOUNT_SID",
        "authToken" => "TWILIO_AUTH_TOKEN",
        "fromNumber" if env.get("TWILIO_PHONE_NUMBER").is_none() => "TWILIO_SMS_FROM",
        "fromNumber" => "TWILIO_PHONE_NUMBER",
        "messagingServiceSid" => "TWILIO_MESSAGING_SERVICE_SID",
        "publicWebhookUrl" => "SMS_PUBLIC_WEBHOOK_URL",
        "webhookPath" => "SMS_WEBHOOK_PATH",
        "allowFrom" => "SMS_ALLOWED_USERS",
        "textChunkLimit" => "SMS_TEXT_CHUNK_LIMIT",
        _ => "(environment)",
    }
}

struct Layers<'a> {
    layers: Vec<Layer<'a>>,
    env: &'a Env,
}

impl<'a> Layers<'a> {
    fn path(&self, origin: &Origin, key: &str) -> String {
        match origin {
            Origin::Named(id) => format!("{SMS}.accounts.{id}.{key}"),
            Origin::Top => format!("{SMS}.{key}"),
            Origin::Env => format!("environment variable {}", env_name(key, self.env)),
        }
    }

    /// The first layer that sets `key`, and the path to name it by.
    fn get<T: 'a>(
        &self,
        key: &str,
        f: impl Fn(&'a RawAccount) -> &'a Option<Field<T>>,
    ) -> (&'a Option<Field<T>>, String) {
        for layer in &self.layers {
            let v = f(layer.raw);
            if v.is_some() {
                return (v, self.path(&layer.origin, key));
            }
        }
        let first = self
            .layers
            .first()
            .map_or(Origin::Top, |l| l.origin.clone());
        (&None, self.path(&first, key))
    }
}

/// The environment's fallbacks for the `default` account, as a raw layer.
fn env_layer(env: &Env) -> RawAccount {
    let s = |name: &str| env.get(name).map(|v| Field::Ok(v.trim().to_string()));
    RawAccount {
        account_sid: s("TWILIO_ACCOUNT_SID"),
        auth_token: env
            .get("TWILIO_AUTH_TOKEN")
            .map(|v| Field::Ok(SecretInput::Plain(v.to_string()))),
        from_number: s("TWILIO_PHONE_NUMBER").or_else(|| s("TWILIO_SMS_FROM")),
        messaging_service_sid: s("TWILIO_MESSAGING_SERVICE_SID"),
        public_webhook_url: s("SMS_PUBLIC_WEBHOOK_URL"),
        webhook_path: s("SMS_WEBHOOK_PATH"),
        allow_from: env.get("SMS_ALLOWED_USERS").map(|v| {
            Field::Ok(
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect(),
            )
        }),
        text_chunk_limit: env
            .get("SMS_TEXT_CHUNK_LIMIT")
            .map(|v| match v.trim().parse() {
                Ok(n) => Field::Ok(n),
                Err(_) => Field::Invalid(Value::String(v.to_string())),
            }),
        ..Default::default()
    }
}

fn sms_channel(raw: &RawConfig, env: &Env, p: &mut Problems) -> SmsChannel {
    let empty = RawAccount::default();
    let top = raw
        .channels
        .as_ref()
        .and_then(|c| c.sms.as_ref())
        .unwrap_or(&empty);
    let env_raw = env_layer(env);
    let enabled = take(&top.enabled, "channels.sms.enabled", "true or false", p)
        .copied()
        .unwrap_or(true);

    let named = top.accounts.clone().unwrap_or_default();
    let has_sender =
        |r: &RawAccount| !is_unset(&r.from_number) || !is_unset(&r.messaging_service_sid);
    let mut ids: Vec<String> = Vec::new();
    if has_sender(top) || has_sender(&env_raw) || named.contains_key("default") {
        ids.push("default".into());
    }
    for id in named.keys() {
        if id != "default" {
            ids.push(id.clone());
        }
        let valid_id = !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            p.add(
                format!("{SMS}.accounts.{id}"),
                "account ids use letters, digits, - and _ only; rename it",
            );
        }
    }

    let mut accounts = Vec::new();
    let mut inactive = Vec::new();
    let mut unusable = Vec::new();
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    let mut unique: BTreeMap<String, (String, String)> = BTreeMap::new();
    for id in &ids {
        let mut layers = Vec::new();
        if let Some(r) = named.get(id) {
            for (key, set) in [
                ("accounts", r.accounts.is_some()),
                ("defaultAccount", r.default_account.is_some()),
            ] {
                if set {
                    p.add(
                        format!("{SMS}.accounts.{id}.{key}"),
                        format!("only allowed directly under {SMS}; move it there"),
                    );
                }
            }
            layers.push(Layer {
                raw: r,
                origin: Origin::Named(id.clone()),
            });
        }
        layers.push(Layer {
            raw: top,
            origin: Origin::Top,
        });
        if id == "default" {
            layers.push(Layer {
                raw: &env_raw,
                origin: Origin::Env,
            });
        }
        let layers = Layers { layers, env };
        match account(id, &layers, p) {
            Resolved::Usable(a) => {
                check_path(&mut paths, id, &a.webhook_path, &layers, p);
                check_unique(&mut unique, &a, &layers, p);
                accounts.push(*a);
            }
            Resolved::Inactive(a, why) => {
                check_path(&mut paths, id, &a.webhook_path, &layers, p);
                let path = if named.contains_key(id) {
                    format!("{SMS}.accounts.{id}")
                } else {
                    SMS.to_string()
                };
                unusable.push((path, why));
                inactive.push(a);
            }
        }
    }
    // A config that validates must be able to send (CONTRACT §11); commands that never
    // send (pairing, status) still load one that cannot, to say why.
    if !env.tolerate_unresolved_secrets {
        let top_missing = top_level_missing(top, &env_raw);
        for (path, message) in
            super::checks::cannot_send(enabled, accounts.len(), &unusable, &top_missing)
        {
            p.add(path, message);
        }
    }

    let default_account = match take(
        &top.default_account,
        "channels.sms.defaultAccount",
        "an account id",
        p,
    ) {
        Some(id) => {
            if !ids.contains(id) {
                p.add(
                    "channels.sms.defaultAccount",
                    format!(
                        "names {id:?}, which is not an account; use one of: {}",
                        ids.join(", ")
                    ),
                );
            }
            Some(id.clone())
        }
        None => accounts
            .iter()
            .find(|a| a.id == "default")
            .or_else(|| accounts.first())
            .map(|a| a.id.clone()),
    };
    if !enabled {
        inactive.extend(accounts.drain(..).map(|a| InactiveAccount {
            id: a.id,
            webhook_path: a.webhook_path,
            reason: "channels.sms.enabled is false".into(),
        }));
    }
    SmsChannel {
        enabled,
        accounts,
        inactive,
        default_account,
    }
}

fn check_path(
    paths: &mut BTreeMap<String, String>,
    id: &str,
    path: &str,
    layers: &Layers,
    p: &mut Problems,
) {
    if let Some(other) = paths.insert(path.to_string(), id.to_string()) {
        let (_, key_path) = layers.get("webhookPath", |r| &r.webhook_path);
        let key_path = if key_path.contains(".accounts.") {
            key_path
        } else {
            format!("{SMS}.accounts.{id}.webhookPath")
        };
        p.add(key_path, format!("{path:?} is also the webhook path of account {other:?}; every account needs its own, e.g. \"/webhooks/sms/{id}\""));
    }
}

/// Two usable accounts may not share a sender or a public webhook URL: with one URL
/// (and one token) a webhook signed for one account's path passes on the other's, under
/// the other's policy. Both key paths are named; the values are not (they are phone
/// numbers, which error messages that reach the log must not carry).
fn check_unique(
    seen: &mut BTreeMap<String, (String, String)>,
    a: &Account,
    layers: &Layers,
    p: &mut Problems,
) {
    let own_path = |key: &str, from: String| {
        if from.contains(".accounts.") || a.id == "default" {
            from
        } else {
            // Inherited from the top level: the fix goes into this account.
            format!("{SMS}.accounts.{}.{key}", a.id)
        }
    };
    let (key, what, value) = match &a.sender {
        Sender::Number(n) => ("fromNumber", "sender number", format!("number {n}")),
        Sender::MessagingService(mg) => (
            "messagingServiceSid",
            "Messaging Service",
            format!("service {mg}"),
        ),
    };
    let from = match key {
        "fromNumber" => layers.get(key, |r| &r.from_number).1,
        _ => layers.get(key, |r| &r.messaging_service_sid).1,
    };
    let mut entries = vec![(value, own_path(key, from), what, key)];
    if let Some(url) = a.public_url() {
        let mut u = url.parsed.clone();
        u.set_fragment(None);
        let from = layers.get("publicWebhookUrl", |r| &r.public_webhook_url).1;
        entries.push((
            format!("url {u}"),
            own_path("publicWebhookUrl", from),
            "publicWebhookUrl",
            "publicWebhookUrl",
        ));
    }
    for (value, path, what, key) in entries {
        match seen.get(&value) {
            Some((other, other_path)) => p.add(
                path.clone(),
                format!("is the same {what} as account {other:?} has ({other_path}); two accounts cannot share one, or a webhook for one would be accepted as the other's: give account {:?} its own {key}", a.id),
            ),
            None => {
                seen.insert(value, (a.id.clone(), path));
            }
        }
    }
}

enum Resolved {
    Usable(Box<Account>),
    Inactive(InactiveAccount, super::checks::Unusable),
}

/// The sending keys that neither the top level of `channels.sms` nor the environment
/// sets (for the message when no account exists at all).
fn top_level_missing(top: &RawAccount, env_raw: &RawAccount) -> Vec<&'static str> {
    let unset = |f: fn(&RawAccount) -> bool| f(top) && f(env_raw);
    let mut missing = Vec::new();
    if unset(|r| is_unset(&r.account_sid)) {
        missing.push("accountSid");
    }
    if unset(|r| is_unset(&r.auth_token)) {
        missing.push("authToken");
    }
    if unset(|r| is_unset(&r.from_number) && is_unset(&r.messaging_service_sid)) {
        missing.push("fromNumber or messagingServiceSid");
    }
    let unsigned = matches!(
        top.dangerously_disable_signature_validation,
        Some(Field::Ok(true))
    );
    if !unsigned && unset(|r| is_unset(&r.public_webhook_url)) {
        missing.push("publicWebhookUrl");
    }
    missing
}

fn account(id: &str, l: &Layers, p: &mut Problems) -> Resolved {
    let (f, path) = l.get("enabled", |r| &r.enabled);
    let enabled = take(f, &path, "true or false", p).copied().unwrap_or(true);

    let (f, path) = l.get("webhookPath", |r| &r.webhook_path);
    let webhook_path = match take(f, &path, "a path string", p) {
        None => "/webhooks/sms".to_string(),
        Some(s) => {
            let s = s.trim();
            let norm = if s.starts_with('/') {
                s.to_string()
            } else {
                format!("/{s}")
            };
            if norm.len() < 2 || norm.contains(['?', '#', ' ']) {
                p.add(
                    &path,
                    format!("{s:?} is not a URL path; use e.g. \"/webhooks/sms\""),
                );
            } else if RESERVED_PATHS.contains(&norm.as_str()) {
                p.add(
                    &path,
                    format!(
                        "{norm:?} is reserved for the daemon's own endpoints; choose another path"
                    ),
                );
            }
            norm
        }
    };

    let (f, sid_path) = l.get("accountSid", |r| &r.account_sid);
    let account_sid = take(f, &sid_path, "a string starting with AC", p).and_then(|s| {
        if s.starts_with("AC") && s.len() == 34 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
            Some(s.clone())
        } else {
            p.add(&sid_path, "is not an Account SID; copy it from the Twilio Console: AC followed by 32 characters");
            None
        }
    });

    let (f, token_path) = l.get("authToken", |r| &r.auth_token);
    let auth_token = take(
        f,
        &token_path,
        "a string or a SecretRef { source: \"env\" | \"file\", provider: \"default\", id: \"…\" }",
        p,
    )
    .and_then(|s| resolve_secret(s, &token_path, l.env, p));

    let (f, path) = l.get("previousAuthTokens", |r| &r.previous_auth_tokens);
    let previous_auth_tokens: Vec<Secret> = take(f, &path, "a list of strings or SecretRefs", p)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| resolve_secret(s, &format!("{path}[{i}]"), l.env, p))
        .collect();
    let (f, path) = l.get("webhookSigningKeys", |r| &r.webhook_signing_keys);
    let webhook_signing_keys: std::collections::BTreeMap<String, Secret> = take(
        f,
        &path,
        "an object of key id → secret (string or SecretRef)",
        p,
    )
    .into_iter()
    .flatten()
    .filter_map(|(id, s)| {
        resolve_secret(s, &format!("{path}.{id}"), l.env, p).map(|s| (id.clone(), s))
    })
    .collect();
    let (f, path) = l.get("fromNumber", |r| &r.from_number);
    let from =
        take(f, &path, "an E.164 phone number string", p).and_then(|s| match E164::parse(s) {
            Ok(n) => Some(n),
            Err(e) => {
                p.add(&path, e.to_string());
                None
            }
        });
    let (f, path) = l.get("messagingServiceSid", |r| &r.messaging_service_sid);
    let service = take(f, &path, "a string starting with MG", p).and_then(|s| {
        if s.starts_with("MG") && s.len() == 34 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
            Some(s.clone())
        } else {
            p.add(&path, "is not a Messaging Service SID; copy it from the Twilio Console: MG followed by 32 characters");
            None
        }
    });
    let sender = match (from, service) {
        (Some(n), _) => Some(Sender::Number(n)),
        (None, Some(s)) => Some(Sender::MessagingService(s)),
        (None, None) => None,
    };

    let (f, url_path) = l.get("publicWebhookUrl", |r| &r.public_webhook_url);
    let public_url = take(f, &url_path, "an absolute https URL string", p)
        .and_then(|s| public_url(s, &url_path, p));
    let (f, path) = l.get("dangerouslyDisableSignatureValidation", |r| {
        &r.dangerously_disable_signature_validation
    });
    let unsigned = take(f, &path, "true or false", p).copied().unwrap_or(false);

    let (f, policy_path) = l.get("dmPolicy", |r| &r.dm_policy);
    let dm_policy = match take(f, &policy_path, "a policy name", p).map(String::as_str) {
        None | Some("pairing") => DmPolicy::Pairing,
        Some("allowlist") => DmPolicy::Allowlist,
        Some("open") => DmPolicy::Open,
        Some("disabled") => DmPolicy::Disabled,
        Some(other) => {
            p.add(&policy_path, format!("{other:?} is not a policy; use \"pairing\", \"allowlist\", \"open\" or \"disabled\""));
            DmPolicy::Pairing
        }
    };
    let (f, allow_path) = l.get("allowFrom", |r| &r.allow_from);
    let mut allow_from = AllowFrom::default();
    for (i, entry) in take(f, &allow_path, "a list of phone numbers", p)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if entry.trim() == "*" {
            allow_from.anyone = true;
        } else {
            match E164::parse(entry) {
                Ok(n) => {
                    allow_from.numbers.insert(n);
                }
                Err(e) => p.add(
                    format!("{allow_path}[{i}]"),
                    format!("{e}, or \"*\" for anyone"),
                ),
            }
        }
    }
    match dm_policy {
        DmPolicy::Allowlist if !allow_from.anyone && allow_from.numbers.is_empty() => p.add(
            &allow_path,
            "dmPolicy \"allowlist\" needs at least one number here; add the numbers that may text the agent, e.g. [\"+15557654321\"]",
        ),
        DmPolicy::Open if !allow_from.anyone => p.add(
            &allow_path,
            "dmPolicy \"open\" needs \"*\" here, to show that anyone may text the agent; add \"*\" or use dmPolicy \"pairing\"",
        ),
        _ => {}
    }

    let (f, path) = l.get("defaultTo", |r| &r.default_to);
    let default_to =
        take(f, &path, "an E.164 phone number string", p).and_then(|s| match E164::parse(s) {
            Ok(n) => Some(n),
            Err(e) => {
                p.add(&path, e.to_string());
                None
            }
        });
    let (f, path) = l.get("textChunkLimit", |r| &r.text_chunk_limit);
    let text_chunk_limit = match take(f, &path, "a whole number from 1 to 1600", p) {
        None => 1500,
        Some(&n) if (1..=1600).contains(&n) => n as usize,
        Some(&n) => {
            p.add(&path, format!("{n} is out of range; Twilio takes at most 1600 characters per message: use 1 to 1600 (default 1500)"));
            1500
        }
    };
    let (f, path) = l.get("language", |r| &r.language);
    let language = match take(f, &path, "a language code string", p) {
        None => crate::texts::Language::default(),
        Some(s) => crate::texts::Language::parse(s.trim()).unwrap_or_else(|| {
            p.add(
                &path,
                format!("{s:?} has no built-in texts; use \"en\", \"hi\", \"zh\", \"ja\" or \"ko\" (or write your own under texts)"),
            );
            crate::texts::Language::default()
        }),
    };
    let (f, texts_path) = l.get("texts", |r| &r.texts);
    let mut texts = crate::texts::Texts {
        language,
        ..Default::default()
    };
    for (key, template) in take(f, &texts_path, "an object of texts", p)
        .into_iter()
        .flatten()
    {
        let path = format!("{texts_path}.{key}");
        let Some(kind) = crate::texts::Kind::ALL.into_iter().find(|k| k.key() == key) else {
            p.add(
                &path,
                "unknown text; the texts are pairingCode, approved and newConversation",
            );
            continue;
        };
        if let Err(e) = crate::texts::validate(kind, template) {
            p.add(&path, e);
            continue;
        }
        let slot = match kind {
            crate::texts::Kind::PairingCode => &mut texts.pairing_code,
            crate::texts::Kind::Approved => &mut texts.approved,
            crate::texts::Kind::NewConversation => &mut texts.new_conversation,
        };
        *slot = Some(template.clone());
    }
    let (f, limits_path) = l.get("outboundLimits", |r| &r.outbound_limits);
    let mut outbound_limits = crate::limits::OutboundLimits::default();
    let mut max_held = crate::outbound::held::DEFAULT_MAX_HELD;
    for (key, v) in take(f, &limits_path, "an object of limits", p)
        .into_iter()
        .flatten()
    {
        let path = format!("{limits_path}.{key}");
        if key == "maxHeld" {
            match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => max_held = n,
                None => p.add(
                    &path,
                    format!(
                        "expected a whole number of held sends, 0 or more (0 = no cap), found {}",
                        describe(v)
                    ),
                ),
            }
            continue;
        }
        let slot = match key.as_str() {
            "perHour" => &mut outbound_limits.per_hour,
            "perDay" => &mut outbound_limits.per_day,
            "perRecipientPerHour" => &mut outbound_limits.per_recipient_per_hour,
            _ => {
                p.add(&path, "unknown limit; the limits are perHour, perDay and perRecipientPerHour (SMS segments, 0 = no limit), and maxHeld (held sends, 0 = no cap)");
                continue;
            }
        };
        match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => *slot = n,
            None => p.add(
                &path,
                format!(
                    "expected a whole number of SMS segments, 0 or more (0 = no limit), found {}",
                    describe(v)
                ),
            ),
        }
    }
    let (f, inbound_path) = l.get("inboundLimits", |r| &r.inbound_limits);
    let mut inbound_per_sender_per_minute = crate::limits::DEFAULT_INBOUND_PER_MINUTE;
    for (key, v) in take(f, &inbound_path, "an object of limits", p)
        .into_iter()
        .flatten()
    {
        let path = format!("{inbound_path}.{key}");
        if key != "perSenderPerMinute" {
            p.add(
                &path,
                "unknown limit; the inbound limit is perSenderPerMinute (0 = no limit)",
            );
            continue;
        }
        match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => inbound_per_sender_per_minute = n,
            None => p.add(
                &path,
                format!(
                    "expected a whole number of texts a minute, 0 or more (0 = no limit), found {}",
                    describe(v)
                ),
            ),
        }
    }
    let (f, path) = l.get("releaseHeld", |r| &r.release_held);
    let release_held_auto = match take(f, &path, "\"manual\" or \"auto\"", p).map(String::as_str) {
        None | Some("manual") => false,
        Some("auto") => true,
        Some(other) => {
            p.add(&path, format!("{other:?} is not a release mode; use \"manual\" (smsgate queue release) or \"auto\" (when the window allows)"));
            false
        }
    };
    let base_url = |key: &str,
                    default: &str,
                    f: &Option<Field<String>>,
                    path: String,
                    p: &mut Problems|
     -> Url {
        let fallback = || Url::parse(default).ok();
        let parsed = take(f, &path, "an http(s) URL string", p).and_then(|s| match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
            _ => {
                p.add(
                    &path,
                    format!("{s:?} is not an http(s) URL; use e.g. {default:?} ({key})"),
                );
                None
            }
        });
        // Both defaults are constant, valid URLs (documented invariant).
        #[allow(clippy::expect_used)]
        parsed.or_else(fallback).expect("default API URL parses")
    };
    let (f, path) = l.get("apiBaseUrl", |r| &r.api_base_url);
    let api_base_url = base_url("apiBaseUrl", "https://api.twilio.com", f, path, p);
    let (f, path) = l.get("messagingApiBaseUrl", |r| &r.messaging_api_base_url);
    let messaging_api_base_url = base_url(
        "messagingApiBaseUrl",
        "https://messaging.twilio.com",
        f,
        path,
        p,
    );

    use super::checks::Unusable;
    let inactive = |reason: String, why: Unusable| {
        Resolved::Inactive(
            InactiveAccount {
                id: id.to_string(),
                webhook_path: webhook_path.clone(),
                reason,
            },
            why,
        )
    };
    if !enabled {
        return inactive("enabled is false".into(), Unusable::Disabled);
    }
    let mut missing = Vec::new();
    if f_unset(l, |r| &r.account_sid) {
        missing.push("accountSid");
    }
    if f_unset(l, |r| &r.auth_token) {
        missing.push("authToken");
    }
    if f_unset(l, |r| &r.from_number) && f_unset(l, |r| &r.messaging_service_sid) {
        missing.push("fromNumber or messagingServiceSid");
    }
    // Named with the rest, so one run lists everything still to fill in.
    if !missing.is_empty() && !unsigned && f_unset(l, |r| &r.public_webhook_url) {
        missing.push("publicWebhookUrl");
    }
    if !missing.is_empty() {
        return inactive(
            format!("missing {}", missing.join(", ")),
            Unusable::Missing(missing),
        );
    }
    let inbound = if unsigned {
        InboundCheck::Unsigned { url: public_url }
    } else {
        match public_url {
            Some(url) => InboundCheck::Signed { url },
            None => {
                if f_unset(l, |r| &r.public_webhook_url) {
                    p.add(&url_path, "missing; Twilio's signature covers the exact URL it calls, so set it to that URL, e.g. \"https://sms.example.com/webhooks/sms\"");
                }
                return inactive(
                    "publicWebhookUrl is missing or invalid".into(),
                    Unusable::Invalid,
                );
            }
        }
    };
    match (account_sid, auth_token, sender) {
        (Some(account_sid), Some(auth_token), Some(sender)) => {
            Resolved::Usable(Box::new(Account {
                id: id.to_string(),
                account_sid,
                auth_token,
                previous_auth_tokens,
                webhook_signing_keys,
                sender,
                webhook_path,
                inbound,
                dm_policy,
                allow_from,
                default_to,
                text_chunk_limit,
                texts,
                outbound_limits,
                max_held,
                release_held_auto,
                inbound_per_sender_per_minute,
                api_base_url,
                messaging_api_base_url,
            }))
        }
        // Set but invalid: the problem is already recorded.
        _ => inactive("invalid credentials or sender".into(), Unusable::Invalid),
    }
}

fn f_unset<'a, T: 'a>(l: &Layers<'a>, f: impl Fn(&'a RawAccount) -> &'a Option<Field<T>>) -> bool {
    is_unset(l.get("", f).0)
}

fn public_url(s: &str, path: &str, p: &mut Problems) -> Option<PublicUrl> {
    match Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
            if !u.username().is_empty() || u.password().is_some() {
                p.add(path, "must not contain credentials (user:password@); Twilio's signature already authenticates it: remove them");
                return None;
            }
            Some(PublicUrl {
                raw: s.trim().to_string(),
                parsed: u,
            })
        }
        _ => {
            p.add(path, format!("{s:?} is not an absolute http(s) URL; use the exact URL Twilio calls, e.g. \"https://sms.example.com/webhooks/sms\""));
            None
        }
    }
}

/// Resolves `authToken` (and other secrets): a literal, or an `env`/`file` reference.
fn resolve_secret(input: &SecretInput, path: &str, env: &Env, p: &mut Problems) -> Option<Secret> {
    if env.tolerate_unresolved_secrets {
        let mut quiet = Problems::default();
        return Some(
            resolve_secret_strict(input, path, env, &mut quiet).unwrap_or_else(|| Secret::new("")),
        );
    }
    resolve_secret_strict(input, path, env, p)
}

/// Every resolved secret is remembered, so later messages never show it.
fn remembered(secret: Secret) -> Secret {
    super::redact::remember(&secret);
    secret
}

fn resolve_secret_strict(
    input: &SecretInput,
    path: &str,
    env: &Env,
    p: &mut Problems,
) -> Option<Secret> {
    let r: &SecretRef = match input {
        SecretInput::Plain(s) if s.is_empty() => {
            p.add(path, "is empty; set the auth token from the Twilio Console");
            return None;
        }
        SecretInput::Plain(s) => return Some(remembered(Secret::new(s.clone()))),
        SecretInput::Ref(r) => r,
    };
    if let Some(provider) = &r.provider {
        if provider != "default" {
            p.add(
                format!("{path}.provider"),
                format!("{provider:?} is not a secret provider; use \"default\""),
            );
            return None;
        }
    }
    match r.source.as_str() {
        "env" => match env.get(&r.id) {
            Some(v) => Some(remembered(Secret::new(v))),
            None => {
                p.add(path, format!("SecretRef {{ source: \"env\", id: {:?} }} is unresolved: the environment variable is not set; set it or change the ref", r.id));
                None
            }
        },
        "file" => {
            let file = Path::new(&r.id);
            let full = if file.is_absolute() {
                file.to_path_buf()
            } else {
                match env.get("CREDENTIALS_DIRECTORY") {
                    Some(dir) => Path::new(dir).join(file),
                    None => {
                        p.add(path, format!("SecretRef {{ source: \"file\", id: {:?} }} is relative but $CREDENTIALS_DIRECTORY is not set; use an absolute path, or LoadCredential= in the systemd unit", r.id));
                        return None;
                    }
                }
            };
            // A token is 32 characters; a cap keeps `id: "/dev/zero"` from eating memory.
            let read = super::read_capped(&full, 64 * 1024).map_err(|e| match e {
                super::CappedReadError::Io(e) => e,
                super::CappedReadError::TooLarge => std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "it is larger than 64 KiB, too large for a secret",
                ),
            });
            match read {
                Ok(s) => {
                    let s = s.strip_suffix('\n').unwrap_or(&s);
                    let s = s.strip_suffix('\r').unwrap_or(s);
                    if s.is_empty() {
                        p.add(
                            path,
                            format!(
                                "SecretRef file {} is empty; put the auth token in it",
                                full.display()
                            ),
                        );
                        None
                    } else {
                        Some(remembered(Secret::new(s)))
                    }
                }
                Err(e) => {
                    p.add(path, format!("SecretRef {{ source: \"file\", id: {:?} }} is unresolved: cannot read {}: {e}", r.id, full.display()));
                    None
                }
            }
        }
        other => {
            p.add(
                format!("{path}.source"),
                format!("{other:?} is not a secret source; use \"env\" or \"file\""),
            );
            None
        }
    }
}

#[cfg(test)]
mod acme_tests {
    use super::*;
    use serde_json::json;

    fn check(tls: Value) -> Result<Option<AcmeSettings>, Vec<Problem>> {
        // No SMS account: only the gateway is under test.
        let config = json!({ "gateway": { "stateDir": "/var/lib/smsgate", "tls": tls },
            "channels": { "sms": { "enabled": false } } });
        validate_value(&config, &Env::default())
            .map(|c| c.gateway.acme)
            .map_err(|e| e.0)
    }

    fn paths(r: Result<Option<AcmeSettings>, Vec<Problem>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn acme_defaults_to_lets_encrypt_production() {
        let a =
            check(json!({"acme": {"domains": ["SMS.example.com."], "email": "you@example.com"}}))
                .unwrap()
                .unwrap();
        assert_eq!(a.domains, vec!["sms.example.com"]);
        assert_eq!(a.directory_url.as_str(), LETSENCRYPT_PRODUCTION);
        assert_eq!(a.email.as_deref(), Some("you@example.com"));
        assert_eq!(a.http01_listen, None);
        let a = check(json!({"acme": {"domains": ["a.example.com"], "staging": true, "http01Listen": "0.0.0.0:80"}}))
            .unwrap()
            .unwrap();
        assert_eq!(a.directory_url.as_str(), LETSENCRYPT_STAGING);
        assert_eq!(a.http01_listen, Some(SocketAddr::from(([0, 0, 0, 0], 80))));
    }

    #[test]
    fn bad_acme_settings_name_their_keys() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"acme": {}}), vec!["gateway.tls.acme.domains"]),
            (
                json!({"acme": {"domains": []}}),
                vec!["gateway.tls.acme.domains"],
            ),
            (
                json!({"acme": {"domains": ["*.example.com", "1.2.3.4", "ok.example.com"]}}),
                vec!["gateway.tls.acme.domains[0]", "gateway.tls.acme.domains[1]"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "email": "nope"}}),
                vec!["gateway.tls.acme.email"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "directoryUrl": "http://ca.test/dir"}}),
                vec!["gateway.tls.acme.directoryUrl"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "directoryUrl": "https://ca.test/dir", "staging": true}}),
                vec!["gateway.tls.acme.staging"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "http01Listen": "port 80"}}),
                vec!["gateway.tls.acme.http01Listen"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"], "directoryCaFile": "/nonexistent/ca.pem"}}),
                vec!["gateway.tls.acme.directoryCaFile"],
            ),
            (
                json!({"acme": {"domains": ["a.example.com"]}, "certFile": "/etc/ssl/c.pem", "keyFile": "/etc/ssl/k.pem"}),
                vec!["gateway.tls.acme"],
            ),
        ];
        for (tls, want) in cases {
            assert_eq!(paths(check(tls.clone())), want, "{tls}");
        }
        let both = check(json!({"acme": {"domains": ["a.example.com"]}, "certFile": "/c.pem"}))
            .unwrap_err();
        assert!(
            both[0].message.contains("remove certFile and keyFile"),
            "{both:?}"
        );
    }
}

#[cfg(test)]
mod account_tests {
    use super::*;
    use serde_json::json;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";

    fn sms(sms: Value) -> Result<Config, Vec<Problem>> {
        let config =
            json!({ "gateway": { "stateDir": "/var/lib/smsgate" }, "channels": { "sms": sms } });
        validate_value(&config, &Env::default()).map_err(|e| e.0)
    }

    fn base() -> serde_json::Map<String, Value> {
        json!({
            "accountSid": AC, "authToken": "tok", "fromNumber": "+15550001111",
            "publicWebhookUrl": "https://sms.example.com/webhooks/sms",
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    fn with_accounts(accounts: Value) -> Value {
        let mut top = base();
        top.insert("accounts".into(), accounts);
        Value::Object(top)
    }

    /// Issue 9, finding 9: `null` in a named account is "unset": it does not inherit.
    #[test]
    fn null_means_unset_and_stops_inheritance() {
        let c = sms(with_accounts(json!({"mg": {
            "fromNumber": null, "messagingServiceSid": MG,
            "webhookPath": "/webhooks/mg", "publicWebhookUrl": "https://sms.example.com/webhooks/mg",
        }})))
        .unwrap();
        let mg = c.sms.account("mg").unwrap();
        assert_eq!(mg.sender, Sender::MessagingService(MG.into()));
        // Without a sender of its own, the account cannot send (nothing inherited): an
        // error naming the key (CONTRACT §11); a lenient load shows it as inactive.
        let x = with_accounts(json!({"x": {
            "fromNumber": null, "webhookPath": "/webhooks/x",
            "publicWebhookUrl": "https://sms.example.com/webhooks/x",
        }}));
        let e = sms(x.clone()).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "channels.sms.accounts.x");
        assert!(e[0].message.contains("fromNumber"), "{e:?}");
        let c = lenient(x).unwrap();
        assert!(c.sms.account("x").is_none());
        assert!(c
            .sms
            .inactive
            .iter()
            .any(|a| a.id == "x" && a.reason.contains("fromNumber")));
        // null elsewhere is the default, never "expected …, found null".
        let mut top = base();
        for k in [
            "dmPolicy",
            "allowFrom",
            "textChunkLimit",
            "defaultTo",
            "enabled",
            "webhookPath",
        ] {
            top.insert(k.into(), Value::Null);
        }
        let c = sms(Value::Object(top)).unwrap();
        let a = c.sms.account("default").unwrap();
        assert_eq!(a.dm_policy, DmPolicy::Pairing);
        assert_eq!(a.text_chunk_limit, 1500);
        assert_eq!(a.webhook_path, "/webhooks/sms");
        // A top-level null sender means there is no default account, so no account.
        let mut top = base();
        top.insert("fromNumber".into(), Value::Null);
        let e = sms(Value::Object(top.clone())).unwrap_err();
        assert_eq!(e[0].path, "channels.sms");
        assert!(
            e[0].message
                .contains("missing fromNumber or messagingServiceSid"),
            "{e:?}"
        );
        assert!(lenient(Value::Object(top)).unwrap().sms.accounts.is_empty());
    }

    fn lenient(sms: Value) -> Result<Config, Vec<Problem>> {
        let config =
            json!({ "gateway": { "stateDir": "/var/lib/smsgate" }, "channels": { "sms": sms } });
        let env = Env {
            tolerate_unresolved_secrets: true,
            ..Env::default()
        };
        validate_value(&config, &env).map_err(|e| e.0)
    }

    /// Issue 24 item 3, issue 20 item 11: a config that cannot send does not validate;
    /// each error names the account's key path and the keys it lacks.
    #[test]
    fn a_config_that_cannot_send_is_an_error() {
        let without = |keys: &[&str]| {
            let mut top = base();
            for k in keys {
                top.insert((*k).into(), Value::Null);
            }
            Value::Object(top)
        };
        let cases: Vec<(Value, Option<(&str, &str)>)> = vec![
            (without(&[]), None),
            (
                without(&["authToken"]),
                Some(("channels.sms", "missing authToken")),
            ),
            (
                without(&["accountSid", "authToken"]),
                Some(("channels.sms", "missing accountSid, authToken")),
            ),
            (
                without(&["fromNumber"]),
                Some(("channels.sms", "missing fromNumber or messagingServiceSid")),
            ),
            (
                json!({}),
                Some((
                    "channels.sms",
                    "missing accountSid, authToken, fromNumber or messagingServiceSid",
                )),
            ),
            (json!({"enabled": false}), None),
            (json!({"enabled": false, "accountSid": AC}), None),
            (
                with_accounts(
                    json!({"b": {"authToken": null, "fromNumber": "+15550002222",
                    "webhookPath": "/webhooks/b", "publicWebhookUrl": "https://sms.example.com/webhooks/b"}}),
                ),
                Some(("channels.sms.accounts.b", "missing authToken")),
            ),
            (
                with_accounts(
                    json!({"b": {"enabled": false, "authToken": null, "webhookPath": "/webhooks/b"}}),
                ),
                None,
            ),
            (
                with_accounts(json!({"default": {"enabled": false}})),
                Some(("channels.sms", "every account has enabled: false")),
            ),
        ];
        for (sms_value, want) in cases {
            match (sms(sms_value.clone()), want) {
                (Ok(_), None) => {}
                (Err(e), Some((path, needle))) => {
                    assert_eq!(e.len(), 1, "{sms_value}: {e:?}");
                    assert_eq!(e[0].path, path, "{sms_value}");
                    assert!(e[0].message.contains(needle), "{sms_value}: {e:?}");
                    assert!(!e[0].message.contains("tok"), "no token: {e:?}");
                    // Commands that never send still load it.
                    assert!(lenient(sms_value.clone()).is_ok(), "{sms_value}");
                }
                (got, want) => panic!("{sms_value}: {got:?}, wanted {want:?}"),
            }
        }
    }

    /// Issue 24 item 3: a misspelt key names the nearest key valid at its level.
    #[test]
    fn unknown_keys_suggest_the_nearest_known_key() {
        let mut top = base();
        top.insert("alowFrom".into(), json!(["+15557654321"]));
        top.insert(
            "accounts".into(),
            json!({"b": {"webhookpath": "/webhooks/b"}}),
        );
        top.insert("zzzz".into(), json!(1));
        let e = sms(Value::Object(top)).unwrap_err();
        let find = |path: &str| {
            e.iter()
                .find(|p| p.path == path)
                .map(|p| p.message.clone())
                .unwrap_or_else(|| panic!("{path} not in {e:?}"))
        };
        assert!(find("channels.sms.alowFrom").contains("did you mean `allowFrom`?"));
        assert!(find("channels.sms.accounts.b.webhookpath").contains("did you mean `webhookPath`?"));
        let m = find("channels.sms.zzzz");
        assert!(
            m.starts_with("unknown key") && !m.contains("did you mean"),
            "{m}"
        );
    }

    /// Issue 24 item 3: public URLs Twilio cannot use as written are warned about.
    #[test]
    fn public_url_problems_are_warnings() {
        let mut top = base();
        top.insert(
            "publicWebhookUrl".into(),
            json!("http://127.0.0.1:8789/webhooks/sms/"),
        );
        let c = sms(Value::Object(top)).unwrap();
        let w = c.warnings.join("\n");
        assert!(
            w.contains("loopback") && w.contains("is http") && w.contains("ends in `/`"),
            "{w}"
        );
        assert!(sms(Value::Object(base())).unwrap().warnings.is_empty());
    }

    /// Issue 9, finding 9: no two accounts share a sender or a public URL; both key
    /// paths are named.
    #[test]
    fn shared_senders_and_urls_are_refused() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (
                // Inherits the top level's number next to the default account.
                json!({"support": {"webhookPath": "/webhooks/support", "publicWebhookUrl": "https://sms.example.com/webhooks/support"}}),
                vec!["channels.sms.accounts.support.fromNumber"],
            ),
            (
                json!({"support": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/support"}}),
                vec!["channels.sms.accounts.support.publicWebhookUrl"],
            ),
            (
                // The same URL written with the default port is the same URL.
                json!({"support": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/support",
                    "publicWebhookUrl": "https://SMS.example.com:443/webhooks/sms#rc=2"}}),
                vec!["channels.sms.accounts.support.publicWebhookUrl"],
            ),
            (
                json!({
                    "a": {"fromNumber": null, "messagingServiceSid": MG, "webhookPath": "/a", "publicWebhookUrl": "https://sms.example.com/a"},
                    "b": {"fromNumber": null, "messagingServiceSid": MG, "webhookPath": "/b", "publicWebhookUrl": "https://sms.example.com/b"},
                }),
                vec!["channels.sms.accounts.b.messagingServiceSid"],
            ),
            (
                json!({"support": {"fromNumber": "+15550002222", "webhookPath": "/webhooks/support",
                    "publicWebhookUrl": "https://sms.example.com/webhooks/support"}}),
                vec![],
            ),
        ];
        for (accounts, want) in cases {
            let got = sms(with_accounts(accounts.clone()));
            match (got, want.is_empty()) {
                (Ok(_), true) => {}
                (Err(problems), false) => {
                    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
                    assert_eq!(paths, want, "{accounts}");
                    let m = &problems[0].message;
                    assert!(
                        m.contains("account \"") && m.contains("channels.sms."),
                        "{m}"
                    );
                    assert!(!m.contains("+1555"), "no phone number in the message: {m}");
                }
                (got, _) => panic!("{accounts}: {got:?}"),
            }
        }
    }
}
