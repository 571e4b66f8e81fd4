//! `gateway.trustedProxies`: which peers may tell us who the client is
//! (`X-Forwarded-For`) and what URL it called (`X-Forwarded-Proto`,
//! `X-Forwarded-Host`). From any other peer those headers are anyone's words and are
//! ignored: a stranger could otherwise pick the address it is limited and logged as.

use std::net::IpAddr;

use hyper::HeaderMap;
use ipnet::IpNet;

/// The peers whose forwarding headers count. Empty (the default): none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// Whether `ip` is one of the trusted proxies. An IPv4-mapped IPv6 peer
    /// (`::ffff:10.0.0.1`, a dual-stack listener) is matched as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// An address or a CIDR (`10.0.0.1`, `10.0.0.0/8`, `fd00::/8`), or why not.
pub(crate) fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    match s.parse::<IpNet>() {
        // A network written with host bits set (10.0.0.1/8) means the network.
        Ok(n) => Ok(n.trunc()),
        Err(_) => Err(format!(
            "{s:?} is not an IP address or CIDR; write e.g. \"10.0.0.1\", \"10.0.0.0/8\" or \"fd00::/8\""
        )),
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` hop: an address, maybe with a port (`203.0.113.9:4711`,
/// `[2001:db8::1]:4711`) as some proxies write it.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    None
}

/// Who the client is, for a request that came from `peer` with these headers: `peer`
/// itself unless `peer` is a trusted proxy; then the right-most `X-Forwarded-For` hop
/// that is not itself a trusted proxy (hops to its left were written by the client or
/// an untrusted hop, so they could be anything). A hop that is not an address stops
/// the walk at the last trusted hop.
pub(crate) fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// The first value of a forwarding header (`X-Forwarded-Proto: https, http`: the
/// first proxy's, what the client used), when `peer` is trusted and the value is sane.
pub(crate) fn forwarded_value(
    peer: IpAddr,
    headers: &HeaderMap,
    name: &str,
    trusted: &TrustedProxies,
) -> Option<String> {
    if !trusted.contains(peer) {
        return None;
    }
    let v = headers.get(name)?.to_str().ok()?;
    let first = v.split(',').next()?.trim();
    let sane = !first.is_empty()
        && first.len() <= 255
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    sane.then(|| first.to_string())
}

/// What the serve loop learned about a request's origin; in the request's extensions
/// for the handler (logs, the 403 diagnosis).
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The client: the peer, or the forwarded address from a trusted proxy.
    pub client: IpAddr,
    /// `X-Forwarded-Proto` from a trusted proxy.
    pub proto: Option<String>,
    /// `X-Forwarded-Host` from a trusted proxy.
    pub host: Option<String>,
    /// Whether the connection is TLS (the scheme when no proxy says otherwise).
    pub tls: bool,
}

impl Origin {
    pub(crate) fn new(
        peer: std::net::SocketAddr,
        tls: bool,
        headers: &HeaderMap,
        trusted: &TrustedProxies,
    ) -> Self {
        let ip = peer.ip();
        Self {
            client: client_addr(ip, headers, trusted),
            proto: forwarded_value(ip, headers, "x-forwarded-proto", trusted)
                .map(|p| p.to_ascii_lowercase())
                .filter(|p| p == "http" || p == "https"),
            host: forwarded_value(ip, headers, "x-forwarded-host", trusted),
            tls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| parse_net(n).unwrap()).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn nets_parse_as_addresses_or_cidrs() {
        let cases = [
            ("10.0.0.1", Some("10.0.0.1/32")),
            (" 10.0.0.0/8 ", Some("10.0.0.0/8")),
            ("10.1.2.3/8", Some("10.0.0.0/8")),
            ("fd00::/8", Some("fd00::/8")),
            ("::1", Some("::1/128")),
            ("10.0.0.0/33", None),
            ("proxy.example.com", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(
                parse_net(s).ok().map(|n| n.to_string()).as_deref(),
                want,
                "{s}"
            );
        }
    }

    #[test]
    fn the_client_is_forwarded_only_by_trusted_peers() {
        let t = trusted(&["10.0.0.0/8", "192.0.2.1"]);
        let none = TrustedProxies::default();
        type Case<'a> = (
            &'a str,
            &'a [(&'a str, &'a str)],
            &'a TrustedProxies,
            &'a str,
        );
        let cases: &[Case] = &[
            // No trusted proxies: the header is anyone's word.
            (
                "10.0.0.5",
                &[("x-forwarded-for", "203.0.113.9")],
                &none,
                "10.0.0.5",
            ),
            // An untrusted peer's header is ignored.
            (
                "198.51.100.7",
                &[("x-forwarded-for", "203.0.113.9")],
                &t,
                "198.51.100.7",
            ),
            // A trusted peer's is used.
            (
                "10.0.0.5",
                &[("x-forwarded-for", "203.0.113.9")],
                &t,
                "203.0.113.9",
            ),
            // The right-most untrusted hop: what the client wrote to the left is not.
            (
                "10.0.0.5",
                &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.7")],
                &t,
                "203.0.113.9",
            ),
            // Several headers are one list, in order.
            (
                "10.0.0.5",
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
                &t,
                "203.0.113.9",
            ),
            // Ports and brackets are tolerated.
            (
                "10.0.0.5",
                &[("x-forwarded-for", "[2001:db8::1]:4711")],
                &t,
                "2001:db8::1",
            ),
            (
                "10.0.0.5",
                &[("x-forwarded-for", "203.0.113.9:4711")],
                &t,
                "203.0.113.9",
            ),
            // Garbage stops the walk at the last trusted hop.
            (
                "10.0.0.5",
                &[("x-forwarded-for", "203.0.113.9, junk, 10.0.0.7")],
                &t,
                "10.0.0.7",
            ),
            // Every hop trusted: the left-most.
            (
                "10.0.0.5",
                &[("x-forwarded-for", "10.0.0.9, 192.0.2.1")],
                &t,
                "10.0.0.9",
            ),
            // No header: the proxy itself.
            ("10.0.0.5", &[], &t, "10.0.0.5"),
            // A dual-stack listener's mapped address matches the IPv4 entry.
            (
                "::ffff:10.0.0.5",
                &[("x-forwarded-for", "203.0.113.9")],
                &t,
                "203.0.113.9",
            ),
        ];
        for (peer, h, trusted, want) in cases {
            let got = client_addr(peer.parse().unwrap(), &headers(h), trusted);
            assert_eq!(got.to_string(), *want, "{peer} {h:?}");
        }
    }

    #[test]
    fn proto_and_host_count_only_from_trusted_peers() {
        let t = trusted(&["127.0.0.1"]);
        let h = headers(&[
            ("x-forwarded-proto", "HTTPS, http"),
            ("x-forwarded-host", "sms.example.com"),
        ]);
        let o = Origin::new("127.0.0.1:9".parse().unwrap(), false, &h, &t);
        assert_eq!(o.proto.as_deref(), Some("https"));
        assert_eq!(o.host.as_deref(), Some("sms.example.com"));
        let o = Origin::new("127.0.0.2:9".parse().unwrap(), false, &h, &t);
        assert_eq!((o.proto, o.host), (None, None));
        // Values that are not a scheme or a host are dropped.
        let bad = headers(&[
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "evil.com/path?x"),
        ]);
        let o = Origin::new("127.0.0.1:9".parse().unwrap(), false, &bad, &t);
        assert_eq!((o.proto, o.host), (None, None));
    }
}
