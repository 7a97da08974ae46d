//! Kademlia with a bound on the addresses it dials.
//!
//! A Kademlia query dials the peers that other peers name in their answers, at every
//! address the answer gives, and libp2p-kad keeps them all: one answer of 20 made-up
//! peers, each with hundreds of addresses, had the node try thousands of connections to
//! hosts of the answering peer's choosing. [`ScopedKad`] leaves libp2p-kad as it is and
//! bounds what it hands the swarm for a dial
//! ([`NetworkBehaviour::handle_pending_outbound_connection`], which every Kademlia dial
//! and every dial that asks the behaviours for addresses goes through): at most
//! [`MAX_DIAL_ADDRS`] per peer, never an unroutable address, and on Amino (the public
//! DHT, where any stranger answers) only addresses its routing table would take
//! (`ip_scope::amino_worthy`: no loopback or LAN addresses or DNS names unless the node
//! is told to keep them, or the configured bootstrap addresses); on the mesh DHT only
//! addresses in the node's reach ([`Reach`]: loopback only for a node on loopback alone,
//! a private network only one the node or one of its connections is on, DNS names like
//! loopback). A name the node dialed itself (an explicit dial, a seed) stays in reach;
//! each DHT's own dials take a token of their destination ([`PER_DESTINATION`]).
//!
//! It also answers inbound reads within a budget ([`super::kad_inbound`]): one beyond
//! gets an empty answer (no peers, no record).

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::Endpoint;
use libp2p::kad;
use libp2p::swarm::behaviour::{ExternalAddresses, ListenAddresses};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use mesh_core::RateLimit;

use super::addrs::{dialable, without_peer};
use super::destination_budget::DestinationBudget;
use super::ip_scope::{Scope, amino_worthy, ip_of, is_name, on_private_net, scope};
use super::kad_inbound::InboundScreen;

/// Addresses of one peer Kademlia may hand the swarm for a dial.
pub const MAX_DIAL_ADDRS: usize = 8;

/// Which addresses a DHT's dials may use.
#[derive(Debug, Clone)]
pub enum DialScope {
    /// Amino: what its routing table takes (`keep_private`: loopback and LAN addresses
    /// too), and the `configured` bootstrap addresses.
    Amino {
        /// `NodeConfig::amino_private_addrs`.
        keep_private: bool,
        /// The configured bootstrap addresses (without `/p2p`).
        configured: Vec<Multiaddr>,
    },
    /// The mesh DHT: addresses in the node's [`Reach`].
    Mesh,
}

/// What the node reaches, for the mesh DHT's scope: its own listen and external
/// addresses and the remote addresses of its connections.
///
/// A mesh-DHT answer names peers at addresses of the answering peer's choosing, and
/// fresh peer ids cost nothing: with any routable address in scope, one answer had the
/// node connect to 20 made-up peers at its own loopback (`127.0.0.1:6379`) or LAN. A
/// loopback address is in reach only for a node with no address beyond loopback
/// (several nodes on one host, as in the tests); a private or link-local one only on a
/// network (/24, /64) the node has an address in or a connection to (behind a NAT,
/// the node's connections reach the network outside it); a DNS name like loopback (it
/// may resolve there, `127.0.0.1.nip.io` or `localhost` alike: `ip_scope::is_name`).
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    /// The node's listen and external addresses.
    pub own: &'a [Multiaddr],
    /// The remote addresses of its connections.
    pub paths: &'a [Multiaddr],
}

impl Reach<'_> {
    /// The node has an IP address, and all of them are loopback. A node with none yet
    /// (before its first listen address, or with only memory or DNS listeners) is not
    /// on loopback alone: it dials no loopback address a peer names.
    fn only_loopback(&self) -> bool {
        let mut ips = self.own.iter().filter_map(ip_of).peekable();
        ips.peek().is_some() && ips.all(|ip| scope(ip) == Scope::Loopback)
    }

    /// Whether `addr` is in reach.
    pub fn admits(&self, addr: &Multiaddr) -> bool {
        match ip_of(addr) {
            None => !is_name(addr) || self.only_loopback(),
            Some(ip) => match scope(ip) {
                Scope::Public => true,
                Scope::Loopback => self.only_loopback(),
                Scope::Private => on_private_net(ip, self.own) || on_private_net(ip, self.paths),
                Scope::Unroutable => false,
            },
        }
    }
}

impl DialScope {
    /// Whether a dial may use `addr`: the configured bootstrap addresses; otherwise one
    /// the node's transports dial ([`dialable`]: no slot spent on WebTransport and the
    /// like), not unroutable, and on Amino one its routing table would take.
    fn admits(&self, addr: &Multiaddr, reach: &Reach<'_>) -> bool {
        if let DialScope::Amino { configured, .. } = self {
            let bare = without_peer(addr);
            if configured.contains(&bare) {
                return true;
            }
        }
        if !dialable(addr) || ip_of(addr).map(scope) == Some(Scope::Unroutable) {
            return false;
        }
        match self {
            DialScope::Amino { keep_private, .. } => amino_worthy(addr, *keep_private),
            DialScope::Mesh => reach.admits(addr),
        }
    }

    /// What of `addrs` a dial may use: in scope, at most [`MAX_DIAL_ADDRS`], those of
    /// the peer's routing-table entry (`table`, learnt from a connection or identify)
    /// first. The others are the ones in `tried` (what earlier dials of this peer used)
    /// and new ones only while `tried` has fewer than [`MAX_DIAL_ADDRS`]: the many
    /// queries that dial one made-up peer, each with its own list, reach the same few
    /// addresses. New ones are added to `tried`. `reach` matters to the mesh DHT only.
    /// Pure.
    pub fn choose(
        &self,
        table: &[Multiaddr],
        addrs: Vec<Multiaddr>,
        tried: &mut Vec<Multiaddr>,
        reach: &Reach<'_>,
    ) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for a in table {
            if out.len() < MAX_DIAL_ADDRS && self.admits(a, reach) && !out.contains(a) {
                out.push(a.clone());
            }
        }
        let mut others: Vec<Multiaddr> = addrs
            .into_iter()
            .filter(|a| !table.contains(a) && self.admits(a, reach))
            .collect();
        // Public addresses (and names) first, then private, then loopback: a peer that
        // lists its loopback and LAN addresses (containers, several transports) before
        // its public one still gets that one dialed. Within a scope, by bytes, so any
        // list of the same addresses gives the same choice.
        others.sort_by(|a, b| (rank(a), a.as_ref()).cmp(&(rank(b), b.as_ref())));
        others.dedup();
        for a in others.iter().filter(|a| tried.contains(a)) {
            if out.len() < MAX_DIAL_ADDRS {
                out.push(a.clone());
            }
        }
        let new: Vec<Multiaddr> = others.into_iter().filter(|a| !tried.contains(a)).collect();
        for a in new {
            if out.len() >= MAX_DIAL_ADDRS || tried.len() >= MAX_DIAL_ADDRS {
                break;
            }
            tried.push(a.clone());
            out.push(a);
        }
        out
    }
}

/// The order in which a dial takes a peer's addresses: public ones and names (those in
/// scope) first.
fn rank(addr: &Multiaddr) -> u8 {
    match ip_of(addr).map(scope) {
        None | Some(Scope::Public) => 0,
        Some(Scope::Private) => 1,
        Some(Scope::Loopback) => 2,
        Some(Scope::Unroutable) => 3,
    }
}

/// Peers whose tried addresses are remembered.
pub const TRIED_PEERS: usize = 4096;
/// How long a peer's tried addresses are remembered.
pub const TRIED_FOR: Duration = Duration::from_secs(3600);

/// The addresses tried per peer, for [`DialScope::choose`]: at most [`TRIED_PEERS`]
/// peers (the oldest forgotten first), each for [`TRIED_FOR`]. Pure; `now` passed in.
#[derive(Debug, Default)]
pub struct Tried {
    by_peer: HashMap<PeerId, (Instant, Vec<Multiaddr>)>,
    order: VecDeque<PeerId>,
}

impl Tried {
    /// The addresses tried for `peer` (a fresh list if it has none, or they are old).
    pub fn of(&mut self, peer: PeerId, now: Instant) -> &mut Vec<Multiaddr> {
        let stale = self
            .by_peer
            .get(&peer)
            .is_some_and(|(since, _)| now.saturating_duration_since(*since) >= TRIED_FOR);
        if stale {
            self.by_peer.remove(&peer);
            self.order.retain(|p| *p != peer);
        }
        if !self.by_peer.contains_key(&peer) {
            while self.by_peer.len() >= TRIED_PEERS {
                match self.order.pop_front() {
                    Some(old) => {
                        self.by_peer.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(peer);
        }
        &mut self.by_peer.entry(peer).or_insert((now, Vec::new())).1
    }

    /// Peers remembered.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }
}

/// A Kademlia behaviour whose dials stay within a [`DialScope`]; everything else is
/// libp2p-kad's (reached through `Deref`).
pub struct ScopedKad {
    inner: kad::Behaviour<kad::store::MemoryStore>,
    scope: DialScope,
    tried: Tried,
    /// Addresses the dials take, per destination (an IPv4 address, an IPv6 /64).
    destinations: DestinationBudget,
    /// DNS names the node dialed itself (an explicit dial, a seed), at most
    /// [`DIALED_NAMES`]: in reach, though peer-given names are not.
    dialed_names: VecDeque<Multiaddr>,
    listening: ListenAddresses,
    external: ExternalAddresses,
    /// The remote address of each connection.
    remotes: HashMap<ConnectionId, Multiaddr>,
    inbound: InboundScreen,
}

type Kad = kad::Behaviour<kad::store::MemoryStore>;

/// Addresses at one destination (an IPv4 address, an IPv6 /64) the dials of one DHT
/// take: 32 at once, then 32 a minute. Peer ids cost nothing, so the per-peer bound
/// ([`MAX_DIAL_ADDRS`]) alone let one answer of 20 made-up peers, or a provider
/// answer a group asks for every 10 s, aim 160 connection attempts at one host of the
/// answering peer's choosing; honest peers sharing an address (several nodes behind
/// one IP) stay far below. Loopback is free (in reach only for a node on loopback
/// alone: several nodes on one host).
pub const PER_DESTINATION: RateLimit = RateLimit {
    burst: 32,
    per_second: 32.0 / 60.0,
};
/// Destinations followed at once.
const DESTINATIONS: usize = 4096;
/// Names the node dialed itself that are kept in reach.
const DIALED_NAMES: usize = 64;

impl ScopedKad {
    /// The same with `limit` per destination, loopback counted unless `loopback_free`
    /// (tests on loopback count it).
    pub fn with_destinations(mut self, limit: RateLimit, loopback_free: bool) -> Self {
        let budget = DestinationBudget::new(limit, DESTINATIONS);
        self.destinations = if loopback_free {
            budget.loopback_free()
        } else {
            budget
        };
        self
    }

    /// `inner`, dialing within `scope`.
    pub fn new(inner: kad::Behaviour<kad::store::MemoryStore>, scope: DialScope) -> Self {
        ScopedKad {
            inner,
            scope,
            tried: Tried::default(),
            destinations: DestinationBudget::new(PER_DESTINATION, DESTINATIONS).loopback_free(),
            dialed_names: VecDeque::new(),
            listening: ListenAddresses::default(),
            external: ExternalAddresses::default(),
            remotes: HashMap::new(),
            inbound: InboundScreen::default(),
        }
    }
}

impl Deref for ScopedKad {
    type Target = kad::Behaviour<kad::store::MemoryStore>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl DerefMut for ScopedKad {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl NetworkBehaviour for ScopedKad {
    type ConnectionHandler = THandler<Kad>;
    type ToSwarm = kad::Event;

    mesh_core::delegate_to_inner!(inner, connections_only);

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let remote = self.remotes.get(&connection);
        if let Some(event) =
            self.inbound
                .screen(peer, connection, remote, self.listening.iter(), event)
        {
            self.inner
                .on_connection_handler_event(peer, connection, event);
        }
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let known = self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        // Most dials ask both DHTs, and one of them knows nothing of the peer.
        let Some(peer) = maybe_peer.filter(|_| !known.is_empty()) else {
            return Ok(Vec::new());
        };
        let table: Vec<Multiaddr> = self
            .inner
            .kbucket(peer)
            .and_then(|bucket| {
                bucket
                    .iter()
                    .find(|e| *e.node.key.preimage() == peer)
                    .map(|e| e.node.value.iter().cloned().collect())
            })
            .unwrap_or_default();
        // Only the mesh DHT's scope reads the node's reach (Amino's does not).
        let (own, paths): (Vec<Multiaddr>, Vec<Multiaddr>) = match self.scope {
            DialScope::Mesh => (
                self.listening
                    .iter()
                    .chain(self.external.iter())
                    .cloned()
                    .collect(),
                self.remotes.values().cloned().collect(),
            ),
            DialScope::Amino { .. } => (Vec::new(), Vec::new()),
        };
        let reach = Reach {
            own: &own,
            paths: &paths,
        };
        let now = Instant::now();
        let tried = self.tried.of(peer, now);
        let named: Vec<Multiaddr> = (table.iter().chain(&known))
            .filter(|a| self.dialed_names.contains(&without_peer(a)))
            .cloned()
            .collect();
        let mut chosen = self.scope.choose(&table, known, tried, &reach);
        // Names the node dialed itself stay in reach (peer-given ones are not).
        for a in named {
            if chosen.len() < MAX_DIAL_ADDRS && !chosen.contains(&a) {
                chosen.push(a);
            }
        }
        // A dial that brings addresses of its own (a route, a punch, a seed) takes ours
        // only if it asks to, and is budgeted by whoever made it; the DHTs' own dials
        // bring none: their addresses with an IP spend their destination's token
        // (those without passed the scope as the operator's names, or on a node on
        // loopback alone).
        if !addresses.is_empty() {
            return Ok(chosen);
        }
        let destinations = &mut self.destinations;
        Ok(chosen
            .into_iter()
            .filter(|a| ip_of(a).is_none_or(|ip| destinations.admit_ip(ip, now)))
            .collect())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.listening.on_swarm_event(&event);
        self.external.on_swarm_event(&event);
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                let remote = e.endpoint.get_remote_address();
                if e.endpoint.is_dialer() && is_name(remote) {
                    let name = without_peer(remote);
                    if !self.dialed_names.contains(&name) {
                        if self.dialed_names.len() >= DIALED_NAMES {
                            self.dialed_names.pop_front();
                        }
                        self.dialed_names.push_back(name);
                    }
                }
                self.remotes.insert(e.connection_id, remote.clone());
            }
            FromSwarm::ConnectionClosed(e) => {
                self.remotes.remove(&e.connection_id);
                self.inbound.closed(e.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection, event)) = self.inbound.next_refusal() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event,
            });
        }
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests;
