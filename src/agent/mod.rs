//! The agent side: the socket a local agent connects to, the hub that delivers
//! messages, media downloads for MMS, and the built-in agents (`agent echo`,
//! `agent exec`).

pub(crate) mod approvals;
pub(crate) mod exec;
pub(crate) mod hub;
pub mod protocol;
pub(crate) mod server;

use std::sync::Arc;
use std::time::Duration;

use crate::live::LiveConfig;
use crate::shutdown::Shutdown;
use crate::store::{Store, Writer};
use crate::twilio::{media, Creds};

pub use hub::Hub;

/// Runs an agent-side client (`agent exec`, the bridges) against the gateway's agent
/// socket: `session` for each connection, reconnecting every second (the gateway may
/// start later or restart), one warning per outage, until `stop`.
pub async fn connect_loop<F, Fut>(
    socket: &std::path::Path,
    what: &str,
    stop: &mut Shutdown,
    mut session: F,
) where
    F: FnMut(tokio::net::UnixStream) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut warned = false;
    loop {
        match tokio::net::UnixStream::connect(socket).await {
            Ok(stream) => {
                warned = false;
                tracing::info!("{what} connected to the gateway at {}", socket.display());
                tokio::select! {
                    () = session(stream) => tracing::warn!("the gateway closed the connection; reconnecting"),
                    () = stop.wait() => return,
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("cannot connect to {} ({e}); is `smsgate gateway` running? retrying every second", socket.display());
                    warned = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.wait() => return,
        }
    }
}

/// The wait before a failed message is delivered again the first time:
/// [`crate::store::FIRST_AGENT_RETRY_MS`] (30 s), or `SMSGATE_AGENT_RETRY_MS` (tests,
/// and operators who want faster retries), read once.
pub fn retry_first_ms() -> u64 {
    static FIRST: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *FIRST.get_or_init(|| {
        crate::clock::env_span("SMSGATE_AGENT_RETRY_MS")
            .filter(|ms| *ms > 0)
            .unwrap_or(crate::store::FIRST_AGENT_RETRY_MS)
    })
}

/// The handles the agent socket and its helpers need.
pub struct Agents {
    pub hub: Arc<Hub>,
    pub outbox: Arc<crate::outbound::Outbox>,
    pub store: Arc<Store>,
    pub writer: Writer,
    pub config: Arc<LiveConfig>,
    /// Bad agent lines are logged at this rate at most.
    pub log_limit: crate::logging::LogLimiter,
    /// Sent bytes unread this long: the agent is not reading ([`server::NOT_READING`]).
    pub not_reading_after: Duration,
}

/// Downloads MMS media for messages that wait for it, then lets the hub deliver them.
pub async fn fetch_media(
    agents: Arc<Agents>,
    wake: Arc<tokio::sync::Notify>,
    mut shutdown: Shutdown,
) {
    let dir = agents.config.get().gateway.state_dir.join("media");
    // One HTTP client (its connection pool, its TLS setup) per API base, built once:
    // not one per message. Keyed by the URL, so an account reloaded onto another base
    // gets a client for it.
    let mut clients: std::collections::HashMap<String, reqwest::Client> =
        std::collections::HashMap::new();
    loop {
        for (seq, mut msg) in agents.hub.media_pending() {
            let config = agents.config.get();
            if let Some(account) = config.sms.account(&msg.account) {
                let base = account.api_base_url.as_str().to_string();
                let http = match clients.get(&base) {
                    Some(c) => c.clone(),
                    None => match media::client(&account.api_base_url) {
                        Ok(c) => {
                            clients.insert(base, c.clone());
                            c
                        }
                        Err(e) => {
                            tracing::error!("cannot build the media client: {e}");
                            continue;
                        }
                    },
                };
                let fetched = media::download_all(
                    &http,
                    &Creds::of(account),
                    &msg.id,
                    &msg.media,
                    &dir,
                    account.media_max_bytes,
                )
                .await;
                for (i, f) in fetched.into_iter().enumerate() {
                    if let Some(m) = msg.media.get_mut(i) {
                        m.path = f.path.map(|p| p.display().to_string());
                    }
                    if let Some(e) = f.error {
                        tracing::warn!(id = %msg.id, "attachment {i} not downloaded: {e}");
                        msg.text.push_str(&format!(
                            "\n[attachment {} ({}) could not be downloaded: {e}]",
                            i + 1,
                            f.content_type
                        ));
                    }
                }
            }
            msg.media_pending = false;
            let hub = agents.hub.clone();
            let m = msg.clone();
            let written = agents
                .writer
                .write(move |st, hooks| {
                    st.put_inbox(seq, &m)?;
                    hooks.after(move || hub.enqueue(seq, m));
                    Ok(())
                })
                .await;
            if let Err(e) = written {
                tracing::error!("cannot update {}: {e}", msg.id);
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// How often the "texts wait and no agent is connected" line is repeated.
pub const NO_AGENT_NOTICE_EVERY: Duration = Duration::from_secs(60);

/// Whether to log that texts wait with no agent connected: when texts wait and no
/// agent is connected, at once and then once every [`NO_AGENT_NOTICE_EVERY`] while it
/// lasts (`since_last`: how long ago it was last said, `None` if not since it began).
pub fn no_agent_notice_due(
    waiting: usize,
    connections: usize,
    since_last: Option<Duration>,
) -> bool {
    waiting > 0 && connections == 0 && since_last.is_none_or(|d| d >= NO_AGENT_NOTICE_EVERY)
}

/// "3 min" style ages for people.
pub fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Paces senders over `inboundLimits.perSenderPerMinute`: keeps the hub's limits in
/// step with the config and pumps when a held-back message may go. Also says, once a
/// minute, when texts wait and no agent is connected (the commonest reason a text
/// "vanishes" for a new user).
pub async fn pace(agents: Arc<Agents>, mut shutdown: Shutdown) {
    let mut said: Option<std::time::Instant> = None;
    loop {
        let counts = agents.hub.counts();
        if counts.waiting == 0 || counts.connections > 0 {
            said = None;
        } else if no_agent_notice_due(
            counts.waiting,
            counts.connections,
            said.map(|t| t.elapsed()),
        ) {
            let oldest = agents
                .hub
                .oldest_waiting_ms()
                .map(|t| human_age(crate::clock::now_ms().saturating_sub(t)))
                .unwrap_or_default();
            tracing::warn!(
                waiting = counts.waiting,
                "{} text(s) waiting for an agent (the oldest for {oldest}) and no agent is connected: start one (`smsgate agent exec -- CMD`, `smsgate agent acp -- CMD`, see docs/agents.md); they are kept and delivered when one connects",
                counts.waiting
            );
            said = Some(std::time::Instant::now());
        }
        let config = agents.config.get();
        agents.hub.set_inbound_limits(
            config
                .sms
                .accounts
                .iter()
                .map(|a| (a.id.clone(), a.inbound_per_sender_per_minute))
                .collect(),
        );
        agents.hub.prune_rates(crate::clock::now_ms());
        agents.hub.pump();
        // Until the next held-back message may go; at least every few seconds so a
        // reloaded limit takes effect.
        let wait = agents.hub.next_release().map_or(5_000, |at| {
            at.saturating_sub(crate::clock::now_ms()).clamp(10, 5_000)
        });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait)) => {}
            // A failed message may be due before the sleep ends.
            () = agents.hub.release_changed.notified() => {}
            () = shutdown.wait() => return,
        }
    }
}

/// Dead letters and old reply routes, once a minute.
pub async fn maintain(agents: Arc<Agents>, mut shutdown: Shutdown) {
    loop {
        let max_age = agents.config.get().gateway.agent_queue_max_age.as_millis() as u64;
        let now = crate::clock::now_ms();
        let expired = agents.hub.take_expired(now.saturating_sub(max_age));
        for (seq, msg) in expired {
            let (id, account) = (msg.id.clone(), msg.account.clone());
            let hub = agents.hub.clone();
            let m = msg.clone();
            match agents
                .writer
                .write(move |st, _| st.dead_letter(seq, &m, now))
                .await
            {
                Ok(()) => {
                    tracing::warn!(%id, %account, "no agent acknowledged this message within gateway.agentQueueMaxAge; moved to the dead letters (`smsgate queue list`)")
                }
                Err(e) => {
                    tracing::error!("cannot move {id} to the dead letters: {e}");
                    hub.enqueue(seq, msg);
                }
            }
        }
        let pruned = agents
            .writer
            .write(move |st, _| st.prune_routes(now, max_age))
            .await;
        if let Err(e) = pruned {
            tracing::warn!("pruning reply routes failed: {e}");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = shutdown.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_agent_notice_table() {
        let m = NO_AGENT_NOTICE_EVERY;
        let cases = [
            (0, 0, None, false),
            (3, 1, None, false),
            (3, 0, None, true),
            (3, 0, Some(Duration::from_secs(59)), false),
            (3, 0, Some(m), true),
            (0, 0, Some(m), false),
        ];
        for (waiting, conns, since, want) in cases {
            assert_eq!(
                no_agent_notice_due(waiting, conns, since),
                want,
                "{waiting} {conns} {since:?}"
            );
        }
        assert_eq!(human_age(5_400), "5 s");
        assert_eq!(human_age(125_000), "2 min");
        assert_eq!(human_age(3_900_000), "1 h 5 min");
        assert_eq!(human_age(90_000_000), "1 d 1 h");
    }
}
