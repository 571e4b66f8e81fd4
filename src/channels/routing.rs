//! Where Twilio sends an account's inbound SMS: its number (`IncomingPhoneNumbers`,
//! looked up by `PhoneNumber`) or its Messaging Service. Fetched here, once, for both
//! `channels status --probe` ([`super::probe`]) and `channels setup` ([`super::setup`]).

use serde_json::Value;

use crate::config::Account;
use crate::phone::E164;
use crate::twilio::{Creds, HttpTwilio, RestError};

pub(crate) fn api_base(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

/// A URL without its `#fragment` (Twilio neither signs nor sends it).
pub(crate) fn strip_fragment(url: &str) -> &str {
    url.split_once('#').map_or(url, |(base, _)| base)
}

/// The account's REST resource of its number `pn` (a `PN…` SID), where setup posts.
pub(crate) fn number_url(account: &Account, pn: &str) -> String {
    format!(
        "{}/2010-04-01/Accounts/{}/IncomingPhoneNumbers/{pn}.json",
        api_base(&account.api_base_url),
        account.account_sid
    )
}

/// The Messaging Service `mg`'s resource, read by the probe and posted to by setup.
pub(crate) fn service_url(account: &Account, mg: &str) -> String {
    format!(
        "{}/v1/Services/{mg}",
        api_base(&account.messaging_api_base_url)
    )
}

/// Why a number cannot be probed or set up: it is not one of the account's.
pub(crate) fn not_ours(number: &E164) -> String {
    format!("{} is not a number of this Twilio account", number.number())
}

/// The account's number `number` as Twilio has it (`sid`, `sms_url`, `sms_method`,
/// `sms_fallback_url`, `sms_application_sid`, …); `Ok(None)` when it is not one of the
/// account's numbers.
pub(crate) async fn incoming_number(
    http: &HttpTwilio,
    account: &Account,
    number: &E164,
) -> Result<Option<Value>, RestError> {
    let q: String = form_urlencoded::Serializer::new(String::new())
        // A WhatsApp sender's number is the account's number without `whatsapp:`.
        .append_pair("PhoneNumber", number.number())
        .finish();
    let url = format!(
        "{}/2010-04-01/Accounts/{}/IncomingPhoneNumbers.json?{q}",
        api_base(&account.api_base_url),
        account.account_sid
    );
    let mut v = http.get_json(&Creds::of(account), &url).await?;
    Ok(v.get_mut("incoming_phone_numbers")
        .and_then(Value::as_array_mut)
        .filter(|l| !l.is_empty())
        .map(|l| l.swap_remove(0)))
}

/// The Messaging Service `mg` as Twilio has it (`inbound_request_url`,
/// `inbound_method`, `fallback_url`, `use_inbound_webhook_on_number`, …).
pub(crate) async fn messaging_service(
    http: &HttpTwilio,
    account: &Account,
    mg: &str,
) -> Result<Value, RestError> {
    http.get_json(&Creds::of(account), &service_url(account, mg))
        .await
}
