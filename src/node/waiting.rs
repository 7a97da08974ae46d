//! Work the node loop waits on: dials, lookups and markers, each with a deadline.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::kad::QueryId;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use mesh_core::NodeId;

use super::api::{Dht, Found, HandleError, Reply, answer};
use super::event::NodeEvent;

mod peer_lookups;
pub(crate) use peer_lookups::{Join, PeerLookups};

/// How long anything waits before it is answered with a timeout.
pub(crate) const WAIT: Duration = Duration::from_secs(35);

/// Most providers one find query collects: what the peers it asks answer is theirs to
/// choose, and a query runs up to [`WAIT`].
pub(crate) const MAX_PROVIDERS_FOUND: usize = 1024;

/// What to do once a connection (or a lookup) succeeds.
#[derive(Debug)]
pub(crate) enum After {
    Dial(Reply<PeerId>),
    Lookup(Reply<Found>),
    Marker {
        text: String,
        reply: Reply<String>,
    },
    /// The lookup stage of a route attempt (failed through the node, see
    /// `Node::fail_after`).
    Route(u64),
}

impl After {
    pub(crate) fn fail(self, error: HandleError) {
        match self {
            After::Dial(r) => {
                let _ = r.send(Err(error));
            }
            After::Lookup(r) => {
                let _ = r.send(Err(error));
            }
            After::Marker { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            After::Route(_) => {}
        }
    }
}

/// Anything that can be failed.
#[derive(Debug)]
pub(crate) enum Waiter {
    After(After),
    Marker(Reply<String>),
    Providers(ProviderWait),
}

impl Waiter {
    pub(crate) fn fail(self, error: HandleError) {
        match self {
            Waiter::After(a) => a.fail(error),
            Waiter::Marker(r) => {
                let _ = r.send(Err(error));
            }
            Waiter::Providers(ProviderWait::Provide(r)) => {
                let _ = r.send(Err(error));
            }
            Waiter::Providers(ProviderWait::Find(r, _)) => {
                let _ = r.send(Err(error));
            }
            Waiter::Providers(ProviderWait::Group(_)) => {}
        }
    }
}

/// A provider query's waiter.
#[derive(Debug)]
pub(crate) enum ProviderWait {
    Provide(Reply<()>),
    Find(Reply<Vec<PeerId>>, std::collections::BTreeSet<PeerId>),
    /// The node looks for members of one of its groups (nobody waits on it).
    Group(mesh_signal::group::DiscoveryKey),
}

#[derive(Debug)]
struct Lookup {
    waiters: Vec<After>,
    since: Instant,
}

/// The waiting room.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    by_connection: HashMap<ConnectionId, Vec<(After, Instant)>>,
    by_peer: HashMap<PeerId, Vec<(After, Instant)>>,
    lookups: HashMap<NodeId, Lookup>,
    /// Query ids count per Kademlia instance, so they are keyed with the DHT.
    queries: HashMap<(Dht, QueryId), NodeId>,
    markers: HashMap<PeerId, VecDeque<(String, Reply<String>, Instant)>>,
    remote: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    providers: HashMap<(Dht, QueryId), (ProviderWait, Instant)>,
    /// Amino lookups of peers (not node ids) that commands dial.
    pub(crate) sought: PeerLookups,
    /// Dials by peer id that used the addresses the swarm knew: when one fails, its
    /// waiters look the peer up instead of failing (the addresses may be stale: the
    /// peer moved). One entry per waited connection, gone with it.
    relookup: HashMap<ConnectionId, PeerId>,
    /// Commands' dials to a peer (at the addresses a lookup or the store found, or one
    /// a command named), while they run: a command for the same addresses waits on
    /// that dial rather than open a connection of its own. One entry per running dial,
    /// gone with it.
    found_dials: HashMap<PeerId, (ConnectionId, Vec<Multiaddr>)>,
}

fn timeout(what: &'static str) -> HandleError {
    HandleError::timed_out(what, WAIT)
}

impl Waiting {
    pub(crate) fn wait_connection(&mut self, id: ConnectionId, after: After) {
        self.by_connection
            .entry(id)
            .or_default()
            .push((after, Instant::now()));
    }

    /// [`Self::wait_connection`] for a dial by peer id over known addresses: if it
    /// fails, [`Self::connection_failed`] says to look `peer` up.
    pub(crate) fn wait_connection_or_relookup(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        after: After,
    ) {
        self.relookup.insert(id, peer);
        self.wait_connection(id, after);
    }

    /// The running command dial to `peer` at exactly `addrs`, if any.
    pub(crate) fn found_dial(&self, peer: &PeerId, addrs: &[Multiaddr]) -> Option<ConnectionId> {
        self.found_dials
            .get(peer)
            .filter(|(_, a)| a.as_slice() == addrs)
            .map(|(id, _)| *id)
    }

    /// Whether a lookup of `peer` runs (of its node id, or of a peer id in Amino). A
    /// dial by peer id then joins it rather than dial on its own: until the lookup
    /// answers, the addresses the swarm would dial are only what its queries have just
    /// been told (Kademlia hands a running query's addresses to any dial of the peer),
    /// so a dial of its own would be a second connection to the same peer beside the
    /// one the lookup is about to open, not a way round a stale address.
    ///
    /// Only a lookup that a connection to the peer id waits for (a dial's or a marker's):
    /// one that a `lookup` command or a route attempt runs may fail where the addresses
    /// the swarm knows would have worked.
    pub(crate) fn looking_up(&self, peer: &PeerId) -> bool {
        match NodeId::from_peer_id(peer) {
            Ok(node) => self.lookups.get(&node).is_some_and(|l| {
                l.waiters
                    .iter()
                    .any(|w| !matches!(w, After::Lookup(_) | After::Route(_)))
            }),
            Err(_) => self.sought.runs(peer),
        }
    }

    /// A command's dial to `peer` at `addrs` started as `id`.
    pub(crate) fn found_dial_started(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        addrs: Vec<Multiaddr>,
    ) {
        self.found_dials.insert(peer, (id, addrs));
    }

    fn found_dial_over(&mut self, id: ConnectionId) {
        self.found_dials.retain(|_, (c, _)| *c != id);
    }

    pub(crate) fn wait_peer(&mut self, peer: PeerId, after: After) {
        self.by_peer
            .entry(peer)
            .or_default()
            .push((after, Instant::now()));
    }

    /// A connection came up: everything waiting for it or its peer.
    pub(crate) fn connection_up(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: Multiaddr,
    ) -> Vec<After> {
        self.relookup.remove(&id);
        self.found_dial_over(id);
        self.remote.entry(peer).or_default().push((id, addr));
        let mut out: Vec<After> = self
            .by_connection
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        out.extend(
            self.by_peer
                .remove(&peer)
                .unwrap_or_default()
                .into_iter()
                .map(|(a, _)| a),
        );
        out
    }

    /// A connection closed.
    pub(crate) fn connection_down(&mut self, id: ConnectionId, peer: PeerId) {
        if let Some(list) = self.remote.get_mut(&peer) {
            list.retain(|(c, _)| *c != id);
            if list.is_empty() {
                self.remote.remove(&peer);
            }
        }
    }

    /// An outgoing connection failed: what waited for exactly that attempt, and the
    /// peer to look up for them instead of failing (a dial by peer id over addresses
    /// the swarm knew).
    pub(crate) fn connection_failed(&mut self, id: ConnectionId) -> (Vec<After>, Option<PeerId>) {
        let relookup = self.relookup.remove(&id);
        self.found_dial_over(id);
        let waiters = self
            .by_connection
            .remove(&id)
            .unwrap_or_default()
            .into_iter()
            .map(|(a, _)| a)
            .collect();
        (waiters, relookup)
    }

    /// Whether a query on `dht`'s DHT runs for someone (a lookup, a provider query of
    /// a command or of a swarm).
    pub(crate) fn waits_on(&self, dht: Dht) -> bool {
        self.queries.keys().any(|(s, _)| *s == dht) || self.providers.keys().any(|(s, _)| *s == dht)
    }

    /// The peers that commands wait on (a connection, a marker's answer).
    pub(crate) fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.by_peer.keys().chain(self.markers.keys())
    }

    pub(crate) fn remote_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.remote
            .get(peer)
            .map(|l| l.iter().map(|(_, a)| a.clone()).collect())
            .unwrap_or_default()
    }

    /// Adds a waiter to a running lookup of `node`; false when none runs.
    pub(crate) fn add_lookup_waiter(&mut self, node: NodeId, after: After) -> bool {
        match self.lookups.get_mut(&node) {
            Some(l) => {
                l.waiters.push(after);
                true
            }
            None => {
                self.lookups.insert(
                    node,
                    Lookup {
                        waiters: vec![after],
                        since: Instant::now(),
                    },
                );
                false
            }
        }
    }

    /// Records the mesh-DHT query of a new lookup.
    pub(crate) fn start_lookup(&mut self, node: NodeId, query: QueryId) {
        self.queries.insert((Dht::Mesh, query), node);
    }

    /// Moves a lookup to its next query.
    pub(crate) fn next_dht(&mut self, node: NodeId, query: QueryId, dht: Dht) {
        self.queries.insert((dht, query), node);
    }

    /// The lookup a query of `dht`'s DHT belongs to.
    pub(crate) fn query(&self, dht: Dht, query: QueryId) -> Option<NodeId> {
        self.queries.get(&(dht, query)).copied()
    }

    /// Ends a query (its lookup goes on or ends separately).
    pub(crate) fn end_query(&mut self, dht: Dht, query: QueryId) {
        self.queries.remove(&(dht, query));
    }

    /// Ends a lookup: its waiters.
    pub(crate) fn finish_lookup(&mut self, node: &NodeId) -> Vec<After> {
        self.queries.retain(|_, n| n != node);
        self.lookups
            .remove(node)
            .map(|l| l.waiters)
            .unwrap_or_default()
    }

    pub(crate) fn wait_providers(&mut self, dht: Dht, query: QueryId, wait: ProviderWait) {
        self.providers.insert((dht, query), (wait, Instant::now()));
    }

    /// Providers found by a running find query.
    pub(crate) fn providers_found(
        &mut self,
        dht: Dht,
        query: QueryId,
        found: impl IntoIterator<Item = PeerId>,
    ) {
        if let Some((ProviderWait::Find(_, set), _)) = self.providers.get_mut(&(dht, query)) {
            for p in found {
                if set.len() >= MAX_PROVIDERS_FOUND {
                    break;
                }
                set.insert(p);
            }
        }
    }

    /// The swarm a provider query looks for, if it is one.
    pub(crate) fn group_query(
        &self,
        dht: Dht,
        query: QueryId,
    ) -> Option<mesh_signal::group::DiscoveryKey> {
        match self.providers.get(&(dht, query)) {
            Some((ProviderWait::Group(k), _)) => Some(*k),
            _ => None,
        }
    }

    /// A provider query ended.
    pub(crate) fn providers_done(&mut self, dht: Dht, query: QueryId) -> Option<ProviderWait> {
        self.providers.remove(&(dht, query)).map(|(w, _)| w)
    }

    pub(crate) fn wait_marker(&mut self, peer: PeerId, id: String, reply: Reply<String>) {
        self.markers
            .entry(peer)
            .or_default()
            .push_back((id, reply, Instant::now()));
    }

    /// The peer accepted envelope `id`.
    pub(crate) fn marker_sent(&mut self, peer: &PeerId, id: &str) -> Option<Reply<String>> {
        let q = self.markers.get_mut(peer)?;
        let pos = q.iter().position(|(m, _, _)| m == id)?;
        q.remove(pos).map(|(_, r, _)| r)
    }

    /// The peer refused our oldest envelope.
    pub(crate) fn marker_refused(&mut self, peer: &PeerId) -> Option<Reply<String>> {
        self.markers.get_mut(peer)?.pop_front().map(|(_, r, _)| r)
    }

    /// An event of the marker behaviour: answers the command that sent the envelope,
    /// or gives the event for the application (a received envelope).
    pub(crate) fn on_marker(&mut self, event: mesh_session::marker::Event) -> Option<NodeEvent> {
        match event {
            mesh_session::marker::Event::Received { peer, envelope } => {
                Some(NodeEvent::MarkerReceived {
                    peer,
                    participant: envelope.sender().to_string(),
                    message_id: envelope.message_id().to_owned(),
                    marker_ref: envelope.marker_ref().to_owned(),
                })
            }
            mesh_session::marker::Event::Sent { peer, message_id } => {
                if let Some(reply) = self.marker_sent(&peer, &message_id) {
                    let _ = reply.send(Ok(message_id));
                }
                None
            }
            mesh_session::marker::Event::Refused {
                peer,
                error,
                by_peer: true,
            } => {
                if let Some(reply) = self.marker_refused(&peer) {
                    answer(reply, Err(error));
                }
                None
            }
            mesh_session::marker::Event::Refused { .. } => None,
        }
    }

    /// Everything older than [`WAIT`], with its timeout error.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(Waiter, HandleError)> {
        let old = |since: &Instant| now.duration_since(*since) > WAIT;
        let mut out = Vec::new();
        for list in self
            .by_connection
            .values_mut()
            .chain(self.by_peer.values_mut())
        {
            let (gone, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|(_, s)| old(s));
            *list = keep;
            out.extend(
                gone.into_iter()
                    .map(|(a, _)| (Waiter::After(a), timeout("connect"))),
            );
        }
        self.by_connection.retain(|_, l| !l.is_empty());
        let by_connection = &self.by_connection;
        self.relookup.retain(|id, _| by_connection.contains_key(id));
        self.by_peer.retain(|_, l| !l.is_empty());
        let stale: Vec<NodeId> = self
            .lookups
            .iter()
            .filter(|(_, l)| old(&l.since))
            .map(|(n, _)| *n)
            .collect();
        for node in stale {
            for a in self.finish_lookup(&node) {
                out.push((Waiter::After(a), timeout("lookup")));
            }
        }
        for a in self.sought.expire(now, WAIT) {
            out.push((Waiter::After(a), timeout("peer lookup")));
        }
        for q in self.markers.values_mut() {
            while q.front().is_some_and(|(_, _, s)| old(s)) {
                if let Some((_, r, _)) = q.pop_front() {
                    out.push((Waiter::Marker(r), timeout("signal-marker")));
                }
            }
        }
        self.markers.retain(|_, q| !q.is_empty());
        let stale: Vec<(Dht, QueryId)> = self
            .providers
            .iter()
            .filter(|(_, (_, s))| old(s))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some((w, _)) = self.providers.remove(&k) {
                out.push((Waiter::Providers(w), timeout("providers")));
            }
        }
        out
    }

    /// Everything, for shutdown.
    pub(crate) fn drain(&mut self) -> Vec<(Waiter, HandleError)> {
        let stopped = || HandleError::Stopped;
        let mut out = Vec::new();
        self.relookup.clear();
        for (_, l) in self.by_connection.drain() {
            out.extend(l.into_iter().map(|(a, _)| (Waiter::After(a), stopped())));
        }
        for (_, l) in self.by_peer.drain() {
            out.extend(l.into_iter().map(|(a, _)| (Waiter::After(a), stopped())));
        }
        for (_, l) in self.lookups.drain() {
            out.extend(l.waiters.into_iter().map(|a| (Waiter::After(a), stopped())));
        }
        for a in self.sought.drain() {
            out.push((Waiter::After(a), stopped()));
        }
        for (_, q) in self.markers.drain() {
            out.extend(
                q.into_iter()
                    .map(|(_, r, _)| (Waiter::Marker(r), stopped())),
            );
        }
        for (_, (w, _)) in self.providers.drain() {
            out.push((Waiter::Providers(w), stopped()));
        }
        self.queries.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[test]
    fn waiters_expire_with_a_timeout_code() {
        let mut p = Waiting::default();
        let (tx, mut rx) = oneshot::channel();
        p.wait_peer(PeerId::random(), After::Dial(tx));
        assert!(p.expire(Instant::now()).is_empty());
        let later = Instant::now() + WAIT + Duration::from_secs(1);
        let gone = p.expire(later);
        assert_eq!(gone.len(), 1);
        for (w, e) in gone {
            w.fail(e);
        }
        let err = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(err.code(), mesh_core::ErrorCode::TransportUnavailable);
        assert!(p.by_peer.is_empty());
    }

    /// A dial by peer id joins the lookup of the peer while it runs, and dials on its
    /// own otherwise (the flake of `node_dial_peer`: a command that came while the
    /// lookup's query had just been told the peer's addresses dialed them beside the
    /// dial the lookup started).
    #[test]
    fn a_dial_by_peer_id_joins_the_peers_lookup_while_it_runs() {
        let mut p = Waiting::default();
        let node = mesh_core::NodeKeypair::generate().node_id();
        let peer = node.to_peer_id().unwrap();
        let (tx, _rx) = oneshot::channel();
        assert!(!p.looking_up(&peer));
        assert!(!p.add_lookup_waiter(node, After::Dial(tx)));
        assert!(p.looking_up(&peer));
        assert!(!p.looking_up(&PeerId::random()));
        assert_eq!(p.finish_lookup(&node).len(), 1);
        assert!(!p.looking_up(&peer));
        // A lookup command's or a route attempt's lookup is not joined.
        let (tx, _rx) = oneshot::channel();
        assert!(!p.add_lookup_waiter(node, After::Lookup(tx)));
        assert!(p.add_lookup_waiter(node, After::Route(7)));
        assert!(!p.looking_up(&peer));
        let (tx, _rx) = oneshot::channel();
        assert!(p.add_lookup_waiter(node, After::Dial(tx)));
        assert!(p.looking_up(&peer));
        assert_eq!(p.finish_lookup(&node).len(), 3);

        // A peer id that is not a node id: its Amino lookup.
        let other = PeerId::random();
        let (tx, _rx) = oneshot::channel();
        let Join::Start(after) = p.sought.add(other, After::Dial(tx)) else {
            panic!("no lookup of it ran");
        };
        p.sought.started(
            other,
            peer_lookups::tests::query_id(),
            after,
            Instant::now(),
        );
        assert!(p.looking_up(&other));
        assert_eq!(p.sought.finish(&other).len(), 1);
        assert!(!p.looking_up(&other));
    }

    #[test]
    fn a_found_dial_is_shared_while_it_runs_and_only_at_its_addresses() {
        let mut p = Waiting::default();
        let peer = PeerId::random();
        let at: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
        let elsewhere: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4002".parse().unwrap()];
        let (up, failed) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        p.found_dial_started(peer, up, at.clone());
        assert_eq!(p.found_dial(&peer, &at), Some(up));
        assert_eq!(p.found_dial(&peer, &elsewhere), None);
        assert_eq!(p.found_dial(&PeerId::random(), &at), None);
        p.connection_up(up, peer, at[0].clone());
        assert_eq!(p.found_dial(&peer, &at), None);
        p.found_dial_started(peer, failed, at.clone());
        p.connection_failed(failed);
        assert_eq!(p.found_dial(&peer, &at), None);
        assert!(p.found_dials.is_empty());
    }

    #[test]
    fn a_find_query_collects_a_bounded_number_of_providers() {
        let me = PeerId::random();
        let mut kad = libp2p::kad::Behaviour::new(me, libp2p::kad::store::MemoryStore::new(me));
        let query = kad.get_providers(libp2p::kad::RecordKey::new(&b"key"));
        let mut p = Waiting::default();
        let (tx, mut rx) = oneshot::channel();
        p.wait_providers(Dht::Mesh, query, ProviderWait::Find(tx, Default::default()));
        for _ in 0..3 {
            let answer: Vec<PeerId> = (0..MAX_PROVIDERS_FOUND / 2)
                .map(|_| PeerId::random())
                .collect();
            p.providers_found(Dht::Mesh, query, answer);
        }
        let Some(ProviderWait::Find(reply, set)) = p.providers_done(Dht::Mesh, query) else {
            panic!("the query's waiter");
        };
        assert_eq!(set.len(), MAX_PROVIDERS_FOUND);
        let _ = reply.send(Ok(set.into_iter().collect()));
        assert_eq!(rx.try_recv().unwrap().unwrap().len(), MAX_PROVIDERS_FOUND);
    }

    #[test]
    fn connection_up_serves_both_kinds_of_waiter() {
        let mut p = Waiting::default();
        let peer = PeerId::random();
        let id = ConnectionId::new_unchecked(7);
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        p.wait_connection(id, After::Dial(a));
        p.wait_peer(peer, After::Dial(b));
        let up = p.connection_up(id, peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap());
        assert_eq!(up.len(), 2);
        assert_eq!(p.remote_addrs(&peer).len(), 1);
        p.connection_down(id, peer);
        assert!(p.remote_addrs(&peer).is_empty());
    }

    #[test]
    fn a_failed_dial_over_known_addresses_asks_for_a_lookup_once() {
        let mut p = Waiting::default();
        let peer = PeerId::random();
        let (id1, id2, id3) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        let (c, _rc) = oneshot::channel();
        p.wait_connection_or_relookup(id1, peer, After::Dial(a));
        p.wait_connection(id2, After::Dial(b));
        let (waiters, relookup) = p.connection_failed(id1);
        assert_eq!((waiters.len(), relookup), (1, Some(peer)));
        // Once: the same attempt failing again (or a plain dial) just fails.
        assert_eq!(p.connection_failed(id1).1, None);
        let (waiters, relookup) = p.connection_failed(id2);
        assert_eq!((waiters.len(), relookup), (1, None));
        // An attempt that succeeds or times out leaves nothing behind.
        p.wait_connection_or_relookup(id3, peer, After::Dial(c));
        p.connection_up(id3, peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap());
        assert!(p.relookup.is_empty());
        let (d, _rd) = oneshot::channel();
        p.wait_connection_or_relookup(id1, peer, After::Dial(d));
        p.expire(Instant::now() + WAIT + Duration::from_secs(1));
        assert!(p.relookup.is_empty());
    }

    #[test]
    fn markers_match_by_id_and_refusals_take_the_oldest() {
        let mut p = Waiting::default();
        let peer = PeerId::random();
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        p.wait_marker(peer, "m1".into(), a);
        p.wait_marker(peer, "m2".into(), b);
        assert!(p.marker_sent(&peer, "m2").is_some());
        assert!(p.marker_sent(&peer, "m2").is_none());
        assert!(p.marker_refused(&peer).is_some());
        assert!(p.marker_refused(&peer).is_none());
    }

    #[test]
    fn a_second_lookup_joins_the_first() {
        let mut p = Waiting::default();
        let node = mesh_core::NodeKeypair::generate().node_id();
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        assert!(!p.add_lookup_waiter(node, After::Lookup(a)));
        assert!(p.add_lookup_waiter(node, After::Lookup(b)));
        assert_eq!(p.finish_lookup(&node).len(), 2);
    }
}
