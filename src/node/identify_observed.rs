//! libp2p identify that tells a peer its observed address only when that address is a
//! network address (IP or DNS first), as js-libp2p's identify does.
//!
//! rust-libp2p's relay client gives an inbound circuit the remote address
//! `/p2p/<source peer>`, and identify sends a peer its connection's remote address as
//! `observedAddr`. js-libp2p (3.x) passes every observed address that is not private to
//! its address manager, which throws on one that does not start with an IP or DNS
//! component, so its identify of us over such a circuit fails and it never learns our
//! protocols or addresses. An observation over a relay only describes the relay anyway
//! (go-libp2p ignores them), so for those connections this sends an empty observed
//! address, which js-libp2p, go-libp2p and rust-libp2p all skip.
//!
//! It keeps the listen addresses peers report for later dials by peer id itself
//! (identify's own cache is off): only those a peer could plausibly be at, seen from the
//! connection that reported them (`ip_scope::plausible`). identify's cache kept
//! every address a peer listed and handed them to every behaviour (and every dial by
//! peer id), so one connection could make the node dial its own loopback, its LAN or a
//! third party at every later dial of that peer, past the DHTs' and the feed's scopes.
//!
//! It also stands between identify and AutoNAT: the external address candidates
//! identify makes of what peers claim to observe go to the swarm (and so to AutoNAT's
//! table) only through a [`CandidateGate`] (see [`super::autonat_gate`]).

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::ListenAddresses;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, identify};
use mesh_core::{Source, Timestamp};

use super::addrs::dialable;
use super::autonat_gate::CandidateGate;
use super::ip_scope::{ip_of, is_name, local_path, plausible};

/// [`identify::Behaviour`] with network-address-only observed addresses, which also
/// remembers each open connection's remote address, so that an observation a peer sends
/// can be weighed by where it comes from ([`Identify::remote_addr`]), and passes
/// identify's external address candidates on only through its [`CandidateGate`].
pub struct Identify {
    inner: identify::Behaviour,
    remotes: HashMap<ConnectionId, Multiaddr>,
    /// The listen addresses each connected peer last reported (at most
    /// [`MAX_LISTEN_ADDRS`]), until its last connection closes.
    listen: HashMap<PeerId, Vec<Multiaddr>>,
    /// Our own listen addresses.
    own_listen: ListenAddresses,
    /// The connection of the latest identify answer: the candidates identify emits
    /// next are made of its observed address.
    identified: Option<ConnectionId>,
    gate: CandidateGate,
    /// The listen addresses kept for dials by peer id (see the module's documentation).
    met: Met,
    /// Addresses of peers to tell the other behaviours about.
    new_addrs: VecDeque<(PeerId, Multiaddr)>,
}

/// Listen addresses kept per peer.
pub const MAX_LISTEN_ADDRS: usize = 16;

/// Peers whose listen addresses are kept for dials (identify's default cache size).
pub const MET_PEERS: usize = 100;

/// Whether `addr`, a listen address a peer reported over a connection from `path`, is
/// kept for dials: one the node's transports dial, at an IP the peer could be at seen
/// from there (`own`: the node's own listen addresses); a DNS name only over a
/// loopback path (`ip_scope::is_name`: a name may resolve to the node's own host or
/// LAN, `127.0.0.1.nip.io` for one). Pure.
pub fn worth_dialing(addr: &Multiaddr, path: &Multiaddr, own: &[Multiaddr]) -> bool {
    let path = std::slice::from_ref(path);
    dialable(addr)
        && match ip_of(addr) {
            Some(ip) => plausible(ip, path, own),
            None => !is_name(addr) || local_path(path, own),
        }
}

/// The listen addresses kept per peer: the latest report's, for [`MET_PEERS`] peers.
/// When full, the least recently reported peer of the network (the IPv4 address or IPv6
/// /64 its connection came from) holding the most entries is forgotten: least recently
/// reported of all let a hundred fresh keys from one host push out every honest peer's
/// addresses.
#[derive(Debug, Default)]
struct Met {
    by_peer: HashMap<PeerId, (Vec<Multiaddr>, Source)>,
    order: VecDeque<PeerId>,
}

impl Met {
    /// Keeps `addrs` for `peer`, connected from network `net`; the ones not kept before.
    fn put(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, net: Source) -> Vec<Multiaddr> {
        let old = self
            .by_peer
            .remove(&peer)
            .map(|(a, _)| a)
            .unwrap_or_default();
        self.order.retain(|p| *p != peer);
        while self.by_peer.len() >= MET_PEERS {
            let mut held: HashMap<Source, usize> = HashMap::new();
            for (_, n) in self.by_peer.values() {
                *held.entry(*n).or_default() += 1;
            }
            let most = held.values().copied().max().unwrap_or(0);
            let busiest = |p: &PeerId| {
                self.by_peer
                    .get(p)
                    .is_some_and(|(_, n)| held.get(n) == Some(&most))
            };
            match self.order.iter().position(busiest) {
                Some(i) => {
                    if let Some(gone) = self.order.remove(i) {
                        self.by_peer.remove(&gone);
                    }
                }
                None => break,
            }
        }
        let new = addrs.iter().filter(|a| !old.contains(a)).cloned().collect();
        self.order.push_back(peer);
        self.by_peer.insert(peer, (addrs, net));
        new
    }

    fn get(&self, peer: &PeerId) -> &[Multiaddr] {
        self.by_peer.get(peer).map_or(&[], |(a, _)| a.as_slice())
    }

    fn failed(&mut self, peer: &PeerId, addr: &Multiaddr) {
        if let Some((addrs, _)) = self.by_peer.get_mut(peer) {
            addrs.retain(|a| a != addr);
        }
    }
}

impl Identify {
    /// identify with `config`, its own address cache off (this keeps one).
    pub fn new(config: identify::Config) -> Self {
        Identify {
            inner: identify::Behaviour::new(config.with_cache_size(0)),
            remotes: HashMap::new(),
            listen: HashMap::new(),
            own_listen: ListenAddresses::default(),
            identified: None,
            gate: CandidateGate::default(),
            met: Met::default(),
            new_addrs: VecDeque::new(),
        }
    }

    /// Keeps what of `reported` (the listen addresses `peer` sent over `connection`) is
    /// worth dialing, and queues the new ones for the other behaviours.
    fn met(&mut self, peer: PeerId, connection: ConnectionId, reported: &[Multiaddr]) {
        let Some(path) = self.remotes.get(&connection) else {
            return;
        };
        let own: Vec<Multiaddr> = self.own_listen.iter().cloned().collect();
        let mut kept: Vec<Multiaddr> = Vec::new();
        for a in reported {
            if kept.len() < MAX_LISTEN_ADDRS && !kept.contains(a) && worth_dialing(a, path, &own) {
                kept.push(a.clone());
            }
        }
        let net = Source::of_peer(peer, std::iter::once(path));
        for a in self.met.put(peer, kept, net) {
            self.new_addrs.push_back((peer, a));
        }
    }

    /// The gate in front of AutoNAT's candidates (for its counts).
    pub fn candidate_gate(&self) -> &CandidateGate {
        &self.gate
    }

    /// Whether candidate `addr`, made of the observation identify received last, goes
    /// on to the swarm.
    fn admit(&mut self, addr: &Multiaddr) -> bool {
        let remote = self
            .identified
            .and_then(|c| self.remotes.get(&c))
            .cloned()
            .unwrap_or_else(Multiaddr::empty);
        let listen: Vec<Multiaddr> = self.own_listen.iter().cloned().collect();
        self.gate.admit(&remote, addr, &listen, &Timestamp::now())
    }

    /// The listen addresses of `peer`'s last identify kept for dials (plausible from its
    /// connection: [`worth_dialing`]).
    pub fn kept_addrs(&self, peer: &PeerId) -> &[Multiaddr] {
        self.met.get(peer)
    }

    /// The listen addresses connected peer `peer` reported in its last identify.
    pub fn listen_addrs(&self, peer: &PeerId) -> &[Multiaddr] {
        self.listen.get(peer).map_or(&[], Vec::as_slice)
    }

    /// The remote address of open connection `id`.
    pub fn remote_addr(&self, id: ConnectionId) -> Option<&Multiaddr> {
        self.remotes.get(&id)
    }
}

impl Deref for Identify {
    type Target = identify::Behaviour;

    fn deref(&self) -> &identify::Behaviour {
        &self.inner
    }
}

impl DerefMut for Identify {
    fn deref_mut(&mut self) -> &mut identify::Behaviour {
        &mut self.inner
    }
}

/// `addr` when it starts with an IP or DNS component, else the empty address.
pub fn observable(addr: &Multiaddr) -> Multiaddr {
    match addr.iter().next() {
        Some(
            Protocol::Ip4(_)
            | Protocol::Ip6(_)
            | Protocol::Dns(_)
            | Protocol::Dns4(_)
            | Protocol::Dns6(_)
            | Protocol::Dnsaddr(_),
        ) => addr.clone(),
        _ => Multiaddr::empty(),
    }
}

impl NetworkBehaviour for Identify {
    type ConnectionHandler = <identify::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = identify::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            &observable(remote_addr),
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut out = self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        if let Some(p) = maybe_peer {
            out.extend(self.met.get(&p).iter().cloned());
        }
        Ok(out)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.own_listen.on_swarm_event(&event);
        match &event {
            FromSwarm::ConnectionEstablished(c) => {
                self.remotes
                    .insert(c.connection_id, c.endpoint.get_remote_address().clone());
            }
            FromSwarm::ConnectionClosed(c) => {
                self.remotes.remove(&c.connection_id);
                if c.remaining_established == 0 {
                    self.listen.remove(&c.peer_id);
                }
            }
            FromSwarm::DialFailure(f) => {
                if let (Some(peer), libp2p::swarm::DialError::Transport(errors)) =
                    (f.peer_id, f.error)
                {
                    for (addr, _) in errors {
                        self.met.failed(&peer, addr);
                    }
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<identify::Event, THandlerInEvent<Self>>> {
        loop {
            if let Some((peer_id, address)) = self.new_addrs.pop_front() {
                return Poll::Ready(ToSwarm::NewExternalAddrOfPeer { peer_id, address });
            }
            let polled = self.inner.poll(cx);
            match &polled {
                Poll::Ready(ToSwarm::GenerateEvent(identify::Event::Received {
                    connection_id,
                    peer_id,
                    info,
                })) => {
                    // identify queues the candidates of this answer right behind it.
                    self.identified = Some(*connection_id);
                    let mut addrs = info.listen_addrs.clone();
                    addrs.truncate(MAX_LISTEN_ADDRS);
                    self.listen.insert(*peer_id, addrs);
                    self.met(*peer_id, *connection_id, &info.listen_addrs);
                }
                Poll::Ready(ToSwarm::NewExternalAddrCandidate(addr)) if !self.admit(addr) => {
                    continue;
                }
                _ => {}
            }
            return polled;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_only_over_loopback() {
        let ma = |s: &str| s.parse::<Multiaddr>().unwrap();
        let public = ma("/ip4/203.0.113.9/tcp/4001");
        let lo = ma("/ip4/127.0.0.1/tcp/4001");
        for local in [
            "/dns4/localhost/tcp/6379",
            "/dns4/redis.localhost/tcp/6379",
            "/dns4/printer/tcp/80",
            "/dns4/printer.lan/tcp/80",
            "/dns6/nas.local./tcp/22",
            "/dns/router.home.arpa/tcp/80",
            "/dns4/db.internal/tcp/5432",
        ] {
            assert!(!worth_dialing(&ma(local), &public, &[]), "{local}");
            assert!(worth_dialing(&ma(local), &lo, &[]), "{local} over loopback");
        }
        // A public name may resolve anywhere (wildcard DNS points any name at the
        // node's loopback or LAN): names are kept only over loopback too.
        for name in [
            "/dns4/node.example.org/tcp/4001",
            "/dns4/127.0.0.1.nip.io/tcp/6379",
            "/dnsaddr/bootstrap.example.org",
        ] {
            assert!(!worth_dialing(&ma(name), &public, &[]), "{name}");
        }
    }

    #[test]
    fn listen_addresses_are_kept_for_a_bounded_number_of_peers() {
        let mut met = Met::default();
        let first = PeerId::random();
        let a: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
        let net = |n: u32| Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::from(n)));
        assert_eq!(met.put(first, vec![a.clone()], net(1)), vec![a.clone()]);
        // Reported again: nothing new.
        assert!(met.put(first, vec![a.clone()], net(1)).is_empty());
        met.failed(&first, &a);
        assert_eq!(met.get(&first), &[] as &[Multiaddr]);
        for n in 0..MET_PEERS as u32 {
            met.put(PeerId::random(), vec![a.clone()], net(100 + n));
        }
        assert_eq!(met.by_peer.len(), MET_PEERS);
        assert!(!met.by_peer.contains_key(&first), "the oldest went first");
    }

    #[test]
    fn fresh_keys_of_one_network_push_out_only_their_own() {
        let mut met = Met::default();
        let a: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
        let net = |n: u32| Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::from(n)));
        let honest: Vec<PeerId> = (0..10u32)
            .map(|n| {
                let p = PeerId::random();
                met.put(p, vec![a.clone()], net(n));
                p
            })
            .collect();
        for _ in 0..3 * MET_PEERS {
            met.put(PeerId::random(), vec![a.clone()], net(666));
        }
        assert_eq!(met.by_peer.len(), MET_PEERS);
        assert!(
            honest
                .iter()
                .all(|p| met.get(p) == std::slice::from_ref(&a))
        );
    }

    #[test]
    fn only_network_addresses_are_observable() {
        for a in [
            "/ip4/192.0.2.7/tcp/4001",
            "/ip6/::1/udp/4001/quic-v1",
            "/dns4/example.org/tcp/443/wss",
        ] {
            let a: Multiaddr = a.parse().unwrap();
            assert_eq!(observable(&a), a);
        }
        // What rust-libp2p's relay client reports for an inbound circuit.
        let circuit: Multiaddr = Multiaddr::empty().with(Protocol::P2p(PeerId::random()));
        assert_eq!(observable(&circuit), Multiaddr::empty());
        assert_eq!(observable(&Multiaddr::empty()), Multiaddr::empty());
    }
}
