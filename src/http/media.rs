//! The media route (CONTRACT §10): `GET`/`HEAD /media/<token>/<filename>` on the webhook
//! listener serves what an agent sent, for Twilio to fetch. Nothing else: an unknown,
//! malformed or expired token, or a filename that is not the item's, is 404; no
//! listing, no ranges. It runs inside the listener's serve loop, so its connection
//! caps, rate limits and slow-client protections are the webhook's.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Method, Request, Response, StatusCode};

use crate::app::App;

/// The route's prefix.
pub(crate) const PREFIX: &str = "/media/";

/// Splits `/media/<token>/<filename>` into its parts (token: 32 hex digits).
pub(crate) fn parse_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (token, filename) = rest.split_once('/')?;
    let ok = token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !filename.is_empty()
        && !filename.contains('/');
    ok.then_some((token, filename))
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

pub(crate) fn handle<B>(app: &App, req: &Request<B>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let not_found = || plain(StatusCode::NOT_FOUND, "not found\n");
    let Some((token, filename)) = parse_path(req.uri().path()) else {
        return not_found();
    };
    let meta = match app.store.media_meta(token) {
        Ok(Some(m)) if m.filename == filename => m,
        Ok(_) => return not_found(),
        Err(e) => {
            tracing::warn!("media route: cannot read the store: {e}");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n");
        }
    };
    // Expired but not yet pruned is as gone as pruned.
    let kept = app.store.send_kept(meta.send).unwrap_or(true);
    let final_status = meta.sid.as_deref().is_some_and(|sid| {
        app.store
            .delivery_status(sid)
            .ok()
            .flatten()
            .is_some_and(|s| crate::twilio::is_terminal_status(&s))
    });
    let now = crate::clock::now_ms();
    if crate::mms::expired(
        meta.accepted_ms,
        kept,
        final_status,
        now,
        crate::mms::ttl_ms(),
    ) {
        return not_found();
    }
    let data = match app.store.media_data(token) {
        Ok(Some(d)) => d,
        Ok(None) => return not_found(),
        Err(e) => {
            tracing::warn!("media route: cannot read the store: {e}");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n");
        }
    };
    tracing::debug!(
        token = %&token[..8],
        bytes = data.len(),
        "media route: served {} {}",
        if head { "HEAD" } else { "GET" },
        meta.content_type
    );
    // hyper sends no body for HEAD and keeps the Content-Length of this one.
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(&data)));
    let h = r.headers_mut();
    if let Ok(v) = header::HeaderValue::from_str(&meta.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from(data.len()),
    );
    if let Ok(v) = header::HeaderValue::from_str(&format!("inline; filename=\"{}\"", meta.filename))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-store"),
    );
    h.insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_path_table() {
        let t = "0123456789abcdef0123456789abcdef";
        let cases = [
            (format!("/media/{t}/a.png"), Some((t, "a.png"))),
            (format!("/media/{t}/"), None),
            (format!("/media/{t}"), None),
            (format!("/media/{t}/a/b.png"), None),
            ("/media/0123456789ABCDEF0123456789abcdef/a.png".into(), None),
            ("/media/short/a.png".into(), None),
            ("/media/".into(), None),
        ];
        for (path, want) in cases {
            assert_eq!(parse_path(&path), want, "{path}");
        }
    }
}
