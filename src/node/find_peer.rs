//! Dialing by peer id when no address is known: the peer is looked up first, the way
//! `ipfs routing findpeer` does. The peer id of an Ed25519 key is a node id, so such a
//! peer goes through the node's own lookup (store, mesh DHT, then Amino peer routing);
//! any other peer id through Amino peer routing (Kademlia `get_closest_peers` for it).
//! The waiting room of the second kind is `waiting::PeerLookups` (pure, `now` given).

use std::time::Instant;

use libp2p::kad::{self, QueryId};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, MeshError, NodeId};

use super::Node;
use super::api::HandleError;
use super::waiting::{After, Join};

/// The addresses of a peer Amino found that the node dials: those its routing table would
/// take (`ip_scope::amino_worthy`: no loopback, LAN or DNS name unless
/// `amino_private_addrs`), dialable, at most [`super::kad_scope::MAX_DIAL_ADDRS`]. The
/// list is whatever the Amino peer that first named the peer gave: all of it was
/// dialed, past the scope Amino's own dials keep.
fn to_dial(found: &[Multiaddr], keep_private: bool) -> Vec<Multiaddr> {
    found
        .iter()
        .filter(|a| super::addrs::dialable(a) && super::ip_scope::amino_worthy(a, keep_private))
        .take(super::kad_scope::MAX_DIAL_ADDRS)
        .cloned()
        .collect()
}

/// The addresses to dial of `peer` among the `peers` an Amino `get_closest_peers`
/// reported ([`to_dial`]); `None` when it is not among them or none of its addresses
/// is in scope. Both Amino lookups use it: of a node id (`lookups`, which dialed all
/// it was given) and of another peer id.
pub(super) fn amino_hit(
    peers: &[kad::PeerInfo],
    peer: PeerId,
    keep_private: bool,
) -> Option<Vec<Multiaddr>> {
    peers
        .iter()
        .find(|p| p.peer_id == peer)
        .map(|p| to_dial(&p.addrs, keep_private))
        .filter(|addrs| !addrs.is_empty())
}

fn not_found(peer: &PeerId, why: &str) -> HandleError {
    HandleError::Refused(MeshError::new(
        ErrorCode::TransportUnavailable,
        format!("{peer}: no address known, {why}"),
    ))
}

impl Node {
    /// Looks `peer` up, then dials the addresses found; `fresh` skips the store (its
    /// advertisement of the node named the addresses that just failed).
    pub(super) fn find_peer(&mut self, peer: PeerId, after: After, fresh: bool) {
        if let Ok(node) = NodeId::from_peer_id(&peer) {
            tracing::debug!(%peer, "looking the node up");
            return self.lookup(node, after, fresh);
        }
        let after = match self.waiting.sought.add(peer, after) {
            Join::Joined => return,
            Join::Full(after) => {
                return after.fail(not_found(&peer, "and too many peer lookups run"));
            }
            Join::Start(after) => after,
        };
        let amino = &mut self.swarm.behaviour_mut().amino;
        if amino.kbuckets().next().is_none() {
            return after.fail(not_found(&peer, "and no Amino DHT peer to ask"));
        }
        tracing::debug!(%peer, "no address known: Amino peer routing");
        let q = amino.get_closest_peers(peer);
        self.waiting.sought.started(peer, q, after, Instant::now());
    }

    /// A step of an Amino query: whether it was one of the peer lookups.
    pub(super) fn on_peer_lookup(
        &mut self,
        id: QueryId,
        result: &kad::QueryResult,
        last: bool,
    ) -> bool {
        let Some(peer) = self.waiting.sought.peer_of(id) else {
            return false;
        };
        let kad::QueryResult::GetClosestPeers(r) = result else {
            return true;
        };
        let peers = match r {
            Ok(ok) => &ok.peers,
            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
        };
        if let Some(addrs) = amino_hit(peers, peer, self.config.amino_private_addrs) {
            if let Some(mut q) = self.swarm.behaviour_mut().amino.query_mut(&id) {
                q.finish();
            }
            let waiters = self.waiting.sought.finish(&peer);
            self.connect_found(peer, addrs, waiters);
        } else if last {
            for after in self.waiting.sought.finish(&peer) {
                after.fail(not_found(&peer, "and Amino peer routing did not find it"));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_found_peer_is_dialed_at_few_addresses_in_scope() {
        let mut found: Vec<Multiaddr> = vec![
            "/ip4/127.0.0.1/tcp/6379".parse().unwrap(),
            "/ip4/10.1.2.3/tcp/22".parse().unwrap(),
            "/dns4/localhost/tcp/80".parse().unwrap(),
        ];
        found.extend((0..40).map(|i| format!("/ip4/198.51.100.{i}/tcp/4001").parse().unwrap()));
        let dialed = to_dial(&found, false);
        assert_eq!(
            dialed,
            found[3..3 + super::super::kad_scope::MAX_DIAL_ADDRS]
        );
        assert_eq!(to_dial(&found[..3], true).len(), 3);
    }

    /// A node id's peer as Amino reported it: dialed only at addresses in scope, and
    /// not at all with none (a hostile Amino server named loopback and LAN services).
    #[test]
    fn an_amino_hit_is_kept_to_scope() {
        let peer = PeerId::random();
        let info = |addrs: &[&str]| kad::PeerInfo {
            peer_id: peer,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let local = [info(&[
            "/ip4/127.0.0.1/tcp/6379",
            "/ip4/10.0.0.1/tcp/22/ws",
        ])];
        assert_eq!(amino_hit(&local, peer, false), None);
        assert_eq!(amino_hit(&local, peer, true).map(|a| a.len()), Some(2));
        let mixed = [info(&[
            "/ip4/127.0.0.1/tcp/6379",
            "/ip4/198.51.100.7/tcp/4001",
        ])];
        assert_eq!(
            amino_hit(&mixed, peer, false),
            Some(vec!["/ip4/198.51.100.7/tcp/4001".parse().unwrap()])
        );
        assert_eq!(amino_hit(&mixed, PeerId::random(), false), None);
    }
}
