//! The HTTP(S) listener Twilio calls: hyper 1 with HTTP/1.1 and HTTP/2, optional
//! rustls TLS. The connection cap and the timeouts are [`serve`]'s, shared with the
//! other TCP listeners.

pub(crate) mod error;
pub(crate) mod forwarded;
pub(crate) mod media;
pub(crate) mod serve;
pub(crate) mod tls;
pub(crate) mod webhook;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;

/// Descriptors kept free for everything but webhook connections: the HTTP-01 and
/// metrics listeners at their caps, the store's files, agent and admin connections,
/// outbound HTTPS to Twilio, and stdio.
const RESERVED_FDS: usize =
    crate::acme::http01::MAX_CONNECTIONS + crate::metrics::MAX_CONNECTIONS + 192;

/// Serves webhooks on `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight requests finish (bounded by [`serve::DRAIN_TIMEOUT`]).
pub(crate) async fn run(
    listener: TcpListener,
    tls: Option<tls::TlsAcceptor>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let requested = app.config().gateway.max_connections;
    let fd_limit = serve::fd_limit();
    let max = serve::affordable_cap(requested, fd_limit, RESERVED_FDS);
    if max < requested {
        tracing::warn!(
            "gateway.maxConnections is {requested} but the open-file limit ({}) leaves room for {max} webhook connections; serving at most {max} (raise the limit: LimitNOFILE= in the systemd unit, --ulimit nofile= in Docker)",
            fd_limit.unwrap_or_default()
        );
    }
    let mut limits = serve::Limits::new("webhook", max);
    limits.http2 = true;
    limits.trusted_proxies = Arc::new(app.config().gateway.trusted_proxies.clone());
    let handler = move |req| {
        let app = app.clone();
        async move { webhook::handle(&app, req).await }
    };
    serve::serve(listener, tls, limits, handler, shutdown).await;
}
