//! What a Twilio error code means and what the operator can do about it.
//!
//! One table, so the log line, the agent's `error`/`status` lines, `queue list` and
//! `channels status --probe` all say the same thing for the same code. The wording is
//! ours, checked against Twilio's error dictionary (twilio.com/docs/api/errors/NNNNN).

/// The explanation of one Twilio error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    pub code: u32,
    /// What happened, in a few words.
    pub meaning: &'static str,
    /// What to do about it.
    pub action: &'static str,
}

impl Hint {
    /// One sentence for text output and the JSON `hint` field.
    pub fn sentence(&self) -> String {
        format!("{}: {}", self.meaning, self.action)
    }
}

impl std::fmt::Display for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.meaning, self.action)
    }
}

const TABLE: &[Hint] = &[
    Hint {
        code: 11200,
        meaning: "Twilio could not get a 200 from the webhook",
        action: "check that publicWebhookUrl is reachable from the internet within 15 s, that its certificate is publicly trusted, and the gateway's log",
    },
    Hint {
        code: 20003,
        meaning: "Twilio rejected the credentials",
        action: "check accountSid and authToken against the Twilio Console; a rotated token goes in authToken (the old one in previousAuthTokens)",
    },
    Hint {
        code: 20404,
        meaning: "Twilio has no such resource in this account",
        action: "check accountSid (and apiBaseUrl, if set) against the Twilio Console: the account, number or service is not there",
    },
    Hint {
        code: 20429,
        meaning: "too many concurrent requests to Twilio",
        action: "nothing to do: smsgate retries with backoff",
    },
    Hint {
        code: 21211,
        meaning: "the recipient number is not valid",
        action: "use an E.164 number with its country code, e.g. +15557654321",
    },
    Hint {
        code: 21408,
        meaning: "this account may not send SMS to that country",
        action: "enable the country in the Twilio Console under Messaging > Settings > Geo permissions",
    },
    Hint {
        code: 21606,
        meaning: "the sender number cannot send SMS",
        action: "set fromNumber to an SMS-capable number of this account, or use messagingServiceSid",
    },
    Hint {
        code: 21608,
        meaning: "a trial account can only text verified numbers",
        action: "verify the recipient under Phone Numbers > Verified Caller IDs, or upgrade the account",
    },
    Hint {
        code: 21610,
        meaning: "the recipient replied STOP",
        action: "nothing is sent to them until they text START",
    },
    Hint {
        code: 21612,
        meaning: "Twilio cannot route a message between this sender and recipient",
        action: "send from a number that can reach the recipient's country and carrier (or a Messaging Service with one)",
    },
    Hint {
        code: 21614,
        meaning: "the recipient is not a mobile number",
        action: "texts cannot reach a landline; ask the person for a mobile number",
    },
    Hint {
        code: 21617,
        meaning: "the message body is longer than 1,600 characters",
        action: "lower textChunkLimit (at most 1600) so long replies are split",
    },
    Hint {
        code: 30003,
        meaning: "the recipient's phone is unreachable (off or out of coverage)",
        action: "nothing to fix on our side; it may arrive if sent again later",
    },
    Hint {
        code: 30004,
        meaning: "the message was blocked by the recipient or their carrier",
        action: "the person may have blocked the number; ask them another way",
    },
    Hint {
        code: 30005,
        meaning: "the recipient number is unknown or no longer in service",
        action: "check the number with the person",
    },
    Hint {
        code: 30006,
        meaning: "the recipient is a landline or its carrier cannot take SMS",
        action: "ask the person for a mobile number",
    },
    Hint {
        code: 30007,
        meaning: "the carrier filtered the message as spam",
        action: "register the number (A2P 10DLC or toll-free verification), avoid URL shorteners and repeated identical texts",
    },
    Hint {
        code: 30008,
        meaning: "the carrier reported an unknown error",
        action: "try again later; if it persists, contact Twilio support with the message SID",
    },
    Hint {
        code: 30034,
        meaning: "this number is not registered for US A2P 10DLC",
        action: "send through a Messaging Service with an approved campaign (messagingServiceSid)",
    },
    Hint {
        code: 30035,
        meaning: "this number's A2P 10DLC registration is still pending",
        action: "wait for the campaign's approval, then send again",
    },
    Hint {
        code: 63007,
        meaning: "Twilio has no WhatsApp sender for this From address",
        action: "check whatsapp.from (or the Messaging Service's WhatsApp sender) in the Twilio Console; for a first try use the Sandbox's +14155238886",
    },
    Hint {
        code: 63016,
        meaning: "outside WhatsApp's 24-hour window, only an approved template may be sent",
        action: "set whatsapp.templates.reengage to an approved template (HX…): smsgate then sends it and holds the text until the person answers",
    },
];

/// The hint for `code`, if the table has one.
pub(crate) fn hint(code: u32) -> Option<&'static Hint> {
    TABLE.iter().find(|h| h.code == code)
}

/// The hint sentence for an optional code (what JSON output carries as `hint`).
pub(crate) fn sentence(code: Option<u32>) -> Option<String> {
    code.and_then(hint).map(Hint::sentence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_an_operator_meets_has_a_hint() {
        let needed = [
            20003, 21211, 21408, 21608, 21610, 21612, 21614, 21617, 30003, 30004, 30005, 30006,
            30007, 30008, 30034, 30035, 11200, 63007, 63016,
        ];
        for code in needed {
            let h = hint(code).unwrap_or_else(|| panic!("no hint for {code}"));
            assert_eq!(h.code, code);
            assert!(!h.meaning.is_empty() && !h.action.is_empty());
        }
    }

    #[test]
    fn table_has_no_duplicates_and_unknown_codes_have_none() {
        let mut codes: Vec<u32> = TABLE.iter().map(|h| h.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), TABLE.len());
        assert_eq!(hint(99999), None);
        assert_eq!(sentence(None), None);
        assert_eq!(
            sentence(Some(30034)).as_deref(),
            Some("this number is not registered for US A2P 10DLC: send through a Messaging Service with an approved campaign (messagingServiceSid)")
        );
    }
}
