//! Where an IP address lies (unroutable, loopback, private or link-local, public), and
//! whether two addresses share a network: the one classification the candidate policy,
//! the observed-address rule, the Amino table's scope filter, birthday probing and the
//! thin-mesh dials share. Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Where an IP address lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Never dialed: unspecified, multicast, broadcast, "this network".
    Unroutable,
    Loopback,
    /// A private or link-local network, named by its prefix.
    Private,
    Public,
}

pub(crate) fn scope(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) => scope4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => scope4(v4),
            None => scope6(v6),
        },
    }
}

fn scope4(ip: Ipv4Addr) -> Scope {
    let o = ip.octets();
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || o[0] == 0 {
        Scope::Unroutable
    } else if ip.is_loopback() {
        Scope::Loopback
    } else if ip.is_private()
        || ip.is_link_local()
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        // RFC 1918, 169.254/16, the carrier-grade NAT range 100.64/10 and the
        // benchmarking range 198.18/15 (used inside data centres, never routed).
        Scope::Private
    } else {
        Scope::Public
    }
}

fn scope6(ip: Ipv6Addr) -> Scope {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_multicast() {
        Scope::Unroutable
    } else if ip.is_loopback() {
        Scope::Loopback
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // The well-known NAT64 prefix 64:ff9b::/96: the IPv4 address it carries, which
        // a NAT64 gateway reaches (a private one included).
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        scope4(Ipv4Addr::new(a, b, c, d))
    } else if (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || s[..3] == [0x64, 0xff9b, 1]
    {
        // Unique local fc00::/7, link-local fe80::/10, the deprecated site-local
        // fec0::/10 and the local-use NAT64 prefix 64:ff9b:1::/48 (which maps into
        // whatever IPv4 network its gateway serves).
        Scope::Private
    } else {
        Scope::Public
    }
}

/// The IP address an address starts with (`None` for names and others).
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// The same network: /24 for IPv4, /64 for IPv6.
pub(crate) fn same_network(a: IpAddr, b: IpAddr) -> bool {
    let norm = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (norm(a), norm(b)) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

/// Whether a peer could plausibly be at `ip`, given `path` (the remote addresses of the
/// connections that told the node about it) and `own` (the node's own addresses): a
/// public address always; loopback only when a path is loopback (a relay circuit's
/// or a browser transport's only when the node is on loopback alone,
/// [`local_evidence`]); a private network
/// only when the node or a path is on it (/24, /64); unroutable never. What a peer
/// claims beyond that names the node's own loopback or LAN, or someone else's.
pub(crate) fn plausible(ip: IpAddr, path: &[Multiaddr], own: &[Multiaddr]) -> bool {
    match scope(ip) {
        Scope::Unroutable => false,
        Scope::Public => true,
        Scope::Loopback => local_path(path, own),
        Scope::Private => on_private_net(ip, own) || on_private_net(ip, path),
    }
}

/// The entries of `path` that may show a peer on the node's loopback: all of them for
/// a node on loopback alone (several nodes on one host, as in the tests); for a node
/// with an address beyond loopback, only direct connections of a transport a local
/// process speaks: not a relay circuit (`…/p2p-circuit`: a relay on this host forwards
/// for peers anywhere, and took their loopback candidates to the node's own local
/// services), nor WebSocket, WebRTC or WebTransport (a web page in a browser on this
/// host reaches the node's WebSocket listener on 127.0.0.1, and so does every peer
/// behind a reverse proxy in front of it).
fn local_evidence<'a>(
    path: &'a [Multiaddr],
    own: &[Multiaddr],
) -> impl Iterator<Item = &'a Multiaddr> + 'a {
    let alone = !mesh_core::ipkey::beyond_loopback(own);
    let forwarded = |a: &Multiaddr| {
        a.iter().any(|p| {
            matches!(
                p,
                Protocol::P2pCircuit
                    | Protocol::Ws(_)
                    | Protocol::Wss(_)
                    | Protocol::WebRTCDirect
                    | Protocol::WebRTC
                    | Protocol::WebTransport
            )
        })
    };
    path.iter().filter(move |a| alone || !forwarded(a))
}

/// Whether `path` shows a peer on this host: one of its entries is a loopback
/// connection that [`local_evidence`] takes.
pub(crate) fn local_path(path: &[Multiaddr], own: &[Multiaddr]) -> bool {
    local_evidence(path, own)
        .filter_map(ip_of)
        .any(|a| scope(a) == Scope::Loopback)
}

/// Whether one of `addrs` is on the private network of `ip` (/24, /64).
pub(crate) fn on_private_net(ip: IpAddr, addrs: &[Multiaddr]) -> bool {
    addrs
        .iter()
        .filter_map(ip_of)
        .any(|a| scope(a) == Scope::Private && same_network(a, ip))
}

/// Whether `addr` starts with a DNS name (`/dns`, `/dns4`, `/dns6`, `/dnsaddr`). The
/// node cannot check where a name a peer gives leads before its transport resolves it:
/// `localhost`, `*.internal`, and any public name its owner points at 127.0.0.1 or a
/// LAN address (wildcard DNS such as `127.0.0.1.nip.io` does it for anyone) would have
/// the node connect, and speak HTTP for a WebSocket address, to its own host or
/// network. So names a peer gives are not dialed (the operator's are: bootstrap,
/// seeds, relays, explicit dials), except by a node on loopback alone (several nodes
/// on one host) or over a loopback connection, where loopback is in reach anyway.
pub(crate) fn is_name(addr: &Multiaddr) -> bool {
    matches!(
        addr.iter().next(),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_))
    )
}

/// Whether `addr` may enter the Amino (public) routing table: a public address;
/// loopback, private or link-local addresses and DNS names ([`is_name`]: they may lead
/// anywhere, the dialer's own host or LAN included) only with `keep_private`
/// (`NodeConfig::amino_private_addrs`); unroutable ones never. Every Amino peer hands
/// its table to strangers, to whom our LAN and loopback addresses are useless at best
/// and a map of our network at worst.
pub(crate) fn amino_worthy(addr: &Multiaddr, keep_private: bool) -> bool {
    match ip_of(addr).map(scope) {
        None => keep_private || !is_name(addr),
        Some(Scope::Public) => true,
        Some(Scope::Loopback | Scope::Private) => keep_private,
        Some(Scope::Unroutable) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(s: &str) -> Scope {
        scope(s.parse().unwrap())
    }

    /// Addresses that lead into private networks through a translator, or that are
    /// never routed on the Internet, are not public (a peer named them to reach the
    /// node's LAN through its NAT64 gateway).
    #[test]
    fn translated_and_reserved_ranges_are_not_public() {
        assert_eq!(of("64:ff9b::a00:105"), Scope::Private, "NAT64 of 10.0.1.5");
        assert_eq!(of("64:ff9b::7f00:1"), Scope::Loopback, "NAT64 of 127.0.0.1");
        assert_eq!(
            of("64:ff9b::c633:6407"),
            Scope::Public,
            "NAT64 of 198.51.100.7"
        );
        assert_eq!(of("64:ff9b:1::a00:105"), Scope::Private);
        assert_eq!(of("fec0::1"), Scope::Private);
        assert_eq!(of("198.18.0.1"), Scope::Private);
        assert_eq!(of("198.19.255.254"), Scope::Private);
        assert_eq!(of("198.20.0.1"), Scope::Public);
        assert_eq!(of("2001:db8::1"), Scope::Public);
        assert_eq!(of("::ffff:10.0.0.1"), Scope::Private);
    }

    /// A loopback connection shows a peer on this host only over a transport a local
    /// process speaks, for a node beyond loopback: a web page (or a reverse proxy) on
    /// this host reaches the WebSocket listener, a local relay forwards for anyone.
    #[test]
    fn loopback_is_plausible_over_local_transports_only() {
        let ma = |s: &str| -> Multiaddr { s.parse().unwrap() };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let beyond = [ma("/ip4/192.0.2.1/tcp/4001"), ma("/ip4/127.0.0.1/tcp/4001")];
        let alone = [ma("/ip4/127.0.0.1/tcp/4001")];
        for (path, local) in [
            ("/ip4/127.0.0.1/tcp/50000", true),
            ("/ip4/127.0.0.1/udp/50000/quic-v1", true),
            ("/ip4/127.0.0.1/tcp/50000/ws", false),
            ("/ip4/127.0.0.1/tcp/50000/tls/ws", false),
            ("/ip4/127.0.0.1/udp/50000/webrtc-direct", false),
            ("/ip4/127.0.0.1/tcp/5000/p2p-circuit", false),
        ] {
            let path = [ma(path)];
            assert_eq!(plausible(lo, &path, &beyond), local, "{path:?}");
            assert!(plausible(lo, &path, &alone), "{path:?} on loopback alone");
        }
    }
}
