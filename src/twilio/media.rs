//! Inbound MMS media: downloads the files a message's `MediaUrlN` fields point at, so
//! the agent gets local files instead of URLs it could not open (they need the account's
//! credentials).
//!
//! A media URL is `{api_base}/2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}/Media/{MediaSid}`;
//! Twilio answers it with a redirect to its CDN. Three things keep the auth token where
//! it belongs:
//! - only URLs of *this* message on the configured API host are requested
//!   ([`media_url_allowed`]), so a forged or odd webhook field cannot make us send
//!   credentials elsewhere;
//! - redirects are followed only to Twilio's media hosts ([`redirect_allowed`]);
//! - reqwest (0.12) drops `Authorization` when a redirect changes host or port, but it
//!   rebuilds every hop from the *original* headers and compares only with the hop
//!   before, so a second redirect within the CDN host would carry the credentials again.
//!   The redirect policy refuses exactly that case (see [`client`]).

use std::error::Error as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use url::Url;

use crate::secret::{scrub, Secret};
use crate::store::Media;
use crate::twilio::Creds;

/// What the files of one message may add up to: the agent's context is the consumer,
/// and Twilio itself caps an outbound MMS at 5 MB.
pub(crate) const MAX_MEDIA_BYTES_PER_MESSAGE: u64 = crate::mms::MAX_BYTES;

/// Redirects followed per request. Twilio needs one (API → CDN).
const MAX_REDIRECTS: usize = 5;

/// Attempts per item, and the pause before each retry.
const BACKOFF: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(400)];

/// One media item of a message, downloaded or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub url: String,
    /// As the (signed) webhook declared it.
    pub content_type: String,
    /// The local file, when the download worked.
    pub path: Option<PathBuf>,
    /// Why it did not, as a sentence without secrets.
    pub error: Option<String>,
}

/// Twilio SIDs are two letters and 32 hex digits; accepting only ASCII alphanumerics
/// also makes a SID safe as a path segment and a file name.
fn is_sid(s: &str) -> bool {
    (2..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn same_host_port(a: &Url, b: &Url) -> bool {
    a.host_str().is_some()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// Whether `url` is a media URL of this message on the configured API host: the
/// api_base's scheme (https in production; tests use a local http fake), its host and
/// port, no userinfo, query or fragment, and exactly the path
/// `/2010-04-01/Accounts/{account_sid}/Messages/{message_sid}/Media/{MediaSid}`, where
/// every SID is ASCII alphanumeric (so no `..`, `%2F` or empty segment gets through).
/// `..` segments are resolved by the URL parser before this check, so the path checked
/// is the one that would be requested.
pub(crate) fn media_url_allowed(
    url: &Url,
    api_base: &Url,
    account_sid: &str,
    message_sid: &str,
) -> bool {
    if !matches!(url.scheme(), "http" | "https")
        || url.scheme() != api_base.scheme()
        || !same_host_port(url, api_base)
        || has_userinfo(url)
        || url.query().is_some()
        || url.fragment().is_some()
        || !is_sid(account_sid)
        || !is_sid(message_sid)
    {
        return false;
    }
    let Some(segments) = url.path_segments() else {
        return false;
    };
    let segments: Vec<&str> = segments.collect();
    matches!(
        segments.as_slice(),
        ["2010-04-01", "Accounts", acc, "Messages", msg, "Media", media]
            if *acc == account_sid && *msg == message_sid && is_sid(media)
    )
}

/// Hosts Twilio's media API redirects to: `*.twiliocdn.com` (today `mms.twiliocdn.com`
/// and `media.twiliocdn.com`), `s3-external-1.amazonaws.com` (older accounts get
/// pre-signed S3 URLs there, bucket `media.twiliocdn.com`), and `api.twilio.com`
/// itself. Other S3 hosts are not listed: anyone can own a bucket there.
fn is_twilio_media_host(host: &str) -> bool {
    host == "api.twilio.com"
        || host == "s3-external-1.amazonaws.com"
        || host
            .strip_suffix(".twiliocdn.com")
            .is_some_and(|sub| !sub.is_empty())
}

/// Whether following a redirect to `url` is allowed: https on the default port to one of
/// Twilio's media hosts (see [`is_twilio_media_host`]; IP addresses never match), or the
/// api_base's own scheme, host and port (regional API hosts, and local fakes in tests).
/// Userinfo is never allowed; query strings are (CDN URLs are pre-signed).
pub(crate) fn redirect_allowed(url: &Url, api_base: &Url) -> bool {
    if has_userinfo(url) {
        return false;
    }
    if url.scheme() == api_base.scheme() && same_host_port(url, api_base) {
        return true;
    }
    url.scheme() == "https"
        && url.port_or_known_default() == Some(443)
        && matches!(url.host(), Some(url::Host::Domain(d)) if is_twilio_media_host(d))
}

/// Why the redirect policy stopped a chain; found again in the error's source chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RedirectRefused(String);

/// The redirect policy, pure: `previous` holds every URL requested so far, the last
/// being the one that answered with the redirect.
fn check_redirect(next: &Url, previous: &[Url], api_base: &Url) -> Result<(), RedirectRefused> {
    if previous.len() > MAX_REDIRECTS {
        return Err(RedirectRefused(format!(
            "Twilio redirected more than {MAX_REDIRECTS} times"
        )));
    }
    if !redirect_allowed(next, api_base) {
        let host = next.host_str().unwrap_or("(no host)");
        return Err(RedirectRefused(format!(
            "Twilio redirected to {host}, which is not a Twilio media host"
        )));
    }
    // reqwest strips Authorization only when the host changes from the previous hop,
    // re-adding it from the original request otherwise: a same-host hop anywhere but
    // the API host would send the credentials to that host.
    if let Some(prev) = previous.last() {
        if same_host_port(prev, next) && !same_host_port(prev, api_base) {
            let host = next.host_str().unwrap_or("(no host)");
            return Err(RedirectRefused(format!(
                "{host} redirected within itself, which would resend the credentials"
            )));
        }
    }
    Ok(())
}

/// The HTTP client for media downloads: rustls, no Referer (it would tell the CDN our
/// API URLs), connect timeout 5 s, 30 s per request including the body, and the
/// redirect policy above (at most 5 hops). `api_base` must be the account's
/// `api_base_url`; build one client per distinct API base.
pub(crate) fn client(api_base: &Url) -> Result<reqwest::Client, String> {
    let base = api_base.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        match check_redirect(attempt.url(), attempt.previous(), &base) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("smsgate/", env!("CARGO_PKG_VERSION")))
        .referer(false)
        .https_only(api_base.scheme() == "https")
        .redirect(policy)
        .build()
        .map_err(|e| format!("cannot build the media HTTP client: {e}"))
}

/// File extension for a declared content type; `bin` when unknown, so the agent never
/// sees a name it could take for something it is not.
fn extension_for(content_type: &str) -> &'static str {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/bmp" => "bmp",
        "image/webp" => "webp",
        "image/heic" => "heic",
        "image/heif" => "heif",
        "image/tiff" => "tiff",
        "video/mp4" => "mp4",
        "video/mpeg" => "mpg",
        "video/quicktime" => "mov",
        "video/webm" => "webm",
        "video/3gpp" | "audio/3gpp" => "3gp",
        "video/3gpp2" | "audio/3gpp2" => "3g2",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/mp4" | "audio/x-m4a" => "m4a",
        "audio/aac" => "aac",
        "audio/amr" => "amr",
        "audio/ogg" => "ogg",
        "audio/wav" | "audio/x-wav" | "audio/vnd.wave" => "wav",
        "text/vcard" | "text/x-vcard" | "text/directory" => "vcf",
        "text/calendar" => "ics",
        "text/plain" => "txt",
        "text/csv" => "csv",
        "text/rtf" | "application/rtf" => "rtf",
        "application/pdf" => "pdf",
        _ => "bin",
    }
}

/// A sentence for a failed request, without the URL (a CDN URL is a bearer link) and
/// without the auth token.
fn describe(e: reqwest::Error, token: &Secret) -> String {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<RedirectRefused>() {
            return format!("download refused: {refused}");
        }
        source = s.source();
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect error"
    } else {
        "request error"
    };
    let mut detail = String::new();
    let mut source = e.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    scrub(&format!("download failed: {what}{detail}"), &[token])
}

/// Removes the temporary file unless disarmed: also on cancellation, so an aborted
/// download leaves nothing behind.
struct PartialFile(Option<PathBuf>);

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// GET with credentials, retrying 429, 5xx and failed connections.
async fn get_with_retries(
    http: &reqwest::Client,
    creds: &Creds,
    url: &Url,
) -> Result<reqwest::Response, String> {
    let mut attempt = 0;
    loop {
        let sent = http
            .get(url.clone())
            .basic_auth(&creds.account_sid, Some(creds.auth_token.expose()))
            .send()
            .await;
        let (retryable, err) = match sent {
            Ok(resp) if resp.status().is_success() => return Ok(resp),
            Ok(resp) => {
                let status = resp.status();
                (
                    status.as_u16() == 429 || status.is_server_error(),
                    format!("download failed: Twilio answered {}", status.as_u16()),
                )
            }
            Err(e) => (e.is_connect(), describe(e, &creds.auth_token)),
        };
        match BACKOFF.get(attempt) {
            Some(pause) if retryable => {
                tokio::time::sleep(*pause).await;
                attempt += 1;
            }
            _ => return Err(err),
        }
    }
}

fn too_large(max: u64) -> String {
    format!(
        "download refused: the message's media exceed {} MB (mediaMaxMb)",
        max as f64 / 1e6
    )
}

/// Downloads one item into `dest` (through `{dest}.part`); returns the bytes written.
async fn fetch_one(
    http: &reqwest::Client,
    creds: &Creds,
    url: &Url,
    dest: &Path,
    budget: u64,
    max: u64,
) -> Result<u64, String> {
    let mut resp = get_with_retries(http, creds, url).await?;
    if resp.content_length().is_some_and(|len| len > budget) {
        return Err(too_large(max));
    }
    let mut tmp_name = dest.as_os_str().to_owned();
    tmp_name.push(".part");
    let tmp = PathBuf::from(tmp_name);
    let write_err = |e: std::io::Error| format!("download failed: cannot write the file: {e}");
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .await
        .map_err(write_err)?;
    let mut guard = PartialFile(Some(tmp.clone()));
    let mut written: u64 = 0;
    loop {
        match resp.chunk().await {
            Ok(Some(bytes)) => {
                written = written.saturating_add(bytes.len() as u64);
                if written > budget {
                    return Err(too_large(max));
                }
                file.write_all(&bytes).await.map_err(write_err)?;
            }
            Ok(None) => break,
            Err(e) => return Err(describe(e, &creds.auth_token)),
        }
    }
    // Durable before it gets its final name, so that name never holds a torn file.
    file.sync_all().await.map_err(write_err)?;
    drop(file);
    tokio::fs::rename(&tmp, dest).await.map_err(write_err)?;
    guard.0 = None;
    Ok(written)
}

/// Downloads every media item of one message into `dir` (created 0700 if missing), as
/// `{message_sid}-{index}.{ext}`. Items are fetched in order and share
/// `max_bytes` (the account's `mediaMaxMb`); a failed item does not stop the others. The result
/// has one entry per item, in order. `http` should come from [`client`] built with
/// `creds.api_base_url`.
pub(crate) async fn download_all(
    http: &reqwest::Client,
    creds: &Creds,
    message_sid: &str,
    media: &[Media],
    dir: &Path,
    max_bytes: u64,
) -> Vec<Fetched> {
    let dir_ready = if media.is_empty() {
        Ok(())
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("download failed: cannot create the media directory: {e}"))
    };
    let mut used: u64 = 0;
    let mut out = Vec::with_capacity(media.len());
    for (index, item) in media.iter().enumerate() {
        let result = async {
            dir_ready.clone()?;
            let url = Url::parse(&item.url)
                .ok()
                .filter(|u| {
                    media_url_allowed(u, &creds.api_base_url, &creds.account_sid, message_sid)
                })
                .ok_or_else(|| {
                    "download refused: not a Twilio media URL of this message".to_string()
                })?;
            // message_sid is alphanumeric here (media_url_allowed checked it).
            let name = format!(
                "{message_sid}-{index}.{}",
                extension_for(&item.content_type)
            );
            let dest = dir.join(name);
            let budget = max_bytes.saturating_sub(used);
            let n = fetch_one(http, creds, &url, &dest, budget, max_bytes).await?;
            Ok::<_, String>((dest, n))
        }
        .await;
        out.push(match result {
            Ok((path, n)) => {
                used = used.saturating_add(n);
                Fetched {
                    url: item.url.clone(),
                    content_type: item.content_type.clone(),
                    path: Some(path),
                    error: None,
                }
            }
            Err(error) => Fetched {
                url: item.url.clone(),
                content_type: item.content_type.clone(),
                path: None,
                error: Some(error),
            },
        });
    }
    out
}

/// Deletes the files of a message once the agent has them; a file already gone is fine.
pub(crate) fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove media file {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use base64::Engine as _;
    use bytes::Bytes;
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Body, Frame, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    /// Through serde, so the test does not depend on the record's other fields.
    fn media(url: &str, content_type: &str) -> Media {
        serde_json::from_value(serde_json::json!({"url": url, "contentType": content_type}))
            .unwrap()
    }

    const ACC: &str = "AC123";
    const MSG: &str = "MM456";
    const TOKEN: &str = "tok-s3cret";

    #[test]
    fn media_urls() {
        let twilio = u("https://api.twilio.com");
        let local = u("http://127.0.0.1:8080/");
        let p = "/2010-04-01/Accounts/AC123/Messages/MM456/Media";
        let cases: Vec<(String, &Url, bool)> = vec![
            (format!("https://api.twilio.com{p}/ME789"), &twilio, true),
            (format!("HTTPS://API.TWILIO.COM{p}/ME789"), &twilio, true),
            (format!("https://api.twilio.com:443{p}/ME789"), &twilio, true),
            // wrong account / message
            (
                "https://api.twilio.com/2010-04-01/Accounts/AC999/Messages/MM456/Media/ME789"
                    .into(),
                &twilio,
                false,
            ),
            (
                "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages/MM999/Media/ME789"
                    .into(),
                &twilio,
                false,
            ),
            // other hosts and ports, http
            (format!("https://evil.example{p}/ME789"), &twilio, false),
            (
                format!("https://api.twilio.com.evil.example{p}/ME789"),
                &twilio,
                false,
            ),
            (format!("https://api.twilio.com:8443{p}/ME789"), &twilio, false),
            (format!("http://api.twilio.com{p}/ME789"), &twilio, false),
            (format!("ftp://api.twilio.com{p}/ME789"), &twilio, false),
            // traversal and odd segments
            (format!("https://api.twilio.com{p}/../../x"), &twilio, false),
            (format!("https://api.twilio.com{p}/%2e%2e/x"), &twilio, false),
            (format!("https://api.twilio.com{p}/ME1%2F..%2Fx"), &twilio, false),
            (format!("https://api.twilio.com{p}/ME..x"), &twilio, false),
            (format!("https://api.twilio.com{p}/"), &twilio, false),
            (format!("https://api.twilio.com{p}"), &twilio, false),
            (format!("https://api.twilio.com{p}/ME789/"), &twilio, false),
            (format!("https://api.twilio.com{p}/ME789/more"), &twilio, false),
            (
                "https://api.twilio.com/2010-04-01/accounts/AC123/Messages/MM456/Media/ME789"
                    .into(),
                &twilio,
                false,
            ),
            // resolved by the parser to the right path, which is what gets requested
            (
                "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages/MM000/../MM456/Media/ME789"
                    .into(),
                &twilio,
                true,
            ),
            // queries, fragments, userinfo
            (format!("https://api.twilio.com{p}/ME789?x=1"), &twilio, false),
            (format!("https://api.twilio.com{p}/ME789?"), &twilio, false),
            (format!("https://api.twilio.com{p}/ME789#f"), &twilio, false),
            (format!("https://AC123:tok@api.twilio.com{p}/ME789"), &twilio, false),
            (format!("https://user@api.twilio.com{p}/ME789"), &twilio, false),
            // a local fake as api_base
            (format!("http://127.0.0.1:8080{p}/ME789"), &local, true),
            (format!("http://127.0.0.1:8081{p}/ME789"), &local, false),
            (format!("http://localhost:8080{p}/ME789"), &local, false),
            (format!("https://127.0.0.1:8080{p}/ME789"), &local, false),
        ];
        for (url, base, want) in &cases {
            assert_eq!(
                media_url_allowed(&u(url), base, ACC, MSG),
                *want,
                "{url} against {base}"
            );
        }
        let ok = u(&format!("https://api.twilio.com{p}/ME789"));
        assert!(!media_url_allowed(&ok, &twilio, "", MSG));
        assert!(!media_url_allowed(&ok, &twilio, ACC, ""));
        assert!(!media_url_allowed(&ok, &twilio, ACC, "MM456/.."));
    }

    #[test]
    fn redirects() {
        let twilio = u("https://api.twilio.com");
        let local = u("http://127.0.0.1:8080");
        let cases = [
            ("https://mms.twiliocdn.com/AC123/abc", &twilio, true),
            ("https://media.twiliocdn.com/AC123/abc?sig=1", &twilio, true),
            ("https://a.b.twiliocdn.com/x", &twilio, true),
            (
                "https://s3-external-1.amazonaws.com/media.twiliocdn.com/AC123/x?X-Amz-Signature=ab",
                &twilio,
                true,
            ),
            ("https://api.twilio.com/2010-04-01/x", &twilio, true),
            ("https://mms.twiliocdn.com:443/x", &twilio, true),
            ("http://mms.twiliocdn.com/x", &twilio, false),
            ("https://mms.twiliocdn.com:8443/x", &twilio, false),
            ("https://twiliocdn.com/x", &twilio, false),
            ("https://eviltwiliocdn.com/x", &twilio, false),
            ("https://mms.twiliocdn.com.evil.example/x", &twilio, false),
            ("https://mms.twiliocdn.com./x", &twilio, false),
            ("https://s3.amazonaws.com/x", &twilio, false),
            ("https://evil.s3-external-1.amazonaws.com/x", &twilio, false),
            ("https://user:pw@mms.twiliocdn.com/x", &twilio, false),
            ("https://user@api.twilio.com/x", &twilio, false),
            ("https://93.184.216.34/x", &twilio, false),
            ("https://[::1]/x", &twilio, false),
            ("ftp://mms.twiliocdn.com/x", &twilio, false),
            ("http://127.0.0.1:8080/cdn/x?y=1", &local, true),
            ("http://127.0.0.1:8081/cdn/x", &local, false),
            ("http://localhost:8080/cdn/x", &local, false),
            ("https://127.0.0.1:8080/cdn/x", &local, false),
            ("http://127.0.0.1:8080/../x", &local, true),
            ("https://mms.twiliocdn.com/x", &local, true),
        ];
        for (url, base, want) in cases {
            assert_eq!(
                redirect_allowed(&u(url), base),
                want,
                "{url} against {base}"
            );
        }
    }

    #[test]
    fn redirect_policy() {
        let base = u("https://api.twilio.com");
        let api = u("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1");
        let cdn = u("https://mms.twiliocdn.com/a");
        let cdn2 = u("https://mms.twiliocdn.com/b");
        let s3 = u("https://s3-external-1.amazonaws.com/media.twiliocdn.com/x");
        let api2 = u("https://api.twilio.com/other");
        let ok = |next: &Url, prev: &[Url]| check_redirect(next, prev, &base).is_ok();
        assert!(ok(&cdn, std::slice::from_ref(&api)));
        assert!(ok(&api2, std::slice::from_ref(&api)));
        assert!(ok(&cdn, &[api.clone(), api2.clone()]));
        assert!(ok(&s3, &[api.clone(), cdn.clone()]));
        // Would resend credentials to the CDN.
        assert!(!ok(&cdn2, &[api.clone(), cdn.clone()]));
        assert!(!ok(&u("https://evil.example/"), std::slice::from_ref(&api)));
        let five: Vec<Url> = (0..5).map(|_| api.clone()).collect();
        assert!(ok(&api2, &five));
        let six: Vec<Url> = (0..6).map(|_| api.clone()).collect();
        assert!(!ok(&api2, &six));
    }

    #[test]
    fn extensions() {
        for (ct, ext) in [
            ("image/jpeg", "jpg"),
            ("IMAGE/PNG", "png"),
            ("image/gif", "gif"),
            ("video/mp4", "mp4"),
            ("text/vcard; charset=utf-8", "vcf"),
            ("text/x-vcard", "vcf"),
            ("application/pdf", "pdf"),
            ("text/plain", "txt"),
            ("application/x-msdownload", "bin"),
            ("", "bin"),
            ("../../etc", "bin"),
        ] {
            assert_eq!(extension_for(ct), ext, "{ct}");
        }
    }

    #[test]
    fn remove_ignores_missing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        remove_files(&[a.clone(), dir.path().join("missing")]);
        assert!(!a.exists());
    }

    // ---- a local fake of Twilio's media API and CDN ----

    #[derive(Debug, Clone)]
    struct Seen {
        host: String,
        path: String,
        auth: Option<String>,
    }

    struct Fake {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Fake {
        fn base(&self) -> Url {
            u(&format!("http://127.0.0.1:{}", self.addr.port()))
        }
        fn media(&self, media_sid: &str) -> Media {
            media(
                &format!(
                    "http://127.0.0.1:{}/2010-04-01/Accounts/{ACC}/Messages/{MSG}/Media/{media_sid}",
                    self.addr.port()
                ),
                "image/jpeg",
            )
        }
        fn creds(&self, token: &str) -> Creds {
            Creds {
                api_base_url: self.base(),
                messaging_api_base_url: self.base(),
                account_sid: ACC.into(),
                auth_token: Secret::new(token),
            }
        }
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// A body of `left` zero bytes in 64 KiB frames, with no length: sent chunked.
    struct Endless {
        left: usize,
    }

    impl Body for Endless {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let n = self.left.min(64 * 1024);
            self.left -= n;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; n])))))
        }
    }

    type Resp = Response<BoxBody<Bytes, Infallible>>;

    fn respond(status: u16, body: impl Into<Bytes>) -> Resp {
        let mut r = Response::new(Full::new(body.into()).boxed());
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r
    }

    fn redirect(to: String) -> Resp {
        let mut r = respond(302, "");
        r.headers_mut()
            .insert(hyper::header::LOCATION, to.parse().unwrap());
        r
    }

    fn handle(
        req: Request<Incoming>,
        port: u16,
        seen: &Mutex<Vec<Seen>>,
        flaky: &AtomicUsize,
    ) -> Resp {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let auth = header(hyper::header::AUTHORIZATION);
        let path = req.uri().path().to_string();
        seen.lock().unwrap().push(Seen {
            host: header(hyper::header::HOST).unwrap_or_default(),
            path: path.clone(),
            auth: auth.clone(),
        });
        if let Some(file) = path.strip_prefix("/cdn/") {
            return match file {
                "same" => respond(200, "same-host-bytes"),
                "cross" => respond(200, "cross-host-bytes"),
                "loop" => redirect("/cdn/loop".into()),
                _ => respond(404, ""),
            };
        }
        let prefix = format!("/2010-04-01/Accounts/{ACC}/Messages/{MSG}/Media/");
        let Some(media) = path.strip_prefix(&prefix) else {
            return respond(404, "");
        };
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{ACC}:{TOKEN}"))
        );
        if auth.as_deref() != Some(expected.as_str()) {
            return respond(401, format!(r#"{{"message":"bad token {TOKEN}"}}"#));
        }
        match media {
            "MEdirect" => respond(200, "direct-bytes"),
            "MEsame" => redirect("/cdn/same".into()),
            "MEcross" => redirect(format!("http://localhost:{port}/cdn/cross")),
            "MEloop" => redirect("/cdn/loop".into()),
            "MEflaky" => {
                if flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                    respond(500, "")
                } else {
                    respond(200, "flaky-bytes")
                }
            }
            "MEbusy" => respond(429, ""),
            "MEbig" => respond(200, vec![7u8; 6 * 1024 * 1024]),
            "MEchunked" => Response::new(
                Endless {
                    left: 6 * 1024 * 1024,
                }
                .boxed(),
            ),
            "ME3mb" => respond(200, vec![3u8; 3 * 1024 * 1024]),
            _ => respond(404, ""),
        }
    }

    async fn fake() -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let flaky = Arc::new(AtomicUsize::new(0));
        let state = (seen.clone(), flaky);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, flaky) = state.clone();
                let svc = hyper::service::service_fn(move |req| {
                    let r = handle(req, addr.port(), &seen, &flaky);
                    async move { Ok::<_, Infallible>(r) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Fake { addr, seen }
    }

    async fn run(
        fake: &Fake,
        http: &reqwest::Client,
        token: &str,
        media: &[Media],
    ) -> (tempfile::TempDir, Vec<Fetched>) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("media");
        let got = download_all(
            http,
            &fake.creds(token),
            MSG,
            media,
            &dir,
            MAX_MEDIA_BYTES_PER_MESSAGE,
        )
        .await;
        (tmp, got)
    }

    fn dir_entries(tmp: &tempfile::TempDir) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(tmp.path().join("media"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn direct_file_with_basic_auth() {
        use std::os::unix::fs::PermissionsExt;
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        let mut m = fake.media("MEdirect");
        m.content_type = "image/png".into();
        let (tmp, got) = run(&fake, &http, TOKEN, &[m.clone()]).await;
        let path = tmp.path().join("media").join(format!("{MSG}-0.png"));
        assert_eq!(
            got,
            vec![Fetched {
                url: m.url,
                content_type: "image/png".into(),
                path: Some(path.clone()),
                error: None
            }]
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"direct-bytes");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("media")), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(dir_entries(&tmp), vec![format!("{MSG}-0.png")]);
        remove_files(std::slice::from_ref(&path));
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn wrong_token_is_401_and_never_echoed() {
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        // Without any credentials, the fake refuses.
        let plain = reqwest::get(fake.media("MEdirect").url).await.unwrap();
        assert_eq!(plain.status().as_u16(), 401);
        let (tmp, got) = run(&fake, &http, "wrong", &[fake.media("MEdirect")]).await;
        assert_eq!(got[0].path, None);
        assert_eq!(
            got[0].error.as_deref(),
            Some("download failed: Twilio answered 401")
        );
        assert!(dir_entries(&tmp).is_empty());
    }

    #[tokio::test]
    async fn same_host_redirect() {
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        let (tmp, got) = run(&fake, &http, TOKEN, &[fake.media("MEsame")]).await;
        let path = got[0].path.clone().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"same-host-bytes");
        let seen = fake.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].path, "/cdn/same");
        drop(tmp);
    }

    #[tokio::test]
    async fn cross_host_redirect_drops_credentials() {
        let fake = fake().await;
        // `localhost` plays the CDN: the client's policy admits it as its API host while
        // the media URL (checked against creds) is on 127.0.0.1, a different host to reqwest.
        let cdn_base = u(&format!("http://localhost:{}", fake.addr.port()));
        let http = client(&cdn_base).unwrap();
        let (_tmp, got) = run(&fake, &http, TOKEN, &[fake.media("MEcross")]).await;
        let path = got[0].path.clone().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"cross-host-bytes");
        let seen = fake.seen();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].auth.is_some());
        assert!(seen[1].host.starts_with("localhost:"));
        assert_eq!(seen[1].path, "/cdn/cross");
        assert_eq!(seen[1].auth, None, "credentials reached the CDN");
    }

    #[tokio::test]
    async fn redirect_to_other_host_refused() {
        let fake = fake().await;
        // The client's API host is 127.0.0.1 here, so `localhost` is no allowed target.
        let http = client(&fake.base()).unwrap();
        let (_tmp, got) = run(&fake, &http, TOKEN, &[fake.media("MEcross")]).await;
        assert_eq!(got[0].path, None);
        let err = got[0].error.clone().unwrap();
        assert!(
            err.starts_with("download refused: Twilio redirected to localhost"),
            "{err}"
        );
        assert_eq!(fake.seen().len(), 1, "the redirect must not be followed");
        assert!(!err.contains(TOKEN));
    }

    #[tokio::test]
    async fn redirect_loop_stops() {
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        let (_tmp, got) = run(&fake, &http, TOKEN, &[fake.media("MEloop")]).await;
        assert_eq!(
            got[0].error.as_deref(),
            Some("download refused: Twilio redirected more than 5 times")
        );
        assert_eq!(fake.seen().len(), 6);
    }

    #[tokio::test]
    async fn retries_500_then_succeeds() {
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        let (_tmp, got) = run(&fake, &http, TOKEN, &[fake.media("MEflaky")]).await;
        let path = got[0].path.clone().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"flaky-bytes");
        assert_eq!(fake.seen().len(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_three_attempts() {
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        let (_tmp, got) = run(
            &fake,
            &http,
            TOKEN,
            &[fake.media("MEbusy"), fake.media("MEnope")],
        )
        .await;
        assert_eq!(
            got[0].error.as_deref(),
            Some("download failed: Twilio answered 429")
        );
        assert_eq!(
            got[1].error.as_deref(),
            Some("download failed: Twilio answered 404")
        );
        // 3 for the 429, 1 for the 404.
        assert_eq!(fake.seen().len(), 4);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let base = u(&format!("http://127.0.0.1:{port}"));
        let creds = Creds {
            api_base_url: base.clone(),
            messaging_api_base_url: base.clone(),
            account_sid: ACC.into(),
            auth_token: Secret::new(TOKEN),
        };
        let item = media(
            &format!("{base}2010-04-01/Accounts/{ACC}/Messages/{MSG}/Media/ME1"),
            "image/gif",
        );
        let tmp = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let got = download_all(
            &client(&base).unwrap(),
            &creds,
            MSG,
            &[item],
            tmp.path(),
            MAX_MEDIA_BYTES_PER_MESSAGE,
        )
        .await;
        let err = got[0].error.clone().unwrap();
        assert!(err.starts_with("download failed: cannot connect"), "{err}");
        assert!(!err.contains(TOKEN) && !err.contains("127.0.0.1"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(600));
    }

    #[tokio::test]
    async fn too_large_is_refused_and_leaves_nothing() {
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        let (tmp, got) = run(
            &fake,
            &http,
            TOKEN,
            &[
                fake.media("MEbig"),
                fake.media("MEchunked"),
                fake.media("MEdirect"),
            ],
        )
        .await;
        for f in &got[..2] {
            assert_eq!(f.path, None);
            assert_eq!(
                f.error.as_deref(),
                Some("download refused: the message's media exceed 5 MB (mediaMaxMb)")
            );
        }
        // A small item after a refused one still fits.
        assert!(got[2].path.is_some());
        assert_eq!(dir_entries(&tmp), vec![format!("{MSG}-2.jpg")]);
    }

    #[tokio::test]
    async fn budget_is_per_message() {
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        let (tmp, got) = run(
            &fake,
            &http,
            TOKEN,
            &[fake.media("ME3mb"), fake.media("ME3mb")],
        )
        .await;
        assert!(got[0].path.is_some());
        assert!(got[1].error.as_deref().unwrap().contains("exceed 5 MB"));
        assert_eq!(dir_entries(&tmp), vec![format!("{MSG}-0.jpg")]);
    }

    #[tokio::test]
    async fn disallowed_url_is_never_requested() {
        let fake = fake().await;
        let http = client(&fake.base()).unwrap();
        let port = fake.addr.port();
        let bad = [
            format!(
                "http://127.0.0.1:{port}/2010-04-01/Accounts/AC999/Messages/{MSG}/Media/MEdirect"
            ),
            format!(
                "http://127.0.0.1:{port}/2010-04-01/Accounts/{ACC}/Messages/MM999/Media/MEdirect"
            ),
            format!(
                "http://localhost:{port}/2010-04-01/Accounts/{ACC}/Messages/{MSG}/Media/MEdirect"
            ),
            format!("http://127.0.0.1:{port}/cdn/same"),
            "not a url".into(),
        ];
        let media: Vec<Media> = bad.iter().map(|url| media(url, "image/jpeg")).collect();
        let (_tmp, got) = run(&fake, &http, TOKEN, &media).await;
        for f in &got {
            assert_eq!(
                f.error.as_deref(),
                Some("download refused: not a Twilio media URL of this message"),
                "{}",
                f.url
            );
        }
        assert!(fake.seen().is_empty());
        // A message SID unfit for a file name refuses everything, too.
        let tmp = tempfile::tempdir().unwrap();
        let got = download_all(
            &http,
            &fake.creds(TOKEN),
            "../x",
            &[fake.media("MEdirect")],
            tmp.path(),
            MAX_MEDIA_BYTES_PER_MESSAGE,
        )
        .await;
        assert!(got[0].error.is_some());
        assert!(fake.seen().is_empty());
    }
}
