//! The webhook path after the body is read: form parsing, the signature, and the field
//! shapes (`twilio::fields::check`), plus the re-split attack of issue 9: every way of
//! letting one signed parameter swallow the next keeps the signature valid, and must
//! never produce a message with a different SID that passes the field check. Also the
//! opt-out keyword normaliser on the `Body`, and `OptOutType`.
//!
//! Input layout: the raw form body (any bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use smsgate::access;
use smsgate::twilio::{fields, form, signature};

const TOKEN: &str = "token";
const URL: &str = "https://sms.example.test/webhooks/sms";

fuzz_target!(|data: &[u8]| {
    let params = form::parse(data);
    let checked = fields::check(&params);
    if let Ok(f) = &checked {
        assert!(fields::is_sid(f.sid, &["SM", "MM"]), "bad SID accepted: {:?}", f.sid);
        assert!(f.num_media <= fields::MAX_MEDIA);
        assert!(!matches!(f.delivery_status, Some("received" | "receiving")));
        for i in 0..f.num_media {
            let name = format!("MediaUrl{i}");
            assert!(form::field(&params, &name).is_some(), "{name} missing");
        }
        for alias in fields::SID_ALIASES {
            if let Some(v) = form::field(&params, alias) {
                assert_eq!(v, f.sid, "{alias} disagrees with the SID");
            }
        }
    }
    if let Some(body) = form::field(&params, "Body") {
        let _ = access::keyword(body);
    }
    let _ = access::OptOutType::parse(form::field(&params, "OptOutType").unwrap_or_default());

    // The re-split: sorted as signed, pair i+1 swallowed by pair i's value.
    let sig = signature::compute(TOKEN, URL, &params);
    assert!(signature::is_valid(&[TOKEN], URL, None, &params, &sig));
    let mut sorted = params.clone();
    sorted.sort();
    sorted.dedup();
    for i in 0..sorted.len().saturating_sub(1).min(64) {
        let mut forged = sorted.clone();
        let (name, value) = forged.remove(i + 1);
        forged[i].1 = format!("{}{name}{value}", forged[i].1);
        if !signature::is_valid(&[TOKEN], URL, None, &forged, &sig) {
            continue;
        }
        // Only bodies Twilio could have signed matter: ones that pass the check. (A
        // refused body, say with a 20-digit SID, may be completed into a valid one by
        // its neighbour; Twilio never signs such a body.)
        if let (Ok(original), Ok(f)) = (&checked, fields::check(&forged)) {
            assert_eq!(
                f.sid, original.sid,
                "a re-split signed body passes as a new message: {forged:?}"
            );
        }
    }
});
