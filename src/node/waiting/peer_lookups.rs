//! Running Amino peer lookups of dials by peer id (see `find_peer`): the waiting
//! room of dials whose peer id is not a node id. Pure, `now` given.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::QueryId;

use super::After;

/// Most Amino peer lookups of non-Ed25519 peers running at once (commands beyond it
/// fail at once rather than queue).
pub(crate) const MAX_PEER_LOOKUPS: usize = 64;

#[derive(Debug)]
struct Sought {
    query: QueryId,
    waiters: Vec<After>,
    since: Instant,
}

/// Running Amino peer lookups, keyed by the peer sought; a second dial of the same
/// peer joins the first lookup.
#[derive(Debug, Default)]
pub(crate) struct PeerLookups {
    by_peer: HashMap<PeerId, Sought>,
}

/// What [`PeerLookups::add`] decided.
#[derive(Debug)]
pub(crate) enum Join {
    /// A lookup of the peer runs already; the waiter joined it.
    Joined,
    /// No lookup runs: start one and [`PeerLookups::started`] it with the waiter.
    Start(After),
    /// The table is full: the waiter is given back to be failed.
    Full(After),
}

impl PeerLookups {
    /// Adds a waiter for `peer`.
    pub(crate) fn add(&mut self, peer: PeerId, after: After) -> Join {
        if let Some(s) = self.by_peer.get_mut(&peer) {
            s.waiters.push(after);
            return Join::Joined;
        }
        if self.by_peer.len() >= MAX_PEER_LOOKUPS {
            return Join::Full(after);
        }
        Join::Start(after)
    }

    /// Records the query started for `peer`.
    pub(crate) fn started(&mut self, peer: PeerId, query: QueryId, after: After, now: Instant) {
        self.by_peer.insert(
            peer,
            Sought {
                query,
                waiters: vec![after],
                since: now,
            },
        );
    }

    /// Whether a lookup of `peer` runs.
    pub(crate) fn runs(&self, peer: &PeerId) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// The peer a query looks for, if it is one of ours.
    pub(crate) fn peer_of(&self, query: QueryId) -> Option<PeerId> {
        self.by_peer
            .iter()
            .find(|(_, s)| s.query == query)
            .map(|(p, _)| *p)
    }

    /// Ends the lookup of `peer`: its waiters.
    pub(crate) fn finish(&mut self, peer: &PeerId) -> Vec<After> {
        self.by_peer
            .remove(peer)
            .map(|s| s.waiters)
            .unwrap_or_default()
    }

    /// Lookups older than `wait` at `now`: their waiters.
    pub(crate) fn expire(&mut self, now: Instant, wait: Duration) -> Vec<After> {
        let old: Vec<PeerId> = self
            .by_peer
            .iter()
            .filter(|(_, s)| now.duration_since(s.since) > wait)
            .map(|(p, _)| *p)
            .collect();
        old.iter().flat_map(|p| self.finish(p)).collect()
    }

    /// Every waiter (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<After> {
        self.by_peer.drain().flat_map(|(_, s)| s.waiters).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use libp2p::kad;
    use tokio::sync::oneshot;

    pub(crate) fn query_id() -> QueryId {
        // Query ids come only from a Kademlia behaviour: take one from a throwaway.
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut kad = kad::Behaviour::new(peer, kad::store::MemoryStore::new(peer));
        kad.get_closest_peers(PeerId::random())
    }

    #[test]
    fn a_second_dial_joins_the_running_lookup() {
        let mut l = PeerLookups::default();
        let peer = PeerId::random();
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        let Join::Start(a) = l.add(peer, After::Dial(a)) else {
            panic!("the first starts a lookup")
        };
        let q = query_id();
        l.started(peer, q, a, Instant::now());
        assert!(matches!(l.add(peer, After::Dial(b)), Join::Joined));
        assert_eq!(l.peer_of(q), Some(peer));
        assert_eq!(l.finish(&peer).len(), 2);
        assert_eq!(l.peer_of(q), None);
    }

    #[test]
    fn the_table_is_bounded_and_lookups_expire() {
        let mut l = PeerLookups::default();
        let t0 = Instant::now();
        let mut receivers = Vec::new();
        for _ in 0..MAX_PEER_LOOKUPS {
            let (tx, rx) = oneshot::channel();
            receivers.push(rx);
            let peer = PeerId::random();
            let Join::Start(a) = l.add(peer, After::Dial(tx)) else {
                panic!("room left")
            };
            l.started(peer, query_id(), a, t0);
        }
        let (tx, _rx) = oneshot::channel();
        assert!(matches!(
            l.add(PeerId::random(), After::Dial(tx)),
            Join::Full(_)
        ));
        let wait = Duration::from_secs(35);
        assert!(l.expire(t0 + wait, wait).is_empty());
        let gone = l.expire(t0 + wait + Duration::from_secs(1), wait);
        assert_eq!(gone.len(), MAX_PEER_LOOKUPS);
        assert!(l.by_peer.is_empty());
    }
}
