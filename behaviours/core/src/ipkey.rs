//! The per-network key that limits are counted under: the remote IP of a connection, an
//! IPv4 address as is and an IPv6 address by its /64 (one subscriber usually holds a
//! whole /64, so counting single IPv6 addresses would limit nothing). Pure.
//!
//! One definition for every limit keyed by a client's network: the relay's admission
//! limits (`mesh-admission`), the HTTP servers' per-client caps (`libmesh::http_serve`)
//! and the mesh DHT's per-network provider quota (`mesh-advert`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use multiaddr::{Multiaddr, Protocol};

/// An IPv4 address, or the /64 an IPv6 address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpKey {
    /// One IPv4 address (IPv4-mapped IPv6 addresses count as IPv4).
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl IpKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(v4),
                None => IpKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }

    /// The key of the first IP address in `addr` (for a relayed connection, the relay's
    /// hop: the IP the connection's packets come from); `None` without one (memory
    /// transport, DNS names).
    pub fn of_multiaddr(addr: &Multiaddr) -> Option<IpKey> {
        addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpKey::of(IpAddr::V4(ip))),
            Protocol::Ip6(ip) => Some(IpKey::of(IpAddr::V6(ip))),
            _ => None,
        })
    }
}

/// A wider network than [`IpKey`]: an IPv4 /16, an IPv6 /32 (the network groups of
/// Bitcoin Core's eviction; an ISP's or a hosting provider's block, roughly). Limits
/// that must hold against a holder of many /64s or addresses (a /48 from a tunnel
/// broker, a few IPv4 addresses) share slots out by group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpGroup {
    /// The first 16 bits of an IPv4 address.
    V4(u16),
    /// The first 32 bits of an IPv6 address.
    V6(u32),
}

impl IpGroup {
    /// The group whose connection gives way when one of group `own` comes to a full
    /// table, given what each group holds (`held`; groups holding none may be left
    /// out): the group holding the most (the greater group among equals, so the choice
    /// is reproducible), when it would still hold more than `own` afterwards; `None`
    /// when the newcomer's group is itself among the largest (it is refused). Bitcoin
    /// Core's eviction by network group, shared by the node's inbound connections and
    /// its HTTP servers.
    pub fn giving_way(
        own: IpGroup,
        held: impl IntoIterator<Item = (IpGroup, usize)>,
    ) -> Option<IpGroup> {
        let mut own_held = 0;
        let mut largest: Option<(usize, IpGroup)> = None;
        for (group, n) in held {
            if group == own {
                own_held = n;
            }
            if n > 0 && largest.is_none_or(|l| (n, group) > l) {
                largest = Some((n, group));
            }
        }
        largest.filter(|(n, _)| own_held + 1 < *n).map(|(_, g)| g)
    }
}

impl IpKey {
    /// The group this key is in.
    pub fn group(self) -> IpGroup {
        match self {
            IpKey::V4(ip) => IpGroup::V4((u32::from(ip) >> 16) as u16),
            IpKey::V6Prefix(p) => IpGroup::V6((p >> 32) as u32),
        }
    }
}

/// Whether `addr` starts with a loopback IP address (an IPv4-mapped one included).
pub fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        _ => false,
    }
}

/// Whether one of `listening` (a node's listen addresses) is an IP address beyond
/// loopback. A node listening on loopback alone is one of several on one host (tests,
/// a development mesh), whose peers over loopback are each their own; a node that also
/// listens on an interface counts all of loopback as one network, as any other: local
/// processes and web pages reach it there under as many keys as they like.
pub fn beyond_loopback<'a>(listening: impl IntoIterator<Item = &'a Multiaddr>) -> bool {
    listening
        .into_iter()
        .any(|a| IpKey::of_multiaddr(a).is_some() && !is_loopback(a))
}

/// The address a connection is counted under by per-network limits: its remote address
/// (`local` is `Some` for an inbound connection: the listen address it came in on), or,
/// for a connection that came in through one of the node's relay reservations, the
/// circuit address it came in on (`…/p2p/<relay>/p2p-circuit`). libp2p names such a
/// connection's remote `/p2p/<source>` alone, with no IP: counted by that, every peer
/// arriving through a relay was a network of its own, under as many fresh keys as it
/// liked. Through the circuit address they count under the relay's, as the peers the
/// node reaches through a relay always did.
pub fn counted_remote<'a>(remote: &'a Multiaddr, local: Option<&'a Multiaddr>) -> &'a Multiaddr {
    match local {
        Some(local)
            if IpKey::of_multiaddr(remote).is_none()
                && local.iter().any(|p| matches!(p, Protocol::P2pCircuit)) =>
        {
            local
        }
        _ => remote,
    }
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpKey::V4(ip) => write!(f, "{ip}"),
            IpKey::V6Prefix(p) => {
                let net = Ipv6Addr::from(u128::from(*p) << 64);
                write!(f, "{net}/64")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> IpKey {
        IpKey::of(s.parse().unwrap())
    }

    #[test]
    fn the_largest_group_gives_way_to_a_smaller_one_only() {
        let (a, b, c) = (
            key("192.0.2.1").group(),
            key("198.51.100.1").group(),
            key("203.0.113.1").group(),
        );
        // A newcomer of a group holding none: the largest gives way.
        assert_eq!(IpGroup::giving_way(c, [(a, 5), (b, 2)]), Some(a));
        // Not when the largest would end no larger than the newcomer's group.
        assert_eq!(IpGroup::giving_way(b, [(a, 3), (b, 2)]), None);
        assert_eq!(IpGroup::giving_way(b, [(a, 4), (b, 2)]), Some(a));
        // The newcomer's group is the largest: refused.
        assert_eq!(IpGroup::giving_way(a, [(a, 5), (b, 2)]), None);
        // Among equals, the greater group; groups holding none are passed over.
        let greater = a.max(b);
        assert_eq!(
            IpGroup::giving_way(c, [(a, 4), (b, 4), (c, 0)]),
            Some(greater)
        );
        assert_eq!(IpGroup::giving_way(c, []), None);
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_ipv4_by_address() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn the_first_ip_of_a_multiaddr_is_the_key() {
        let a: Multiaddr = "/ip6/2001:db8::5/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(IpKey::of_multiaddr(&a), Some(key("2001:db8::9")));
        let relayed: Multiaddr =
            "/ip4/198.51.100.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
                .parse()
                .unwrap();
        assert_eq!(IpKey::of_multiaddr(&relayed), Some(key("198.51.100.7")));
        let dns: Multiaddr = "/dns4/example.org/tcp/1".parse().unwrap();
        assert_eq!(IpKey::of_multiaddr(&dns), None);
    }

    #[test]
    fn a_connection_through_a_reservation_counts_under_its_relay() {
        let ma = |s: &str| -> Multiaddr { s.parse().unwrap() };
        let relay = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let circuit = ma(&format!(
            "/ip4/198.51.100.7/tcp/4001/p2p/{relay}/p2p-circuit"
        ));
        let source = ma("/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo");
        assert_eq!(counted_remote(&source, Some(&circuit)), &circuit);
        assert_eq!(
            IpKey::of_multiaddr(counted_remote(&source, Some(&circuit))),
            Some(key("198.51.100.7"))
        );
        // A direct inbound connection, an outbound one, a memory one: their remote.
        let direct = ma("/ip4/203.0.113.5/tcp/51000");
        assert_eq!(
            counted_remote(&direct, Some(&ma("/ip4/0.0.0.0/tcp/4001"))),
            &direct
        );
        assert_eq!(counted_remote(&circuit, None), &circuit);
        let memory = ma("/memory/7");
        assert_eq!(counted_remote(&memory, Some(&ma("/memory/8"))), &memory);
    }

    #[test]
    fn loopback_and_beyond() {
        let ma = |s: &str| -> Multiaddr { s.parse().unwrap() };
        assert!(is_loopback(&ma("/ip4/127.0.0.9/tcp/1")));
        assert!(is_loopback(&ma("/ip6/::1/tcp/1")));
        assert!(is_loopback(&ma("/ip6/::ffff:127.0.0.1/tcp/1")));
        assert!(!is_loopback(&ma("/ip4/10.0.0.2/tcp/1")));
        assert!(!is_loopback(&ma("/dns4/localhost/tcp/1")));
        assert!(!beyond_loopback(&[
            ma("/ip4/127.0.0.1/tcp/1"),
            ma("/memory/1")
        ]));
        assert!(beyond_loopback(&[
            ma("/ip4/127.0.0.1/tcp/1"),
            ma("/ip4/10.0.0.2/tcp/1")
        ]));
    }
}
