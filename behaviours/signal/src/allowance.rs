//! How many frames the node takes from the peers of one network: each peer has its
//! allowance ([`crate::Config::per_peer`]) and so does its network
//! ([`crate::Config::per_network`]: the IPv4 address or IPv6 /64 its connection comes
//! from, as the stores count sources), both checked before any signature and taken
//! together or not at all. Peer ids cost nothing: counted per peer alone, every fresh
//! key that connected got a fresh allowance of frames to make the node verify.

use std::collections::HashMap;

use libp2p::swarm::{ConnectionId, FromSwarm};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{RateLimit, RateLimiter, Source, Timestamp, take_all};

/// Peers and networks followed at once (the least recently seen forgotten first).
const TRACKED: usize = 4096;

/// The allowances, and what they need to know of the connections.
#[derive(Debug)]
pub(crate) struct Allowance {
    peers: RateLimiter<PeerId>,
    networks: RateLimiter<Source>,
    /// The remote address of each connection of each connected peer.
    remotes: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    /// Our listen addresses (a node on loopback alone counts its loopback peers each
    /// for itself, [`Source::for_rates`]).
    listening: Vec<Multiaddr>,
}

impl Allowance {
    pub(crate) fn new(per_peer: RateLimit, per_network: RateLimit) -> Self {
        Allowance {
            peers: RateLimiter::new(per_peer, TRACKED),
            networks: RateLimiter::new(per_network, TRACKED),
            remotes: HashMap::new(),
            listening: Vec::new(),
        }
    }

    /// Follows connections and listen addresses.
    pub(crate) fn on_swarm_event(&mut self, event: &FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let addr = e.endpoint.get_remote_address().clone();
                self.remotes
                    .entry(e.peer_id)
                    .or_default()
                    .push((e.connection_id, addr));
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(conns) = self.remotes.get_mut(&e.peer_id) {
                    conns.retain(|(id, _)| *id != e.connection_id);
                    if conns.is_empty() {
                        self.remotes.remove(&e.peer_id);
                    }
                }
            }
            FromSwarm::AddressChange(e) => {
                if let Some((_, addr)) = self
                    .remotes
                    .get_mut(&e.peer_id)
                    .and_then(|c| c.iter_mut().find(|(id, _)| *id == e.connection_id))
                {
                    *addr = e.new.get_remote_address().clone();
                }
            }
            FromSwarm::NewListenAddr(e) if !self.listening.contains(e.addr) => {
                self.listening.push(e.addr.clone());
            }
            FromSwarm::ExpiredListenAddr(e) => self.listening.retain(|a| a != e.addr),
            _ => {}
        }
    }

    /// The network `peer`'s frames count under: that of a direct connection when the
    /// peer has one (a relayed connection names no network of the peer's: counted by
    /// the peer itself, as `Source::of_peer` does everywhere).
    pub(crate) fn source_of(&self, peer: PeerId) -> Source {
        let conns = self
            .remotes
            .get(&peer)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Source::for_rates_of(peer, conns.iter().map(|(_, a)| a), &self.listening)
    }

    /// Takes one frame of `peer`'s allowance and of its network's, or neither: `Err`
    /// is the seconds to wait.
    pub(crate) fn take(&mut self, peer: PeerId, now: &Timestamp) -> Result<(), u64> {
        let source = self.source_of(peer);
        take_all(
            now.instant().timestamp_millis(),
            &mut [
                &mut self.peers.charge(&peer),
                &mut self.networks.charge(&source),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_of_one_network_share_its_allowance_and_a_refusal_takes_nothing() {
        let mut a = Allowance::new(RateLimit::per_minute(10, 60), RateLimit::per_minute(15, 60));
        a.listening.push("/ip4/192.0.2.1/tcp/1".parse().unwrap());
        let now = Timestamp::now();
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for p in &peers {
            let addr = "/ip4/198.51.100.7/tcp/5".parse().unwrap();
            a.remotes
                .insert(*p, vec![(ConnectionId::new_unchecked(1), addr)]);
        }
        let taken: Vec<usize> = peers
            .iter()
            .map(|p| (0..20).filter(|_| a.take(*p, &now).is_ok()).count())
            .collect();
        assert_eq!(taken, vec![10, 5, 0], "the network's 15 shared");
        // A peer of another network has its own.
        let other = PeerId::random();
        let addr = "/ip4/203.0.113.9/tcp/5".parse().unwrap();
        a.remotes
            .insert(other, vec![(ConnectionId::new_unchecked(2), addr)]);
        assert!(a.take(other, &now).is_ok());
        // The third peer, refused by its network, kept its own tokens: once the
        // network refills it takes them.
        let later = now.plus_secs(60);
        assert_eq!(
            (0..20).filter(|_| a.take(peers[2], &later).is_ok()).count(),
            10
        );
    }
}
