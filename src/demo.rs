//! `smsgate demo`: the whole flow on one machine, no Twilio account needed. A gateway
//! on a free port with a temporary state dir, a local stand-in for Twilio's REST API,
//! and the echo agent; a made-up phone texts in, gets a pairing code, is approved, and
//! gets the agent's reply.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::mpsc;

use crate::admin::{client, Request};
use crate::agent::exec::Responder;
use crate::daemon::Daemon;
use crate::shutdown::Shutdown;

const PHONE: &str = "+15550100001";
const NUMBER: &str = "+15550006789";

/// A text the stand-in received: (To, Body).
type Texted = (String, String);

/// A stand-in for Twilio's Messages API: accepts every create and reports it.
async fn stand_in() -> Result<(SocketAddr, mpsc::UnboundedReceiver<Texted>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0u32;
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            n += 1;
            let base = n;
            tokio::spawn(async move {
                let counter = std::sync::atomic::AtomicU32::new(0);
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let form: Vec<(String, String)> =
                                form_urlencoded::parse(&body).into_owned().collect();
                            let get = |k: &str| {
                                form.iter()
                                    .find(|(n, _)| n == k)
                                    .map(|(_, v)| v.clone())
                                    .unwrap_or_default()
                            };
                            let _ = tx.send((get("To"), get("Body")));
                            let sid = format!("SM{base:016x}{i:016x}");
                            let reply =
                                json!({"sid": sid, "status": "queued", "num_segments": "1"})
                                    .to_string();
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(reply)));
                            *resp.status_mut() = hyper::StatusCode::CREATED;
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, rx))
}

async fn next_text(rx: &mut mpsc::UnboundedReceiver<Texted>) -> Result<Texted> {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .map_err(|_| anyhow!("the stand-in for Twilio received nothing within 15 s"))?
        .ok_or_else(|| anyhow!("the stand-in for Twilio stopped"))
}

/// The demo's temporary directory, removed when dropped (on every exit but kill -9).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory `smsgate-demo-<pid>-<nanos>` in the system's temp dir, named
    /// on stderr so that an operator (or a test) can see where the demo works.
    pub(crate) fn create() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("smsgate-demo-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "smsgate demo: working in {} (removed on exit)",
            dir.display()
        );
        Ok(Self(dir))
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How the demo ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    /// Stopped by this signal (SIGINT, SIGTERM or SIGHUP).
    Interrupted(u8),
}

/// Listens for SIGINT, SIGTERM and SIGHUP from now on (registered before the demo
/// starts, so a signal during its start is not the default's death); resolves with the
/// first to arrive, never when none can be listened for.
fn interrupted() -> impl std::future::Future<Output = u8> {
    use tokio::signal::unix::{signal, SignalKind};
    let streams = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    );
    async move {
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = streams else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => libc::SIGINT as u8,
            _ = term.recv() => libc::SIGTERM as u8,
            _ = hup.recv() => libc::SIGHUP as u8,
        }
    }
}

/// Runs the demo in `dir` until it is done or a signal stops it; the caller removes
/// `dir` (see [`TempDir`]).
pub(crate) async fn run(dir: &std::path::Path) -> Result<Outcome> {
    let signal = interrupted();
    tokio::select! {
        signal = signal => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "smsgate demo: interrupted; removing {}", dir.display());
            Ok(Outcome::Interrupted(signal))
        }
        r = run_in(dir) => r.map(|()| Outcome::Done),
    }
}

async fn run_in(dir: &std::path::Path) -> Result<()> {
    let (twilio_addr, mut texts) = stand_in().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let public = format!("http://{addr}/webhooks/sms");
    let raw = json!({
        "gateway": {
            "listen": addr.to_string(),
            "stateDir": dir.join("state"),
            "agentSocket": dir.join("agent.sock"),
            "adminSocket": dir.join("admin.sock"),
        },
        "channels": { "sms": {
            "accountSid": "AC00000000000000000000000000000000",
            "authToken": "demo-auth-token",
            "fromNumber": NUMBER,
            "publicWebhookUrl": public,
            "apiBaseUrl": format!("http://{twilio_addr}"),
        }},
    });
    let config = crate::config::validate::validate_value(&raw, &crate::config::Env::default())
        .map_err(|e| anyhow!("demo config: {e}"))?;
    let account = config
        .sms
        .accounts
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("demo config has no account"))?;
    let twilio = Arc::new(crate::twilio::HttpTwilio::new().map_err(|e| anyhow!(e))?);
    let daemon = Daemon::open(config.clone(), None, twilio).await?;
    let (stop_tx, stop) = Shutdown::new();
    let mut stop_serve = stop.clone();
    let server = tokio::spawn(async move {
        daemon
            .serve(listener, async move { stop_serve.wait().await })
            .await
    });
    let agent = tokio::spawn(crate::agent::exec::run(
        config.gateway.agent_socket.clone(),
        Responder::Echo,
        4,
        stop.clone(),
    ));

    println!("smsgate demo");
    println!(
        "  gateway         http://{addr}/webhooks/sms (state in {})",
        dir.display()
    );
    println!("  Twilio stand-in http://{twilio_addr} (plays Twilio's REST API)");
    println!(
        "  agent           the echo agent, on {}",
        config.gateway.agent_socket.display()
    );
    println!();

    let outcome = async {
        let texted = |n: usize, to: &str, body: &str| println!("{n}. Twilio stand-in got a text to {to}:\n     {body:?}");
        let text = "Hi! Is this my agent?";
        let status = crate::simulate::post(&public, &account, &crate::simulate::inbound_form(&account, &crate::simulate::message_sid(), PHONE, text)).await.map_err(|e| anyhow!(e))?;
        println!("1. {PHONE} texts {NUMBER}: {text:?}\n     webhook answered {status} (stored before answering)");
        if status != 200 {
            bail!("the webhook answered {status}");
        }
        let (to, body) = next_text(&mut texts).await?;
        texted(2, &to, &body);
        let code: String = body.split("code is ").nth(1).unwrap_or_default().chars().take(8).collect();
        let cfg = config.clone();
        let approve = Request::PairingApprove { code: code.clone() };
        tokio::task::spawn_blocking(move || client::call_or_direct(&cfg, &approve)).await?.map_err(|e| anyhow!("{e}"))?;
        println!("3. the operator runs: smsgate pairing approve sms {code}");
        let (to, body) = next_text(&mut texts).await?;
        texted(4, &to, &body);
        let text = "What's **2+2**? Reply in _one_ word.";
        let status = crate::simulate::post(&public, &account, &crate::simulate::inbound_form(&account, &crate::simulate::message_sid(), PHONE, text)).await.map_err(|e| anyhow!(e))?;
        println!("5. {PHONE} texts again: {text:?}\n     webhook answered {status}; the message goes to the agent");
        let (to, body) = next_text(&mut texts).await?;
        texted(6, &to, &body);
        println!("     (the echo agent's reply, markdown flattened for SMS)");
        Ok(())
    }
    .await;
    let _ = stop_tx.send(true);
    let _ = agent.await;
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("gateway: {e}"),
        Err(e) => bail!("gateway task: {e}"),
    }
    outcome?;
    println!();
    println!("Done: the whole flow worked. Next: the README's Twilio setup, and `smsgate agent exec -- your-cli` for a real agent.");
    Ok(())
}
