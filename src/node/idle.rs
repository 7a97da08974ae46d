//! Which connections the node closes, and when.
//!
//! libp2p-swarm closes a connection once no handler wants it and no stream is open on
//! it, but gossipsub keeps a long-lived stream on every connection to a peer that
//! speaks it (rust-libp2p issue #5190), so without help every connection the node ever
//! opened would stay: a mesh drifts towards all-to-all. [`Connections`] is the node's
//! own idle rule, pure logic over `now`:
//!
//! - a peer is *idle* once nothing happened with it for `grace` (the node's
//!   `idle_timeout_secs`): no new connection, no session, signaling, marker, advert or
//!   Kademlia traffic that the node saw (pings, identify, gossip and member-table
//!   checks do not count);
//! - the node's needs are never closed ([`Need::Keep`]: gossipsub mesh peers of its
//!   topics and other subscribed peers up to `mesh_n_high` per topic, hot sessions,
//!   seeds and configured relays, route attempts, Kademlia servers while a query that
//!   someone waits for runs, relay reservations), nor relayed connections others
//!   opened to us (the relay's limits end them);
//! - an idle peer the node dialed is closed: the dialer opened it for its own purpose,
//!   which is over;
//! - an idle peer that dialed us is the other side's to close (it may be how a newcomer
//!   reaches the mesh), unless the node holds more than `inbound_high` peers: then the
//!   idle ones without a session go first, then the ones with a session, oldest first;
//! - the node never closes its last connected peer.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::action::Action;
use super::config::NodeConfig;
use super::view::View;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{PeerId, relay};

/// gossipsub's `mesh_n` (the node uses the default): per subscribed topic the node
/// keeps its mesh peers and other subscribed peers up to this many in all, as they are
/// what gossipsub grafts from when a mesh peer leaves or prunes (and backs off). At
/// 200 members a pool of `mesh_n_high` (12) held about 50% more connection ends, 16%
/// more memory and 8 points more CPU (four runs each, BENCHMARKS, *Swarms*). A thin mesh still dials
/// members while fewer than `mesh_n_high` peers are subscribed
/// (`groups::feed_thin_meshes`); what it dials beyond this pool and does not graft is
/// closed again when idle.
pub(crate) const TOPIC_POOL: usize = 6;

/// Sweeps run at most this often. In a swarm most peers are idle by the rule's clock
/// but kept (gossip pool, hot sessions), so every sweep walks every peer; at 200
/// members a sweep on each 1 s tick was 2.8% of the process's CPU. An idle peer is
/// closed within `grace` plus this.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What the node needs a peer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Need {
    /// Nothing: no session, no use.
    Nothing,
    /// A session, but nothing that needs it now.
    Session,
    /// Needed (mesh peer, hot session, seed, relay, route attempt, running query…).
    Keep,
}

#[derive(Debug, Clone, Copy)]
struct Conn {
    id: ConnectionId,
    outbound: bool,
    relayed: bool,
}

#[derive(Debug)]
struct PeerConns {
    conns: Vec<Conn>,
    /// When the first of the current connections came up.
    since: Instant,
    /// The last activity: a connection coming up or traffic the node saw.
    active: Instant,
}

/// The node's connections by peer, with their last activity.
#[derive(Debug)]
pub(crate) struct Connections {
    grace: Duration,
    inbound_high: usize,
    peers: HashMap<PeerId, PeerConns>,
}

impl Connections {
    /// Closes idle peers after `grace`; keeps at most `inbound_high` idle peers that
    /// dialed us.
    pub(crate) fn new(grace: Duration, inbound_high: usize) -> Self {
        Connections {
            grace,
            inbound_high,
            peers: HashMap::new(),
        }
    }

    /// A connection came up (`outbound`: we dialed it; `relayed`: a circuit).
    pub(crate) fn established(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        outbound: bool,
        relayed: bool,
        now: Instant,
    ) {
        let p = self.peers.entry(peer).or_insert(PeerConns {
            conns: Vec::new(),
            since: now,
            active: now,
        });
        p.active = p.active.max(now);
        p.conns.push(Conn {
            id,
            outbound,
            relayed,
        });
    }

    /// A connection closed.
    pub(crate) fn closed(&mut self, id: ConnectionId, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.conns.retain(|c| c.id != id);
            if p.conns.is_empty() {
                self.peers.remove(&peer);
            }
        }
    }

    /// Something happened with `peer`.
    pub(crate) fn touch(&mut self, peer: &PeerId, now: Instant) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.active = p.active.max(now);
        }
    }

    /// Whether some peer has been idle for the grace period (the only case in which
    /// [`Connections::to_close`] can close anything).
    pub(crate) fn any_idle(&self, now: Instant) -> bool {
        self.peers.values().any(|p| self.idle(p, now))
    }

    fn idle(&self, p: &PeerConns, now: Instant) -> bool {
        now.saturating_duration_since(p.active) >= self.grace
    }

    /// The connections to close now; `need` is asked only about idle peers.
    pub(crate) fn to_close(
        &self,
        now: Instant,
        mut need: impl FnMut(&PeerId) -> Need,
    ) -> Vec<ConnectionId> {
        let mut close: Vec<(PeerId, Vec<ConnectionId>)> = Vec::new();
        // Peers still connected once the plan is carried out.
        let mut remaining = self.peers.len();
        let mut inbound: Vec<(Need, Instant, PeerId)> = Vec::new();
        for (peer, p) in &self.peers {
            if !self.idle(p, now) {
                continue;
            }
            // Not the circuits others opened to us (the relay's limits end them); ours,
            // like every connection we dialed, once we have no use for them: a relay
            // of a stranger's choosing (named in a DHT answer or a presence) need set
            // no limit at all, and each such circuit stayed for good.
            let closable: Vec<ConnectionId> = p
                .conns
                .iter()
                .filter(|c| !c.relayed || c.outbound)
                .map(|c| c.id)
                .collect();
            if closable.is_empty() {
                continue;
            }
            let n = need(peer);
            if n == Need::Keep {
                continue;
            }
            if p.conns.iter().any(|c| c.outbound) {
                if closable.len() == p.conns.len() {
                    remaining -= 1;
                }
                close.push((*peer, closable));
            } else {
                inbound.push((n, p.since, *peer));
            }
        }
        // Over the watermark: the idle peers that dialed us, sessionless and oldest first.
        inbound.sort();
        for (_, _, peer) in inbound {
            if remaining <= self.inbound_high {
                break;
            }
            let Some(p) = self.peers.get(&peer) else {
                continue;
            };
            let direct: Vec<ConnectionId> = p
                .conns
                .iter()
                .filter(|c| !c.relayed)
                .map(|c| c.id)
                .collect();
            if direct.len() == p.conns.len() {
                remaining -= 1;
            }
            close.push((peer, direct));
        }
        // Never the last peer: keep the most recently active one.
        if remaining == 0
            && let Some(i) = close
                .iter()
                .enumerate()
                .max_by_key(|(_, (peer, _))| (self.peers.get(peer).map(|p| p.active), *peer))
                .map(|(i, _)| i)
        {
            close.swap_remove(i);
        }
        close.into_iter().flat_map(|(_, ids)| ids).collect()
    }

    /// Connected peers.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.peers.len()
    }
}

/// The peers kept for one gossipsub topic: its mesh, then other subscribed peers (in
/// peer id order, so the choice is stable from tick to tick) up to `size` in all.
fn topic_pool(mesh: &HashSet<PeerId>, mut subscribed: Vec<PeerId>, size: usize) -> Vec<PeerId> {
    subscribed.retain(|p| !mesh.contains(p));
    subscribed.sort_unstable();
    let room = size.saturating_sub(mesh.len());
    mesh.iter()
        .copied()
        .chain(subscribed.into_iter().take(room))
        .collect()
}

/// The node's state for the idle rule.
#[derive(Debug)]
pub(crate) struct Idle {
    pub(crate) conns: Connections,
    /// Seeds and configured relays.
    pinned: HashSet<PeerId>,
    /// The earliest time of the next sweep.
    next_sweep: Option<Instant>,
}

impl Idle {
    pub(crate) fn new(config: &NodeConfig) -> Self {
        let seeds = config
            .seeds
            .iter()
            .filter_map(|s| s.node_id.to_peer_id().ok());
        let relays = config.relays.iter().filter_map(|a| match a.iter().last() {
            Some(Protocol::P2p(p)) => Some(p),
            _ => None,
        });
        let sessions = config.limits.max_sessions;
        Idle {
            conns: Connections::new(config.idle_timeout(), sessions),
            pinned: seeds.chain(relays).collect(),
            next_sweep: None,
        }
    }
}

impl Idle {
    /// Whether a sweep ([`Idle::tick`]) is due: some peer is idle and the last sweep is
    /// [`SWEEP_EVERY`] ago. A `true` counts as the sweep.
    pub(crate) fn sweep_due(&mut self, now: Instant) -> bool {
        if self.next_sweep.is_some_and(|at| now < at) || !self.conns.any_idle(now) {
            return false;
        }
        self.next_sweep = Some(now + SWEEP_EVERY);
        true
    }

    /// The connections the idle rule gives up now (at each sweep, see
    /// [`Idle::sweep_due`]). `also_keep`:
    /// peers other components need (route targets, waited-on peers, DHT servers of a
    /// running query).
    pub(crate) fn tick(
        &self,
        view: &dyn View,
        also_keep: HashSet<PeerId>,
        now: Instant,
    ) -> Vec<Action> {
        if !self.conns.any_idle(now) {
            return Vec::new();
        }
        let mut keep = also_keep;
        keep.extend(self.pinned.iter().copied());
        // gossipsub: per topic, the mesh and a pool of other subscribed peers.
        for topic in view.topics() {
            let mesh: HashSet<PeerId> = view.topic_mesh(&topic).into_iter().collect();
            keep.extend(topic_pool(
                &mesh,
                view.topic_subscribers(&topic),
                TOPIC_POOL,
            ));
        }
        let close = self.conns.to_close(now, |peer| {
            if keep.contains(peer) || view.is_hot(peer) {
                Need::Keep
            } else if view.has_session(peer) {
                Need::Session
            } else {
                Need::Nothing
            }
        });
        if !close.is_empty() {
            tracing::debug!(connections = close.len(), "closing idle connections");
        }
        close.into_iter().map(Action::Close).collect()
    }

    /// Relay server events: a reservation or circuit is activity of its peers (the
    /// relay's admission side keeps the peers it serves: the node adds them to
    /// `also_keep`).
    pub(crate) fn relay_event(&mut self, event: &relay::Event, now: Instant) {
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
                self.conns.touch(src_peer_id, now);
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                for p in [src_peer_id, dst_peer_id] {
                    self.conns.touch(p, now);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const GRACE: Duration = Duration::from_secs(60);

    struct World {
        conns: Connections,
        t0: Instant,
        next: usize,
    }

    impl World {
        fn new(inbound_high: usize) -> Self {
            World {
                conns: Connections::new(GRACE, inbound_high),
                t0: Instant::now(),
                next: 0,
            }
        }

        fn at(&self, secs: u64) -> Instant {
            self.t0 + Duration::from_secs(secs)
        }

        fn connect(&mut self, peer: PeerId, outbound: bool, at: u64) -> ConnectionId {
            self.connect_via(peer, outbound, false, at)
        }

        fn connect_via(
            &mut self,
            peer: PeerId,
            outbound: bool,
            relayed: bool,
            at: u64,
        ) -> ConnectionId {
            self.next += 1;
            let id = ConnectionId::new_unchecked(self.next);
            let now = self.at(at);
            self.conns.established(id, peer, outbound, relayed, now);
            id
        }

        fn plan(&self, at: u64, need: impl FnMut(&PeerId) -> Need) -> HashSet<ConnectionId> {
            self.conns.to_close(self.at(at), need).into_iter().collect()
        }
    }

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn an_outbound_connection_closes_once_idle_for_the_grace_period() {
        let mut w = World::new(100);
        let p = peers(2);
        let keep_one = w.connect(p[0], true, 0);
        let c = w.connect(p[1], true, 0);
        assert!(!w.conns.any_idle(w.at(59)));
        assert!(w.plan(59, |_| Need::Nothing).is_empty(), "within the grace");
        assert!(w.conns.any_idle(w.at(60)));
        // Both idle: one goes, the other is the node's last peer.
        let plan = w.plan(60, |_| Need::Nothing);
        assert_eq!(plan.len(), 1);
        assert!(plan.contains(&c) || plan.contains(&keep_one));
        // Activity restarts the clock.
        w.conns.touch(&p[1], w.at(50));
        w.conns.touch(&p[0], w.at(30));
        assert_eq!(w.plan(100, |_| Need::Nothing), HashSet::from([keep_one]));
        assert_eq!(w.plan(110, |_| Need::Nothing).len(), 1);
    }

    #[test]
    fn a_session_alone_does_not_keep_an_outbound_connection() {
        let mut w = World::new(100);
        let p = peers(3);
        let ids: Vec<ConnectionId> = p.iter().map(|x| w.connect(*x, true, 0)).collect();
        let plan = w.plan(61, |x| {
            if *x == p[0] {
                Need::Keep
            } else {
                Need::Session
            }
        });
        assert_eq!(plan, HashSet::from([ids[1], ids[2]]));
    }

    #[test]
    fn needed_connections_and_circuits_others_opened_stay() {
        let mut w = World::new(0);
        let p = peers(5);
        w.connect(p[0], true, 0);
        let circuit = w.connect_via(p[1], true, true, 0);
        let direct = w.connect(p[2], true, 0);
        let circuit2 = w.connect_via(p[2], true, true, 0);
        let other = w.connect(p[3], false, 0);
        w.connect_via(p[4], false, true, 0);
        let plan = w.plan(120, |x| {
            if *x == p[0] {
                Need::Keep
            } else {
                Need::Nothing
            }
        });
        // The circuits we opened go with the direct connections (a stranger's relay
        // need set no limit); inbound p[3] goes too (watermark 0), p[0] is kept, and
        // the circuit p[4] opened to us is the relay's to end.
        assert_eq!(plan, HashSet::from([circuit, direct, circuit2, other]));
        // `need` is not asked about busy peers.
        w.conns.touch(&p[0], w.at(100));
        let mut asked = Vec::new();
        w.plan(120, |x| {
            asked.push(*x);
            Need::Nothing
        });
        assert!(!asked.contains(&p[0]));
    }

    #[test]
    fn inbound_peers_close_only_over_the_watermark_sessionless_then_oldest_first() {
        let mut w = World::new(3);
        let p = peers(6);
        for (i, x) in p.iter().enumerate() {
            w.connect(*x, false, i as u64);
        }
        assert_eq!(w.conns.len(), 6);
        // p[4] has no session; p[0] is the oldest of the rest; p[5] is needed.
        let need = |x: &PeerId| {
            if *x == p[4] {
                Need::Nothing
            } else if *x == p[5] {
                Need::Keep
            } else {
                Need::Session
            }
        };
        let plan = w.plan(200, need);
        assert_eq!(plan.len(), 3, "6 peers down to the watermark of 3");
        let closed: HashSet<ConnectionId> = plan;
        let id = |i: usize| ConnectionId::new_unchecked(i + 1);
        assert_eq!(closed, HashSet::from([id(4), id(0), id(1)]));
        // Under the watermark nothing that dialed us closes.
        let mut w = World::new(10);
        for x in &p {
            w.connect(*x, false, 0);
        }
        assert!(w.plan(200, |_| Need::Nothing).is_empty());
    }

    #[test]
    fn outbound_closes_count_towards_the_watermark() {
        let mut w = World::new(2);
        let p = peers(4);
        w.connect(p[0], true, 0);
        w.connect(p[1], true, 0);
        let a = w.connect(p[2], false, 0);
        let b = w.connect(p[3], false, 10);
        let need = |x: &PeerId| {
            if *x == p[0] {
                Need::Keep
            } else {
                Need::Session
            }
        };
        // p[1] goes (outbound, idle), leaving 3 > 2: the older inbound one, p[2], goes.
        let plan = w.plan(100, need);
        assert_eq!(plan.len(), 2);
        assert!(plan.contains(&a) && !plan.contains(&b));
    }

    #[test]
    fn a_peer_with_an_outbound_connection_closes_all_its_direct_ones() {
        let mut w = World::new(100);
        let p = peers(2);
        w.connect(p[0], true, 0);
        let a = w.connect(p[1], false, 0);
        let b = w.connect(p[1], true, 0);
        assert_eq!(
            w.plan(60, |x| if *x == p[0] {
                Need::Keep
            } else {
                Need::Nothing
            }),
            HashSet::from([a, b])
        );
    }

    #[test]
    fn a_topic_keeps_its_mesh_and_a_pool_of_other_subscribers() {
        let mut p = peers(20);
        p.sort();
        let mesh: HashSet<PeerId> = p[15..].iter().copied().collect();
        let pool: HashSet<PeerId> = topic_pool(&mesh, p.clone(), 12).into_iter().collect();
        let want: HashSet<PeerId> = p[..7].iter().chain(&p[15..]).copied().collect();
        assert_eq!(pool, want, "the mesh (5) and the first 7 others");
        // A mesh beyond the pool size is kept whole; no others.
        let big: HashSet<PeerId> = p[..14].iter().copied().collect();
        assert_eq!(topic_pool(&big, p.clone(), 12).len(), 14);
        assert!(topic_pool(&HashSet::new(), Vec::new(), 12).is_empty());
    }

    #[test]
    fn the_last_peer_stays() {
        let mut w = World::new(0);
        let p = peers(3);
        w.connect(p[0], true, 0);
        w.connect(p[1], false, 0);
        let last = w.connect(p[2], true, 0);
        w.conns.touch(&p[2], w.at(5));
        let plan = w.plan(100, |_| Need::Nothing);
        assert_eq!(plan.len(), 2);
        assert!(!plan.contains(&last), "the most recently active peer stays");
        // Closed connections leave the table.
        for id in [1, 2] {
            let peer = p[id - 1];
            w.conns.closed(ConnectionId::new_unchecked(id), peer);
        }
        assert_eq!(w.conns.len(), 1);
        assert!(w.plan(200, |_| Need::Nothing).is_empty());
        w.conns.closed(last, p[2]);
        assert_eq!(w.conns.len(), 0);
        assert!(!w.conns.any_idle(w.at(500)));
    }

    /// The idle rule of a node with the default configuration, its grace and a start.
    fn default_idle() -> (Idle, Duration, Instant) {
        let config = NodeConfig::default();
        (Idle::new(&config), config.idle_timeout(), Instant::now())
    }

    #[test]
    fn sweeps_come_at_most_every_five_seconds_and_only_with_an_idle_peer() {
        let (mut idle, grace, t0) = default_idle();
        let p = peers(1)[0];
        idle.conns
            .established(ConnectionId::new_unchecked(7), p, true, false, t0);
        // Nobody idle: no sweep, and none is counted.
        assert!(!idle.sweep_due(t0 + grace / 2));
        let t = t0 + grace;
        assert!(idle.sweep_due(t));
        assert!(!idle.sweep_due(t + Duration::from_secs(1)));
        assert!(!idle.sweep_due(t + SWEEP_EVERY - Duration::from_millis(1)));
        assert!(idle.sweep_due(t + SWEEP_EVERY));
    }

    #[test]
    fn the_tick_keeps_what_the_node_and_its_components_need() {
        use crate::node::action::Action;
        use crate::node::view::fake::FakeView;
        let (mut idle, grace, t0) = default_idle();
        let ps = peers(5);
        let ids: Vec<ConnectionId> = (0..5)
            .map(|i| ConnectionId::new_unchecked(100 + i))
            .collect();
        for (p, id) in ps.iter().zip(&ids) {
            idle.conns.established(*id, *p, true, false, t0);
        }
        let mut view = FakeView::default();
        let topic = libp2p::gossipsub::IdentTopic::new("t").hash();
        view.mesh.insert(topic, vec![ps[0]]);
        view.hot.insert(ps[1]);
        let also_keep: HashSet<PeerId> = [ps[2]].into();
        // Nothing is idle before the grace period.
        assert!(idle.tick(&view, also_keep.clone(), t0).is_empty());
        // Touched later: not idle at the end of the grace period.
        idle.conns.touch(&ps[3], t0 + grace / 2);
        let closed: HashSet<ConnectionId> = idle
            .tick(&view, also_keep, t0 + grace)
            .into_iter()
            .map(|a| match a {
                Action::Close(id) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        // The mesh peer, the hot session, the component's peer and the active one stay.
        assert_eq!(closed, std::collections::HashSet::from([ids[4]]));
        // A relay server event is activity too.
        idle.relay_event(
            &relay::Event::ReservationReqAccepted {
                src_peer_id: ps[4],
                renewed: false,
            },
            t0 + grace,
        );
        assert!(
            idle.tick(
                &view,
                HashSet::from([ps[0], ps[1], ps[2], ps[3]]),
                t0 + grace + grace / 2
            )
            .is_empty()
        );
    }
}
