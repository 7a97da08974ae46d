//! Where a peer's input counts: its network where it has one, else the peer itself.
//!
//! Node ids and peer ids cost nothing to make, networks (an IPv4 address or an IPv6
//! /64, [`IpKey`]) do, so the stores' shares and the request rates count by network
//! where they can.

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

use crate::IpKey;

/// Where a peer's input counts: a change to a store, a request against a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// This node (its own advertisement, what the application stores, records its own
    /// DHT lookups found): no share, never evicted. An answer a peer gives to a lookup
    /// over `/mesh/advert` counts under that peer's source.
    Local,
    /// Read back from durable storage (where it came from is not stored): one share,
    /// evicted oldest first (in the order read) like any source's.
    Restored,
    /// A network: the IPv4 address or IPv6 /64 the change came from.
    Network(IpKey),
    /// A peer connected without an IP of its own (a relayed connection, the memory
    /// transport).
    Peer(PeerId),
}

impl Source {
    /// The source of a change `peer` sent over a connection with the remote addresses
    /// `remote` (all of the peer's connections): the network of the first one that is
    /// not a relay circuit, else the peer itself.
    pub fn of_peer<'a>(peer: PeerId, remote: impl IntoIterator<Item = &'a Multiaddr>) -> Source {
        remote
            .into_iter()
            .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
            .find_map(IpKey::of_multiaddr)
            .map_or(Source::Peer(peer), Source::Network)
    }

    /// The network a request rate counts `peer` under, over a connection from `remote`
    /// at a node listening on `listening`: [`Source::of_peer`], except that a node on
    /// loopback alone (several nodes on one host) counts its loopback peers each for
    /// itself, as the session room does.
    pub fn for_rates<'a>(
        peer: PeerId,
        remote: Option<&Multiaddr>,
        listening: impl IntoIterator<Item = &'a Multiaddr>,
    ) -> Source {
        match remote {
            Some(r)
                if crate::ipkey::is_loopback(r) && !crate::ipkey::beyond_loopback(listening) =>
            {
                Source::Peer(peer)
            }
            _ => Source::of_peer(peer, remote),
        }
    }

    /// [`Source::for_rates`] for a peer connected over `remotes` (all its connections):
    /// counted by the network of a direct connection when it has one (a relay circuit
    /// names no network of the peer's), else by its first connection.
    pub fn for_rates_of<'a, 'b, R>(
        peer: PeerId,
        remotes: R,
        listening: impl IntoIterator<Item = &'a Multiaddr>,
    ) -> Source
    where
        R: IntoIterator<Item = &'b Multiaddr>,
        R::IntoIter: Clone,
    {
        let remotes = remotes.into_iter();
        let remote = remotes
            .clone()
            .find(|a| Source::of_peer(peer, [*a]) != Source::Peer(peer))
            .or_else(|| remotes.clone().next());
        Source::for_rates(peer, remote, listening)
    }

    /// The source of an HTTP client at `ip`.
    pub fn of_ip(ip: std::net::IpAddr) -> Source {
        Source::Network(IpKey::of(ip))
    }
}
