//! The webhook's form body: parsed into ordered name/value pairs, and the fields we
//! read from it.

/// Parses an `application/x-www-form-urlencoded` body. Never fails: invalid UTF-8 is
/// replaced (such a body then fails the signature check, which is the right answer).
pub fn parse(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// First value of a field.
pub fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The message SID, from `MessageSid` or its aliases `SmsSid` and `SmsMessageSid`.
pub fn message_sid(params: &[(String, String)]) -> Option<&str> {
    ["MessageSid", "SmsSid", "SmsMessageSid"]
        .iter()
        .find_map(|name| field(params, name))
        .filter(|v| !v.is_empty())
}

/// The delivery status a status callback carries (`MessageStatus`, legacy
/// `SmsStatus`), or `None` for an inbound message (`received`/`receiving`).
pub fn delivery_status(params: &[(String, String)]) -> Option<&str> {
    let status = field(params, "MessageStatus").or_else(|| field(params, "SmsStatus"))?;
    match status {
        "received" | "receiving" => None,
        s => Some(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_aliases() {
        let p = parse(b"SmsSid=SM1&Body=hi+there%21&From=%2B15551234567&MediaUrl=a&MediaUrl=b");
        assert_eq!(message_sid(&p), Some("SM1"));
        assert_eq!(field(&p, "Body"), Some("hi there!"));
        assert_eq!(field(&p, "From"), Some("+15551234567"));
        assert_eq!(p.iter().filter(|(k, _)| k == "MediaUrl").count(), 2);
        assert_eq!(message_sid(&parse(b"SmsMessageSid=SM2")), Some("SM2"));
        assert_eq!(message_sid(&parse(b"MessageSid=")), None);
        assert_eq!(message_sid(&parse(b"Body=x")), None);
    }

    #[test]
    fn status_callbacks_told_apart() {
        assert_eq!(delivery_status(&parse(b"SmsStatus=received")), None);
        assert_eq!(delivery_status(&parse(b"MessageStatus=receiving")), None);
        assert_eq!(
            delivery_status(&parse(b"MessageStatus=delivered")),
            Some("delivered")
        );
        assert_eq!(delivery_status(&parse(b"SmsStatus=sent")), Some("sent"));
        assert_eq!(delivery_status(&parse(b"Body=x")), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_parse_without_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let params = parse(&body);
            let _ = message_sid(&params);
            let _ = delivery_status(&params);
            let _ = super::super::signature::is_valid(&["t"], "https://a/x", Some("q"), &params, "AAAA");
        }
    }
}
