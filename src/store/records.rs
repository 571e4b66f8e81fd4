//! What the store keeps, as serde types (stored as JSON: readable with any sled
//! tool, and tolerant of added fields across versions).

use serde::{Deserialize, Serialize};

use crate::phone::E164;
use crate::twilio::fields::InboundSms;

/// An admitted inbound message, as checked and parsed once at the webhook, waiting to
/// be processed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoredInbound")]
pub struct InboundRecord {
    pub sid: String,
    pub account: String,
    pub sms: InboundSms,
    pub received_at_ms: u64,
}

/// An inbound record as stored by any version: earlier ones kept the raw form
/// parameters (`params`), this one the parsed message (`sms`). A spool entry written
/// just before an upgrade is still processed after it.
#[derive(Deserialize)]
struct StoredInbound {
    sid: String,
    account: String,
    #[serde(default)]
    sms: Option<InboundSms>,
    #[serde(default)]
    params: Vec<(String, String)>,
    received_at_ms: u64,
}

impl From<StoredInbound> for InboundRecord {
    fn from(s: StoredInbound) -> Self {
        InboundRecord {
            sid: s.sid,
            account: s.account,
            sms: s.sms.unwrap_or_else(|| InboundSms::from_params(&s.params)),
            received_at_ms: s.received_at_ms,
        }
    }
}

/// A webhook kept but never processed (wrong AccountSid, wrong To, unusable sender).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub sid: String,
    pub account: String,
    pub reason: String,
    pub received_at_ms: u64,
}

/// A message waiting for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentMessage {
    pub id: String,
    pub account: String,
    pub from: E164,
    pub to: String,
    pub text: String,
    pub media: Vec<Media>,
    pub received_at_ms: u64,
    /// Media not yet downloaded: the message waits (and so do its sender's later ones).
    #[serde(default)]
    pub media_pending: bool,
    /// The sender's conversation when the message arrived (CONTRACT §7); empty in
    /// records written before conversations existed.
    #[serde(default)]
    pub conversation: String,
    /// What the agent's `fail` lines said so far (CONTRACT §11): absent (and not
    /// stored) until the first one.
    #[serde(default, skip_serializing_if = "AgentFailures::is_none")]
    pub failures: AgentFailures,
    /// A WhatsApp sender's `ProfileName` (CONTRACT §12); the channel is `from`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
}

/// A message's `fail` history: how often the agent failed it, when it may be
/// delivered again, and the agent's latest reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFailures {
    pub count: u32,
    /// Not delivered before this time (ms since the epoch); 0: at once.
    #[serde(default)]
    pub retry_at_ms: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl AgentFailures {
    pub fn is_none(&self) -> bool {
        *self == AgentFailures::default()
    }
}

impl AgentMessage {
    /// The conversation id for the agent: the stored one, or, for a record from
    /// before conversations, one derived from (account, sender) that stays the same.
    pub fn conversation_id(&self) -> String {
        if self.conversation.is_empty() {
            format!("{}:{}", self.account, self.from)
        } else {
            self.conversation.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub url: String,
    #[serde(rename = "contentType")]
    pub content_type: String,
    /// The local copy, once downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Where a reply to an already acknowledged message goes (no body is kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub account: String,
    pub from: E164,
    pub at_ms: u64,
}

/// A message the agent did not acknowledge within `gateway.agentQueueMaxAge`, or that
/// the agent failed for good (`fail` with `retry: false`, or too many failures; its
/// reason is in `message.failures.last_error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub message: AgentMessage,
    pub dead_at_ms: u64,
    /// Moved here by the agent's `fail` lines (`queue list` state `agent-failed`),
    /// not by age.
    #[serde(default)]
    pub agent_failed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovedSender {
    pub number: E164,
    pub account: String,
    pub approved_at_ms: u64,
}

/// Why an outbound message exists: decides who hears about its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Purpose {
    PairingCode,
    PairingApproved,
    /// The confirmation of `/new`.
    NewConversation,
    /// An approval text (CONTRACT §9): the ask to an approver, or the confirmation
    /// of their answer.
    Approval,
    Reply {
        message_id: String,
    },
    Send {
        reference: Option<String>,
    },
    Cli,
    /// The WhatsApp re-engagement template sent for a text outside the 24-hour
    /// window (CONTRACT §12).
    Reengage,
}

impl Purpose {
    /// A text smsgate sends on its own (pairing code, approval, `/new` confirmation),
    /// not the agent's or the operator's: it counts against `outboundLimits` like the
    /// agent's, but over a limit it is dropped (logged, `failed` in `queue list`), not
    /// held: a pairing code or a confirmation released hours later would be wrong.
    pub fn is_own_text(&self) -> bool {
        matches!(
            self,
            Purpose::PairingCode
                | Purpose::PairingApproved
                | Purpose::NewConversation
                | Purpose::Approval
                | Purpose::Reengage
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutboundState {
    /// Waiting for its (next) attempt.
    Queued,
    /// A request is or was in flight; after a crash this means "outcome unknown".
    Sending,
    /// The request may have reached Twilio without an answer: never retried blind
    /// (a retry could text the person twice); after a settle time Twilio is asked
    /// whether it exists (see [`crate::twilio::reconcile`]).
    Unknown,
    /// The first lookup did not find it; the second, later one decides.
    Checking,
    /// Over a spending limit (`outboundLimits`): kept, not sent, until `queue release`
    /// (or, under `releaseHeld: "auto"`, until the window allows).
    Held,
    /// Refused for good (Twilio error, opted-out recipient, too many retries).
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundRecord {
    pub id: u64,
    pub account: String,
    pub to: E164,
    pub body: String,
    #[serde(default)]
    pub media_urls: Vec<String>,
    pub purpose: Purpose,
    pub state: OutboundState,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub created_ms: u64,
    pub last_error: Option<String>,
    /// The reply or send this is one part of: its parts report back together.
    #[serde(default)]
    pub group: Option<u64>,
    #[serde(default)]
    pub part: u32,
    #[serde(default)]
    pub parts: u32,
    /// When the latest attempt started (the lookup of an unknown send starts there).
    #[serde(default)]
    pub attempted_at_ms: Option<u64>,
    /// Lookups of an unknown send that failed in a row (backoff).
    #[serde(default)]
    pub lookup_failures: u32,
    /// Sent again after lookups found no trace of the first attempt (shown in `queue list`).
    #[serde(default)]
    pub resent: bool,
    /// Twilio's error code when it refused for good (its hint is shown with it).
    #[serde(default)]
    pub last_code: Option<u32>,
    /// The limit a held send is over (`outboundLimits.perHour`, …).
    #[serde(default)]
    pub held_limit: Option<String>,
    /// Released by the operator: goes out whatever the limits say.
    #[serde(default)]
    pub released: bool,
    /// A WhatsApp template (CONTRACT §12): `ContentSid` and `ContentVariables` (JSON)
    /// instead of `Body` and `MediaUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_variables: Option<String>,
}

impl OutboundState {
    /// Still the sender's business: to send, or to look up.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            OutboundState::Queued
                | OutboundState::Unknown
                | OutboundState::Checking
                | OutboundState::Held
        )
    }
}

/// The latest delivery status of a message we sent. One is written when the send
/// goes out (with the status of Twilio's answer): its presence is what makes a SID
/// ours, so a status callback for any other SID stores nothing, and a lookup of an
/// unknown send never takes a SID that another send already holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub status: String,
    #[serde(rename = "errorCode")]
    pub error_code: Option<String>,
    /// When it was last written (the send, or the latest callback applied).
    pub at: u64,
}

/// How long a delivery status is kept after its last update: Twilio's callbacks come
/// within minutes to hours (a carrier may hold a message up to Twilio's 10-hour
/// validity, plus retries), and `channels status --probe` looks at recent sends only.
pub const STATUS_RETENTION_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Whether a status record last written at `at_ms` (`None`: unreadable) is old enough
/// at `now_ms` to be pruned. A record "from the future" (the clock stepped back) is
/// kept until it ages normally.
pub fn status_expired(at_ms: Option<u64>, now_ms: u64) -> bool {
    match at_ms {
        Some(at) => now_ms.saturating_sub(at) > STATUS_RETENTION_MS,
        // Unreadable: it answers no question any more (a callback for it is not
        // applied to it), so it goes.
        None => true,
    }
}
