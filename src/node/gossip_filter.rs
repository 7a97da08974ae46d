//! What a peer may subscribe to in the node's gossipsub: gossipsub keeps every topic a
//! connected peer announces (libp2p's default filter allows all), so a peer could grow
//! that set with every RPC for as long as it stays connected.
//!
//! - A topic name is at most [`MAX_TOPIC_BYTES`] bytes (a swarm's topic is 81).
//! - A peer holds at most [`MAX_TOPICS_PER_PEER`] topics, and one RPC announces at most
//!   as many; an RPC that would go past either is ignored whole (gossipsub logs it).
//!
//! - All peers together hold at most [`MAX_PEER_SUBSCRIPTIONS`], and the peers of one
//!   network ([`network_of`]) at most [`MAX_NETWORK_SUBSCRIPTIONS`], except on the
//!   topics the node is in (set on the behaviour by `build::gossipsub`).
//!
//! The node's own subscriptions pass the same name check; their number is capped by the
//! node ([`MAX_LOCAL_TOPICS`]).

use libp2p::Multiaddr;
use libp2p::gossipsub::{self, TopicHash, TopicSubscriptionFilter};
use libp2p::multiaddr::Protocol;
use mesh_core::IpKey;

/// The longest topic name taken, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Topics one peer may hold subscribed; a node in the most swarms it joins (64) with its
/// own topics stays far below.
pub const MAX_TOPICS_PER_PEER: usize = 512;
/// Topics the node's control API may subscribe the node to.
pub const MAX_LOCAL_TOPICS: usize = 256;
/// Subscriptions all connected peers hold together (the vendored gossipsub's
/// `set_max_peer_subscriptions`); beyond, a peer's subscription to a topic the node is
/// not in is ignored. Each holds its topic's name (up to [`MAX_TOPIC_BYTES`]) in a tree
/// node, about 1.5 KiB: the per-peer cap alone let 384 connections of fresh keys hold
/// 196,608 of them (about 290 MiB).
pub const MAX_PEER_SUBSCRIPTIONS: usize = 32_768;
/// Subscriptions the connected peers of one network hold together (the vendored
/// gossipsub's `set_max_network_subscriptions`): an eighth of
/// [`MAX_PEER_SUBSCRIPTIONS`], eight peers at [`MAX_TOPICS_PER_PEER`]. Without it one
/// address (64 connections of fresh keys) filled the cap of all peers.
pub const MAX_NETWORK_SUBSCRIPTIONS: usize = MAX_PEER_SUBSCRIPTIONS / 8;

/// The network a peer's subscriptions count under, from its first connection's
/// address: its IPv4 address or IPv6 /64 as a number. All of loopback is one network
/// at a node that listens beyond loopback (local processes and web pages reach it
/// there under as many keys as they like), none at a node on loopback alone (every
/// node of a test mesh on one host); addresses without an IP or through a relay (a
/// relayed peer's address names the relay) give none. A peer under none counts in
/// [`MAX_PEER_SUBSCRIPTIONS`] alone.
pub fn network_of<'a>(
    addr: &Multiaddr,
    listening: impl IntoIterator<Item = &'a Multiaddr>,
) -> Option<u128> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return None;
    }
    if mesh_core::ipkey::is_loopback(addr) && !mesh_core::ipkey::beyond_loopback(listening) {
        return None;
    }
    let key = if mesh_core::ipkey::is_loopback(addr) {
        IpKey::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        IpKey::of_multiaddr(addr)?
    };
    Some(match key {
        IpKey::V4(ip) => u128::from(u32::from(ip)),
        IpKey::V6Prefix(p) => (1 << 64) | u128::from(p),
    })
}

/// Topic names of at most [`MAX_TOPIC_BYTES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicNames;

impl TopicSubscriptionFilter for TopicNames {
    fn can_subscribe(&mut self, topic: &TopicHash) -> bool {
        topic.as_str().len() <= MAX_TOPIC_BYTES
    }
}

/// The node's filter: names checked, topics per peer and per RPC counted.
pub type Filter = gossipsub::MaxCountSubscriptionFilter<TopicNames>;

/// The node's gossipsub behaviour type.
pub type Gossipsub = gossipsub::Behaviour<gossipsub::IdentityTransform, Filter>;

/// The filter with the node's limits.
pub fn filter() -> Filter {
    gossipsub::MaxCountSubscriptionFilter {
        filter: TopicNames,
        max_subscribed_topics: MAX_TOPICS_PER_PEER,
        max_subscriptions_per_request: MAX_TOPICS_PER_PEER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(a: &str) -> Multiaddr {
        a.parse().unwrap_or_else(|e| panic!("{a}: {e}"))
    }

    /// At a node listening on loopback alone.
    fn of(a: &str) -> Option<u128> {
        network_of(&ma(a), &[ma("/ip4/127.0.0.1/tcp/4001")])
    }

    #[test]
    fn peers_count_under_their_address_or_ipv6_64_and_local_or_relayed_ones_under_none() {
        assert_eq!(
            of("/ip4/203.0.113.7/tcp/1"),
            of("/ip4/203.0.113.7/udp/9/quic-v1")
        );
        assert_ne!(of("/ip4/203.0.113.7/tcp/1"), of("/ip4/203.0.113.8/tcp/1"));
        assert!(of("/ip4/203.0.113.7/tcp/1").is_some());
        assert_eq!(
            of("/ip6/2001:db8::1/tcp/1"),
            of("/ip6/2001:db8::ffff/tcp/1")
        );
        assert_ne!(
            of("/ip6/2001:db8::1/tcp/1"),
            of("/ip6/2001:db8:0:1::1/tcp/1")
        );
        // 0.0.0.1 and ::1-like prefixes never meet: the tag bit.
        assert_ne!(of("/ip4/0.0.0.1/tcp/1"), of("/ip6/0:0:0:1::/tcp/1"));
        assert_eq!(of("/ip4/127.0.0.1/tcp/1"), None);
        assert_eq!(of("/ip6/::1/tcp/1"), None);
        assert_eq!(of("/memory/4"), None);
        // At a node listening beyond loopback, all of loopback is one network.
        let public = [
            ma("/ip4/127.0.0.1/tcp/4001"),
            ma("/ip4/203.0.113.1/tcp/4001"),
        ];
        let v4 = network_of(&ma("/ip4/127.0.0.1/tcp/1"), &public);
        assert!(v4.is_some());
        assert_eq!(network_of(&ma("/ip6/::1/tcp/1"), &public), v4);
        assert_eq!(network_of(&ma("/ip4/127.0.0.2/tcp/9"), &public), v4);
        assert_eq!(
            of(
                "/ip4/203.0.113.7/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            ),
            None
        );
    }
}
