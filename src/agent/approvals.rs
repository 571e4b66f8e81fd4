//! The agent's asks over the socket (CONTRACT §9): an `ask` line texts every approver
//! and waits; the first answer (an approver's SMS, read by `crate::inbound`), the
//! timeout, a `cancel` line or the connection closing decides it, and the asking
//! connection gets one `answer` line. The decisions are the pure ones of
//! [`crate::access::approval`]; every change is one writer request (the pending ask
//! and its texts, or the decision and its texts), so a restart keeps the audit.

use std::sync::Arc;

use super::hub::ConnId;
use super::protocol::answer_line;
use super::Agents;
use crate::access::approval::{self, Decision, MAX_PENDING};
use crate::clock::now_ms;
use crate::config::Account;
use crate::phone::E164;
use crate::store::{AskRecord, OutboundRecord, Purpose, Store, StoreError};
use crate::texts::Kind;

/// What an `ask` line carries.
pub(crate) struct Ask {
    pub reference: String,
    pub account: Option<String>,
    pub conversation: Option<String>,
    pub title: String,
    pub detail: String,
    pub timeout_secs: Option<u64>,
}

/// An approver as the agent and the audit show them: `+1•••4321`.
pub(crate) fn by_redacted(n: &str) -> String {
    let chars: Vec<char> = n.chars().collect();
    if chars.len() <= 6 {
        return "•••".into();
    }
    let head: String = chars[..2].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}•••{tail}")
}

/// `HH:MM UTC` of a time in ms.
pub(crate) fn clock_time(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:02}:{:02} UTC", t.hour(), t.minute())
}

/// The log line of a decision (one per decision, CONTRACT §9).
pub(crate) fn log_decision(rec: &AskRecord) {
    let decision = rec.decision.as_deref().unwrap_or("?");
    let by = rec.by.as_deref().map(crate::phone::redact_str);
    let reference = rec.reference.as_deref().unwrap_or("");
    let reason = rec.reason.as_deref().unwrap_or("");
    tracing::info!(account = %rec.account, code = %rec.code, reference, decision, by = by.as_deref().unwrap_or("-"), "approval decided: {decision}{}{reason}", if reason.is_empty() { "" } else { ": " });
}

/// The `answer` line for a decided ask.
pub(crate) fn answer_for(rec: &AskRecord) -> String {
    answer_line(
        rec.reference.as_deref(),
        rec.decision.as_deref().unwrap_or("deny"),
        rec.by.as_deref().map(by_redacted).as_deref(),
        rec.reason.as_deref(),
    )
}

/// An `ask` line: refused at once (`deny` with a reason) when nobody can answer or
/// too many asks are pending, else texted to every approver.
pub(crate) fn ask(agents: &Arc<Agents>, conn: ConnId, ask: Ask) -> Option<String> {
    let deny = |reason: &str| {
        refused_logged(agents, reason);
        Some(answer_line(
            Some(&ask.reference),
            "deny",
            None,
            Some(reason),
        ))
    };
    let config = agents.config.get();
    let account = match config.sms.resolve_account(ask.account.as_deref()) {
        Ok(a) => a.clone(),
        Err(e) => return deny(&e),
    };
    if !account.exec_approvals.active() {
        return deny(&format!("no approver: account {:?} has execApprovals off or no approver (set channels.sms execApprovals.approvers, or allowFrom numbers)", account.id));
    }
    let agents2 = agents.clone();
    let (hub, hub2) = (agents.hub.clone(), agents.hub.clone());
    let reference = ask.reference.clone();
    let rt = tokio::runtime::Handle::try_current().ok();
    agents.writer.submit(
        "an agent's ask",
        move |st, hooks| {
            let pending = st.pending_asks(None)?;
            let mine = pending.iter().filter(|r| r.account == account.id).count();
            if mine >= MAX_PENDING {
                let reason = format!("too many asks pending: account {:?} has {MAX_PENDING} waiting for an answer; wait for one to be decided", account.id);
                hooks.after(move || {
                    refused_logged(&agents2, &reason);
                    hub.send_line(conn, answer_line(Some(&ask.reference), "deny", None, Some(&reason)));
                });
                return Ok(());
            }
            let code = approval::new_code(&st.used_codes()?);
            let now = now_ms();
            let secs = approval::timeout_secs(ask.timeout_secs, account.exec_approvals.timeout_secs);
            let rec = AskRecord {
                code: code.clone(),
                account: account.id.clone(),
                conn,
                reference: Some(ask.reference),
                conversation: ask.conversation,
                title: approval::clean(&ask.title),
                detail: approval::clean(&ask.detail),
                created_at_ms: now,
                expires_at_ms: now + secs * 1000,
                decision: None,
                by: None,
                decided_at_ms: None,
                reason: None,
            };
            let chat = match &rec.conversation {
                Some(c) => st
                    .conversation_sender(&account.id, c)?
                    .map_or_else(|| "-".to_string(), |n| crate::phone::redact_str(n.as_str())),
                None => "-".to_string(),
            };
            let expires = clock_time(rec.expires_at_ms);
            let text = approval::fit(&rec.title, &rec.detail, |t, d| {
                account.texts.approval_ask(t, d, &chat, &code, &expires)
            });
            let texts = to_approvers(st, &account, &text, now)?;
            st.put_ask_with(&rec, &texts)?;
            let (outbox, account_id, n) = (agents2.outbox.clone(), account.id.clone(), texts.len());
            hooks.after(move || {
                tracing::info!(account = %account_id, code = %code, approvers = n, "the agent asks for approval; texted its approvers (expires in {secs} s)");
                outbox.queued(texts);
                if let Some(rt) = rt {
                    rt.spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                        end(&agents2, Some((account_id, code)), None, Decision::Timeout, "nobody answered in time", false);
                    });
                }
            });
            Ok(())
        },
        move |e| {
            hub2.send_line(
                conn,
                answer_line(Some(&reference), "deny", None, Some(&format!("cannot store the ask: {e}"))),
            )
        },
    );
    None
}

/// A `cancel` line: the connection's pending ask `reference` ends `cancelled`, and
/// the approvers are told.
pub(crate) fn cancel(agents: &Arc<Agents>, conn: ConnId, reference: String) {
    end(
        agents,
        None,
        Some((conn, Some(reference))),
        Decision::Cancelled,
        "the agent withdrew its ask",
        true,
    );
}

/// The connection closed: its pending asks end `cancelled`.
pub(crate) fn closed(agents: &Arc<Agents>, conn: ConnId) {
    end(
        agents,
        None,
        Some((conn, None)),
        Decision::Cancelled,
        "the asking connection closed",
        false,
    );
}

/// Ends pending asks that are still pending: the one with `code` of an account, or
/// those of a connection (with `ref`, only that one).
fn end(
    agents: &Arc<Agents>,
    by_code: Option<(String, String)>,
    by_conn: Option<(ConnId, Option<String>)>,
    decision: Decision,
    reason: &'static str,
    tell_approvers: bool,
) {
    let (hub, outbox) = (agents.hub.clone(), agents.outbox.clone());
    let config = agents.config.get();
    agents.writer.submit(
        "the end of an ask",
        move |st, hooks| {
            let asks: Vec<AskRecord> = match (&by_code, &by_conn) {
                (Some((account, code)), _) => st.pending_ask(account, code)?.into_iter().collect(),
                (None, Some((conn, reference))) => st
                    .pending_asks(None)?
                    .into_iter()
                    .filter(|r| {
                        r.conn == *conn && (reference.is_none() || r.reference == *reference)
                    })
                    .collect(),
                (None, None) => Vec::new(),
            };
            let now = now_ms();
            let mut done = Vec::new();
            for mut rec in asks {
                rec.decision = Some(decision.as_str().into());
                rec.decided_at_ms = Some(now);
                rec.reason = Some(reason.into());
                let texts = match config.sms.account(&rec.account) {
                    Some(account) if tell_approvers => {
                        let text = account
                            .texts
                            .approval_note(Kind::ApprovalCancelled, &rec.code);
                        to_approvers(st, account, &text, now)?
                    }
                    _ => Vec::new(),
                };
                st.decide_with(&rec, &texts)?;
                done.push((rec, texts));
            }
            hooks.after(move || {
                for (rec, texts) in done {
                    log_decision(&rec);
                    hub.send_line(rec.conn, answer_for(&rec));
                    if !texts.is_empty() {
                        outbox.queued(texts);
                    }
                }
            });
            Ok(())
        },
        |_| {},
    );
}

/// One text to each approver of `account` who has not opted out.
pub(crate) fn to_approvers(
    st: &Store,
    account: &Account,
    text: &str,
    now: u64,
) -> Result<Vec<OutboundRecord>, StoreError> {
    let mut out = Vec::new();
    for approver in &account.exec_approvals.approvers {
        if st.is_opted_out(&account.id, approver)? {
            continue;
        }
        out.push(st.new_outbound(
            &account.id,
            approver.clone(),
            text.to_string(),
            Purpose::Approval,
            now,
        )?);
    }
    Ok(out)
}

/// The log line of an ask refused at once, rate-limited (a hostile agent flooding asks
/// must not fill the disk).
fn refused_logged(agents: &Agents, reason: &str) {
    if let Some(suppressed) = agents.log_limit.allow(crate::clock::now_secs()) {
        let more = if suppressed > 0 {
            format!(" ({suppressed} similar lines suppressed)")
        } else {
            String::new()
        };
        tracing::warn!("the agent's ask was answered deny at once: {reason}{more}");
    }
}

/// What an approver's text does (called by `crate::inbound` on the writer thread):
/// `None` when it is not an approver's answer (an ordinary text); else the decided
/// ask (if this answer decided one) and the confirmation to text back.
pub(crate) struct Answered {
    pub decided: Option<AskRecord>,
    pub confirmation: String,
}

pub(crate) fn answered(
    st: &Store,
    account: &Account,
    from: &E164,
    body: &str,
    now: u64,
) -> Result<Option<Answered>, StoreError> {
    // The approver check first: it is cheap, and most texts are not an approver's.
    if !account.exec_approvals.is_approver(from) {
        return Ok(None);
    }
    let Some(answer) = approval::parse_answer(body) else {
        return Ok(None);
    };
    let pending = st.pending_ask(&account.id, &answer.code)?;
    let decided = match &pending {
        Some(_) => None,
        None => st
            .decided_ask(&account.id, &answer.code)?
            .and_then(|r| r.decision.as_deref().and_then(Decision::parse)),
    };
    let outcome = approval::judge(
        &account.exec_approvals.approvers,
        from,
        &answer,
        pending.is_some(),
        decided,
    );
    let note = |kind| account.texts.approval_note(kind, &answer.code);
    Ok(match outcome {
        approval::Outcome::NotApprover => None,
        approval::Outcome::Decide(d) => {
            let mut rec = pending.ok_or(StoreError::Io("a pending ask vanished".into()))?;
            rec.decision = Some(d.as_str().into());
            rec.by = Some(from.as_str().into());
            rec.decided_at_ms = Some(now);
            let kind = match d {
                Decision::AllowOnce => Kind::ApprovalAllowOnce,
                Decision::AllowAlways => Kind::ApprovalAllowAlways,
                _ => Kind::ApprovalDenied,
            };
            Some(Answered {
                decided: Some(rec),
                confirmation: note(kind),
            })
        }
        approval::Outcome::AlreadyDecided(d) => {
            tracing::info!(account = %account.id, code = %answer.code, from = %from.redacted(), "an approver answered an ask that was already decided ({}); nothing changed", d.as_str());
            let kind = match d {
                Decision::Timeout | Decision::Cancelled => Kind::ApprovalClosed,
                _ => Kind::ApprovalAlreadyDecided,
            };
            Some(Answered {
                decided: None,
                confirmation: note(kind),
            })
        }
        approval::Outcome::Unknown => {
            tracing::info!(account = %account.id, from = %from.redacted(), "an approver answered a code no ask has; nothing changed");
            Some(Answered {
                decided: None,
                confirmation: note(Kind::ApprovalUnknown),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactions_and_times() {
        assert_eq!(by_redacted("+15557654321"), "+1•••4321");
        assert_eq!(by_redacted("+12"), "•••");
        assert_eq!(clock_time(0), "00:00 UTC");
        assert_eq!(clock_time((13 * 3600 + 5 * 60) * 1000 + 999), "13:05 UTC");
    }
}
