//! How many Kademlia requests the node answers: per peer and per network
//! ([`InboundRate`], pure, `now` passed in), applied to libp2p-kad's handler events by
//! [`InboundScreen`] (for `kad_scope::ScopedKad`).
//!
//! libp2p-kad answers every request a peer sends: a `FIND_NODE`, `GET_PROVIDERS` or
//! `GET_VALUE` of about 100 bytes comes back as some 20 KB of peers and addresses (or a
//! record), and a peer may ask as fast as its connections carry. Both DHTs' inbound
//! reads now pass a budget (the writes, `PUT_VALUE` and `ADD_PROVIDER`, have their own
//! rates and shares): the peer's ([`PER_PEER`]), then its network's
//! ([`PER_NETWORK`]: the IPv4 address or IPv6 /64 its connection comes from; a peer
//! over a relay circuit by itself, as the store's shares count it; loopback peers each
//! their own for a node on loopback alone). Each DHT (Amino, the mesh DHT) has budgets
//! of its own. A request beyond gets an empty answer (no peers, no record: a few
//! bytes), which the asker takes as "this peer knows nothing": its query goes on with
//! the other peers, and one that asked only this node (a newcomer bootstrapping from a
//! single seed in a burst of more than 64 reads) learns less from it. (libp2p-kad's own `Reset` closes the
//! stream without waking its task: the asker waited a second or more for each.) A
//! refusal in one budget costs no token in the other.

use std::collections::VecDeque;
use std::time::Instant;

use libp2p::kad;
use libp2p::swarm::{ConnectionId, THandlerInEvent, THandlerOutEvent};
use libp2p::{Multiaddr, PeerId};
use mesh_advert::Source;
use mesh_core::{RateLimit, RateLimiter, take_all};

/// Empty answers queued at most (see [`InboundScreen`]).
const MAX_REFUSALS: usize = 1024;

type Kad = kad::Behaviour<kad::store::MemoryStore>;
/// libp2p-kad's handler events (its `handler` module is private; the variants are
/// reached through these aliases).
pub(crate) type KadOut = THandlerOutEvent<Kad>;
pub(crate) type KadIn = THandlerInEvent<Kad>;

/// Requests per peer: a burst of 64 (a few lookups' worth from one querier at once),
/// then 600 a minute.
pub const PER_PEER: RateLimit = RateLimit {
    burst: 64,
    per_second: 10.0,
};
/// Requests per network: 256 at once, then 2,400 a minute.
pub const PER_NETWORK: RateLimit = RateLimit {
    burst: 256,
    per_second: 40.0,
};
/// Keys followed per table (the least recently used forgotten first).
const TRACKED: usize = 4096;

/// The two budgets.
#[derive(Debug)]
pub struct InboundRate {
    peers: RateLimiter<PeerId>,
    networks: RateLimiter<Source>,
}

impl Default for InboundRate {
    fn default() -> Self {
        InboundRate {
            peers: RateLimiter::new(PER_PEER, TRACKED),
            networks: RateLimiter::new(PER_NETWORK, TRACKED),
        }
    }
}

impl InboundRate {
    /// Whether one more request of `peer` over a connection from `remote` is answered
    /// at `now_ms` (any clock that only moves forward); `listening` are the node's
    /// listen addresses (for the loopback rule).
    pub fn admit<'a>(
        &mut self,
        peer: PeerId,
        remote: Option<&Multiaddr>,
        listening: impl IntoIterator<Item = &'a Multiaddr>,
        now_ms: i64,
    ) -> bool {
        let network = Source::for_rates(peer, remote, listening);
        take_all(
            now_ms,
            &mut [
                &mut self.peers.charge(&peer),
                &mut self.networks.charge(&network),
            ],
        )
        .is_ok()
    }
}

/// The budgets applied to libp2p-kad's handler events, and the empty answers owed.
#[derive(Debug)]
pub struct InboundScreen {
    rate: InboundRate,
    /// Empty answers to the requests refused, at most [`MAX_REFUSALS`]: the swarm takes
    /// one at every poll, so the queue only grows while it is busy elsewhere. Beyond,
    /// a refused request gets no answer: its stream (the asker's, over its budget)
    /// waits until its connection closes. libp2p-kad's handler is no bound here: it
    /// takes more than its 32 inbound streams per connection when they come at once.
    refusals: VecDeque<(PeerId, ConnectionId, KadIn)>,
    start: Instant,
}

impl Default for InboundScreen {
    fn default() -> Self {
        InboundScreen {
            rate: InboundRate::default(),
            refusals: VecDeque::new(),
            start: Instant::now(),
        }
    }
}

impl InboundScreen {
    /// `event` from `peer`'s `connection` (from `remote`): `Some` to hand libp2p-kad,
    /// `None` for a read over the budget (its empty answer queued).
    pub(crate) fn screen<'a>(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        remote: Option<&Multiaddr>,
        listening: impl IntoIterator<Item = &'a Multiaddr>,
        event: KadOut,
    ) -> Option<KadOut> {
        // The reads: writes (PUT_VALUE, ADD_PROVIDER) have their own rates and shares
        // (`DhtRecords`, `ProviderBook`).
        let empty = match &event {
            KadOut::FindNodeReq { request_id, .. } => KadIn::FindNodeRes {
                closer_peers: Vec::new(),
                request_id: *request_id,
            },
            KadOut::GetProvidersReq { request_id, .. } => KadIn::GetProvidersRes {
                closer_peers: Vec::new(),
                provider_peers: Vec::new(),
                request_id: *request_id,
            },
            KadOut::GetRecord { request_id, .. } => KadIn::GetRecordRes {
                record: None,
                closer_peers: Vec::new(),
                request_id: *request_id,
            },
            _ => return Some(event),
        };
        let ms = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX);
        if self.rate.admit(peer, remote, listening, ms) {
            return Some(event);
        }
        tracing::debug!(%peer, "Kademlia request refused: over the inbound rate");
        if self.refusals.len() < MAX_REFUSALS {
            self.refusals.push_back((peer, connection, empty));
        }
        None
    }

    /// The next empty answer to hand the handler.
    pub(crate) fn next_refusal(&mut self) -> Option<(PeerId, ConnectionId, KadIn)> {
        self.refusals.pop_front()
    }

    /// `connection` closed: its answers are dropped.
    pub(crate) fn closed(&mut self, connection: ConnectionId) {
        self.refusals.retain(|(_, c, _)| *c != connection);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_then_its_network_are_limited() {
        let mut r = InboundRate::default();
        let listen = [ma("/ip4/0.0.0.0/tcp/4001"), ma("/ip4/192.0.2.1/tcp/4001")];
        let from = ma("/ip4/198.51.100.7/tcp/5000");
        let p = PeerId::random();
        let n = (0..100)
            .filter(|_| r.admit(p, Some(&from), &listen, 0))
            .count();
        assert_eq!(n, PER_PEER.burst as usize);
        // Fresh keys of that network share its budget.
        let more: usize = (0..10)
            .map(|_| {
                let q = PeerId::random();
                (0..64)
                    .filter(|_| r.admit(q, Some(&from), &listen, 0))
                    .count()
            })
            .sum();
        assert_eq!(n + more, PER_NETWORK.burst as usize);
        // A second later, 10 more for the peer (and 40 for the network).
        let later = (0..100)
            .filter(|_| r.admit(p, Some(&from), &listen, 1000))
            .count();
        assert_eq!(later, 10);
    }

    #[test]
    fn loopback_peers_count_each_for_themselves_on_a_loopback_node() {
        let mut r = InboundRate::default();
        let listen = [ma("/ip4/127.0.0.1/tcp/4001")];
        let from = ma("/ip4/127.0.0.1/tcp/5000");
        let total: usize = (0..10)
            .map(|_| {
                let q = PeerId::random();
                (0..64)
                    .filter(|_| r.admit(q, Some(&from), &listen, 0))
                    .count()
            })
            .sum();
        assert_eq!(total, 640);
    }
}
