//! The admin socket: a Unix stream socket (mode 0600), one JSON request line and one
//! JSON response line per connection. Only root and the daemon's own user get in,
//! checked with the peer's credentials, whatever the file mode.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::{ops, Request, Response};
use crate::agent::hub::{GroupResult, Waiter};
use crate::daemon::{App, Shutdown};
use crate::store::Purpose;

const MAX_REQUEST: usize = 64 * 1024;

pub async fn run(listener: UnixListener, app: Arc<App>, mut shutdown: Shutdown) {
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
        Ok(Request::Status) => Response::ok(serde_json::json!({
            "running": true,
            "pid": std::process::id(),
            "spool": app.store.spool_len(),
            "agentQueue": app.store.inbox_len(),
            "outbound": app.store.outbound_len(),
            "deadLetters": app.store.dead_len(),
            "agents": app.agents.connections(),
            "configPath": app.config_file(),
        })),
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
        Ok(Request::MessageSend { account, to, text }) => {
            message_send(app, account.as_deref(), &to, &text).await
        }
        Ok(req) => {
            let _guard = app.access_lock.lock().await;
            let (resp, outcome) = ops::execute(&app.store, &app.config(), &req);
            if outcome.queued_sms {
                app.wake_outbound.notify_one();
            }
            if outcome.requeued_message {
                app.agents.pump(app);
            }
            resp
        }
    };
    reply(stream, &resp).await
}

/// `message send` through the daemon's queue; waits for Twilio's answer for a while.
async fn message_send(app: &App, account: Option<&str>, to: &str, text: &str) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let waiter = Waiter::Once(tx);
    if let Err(r) = app.agents.queue_text(
        app,
        account,
        Some(to),
        text,
        Vec::new(),
        Purpose::Cli,
        waiter,
    ) {
        return Response::err(r.message);
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
