//! Posting a correctly signed inbound webhook, as Twilio would: `smsgate simulate` and
//! the demo use it to test without a phone or a tunnel.

use std::time::Duration;

use rand::Rng;

use crate::config::{Account, Config, Sender};
use crate::twilio::signature;

/// A fresh, plausible MessageSid.
pub(crate) fn message_sid() -> String {
    let mut rng = rand::rngs::OsRng;
    let hex: String = (0..32)
        .map(|_| format!("{:x}", rng.gen_range(0..16u8)))
        .collect();
    format!("SM{hex}")
}

/// The local URL of an account's webhook on this gateway.
pub(crate) fn local_url(config: &Config, account: &Account) -> String {
    let scheme = if config.gateway.tls.is_some() || config.gateway.acme.is_some() {
        "https"
    } else {
        "http"
    };
    let mut addr = config.gateway.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("{scheme}://{addr}{}", account.webhook_path)
}

/// The form Twilio posts for an inbound SMS.
pub(crate) fn inbound_form(
    account: &Account,
    sid: &str,
    from: &str,
    body: &str,
) -> Vec<(String, String)> {
    let to = match &account.sender {
        Sender::Number(n) => n.to_string(),
        // A Messaging Service number is one of the service's; any will do here.
        Sender::MessagingService(_) => "+15550000000".to_string(),
    };
    let mut form = vec![
        ("MessageSid", sid.to_string()),
        ("SmsSid", sid.to_string()),
        ("SmsMessageSid", sid.to_string()),
        ("AccountSid", account.account_sid.clone()),
        ("From", from.to_string()),
        ("To", to),
        ("Body", body.to_string()),
        ("NumMedia", "0".to_string()),
        ("NumSegments", "1".to_string()),
        ("SmsStatus", "received".to_string()),
        ("ApiVersion", "2010-04-01".to_string()),
    ];
    if let Sender::MessagingService(mg) = &account.sender {
        form.push(("MessagingServiceSid", mg.clone()));
    }
    form.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Posts a signed inbound SMS to `url`; returns the HTTP status.
pub(crate) async fn post(
    url: &str,
    account: &Account,
    form: &[(String, String)],
) -> Result<u16, String> {
    let public = account
        .public_url()
        .map_or_else(|| url.to_string(), |u| u.raw.clone());
    let query = url::Url::parse(url)
        .ok()
        .and_then(|u| u.query().map(String::from));
    let sig = signature::compute(
        account.auth_token.expose(),
        &signature::signed_url(&public, query.as_deref()),
        form,
    );
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    // The gateway's certificate names its public host, not 127.0.0.1.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", sig)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            format!("cannot reach the gateway at {url}: {e}; is `smsgate gateway` running?")
        })?;
    Ok(resp.status().as_u16())
}
