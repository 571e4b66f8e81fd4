//! `smsgate config init`: the starter config, as text. Pure: the CLI asks the questions
//! and writes the file (`cli::config_cmd`).
//!
//! The auth token is never written into the file: it is a SecretRef to an environment
//! variable (`--token-env`, default `TWILIO_AUTH_TOKEN`). A value not given (and not
//! asked for, when stdin is no terminal) is left as a commented-out placeholder, so
//! `config validate` names exactly what is still missing.

use crate::phone::E164;

/// What the operator gave (each already checked by the `check_*` functions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Answers {
    pub account_sid: Option<String>,
    pub sender: Option<InitSender>,
    pub public_url: Option<String>,
    pub token_env: String,
    pub state_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InitSender {
    Number(String),
    MessagingService(String),
}

/// The default variable the token is read from.
#[cfg(test)]
pub(crate) const DEFAULT_TOKEN_ENV: &str = "TWILIO_AUTH_TOKEN";
/// Where Twilio's webhooks arrive when the public URL names no path of its own.
const DEFAULT_PATH: &str = "/webhooks/sms";

pub(crate) fn check_account_sid(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with("AC") && s.len() == 34 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(s.to_string())
    } else {
        Err(
            "is not an Account SID: AC followed by 32 letters and digits, from the Twilio Console"
                .into(),
        )
    }
}

pub(crate) fn check_from(s: &str) -> Result<InitSender, String> {
    E164::parse(s)
        .map(|n| InitSender::Number(n.to_string()))
        .map_err(|e| e.to_string())
}

pub(crate) fn check_messaging_service(s: &str) -> Result<InitSender, String> {
    let s = s.trim();
    if s.starts_with("MG") && s.len() == 34 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(InitSender::MessagingService(s.to_string()))
    } else {
        Err("is not a Messaging Service SID: MG followed by 32 letters and digits".into())
    }
}

/// A number or an `MG…` SID, as typed at the prompt.
pub(crate) fn check_sender(s: &str) -> Result<InitSender, String> {
    if s.trim().starts_with("MG") {
        check_messaging_service(s)
    } else {
        check_from(s)
    }
}

/// The public URL: absolute http(s), no credentials; one with no path gets
/// `/webhooks/sms`, the path the gateway listens on by default.
pub(crate) fn check_public_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    let url = url::Url::parse(s).map_err(|_| {
        "is not an absolute URL; give the https URL Twilio will call, e.g. https://sms.example.com/webhooks/sms".to_string()
    })?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err("must be an http(s) URL, e.g. https://sms.example.com/webhooks/sms".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user:password@; Twilio's signature authenticates it".into());
    }
    if url.path() == "/" && url.query().is_none() && !s.ends_with('/') {
        return Ok(format!("{s}{DEFAULT_PATH}"));
    }
    Ok(s.to_string())
}

pub(crate) fn check_token_env(s: &str) -> Result<String, String> {
    let s = s.trim();
    let mut chars = s.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(
            "is not an environment variable name (letters, digits and _, e.g. TWILIO_AUTH_TOKEN)"
                .into(),
        )
    }
}

/// The keys still to fill in, as `config validate` would name them.
pub(crate) fn missing(a: &Answers) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.account_sid.is_none() {
        out.push("accountSid");
    }
    if a.sender.is_none() {
        out.push("fromNumber (or messagingServiceSid)");
    }
    if a.public_url.is_none() {
        out.push("publicWebhookUrl");
    }
    out
}

/// A JSON string literal (valid JSON5).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The starter file's text.
pub(crate) fn render(a: &Answers) -> String {
    let todo = "  // <- fill in, then remove the // at the start of the line";
    let sid = match &a.account_sid {
        Some(s) => format!("      accountSid: {},", q(s)),
        None => format!("      // accountSid: \"AC…\",{todo}"),
    };
    let sender = match &a.sender {
        Some(InitSender::Number(n)) => format!("      fromNumber: {},", q(n)),
        Some(InitSender::MessagingService(mg)) => format!("      messagingServiceSid: {},", q(mg)),
        None => format!("      // fromNumber: \"+15551234567\",{todo}\n      // (or messagingServiceSid: \"MG…\" to send through a Messaging Service)"),
    };
    // The gateway listens where the public URL says Twilio calls, so the two agree.
    let path = a
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| u.path().to_string())
        .filter(|p| p != "/" && p != DEFAULT_PATH);
    let url = match &a.public_url {
        Some(u) => format!("      publicWebhookUrl: {},", q(u)),
        None => {
            format!("      // publicWebhookUrl: \"https://sms.example.com/webhooks/sms\",{todo}")
        }
    };
    let webhook_path = match path {
        Some(p) => format!("      webhookPath: {},            // the path of publicWebhookUrl", q(&p)),
        None => "      // webhookPath: \"/webhooks/sms\",  // the default; keep it the path of publicWebhookUrl".to_string(),
    };
    format!(
        r#"// smsgate configuration (JSON5: comments and unquoted keys are fine).
// Written by `smsgate config init`. Check it with `smsgate config validate`;
// every key is described in the README's configuration reference.
{{
  gateway: {{
    // Where Twilio's webhooks arrive. Keep 127.0.0.1 behind a reverse proxy or tunnel
    // (Caddy, nginx, Tailscale Funnel); use "0.0.0.0:443" with tls to face the internet.
    listen: "127.0.0.1:8789",
    // The message store (sled) and the sockets; created 0700 if missing.
    stateDir: {state_dir},
  }},
  channels: {{
    sms: {{
      // From the Twilio Console (Account Info).
{sid}
      // The token is not written here: it is read from the environment variable below
      // when the gateway starts (export {token_env}=… or put it in the unit's environment).
      authToken: {{ source: "env", provider: "default", id: {token_env_q} }},
      // Who sends: your Twilio number in E.164, or a Messaging Service.
{sender}
      // The exact public URL Twilio calls: Twilio signs it, so it must match byte for byte.
{url}
{webhook_path}
      // Who may text the agent: "pairing" (a stranger gets a code you approve with
      // `smsgate pairing approve CODE`), "allowlist" (only allowFrom), "open", "disabled".
      dmPolicy: "pairing",
      // allowFrom: ["+15557654321"],
      // Whom the agent may text on its own (not replies): unset, the people above
      // (allowFrom, approved senders, defaultTo); or numbers, "+44*" prefixes, "*".
      // allowTo: ["+15557654321"],
      // WhatsApp on the same account and webhook (docs/whatsapp.md): from defaults to
      // fromNumber (the Twilio Sandbox's sender is +14155238886); reengage is the
      // approved template (HX…) sent when a reply falls outside WhatsApp's 24 hours.
      // allowFrom entries without a prefix allow both channels; "whatsapp:+1…" or
      // "sms:+1…" one only.
      // whatsapp: {{ enabled: true, from: "+14155238886", templates: {{ reengage: "HX…" }} }},
    }},
  }},
}}
"#,
        state_dir = q(&a.state_dir),
        token_env = a.token_env,
        token_env_q = q(&a.token_env),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";

    fn full() -> Answers {
        Answers {
            account_sid: Some(AC.into()),
            sender: Some(InitSender::Number("+15551234567".into())),
            public_url: Some("https://sms.example.com/webhooks/sms".into()),
            token_env: DEFAULT_TOKEN_ENV.into(),
            state_dir: "/var/lib/smsgate".into(),
        }
    }

    fn validate(text: &str, token: Option<&str>) -> Result<crate::config::Config, String> {
        let v = crate::config::parse_json5(text)?;
        let mut env = crate::config::Env::default();
        if let Some(t) = token {
            env.vars.insert("MY_TOKEN".into(), t.into());
            env.vars.insert(DEFAULT_TOKEN_ENV.into(), t.into());
        }
        crate::config::validate::validate_value(&v, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn a_complete_starter_validates_and_holds_no_token() {
        let mut variants = vec![full()];
        let mut mg = full();
        mg.sender = Some(InitSender::MessagingService(MG.into()));
        variants.push(mg);
        let mut other = full();
        other.token_env = "MY_TOKEN".into();
        other.public_url = Some("https://gw.example.com/twilio/in".into());
        variants.push(other);
        for a in variants {
            let text = render(&a);
            let c =
                validate(&text, Some("the-token-value")).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(c.sms.accounts.len(), 1);
            assert!(c.warnings.is_empty(), "{:?}", c.warnings);
            assert!(!text.contains("the-token-value"));
            assert!(text.contains(&format!("id: \"{}\"", a.token_env)), "{text}");
            // Without the variable the error names it.
            let e = validate(&text, None).unwrap_err();
            assert!(e.contains(&a.token_env), "{e}");
        }
    }

    #[test]
    fn what_is_missing_is_a_placeholder_that_validate_names() {
        let mut a = full();
        a.account_sid = None;
        a.public_url = None;
        assert_eq!(missing(&a), vec!["accountSid", "publicWebhookUrl"]);
        let e = validate(&render(&a), Some("t")).unwrap_err();
        assert!(
            e.contains("accountSid") && e.contains("publicWebhookUrl"),
            "{e}"
        );
        let mut a = full();
        a.sender = None;
        let e = validate(&render(&a), Some("t")).unwrap_err();
        assert!(e.contains("fromNumber or messagingServiceSid"), "{e}");
        assert!(missing(&full()).is_empty());
    }

    #[test]
    fn values_are_checked() {
        assert!(check_account_sid(AC).is_ok());
        for bad in [
            "",
            "AC123",
            "MG0123456789abcdef0123456789abcdef",
            "AC0123456789abcdef0123456789abcde!",
        ] {
            assert!(check_account_sid(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_sender(MG),
            Ok(InitSender::MessagingService(MG.into()))
        );
        assert_eq!(
            check_sender("sms:+15551234567").map_err(|_| ()),
            Ok(InitSender::Number("+15551234567".into()))
        );
        assert!(check_sender("555-1234").is_err());
        assert!(check_messaging_service("MG1").is_err());
        let cases = [
            (
                "https://sms.example.com",
                Ok("https://sms.example.com/webhooks/sms"),
            ),
            (
                "https://sms.example.com/x/y",
                Ok("https://sms.example.com/x/y"),
            ),
            ("ftp://sms.example.com/x", Err(())),
            ("sms.example.com/webhooks/sms", Err(())),
            ("https://u:p@sms.example.com/x", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(
                check_public_url(input).map_err(|_| ()),
                want.map(String::from),
                "{input}"
            );
        }
        assert!(check_token_env("TWILIO_AUTH_TOKEN").is_ok());
        for bad in ["", "1X", "A-B", "A B", "$X"] {
            assert!(check_token_env(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostile_values_stay_inside_their_strings() {
        // A value is a JSON string literal: quotes and newlines cannot add keys.
        let mut a = full();
        a.state_dir = "/tmp/x\", dmPolicy: \"open\" //\n".into();
        let text = render(&a);
        let v = crate::config::parse_json5(&text).unwrap();
        assert_eq!(v["gateway"]["stateDir"], a.state_dir.as_str());
        assert_eq!(v["channels"]["sms"]["dmPolicy"], "pairing");
    }
}
