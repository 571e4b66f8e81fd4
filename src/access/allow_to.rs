//! Whom the agent may text on its own (CONTRACT §9 `allowTo`), and which destinations
//! no send may have, as pure functions. The outbound planner (`Outbox::plan`) gathers
//! the facts, asks [`decide`], and looks a sender's approval up only when the verdict
//! is [`Verdict::IfApproved`].
//!
//! Only the agent's `send` lines are limited: a `reply` answers the person who texted,
//! and the operator's `smsgate message send` is the operator's own word. The built-in
//! bridges (`agent acp`, `agent openai`) and `agent exec` only reply, so they are never
//! limited; anything that makes them `send` goes through the same check.

use crate::config::{Account, AllowFrom, AllowTo, Config, Sender};
use crate::phone::E164;

/// What the account already knows about people, for the default `allowTo` (unset).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known<'a> {
    pub allow_from: &'a AllowFrom,
    pub default_to: Option<&'a E164>,
    /// Numbers that answer approvals (`execApprovals.approvers`), see [`approvers`].
    pub approvers: &'a [E164],
}

/// The answer for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// Allowed only if `to` is an approved (paired) sender of the account: the caller
    /// reads the store (the one fact this module cannot hold).
    IfApproved,
    Refused,
}

/// May the agent text `to` on its own? `allow_to` is the account's `allowTo`: set, it
/// replaces the default list (CONTRACT §9); unset, the people already known to the
/// account: its `allowFrom` numbers (`"*"` there, open mode, does not count), its
/// `defaultTo`, its approvers, and its approved senders.
///
/// `allowTo`, `defaultTo` and the approvers name numbers, which they allow on both
/// channels; `allowFrom` entries and approvals are per channel (CONTRACT §12).
pub(crate) fn decide(allow_to: Option<&AllowTo>, known: &Known<'_>, to: &E164) -> Verdict {
    let number = to.on(crate::phone::Channel::Sms);
    match allow_to {
        Some(list) if list.permits(&number) => Verdict::Allowed,
        Some(_) => Verdict::Refused,
        None => {
            let listed = known.allow_from.lists(to)
                || known.default_to == Some(&number)
                || known.approvers.contains(&number);
            if listed {
                Verdict::Allowed
            } else {
                Verdict::IfApproved
            }
        }
    }
}

/// The approvers named by the account's `execApprovals.approvers`, which count as known
/// people for the default `allowTo` whether or not approvals are enabled. The default
/// approvers (the `allowFrom` numbers, else `defaultTo`) are already known people.
pub(crate) fn approvers(account: &Account) -> Vec<E164> {
    account.exec_approvals.listed.clone()
}

/// The sentence of a refused send (the agent's `error` line; the number is the agent's
/// own input, so it is shown whole there, never in the log).
pub(crate) fn refusal(account: &Account, to: &E164) -> String {
    let scope = if account.allow_to.is_some() {
        "is not in its allowTo list"
    } else {
        "is not one of the people it knows (allowFrom numbers, approved senders, defaultTo, approvers), and it has no allowTo"
    };
    format!(
        "not allowed: account {:?} may not text {to} on its own: the number {scope}; a reply to a message still reaches its sender, and the operator can add the number to channels.sms allowTo (a number, a prefix such as \"+44*\", or \"*\")",
        account.id
    )
}

/// The account whose own number `to` is, if any: no send goes to one of the gateway's
/// own numbers (it would come back as a webhook, a loop a hostile agent could drive,
/// and Twilio refuses it anyway with 21266). Accounts behind a Messaging Service have
/// no number of their own in the config.
pub(crate) fn own_number<'a>(config: &'a Config, to: &E164) -> Option<&'a str> {
    config
        .sms
        .accounts
        .iter()
        .find(|a| {
            let own = |s: &Sender| matches!(s, Sender::Number(n) if n.number() == to.number());
            own(&a.sender) || a.whatsapp.as_ref().is_some_and(|w| own(&w.sender))
        })
        .map(|a| a.id.as_str())
}

/// The sentence for a send to one of the gateway's own numbers.
pub(crate) fn own_number_refusal(account: &str) -> String {
    format!("{OWN}: it is the fromNumber of account {account:?}; a text to it would come back to smsgate as a webhook")
}

const OWN: &str = "not sent: the destination is one of this gateway's own numbers";

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> E164 {
        E164::parse(s).unwrap()
    }

    fn allow_to(entries: &[&str]) -> AllowTo {
        let mut a = AllowTo::default();
        for e in entries {
            a.add(e).unwrap();
        }
        a
    }

    #[test]
    fn decide_table() {
        let friend = "+15557654321";
        let mut allow_from = AllowFrom::default();
        allow_from.numbers.insert(n(friend));
        let open = AllowFrom {
            anyone: true,
            ..Default::default()
        };
        let default_to = n("+15557650000");
        let approver = [n("+15557659999")];
        let known = Known {
            allow_from: &allow_from,
            default_to: Some(&default_to),
            approvers: &approver,
        };
        let open_known = Known {
            allow_from: &open,
            default_to: None,
            approvers: &[],
        };
        use Verdict::*;
        let cases: Vec<(&str, Option<AllowTo>, &Known, &str, Verdict)> = vec![
            ("unset: allowFrom number", None, &known, friend, Allowed),
            ("unset: defaultTo", None, &known, "+15557650000", Allowed),
            ("unset: approver", None, &known, "+15557659999", Allowed),
            (
                "unset: a stranger may be an approved sender",
                None,
                &known,
                "+15550009999",
                IfApproved,
            ),
            (
                "unset: open mode's * widens nothing",
                None,
                &open_known,
                friend,
                IfApproved,
            ),
            (
                "set: listed number",
                Some(allow_to(&[friend])),
                &known,
                friend,
                Allowed,
            ),
            (
                "set replaces the default: defaultTo",
                Some(allow_to(&[friend])),
                &known,
                "+15557650000",
                Refused,
            ),
            (
                "set replaces the default: approver",
                Some(allow_to(&["+44*"])),
                &known,
                "+15557659999",
                Refused,
            ),
            (
                "set: a stranger, never looked up",
                Some(allow_to(&[friend])),
                &known,
                "+15550009999",
                Refused,
            ),
            (
                "set empty: nobody",
                Some(AllowTo::default()),
                &known,
                friend,
                Refused,
            ),
            (
                "prefix matches",
                Some(allow_to(&["+44*"])),
                &known,
                "+442071234567",
                Allowed,
            ),
            (
                "prefix does not match",
                Some(allow_to(&["+44*"])),
                &known,
                "+4512345678",
                Refused,
            ),
            (
                "prefix +1555* matches +15551…",
                Some(allow_to(&["+1555*"])),
                &known,
                "+15551234567",
                Allowed,
            ),
            (
                "prefix +15551* misses +15550…",
                Some(allow_to(&["+15551*"])),
                &known,
                "+15550234567",
                Refused,
            ),
            (
                "a longer prefix than the number",
                Some(allow_to(&["+1555123456789*"])),
                &known,
                "+15551234567",
                Refused,
            ),
            (
                "* is anyone",
                Some(allow_to(&["*"])),
                &known,
                "+819012345678",
                Allowed,
            ),
            (
                "prefixes are read like numbers",
                Some(allow_to(&[" SMS:+44* "])),
                &known,
                "+442071234567",
                Allowed,
            ),
        ];
        for (name, list, k, to, want) in cases {
            assert_eq!(decide(list.as_ref(), k, &n(to)), want, "{name}");
        }
    }

    #[test]
    fn entries_table() {
        type Want = Result<(bool, usize, usize), &'static str>;
        let cases: &[(&str, Want)] = &[
            ("*", Ok((true, 0, 0))),
            (" * ", Ok((true, 0, 0))),
            ("+15557654321", Ok((false, 1, 0))),
            ("sms:+15557654321", Ok((false, 1, 0))),
            ("+44*", Ok((false, 0, 1))),
            ("+1*", Ok((false, 0, 1))),
            ("+12345678901234*", Ok((false, 0, 1))),
            ("+123456789012345*", Err("prefix pattern")),
            ("+*", Err("prefix pattern")),
            ("44*", Err("prefix pattern")),
            ("+0*", Err("prefix pattern")),
            ("+4*4", Err("E.164")),
            ("+44**", Err("prefix pattern")),
            ("**", Err("prefix pattern")),
            ("+1555", Err("only 4 digits")),
            ("12345", Err("short code")),
            ("", Err("E.164")),
            ("+4４*", Err("prefix pattern")),
        ];
        for (entry, want) in cases {
            let mut a = AllowTo::default();
            match (a.add(entry), want) {
                (Ok(()), Ok((anyone, numbers, prefixes))) => {
                    assert_eq!(
                        (a.anyone, a.numbers.len(), a.prefixes.len()),
                        (*anyone, *numbers, *prefixes),
                        "{entry:?}"
                    );
                }
                (Err(e), Err(needle)) => {
                    assert!(e.contains(needle), "{entry:?}: {e}");
                    assert!(e.contains("\"*\""), "names the fix: {e}");
                }
                (got, want) => panic!("{entry:?}: {got:?}, wanted {want:?}"),
            }
        }
    }
}
