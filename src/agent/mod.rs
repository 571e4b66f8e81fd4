//! The agent side: the socket a local agent connects to, the hub that delivers
//! messages and carries replies into the outbound queue, media downloads for MMS, and
//! the built-in agents (`agent echo`, `agent exec`).

pub mod exec;
pub mod hub;
pub mod media;
pub mod protocol;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{App, Shutdown};
use crate::twilio::Creds;

pub use hub::Hub;

/// Downloads MMS media for messages that wait for it, then lets the hub deliver them.
pub async fn fetch_media(app: Arc<App>, mut shutdown: Shutdown) {
    let dir = app.config().gateway.state_dir.join("media");
    loop {
        let pending: Vec<_> = match app.store.inbox() {
            Ok(i) => i.into_iter().filter(|(_, m)| m.media_pending).collect(),
            Err(e) => {
                tracing::error!("cannot read the inbox: {e}");
                Vec::new()
            }
        };
        for (seq, mut msg) in pending {
            let config = app.config();
            let Some(account) = config.sms.account(&msg.account) else {
                msg.media_pending = false;
                let _ = app.store.put_inbox(seq, &msg);
                continue;
            };
            let http = match media::client(&account.api_base_url) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("cannot build the media client: {e}");
                    continue;
                }
            };
            let fetched =
                media::download_all(&http, &Creds::of(account), &msg.id, &msg.media, &dir).await;
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
            msg.media_pending = false;
            if let Err(e) = app.store.put_inbox(seq, &msg) {
                tracing::error!("cannot update {}: {e}", msg.id);
            }
            app.agents.pump(&app);
        }
        tokio::select! {
            () = app.wake_media.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
            () = shutdown.wait() => return,
        }
    }
}

/// Dead letters and old reply routes, once a minute.
pub async fn maintain(app: Arc<App>, mut shutdown: Shutdown) {
    loop {
        let max_age = app.config().gateway.agent_queue_max_age.as_millis() as u64;
        app.agents.expire(&app, max_age);
        if let Err(e) = app.store.prune_routes(crate::store::now_ms(), max_age) {
            tracing::warn!("pruning reply routes failed: {e}");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = shutdown.wait() => return,
        }
    }
}
