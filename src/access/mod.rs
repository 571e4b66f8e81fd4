//! Who may talk to the agent, as pure functions: the access decision for a sender,
//! pairing-request bookkeeping, and opt-out keywords. The processor (`crate::inbound`)
//! gathers the facts, calls [`plan`], and carries out what it returns.

pub mod budget;
pub mod pairing;

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
/// case-insensitive, surrounding whitespace ignored.
pub fn keyword(body: &str) -> Option<Keyword> {
    let word = body.trim().to_ascii_uppercase();
    match word.as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "REVOKE" | "OPTOUT" => {
            Some(Keyword::OptOut)
        }
        "START" | "YES" | "UNSTOP" => Some(Keyword::OptIn),
        _ => None,
    }
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
}

/// What to do with one inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// STOP and friends: record the opt-out; Twilio answers the sender itself.
    OptOut,
    /// START and friends: clear the opt-out.
    OptIn,
    Forward,
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

pub fn plan(sender: &E164, body: &str, facts: &Facts<'_>) -> Plan {
    match keyword(body) {
        Some(Keyword::OptOut) => return Plan::OptOut,
        Some(Keyword::OptIn) => return Plan::OptIn,
        None => {}
    }
    match decide(facts.policy, facts.allow_from, facts.approved, sender) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        for w in ["stop it", "HELP", "", "STOP!", "please stop"] {
            assert_eq!(keyword(w), None, "{w:?}");
        }
    }

    #[test]
    fn decision_table() {
        let listed = n("+15550000001");
        let stranger = n("+15550000002");
        let allow = AllowFrom {
            anyone: false,
            numbers: [listed.clone()].into(),
        };
        let star = AllowFrom {
            anyone: true,
            numbers: Default::default(),
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
            ("STOP", facts(true, false, &[]), Plan::OptOut),
            ("start", facts(false, true, &[]), Plan::OptIn),
        ];
        for (i, (body, f, want)) in cases.into_iter().enumerate() {
            assert_eq!(plan(&s, body, &f), want, "case {i}");
        }
    }
}
