//! One page of Twilio's `Messages.json` listing, read into the fields a lookup of an
//! unknown send matches on ([`super::reconcile::find_match`]). Read by the REST client
//! page by page; matched by [`super::reconcile`].

use serde_json::Value;

/// One message from Twilio's list, the fields the match needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub sid: String,
    /// `to` and `from` as Twilio lists them (E.164); `None` when missing.
    pub to: Option<String>,
    pub from: Option<String>,
    pub body: String,
    /// Milliseconds since the epoch, from `date_created` (RFC 2822), if readable.
    pub created_ms: Option<u64>,
    pub direction: String,
    pub messaging_service_sid: Option<String>,
}

/// Reads one page of `Messages.json`: the messages and the next page's URI.
pub(crate) fn parse_page(v: &Value) -> Result<(Vec<Listed>, Option<String>), String> {
    let list = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("Twilio's message list has no \"messages\" array")?;
    let s = |m: &Value, k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
    let messages = list
        .iter()
        .filter_map(|m| {
            Some(Listed {
                sid: s(m, "sid")?,
                to: s(m, "to"),
                from: s(m, "from"),
                body: s(m, "body").unwrap_or_default(),
                created_ms: s(m, "date_created").and_then(|d| parse_rfc2822_ms(&d)),
                direction: s(m, "direction").unwrap_or_default(),
                messaging_service_sid: s(m, "messaging_service_sid"),
            })
        })
        .collect();
    let next = s(v, "next_page_uri").filter(|u| !u.is_empty());
    Ok((messages, next))
}

fn parse_rfc2822_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pages() {
        let page = json!({
            "messages": [
                {"sid": "SM1", "body": "hi", "date_created": "Tue, 01 Dec 2026 12:00:00 +0000", "direction": "outbound-api"},
                {"body": "no sid: skipped"},
            ],
            "next_page_uri": "/2010-04-01/Accounts/AC1/Messages.json?Page=1",
        });
        let (list, next) = parse_page(&page).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].created_ms, Some(1_796_126_400_000));
        assert_eq!(
            next.as_deref(),
            Some("/2010-04-01/Accounts/AC1/Messages.json?Page=1")
        );
        assert!(parse_page(&json!({"messages": "x"})).is_err());
        assert!(parse_page(&json!([])).is_err());
        let (empty, next) = parse_page(&json!({"messages": [], "next_page_uri": null})).unwrap();
        assert!(empty.is_empty() && next.is_none());
    }
}
