//! Room for the sessions peers start. The node holds at most `max_live` sessions
//! ([`crate::governor::GovernorConfig::max_live`]); the sessions others start (their
//! hello) may take all but [`reserved`] of them, which stay for the node's own dials and
//! its named peers (seeds), and the peers whose connections come from one network (an
//! IPv4 address or IPv6 /64, [`IpKey`]) at most [`per_network`]. Without these, one host
//! with as many fresh keys as `max_live` held every session: the node's own dials to its
//! seeds found no room (and were retried forever), the seeds' hellos were refused.
//! Connections without an IP (memory transport) are not counted by network, nor are
//! loopback ones at a node that listens on loopback alone (several nodes of one host, as
//! in the tests, each count for themselves); at a node that listens beyond loopback,
//! all of loopback is one network ([`network_of`]). Pure.

use std::collections::{HashMap, HashSet};

use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, IpKey, MeshError, NodeId};

use crate::governor::Governor;

/// Sessions of `max_live` kept for the node's own dials and named peers.
pub fn reserved(max_live: usize) -> usize {
    max_live / 4
}

/// Sessions the peers of one network may start.
pub fn per_network(max_live: usize) -> usize {
    (max_live / 4).max(1)
}

/// Whether `peer` (`node`), whose hello came, may start a session beside `pending`
/// handshakes under way and the sessions of `others`: within the room others may take
/// (all of it for a named peer) and its network's share. A soft refusal
/// (`E_TRANSPORT_REJECTED`): the connection stays, without a session.
pub fn admit(
    gov: &Governor,
    networks: &Networks,
    (peer, node): (&PeerId, &NodeId),
    pending: usize,
    others: &HashSet<PeerId>,
) -> Result<(), MeshError> {
    let (named, max) = (gov.is_named(node), gov.max_live());
    let reserve = if named { 0 } else { reserved(max) };
    let no_room = |why: String| MeshError::new(ErrorCode::TransportRejected, why);
    if !gov.has_room_besides(pending, reserve) {
        return Err(no_room(
            "handshake refused: no room for another session".into(),
        ));
    }
    match networks.admits(peer, others.iter().copied(), per_network(max)) {
        Err(net) if !named => Err(no_room(format!(
            "handshake refused: no room for another session from {net}"
        ))),
        _ => Ok(()),
    }
}

/// Whether the node may start a session with `node` (send its hello) beside `pending`
/// handshakes: with room left for the named peers it still wants
/// ([`Governor::named_wanting`]) unless `node` is one of them, so the connections the
/// node opens for other reasons (Kademlia, swarms) do not take the room its seeds need.
pub fn may_start(gov: &Governor, node: &NodeId, pending: usize) -> bool {
    let keep = if gov.is_named(node) {
        0
    } else {
        gov.named_wanting()
    };
    gov.has_room_besides(pending, keep)
}

/// The network a connection from `remote` counts under: `None` without an IP, and over
/// loopback unless `count_loopback` (all of loopback then one network, `127.0.0.1`).
///
/// A node that listens only on loopback is one of several nodes on one host (tests,
/// a development mesh): their sessions are not counted by network. A node that listens
/// beyond loopback counts its loopback peers as one network: any local process (or a
/// web page, through the WebSocket listener) could otherwise open sessions under fresh
/// keys until the peers' room was full, shutting out the peers of every other network.
pub fn network_of(remote: &Multiaddr, count_loopback: bool) -> Option<IpKey> {
    match (mesh_core::ipkey::is_loopback(remote), count_loopback) {
        (true, true) => Some(IpKey::V4(std::net::Ipv4Addr::LOCALHOST)),
        (true, false) => None,
        (false, _) => IpKey::of_multiaddr(remote),
    }
}

/// The network of each connected peer whose first connection it dialed (IP-less
/// connections are not recorded, nor loopback ones unless counted: [`network_of`]; one
/// through the node's relay reservation under the relay's, until a direct connection
/// comes: [`Networks::direct`]).
#[derive(Debug, Default)]
pub struct Networks {
    /// Each peer's network, and whether it is a relay's.
    of: HashMap<PeerId, (IpKey, bool)>,
}

impl Networks {
    /// `peer` dialed us from `net`.
    pub fn inbound(&mut self, peer: PeerId, net: IpKey) {
        self.of.insert(peer, (net, false));
    }

    /// `peer` came in through our reservation on a relay at `net`.
    pub fn inbound_relayed(&mut self, peer: PeerId, net: IpKey) {
        self.of.insert(peer, (net, true));
    }

    /// `peer`, counted under its relay's network, has a direct connection now (a hole
    /// punch) on network `net` (its remote's, or the address we dialed): counted by that
    /// from now on. Without one (no IP, or loopback not counted) it stays under its
    /// relay's: were it dropped, a stranger that only lets the node dial it would be
    /// counted under none. A network recorded from a direct connection stays.
    pub fn direct(&mut self, peer: PeerId, net: Option<IpKey>) {
        if let (Some((_, true)), Some(n)) = (self.of.get(&peer), net) {
            self.of.insert(peer, (n, false));
        }
    }

    /// The network `peer` dialed us from, when counted.
    pub fn network(&self, peer: &PeerId) -> Option<IpKey> {
        self.of.get(peer).map(|(n, _)| *n)
    }

    /// `peer` has no connection left.
    pub fn forget(&mut self, peer: &PeerId) {
        self.of.remove(peer);
    }

    /// Whether `peer` may start one more session beside `others` (the peers with a
    /// session or a handshake under way): `Err` with its network when that network's
    /// peers hold `max` already.
    pub fn admits(
        &self,
        peer: &PeerId,
        others: impl Iterator<Item = PeerId>,
        max: usize,
    ) -> Result<(), IpKey> {
        let Some(net) = self.network(peer) else {
            return Ok(());
        };
        let n = others
            .filter(|p| p != peer && self.network(p) == Some(net))
            .count();
        if n >= max { Err(net) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_peer_is_counted_by_its_direct_connection_once_it_has_one() {
        let mut n = Networks::default();
        let relay = IpKey::of("198.51.100.1".parse().unwrap());
        let home = IpKey::of("203.0.113.9".parse().unwrap());
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        n.inbound_relayed(a, relay);
        n.inbound_relayed(b, relay);
        n.inbound(c, home);
        // A hole punch: A dialed us directly; we dialed B at an address without a
        // network of its own: it stays under its relay's.
        n.direct(a, Some(home));
        n.direct(b, None);
        assert_eq!(n.network(&a), Some(home));
        assert_eq!(n.network(&b), Some(relay));
        // A network from a direct connection stays.
        n.direct(c, None);
        assert_eq!(n.network(&c), Some(home));
    }

    #[test]
    fn one_network_holds_its_share() {
        let mut n = Networks::default();
        let net = IpKey::of("198.51.100.7".parse().unwrap());
        let other = IpKey::of("203.0.113.9".parse().unwrap());
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        for p in &peers[..3] {
            n.inbound(*p, net);
        }
        n.inbound(peers[3], other);
        let held = || peers[..2].iter().copied();
        assert_eq!(n.admits(&peers[2], held(), 2), Err(net));
        assert_eq!(n.admits(&peers[2], held(), 3), Ok(()));
        assert_eq!(n.admits(&peers[3], held(), 2), Ok(()), "another network");
        assert_eq!(
            n.admits(&PeerId::random(), held(), 2),
            Ok(()),
            "not recorded"
        );
        n.forget(&peers[0]);
        assert_eq!(n.admits(&peers[2], held(), 2), Ok(()));
        assert_eq!((reserved(32), per_network(32)), (8, 8));
        assert_eq!((reserved(4), per_network(4)), (1, 1));
        assert_eq!((reserved(2), per_network(2)), (0, 1));
        let addr = |s: &str| s.parse::<Multiaddr>().unwrap();
        assert_eq!(network_of(&addr("/ip4/127.0.0.1/tcp/1"), false), None);
        assert_eq!(network_of(&addr("/ip6/::1/tcp/1"), false), None);
        assert_eq!(network_of(&addr("/memory/7"), true), None);
        assert_eq!(
            network_of(&addr("/ip4/198.51.100.7/tcp/1"), false),
            Some(net)
        );
        // Counted, all of loopback is one network.
        let lo = network_of(&addr("/ip4/127.0.0.1/tcp/1"), true);
        assert!(lo.is_some());
        assert_eq!(network_of(&addr("/ip4/127.0.0.9/tcp/1"), true), lo);
        assert_eq!(network_of(&addr("/ip6/::1/tcp/1"), true), lo);
    }
}
