//! HTTP-01 answers (`gateway.tls.acme.http01Listen`): a tiny plain-HTTP listener that
//! serves `/.well-known/acme-challenge/<token>` and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::http::serve::{self, Limits};
use crate::shutdown::Shutdown;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// Pending tokens and their key authorizations.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Arc<RwLock<HashMap<String, String>>>);

impl Tokens {
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), key_authorization.to_string());
    }

    pub fn remove(&self, token: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// The body for a request path, if it asks for a pending token.
    pub fn answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(PREFIX)?;
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}

/// Open connections at most on the HTTP-01 listener. A CA validates from a handful of
/// vantage points, one request each; strangers beyond the cap are evicted, oldest idle
/// first, so they can neither exhaust descriptors nor lock the CA out.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// Serves challenge answers until shutdown, through the same serve loop (cap, idle
/// clock, rate-limited logs) as the webhook listener.
pub(crate) async fn serve(listener: TcpListener, tokens: Tokens, mut stop: Shutdown) {
    let handler = move |req: hyper::Request<serve::Body>| {
        let answer = tokens.answer(req.uri().path());
        async move {
            let found = answer.is_some();
            let mut rsp = hyper::Response::new(Full::new(Bytes::from(
                answer.unwrap_or_else(|| "not found\n".into()),
            )));
            if !found {
                *rsp.status_mut() = hyper::StatusCode::NOT_FOUND;
            }
            rsp
        }
    };
    let limits = Limits::new("HTTP-01", MAX_CONNECTIONS);
    serve::serve(
        listener,
        None,
        limits,
        handler,
        async move { stop.wait().await },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pending_tokens_are_answered() {
        let t = Tokens::default();
        t.insert("abc", "abc.thumb");
        let cases = [
            ("/.well-known/acme-challenge/abc", Some("abc.thumb")),
            ("/.well-known/acme-challenge/abd", None),
            ("/.well-known/acme-challenge/", None),
            ("/abc", None),
            ("/", None),
        ];
        for (path, want) in cases {
            assert_eq!(t.answer(path).as_deref(), want, "{path}");
        }
        t.remove("abc");
        assert_eq!(t.answer("/.well-known/acme-challenge/abc"), None);
    }
}
