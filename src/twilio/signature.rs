//! Twilio webhook signature (`X-Twilio-Signature`), as a pure function.
//!
//! Twilio signs the URL it was configured with, byte for byte, followed by every form
//! parameter name and value, names sorted. We validate against the configured public
//! URL (never the Host header: proxies rewrite it), and accept the scheme's default port
//! added or removed, as Twilio's helper libraries do. Repeated names are signed the way
//! twilio-python signs them: the name before each of its distinct values, sorted.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// The (name, value) pairs in the order Twilio signs them: byte-wise by name then
/// value, exact repeats dropped (twilio-python signs `sorted(set(values))` for each
/// name in `sorted(set(names))`).
fn signed_pairs(params: &[(String, String)]) -> Vec<(&[u8], &[u8])> {
    let mut pairs: Vec<(&[u8], &[u8])> = params
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    pairs
}

/// The string Twilio signs: URL then sorted `name value` pairs.
pub fn signing_payload(url: &str, params: &[(String, String)]) -> Vec<u8> {
    let pairs = signed_pairs(params);
    let mut out = Vec::with_capacity(url.len() + params.len() * 24);
    out.extend_from_slice(url.as_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    out
}

/// Feeds the signing payload (`signing_payload`'s bytes) to `mac` piece by piece,
/// without building it.
fn feed(mac: &mut impl Mac, url: &str, pairs: &[(&[u8], &[u8])]) {
    mac.update(url.as_bytes());
    for (k, v) in pairs {
        mac.update(k);
        mac.update(v);
    }
}

/// Computes the Base64 signature Twilio would send for `url` and `params`.
pub fn compute(token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut mac = hmac_for(token);
    mac.update(&signing_payload(url, params));
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn hmac_for(token: &str) -> HmacSha1 {
    // HMAC accepts keys of any length, so this cannot fail (documented invariant).
    #[allow(clippy::expect_used)]
    HmacSha1::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length")
}

/// The URL Twilio signed for a request: the configured public URL without its
/// fragment, plus the request's own query string when the configured URL has none.
pub fn signed_url(public_url: &str, request_query: Option<&str>) -> String {
    let base = public_url.split('#').next().unwrap_or(public_url);
    match request_query {
        Some(q) if !q.is_empty() && !base.contains('?') => format!("{base}?{q}"),
        _ => base.to_string(),
    }
}

/// The URL as written, plus the variant with the scheme's default port added (when it
/// has no port) or removed (when it has the default one).
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some(scheme_end) = url.find("://") else {
        return out;
    };
    let scheme = url[..scheme_end].to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let auth_start = scheme_end + 3;
    let auth_end = url[auth_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| auth_start + i);
    let authority = &url[auth_start..auth_end];
    // A port follows the last ':' that comes after any IPv6 literal's ']'.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    match authority[host_end..].rfind(':') {
        Some(colon) => {
            let colon = host_end + colon;
            if &authority[colon + 1..] == default_port {
                out.push(format!(
                    "{}{}{}",
                    &url[..auth_start],
                    &authority[..colon],
                    &url[auth_end..]
                ));
            }
        }
        None => out.push(format!(
            "{}{}:{}{}",
            &url[..auth_start],
            authority,
            default_port,
            &url[auth_end..]
        )),
    }
    out
}

/// Checks `signature` (the header value) against every token and URL variant, in
/// constant time per comparison (legacy HMAC-SHA1 with the auth token).
pub fn is_valid(
    tokens: &[&str],
    public_url: &str,
    request_query: Option<&str>,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    is_valid_with(
        Algorithm::HmacSha1,
        tokens,
        public_url,
        request_query,
        params,
        signature,
    )
}

/// How a webhook was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// The account's auth token (the default).
    HmacSha1,
    /// A shared key named in `X-Twilio-Webhooks-Signature-Settings`.
    HmacSha256,
}

/// What `X-Twilio-Webhooks-Signature-Settings` asks for: the algorithm, and the shared
/// key id for HMAC-SHA256. No header (or no `algorithm=`) means the auth token and
/// HMAC-SHA1, as twilio-python's `get_signature_algorithm` reads it.
pub fn settings(header: Option<&str>) -> Result<(Algorithm, Option<String>), String> {
    let mut key = None;
    let mut algorithm = None;
    for part in header.unwrap_or_default().split(',') {
        if let Some((name, value)) = part.split_once('=') {
            match name.trim() {
                "key" if !value.trim().is_empty() => key = Some(value.trim().to_string()),
                "algorithm" if !value.trim().is_empty() => {
                    algorithm = Some(value.trim().to_ascii_uppercase())
                }
                _ => {}
            }
        }
    }
    match algorithm.as_deref() {
        None | Some("HMAC_SHA1") => Ok((Algorithm::HmacSha1, None)),
        Some("HMAC_SHA256") => match key {
            Some(k) => Ok((Algorithm::HmacSha256, Some(k))),
            None => Err("HMAC_SHA256 signature settings without a key id".into()),
        },
        Some(other) => Err(format!("unsupported signature algorithm {other:?}")),
    }
}

fn verify(
    algorithm: Algorithm,
    key: &str,
    url: &str,
    pairs: &[(&[u8], &[u8])],
    given: &[u8],
) -> bool {
    // HMAC accepts keys of any length, so neither constructor fails; verify_slice
    // compares in constant time.
    match algorithm {
        Algorithm::HmacSha1 => {
            let mut mac = hmac_for(key);
            feed(&mut mac, url, pairs);
            mac.verify_slice(given).is_ok()
        }
        Algorithm::HmacSha256 => match Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()) {
            Ok(mut mac) => {
                feed(&mut mac, url, pairs);
                mac.verify_slice(given).is_ok()
            }
            Err(_) => false,
        },
    }
}

/// Checks `signature` with `algorithm` against every key and URL variant.
pub fn is_valid_with(
    algorithm: Algorithm,
    keys: &[&str],
    public_url: &str,
    request_query: Option<&str>,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let url = signed_url(public_url, request_query);
    let pairs = signed_pairs(params);
    let matches = |variant: &str| {
        keys.iter()
            .any(|key| verify(algorithm, key, variant, &pairs, &given))
    };
    // Each comparison is constant-time; stopping at the first match only reveals which
    // URL variant or key matched, which the sender already knows. The URL as written
    // (always `url_variants`' first) is tried before the variants are built.
    matches(&url) || url_variants(&url).iter().skip(1).any(|v| matches(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn published() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ])
    }

    const PUBLISHED_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const PUBLISHED_SIG: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";

    #[test]
    fn twilio_published_vector() {
        assert_eq!(compute("12345", PUBLISHED_URL, &published()), PUBLISHED_SIG);
        assert!(is_valid(
            &["12345"],
            PUBLISHED_URL,
            None,
            &published(),
            PUBLISHED_SIG
        ));
    }

    #[test]
    fn validation_table() {
        let params = published();
        // (configured public URL, request query, token, signature over URL, expected)
        let sig_for = |url: &str| compute("12345", url, &params);
        let cases: Vec<(&str, Option<&str>, &str, String, bool)> = vec![
            // Fragment is not signed.
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2#rc=2",
                None,
                "12345",
                PUBLISHED_SIG.into(),
                true,
            ),
            // The request's query string is appended when the public URL has none.
            (
                "https://mycompany.com/myapp.php",
                Some("foo=1&bar=2"),
                "12345",
                PUBLISHED_SIG.into(),
                true,
            ),
            // ... but not when the public URL has its own.
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                Some("x=1"),
                "12345",
                PUBLISHED_SIG.into(),
                true,
            ),
            // Default port added by a proxy: Twilio signed with :443.
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                None,
                "12345",
                sig_for("https://mycompany.com:443/myapp.php?foo=1&bar=2"),
                true,
            ),
            // Default port removed.
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                None,
                "12345",
                PUBLISHED_SIG.into(),
                true,
            ),
            (
                "http://h.example/x",
                None,
                "12345",
                sig_for("http://h.example:80/x"),
                true,
            ),
            // A non-default port is not a variant.
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                None,
                "12345",
                sig_for("https://mycompany.com:8443/myapp.php?foo=1&bar=2"),
                false,
            ),
            // Wrong token, wrong path, trailing slash, garbage.
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                None,
                "54321",
                PUBLISHED_SIG.into(),
                false,
            ),
            (
                "https://mycompany.com/other.php?foo=1&bar=2",
                None,
                "12345",
                PUBLISHED_SIG.into(),
                false,
            ),
            (
                "https://mycompany.com/myapp.php/?foo=1&bar=2",
                None,
                "12345",
                PUBLISHED_SIG.into(),
                false,
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                None,
                "12345",
                "not base64!".into(),
                false,
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                None,
                "12345",
                String::new(),
                false,
            ),
        ];
        for (i, (url, query, token, sig, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                is_valid(&[token], url, query, &params, &sig),
                want,
                "case {i}: {url}"
            );
        }
    }

    #[test]
    fn tampered_params_fail() {
        let mut params = published();
        params[2].1 = "9999".into();
        assert!(!is_valid(
            &["12345"],
            PUBLISHED_URL,
            None,
            &params,
            PUBLISHED_SIG
        ));
    }

    #[test]
    fn repeated_names_sorted_and_deduplicated() {
        let a = p(&[
            ("MediaUrl", "b"),
            ("MediaUrl", "a"),
            ("MediaUrl", "b"),
            ("Body", "x"),
        ]);
        assert_eq!(
            signing_payload("u", &a),
            b"uBodyxMediaUrlaMediaUrlb".to_vec()
        );
    }

    #[test]
    fn byte_wise_name_order() {
        // Uppercase sorts before lowercase byte-wise; non-ASCII after ASCII.
        let a = p(&[("b", "1"), ("B", "2"), ("é", "3"), ("a", "4")]);
        assert_eq!(signing_payload("", &a), "B2a4b1é3".as_bytes().to_vec());
    }

    #[test]
    fn url_variants_table() {
        let cases: &[(&str, &[&str])] = &[
            (
                "https://a.com/x",
                &["https://a.com/x", "https://a.com:443/x"],
            ),
            (
                "https://a.com:443/x",
                &["https://a.com:443/x", "https://a.com/x"],
            ),
            (
                "http://a.com?q=1",
                &["http://a.com?q=1", "http://a.com:80?q=1"],
            ),
            ("https://a.com:8443/x", &["https://a.com:8443/x"]),
            (
                "https://[::1]/x",
                &["https://[::1]/x", "https://[::1]:443/x"],
            ),
            (
                "https://[::1]:443/x",
                &["https://[::1]:443/x", "https://[::1]/x"],
            ),
            ("ftp://a.com/x", &["ftp://a.com/x"]),
        ];
        for (url, want) in cases {
            assert_eq!(
                url_variants(url),
                want.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn settings_header_table() {
        use Algorithm::*;
        type Want = Result<(Algorithm, Option<&'static str>), ()>;
        let cases: &[(Option<&str>, Want)] = &[
            (None, Ok((HmacSha1, None))),
            (Some(""), Ok((HmacSha1, None))),
            (
                Some("key=k1,algorithm=HMAC_SHA256"),
                Ok((HmacSha256, Some("k1"))),
            ),
            (
                Some(" algorithm = hmac_sha256 , key = k2 "),
                Ok((HmacSha256, Some("k2"))),
            ),
            (Some("key=k1,algorithm=HMAC_SHA1"), Ok((HmacSha1, None))),
            (Some("algorithm=HMAC_SHA256"), Err(())),
            (Some("key=k1,algorithm=MD5"), Err(())),
        ];
        for (header, want) in cases {
            let got = settings(*header).map_err(|_| ());
            let want = want.map(|(a, k)| (a, k.map(String::from)));
            assert_eq!(got, want, "{header:?}");
        }
    }

    #[test]
    fn sha256_shared_key() {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"shared-secret").unwrap();
        mac.update(&signing_payload(PUBLISHED_URL, &published()));
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert!(is_valid_with(
            Algorithm::HmacSha256,
            &["shared-secret"],
            PUBLISHED_URL,
            None,
            &published(),
            &sig
        ));
        assert!(!is_valid_with(
            Algorithm::HmacSha1,
            &["shared-secret"],
            PUBLISHED_URL,
            None,
            &published(),
            &sig
        ));
        assert!(!is_valid_with(
            Algorithm::HmacSha256,
            &["other"],
            PUBLISHED_URL,
            None,
            &published(),
            &sig
        ));
    }

    #[test]
    fn previous_tokens_accepted() {
        assert!(is_valid(
            &["new", "12345"],
            PUBLISHED_URL,
            None,
            &published(),
            PUBLISHED_SIG
        ));
    }
}
