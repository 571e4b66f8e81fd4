//! The HTTP(S) listener Twilio calls: hyper 1 with HTTP/1.1 and HTTP/2, optional
//! rustls TLS, connection cap, and timeouts so a slow client cannot hold a connection.

pub mod error;
pub mod tls;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::app::App;

/// How long a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long draining in-flight requests may take at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// Serves webhooks on `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight requests finish (bounded by [`DRAIN_TIMEOUT`]).
pub async fn run(
    listener: TcpListener,
    tls: Option<tls::TlsAcceptor>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let max = app.config().gateway.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max, "connection refused: gateway.maxConnections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(webhook::handle(&app, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(64 * 1024);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(64);
            macro_rules! serve {
                ($io:expr) => {{
                    let conn = builder.serve_connection(TokioIo::new($io), service);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => r,
                        () = async { let _ = closing.wait_for(|c| *c).await; } => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    }
                }};
            }
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) if s.get_ref().1.alpn_protocol() == Some(tls::ACME_TLS_ALPN) => {
                            // A CA validating TLS-ALPN-01: the handshake was the answer.
                            tracing::debug!(%peer, "answered an acme-tls/1 challenge handshake");
                            return;
                        }
                        Ok(Ok(s)) => serve!(s),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                None => serve!(stream),
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection holds a permit; when all are back, every request is done.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(max as u32)).await;
    if drained.is_err() {
        tracing::warn!(
            "some connections were still open after {}s; closing them",
            DRAIN_TIMEOUT.as_secs()
        );
    }
}
