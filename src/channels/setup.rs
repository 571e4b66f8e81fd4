//! `channels setup`: points the account's Twilio number or Messaging Service at our
//! webhook (and, when asked, its fallback URL and retry override). [`plan_setup`]
//! reads what Twilio has and says what would change; [`apply_setup`] changes it.

use serde_json::Value;

use super::routing::{
    incoming_number, messaging_service, not_ours, number_url, service_url, strip_fragment,
};
use crate::config::{Account, Sender};
use crate::twilio::{Creds, HttpTwilio};

/// What `channels setup` asks for besides pointing the webhook at us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SetupOptions {
    /// The number's (or Messaging Service's) fallback URL, called by Twilio when the
    /// webhook fails.
    pub fallback_url: Option<String>,
    /// Twilio's connection override `#rc=N&rp=all`: retry the webhook up to N times on
    /// any failure. Twilio does not sign the fragment.
    pub retries: Option<u8>,
}

/// The most connection retries Twilio takes in `#rc=`.
pub(crate) const MAX_WEBHOOK_RETRIES: u8 = 5;

impl SetupOptions {
    /// Checks the options; the error says what to change.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(n) = self.retries {
            if n > MAX_WEBHOOK_RETRIES {
                return Err(format!(
                    "--retries {n}: Twilio retries a webhook at most {MAX_WEBHOOK_RETRIES} times; use 0 to {MAX_WEBHOOK_RETRIES}"
                ));
            }
        }
        if let Some(u) = &self.fallback_url {
            let parsed = url::Url::parse(u).map_err(|e| {
                format!("--fallback-url {u:?} is not an absolute URL ({e}); give e.g. https://backup.example.com/sms")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!(
                    "--fallback-url must be http(s), not {}:",
                    parsed.scheme()
                ));
            }
            if !parsed.username().is_empty() || parsed.password().is_some() {
                return Err("--fallback-url must not carry credentials".into());
            }
        }
        Ok(())
    }

    /// The URL to set as the inbound webhook: `public` with the retry override as its
    /// fragment (replacing any fragment it had) when asked for.
    pub(crate) fn webhook_url(&self, public: &str) -> String {
        match self.retries {
            Some(n) => format!("{}#rc={n}&rp=all", strip_fragment(public)),
            None => public.to_string(),
        }
    }
}

/// What `channels setup` would change, and the call that changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetupPlan {
    pub what: String,
    pub url: String,
    pub fields: Vec<(&'static str, String, String)>,
    pub post_to: String,
}

impl SetupPlan {
    pub(crate) fn is_noop(&self) -> bool {
        self.fields.iter().all(|(_, old, new)| old == new)
    }
}

/// Reads the current inbound URL and plans the change to `publicWebhookUrl` + POST
/// (and the fallback URL and retry override when asked).
pub(crate) async fn plan_setup(
    http: &HttpTwilio,
    account: &Account,
    opts: &SetupOptions,
) -> Result<SetupPlan, String> {
    opts.validate()?;
    let public = account
        .public_url()
        .map(|u| u.raw.clone())
        .ok_or("publicWebhookUrl is not set: set it to the URL Twilio should call first")?;
    plan_for(http, account, &account.sender, opts, &public).await
}

/// The Twilio Sandbox for WhatsApp's shared sender (TWILIO-FACTS: for testing only).
pub(crate) const WHATSAPP_SANDBOX: &str = "+14155238886";

/// Where the account's WhatsApp sender stands for `channels setup` (CONTRACT §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WhatsappSetup {
    /// The account has no WhatsApp.
    Off,
    /// The SMS number or Messaging Service is also the WhatsApp sender: its webhook,
    /// set above, takes WhatsApp too.
    Covered(String),
    /// Not settable through the API (the Sandbox): what to do in the Console.
    Manual(String),
    /// Its own number or Messaging Service: this change.
    Plan(SetupPlan),
}

/// How the WhatsApp sender relates to the SMS sender: the same number (or service),
/// the Sandbox, or one of its own (pure: the decision, not the fetch).
pub(crate) fn whatsapp_sender_kind(account: &Account) -> WhatsappSetup {
    let Some(wa) = &account.whatsapp else {
        return WhatsappSetup::Off;
    };
    match (&wa.sender, &account.sender) {
        (Sender::Number(w), _) if w.number() == WHATSAPP_SANDBOX => WhatsappSetup::Manual(format!(
            "WhatsApp sender {WHATSAPP_SANDBOX} is the Twilio Sandbox: set its \"When a message comes in\" URL to publicWebhookUrl (POST) in the Twilio Console (Messaging > Try it out > Send a WhatsApp message > Sandbox settings); people join it by texting its join code"
        )),
        (Sender::Number(w), Sender::Number(n)) if w.number() == n.number() => WhatsappSetup::Covered(format!(
            "WhatsApp sender {} is the SMS number: its webhook takes WhatsApp too",
            w.number()
        )),
        (Sender::MessagingService(w), Sender::MessagingService(m)) if w == m => {
            WhatsappSetup::Covered(format!(
                "WhatsApp goes through Messaging Service {m}, as SMS does: its webhook takes WhatsApp too"
            ))
        }
        // Its own sender: planned by [`plan_whatsapp_setup`].
        _ => WhatsappSetup::Off,
    }
}

/// `channels setup` for the WhatsApp sender: nothing, a note, or the change to its own
/// number or Messaging Service (the same fields as for SMS).
pub(crate) async fn plan_whatsapp_setup(
    http: &HttpTwilio,
    account: &Account,
    opts: &SetupOptions,
) -> Result<WhatsappSetup, String> {
    let Some(wa) = &account.whatsapp else {
        return Ok(WhatsappSetup::Off);
    };
    match whatsapp_sender_kind(account) {
        WhatsappSetup::Off => {}
        known => return Ok(known),
    }
    let public = account
        .public_url()
        .map(|u| u.raw.clone())
        .ok_or("publicWebhookUrl is not set: set it to the URL Twilio should call first")?;
    let mut plan = plan_for(http, account, &wa.sender, opts, &public).await?;
    plan.what = format!("WhatsApp sender: {}", plan.what);
    Ok(WhatsappSetup::Plan(plan))
}

/// The change for one sender: its number's SMS URL or its Messaging Service's inbound
/// URL (WhatsApp numbers and services take their inbound messages from the same).
async fn plan_for(
    http: &HttpTwilio,
    account: &Account,
    sender: &Sender,
    opts: &SetupOptions,
    public: &str,
) -> Result<SetupPlan, String> {
    let public = public.to_string();
    match sender {
        Sender::Number(n) => {
            let num = incoming_number(http, account, n)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| not_ours(n))?;
            let get = |k: &str| {
                num.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let pn = get("sid");
            if pn.is_empty() {
                return Err("Twilio's answer has no number SID".into());
            }
            let url = opts.webhook_url(&public);
            let mut fields = vec![
                ("SmsUrl", get("sms_url"), url.clone()),
                (
                    "SmsMethod",
                    get("sms_method").to_ascii_uppercase(),
                    "POST".into(),
                ),
            ];
            if let Some(f) = &opts.fallback_url {
                fields.push(("SmsFallbackUrl", get("sms_fallback_url"), f.clone()));
                fields.push((
                    "SmsFallbackMethod",
                    get("sms_fallback_method").to_ascii_uppercase(),
                    "POST".into(),
                ));
            }
            Ok(SetupPlan {
                what: format!("number {} ({pn})", n.number()),
                url,
                fields,
                post_to: number_url(account, &pn),
            })
        }
        Sender::MessagingService(mg) => {
            let v = messaging_service(http, account, mg)
                .await
                .map_err(|e| e.to_string())?;
            let get = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let url = opts.webhook_url(&public);
            let mut fields = vec![
                ("InboundRequestUrl", get("inbound_request_url"), url.clone()),
                (
                    "InboundMethod",
                    get("inbound_method").to_ascii_uppercase(),
                    "POST".into(),
                ),
            ];
            if let Some(f) = &opts.fallback_url {
                fields.push(("FallbackUrl", get("fallback_url"), f.clone()));
                fields.push((
                    "FallbackMethod",
                    get("fallback_method").to_ascii_uppercase(),
                    "POST".into(),
                ));
            }
            Ok(SetupPlan {
                what: format!("Messaging Service {mg}"),
                url,
                fields,
                post_to: service_url(account, mg),
            })
        }
    }
}

pub(crate) async fn apply_setup(
    http: &HttpTwilio,
    account: &Account,
    plan: &SetupPlan,
) -> Result<(), String> {
    let form: Vec<(&str, &str)> = plan
        .fields
        .iter()
        .map(|(k, _, new)| (*k, new.as_str()))
        .collect();
    http.post_form(&Creds::of(account), &plan.post_to, &form)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::probe::{webhook_verdict, Status};

    #[test]
    fn setup_options_table() {
        let public = "https://sms.example.com/webhooks/sms";
        let o = |fallback: Option<&str>, retries| SetupOptions {
            fallback_url: fallback.map(str::to_string),
            retries,
        };
        assert_eq!(o(None, None).webhook_url(public), public);
        assert_eq!(
            o(None, Some(3)).webhook_url(public),
            "https://sms.example.com/webhooks/sms#rc=3&rp=all"
        );
        assert_eq!(
            o(None, Some(1)).webhook_url("https://a.example/x#ct=500"),
            "https://a.example/x#rc=1&rp=all"
        );
        let valid = [
            o(None, Some(0)),
            o(None, Some(5)),
            o(Some("https://b.example/sms"), None),
        ];
        for v in valid {
            assert_eq!(v.validate(), Ok(()), "{v:?}");
        }
        let invalid = [
            (o(None, Some(6)), "at most 5"),
            (o(Some("b.example/sms"), None), "not an absolute URL"),
            (o(Some("ftp://b.example/sms"), None), "http(s)"),
            (o(Some("https://u:p@b.example/sms"), None), "credentials"),
        ];
        for (v, want) in invalid {
            let e = v.validate().unwrap_err();
            assert!(e.contains(want), "{v:?}: {e}");
        }
        // A URL with the override still matches the configured one.
        let c = webhook_verdict(
            public,
            Some(&o(None, Some(2)).webhook_url(public)),
            Some("POST"),
            "number",
        );
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
    }
}
