//! The webhook's untrusted input: the form body, the signature header, the settings
//! header and the request query, plus the configured URL.
//!
//! Input layout: up to five fields separated by a 0xFF byte (never part of valid
//! UTF-8, so realistic seeds are easy to write):
//! `body 0xFF public_url 0xFF query 0xFF X-Twilio-Signature 0xFF settings-header`.
//! Missing fields are empty; non-UTF-8 text fields are read lossily.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use smsgate::twilio::{form, signature};

const TOKEN: &str = "token";

fn text(field: Option<&[u8]>) -> Cow<'_, str> {
    String::from_utf8_lossy(field.unwrap_or_default())
}

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(5, |b| *b == 0xFF);
    let body = fields.next().unwrap_or_default();
    let url = text(fields.next());
    let query = text(fields.next());
    let sig = text(fields.next());
    let header = text(fields.next());

    let params = form::parse(body);
    if let Some(sid) = form::message_sid(&params) {
        assert!(!sid.is_empty(), "message_sid returned an empty SID");
    }
    if let Some(status) = form::delivery_status(&params) {
        assert!(status != "received" && status != "receiving");
    }

    // The signature as sent must never panic, whatever it is.
    let _ = signature::is_valid(&[TOKEN], &url, Some(&query), &params, &sig);
    let _ = signature::settings(Some(&header));

    // url_variants: the URL as written comes first, and at most one variant follows.
    let variants = signature::url_variants(&url);
    assert_eq!(
        variants[0], *url,
        "url_variants must start with the URL itself"
    );
    assert!(variants.len() <= 2, "url_variants gave {variants:?}");

    // What Twilio would send for this request always validates (round trip), and a
    // different token never does.
    let signed = signature::signed_url(&url, Some(&query));
    let good = signature::compute(TOKEN, &signed, &params);
    assert!(
        signature::is_valid(&[TOKEN], &url, Some(&query), &params, &good),
        "the signature Twilio would compute was rejected: url={url:?} query={query:?}"
    );
    assert!(!signature::is_valid(
        &["other-token"],
        &url,
        Some(&query),
        &params,
        &good
    ));
});
