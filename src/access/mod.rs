//! Who may talk to the agent, as pure functions: the access decision for a sender,
//! pairing-request bookkeeping, and opt-out keywords. The processor (`crate::inbound`)
//! gathers the facts, calls [`plan`], and carries out what it returns.

pub(crate) mod allow_to;
pub(crate) mod approval;
pub(crate) mod budget;
pub(crate) mod pairing;

use crate::config::{AllowFrom, DmPolicy};
use crate::phone::E164;

pub use pairing::{new_code, PairingRequest, MAX_PENDING_PER_ACCOUNT, PAIRING_TTL_MS};

/// What a message body asks of the carrier-level opt-out machinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    OptOut,
    OptIn,
}

/// Twilio's opt-out and opt-in keywords for long codes: the whole body, one word,
/// case-insensitive, after [`normalize_keyword`]. `HELP`/`INFO` are not on the list:
/// without Advanced Opt-Out's `OptOutType: HELP` a body "help" is a message for the
/// agent like any other.
pub fn keyword(body: &str) -> Option<Keyword> {
    match normalize_keyword(body).as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE" | "OPTOUT" => {
            Some(Keyword::OptOut)
        }
        "START" | "YES" | "UNSTOP" => Some(Keyword::OptIn),
        _ => None,
    }
}

/// A body as a keyword matcher sees it: Unicode NFKC (full-width `ＳＴＯＰ` is `STOP`),
/// without invisible characters (zero-width spaces, joiners, BOMs, bidi marks, variation
/// selectors: Unicode's default-ignorable and format characters, and controls other
/// than whitespace) anywhere, trimmed of whitespace and punctuation at both ends
/// (`Stop.`, `¡STOP!`, `"stop"`), upper-cased. Punctuation inside is kept: `STOP-IT`
/// is not `STOPIT`.
pub fn normalize_keyword(body: &str) -> String {
    use icu_properties::props::{GeneralCategory, GeneralCategoryGroup};
    use icu_properties::CodePointMapData;

    // A keyword is one short word; a longer body is a message, and skipping it bounds
    // the work done on a hostile one.
    const LONGEST: usize = 1024;
    if body.len() > LONGEST {
        return String::new();
    }
    let category = CodePointMapData::<GeneralCategory>::new();
    let edge =
        |c: char| c.is_whitespace() || GeneralCategoryGroup::Punctuation.contains(category.get(c));
    if body.is_ascii() {
        // The common case, ~3x cheaper: NFKC leaves ASCII as it is, and no ASCII
        // character is default-ignorable or a format character, so only the controls go.
        // (`ascii_matches_the_general_path` checks this against the path below.)
        let visible: String = body
            .chars()
            .filter(|c| !c.is_control() || c.is_whitespace())
            .collect();
        return visible.trim_matches(edge).to_ascii_uppercase();
    }
    normalize_general(body)
}

/// [`normalize_keyword`] for any text (no length check, no ASCII shortcut).
fn normalize_general(body: &str) -> String {
    use icu_normalizer::ComposingNormalizerBorrowed;
    use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory, GeneralCategoryGroup};
    use icu_properties::{CodePointMapData, CodePointSetData};

    let category = CodePointMapData::<GeneralCategory>::new();
    let edge =
        |c: char| c.is_whitespace() || GeneralCategoryGroup::Punctuation.contains(category.get(c));
    let nfkc = ComposingNormalizerBorrowed::new_nfkc().normalize(body);
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let visible: String = nfkc
        .chars()
        .filter(|&c| {
            !(ignorable.contains(c)
                || category.get(c) == GeneralCategory::Format
                || (c.is_control() && !c.is_whitespace()))
        })
        .collect();
    visible.trim_matches(edge).to_uppercase()
}

/// Twilio's Advanced Opt-Out verdict on an inbound message (`OptOutType`): Twilio has
/// matched the body against the Messaging Service's keywords (custom ones and other
/// languages included) and answered the sender itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptOutType {
    Stop,
    Start,
    Help,
}

impl OptOutType {
    /// `STOP`, `START`, `HELP` (any case, surrounding whitespace ignored); anything else
    /// is `None`, which the caller logs and treats as no `OptOutType`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "STOP" => Some(OptOutType::Stop),
            "START" => Some(OptOutType::Start),
            "HELP" => Some(OptOutType::Help),
            _ => None,
        }
    }
}

/// The `OptOutType` field of a webhook: absent or empty is `None`; a value Twilio does
/// not document is logged (once per message) and ignored, so a new Twilio value never
/// drops a message.
pub fn opt_out_type(value: Option<&str>, sid: &str) -> Option<OptOutType> {
    let value = value.filter(|v| !v.trim().is_empty())?;
    let parsed = OptOutType::parse(value);
    if parsed.is_none() {
        let shown: String = value.chars().take(32).collect();
        tracing::warn!(%sid, "unknown OptOutType `{}` ignored: the message is handled as if it had none", shown.escape_debug());
    }
    parsed
}

/// The access decision for one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward,
    /// Unknown sender under `pairing`: may ask for a code.
    Pair,
    Deny(DenyReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    PolicyDisabled,
    NotAllowed,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::PolicyDisabled => "dmPolicy is disabled",
            DenyReason::NotAllowed => "sender is not in allowFrom or the approved senders",
        }
    }
}

/// `allowFrom` plus the account's approved senders decide; the policy says what happens
/// to everyone else.
pub fn decide(policy: DmPolicy, allow_from: &AllowFrom, approved: bool, sender: &E164) -> Decision {
    let known = approved || allow_from.allows(sender);
    match policy {
        DmPolicy::Disabled => Decision::Deny(DenyReason::PolicyDisabled),
        DmPolicy::Open => Decision::Forward,
        DmPolicy::Allowlist if known => Decision::Forward,
        DmPolicy::Allowlist => Decision::Deny(DenyReason::NotAllowed),
        DmPolicy::Pairing if known => Decision::Forward,
        DmPolicy::Pairing => Decision::Pair,
    }
}

/// Everything the processor knows about one inbound message's sender.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub policy: DmPolicy,
    pub allow_from: &'a AllowFrom,
    pub approved: bool,
    pub opted_out: bool,
    /// The account's pairing requests that have not expired.
    pub pending: &'a [PairingRequest],
    /// Twilio's Advanced Opt-Out verdict on this message, if any.
    pub opt_out_type: Option<OptOutType>,
    /// The message carries no media (`/new` with a picture is a message, not a command).
    pub no_media: bool,
}

/// What to do with one inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// STOP and friends: record the opt-out; Twilio answers the sender itself.
    OptOut,
    /// START and friends: clear the opt-out.
    OptIn,
    /// `OptOutType: HELP`: Twilio has answered it; not forwarded to the agent.
    Help,
    Forward,
    /// `/new` or `/reset` from a sender who may talk to the agent: start a new
    /// conversation (not forwarded; the sender is told).
    NewConversation,
    /// A new pairing request: store it and text the code (unless opted out).
    RequestPairing {
        send_code: bool,
    },
    /// The sender already has a pending code: no new code, no SMS.
    AlreadyPending,
    /// Three requests are pending: no code and no SMS, so strangers cannot run up a bill.
    PairingCapReached,
    Deny(DenyReason),
}

/// Opt-out first (Twilio's `OptOutType` is authoritative, our keyword list applies when
/// it is absent), then the access decision. smsgate never answers any keyword itself:
/// Twilio does.
pub fn plan(sender: &E164, body: &str, facts: &Facts<'_>) -> Plan {
    match facts.opt_out_type {
        Some(OptOutType::Stop) => return Plan::OptOut,
        Some(OptOutType::Start) => return Plan::OptIn,
        Some(OptOutType::Help) => return Plan::Help,
        None => {}
    }
    match keyword(body) {
        Some(Keyword::OptOut) => return Plan::OptOut,
        Some(Keyword::OptIn) => return Plan::OptIn,
        None => {}
    }
    match decide(facts.policy, facts.allow_from, facts.approved, sender) {
        Decision::Forward if facts.no_media && is_reset_command(body) => Plan::NewConversation,
        Decision::Forward => Plan::Forward,
        Decision::Deny(r) => Plan::Deny(r),
        Decision::Pair => match pairing::step(facts.pending, sender) {
            pairing::Step::AlreadyPending => Plan::AlreadyPending,
            pairing::Step::CapReached => Plan::PairingCapReached,
            pairing::Step::IssueNew => Plan::RequestPairing {
                send_code: !facts.opted_out,
            },
        },
    }
}

/// Whether a text asks to start afresh: exactly `/new` or `/reset`, trimmed,
/// case-insensitive (CONTRACT §7).
pub fn is_reset_command(body: &str) -> bool {
    let t = body.trim();
    t.eq_ignore_ascii_case("/new") || t.eq_ignore_ascii_case("/reset")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_commands() {
        for yes in ["/new", "/NEW", "  /reset\n", "/Reset"] {
            assert!(is_reset_command(yes), "{yes:?}");
        }
        for no in ["new", "/new please", "/ new", "/newer", "", "/"] {
            assert!(!is_reset_command(no), "{no:?}");
        }
    }

    fn n(s: &str) -> E164 {
        E164::parse(s).unwrap()
    }

    #[test]
    fn keywords() {
        for w in [
            "STOP",
            "stop",
            " Stop\n",
            "STOPALL",
            "unsubscribe",
            "CANCEL",
            "END",
            "QUIT",
            "REVOKE",
            "OPTOUT",
        ] {
            assert_eq!(keyword(w), Some(Keyword::OptOut), "{w:?}");
        }
        for w in ["START", "yes", "Unstop"] {
            assert_eq!(keyword(w), Some(Keyword::OptIn), "{w:?}");
        }
        for w in [
            "stop it",
            "HELP",
            "",
            "please stop",
            "STOP-IT",
            "S T O P",
            "🛑",
        ] {
            assert_eq!(keyword(w), None, "{w:?}");
        }
    }

    /// Issue 9, finding 10: what a phone shows as STOP is STOP.
    #[test]
    fn keyword_variants_are_normalised() {
        let cases = [
            ("Stop.", Some(Keyword::OptOut)),
            ("STOP!", Some(Keyword::OptOut)),
            ("¡stop!", Some(Keyword::OptOut)),
            ("\"STOP\"", Some(Keyword::OptOut)),
            ("“stop”", Some(Keyword::OptOut)),
            ("stop…", Some(Keyword::OptOut)),
            ("STOP。", Some(Keyword::OptOut)),
            ("ＳＴＯＰ", Some(Keyword::OptOut)),
            ("ｓｔｏｐ！", Some(Keyword::OptOut)),
            ("STOP\u{200B}", Some(Keyword::OptOut)),
            ("\u{FEFF}STOP", Some(Keyword::OptOut)),
            ("ST\u{200D}OP", Some(Keyword::OptOut)),
            ("\u{202E}STOP\u{202C}", Some(Keyword::OptOut)),
            ("STOP\u{FE0F}", Some(Keyword::OptOut)),
            ("S\u{00AD}TOP", Some(Keyword::OptOut)),
            ("\u{3000}STOP\u{00A0}", Some(Keyword::OptOut)),
            ("unsubscribe.", Some(Keyword::OptOut)),
            ("Start!", Some(Keyword::OptIn)),
            ("ＹＥＳ", Some(Keyword::OptIn)),
            ("STOP\u{0000}", Some(Keyword::OptOut)),
            ("STOPS", None),
            ("STOP 🛑", None),
            ("STOP\nNOW", None),
        ];
        for (body, want) in cases {
            assert_eq!(keyword(body), want, "{body:?}");
        }
        assert_eq!(normalize_keyword(" Ｈｅｌｌｏ, world! "), "HELLO, WORLD");
        assert_eq!(normalize_keyword(&"x".repeat(5000)), "");
    }

    #[test]
    fn ascii_matches_the_general_path() {
        // Every ASCII character alone, at each edge and inside a word.
        for b in 0u8..128 {
            let c = char::from(b);
            for body in [
                c.to_string(),
                format!("{c}stop"),
                format!("stop{c}"),
                format!("s{c}top"),
                format!(" {c}{c} "),
            ] {
                assert_eq!(
                    normalize_keyword(&body),
                    normalize_general(&body),
                    "{body:?}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn ascii_shortcut_agrees_on_any_ascii(body in "[\\x00-\\x7f]{0,40}") {
            proptest::prop_assert_eq!(normalize_keyword(&body), normalize_general(&body));
        }
    }

    #[test]
    fn opt_out_type_values() {
        let cases = [
            (None, None),
            (Some(""), None),
            (Some("STOP"), Some(OptOutType::Stop)),
            (Some("start"), Some(OptOutType::Start)),
            (Some(" HELP "), Some(OptOutType::Help)),
            (Some("UNSUBSCRIBE"), None),
            (Some("STOPSTOP"), None),
        ];
        for (value, want) in cases {
            assert_eq!(opt_out_type(value, "SM1"), want, "{value:?}");
        }
    }

    #[test]
    fn decision_table() {
        let listed = n("+15550000001");
        let stranger = n("+15550000002");
        let allow = AllowFrom {
            anyone: false,
            numbers: [listed.clone()].into(),
            ..Default::default()
        };
        let star = AllowFrom {
            anyone: true,
            ..Default::default()
        };
        use Decision::*;
        use DmPolicy::*;
        let cases = [
            (Pairing, &allow, false, &listed, Forward),
            (Pairing, &allow, false, &stranger, Pair),
            (Pairing, &allow, true, &stranger, Forward),
            (Pairing, &star, false, &stranger, Forward),
            (Allowlist, &allow, false, &listed, Forward),
            (
                Allowlist,
                &allow,
                false,
                &stranger,
                Deny(DenyReason::NotAllowed),
            ),
            (Allowlist, &allow, true, &stranger, Forward),
            (Open, &star, false, &stranger, Forward),
            (
                Disabled,
                &allow,
                true,
                &listed,
                Deny(DenyReason::PolicyDisabled),
            ),
        ];
        for (i, (policy, allow, approved, sender, want)) in cases.into_iter().enumerate() {
            assert_eq!(decide(policy, allow, approved, sender), want, "case {i}");
        }
    }

    /// CONTRACT §12: an entry without a prefix allows both channels; `sms:` and
    /// `whatsapp:` entries one channel only.
    #[test]
    fn allow_from_per_channel_table() {
        let a = |s: &str| E164::parse_address(s).unwrap();
        let list = AllowFrom {
            anyone: false,
            numbers: [a("+15550000001")].into(),
            sms_only: [a("+15550000002")].into(),
            whatsapp_only: [a("whatsapp:+15550000003")].into(),
        };
        let cases = [
            ("+15550000001", true),
            ("whatsapp:+15550000001", true),
            ("+15550000002", true),
            ("whatsapp:+15550000002", false),
            ("+15550000003", false),
            ("whatsapp:+15550000003", true),
            ("+15550000004", false),
            ("whatsapp:+15550000004", false),
        ];
        for (sender, want) in cases {
            assert_eq!(list.allows(&a(sender)), want, "{sender}");
            assert_eq!(
                decide(DmPolicy::Allowlist, &list, false, &a(sender)) == Decision::Forward,
                want,
                "{sender}"
            );
        }
        assert_eq!(
            list.entries(),
            ["+15550000001", "sms:+15550000002", "whatsapp:+15550000003"]
        );
    }

    #[test]
    fn plan_table() {
        let s = n("+15550000009");
        let empty = AllowFrom::default();
        let req = |sender: &str, code: &str| PairingRequest {
            code: code.into(),
            sender: n(sender),
            account: "default".into(),
            created_at_ms: 0,
            expires_at_ms: PAIRING_TTL_MS,
        };
        let mine = [req("+15550000009", "AAAAAAAA")];
        let three = [
            req("+15550000001", "A"),
            req("+15550000002", "B"),
            req("+15550000003", "C"),
        ];
        let facts = |approved, opted_out, pending| Facts {
            policy: DmPolicy::Pairing,
            allow_from: &empty,
            approved,
            opted_out,
            pending,
            opt_out_type: None,
            no_media: true,
        };
        let twilio = |t, approved| Facts {
            opt_out_type: Some(t),
            ..facts(approved, false, &[])
        };
        let cases: Vec<(&str, Facts, Plan)> = vec![
            (
                "hi",
                facts(false, false, &[]),
                Plan::RequestPairing { send_code: true },
            ),
            (
                "hi",
                facts(false, true, &[]),
                Plan::RequestPairing { send_code: false },
            ),
            ("hi", facts(false, false, &mine), Plan::AlreadyPending),
            ("hi", facts(false, false, &three), Plan::PairingCapReached),
            ("hi", facts(true, false, &three), Plan::Forward),
            // `/new` from someone who may talk to the agent; a stranger's is just a text.
            (" /New ", facts(true, false, &[]), Plan::NewConversation),
            ("/reset", facts(true, false, &[]), Plan::NewConversation),
            (
                "/new",
                facts(false, false, &[]),
                Plan::RequestPairing { send_code: true },
            ),
            (
                "/new",
                Facts {
                    no_media: false,
                    ..facts(true, false, &[])
                },
                Plan::Forward,
            ),
            ("STOP", facts(true, false, &[]), Plan::OptOut),
            ("start", facts(false, true, &[]), Plan::OptIn),
            ("Stop.", facts(true, false, &[]), Plan::OptOut),
            ("ＳＴＯＰ", facts(false, false, &[]), Plan::OptOut),
            // Advanced Opt-Out: Twilio's verdict wins over the body, custom keywords too.
            ("ARRET", twilio(OptOutType::Stop, true), Plan::OptOut),
            ("ARRET", twilio(OptOutType::Stop, false), Plan::OptOut),
            ("REPRENDRE", twilio(OptOutType::Start, false), Plan::OptIn),
            ("AIDE", twilio(OptOutType::Help, true), Plan::Help),
            ("STOP", twilio(OptOutType::Help, true), Plan::Help),
            ("hi", twilio(OptOutType::Help, false), Plan::Help),
        ];
        for (i, (body, f, want)) in cases.into_iter().enumerate() {
            assert_eq!(plan(&s, body, &f), want, "case {i}");
        }
    }
}
