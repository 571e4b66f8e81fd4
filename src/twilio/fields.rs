//! The shape of every webhook field we read, checked after the signature and before
//! anything is stored, as one pure function: [`check`].
//!
//! Why shapes matter even on a correctly signed request: Twilio signs one concatenation
//! `name value name value …` (names sorted), so the same bytes split into other
//! parameter sets. Dropping `NumMedia=0` and sending `MessageSid=<sid>NumMedia0` keeps
//! the signature valid and makes a "new" message out of a captured one. Every field
//! whose value could absorb a neighbour (or be absorbed) is therefore held to the exact
//! shape Twilio sends: SIDs are two letters and 32 hex digits, counts are small
//! decimals, addresses are E.164 numbers, short codes or alphanumeric sender IDs, and
//! statuses are Twilio's words. A field name that is known here may appear once.
//! Parameters we do not read are left alone: Twilio adds new ones without notice.

/// Names under which Twilio sends the message SID; all that are present must agree.
pub const SID_ALIASES: [&str; 3] = ["MessageSid", "SmsSid", "SmsMessageSid"];

/// Twilio's largest MMS carries 10 media.
pub const MAX_MEDIA: usize = 10;

/// Message statuses Twilio sends: `received`/`receiving` on inbound messages, the
/// others on status callbacks for messages we sent.
pub const STATUSES: &[&str] = &[
    "received",
    "receiving",
    "accepted",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "read",
    "partially_delivered",
    "canceled",
];

/// What the checked fields say, borrowed from the parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The message SID (`SM`/`MM` + 32 hex digits), the same under every alias present.
    pub sid: &'a str,
    /// The delivery status of a status callback; `None` for an inbound message.
    pub delivery_status: Option<&'a str>,
    /// `NumMedia` (0 when absent).
    pub num_media: usize,
    /// `ErrorCode` as checked (digits only); `None` when absent or empty, so the status
    /// path takes it from here rather than reading the raw field again.
    pub error_code: Option<&'a str>,
    /// `From` and `To` as checked (empty when absent).
    pub from: &'a str,
    pub to: &'a str,
    /// `Body` (empty when absent): any text at all.
    pub body: &'a str,
    /// `AccountSid` and `MessagingServiceSid` as checked, when present and not empty.
    pub account_sid: Option<&'a str>,
    pub messaging_service_sid: Option<&'a str>,
    /// `OptOutType` (Twilio's Advanced Opt-Out: STOP, START, HELP), when present.
    pub opt_out_type: Option<&'a str>,
    /// `ProfileName` (a WhatsApp sender's name, any text) and `WaId` (their WhatsApp
    /// id: digits), when present.
    pub profile_name: Option<&'a str>,
    pub wa_id: Option<&'a str>,
    /// `(MediaUrl{i}, MediaContentType{i})` for `i` below `NumMedia`, in index order.
    media: Vec<(usize, Option<&'a str>, Option<&'a str>)>,
}

/// A delivery status callback, typed: what the status path acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCallback<'a> {
    pub sid: &'a str,
    pub status: &'a str,
    pub error_code: Option<&'a str>,
}

/// An inbound message as the gateway keeps and processes it: the fields it acts on,
/// parsed once by [`check`] (nothing downstream reads a raw form field by name).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboundSms {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging_service_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_out_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<MediaRef>,
    /// WhatsApp when `From` is `whatsapp:+…` (CONTRACT §12); records of earlier
    /// versions have none and are SMS.
    #[serde(default, skip_serializing_if = "is_sms")]
    pub channel: Channel,
    /// `ProfileName`: the WhatsApp sender's name (never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    /// `WaId`: the WhatsApp sender's id (the number without `+`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
}

fn is_sms(c: &Channel) -> bool {
    *c == Channel::Sms
}

/// The channel of a webhook's `From`.
pub fn channel_of(from: &str) -> Channel {
    if from.starts_with(crate::phone::WHATSAPP_PREFIX) {
        Channel::Whatsapp
    } else {
        Channel::Sms
    }
}

/// One attachment of an inbound MMS, as Twilio announced it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MediaRef {
    pub url: String,
    /// `MediaContentType{i}`; `application/octet-stream` when Twilio sent none.
    #[serde(rename = "contentType")]
    pub content_type: String,
}

impl<'a> Fields<'a> {
    /// The status callback these fields are, if they are one.
    pub fn status(&self) -> Option<StatusCallback<'a>> {
        self.delivery_status.map(|status| StatusCallback {
            sid: self.sid,
            status,
            error_code: self.error_code,
        })
    }

    /// The message these fields are, owned, to be stored and processed.
    pub fn to_sms(&self) -> InboundSms {
        InboundSms {
            from: self.from.to_string(),
            to: self.to.to_string(),
            body: self.body.to_string(),
            account_sid: self.account_sid.map(str::to_string),
            messaging_service_sid: self.messaging_service_sid.map(str::to_string),
            opt_out_type: self.opt_out_type.map(str::to_string),
            channel: channel_of(self.from),
            profile_name: self.profile_name.map(str::to_string),
            wa_id: self.wa_id.map(str::to_string),
            media: self
                .media
                .iter()
                .filter_map(|(_, url, ctype)| {
                    Some(MediaRef {
                        url: (*url)?.to_string(),
                        content_type: ctype.unwrap_or("application/octet-stream").to_string(),
                    })
                })
                .collect(),
        }
    }
}

impl InboundSms {
    /// The message of a record written by an earlier version, which kept the raw form
    /// parameters (they passed [`check`] when they arrived; read leniently here).
    pub fn from_params(params: &[(String, String)]) -> InboundSms {
        let field = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let n: usize = field("NumMedia")
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        InboundSms {
            from: field("From").unwrap_or_default().to_string(),
            to: field("To").unwrap_or_default().to_string(),
            body: field("Body").unwrap_or_default().to_string(),
            account_sid: field("AccountSid").map(str::to_string),
            messaging_service_sid: field("MessagingServiceSid")
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            opt_out_type: field("OptOutType").map(str::to_string),
            channel: channel_of(field("From").unwrap_or_default()),
            profile_name: field("ProfileName").map(str::to_string),
            wa_id: field("WaId").map(str::to_string),
            media: (0..n.min(MAX_MEDIA))
                .filter_map(|i| {
                    Some(MediaRef {
                        url: field(&format!("MediaUrl{i}"))?.to_string(),
                        content_type: field(&format!("MediaContentType{i}"))
                            .unwrap_or("application/octet-stream")
                            .to_string(),
                    })
                })
                .collect(),
        }
    }
}

use crate::phone::Channel;

/// Why a webhook's fields were refused: which field, and what is wrong with it. The
/// value is never included (it may be a phone number or a message body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("missing field MessageSid")]
    MissingSid,
    #[error("field {field} {problem}")]
    Bad {
        field: String,
        problem: &'static str,
    },
}

impl FieldError {
    fn bad(field: &str, problem: &'static str) -> Self {
        FieldError::Bad {
            field: field.to_string(),
            problem,
        }
    }

    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            FieldError::MissingSid => "MessageSid",
            FieldError::Bad { field, .. } => field,
        }
    }
}

/// Checks the shape of every field we read (see the module comment) and returns the
/// ones the webhook acts on.
pub fn check(params: &[(String, String)]) -> Result<Fields<'_>, FieldError> {
    let mut seen: Vec<&str> = Vec::new();
    let mut sid: Option<&str> = None;
    let mut status: Option<(&str, &str)> = None;
    let mut num_media: Option<usize> = None;
    let mut error_code: Option<&str> = None;
    let mut media_indexes: Vec<(&str, usize)> = Vec::new();
    let (mut from, mut to, mut body) = ("", "", "");
    let (mut account_sid, mut messaging_service_sid, mut opt_out_type) = (None, None, None);
    let (mut profile_name, mut wa_id) = (None, None);
    let mut media: Vec<(usize, Option<&str>, Option<&str>)> = Vec::new();
    for (name, value) in params {
        let name = name.as_str();
        let value = value.as_str();
        let Some(kind) = kind_of(name) else {
            // Free text, or Twilio's business: taken as it is (the first, if repeated).
            match name {
                "Body" if body.is_empty() => body = value,
                "OptOutType" if opt_out_type.is_none() => opt_out_type = Some(value),
                "ProfileName" if profile_name.is_none() => profile_name = Some(value),
                _ => {}
            }
            continue;
        };
        if seen.contains(&name) {
            return Err(FieldError::bad(name, "appears more than once"));
        }
        seen.push(name);
        match kind {
            Kind::Sid => {
                if !is_sid(value, &["SM", "MM"]) {
                    return Err(FieldError::bad(
                        name,
                        "is not a message SID (SM or MM and 32 hex digits)",
                    ));
                }
                match sid {
                    Some(first) if first != value => {
                        return Err(FieldError::bad(
                            name,
                            "differs from the other message SID fields (MessageSid, SmsSid, SmsMessageSid)",
                        ))
                    }
                    _ => sid = Some(value),
                }
            }
            Kind::AccountSid => {
                if !is_config_sid(value, "AC") {
                    return Err(FieldError::bad(
                        name,
                        "is not an Account SID (AC and 32 letters or digits)",
                    ));
                }
                account_sid = Some(value);
            }
            Kind::MessagingServiceSid => {
                // Empty when the message did not go through a Messaging Service.
                if !value.is_empty() && !is_config_sid(value, "MG") {
                    return Err(FieldError::bad(
                        name,
                        "is not a Messaging Service SID (MG and 32 letters or digits)",
                    ));
                }
                messaging_service_sid = Some(value).filter(|v| !v.is_empty());
            }
            Kind::Address => {
                if !is_address(value) && !is_whatsapp_address(value) {
                    return Err(FieldError::bad(
                        name,
                        "is not an E.164 number (also as whatsapp:+…), a short code or an alphanumeric sender ID",
                    ));
                }
                if name == "From" {
                    from = value;
                } else {
                    to = value;
                }
            }
            Kind::Status => {
                if !STATUSES.contains(&value) {
                    return Err(FieldError::bad(name, "is not a Twilio message status"));
                }
                match status {
                    Some((_, first)) if first != value => {
                        return Err(FieldError::bad(
                            name,
                            "differs from the other status field (MessageStatus, SmsStatus)",
                        ))
                    }
                    _ => status = Some((name, value)),
                }
            }
            Kind::NumMedia => match small_decimal(value) {
                Some(n) if n <= MAX_MEDIA => num_media = Some(n),
                _ => return Err(FieldError::bad(name, "is not a whole number from 0 to 10")),
            },
            Kind::NumSegments => {
                if small_decimal(value).is_none() {
                    return Err(FieldError::bad(name, "is not a small whole number"));
                }
            }
            Kind::ErrorCode => {
                let code = (1..=6).contains(&value.len())
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && (value == "0" || !value.starts_with('0'));
                if !(value.is_empty() || code) {
                    return Err(FieldError::bad(name, "is not a Twilio error code"));
                }
                error_code = Some(value).filter(|v| !v.is_empty());
            }
            Kind::WaId => {
                // The number without `+`: 2 to 15 digits, the first not 0.
                let ok = (2..=15).contains(&value.len())
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && !value.starts_with('0');
                if !ok {
                    return Err(FieldError::bad(
                        name,
                        "is not a WhatsApp id (the number's digits)",
                    ));
                }
                wa_id = Some(value);
            }
            Kind::ApiVersion => {
                if !is_api_version(value) {
                    return Err(FieldError::bad(name, "is not an API version (YYYY-MM-DD)"));
                }
            }
            Kind::MediaUrl(i) => {
                if !is_media_url(value) {
                    return Err(FieldError::bad(name, "is not an http(s) URL"));
                }
                media_indexes.push((name, i));
                media_slot(&mut media, i).1 = Some(value);
            }
            Kind::MediaContentType(i) => {
                if !is_mime_type(value) {
                    return Err(FieldError::bad(
                        name,
                        "is not a media type such as image/jpeg",
                    ));
                }
                media_indexes.push((name, i));
                media_slot(&mut media, i).2 = Some(value);
            }
            Kind::BadMediaIndex => {
                return Err(FieldError::bad(
                    name,
                    "has an index that is not a plain number from 0 to 9",
                ))
            }
        }
    }
    let num_media = num_media.unwrap_or(0);
    if let Some((name, _)) = media_indexes.iter().find(|(_, i)| *i >= num_media) {
        return Err(FieldError::bad(name, "is beyond NumMedia"));
    }
    for i in 0..num_media {
        let url = format!("MediaUrl{i}");
        if !seen.contains(&url.as_str()) {
            return Err(FieldError::Bad {
                field: url,
                problem: "is missing although NumMedia counts it",
            });
        }
    }
    Ok(Fields {
        sid: sid.ok_or(FieldError::MissingSid)?,
        delivery_status: status
            .map(|(_, s)| s)
            .filter(|s| !matches!(*s, "received" | "receiving")),
        num_media,
        error_code,
        from,
        to,
        body,
        account_sid,
        messaging_service_sid,
        opt_out_type,
        profile_name,
        wa_id,
        media,
    })
}

/// The media entry for index `i`, added in index order.
fn media_slot<'m, 'a>(
    media: &'m mut Vec<(usize, Option<&'a str>, Option<&'a str>)>,
    i: usize,
) -> &'m mut (usize, Option<&'a str>, Option<&'a str>) {
    let at = match media.binary_search_by_key(&i, |m| m.0) {
        Ok(at) => at,
        Err(at) => {
            media.insert(at, (i, None, None));
            at
        }
    };
    &mut media[at]
}

enum Kind {
    Sid,
    AccountSid,
    MessagingServiceSid,
    Address,
    Status,
    NumMedia,
    NumSegments,
    ErrorCode,
    WaId,
    ApiVersion,
    MediaUrl(usize),
    MediaContentType(usize),
    BadMediaIndex,
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "MessageSid" | "SmsSid" | "SmsMessageSid" => Kind::Sid,
        "AccountSid" => Kind::AccountSid,
        "MessagingServiceSid" => Kind::MessagingServiceSid,
        "From" | "To" => Kind::Address,
        "MessageStatus" | "SmsStatus" => Kind::Status,
        "NumMedia" => Kind::NumMedia,
        "NumSegments" => Kind::NumSegments,
        "ErrorCode" => Kind::ErrorCode,
        "ApiVersion" => Kind::ApiVersion,
        "WaId" => Kind::WaId,
        _ => {
            let (index, url) = if let Some(i) = name.strip_prefix("MediaUrl") {
                (i, true)
            } else if let Some(i) = name.strip_prefix("MediaContentType") {
                (i, false)
            } else {
                return None;
            };
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                // `MediaUrl` alone or `MediaUrlX` is no field of Twilio's: not ours to judge.
                return None;
            }
            match small_decimal(index) {
                Some(i) if i < MAX_MEDIA => {
                    if url {
                        Kind::MediaUrl(i)
                    } else {
                        Kind::MediaContentType(i)
                    }
                }
                _ => Kind::BadMediaIndex,
            }
        }
    })
}

/// A Twilio SID: one of `prefixes` and 32 hex digits (Twilio's spec allows either case;
/// real SIDs are lowercase). The fixed length is what stops a SID absorbing a neighbour.
pub fn is_sid(value: &str, prefixes: &[&str]) -> bool {
    value.len() == 34
        && prefixes.iter().any(|p| value.starts_with(p))
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// An Account or Messaging Service SID as the config accepts it (`accountSid`,
/// `messagingServiceSid`: the prefix and 32 ASCII letters or digits), so a webhook
/// carrying the configured value always passes; it must then equal the account's
/// (see `http::webhook`). The fixed length is what stops absorption: every Twilio
/// parameter name has letters, so a value that swallowed a neighbour is too long.
fn is_config_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `0` or a decimal without leading zeros, at most 3 digits.
fn small_decimal(value: &str) -> Option<usize> {
    let ok = !value.is_empty()
        && value.len() <= 3
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    ok.then(|| value.parse().ok()).flatten()
}

/// What Twilio sends in `From`/`To` of an SMS: an E.164 number (`+` and 2 to 15 digits,
/// the first not 0), a short code (3 to 8 digits), or an alphanumeric sender ID (1 to
/// 11 ASCII letters, digits and spaces, at least one letter: only ever the sender of a
/// message we sent, in a status callback). WhatsApp addresses are [`is_whatsapp_address`].
pub fn is_address(value: &str) -> bool {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if let Some(number) = value.strip_prefix('+') {
        return (2..=15).contains(&number.len()) && digits(number) && !number.starts_with('0');
    }
    if digits(value) {
        return (3..=8).contains(&value.len());
    }
    (1..=11).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && value.bytes().any(|b| b.is_ascii_alphabetic())
        && value.trim() == value
}

/// A WhatsApp address as Twilio writes it: `whatsapp:` and an E.164 number.
pub fn is_whatsapp_address(value: &str) -> bool {
    value
        .strip_prefix(crate::phone::WHATSAPP_PREFIX)
        .is_some_and(|n| n.starts_with('+') && is_address(n))
}

/// `2010-04-01`.
fn is_api_version(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// An absolute http(s) URL without whitespace or control characters. Which media URLs
/// are fetched is decided later ([`crate::twilio::media::media_url_allowed`]).
fn is_media_url(value: &str) -> bool {
    value.len() <= 2048
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && url::Url::parse(value)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

/// `type/subtype` of RFC 6838 token characters, optionally with `; name=value`
/// parameters of the same characters.
fn is_mime_type(value: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default();
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    token(ty)
        && token(sub)
        && parts.all(|p| {
            let p = p.trim_start_matches(' ');
            p.split_once('=').is_some_and(|(k, v)| {
                token(k)
                    && (token(v)
                        || (v.len() >= 2
                            && v.starts_with('"')
                            && v.ends_with('"')
                            && token(&v[1..v.len() - 1])))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twilio::form;

    const SM: &str = "SM0123456789abcdef0123456789abcdef";
    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn inbound() -> Vec<(&'static str, &'static str)> {
        vec![
            ("MessageSid", SM),
            ("SmsSid", SM),
            ("SmsMessageSid", SM),
            ("AccountSid", AC),
            ("MessagingServiceSid", MG),
            ("From", "+15557654321"),
            ("To", "+15550001111"),
            ("Body", "hello"),
            ("NumMedia", "0"),
            ("NumSegments", "1"),
            ("SmsStatus", "received"),
            ("ApiVersion", "2010-04-01"),
            ("FromCity", "SAN FRANCISCO"),
            ("OptOutType", "STOP"),
        ]
    }

    fn with(changes: &[(&'static str, Option<&'static str>)]) -> Vec<(String, String)> {
        let mut v = inbound();
        for (name, value) in changes {
            match (v.iter().position(|(k, _)| k == name), value) {
                (Some(i), Some(val)) => v[i].1 = val,
                (Some(i), None) => {
                    v.remove(i);
                }
                (None, Some(val)) => v.push((name, val)),
                (None, None) => {}
            }
        }
        p(&v)
    }

    /// CONTRACT §12: `whatsapp:` addresses, `ProfileName` and `WaId`.
    #[test]
    fn a_whatsapp_message_is_parsed_with_its_channel_and_profile() {
        let params = with(&[
            ("From", Some("whatsapp:+15557654321")),
            ("To", Some("whatsapp:+14155238886")),
            ("ProfileName", Some("Ann")),
            ("WaId", Some("15557654321")),
        ]);
        let f = check(&params).unwrap();
        let sms = f.to_sms();
        assert_eq!(sms.channel, Channel::Whatsapp);
        assert_eq!(sms.from, "whatsapp:+15557654321");
        assert_eq!(sms.profile_name.as_deref(), Some("Ann"));
        assert_eq!(sms.wa_id.as_deref(), Some("15557654321"));
        assert_eq!(
            sms,
            InboundSms::from_params(&params),
            "the two parsers agree"
        );
        assert_eq!(
            check(&p(&inbound())).unwrap().to_sms().channel,
            Channel::Sms
        );
        let bad = [
            ("WaId", "+15557654321"),
            ("WaId", "0155"),
            ("WaId", "1555765432112345678"),
            ("From", "whatsapp:15557654321"),
            ("From", "whatsapp:+1555 7654321"),
            ("To", "whatsapp:"),
            ("From", "whatsapp:whatsapp:+15557654321"),
        ];
        for (name, value) in bad {
            let params = with(&[(name, Some(value))]);
            assert_eq!(check(&params).unwrap_err().field(), name, "{name}={value}");
        }
        // WaId appears once; ProfileName is free text, the first kept.
        let mut twice = with(&[("WaId", Some("15557654321"))]);
        twice.push(("WaId".into(), "15557654321".into()));
        assert!(check(&twice).is_err());
    }

    /// A message stored by an earlier version (no channel, no profile) decodes as SMS.
    #[test]
    fn stored_messages_without_a_channel_are_sms() {
        let old: InboundSms =
            serde_json::from_str(r#"{"from":"+15557654321","to":"+15550001111","body":"hi"}"#)
                .unwrap();
        assert_eq!(old.channel, Channel::Sms);
        assert_eq!(old.profile_name, None);
        let sms = serde_json::to_string(&old).unwrap();
        assert!(
            !sms.contains("channel"),
            "SMS records stay as they were: {sms}"
        );
        let mut wa = old.clone();
        wa.channel = Channel::Whatsapp;
        wa.profile_name = Some("Ann".into());
        let back: InboundSms = serde_json::from_str(&serde_json::to_string(&wa).unwrap()).unwrap();
        assert_eq!(back, wa);
    }

    #[test]
    fn a_real_inbound_message_passes() {
        let params = p(&inbound());
        let f = check(&params).unwrap();
        assert_eq!(f.sid, SM);
        assert_eq!(f.delivery_status, None);
        assert_eq!(f.num_media, 0);
    }

    #[test]
    fn a_message_is_parsed_once_into_its_typed_fields() {
        let params = with(&[
            ("NumMedia", Some("2")),
            ("MediaContentType1", Some("image/png")),
            ("MediaUrl1", Some("https://api.twilio.com/m/1")),
            ("MediaUrl0", Some("https://api.twilio.com/m/0")),
            ("OptOutType", Some("STOP")),
        ]);
        let f = check(&params).unwrap();
        assert_eq!(f.status(), None);
        let sms = f.to_sms();
        assert_eq!(
            sms,
            InboundSms::from_params(&params),
            "the two parsers agree"
        );
        assert_eq!(sms.from, form::field(&params, "From").unwrap());
        assert_eq!(sms.to, form::field(&params, "To").unwrap());
        assert_eq!(sms.body, form::field(&params, "Body").unwrap());
        assert_eq!(sms.opt_out_type.as_deref(), Some("STOP"));
        let media: Vec<(&str, &str)> = sms
            .media
            .iter()
            .map(|m| (m.url.as_str(), m.content_type.as_str()))
            .collect();
        assert_eq!(
            media,
            [
                ("https://api.twilio.com/m/0", "application/octet-stream"),
                ("https://api.twilio.com/m/1", "image/png"),
            ]
        );
        let status = with(&[("SmsStatus", Some("failed")), ("ErrorCode", Some("30003"))]);
        let f = check(&status).unwrap();
        assert_eq!(
            f.status(),
            Some(StatusCallback {
                sid: SM,
                status: "failed",
                error_code: Some("30003")
            })
        );
    }

    /// What a case is, which fields it changes, and `Ok` or the field refused.
    type Case = (
        &'static str,
        Vec<(&'static str, Option<&'static str>)>,
        Result<(), &'static str>,
    );

    #[test]
    fn field_table() {
        let sm_upper = "SM0123456789ABCDEF0123456789ABCDEF";
        let mm = "MM0123456789abcdef0123456789abcdef";
        let other_sm = "SMffffffffffffffffffffffffffffffff";
        let cases: Vec<Case> = vec![
            (
                "MMS sid",
                vec![
                    ("MessageSid", Some(mm)),
                    ("SmsSid", Some(mm)),
                    ("SmsMessageSid", Some(mm)),
                ],
                Ok(()),
            ),
            (
                "spec allows uppercase hex",
                vec![
                    ("MessageSid", Some(sm_upper)),
                    ("SmsSid", None),
                    ("SmsMessageSid", None),
                ],
                Ok(()),
            ),
            (
                "only one alias",
                vec![("MessageSid", None), ("SmsSid", None)],
                Ok(()),
            ),
            (
                "no sid at all",
                vec![
                    ("MessageSid", None),
                    ("SmsSid", None),
                    ("SmsMessageSid", None),
                ],
                Err("MessageSid"),
            ),
            (
                "re-split replay",
                vec![
                    ("NumMedia", None),
                    (
                        "MessageSid",
                        Some("SM0123456789abcdef0123456789abcdefNumMedia0"),
                    ),
                ],
                Err("MessageSid"),
            ),
            (
                "short sid",
                vec![("MessageSid", Some("SM1"))],
                Err("MessageSid"),
            ),
            (
                "empty sid",
                vec![("MessageSid", Some(""))],
                Err("MessageSid"),
            ),
            (
                "wrong prefix",
                vec![("MessageSid", Some("AC0123456789abcdef0123456789abcdef"))],
                Err("MessageSid"),
            ),
            (
                "not hex",
                vec![("MessageSid", Some("SMg123456789abcdef0123456789abcdef"))],
                Err("MessageSid"),
            ),
            (
                "aliases disagree",
                vec![("SmsSid", Some(other_sm))],
                Err("SmsSid"),
            ),
            (
                "AccountSid absorbs",
                vec![
                    ("ApiVersion", None),
                    (
                        "AccountSid",
                        Some("AC0123456789abcdef0123456789abcdefApiVersion2010-04-01"),
                    ),
                ],
                Err("AccountSid"),
            ),
            (
                "AccountSid missing is fine",
                vec![("AccountSid", None)],
                Ok(()),
            ),
            (
                "MessagingServiceSid empty",
                vec![("MessagingServiceSid", Some(""))],
                Ok(()),
            ),
            (
                "MessagingServiceSid absorbs",
                vec![
                    (
                        "MessagingServiceSid",
                        Some("MG0123456789abcdef0123456789abcdefNumMedia0"),
                    ),
                    ("NumMedia", None),
                ],
                Err("MessagingServiceSid"),
            ),
            (
                "From absorbs FromCity",
                vec![
                    ("FromCity", None),
                    ("From", Some("+15557654321FromCitySAN FRANCISCO")),
                ],
                Err("From"),
            ),
            ("From short code", vec![("From", Some("12345"))], Ok(())),
            (
                "From alphanumeric",
                vec![("From", Some("ACME Corp"))],
                Ok(()),
            ),
            (
                "From alphanumeric too long",
                vec![("From", Some("ACME Corp Ltd"))],
                Err("From"),
            ),
            ("From empty", vec![("From", Some(""))], Err("From")),
            // A WhatsApp address is one now (CONTRACT §12); a short code is not.
            (
                "From whatsapp",
                vec![("From", Some("whatsapp:+15557654321"))],
                Ok(()),
            ),
            (
                "From whatsapp short code",
                vec![("From", Some("whatsapp:12345"))],
                Err("From"),
            ),
            (
                "To absorbs",
                vec![("To", Some("+15550001111ToCityX"))],
                Err("To"),
            ),
            (
                "NumMedia absorbs",
                vec![("NumMedia", Some("0NumSegments1")), ("NumSegments", None)],
                Err("NumMedia"),
            ),
            (
                "NumMedia leading zero",
                vec![("NumMedia", Some("01"))],
                Err("NumMedia"),
            ),
            (
                "NumMedia too many",
                vec![("NumMedia", Some("11"))],
                Err("NumMedia"),
            ),
            (
                "NumMedia counts a missing url",
                vec![("NumMedia", Some("1"))],
                Err("MediaUrl0"),
            ),
            (
                "media present",
                vec![
                    ("NumMedia", Some("1")),
                    (
                        "MediaUrl0",
                        Some("https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM/Media/ME"),
                    ),
                    ("MediaContentType0", Some("image/jpeg")),
                ],
                Ok(()),
            ),
            (
                "media beyond NumMedia",
                vec![("MediaUrl0", Some("https://api.twilio.com/m"))],
                Err("MediaUrl0"),
            ),
            (
                "content type beyond NumMedia",
                vec![("MediaContentType0", Some("image/png"))],
                Err("MediaContentType0"),
            ),
            (
                "content type absorbs",
                vec![
                    ("NumMedia", Some("1")),
                    ("MediaUrl0", None),
                    (
                        "MediaContentType0",
                        Some("image/jpegMediaUrl0https://api.twilio.com/m"),
                    ),
                ],
                Err("MediaContentType0"),
            ),
            (
                "content type with charset",
                vec![
                    ("NumMedia", Some("1")),
                    ("MediaUrl0", Some("https://api.twilio.com/m")),
                    ("MediaContentType0", Some("text/plain; charset=utf-8")),
                ],
                Ok(()),
            ),
            (
                "media url not a url",
                vec![("NumMedia", Some("1")), ("MediaUrl0", Some("not a url"))],
                Err("MediaUrl0"),
            ),
            (
                "media index with leading zero",
                vec![
                    ("NumMedia", Some("1")),
                    ("MediaUrl00", Some("https://api.twilio.com/m")),
                ],
                Err("MediaUrl00"),
            ),
            (
                "unrelated MediaUrl name",
                vec![("MediaUrl", Some("x"))],
                Ok(()),
            ),
            (
                "status callback",
                vec![
                    ("SmsStatus", Some("delivered")),
                    ("MessageStatus", Some("delivered")),
                    ("ErrorCode", Some("30003")),
                ],
                Ok(()),
            ),
            (
                "statuses disagree",
                vec![
                    ("SmsStatus", Some("sent")),
                    ("MessageStatus", Some("delivered")),
                ],
                Err("MessageStatus"),
            ),
            (
                "unknown status",
                vec![("SmsStatus", Some("deliveredMessagingServiceSidMG"))],
                Err("SmsStatus"),
            ),
            (
                "ErrorCode absorbs",
                vec![("ErrorCode", Some("30003From+1"))],
                Err("ErrorCode"),
            ),
            ("ErrorCode empty", vec![("ErrorCode", Some(""))], Ok(())),
            (
                "AccountSid as configs may write it",
                vec![("AccountSid", Some("ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))],
                Ok(()),
            ),
            (
                "AccountSid too short",
                vec![("AccountSid", Some("AC0123456789abcdef"))],
                Err("AccountSid"),
            ),
            ("ErrorCode zero", vec![("ErrorCode", Some("0"))], Ok(())),
            (
                "ErrorCode leading zero",
                vec![("ErrorCode", Some("030003"))],
                Err("ErrorCode"),
            ),
            (
                "ApiVersion absorbs",
                vec![("ApiVersion", Some("2010-04-01Bodyhi"))],
                Err("ApiVersion"),
            ),
            (
                "NumSegments absorbs",
                vec![("NumSegments", Some("1OptOutTypeSTOP"))],
                Err("NumSegments"),
            ),
            (
                "unknown fields are Twilio's business",
                vec![("SomethingNew", Some("anything at all"))],
                Ok(()),
            ),
        ];
        for (what, changes, want) in cases {
            let params = with(&changes);
            let got = check(&params)
                .map(|_| ())
                .map_err(|e| e.field().to_string());
            assert_eq!(got, want.map_err(String::from), "{what}");
        }
    }

    #[test]
    fn repeated_known_fields_are_refused() {
        let mut params = p(&inbound());
        params.push(("From".into(), "+15550009999".into()));
        assert_eq!(check(&params).unwrap_err().field(), "From");
        let mut params = p(&inbound());
        params.push(("MessageSid".into(), SM.into()));
        assert_eq!(check(&params).unwrap_err().field(), "MessageSid");
        // Unknown names may repeat.
        let mut params = p(&inbound());
        params.push(("FromCity".into(), "OAKLAND".into()));
        assert!(check(&params).is_ok());
    }

    #[test]
    fn delivery_status_of_callbacks() {
        let params = with(&[
            ("SmsStatus", Some("undelivered")),
            ("MessageStatus", Some("undelivered")),
        ]);
        assert_eq!(check(&params).unwrap().delivery_status, Some("undelivered"));
        let params = with(&[("SmsStatus", None), ("MessageStatus", Some("receiving"))]);
        assert_eq!(check(&params).unwrap().delivery_status, None);
    }

    #[test]
    fn error_code_is_carried_when_present() {
        let status = |code: Option<&'static str>| {
            with(&[("SmsStatus", Some("failed")), ("ErrorCode", code)])
        };
        assert_eq!(
            check(&status(Some("30003"))).unwrap().error_code,
            Some("30003")
        );
        assert_eq!(check(&status(Some(""))).unwrap().error_code, None);
        assert_eq!(check(&status(None)).unwrap().error_code, None);
    }

    #[test]
    fn errors_never_echo_values() {
        let params = with(&[("From", Some("+15557654321FromCity"))]);
        let e = check(&params).unwrap_err().to_string();
        assert!(!e.contains("5557654321"), "{e}");
        assert!(e.starts_with("field From "), "{e}");
    }

    /// The attack from issue 9: every re-split of a signed body that still validates
    /// either is refused or keeps the original SID.
    #[test]
    fn every_resplit_keeps_the_sid_or_is_refused() {
        use crate::twilio::signature;
        let url = "https://sms.example.test/webhooks/sms";
        let original = p(&inbound());
        let good = signature::compute("token", url, &original);
        // Move each boundary between two sorted parameters: the earlier value swallows
        // the next name and value (the parameter is dropped).
        let mut sorted = original.clone();
        sorted.sort();
        for i in 0..sorted.len() - 1 {
            let mut forged = sorted.clone();
            let (next_name, next_value) = forged.remove(i + 1);
            forged[i].1 = format!("{}{next_name}{next_value}", forged[i].1);
            assert!(signature::is_valid(&["token"], url, None, &forged, &good));
            if let Ok(f) = check(&forged) {
                assert_eq!(f.sid, SM, "{} absorbed {next_name}", forged[i].0);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_forms_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let params = form::parse(&body);
            if let Ok(f) = check(&params) {
                proptest::prop_assert!(is_sid(f.sid, &["SM", "MM"]));
            }
        }
    }
}
