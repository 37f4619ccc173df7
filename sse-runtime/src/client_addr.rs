//! The client's address behind reverse proxies: [`ClientAddr`], and the trusted ranges
//! ([`Cidr`]) that decide when a forwarding header is believed.
//!
//! Behind nginx, Caddy or a load balancer every request comes from the proxy's address, so a
//! per-client cap counted by the TCP peer would be one cap for every browser. The proxy says
//! who its client was in `X-Forwarded-For` or `Forwarded` (RFC 7239), but so can anybody: a
//! header is believed only when the peer is a proxy the manager trusts
//! ([`ManagerBuilder::trusted_proxies`](crate::manager::ManagerBuilder::trusted_proxies)).
//! Then the client is the rightmost address in the header that is not itself a trusted proxy:
//! each proxy appends the address it saw, so everything right of that one was written by a
//! proxy of ours and everything left of it by the client, who may have written anything.
//!
//! Anything that does not name an address where an address is needed (`unknown`, an obfuscated
//! identifier like `_hidden`, garbage) ends the walk with the peer: a header that cannot be
//! read never decides who is counted. By default nobody is trusted and the client is the peer.
//!
//! ```
//! use std::net::{IpAddr, SocketAddr};
//! use sse_runtime::{Manager, client_addr::Cidr};
//!
//! let manager = Manager::builder()
//!     .trusted_proxies(["127.0.0.1/32".parse::<Cidr>().unwrap()])
//!     .build()
//!     .unwrap();
//! let mut headers = http::HeaderMap::new();
//! headers.insert("x-forwarded-for", "203.0.113.7, 127.0.0.1".parse().unwrap());
//! let proxy: SocketAddr = "127.0.0.1:50000".parse().unwrap();
//! assert_eq!(manager.client_addr(proxy.ip(), &headers), "203.0.113.7".parse::<IpAddr>().unwrap());
//! let stranger: SocketAddr = "198.51.100.9:50000".parse().unwrap();
//! assert_eq!(manager.client_addr(stranger.ip(), &headers), stranger.ip(), "not a proxy of ours");
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderMap, StatusCode};

/// A range of addresses: an address and how many leading bits of it are fixed
/// (`10.0.0.0/8`, `fd00::/8`; a bare address is the range of that one address).
///
/// ```
/// use sse_runtime::client_addr::Cidr;
///
/// let range: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(range.contains("10.1.2.3".parse().unwrap()));
/// assert!(!range.contains("11.0.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `address` is in the range (an IPv4-mapped IPv6 address counts as its IPv4
    /// address, as a dual-stack listener reports IPv4 peers that way).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A text that is not an address range, with the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidCidr(pub String);

impl fmt::Display for InvalidCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an address range: write an address with a prefix length, like \
             10.0.0.0/8 or fd00::/8, or a single address",
            self.0
        )
    }
}

impl std::error::Error for InvalidCidr {}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCidr(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network = IpAddr::from_str(address).map_err(|_| invalid())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= bits)
                    .ok_or_else(invalid)?
            }
            Some(_) => return Err(invalid()),
        };
        Ok(Self { network, prefix })
    }
}

/// The ranges a manager believes forwarding headers from. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies(Arc<[Cidr]>);

impl TrustedProxies {
    pub(crate) fn new(ranges: impl IntoIterator<Item = Cidr>) -> Self {
        Self(ranges.into_iter().collect())
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(address))
    }

    /// The client of a request from `peer` with `headers` (see the module's documentation).
    pub(crate) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        // `Forwarded` is the standard one; a proxy that writes it is read by it alone.
        let (name, parse): (_, fn(&str) -> Option<IpAddr>) =
            if headers.contains_key(http::header::FORWARDED) {
                (http::header::FORWARDED.as_str(), forwarded_for)
            } else {
                ("x-forwarded-for", node)
            };
        // Hops in order: every header's comma-separated entries, left to right; walked from
        // the right. Nothing is allocated: a header of 100 hops costs a scan of its bytes.
        let mut leftmost = peer;
        for value in headers.get_all(name).iter().rev() {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            for hop in value.rsplit(',') {
                let Some(address) = parse(hop) else {
                    return peer;
                };
                if !self.trusts(address) {
                    return address;
                }
                leftmost = address;
            }
        }
        // Every hop is a proxy of ours: the first of them is the client as far as we know.
        leftmost
    }
}

/// The address in one `Forwarded` element's `for=` parameter (`for=192.0.2.60;proto=http`,
/// `for="[2001:db8::17]:4711"`); `None` without one, or for `unknown` or an obfuscated name.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| node(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// An address as forwarding headers write it: `192.0.2.60`, `192.0.2.60:4711`, `2001:db8::17`
/// or `[2001:db8::17]:4711`.
fn node(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || port(after.strip_prefix(':')?)) {
            return None;
        }
        return Ipv6Addr::from_str(address)
            .ok()
            .map(|a| IpAddr::V6(a).to_canonical());
    }
    if let Ok(address) = IpAddr::from_str(text) {
        return Some(address.to_canonical());
    }
    let (address, number) = text.split_once(':')?;
    port(number).then(|| Ipv4Addr::from_str(address).ok().map(IpAddr::V4))?
}

fn port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// The client's address as the stream routes count it: the peer, or, when the peer is a
/// trusted proxy, the client it forwarded (see the [module](self)). A guard takes it like any
/// extractor:
///
/// ```
/// use http::StatusCode;
/// use sse_runtime::client_addr::ClientAddr;
///
/// async fn from_the_office(ClientAddr(client): ClientAddr) -> Result<(), StatusCode> {
///     let office: sse_runtime::client_addr::Cidr = "192.0.2.0/24".parse().unwrap();
///     office.contains(client).then_some(()).ok_or(StatusCode::FORBIDDEN)
/// }
/// let handler = sse_runtime::SseHandler::new(&sse_runtime::Manager::new())
///     .topic("office")
///     .guard(from_the_office);
/// ```
///
/// It is set on the requests of [`SseHandler`](crate::SseHandler) routes (the macros' routes
/// among them), before their guard runs, from the request's `ConnectInfo<SocketAddr>` (which
/// [`serve`](crate::serve()) provides) and its manager's trusted proxies. Elsewhere it is
/// refused with `500`: a handler of its own asks
/// [`Manager::client_addr`](crate::Manager::client_addr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().copied().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "ClientAddr is known on the SSE routes (SseHandler, the macros' routes) of a server \
             that gives requests their ConnectInfo<SocketAddr> (sse_runtime::serve does); \
             elsewhere, ask Manager::client_addr",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(ranges: &[&str]) -> TrustedProxies {
        TrustedProxies::new(ranges.iter().map(|r| r.parse().unwrap()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        map
    }

    const PROXY: &str = "10.0.0.2";

    fn client(pairs: &[(&str, &str)]) -> IpAddr {
        trusted(&["10.0.0.0/8"]).client(ip(PROXY), &headers(pairs))
    }

    #[test]
    fn ranges_parse_and_contain_what_they_should() {
        let v4: Cidr = "192.168.0.0/16".parse().unwrap();
        assert!(v4.contains(ip("192.168.255.1")) && !v4.contains(ip("192.169.0.1")));
        assert!(v4.contains(ip("::ffff:192.168.1.1")), "IPv4-mapped");
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")) && !all.contains(ip("::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/+8",
        ] {
            assert_eq!(bad.parse::<Cidr>(), Err(InvalidCidr(bad.into())), "{bad:?}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let xff = [("x-forwarded-for", "203.0.113.1, 198.51.100.2, 10.0.0.9")];
        assert_eq!(client(&xff), ip("198.51.100.2"));
        let forwarded = [(
            "forwarded",
            "for=203.0.113.1, for=\"[2001:db8::17]:4711\";proto=https, for=10.0.0.9",
        )];
        assert_eq!(client(&forwarded), ip("2001:db8::17"));
        // Several headers are one list, in order.
        let split = [
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "198.51.100.3, 10.0.0.1"),
        ];
        assert_eq!(client(&split), ip("198.51.100.3"));
        // Ports, brackets and IPv4-mapped forms name the address.
        assert_eq!(
            client(&[("x-forwarded-for", "198.51.100.4:5000")]),
            ip("198.51.100.4")
        );
        assert_eq!(
            client(&[("x-forwarded-for", "[2001:db8::1]:443")]),
            ip("2001:db8::1")
        );
        assert_eq!(
            client(&[("x-forwarded-for", "::ffff:198.51.100.5")]),
            ip("198.51.100.5")
        );
        // `Forwarded` wins over `X-Forwarded-For` when both are there.
        let both = [
            ("x-forwarded-for", "198.51.100.6"),
            ("forwarded", "for=198.51.100.7"),
        ];
        assert_eq!(client(&both), ip("198.51.100.7"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let spoofed = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let stranger = ip("203.0.113.50");
        assert_eq!(
            trusted(&["10.0.0.0/8"]).client(stranger, &spoofed),
            stranger
        );
        assert_eq!(
            TrustedProxies::default().client(ip(PROXY), &spoofed),
            ip(PROXY),
            "default: nobody"
        );
    }

    #[test]
    fn what_cannot_be_read_gets_the_peer_and_never_panics() {
        let peer = ip(PROXY);
        for bad in [
            "unknown",
            "_hidden",
            "garbage",
            "",
            " , ",
            "1.2.3.4:",
            "1.2.3.4:99999999",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[1.2.3.4]",
            "2001:db8::1:80:x",
            "1.2.3.4.5",
            "١.٢.٣.٤",
        ] {
            assert_eq!(
                client(&[("x-forwarded-for", bad)]),
                peer,
                "x-forwarded-for: {bad:?}"
            );
            let forwarded = format!("for={bad}");
            assert_eq!(
                client(&[("forwarded", &forwarded)]),
                peer,
                "forwarded: {forwarded:?}"
            );
        }
        for bad in [
            "for=unknown",
            "for=\"_gazonk\"",
            "proto=http",
            "by=10.0.0.1",
            "for",
            "=;=",
        ] {
            assert_eq!(client(&[("forwarded", bad)]), peer, "{bad:?}");
        }
        // A readable address left of an unreadable one written by our proxy is not believed.
        assert_eq!(
            client(&[("x-forwarded-for", "198.51.100.1, unknown")]),
            peer
        );
        let mut latin1 = HeaderMap::new();
        latin1.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xe9").unwrap(),
        );
        assert_eq!(trusted(&["10.0.0.0/8"]).client(peer, &latin1), peer);
    }

    #[test]
    fn a_hundred_trusted_hops_give_the_first_of_them_and_one_untrusted_wins() {
        let hops: Vec<String> = (1..=100)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect();
        let all = hops.join(", ");
        assert_eq!(client(&[("x-forwarded-for", &all)]), ip("10.0.0.1"));
        let with_client = format!("198.51.100.8, {all}");
        assert_eq!(
            client(&[("x-forwarded-for", &with_client)]),
            ip("198.51.100.8")
        );
    }
}
