//! The admin socket: a Unix stream socket (mode 0600), one JSON request line and one
//! JSON response line per connection. Only root and the daemon's own user get in,
//! checked with the peer's credentials, whatever the file mode.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{ops, Request, Response};
use crate::app::App;
use crate::outbound::{GroupResult, Waiter};
use crate::shutdown::Shutdown;
use crate::store::Purpose;

/// One request line: 8 MiB, room for `message send --media` with 5 MB in base64 (the
/// socket is the operator's own, 0600, and serves one request per connection).
const MAX_REQUEST: usize = crate::agent::protocol::MAX_LINE;

pub(crate) async fn run(listener: UnixListener, app: Arc<App>, mut shutdown: Shutdown) {
    let me = rustix::process::geteuid().as_raw();
    while let Some(stream) = crate::unix_socket::accept(&listener, "admin", &mut shutdown).await {
        let allowed = stream.peer_cred().map(|c| c.uid() == 0 || c.uid() == me);
        let app = app.clone();
        tokio::spawn(async move {
            let result = match allowed {
                Ok(true) => serve(stream, &app).await,
                Ok(false) => {
                    tracing::warn!(
                        "admin socket: refused a client that is neither root nor the daemon's user"
                    );
                    reply(
                        stream,
                        &Response::err("permission denied: run as root or as the daemon's user"),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::debug!("admin connection: {e}");
            }
        });
    }
}

async fn serve(stream: UnixStream, app: &App) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let n = (&mut reader)
        .take(MAX_REQUEST as u64)
        .read_line(&mut line)
        .await?;
    let stream = reader.into_inner();
    if n == 0 {
        return Ok(());
    }
    let resp = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Response::err(format!("invalid admin request: {e}")),
        Ok(Request::Status) => {
            let d = app.depths();
            Response::ok(serde_json::json!({
                "running": true,
                "pid": std::process::id(),
                "spool": app.store.spool_len(),
                "agentQueue": app.store.inbox_len(),
                "outbound": app.store.outbound_len(),
                "deadLetters": app.store.dead_len(),
                "agents": app.agents.hub.connections(),
                "connectedAgents": app.agents.hub.agents(crate::clock::now_ms()),
                // From memory: zero everywhere means nothing is left to do (tests wait
                // on this instead of sleeping).
                "waiting": d.waiting,
                // Seconds the oldest text not yet delivered to an agent has waited.
                "oldestWaitingSecs": app.agents.hub.oldest_waiting_ms()
                    .map(|t| crate::clock::now_ms().saturating_sub(t) / 1000),
                "inFlight": d.in_flight,
                "sending": d.outbound,
                "quiet": d.waiting == 0 && d.in_flight == 0 && d.outbound == 0,
                "storeWritable": app.writer.health().is_ok(),
                "quarantined": app.store.quarantined_len(),
                "configPath": app.config_file(),
            }))
        }
        Ok(Request::Reload) => match app.reload() {
            Ok(summary) => {
                tracing::info!("{summary}");
                Response::ok(serde_json::json!({ "reloaded": true, "summary": summary }))
            }
            Err(e) => {
                tracing::error!("reload refused, the running configuration is kept: {e}");
                Response::err(format!(
                    "reload refused, the running configuration is kept: {e}"
                ))
            }
        },
        Ok(Request::MessageSend {
            account,
            to,
            text,
            media,
            media_urls,
        }) => {
            use base64::Engine as _;
            let mut items = Vec::with_capacity(media.len());
            let mut bad = None;
            for (i, m) in media.into_iter().enumerate() {
                match base64::engine::general_purpose::STANDARD.decode(m.data.as_bytes()) {
                    Ok(data) => items.push(crate::mms::Item {
                        data,
                        content_type: None,
                        filename: m.filename,
                    }),
                    Err(e) => {
                        bad = Some(format!("media item {}: not base64: {e}", i + 1));
                        break;
                    }
                }
            }
            match bad {
                Some(e) => Response::err(e),
                None => message_send(app, account.as_deref(), &to, &text, media_urls, items).await,
            }
        }
        Ok(req) => {
            // On the writer: the operation's reads and writes are race-free against
            // admissions, and its changes share the writer's fsync.
            let config = app.config();
            let (hub, outbox) = (app.agents.hub.clone(), app.outbox.clone());
            let ran = app
                .writer
                .write(move |st, hooks| {
                    let (resp, outcome) = ops::execute(st, &config, &req);
                    // The queues learn of what the operation changed from snapshots
                    // read in the same write and applied by its hook, in commit order
                    // with every other change to them (see `Outbox::reload_in`).
                    if outcome.queued_sms {
                        if let Err(e) = outbox.reload_in(st, hooks) {
                            tracing::error!("cannot read the outbound queue: {e}");
                        }
                    }
                    if outcome.requeued_message {
                        match st.inbox() {
                            Ok(inbox) => hooks.after(move || hub.load(inbox)),
                            Err(e) => tracing::error!("cannot read the agent inbox: {e}"),
                        }
                    }
                    Ok(resp)
                })
                .await;
            match ran {
                Ok(resp) => resp,
                Err(e) => Response::err(e.to_string()),
            }
        }
    };
    reply(stream, &resp).await
}

/// `message send` through the daemon's queue; waits for Twilio's answer for a while.
async fn message_send(
    app: &App,
    account: Option<&str>,
    to: &str,
    text: &str,
    media_urls: Vec<String>,
    media: Vec<crate::mms::Item>,
) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiter = Waiter::Once(tx);
    let planned = match app.outbox.plan(
        &app.config(),
        &app.store,
        account,
        crate::outbound::Destination::address(to),
        text,
        media_urls,
        media,
        Purpose::Cli,
        waiter,
    ) {
        Ok(p) => p,
        Err(r) => return Response::err(r.message),
    };
    let group = planned.group;
    let outbox = app.outbox.clone();
    let written = app
        .writer
        .write(move |st, hooks| {
            st.enqueue(&planned.records)?;
            st.put_media(&planned.media)?;
            hooks.after(move || {
                tracing::info!(account = %planned.account, to = %planned.to.redacted(), parts = planned.records.len(), "queued for sending");
                outbox.queued(planned.records);
            });
            Ok(())
        })
        .await;
    if let Err(e) = written {
        app.outbox.abandon(group);
        return Response::err(format!("cannot queue the message: {e}"));
    }
    match tokio::time::timeout(std::time::Duration::from_secs(25), rx).await {
        Ok(Ok(GroupResult::Sent { sids, segments })) => {
            Response::ok(serde_json::json!({"sids": sids, "segments": segments, "queued": false}))
        }
        Ok(Ok(GroupResult::Failed { message, code })) => Response::err(match code {
            Some(c) => format!("{message} (Twilio error {c})"),
            None => message,
        }),
        Ok(Err(_)) | Err(_) => {
            Response::ok(serde_json::json!({"sids": [], "segments": 0, "queued": true}))
        }
    }
}

async fn reply(mut stream: UnixStream, resp: &Response) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

use tokio::io::AsyncReadExt as _;
