//! Processing admitted webhooks: opt-out keywords, the access decision, pairing
//! requests, and forwarding to the agent inbox. The decision is
//! [`crate::access::plan`]; [`effects_for`] gathers its facts and turns its outcome
//! into store changes, which [`Inbound::admit`] writes together with the message's
//! dedupe mark, as one batch under one fsync, on the store writer (so the read of the
//! access state and the write are race-free). A message is thus processed when it is
//! admitted; the spool only holds webhooks admitted by earlier versions, drained at
//! start.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::access::{self, budget, new_code, PairingRequest, Plan, PAIRING_TTL_MS};
use crate::agent::Hub;
use crate::config::{Config, DmPolicy};
use crate::live::LiveConfig;
use crate::outbound::Outbox;
use crate::phone::E164;
use crate::store::{
    Admission, AgentMessage, Effects, Hooks, InboundRecord, Media, Purpose, RejectedRecord, Seq,
    StatusUpdate, Store, StoreError, Writer,
};

/// The handles admission needs.
pub(crate) struct Inbound {
    pub writer: Writer,
    pub config: Arc<LiveConfig>,
    pub hub: Arc<Hub>,
    pub outbox: Arc<Outbox>,
    /// Wakes the media downloader.
    pub media: Arc<Notify>,
}

impl Inbound {
    /// Admits and processes one webhook: dedupe, decision and its effects are one batch;
    /// returns once that batch is on disk.
    pub(crate) async fn admit(&self, rec: InboundRecord) -> Result<Admission, StoreError> {
        let config = self.config.get();
        let (hub, outbox, media) = (self.hub.clone(), self.outbox.clone(), self.media.clone());
        self.writer
            .write(move |st, hooks| {
                let seen = st.seen(rec.sid.as_bytes())?;
                if seen.is_marked() {
                    return Ok(Admission::Duplicate);
                }
                let fx = effects_for(&config, st, &rec, rec.received_at_ms)?;
                let seq = st.admit_processed(seen, rec.received_at_ms, &fx)?;
                after_commit(hooks, fx, seq, hub, outbox, media);
                Ok(Admission::Admitted)
            })
            .await
    }

    /// Keeps a webhook that is never processed (deduplicated like admissions).
    pub(crate) async fn reject(&self, rec: RejectedRecord) -> Result<Admission, StoreError> {
        self.writer
            .write(move |st, _| st.admit_rejected(&rec))
            .await
    }

    /// Records a delivery status callback; the agent that sent the message hears of it.
    pub(crate) async fn status(
        &self,
        sid: String,
        status: String,
        error_code: Option<String>,
        now: u64,
    ) -> Result<StatusUpdate, StoreError> {
        let outbox = self.outbox.clone();
        self.writer
            .write(move |st, hooks| {
                let update = st.record_status(&sid, &status, error_code.as_deref(), now)?;
                if update == StatusUpdate::Applied {
                    hooks.after(move || outbox.status(&sid, &status, error_code.as_deref()));
                }
                Ok(update)
            })
            .await
    }

    /// Processes what earlier versions left in the spool, oldest first.
    pub(crate) async fn drain_spool(&self) {
        loop {
            let config = self.config.get();
            let (hub, outbox, media) = (self.hub.clone(), self.outbox.clone(), self.media.clone());
            let step = self
                .writer
                .write(move |st, hooks| {
                    let Some((key, rec)) = st.next_spooled()? else {
                        return Ok(false);
                    };
                    let fx = effects_for(&config, st, &rec, crate::clock::now_ms())?;
                    let seq = st.complete(key, &fx)?;
                    after_commit(hooks, fx, seq, hub, outbox, media);
                    Ok(true)
                })
                .await;
            match step {
                Ok(true) => continue,
                Ok(false) => return,
                Err(e) => {
                    tracing::error!("processing the inbound spool failed: {e}; the rest waits for the next start");
                    return;
                }
            }
        }
    }
}

/// Once the effects are durable: the agent hub and the sender learn of them.
fn after_commit(
    hooks: &mut Hooks,
    fx: Effects,
    seq: Option<Seq>,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    media: Arc<Notify>,
) {
    let Effects {
        forward,
        outbound,
        decided,
        ..
    } = fx;
    hooks.after(move || {
        if let Some(rec) = decided {
            crate::agent::approvals::log_decision(&rec);
            hub.send_line(rec.conn, crate::agent::approvals::answer_for(&rec));
        }
        if let (Some(msg), Some(seq)) = (forward, seq) {
            let pending = msg.media_pending;
            hub.enqueue(seq.0, msg);
            if pending {
                media.notify_one();
            }
        }
        if !outbound.is_empty() {
            outbox.queued(outbound);
        }
    });
}

fn media(rec: &InboundRecord) -> Vec<Media> {
    rec.sms
        .media
        .iter()
        .map(|m| Media {
            url: m.url.clone(),
            content_type: m.content_type.clone(),
            path: None,
        })
        .collect()
}

/// At most one `/new` confirmation a sender per this long.
pub(crate) const NEW_CONVERSATION_TEXT_EVERY_MS: u64 = 60_000;

/// Whether a `/new` at `now` gets its confirmation SMS, given when the sender's last
/// one was texted: not within [`NEW_CONVERSATION_TEXT_EVERY_MS`] of it. A clock that
/// went back before `last` allows one (better one text too many than none for hours).
pub(crate) fn confirms_new_conversation(last_texted_ms: Option<u64>, now: u64) -> bool {
    match last_texted_ms {
        None => true,
        Some(t) => now
            .checked_sub(t)
            .is_none_or(|since| since >= NEW_CONVERSATION_TEXT_EVERY_MS),
    }
}

/// A fresh conversation id: opaque, unguessable, never reused (not derived from the
/// number, so agents and their logs learn nothing from it).
pub(crate) fn new_conversation_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::thread_rng().gen();
    let mut id = String::with_capacity(2 + 24);
    id.push_str("c-");
    push_hex(&mut id, &bytes);
    id
}

/// Appends `bytes` as lowercase hex (two digits a byte, high nibble first).
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// Decides what one admitted message does, as the set of store changes to apply.
pub(crate) fn effects_for(
    config: &Config,
    store: &Store,
    rec: &InboundRecord,
    now: u64,
) -> Result<Effects, StoreError> {
    let mut fx = Effects {
        now,
        ..Default::default()
    };
    let Some(account) = config.sms.account(&rec.account) else {
        tracing::warn!(sid = %rec.sid, account = %rec.account, "message dropped: its account is no longer configured");
        return Ok(fx);
    };
    let from_raw = rec.sms.from.as_str();
    // A WhatsApp sender's address keeps Twilio's `whatsapp:` prefix: the sender's
    // identity (pairing, approval, opt-out, conversation, limits) is per channel.
    let Ok(from) = E164::parse_address(from_raw) else {
        tracing::warn!(sid = %rec.sid, account = %account.id, "message dropped: From is not an E.164 number");
        return Ok(fx);
    };
    // A WhatsApp sender's message opens their 24-hour window (CONTRACT §12), whatever
    // becomes of it; the texts held while it was closed go now, in this same batch
    // (they leave `W` and join the queue together, so nothing is lost or doubled).
    if from.is_whatsapp() {
        fx.whatsapp_seen = Some((account.id.clone(), from.clone()));
        let released = store.whatsapp_released(&account.id, &from, now)?;
        fx.whatsapp_released = released.iter().map(|r| r.id).collect();
        fx.outbound.extend(released);
        if !fx.whatsapp_released.is_empty() {
            tracing::info!(account = %account.id, sid = %rec.sid, from = %from.redacted(), held = fx.whatsapp_released.len(), "the person wrote again on WhatsApp: their held texts are sent");
        }
    }
    let body = rec.sms.body.as_str();
    // An approver's answer to an ask (CONTRACT §9), whatever dmPolicy says: consumed,
    // never forwarded, confirmed with one short text. Anyone else's approval-shaped
    // text is an ordinary one.
    if let Some(a) = crate::agent::approvals::answered(store, account, &from, body, now)? {
        tracing::info!(account = %account.id, sid = %rec.sid, from = %from.redacted(), "an approver's answer; consumed, not forwarded to the agent");
        fx.outbound.push(store.new_outbound(
            &account.id,
            from,
            a.confirmation,
            Purpose::Approval,
            now,
        )?);
        fx.decided = a.decided;
        return Ok(fx);
    }
    // Only the facts the account's policy can use are read: an open channel does not
    // walk the pairing area or look up approvals on every message. (`plan` reads
    // `pending` and `opted_out` only when it pairs, `approved` only for allowlist and
    // pairing.)
    let pairs = account.dm_policy == DmPolicy::Pairing;
    let (pending, expired): (Vec<PairingRequest>, Vec<PairingRequest>) = if pairs {
        store
            .pairing_requests(&account.id)?
            .into_iter()
            .partition(|r| !r.is_expired(now))
    } else {
        Default::default()
    };
    fx.expire_pairing = expired;
    let attachments = media(rec);
    let approved = match account.dm_policy {
        DmPolicy::Allowlist | DmPolicy::Pairing if !account.allow_from.allows(&from) => {
            store.is_approved(&account.id, &from)?
        }
        _ => false,
    };
    let facts = access::Facts {
        policy: account.dm_policy,
        allow_from: &account.allow_from,
        approved,
        opted_out: pairs && store.is_opted_out(&account.id, &from)?,
        pending: &pending,
        opt_out_type: access::opt_out_type(rec.sms.opt_out_type.as_deref(), &rec.sid),
        no_media: attachments.is_empty(),
    };
    let plan = access::plan(&from, body, &facts);
    let who = from.redacted();
    let sid = &rec.sid;
    match plan {
        Plan::OptOut => {
            tracing::info!(account = %account.id, %sid, from = %who, "sender opted out (STOP); nothing will be sent to them until they text START");
            fx.opt = Some((account.id.clone(), from, true));
        }
        Plan::OptIn => {
            tracing::info!(account = %account.id, %sid, from = %who, "sender opted back in (START)");
            fx.opt = Some((account.id.clone(), from, false));
        }
        Plan::Help => {
            tracing::info!(account = %account.id, %sid, from = %who, "message not forwarded: Twilio marked it HELP (OptOutType) and answers it itself");
        }
        Plan::NewConversation => {
            let id = new_conversation_id();
            // The conversation starts afresh every time; the confirmation goes at most
            // once a minute (a burst of `/new` must not become a burst of SMS).
            let last = store
                .conversation_record(&account.id, &from)?
                .and_then(|(_, at)| at);
            if confirms_new_conversation(last, now) {
                tracing::info!(account = %account.id, %sid, from = %who, conversation = %id, "new conversation started (/new); not forwarded");
                fx.outbound.push(store.new_outbound(
                    &account.id,
                    from.clone(),
                    account.texts.new_conversation(),
                    Purpose::NewConversation,
                    now,
                )?);
                fx.conversation_texted_at = Some(now);
            } else {
                tracing::info!(account = %account.id, %sid, from = %who, conversation = %id, "new conversation started (/new); not forwarded; no confirmation texted (one a minute at most)");
                fx.conversation_texted_at = last;
            }
            fx.conversation = Some((account.id.clone(), from, id));
        }
        Plan::Forward => {
            tracing::info!(account = %account.id, %sid, from = %who, "message queued for the agent");
            let media = attachments;
            // The first message of a sender starts their conversation; its id is
            // written in the same batch as the message.
            let conversation = match store.conversation(&account.id, &from)? {
                Some(id) => id,
                None => {
                    let id = new_conversation_id();
                    fx.conversation = Some((account.id.clone(), from.clone(), id.clone()));
                    id
                }
            };
            fx.forward = Some(AgentMessage {
                media_pending: !media.is_empty(),
                id: sid.clone(),
                account: account.id.clone(),
                from,
                to: rec.sms.to.clone(),
                text: body.to_string(),
                media,
                received_at_ms: rec.received_at_ms,
                conversation,
                failures: Default::default(),
                profile_name: rec.sms.profile_name.clone(),
            });
        }
        Plan::RequestPairing { send_code } => {
            let taken: Vec<&str> = pending.iter().map(|r| r.code.as_str()).collect();
            let code = std::iter::repeat_with(new_code)
                .find(|c| !taken.contains(&c.as_str()))
                .unwrap_or_else(new_code);
            tracing::info!(account = %account.id, %sid, from = %who, %code, "pairing requested; approve with: smsgate pairing approve sms {code}");
            let (to_sender, to_account) = store.pairing_text_history(&account.id, &from)?;
            match (send_code, budget::allows(&to_sender, &to_account, now)) {
                (true, Ok(())) => {
                    fx.outbound.push(store.new_outbound(
                        &account.id,
                        from.clone(),
                        account.texts.pairing_code(&code),
                        Purpose::PairingCode,
                        now,
                    )?);
                    fx.texted = Some((account.id.clone(), from.clone()));
                }
                (true, Err(why)) => {
                    tracing::warn!(account = %account.id, from = %who, "no pairing code texted: {why} (SMS cost limit)")
                }
                (false, _) => {
                    tracing::info!(account = %account.id, from = %who, "no pairing code texted: the sender has opted out")
                }
            }
            fx.new_pairing = Some(PairingRequest {
                code,
                sender: from,
                account: account.id.clone(),
                created_at_ms: now,
                expires_at_ms: now + PAIRING_TTL_MS,
            });
        }
        Plan::AlreadyPending => {
            tracing::info!(account = %account.id, %sid, from = %who, "message dropped: this sender's pairing request is still pending (no new code sent)");
        }
        Plan::PairingCapReached => {
            tracing::warn!(account = %account.id, %sid, from = %who, "message dropped: {} pairing requests are already pending, so no code was sent; approve or reject them with `smsgate pairing list`", access::MAX_PENDING_PER_ACCOUNT);
        }
        Plan::Deny(reason) => {
            tracing::info!(account = %account.id, %sid, from = %who, "message dropped: {}", reason.as_str());
        }
    }
    Ok(fx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn conversation_ids_are_c_dash_24_lowercase_hex_and_fresh() {
        let a = new_conversation_id();
        assert_eq!(a.len(), 26, "{a}");
        assert!(a.starts_with("c-"), "{a}");
        assert!(
            a[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{a}"
        );
        assert_ne!(a, new_conversation_id());
        let mut hex = String::new();
        push_hex(&mut hex, &[0x00, 0x01, 0xab, 0x9f, 0xff]);
        assert_eq!(hex, "0001ab9fff");
    }

    fn config(extra: &str) -> (tempfile::TempDir, Config, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("c.json5");
        std::fs::write(
            &path,
            format!(
                r#"{{ gateway: {{ listen: "127.0.0.1:0", stateDir: "{}" }}, channels: {{ sms: {{ accountSid: "AC0123456789abcdef0123456789abcdef", authToken: "t", fromNumber: "+15550001111", publicWebhookUrl: "https://sms.example.test/webhooks/sms", {extra} }} }} }}"#,
                dir.path().join("state").display()
            ),
        )
        .expect("write config");
        let config = crate::config::load(&path).expect("config loads");
        let store = Store::open(&config.gateway.state_dir).expect("store");
        (dir, config, store)
    }

    fn rec(sid: &str, from: &str, body: &str) -> InboundRecord {
        InboundRecord {
            sid: sid.into(),
            account: "default".into(),
            sms: crate::twilio::fields::InboundSms {
                from: from.into(),
                to: "+15550001111".into(),
                body: body.into(),
                ..Default::default()
            },
            received_at_ms: 1_000,
        }
    }

    #[test]
    fn effects_table() {
        type Check = fn(&Effects) -> bool;
        let cases: [(&str, &str, &str, Check); 6] = [
            (
                "open policy forwards",
                r#"dmPolicy: "open", allowFrom: ["*"]"#,
                "hi",
                |fx| fx.forward.as_ref().is_some_and(|m| m.text == "hi") && fx.outbound.is_empty(),
            ),
            ("pairing texts a code", "", "hi", |fx| {
                fx.forward.is_none() && fx.new_pairing.is_some() && fx.outbound.len() == 1
            }),
            (
                "STOP opts out",
                r#"dmPolicy: "open", allowFrom: ["*"]"#,
                "STOP",
                |fx| matches!(fx.opt, Some((_, _, true))) && fx.forward.is_none(),
            ),
            (
                "START opts in",
                r#"dmPolicy: "open", allowFrom: ["*"]"#,
                "START",
                |fx| matches!(fx.opt, Some((_, _, false))),
            ),
            ("disabled drops", r#"dmPolicy: "disabled""#, "hi", |fx| {
                fx.forward.is_none() && fx.outbound.is_empty() && fx.new_pairing.is_none()
            }),
            (
                "allowlist refuses a stranger",
                r#"dmPolicy: "allowlist", allowFrom: ["+15550009999"]"#,
                "hi",
                |fx| fx.forward.is_none() && fx.outbound.is_empty(),
            ),
        ];
        for (name, extra, body, check) in cases {
            let (_d, config, store) = config(extra);
            let fx = effects_for(&config, &store, &rec("SM1", "+15557654321", body), 1_000)
                .expect("effects");
            assert!(check(&fx), "{name}: {fx:?}");
        }
    }

    #[test]
    fn conversations_start_with_the_first_message_and_slash_new_replaces_them() {
        let (_d, config, store) = config(r#"dmPolicy: "open", allowFrom: ["*"]"#);
        let fx = effects_for(&config, &store, &rec("SM1", "+15557654321", "hi"), 1).expect("ok");
        let (_, _, first) = fx.conversation.clone().expect("a first message starts one");
        assert_eq!(
            fx.forward.as_ref().map(|m| m.conversation.clone()),
            Some(first.clone())
        );
        store
            .admit_processed(store.seen(b"SM1").expect("read"), 1, &fx)
            .expect("write");
        let fx = effects_for(&config, &store, &rec("SM2", "+15557654321", "again"), 2).expect("ok");
        assert!(
            fx.conversation.is_none(),
            "no write for a known conversation"
        );
        assert_eq!(fx.forward.map(|m| m.conversation), Some(first.clone()));
        let fx =
            effects_for(&config, &store, &rec("SM3", "+15557654321", "/reset"), 3).expect("ok");
        assert!(fx.forward.is_none(), "/reset is not forwarded");
        assert_eq!(fx.outbound.len(), 1, "the sender is told");
        assert_eq!(fx.outbound[0].purpose, Purpose::NewConversation);
        let (_, _, second) = fx.conversation.expect("a new id");
        assert_ne!(second, first);
    }

    #[test]
    fn new_conversation_confirmation_rule() {
        let m = NEW_CONVERSATION_TEXT_EVERY_MS;
        let cases = [
            (None, 5, true),
            (Some(1_000), 1_000, false),
            (Some(1_000), 1_000 + m - 1, false),
            (Some(1_000), 1_000 + m, true),
            (Some(1_000), 1_000 + 10 * m, true),
            // The clock went back: one is allowed.
            (Some(1_000), 999, true),
        ];
        for (last, now, want) in cases {
            assert_eq!(confirms_new_conversation(last, now), want, "{last:?} {now}");
        }
    }

    #[test]
    fn a_burst_of_slash_new_texts_one_confirmation_a_minute_and_still_starts_afresh() {
        let (_d, config, store) = config(r#"dmPolicy: "open", allowFrom: ["*"]"#);
        let mut ids = std::collections::HashSet::new();
        let mut texted = Vec::new();
        // 120 in two seconds, then one a minute later, then one 30 s after that.
        let times: Vec<u64> = (0..120)
            .map(|i| 10_000 + i * 16)
            .chain([70_000, 100_000, 130_001])
            .collect();
        for (i, now) in times.iter().enumerate() {
            let sid = format!("SM{i}");
            let fx =
                effects_for(&config, &store, &rec(&sid, "+15557654321", "/new"), *now).expect("ok");
            assert!(fx.forward.is_none());
            let (_, _, id) = fx.conversation.clone().expect("always a new conversation");
            assert!(ids.insert(id), "a fresh id every time");
            if !fx.outbound.is_empty() {
                texted.push(*now);
            }
            store
                .admit_processed(store.seen(sid.as_bytes()).expect("read"), *now, &fx)
                .expect("write");
        }
        assert_eq!(texted, [10_000, 70_000, 130_001]);
        // The stored conversation is the last one, and its value decodes.
        let (id, at) = store
            .conversation_record("default", &E164::parse("+15557654321").expect("number"))
            .expect("read")
            .expect("a conversation");
        assert!(id.starts_with("c-") && id.len() == 26, "{id}");
        assert_eq!(at, Some(130_001));
        // Another sender is not affected.
        let fx =
            effects_for(&config, &store, &rec("SMx", "+15557650000", "/new"), 10_001).expect("ok");
        assert_eq!(fx.outbound.len(), 1);
    }

    #[test]
    fn conversation_values_of_earlier_versions_still_decode() {
        use crate::store::access::{decode_conversation, encode_conversation};
        let id = "c-0123456789abcdef01234567";
        assert_eq!(decode_conversation(id.as_bytes()), (id.to_string(), None));
        assert_eq!(
            decode_conversation(&encode_conversation(id, Some(42))),
            (id.to_string(), Some(42))
        );
        assert_eq!(
            decode_conversation(&encode_conversation(id, None)),
            (id.to_string(), None)
        );
    }

    #[test]
    fn a_bad_sender_or_a_gone_account_is_dropped_not_an_error() {
        let (_d, config, store) = config(r#"dmPolicy: "open", allowFrom: ["*"]"#);
        let fx = effects_for(&config, &store, &rec("SM1", "not-a-number", "hi"), 1).expect("ok");
        assert!(fx.forward.is_none());
        let mut r = rec("SM2", "+15557654321", "hi");
        r.account = "gone".into();
        let fx = effects_for(&config, &store, &r, 1).expect("ok");
        assert!(fx.forward.is_none());
    }
}
