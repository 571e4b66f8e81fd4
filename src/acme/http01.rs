//! HTTP-01 answers (`gateway.tls.acme.http01Listen`): a tiny plain-HTTP listener that
//! serves `/.well-known/acme-challenge/<token>` and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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

/// Serves challenge answers until shutdown.
pub async fn serve(listener: TcpListener, tokens: Tokens, mut stop: Shutdown) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("HTTP-01 listener: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.wait() => return,
        };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let answer = tokens.answer(req.uri().path());
                async move {
                    let mut rsp = hyper::Response::new(Full::new(Bytes::from(
                        answer.clone().unwrap_or_else(|| "not found\n".into()),
                    )));
                    if answer.is_none() {
                        *rsp.status_mut() = hyper::StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(rsp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
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
