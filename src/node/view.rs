//! What components may read of the swarm and the node's other state, and nothing
//! else: a read-only view that [`super::Node`] implements over its swarm and that unit
//! tests implement over plain tables.

use libp2p::gossipsub::TopicHash;
use libp2p::{Multiaddr, PeerId};
use mesh_core::NodeId;

/// Read-only facts about the node's connections and neighbours.
pub(crate) trait View {
    /// This node's peer id.
    fn local_peer(&self) -> PeerId;
    /// Whether at least one connection to `peer` is up.
    fn is_connected(&self, peer: &PeerId) -> bool;
    /// Every connected peer.
    fn connected_peers(&self) -> Vec<PeerId>;
    /// The remote addresses of `peer`'s connections.
    fn remote_addrs(&self, peer: &PeerId) -> Vec<Multiaddr>;
    /// Whether `peer` has a session with this node.
    fn has_session(&self, peer: &PeerId) -> bool;
    /// Whether `peer`'s session offers `capability` (`core/relay`, `core/signaling`…).
    fn offers(&self, peer: &PeerId, capability: &str) -> bool;
    /// Whether a signaling frame can go to `peer` directly (a session peer).
    fn signal_reaches(&self, peer: &PeerId) -> bool;
    /// Confirmed external addresses.
    fn external_addrs(&self) -> Vec<Multiaddr>;
    /// Listen addresses.
    fn listen_addrs(&self) -> Vec<Multiaddr>;
    /// Dial addresses of `node` from its stored advertisement (empty when none).
    fn stored_addrs(&self, node: &NodeId) -> Vec<Multiaddr>;
    /// Whether a grant we hold at `relay` covers a circuit to `target`.
    fn may_open_circuit(&self, relay: &PeerId, target: NodeId) -> bool;
    /// Whether `peer`'s session is hot (the governor keeps it).
    fn is_hot(&self, peer: &PeerId) -> bool;
    /// The gossipsub topics this node is subscribed to.
    fn topics(&self) -> Vec<TopicHash>;
    /// The gossipsub mesh peers of `topic`.
    fn topic_mesh(&self, topic: &TopicHash) -> Vec<PeerId>;
    /// The connected peers subscribed to `topic`.
    fn topic_subscribers(&self, topic: &TopicHash) -> Vec<PeerId>;
}

/// The time for one step of a component: the monotonic clock for timers, the wall
/// clock for signatures and expiries.
#[derive(Debug, Clone)]
pub(crate) struct Now {
    /// Monotonic time.
    pub(crate) at: std::time::Instant,
    /// Wall-clock time.
    pub(crate) ts: mesh_core::Timestamp,
}

impl Now {
    /// The current time.
    pub(crate) fn current() -> Self {
        Now {
            at: std::time::Instant::now(),
            ts: mesh_core::Timestamp::now(),
        }
    }
}

/// A [`View`] over plain tables, for the components' unit tests.
/// Whether a member is seen alive (connected to the node), for a full table's eviction:
/// the connected peers' node ids are collected once, when first asked (a byte copy
/// each), instead of one key decompression per member per arrival into a full table.
pub(crate) fn alive_in(view: &dyn View) -> impl Fn(&mesh_core::NodeId) -> bool + '_ {
    let connected = std::cell::OnceCell::new();
    move |n: &mesh_core::NodeId| {
        connected
            .get_or_init(|| {
                view.connected_peers()
                    .iter()
                    .filter_map(|p| mesh_core::NodeId::from_peer_id(p).ok())
                    .collect::<std::collections::HashSet<mesh_core::NodeId>>()
            })
            .contains(n)
    }
}

#[cfg(test)]
pub(crate) mod fake {
    use std::collections::{HashMap, HashSet};

    use libp2p::gossipsub::TopicHash;
    use libp2p::{Multiaddr, PeerId};
    use mesh_core::NodeId;

    /// Everything a test sets up by hand.
    #[derive(Debug, Default)]
    pub(crate) struct FakeView {
        pub(crate) me: Option<PeerId>,
        pub(crate) connected: HashMap<PeerId, Vec<Multiaddr>>,
        pub(crate) sessions: HashMap<PeerId, Vec<String>>,
        pub(crate) hot: HashSet<PeerId>,
        pub(crate) external: Vec<Multiaddr>,
        pub(crate) listen: Vec<Multiaddr>,
        pub(crate) stored: HashMap<NodeId, Vec<Multiaddr>>,
        pub(crate) circuit_grants: HashSet<(PeerId, NodeId)>,
        pub(crate) mesh: HashMap<TopicHash, Vec<PeerId>>,
        pub(crate) subscribers: HashMap<TopicHash, Vec<PeerId>>,
    }

    impl FakeView {
        /// `peer` connected at `addr`, with a session offering `caps`.
        pub(crate) fn session(&mut self, peer: PeerId, addr: &str, caps: &[&str]) {
            let addr = addr.parse().unwrap_or_else(|_| Multiaddr::empty());
            self.connected.insert(peer, vec![addr]);
            self.sessions
                .insert(peer, caps.iter().map(|c| (*c).to_owned()).collect());
        }
    }

    impl super::View for FakeView {
        fn local_peer(&self) -> PeerId {
            self.me.unwrap_or_else(PeerId::random)
        }
        fn is_connected(&self, peer: &PeerId) -> bool {
            self.connected.contains_key(peer)
        }
        fn connected_peers(&self) -> Vec<PeerId> {
            let mut p: Vec<PeerId> = self.connected.keys().copied().collect();
            p.sort();
            p
        }
        fn remote_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
            self.connected.get(peer).cloned().unwrap_or_default()
        }
        fn has_session(&self, peer: &PeerId) -> bool {
            self.sessions.contains_key(peer)
        }
        fn offers(&self, peer: &PeerId, capability: &str) -> bool {
            self.sessions
                .get(peer)
                .is_some_and(|caps| caps.iter().any(|c| c == capability))
        }
        fn signal_reaches(&self, peer: &PeerId) -> bool {
            self.sessions.contains_key(peer)
        }
        fn external_addrs(&self) -> Vec<Multiaddr> {
            self.external.clone()
        }
        fn listen_addrs(&self) -> Vec<Multiaddr> {
            self.listen.clone()
        }
        fn stored_addrs(&self, node: &NodeId) -> Vec<Multiaddr> {
            self.stored.get(node).cloned().unwrap_or_default()
        }
        fn may_open_circuit(&self, relay: &PeerId, target: NodeId) -> bool {
            self.circuit_grants.contains(&(*relay, target))
        }
        fn is_hot(&self, peer: &PeerId) -> bool {
            self.hot.contains(peer)
        }
        fn topics(&self) -> Vec<TopicHash> {
            self.mesh
                .keys()
                .chain(self.subscribers.keys())
                .cloned()
                .collect()
        }
        fn topic_mesh(&self, topic: &TopicHash) -> Vec<PeerId> {
            self.mesh.get(topic).cloned().unwrap_or_default()
        }
        fn topic_subscribers(&self, topic: &TopicHash) -> Vec<PeerId> {
            self.subscribers.get(topic).cloned().unwrap_or_default()
        }
    }
}
