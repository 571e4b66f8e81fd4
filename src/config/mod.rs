//! Configuration: one JSON5 file plus environment fallbacks, turned into validated
//! types before anything else runs.
//!
//! `load` reads and parses; [`validate::validate`] is a pure function from the raw file,
//! its unknown keys and the environment to a [`Config`] or the full list of problems.

pub(crate) mod checks;
pub mod edit;
pub(crate) mod init;
pub mod patch;
pub(crate) mod raw;
pub(crate) mod redact;
pub(crate) mod show;
pub mod validate;

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use url::Url;

use crate::phone::E164;
use crate::secret::Secret;

pub use validate::{validate, Env};

/// Where the config file is when neither `--config` nor `SMSGATE_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smsgate/smsgate.json5";

#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: Gateway,
    pub sms: SmsChannel,
    /// Things that are not errors but that an operator should hear about.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// Certificates obtained and renewed automatically; never together with `tls`.
    pub acme: Option<AcmeSettings>,
    pub state_dir: PathBuf,
    pub agent_socket: PathBuf,
    pub admin_socket: PathBuf,
    pub max_connections: usize,
    /// Peers whose `X-Forwarded-For/-Proto/-Host` count (`gateway.trustedProxies`).
    pub trusted_proxies: crate::http::forwarded::TrustedProxies,
    /// Prometheus metrics listener (loopback only).
    pub metrics_listen: Option<SocketAddr>,
    /// How long a message may wait for an agent's ack before it is a dead letter.
    pub agent_queue_max_age: std::time::Duration,
    pub log: LogSettings,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Let's Encrypt's production directory, the default for `gateway.tls.acme`.
pub const LETSENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`staging: true`): untrusted certificates, high limits.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `gateway.tls.acme`: which names to obtain a certificate for, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    pub email: Option<String>,
    pub directory_url: Url,
    /// Answer HTTP-01 challenges here (usually port 80); TLS-ALPN-01 otherwise.
    pub http01_listen: Option<SocketAddr>,
    /// Extra CA (PEM) trusted for the directory's HTTPS: for test CAs such as Pebble.
    pub directory_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A `tracing` filter directive such as `info` or `smsgate=debug`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct SmsChannel {
    pub enabled: bool,
    /// Accounts that can receive and send.
    pub accounts: Vec<Account>,
    /// Accounts named in the config that cannot work yet, and why.
    pub inactive: Vec<InactiveAccount>,
    /// The account used when a command or agent names none; `None` when there is no
    /// usable account at all.
    pub default_account: Option<String>,
}

impl SmsChannel {
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }

    /// The named account, or the default one; the error says what to do.
    pub fn resolve_account(&self, id: Option<&str>) -> Result<&Account, String> {
        let id = match id {
            Some(id) => id,
            None => self.default_account.as_deref().ok_or_else(|| {
                "no SMS account is configured: set channels.sms.accountSid, authToken and fromNumber".to_string()
            })?,
        };
        self.account(id).ok_or_else(|| {
            let known: Vec<&str> = self.accounts.iter().map(|a| a.id.as_str()).collect();
            match self.inactive.iter().find(|a| a.id == id) {
                Some(inactive) => format!("account {id:?} is not usable: {}", inactive.reason),
                None => format!(
                    "no account {id:?}; configured accounts: {}",
                    known.join(", ")
                ),
            }
        })
    }
}

#[derive(Debug, Clone)]
pub struct InactiveAccount {
    pub id: String,
    pub webhook_path: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// Tokens still accepted on webhooks while Twilio moves to a new one.
    pub previous_auth_tokens: Vec<Secret>,
    /// Shared keys for HMAC-SHA256 webhook signatures, by key id.
    pub webhook_signing_keys: std::collections::BTreeMap<String, Secret>,
    pub sender: Sender,
    pub webhook_path: String,
    pub inbound: InboundCheck,
    pub dm_policy: DmPolicy,
    pub allow_from: AllowFrom,
    pub default_to: Option<E164>,
    /// `allowTo`: whom the agent's own sends may go to; `None` (unset): the people
    /// already known to the account (see `access::allow_to`).
    pub allow_to: Option<AllowTo>,
    /// `execApprovals`: who answers the agent's asks, and for how long they may.
    pub exec_approvals: ExecApprovals,
    pub text_chunk_limit: usize,
    /// `mediaMaxMb` in bytes (10^6 per MB, at most 5 MB): the media of one outbound
    /// message in all, and of one inbound message's downloads (CONTRACT §10).
    pub media_max_bytes: u64,
    /// The texts smsgate sends itself (pairing code, approved, new conversation).
    pub texts: crate::texts::Texts,
    /// Segments the agent may send per hour, day, recipient and hour.
    pub outbound_limits: crate::limits::OutboundLimits,
    /// `outboundLimits.maxHeld`: sends that may be held at once for this account
    /// (default 1000); a send that would be held beyond it is refused and not stored.
    /// 0 = no cap (like the other limits' 0), which lets held sends grow without bound.
    pub max_held: u32,
    /// `releaseHeld: "auto"`: a held send goes when its window allows.
    pub release_held_auto: bool,
    /// `inboundLimits.perSenderPerMinute`: texts one sender may get to the agent a
    /// minute (the rest wait, stored); 0 = no limit.
    pub inbound_per_sender_per_minute: u32,
    pub api_base_url: Url,
    pub messaging_api_base_url: Url,
    /// `whatsapp`, when enabled (CONTRACT §12).
    pub whatsapp: Option<WhatsApp>,
}

/// An account's WhatsApp (CONTRACT §12): the same credentials and webhook, its own
/// sender, and the template that re-opens the 24-hour window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsApp {
    /// `from` (a `whatsapp:` address) or the account's Messaging Service.
    pub sender: Sender,
    /// `templates.reengage`: a Content SID (`HX…`).
    pub reengage: Option<String>,
}

impl Account {
    /// Who sends to `to`: the WhatsApp sender for a WhatsApp address (`None` when
    /// the account has no WhatsApp), else the account's sender.
    pub fn sender_for(&self, to: &E164) -> Option<&Sender> {
        if to.is_whatsapp() {
            self.whatsapp.as_ref().map(|w| &w.sender)
        } else {
            Some(&self.sender)
        }
    }

    pub fn public_url(&self) -> Option<&PublicUrl> {
        match &self.inbound {
            InboundCheck::Signed { url } => Some(url),
            InboundCheck::Unsigned { url } => url.as_ref(),
        }
    }
}

/// `execApprovals` (CONTRACT §9), resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecApprovals {
    /// `enabled` as written; `None` is `"auto"` (on when an approver resolves).
    pub enabled: Option<bool>,
    /// The numbers that answer asks: `approvers` if listed, else the `allowFrom`
    /// numbers (never `"*"`), else `defaultTo`.
    pub approvers: Vec<E164>,
    /// Only the numbers listed under `approvers` (known people for `allowTo`).
    pub listed: Vec<E164>,
    /// How long an ask waits for an answer, unless the ask names its own.
    pub timeout_secs: u64,
    /// `target` as written (only `"dm"` means anything on SMS).
    pub target: Option<String>,
}

impl Default for ExecApprovals {
    fn default() -> Self {
        Self {
            enabled: None,
            approvers: Vec::new(),
            listed: Vec::new(),
            timeout_secs: DEFAULT_APPROVAL_TIMEOUT_SECS,
            target: None,
        }
    }
}

/// `execApprovals.timeoutSecs` unless set.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 300;
/// The longest an ask may wait (a day): an ask is a person deciding now.
pub const MAX_APPROVAL_TIMEOUT_SECS: u64 = 86_400;

impl ExecApprovals {
    /// Whether asks go to approvers: not `enabled: false`, and someone to ask.
    pub fn active(&self) -> bool {
        self.enabled != Some(false) && !self.approvers.is_empty()
    }

    pub fn is_approver(&self, n: &E164) -> bool {
        self.approvers.contains(n)
    }
}

/// Who sends for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Number(E164),
    MessagingService(String),
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sender::Number(n) => write!(f, "{n}"),
            Sender::MessagingService(sid) => write!(f, "{sid}"),
        }
    }
}

/// How inbound webhooks are authenticated.
#[derive(Debug, Clone)]
pub enum InboundCheck {
    /// `X-Twilio-Signature` checked against this URL.
    Signed { url: PublicUrl },
    /// `dangerouslyDisableSignatureValidation: true`.
    Unsigned { url: Option<PublicUrl> },
}

/// The public webhook URL exactly as configured (Twilio signs these bytes), and parsed.
#[derive(Debug, Clone)]
pub struct PublicUrl {
    pub raw: String,
    pub parsed: Url,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmPolicy {
    Pairing,
    Allowlist,
    Open,
    Disabled,
}

impl DmPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmPolicy::Pairing => "pairing",
            DmPolicy::Allowlist => "allowlist",
            DmPolicy::Open => "open",
            DmPolicy::Disabled => "disabled",
        }
    }
}

/// `allowFrom` (CONTRACT §5, §12): an entry without a prefix allows the number on both
/// channels; `sms:+1…` or `whatsapp:+1…` one channel only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowFrom {
    /// `"*"` was listed.
    pub anyone: bool,
    /// Numbers without a prefix: both channels.
    pub numbers: BTreeSet<E164>,
    /// `sms:+1…` entries: SMS only.
    pub sms_only: BTreeSet<E164>,
    /// `whatsapp:+1…` entries (kept as WhatsApp addresses): WhatsApp only.
    pub whatsapp_only: BTreeSet<E164>,
}

impl AllowFrom {
    pub fn allows(&self, sender: &E164) -> bool {
        self.anyone || self.lists(sender)
    }

    /// Whether an entry names this address on its channel (`"*"` aside).
    pub fn lists(&self, address: &E164) -> bool {
        match address.channel() {
            crate::phone::Channel::Sms => {
                self.numbers.contains(address) || self.sms_only.contains(address)
            }
            crate::phone::Channel::Whatsapp => {
                self.whatsapp_only.contains(address)
                    || self
                        .numbers
                        .contains(&address.on(crate::phone::Channel::Sms))
            }
        }
    }

    /// The numbers allowed on SMS (the default approvers, who answer by SMS).
    pub fn sms_numbers(&self) -> impl Iterator<Item = &E164> {
        self.numbers.iter().chain(self.sms_only.iter())
    }

    /// Every entry as written back (`sms:`/`whatsapp:` kept), `"*"` first.
    pub fn entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.anyone {
            out.push("*".to_string());
        }
        out.extend(self.numbers.iter().map(ToString::to_string));
        out.extend(self.sms_only.iter().map(|n| format!("sms:{n}")));
        out.extend(self.whatsapp_only.iter().map(ToString::to_string));
        out
    }

    pub fn is_empty(&self) -> bool {
        !self.anyone
            && self.numbers.is_empty()
            && self.sms_only.is_empty()
            && self.whatsapp_only.is_empty()
    }
}

/// `allowTo` as written (CONTRACT §9): numbers, prefixes ending in `*`, or `"*"`. A set
/// list replaces the default (the people known to the account); an empty one lets the
/// agent text nobody on its own (replies still answer whoever texted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowTo {
    /// `"*"` was listed.
    pub anyone: bool,
    pub numbers: BTreeSet<E164>,
    /// `"+44*"` is kept as `"+44"`: `+` and at least one digit, the first not 0.
    pub prefixes: BTreeSet<String>,
}

impl AllowTo {
    /// Whether the list names `to`: `"*"`, the number itself, or a prefix of it.
    pub fn permits(&self, to: &E164) -> bool {
        self.anyone
            || self.numbers.contains(to)
            || self
                .prefixes
                .iter()
                .any(|p| to.as_str().starts_with(p.as_str()))
    }

    /// Parses one `allowTo` entry; the error says what would fix it.
    pub fn add(&mut self, entry: &str) -> Result<(), String> {
        let e = crate::phone::strip_channel_prefix(entry);
        if e == "*" {
            self.anyone = true;
            return Ok(());
        }
        if let Some(prefix) = e.strip_suffix('*') {
            let digits = prefix.strip_prefix('+').unwrap_or("");
            let ok = prefix.starts_with('+')
                && !digits.is_empty()
                && digits.len() < crate::phone::MAX_DIGITS
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0');
            if !ok {
                return Err(format!("{entry:?} is not a prefix pattern; write + and the leading digits (1 to 14, the first not 0) followed by one *, e.g. \"+44*\", or \"*\" for anyone"));
            }
            self.prefixes.insert(prefix.to_string());
            return Ok(());
        }
        let n = E164::parse(entry)
            .map_err(|err| format!("{err}, or a prefix such as \"+44*\", or \"*\" for anyone"))?;
        self.numbers.insert(n);
        Ok(())
    }
}

/// Every problem found in a configuration, each with its key path and fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Problem>);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in the configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0 {
            writeln!(f, "  - {}: {}", p.path, p.message)?;
        }
        Ok(())
    }
}

/// Errors reading a config file, before validation.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file {path}: {error}; pass the right file with --config or SMSGATE_CONFIG")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path} is larger than {limit} bytes (1 MiB), the most a config may be; no configuration needs that much: check that --config or SMSGATE_CONFIG names the right file")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("config file {path} is not valid JSON5: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: {errors}")]
    Invalid { path: PathBuf, errors: ConfigErrors },
}

/// The largest config file read (a 200 MB one once took 16 GB of memory to refuse).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why a size-capped read failed.
#[derive(Debug)]
pub enum CappedReadError {
    Io(std::io::Error),
    TooLarge,
}

/// Reads a UTF-8 text file of at most `limit` bytes. A bigger regular file is refused
/// from its size before any of it is read; anything else (a pipe, `/dev/zero`) is read
/// no further than one byte past the limit.
pub fn read_capped(path: &Path, limit: u64) -> Result<String, CappedReadError> {
    let file = std::fs::File::open(path).map_err(CappedReadError::Io)?;
    let meta = file.metadata().map_err(CappedReadError::Io)?;
    if meta.is_file() && meta.len() > limit {
        return Err(CappedReadError::TooLarge);
    }
    read_open_capped(file, limit)
}

/// The rest of an open file as UTF-8 text, read no further than one byte past `limit`.
fn read_open_capped(file: std::fs::File, limit: u64) -> Result<String, CappedReadError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(CappedReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(CappedReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| {
        CappedReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        ))
    })
}

/// Like [`read_capped`], for a file that must be a regular file (a patch): a FIFO,
/// device, socket or directory is refused at once. It is opened without blocking (a FIFO
/// with no writer would otherwise hang the open) and checked on the open descriptor, so
/// a path swapped after a check cannot slip through.
pub fn read_regular_capped(path: &Path, limit: u64) -> Result<String, CappedReadError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(CappedReadError::Io)?;
    let meta = file.metadata().map_err(CappedReadError::Io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO (named pipe)"
        } else if ft.is_char_device() || ft.is_block_device() {
            "a device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(CappedReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file; give the path of a JSON5 file"),
        )));
    }
    if meta.len() > limit {
        return Err(CappedReadError::TooLarge);
    }
    read_open_capped(file, limit)
}

/// How deep objects and lists may nest (serde_json's own limit).
pub const MAX_NESTING: usize = 128;

/// Parses JSON5 text into a JSON value.
pub fn parse_json5(text: &str) -> Result<serde_json::Value, String> {
    // json5's deserializer recurses once per level without a limit: a deeply nested
    // document would overflow the stack (found by fuzzing), so refuse it first.
    if let Some(line) = nesting_beyond(text, MAX_NESTING) {
        return Err(format!("objects and lists nest more than {MAX_NESTING} levels deep (line {line}); no configuration needs that"));
    }
    // The parser's own message quotes the source line, secrets and all: rebuild it.
    json5::from_str::<serde_json::Value>(text).map_err(|e| redact::syntax_error(text, &e))
}

/// The line where `[`/`{` nesting first exceeds `limit`, outside strings and comments.
fn nesting_beyond(text: &str, limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '"' | '\'' => {
                // A string: skip to its closing quote, honouring escapes.
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        '\n' => line += 1,
                        q if q == c => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for s in chars.by_ref() {
                    if s == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for s in chars.by_ref() {
                    if s == '\n' {
                        line += 1;
                    }
                    if prev == '*' && s == '/' {
                        break;
                    }
                    prev = s;
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > limit {
                    return Some(line);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Reads, parses and validates the config at `path` against the process environment.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    load_with(path, &Env::from_process())
}

/// Like [`load`], for commands that never use the auth token: SecretRefs only the
/// service can resolve (`$CREDENTIALS_DIRECTORY`) are left empty instead of failing.
pub fn load_without_secrets(path: &Path) -> Result<Config, LoadError> {
    let mut env = Env::from_process();
    env.tolerate_unresolved_secrets = true;
    env.probe_state_dir = false;
    load_with(path, &env)
}

fn load_with(path: &Path, env: &Env) -> Result<Config, LoadError> {
    let text = read_capped(path, MAX_CONFIG_BYTES).map_err(|e| match e {
        CappedReadError::Io(error) => LoadError::Read {
            path: path.to_path_buf(),
            error,
        },
        CappedReadError::TooLarge => LoadError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_BYTES,
        },
    })?;
    // Whatever is shown about this file is scrubbed of every secret known so far (the
    // running configuration's, in the daemon) and of the environment's token.
    let env_token: Vec<&str> = env.get("TWILIO_AUTH_TOKEN").into_iter().collect();
    let value = parse_json5(&text).map_err(|message| LoadError::Syntax {
        path: path.to_path_buf(),
        message: redact::scrub_known(&message, &env_token),
    })?;
    let mut config =
        validate::validate_value(&value, env).map_err(|errors| LoadError::Invalid {
            path: path.to_path_buf(),
            errors: ConfigErrors(
                errors
                    .0
                    .into_iter()
                    .map(|p| Problem {
                        path: p.path,
                        message: redact::scrub_known(&p.message, &env_token),
                    })
                    .collect(),
            ),
        })?;
    // The file itself, not only what it says: a token in a file others can read.
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let inline = checks::inline_secret_paths(&value);
        if let Some(w) = checks::readable_secret_warning(path, meta.permissions().mode(), &inline) {
            config.warnings.push(w);
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, "{}").unwrap();
        assert_eq!(read_capped(&small, 2).unwrap(), "{}");
        assert!(matches!(
            read_capped(&small, 1),
            Err(CappedReadError::TooLarge)
        ));
        // Not a regular file: read up to the cap, never to the end.
        assert!(matches!(
            read_capped(Path::new("/dev/zero"), 1024),
            Err(CappedReadError::TooLarge)
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            read_capped(&missing, 9),
            Err(CappedReadError::Io(_))
        ));
        std::fs::write(&small, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            read_capped(&small, 9),
            Err(CappedReadError::Io(_))
        ));
    }

    #[test]
    fn nesting_table() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let cases: Vec<(String, usize, Option<usize>)> = vec![
            (deep(3), 3, None),
            (deep(4), 3, Some(1)),
            ("{a: '[[[[', b: \"{{{{\"}".into(), 1, None),
            ("{a: 1, // [[[[\n b: /* {{{{ */ 2}".into(), 1, None),
            ("{\n a: {\n b: {}}}".into(), 2, Some(3)),
            ("'\\'[[[['".into(), 0, None),
        ];
        for (text, limit, want) in cases {
            assert_eq!(nesting_beyond(&text, limit), want, "{text:?}");
        }
        assert!(parse_json5(&deep(5000))
            .unwrap_err()
            .contains("nest more than"));
        assert!(parse_json5(&deep(100)).is_ok());
    }
}
