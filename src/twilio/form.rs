//! The webhook's form body: parsed into ordered name/value pairs, and the fields we
//! read from it.

/// Parses an `application/x-www-form-urlencoded` body. Never fails: invalid UTF-8 is
/// replaced (such a body then fails the signature check, which is the right answer).
///
/// The same result as `form_urlencoded::parse(body).into_owned()` (a property test
/// holds it to that), in one pass per field and one allocation per name or value: it
/// runs on every webhook, and the general version's `Cow` steps and lossy UTF-8 scan
/// were ~8% of a webhook's instructions.
pub fn parse(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (decode(&pair[..eq]), decode(&pair[eq + 1..])),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// One name or value: `+` is a space, `%XX` a byte (a `%` not followed by two hex
/// digits stays as it is), then UTF-8 with invalid sequences replaced.
fn decode(raw: &[u8]) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = if raw.iter().any(|&b| b == b'+' || b == b'%') {
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let escaped = match raw.get(i..i + 3) {
                Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| h << 4 | l),
                _ => None,
            };
            match (escaped, raw[i]) {
                (Some(byte), _) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                (None, b'+') => out.push(b' '),
                (None, b) => out.push(b),
            }
            i += 1;
        }
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(raw)
    };
    match std::str::from_utf8(&bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
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

    #[test]
    fn decoding_table() {
        type Case<'a> = (&'a [u8], &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            (b"", &[]),
            (b"&&", &[]),
            (b"a", &[("a", "")]),
            (b"a=", &[("a", "")]),
            (b"=b", &[("", "b")]),
            (b"a=b=c", &[("a", "b=c")]),
            (b"a+b=c+d", &[("a b", "c d")]),
            (b"k=%2B%2b%41", &[("k", "++A")]),
            (b"k=%", &[("k", "%")]),
            (b"k=%4", &[("k", "%4")]),
            (b"k=%zz%4g", &[("k", "%zz%4g")]),
            (b"k=%+1", &[("k", "% 1")]),
            (b"k=%E2%9C%93", &[("k", "\u{2713}")]),
            (b"k=%FF", &[("k", "\u{FFFD}")]),
            (b"k=\xff", &[("k", "\u{FFFD}")]),
            (b"a=1&&b=2&", &[("a", "1"), ("b", "2")]),
        ];
        for (body, want) in cases {
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(parse(body), want, "{:?}", String::from_utf8_lossy(body));
        }
    }

    proptest::proptest! {
        #[test]
        fn same_as_form_urlencoded(body in proptest::collection::vec(
            proptest::sample::select(b"ab=&+%2BfFg\xc3\xa9\xff".to_vec()), 0..64)) {
            let general: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
            proptest::prop_assert_eq!(parse(&body), general);
        }

        #[test]
        fn same_as_form_urlencoded_on_any_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let general: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
            proptest::prop_assert_eq!(parse(&body), general);
        }

        #[test]
        fn arbitrary_bytes_parse_without_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let params = parse(&body);
            let _ = message_sid(&params);
            let _ = delivery_status(&params);
            let _ = super::super::signature::is_valid(&["t"], "https://a/x", Some("q"), &params, "AAAA");
        }
    }
}
