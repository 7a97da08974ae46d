//! Inbound connections counted per network ([`IpKey`]: an IPv4 address, an IPv6 /64),
//! so one host cannot take every slot of the global caps. Pure: the swarm's events go
//! in, yes or no comes out.
//!
//! - **Pending** (accepted by a listener, not yet through Noise and yamux): at most
//!   `max_pending` per network. libp2p's global cap (`max_pending_incoming`) alone let
//!   one host that opens that many silent TCP connections shut every newcomer out (with
//!   the transport's upgrade timeout, for as long as it keeps opening them).
//! - **Established inbound**: at most `max_established` per network. Peer ids cost
//!   nothing, so libp2p's per-peer cap does not stop one host from holding the whole
//!   global cap with fresh keys.
//!
//! - **Pending, by wider network** ([`mesh_core::IpGroup`]: an IPv4 /16, an IPv6
//!   /32): at most `max_pending_group`. A /48 (a free tunnel broker hands one out)
//!   holds 65,536 /64s, each with its own `max_pending`.
//! - **Established inbound, in all**: at most `max_inbound` (three quarters of
//!   `limits.max_established` unless set), so inbound peers (those counted here: with an
//!   IP, not relayed) never take the slots the node dials out with. At that cap a
//!   newcomer is let in when its group would still hold fewer than the largest group
//!   does: the newest connection of the largest group is closed for it (Bitcoin Core's
//!   eviction by network group, reduced to its core). Eight IPv4 addresses or a /61
//!   used to hold all 512 connections (64 each), the node's own dials included; now
//!   whoever holds the slots is pushed back towards an equal share per group by every
//!   newcomer from elsewhere, and gains nothing by reconnecting (a group cannot
//!   displace one that is not larger than itself).
//!
//! - **Pending WebRTC-direct** (any network): at most `max_pending_webrtc` in all. One
//!   UDP packet (a STUN request with any user name) from a new source address starts
//!   one, with no handshake, and a source address costs nothing to spoof: some 13
//!   packets a second from fresh addresses held every slot of the global pending cap
//!   (each attempt lives 10 s or more), and every inbound TCP, QUIC and WebSocket
//!   connection was refused. Now WebRTC-direct attempts hold a quarter at most.
//!
//! - **Pending QUIC** (any network): at most `max_pending_quic` in all, for the same
//!   reason: upstream libp2p-quic answers every Initial packet (no address validation),
//!   and one from a spoofed source stays pending for the 5 s handshake timeout, so some
//!   26 Initials a second from fresh addresses held the global cap. Now a quarter too
//!   (and the node's copy answers with a Retry once half of it is under way).
//!
//! - **Pending through relays**: at most `max_pending_relayed` per relay and
//!   `max_pending_circuits` in all. A circuit's local address is the address of its relay
//!   connection with `/p2p-circuit`: the relay is its `/p2p/<relay>` there (or, without
//!   one, that address). Peer ids cost nothing, so a client of a public relay could open
//!   circuits to the node under fresh ids (the relay's per-peer limits count ids) and hold
//!   every pending slot in silent handshakes: every other inbound connection was
//!   refused. Now one relay's circuits hold a quarter, and all relays' half.
//!
//! Relayed connections are not counted by network otherwise: their remote address
//! (`/p2p/<source>`) has no IP, and the relay's is shared by every peer that reaches the
//! node through it (the relay limits its own clients per network). Neither are
//! connections without an IP (the memory transport). The tables
//! hold one entry per pending or established connection, so the global caps bound them.

use std::collections::HashMap;

use libp2p::Multiaddr;
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use mesh_core::{IpGroup as Group, IpKey};

/// The per-network caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCaps {
    /// Pending inbound connections per network.
    pub max_pending: u32,
    /// Established inbound connections per network.
    pub max_established: u32,
    /// Pending inbound WebRTC-direct connections in all.
    pub max_pending_webrtc: u32,
    /// Pending inbound QUIC connections in all.
    pub max_pending_quic: u32,
    /// Pending inbound relayed connections through one relay.
    pub max_pending_relayed: u32,
    /// Pending inbound relayed connections in all.
    pub max_pending_circuits: u32,
    /// Pending inbound connections per [`mesh_core::IpGroup`].
    pub max_pending_group: u32,
    /// Established inbound connections in all (those counted: with an IP, not relayed).
    pub max_inbound: u32,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The network has `max_pending` connections in their handshakes.
    #[error("{0} pending inbound connections from this network already")]
    Pending(u32),
    /// The network holds `max_established` inbound connections.
    #[error("{0} inbound connections from this network already")]
    Established(u32),
    /// `max_pending_webrtc` WebRTC-direct connections are in their handshakes.
    #[error("{0} pending inbound WebRTC-direct connections already")]
    PendingWebrtc(u32),
    /// `max_pending_quic` QUIC connections are in their handshakes.
    #[error("{0} pending inbound QUIC connections already")]
    PendingQuic(u32),
    /// `max_pending_relayed` connections through this relay are in their handshakes.
    #[error("{0} pending inbound connections through this relay already")]
    PendingRelayed(u32),
    /// `max_pending_circuits` relayed connections are in their handshakes.
    #[error("{0} pending inbound relayed connections already")]
    PendingCircuits(u32),
    /// The wider network ([`mesh_core::IpGroup`]) has `max_pending_group` connections in their
    /// handshakes.
    #[error("{0} pending inbound connections from this wider network already")]
    PendingGroup(u32),
    /// `max_inbound` inbound connections are held and no group holds more than the
    /// newcomer's would.
    #[error("{0} inbound connections in all, none from a larger network group to give way")]
    Full(u32),
}

/// An established inbound connection that is counted.
#[derive(Debug, Clone, Copy)]
struct Held {
    key: IpKey,
    peer: PeerId,
    /// Order of arrival (larger: newer).
    seq: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    pending: u32,
    established: u32,
}

/// Pending and established inbound connections by network.
#[derive(Debug)]
pub struct IpShares {
    caps: IpCaps,
    pending: HashMap<ConnectionId, IpKey>,
    established: HashMap<ConnectionId, Held>,
    counts: HashMap<IpKey, Count>,
    /// Pending and established connections by [`mesh_core::IpGroup`].
    groups: HashMap<Group, Count>,
    next_seq: u64,
    /// Pending WebRTC-direct connections (at most `max_pending_webrtc`).
    webrtc: std::collections::HashSet<ConnectionId>,
    /// Pending QUIC connections (at most `max_pending_quic`).
    quic: std::collections::HashSet<ConnectionId>,
    /// Pending relayed connections, by relay (each at most `max_pending_relayed`; at
    /// most `max_pending_circuits` in all).
    relayed: HashMap<ConnectionId, Multiaddr>,
    relays: HashMap<Multiaddr, u32>,
}

/// The relay of a circuit whose local address is `local`
/// (`<relay connection's address>/p2p/<relay>/p2p-circuit`): `/p2p/<relay>`, or the
/// address before `/p2p-circuit` when it names no peer.
fn relay_of(local: &Multiaddr) -> Multiaddr {
    let mut before = Multiaddr::empty();
    let mut peer = None;
    for p in local.iter() {
        match p {
            Protocol::P2pCircuit => break,
            Protocol::P2p(id) => peer = Some(id),
            p => before.push(p),
        }
    }
    match peer {
        Some(id) => Multiaddr::empty().with(Protocol::P2p(id)),
        None => before,
    }
}

/// The network a connection from `remote` counts under: `None` when it is not counted
/// (relayed, or without an IP).
fn key_of(remote: &Multiaddr) -> Option<IpKey> {
    if remote.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    IpKey::of_multiaddr(remote)
}

impl IpShares {
    /// Empty tables with `caps`.
    pub fn new(caps: IpCaps) -> Self {
        IpShares {
            caps,
            pending: HashMap::new(),
            established: HashMap::new(),
            counts: HashMap::new(),
            groups: HashMap::new(),
            next_seq: 0,
            webrtc: std::collections::HashSet::new(),
            quic: std::collections::HashSet::new(),
            relayed: HashMap::new(),
            relays: HashMap::new(),
        }
    }

    /// A listener on `local` accepted connection `id` from `remote`: counted as
    /// pending, or refused.
    pub fn pending(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), Refused> {
        if local.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            // A circuit (whatever transport its relay connection uses).
            if self.relayed.len() >= self.caps.max_pending_circuits as usize {
                return Err(Refused::PendingCircuits(self.caps.max_pending_circuits));
            }
            let relay = relay_of(local);
            let n = self.relays.entry(relay.clone()).or_default();
            if *n >= self.caps.max_pending_relayed {
                return Err(Refused::PendingRelayed(self.caps.max_pending_relayed));
            }
            *n += 1;
            self.relayed.insert(id, relay);
        } else if local.iter().any(|p| matches!(p, Protocol::WebRTCDirect)) {
            // Transports that start a connection on one packet from any source.
            if self.webrtc.len() >= self.caps.max_pending_webrtc as usize {
                return Err(Refused::PendingWebrtc(self.caps.max_pending_webrtc));
            }
            self.webrtc.insert(id);
        } else if local.iter().any(|p| matches!(p, Protocol::QuicV1)) {
            if self.quic.len() >= self.caps.max_pending_quic as usize {
                return Err(Refused::PendingQuic(self.caps.max_pending_quic));
            }
            self.quic.insert(id);
        }
        let Some(key) = key_of(remote) else {
            return Ok(());
        };
        let group = key.group();
        let refused = if self.counts.get(&key).map_or(0, |c| c.pending) >= self.caps.max_pending {
            Some(Refused::Pending(self.caps.max_pending))
        } else if self.groups.get(&group).map_or(0, |c| c.pending) >= self.caps.max_pending_group {
            Some(Refused::PendingGroup(self.caps.max_pending_group))
        } else {
            None
        };
        if let Some(refused) = refused {
            self.webrtc.remove(&id);
            self.quic.remove(&id);
            self.end_relayed(id);
            return Err(refused);
        }
        self.counts.entry(key).or_default().pending += 1;
        self.groups.entry(group).or_default().pending += 1;
        self.pending.insert(id, key);
        Ok(())
    }

    /// An inbound connection from `remote` finished its handshakes: whether it may be
    /// established, and the connection that must give way to it when the node holds
    /// `max_inbound` (pass it to [`IpShares::evict`] once the connection is let in).
    pub fn check_established(&self, remote: &Multiaddr) -> Result<Option<ConnectionId>, Refused> {
        let Some(key) = key_of(remote) else {
            return Ok(None);
        };
        let established = self.counts.get(&key).map_or(0, |c| c.established);
        if established >= self.caps.max_established {
            return Err(Refused::Established(self.caps.max_established));
        }
        if self.established.len() < self.caps.max_inbound as usize {
            return Ok(None);
        }
        // The largest group gives way, when it would still be larger than the
        // newcomer's afterwards (`IpGroup::giving_way`).
        let held = self
            .groups
            .iter()
            .map(|(g, c)| (*g, c.established as usize));
        Group::giving_way(key.group(), held)
            .and_then(|g| self.newest_of(g))
            .map(Some)
            .ok_or(Refused::Full(self.caps.max_inbound))
    }

    /// The newest counted connection of `group`.
    fn newest_of(&self, group: Group) -> Option<ConnectionId> {
        self.established
            .iter()
            .filter(|(_, h)| h.key.group() == group)
            .max_by_key(|(_, h)| h.seq)
            .map(|(id, _)| *id)
    }

    /// Stops counting connection `id`, chosen by [`IpShares::check_established`] to
    /// give way: the peer to close it for (`None` when it is no longer held).
    pub fn evict(&mut self, id: ConnectionId) -> Option<PeerId> {
        let held = self.forget(id)?;
        Some(held.peer)
    }

    /// Connection `id` with `peer` was established; `inbound_from` is its remote
    /// address when a listener accepted it.
    pub fn established(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        inbound_from: Option<&Multiaddr>,
    ) {
        self.end_pending(id);
        if let Some(key) = inbound_from.and_then(key_of) {
            self.counts.entry(key).or_default().established += 1;
            self.groups.entry(key.group()).or_default().established += 1;
            self.next_seq += 1;
            let seq = self.next_seq;
            self.established.insert(id, Held { key, peer, seq });
        }
    }

    /// A pending connection `id` failed or was refused.
    pub fn failed(&mut self, id: ConnectionId) {
        self.end_pending(id);
    }

    /// Connection `id` closed.
    pub fn closed(&mut self, id: ConnectionId) {
        self.forget(id);
    }

    fn forget(&mut self, id: ConnectionId) -> Option<Held> {
        let held = self.established.remove(&id)?;
        if let Some(c) = self.counts.get_mut(&held.key) {
            c.established = c.established.saturating_sub(1);
        }
        if let Some(c) = self.groups.get_mut(&held.key.group()) {
            c.established = c.established.saturating_sub(1);
        }
        self.tidy(held.key);
        Some(held)
    }

    /// Networks with a connection counted (for tests and metrics).
    pub fn networks(&self) -> usize {
        self.counts.len()
    }

    fn end_pending(&mut self, id: ConnectionId) {
        self.webrtc.remove(&id);
        self.quic.remove(&id);
        self.end_relayed(id);
        if let Some(key) = self.pending.remove(&id) {
            if let Some(c) = self.counts.get_mut(&key) {
                c.pending = c.pending.saturating_sub(1);
            }
            if let Some(c) = self.groups.get_mut(&key.group()) {
                c.pending = c.pending.saturating_sub(1);
            }
            self.tidy(key);
        }
    }

    fn end_relayed(&mut self, id: ConnectionId) {
        let Some(relay) = self.relayed.remove(&id) else {
            return;
        };
        if let Some(n) = self.relays.get_mut(&relay) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.relays.remove(&relay);
            }
        }
    }

    fn tidy(&mut self, key: IpKey) {
        let empty = |c: &Count| c.pending == 0 && c.established == 0;
        if self.counts.get(&key).is_some_and(empty) {
            self.counts.remove(&key);
        }
        let group = key.group();
        if self.groups.get(&group).is_some_and(empty) {
            self.groups.remove(&group);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn shares() -> IpShares {
        IpShares::new(IpCaps {
            max_pending: 2,
            max_established: 3,
            max_pending_webrtc: 4,
            max_pending_quic: 4,
            max_pending_relayed: 4,
            max_pending_circuits: 6,
            max_pending_group: 8,
            max_inbound: 100,
        })
    }

    /// The TCP listener a connection came in on.
    fn tcp() -> Multiaddr {
        ma("/ip4/0.0.0.0/tcp/4001")
    }

    #[test]
    fn webrtc_direct_attempts_from_any_networks_hold_their_share_only() {
        let mut s = shares();
        let webrtc = ma(
            "/ip4/0.0.0.0/udp/4004/webrtc-direct/certhash/uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g",
        );
        // One packet each from fresh (spoofed) addresses: four attempts, then none.
        let from = |n: usize| ma(&format!("/ip4/203.0.113.{n}/udp/5000"));
        for n in 0..4 {
            assert_eq!(s.pending(id(n), &webrtc, &from(n)), Ok(()));
        }
        assert_eq!(
            s.pending(id(4), &webrtc, &from(4)),
            Err(Refused::PendingWebrtc(4))
        );
        // Other transports still get their connections.
        assert_eq!(
            s.pending(id(5), &tcp(), &ma("/ip4/198.51.100.9/tcp/1")),
            Ok(())
        );
        // An attempt that ends makes room; one refused per network takes none.
        s.failed(id(0));
        let busy = ma("/ip4/198.51.100.9/udp/7");
        s.pending(id(6), &tcp(), &ma("/ip4/198.51.100.9/tcp/2"))
            .unwrap();
        assert_eq!(s.pending(id(7), &webrtc, &busy), Err(Refused::Pending(2)));
        assert_eq!(s.pending(id(8), &webrtc, &from(8)), Ok(()));
        assert_eq!(
            s.pending(id(9), &webrtc, &from(9)),
            Err(Refused::PendingWebrtc(4))
        );
    }

    #[test]
    fn quic_attempts_from_any_networks_hold_their_share_only() {
        let mut s = shares();
        let quic = ma("/ip4/0.0.0.0/udp/4001/quic-v1");
        // One Initial each from fresh (spoofed) addresses: four attempts, then none.
        let from = |n: usize| ma(&format!("/ip4/203.0.113.{n}/udp/5000/quic-v1"));
        for n in 0..4 {
            assert_eq!(s.pending(id(n), &quic, &from(n)), Ok(()));
        }
        assert_eq!(
            s.pending(id(4), &quic, &from(4)),
            Err(Refused::PendingQuic(4))
        );
        // Other transports still get their connections; one that ends makes room.
        assert_eq!(
            s.pending(id(5), &tcp(), &ma("/ip4/198.51.100.9/tcp/1")),
            Ok(())
        );
        s.failed(id(0));
        assert_eq!(s.pending(id(6), &quic, &from(6)), Ok(()));
    }

    #[test]
    fn one_network_gets_its_pending_share_and_no_more() {
        let mut s = shares();
        let a = ma("/ip4/198.51.100.1/tcp/5000");
        let a2 = ma("/ip4/198.51.100.1/tcp/5001");
        let b = ma("/ip4/198.51.100.2/tcp/5000");
        assert_eq!(s.pending(id(1), &tcp(), &a), Ok(()));
        assert_eq!(s.pending(id(2), &tcp(), &a2), Ok(()));
        assert_eq!(s.pending(id(3), &tcp(), &a), Err(Refused::Pending(2)));
        assert_eq!(s.pending(id(4), &tcp(), &b), Ok(()), "another network");
        // One ends (failed or established): room again.
        s.failed(id(1));
        assert_eq!(s.pending(id(5), &tcp(), &a), Ok(()));
        s.established(id(2), peer(), Some(&a2));
        assert_eq!(s.pending(id(6), &tcp(), &a), Ok(()));
        assert_eq!(s.pending(id(7), &tcp(), &a), Err(Refused::Pending(2)));
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let mut s = shares();
        assert!(
            s.pending(id(1), &tcp(), &ma("/ip6/2001:db8::1/tcp/1"))
                .is_ok()
        );
        assert!(
            s.pending(id(2), &tcp(), &ma("/ip6/2001:db8::2/tcp/1"))
                .is_ok()
        );
        assert!(
            s.pending(id(3), &tcp(), &ma("/ip6/2001:db8::3/tcp/1"))
                .is_err()
        );
        assert!(
            s.pending(id(4), &tcp(), &ma("/ip6/2001:db8:0:1::1/tcp/1"))
                .is_ok()
        );
    }

    #[test]
    fn established_inbound_connections_are_capped_per_network_until_one_closes() {
        let mut s = shares();
        let a = ma("/ip4/198.51.100.1/tcp/5000");
        for n in 0..3 {
            assert_eq!(s.check_established(&a), Ok(None));
            s.pending(id(n), &tcp(), &a).unwrap();
            s.established(id(n), peer(), Some(&a));
        }
        assert_eq!(s.check_established(&a), Err(Refused::Established(3)));
        // Outbound connections to that network do not count.
        s.established(id(10), peer(), None);
        s.closed(id(10));
        assert_eq!(s.check_established(&a), Err(Refused::Established(3)));
        s.closed(id(1));
        assert_eq!(s.check_established(&a), Ok(None));
    }

    #[test]
    fn relayed_and_ip_less_connections_are_not_counted() {
        let mut s = shares();
        let circuit = ma(
            "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWGjMCgWVvg4wVKw8wqyKaxwQyfZ9aYQ8ZQ3MrK3n3y3Yd/p2p-circuit",
        );
        for n in 0..10 {
            assert!(s.pending(id(n), &tcp(), &circuit).is_ok());
            assert!(s.pending(id(100 + n), &tcp(), &ma("/memory/7")).is_ok());
        }
        assert_eq!(s.networks(), 0);
    }

    #[test]
    fn circuits_through_one_relay_hold_its_share_only() {
        let mut s = shares();
        let via = |host: &str| ma(&format!("/ip4/{host}/tcp/4001/p2p-circuit"));
        // Relays reached by name: keyed by their peer ids.
        let named = |relay: &PeerId| {
            ma(&format!(
                "/dns4/relay.example/tcp/443/wss/p2p/{relay}/p2p-circuit"
            ))
        };
        let (r1, r2) = (peer(), peer());
        let from = || ma(&format!("/p2p/{}", peer()));
        // Fresh peer ids through relay A: four, then refused.
        for n in 0..4 {
            assert!(s.pending(id(n), &via("198.51.100.1"), &from()).is_ok());
        }
        assert_eq!(
            s.pending(id(4), &via("198.51.100.1"), &from()),
            Err(Refused::PendingRelayed(4))
        );
        // Another relay, and plain connections, are not held back.
        assert!(s.pending(id(5), &via("198.51.100.2"), &from()).is_ok());
        assert!(
            s.pending(id(6), &tcp(), &ma("/ip4/198.51.100.1/tcp/5000"))
                .is_ok()
        );
        // One of A's ends: room for one more.
        s.failed(id(0));
        assert!(s.pending(id(7), &via("198.51.100.1"), &from()).is_ok());
        s.established(id(1), peer(), Some(&from()));
        for n in [2, 3, 5, 6, 7] {
            s.failed(id(n));
        }
        assert!(s.relayed.is_empty() && s.relays.is_empty());

        // Two relays by name: four through the first, then two through the second (six
        // in all), then none.
        for n in 10..14 {
            assert!(s.pending(id(n), &named(&r1), &from()).is_ok());
        }
        assert_eq!(
            s.pending(id(14), &named(&r1), &from()),
            Err(Refused::PendingRelayed(4))
        );
        for n in 15..17 {
            assert!(s.pending(id(n), &named(&r2), &from()).is_ok());
        }
        assert_eq!(
            s.pending(id(17), &named(&r2), &from()),
            Err(Refused::PendingCircuits(6))
        );
    }

    #[test]
    fn a_circuit_over_a_quic_relay_connection_is_not_a_quic_attempt() {
        let mut s = shares();
        let via = ma("/ip4/198.51.100.1/udp/4001/quic-v1/p2p-circuit");
        for n in 0..4 {
            s.pending(id(n), &via, &ma(&format!("/p2p/{}", peer())))
                .unwrap();
        }
        assert!(s.quic.is_empty());
    }

    #[test]
    fn the_tables_empty_when_every_connection_is_gone() {
        let mut s = shares();
        let a = ma("/ip4/198.51.100.1/tcp/5000");
        let b = ma("/ip4/198.51.100.2/tcp/5000");
        s.pending(id(1), &tcp(), &a).unwrap();
        s.pending(id(2), &tcp(), &b).unwrap();
        let _ = s.pending(id(3), &tcp(), &a);
        let _ = s.pending(id(4), &tcp(), &a);
        s.established(id(1), peer(), Some(&a));
        s.failed(id(2));
        s.failed(id(4));
        s.closed(id(1));
        assert_eq!(s.networks(), 1, "3 is still pending");
        s.failed(id(3));
        assert_eq!(s.networks(), 0);
        assert!(s.pending.is_empty() && s.established.is_empty());
    }

    /// Shares where the node holds `inbound` connections in all, 64 per network.
    fn full_at(inbound: u32) -> IpShares {
        IpShares::new(IpCaps {
            max_pending: 64,
            max_established: 64,
            max_pending_webrtc: 4,
            max_pending_quic: 4,
            max_pending_relayed: 4,
            max_pending_circuits: 6,
            max_pending_group: 64,
            max_inbound: inbound,
        })
    }

    /// Lets in a connection from `remote` as the node would: checked, the one chosen to
    /// give way evicted, then established. The connection evicted, or why it was refused.
    fn admit(
        s: &mut IpShares,
        n: usize,
        remote: &Multiaddr,
    ) -> Result<Option<ConnectionId>, Refused> {
        s.pending(id(n), &tcp(), remote)?;
        match s.check_established(remote) {
            Ok(victim) => {
                if let Some(v) = victim {
                    assert!(s.evict(v).is_some());
                }
                s.established(id(n), peer(), Some(remote));
                Ok(victim)
            }
            Err(e) => {
                s.failed(id(n));
                Err(e)
            }
        }
    }

    #[test]
    fn a_few_networks_cannot_hold_every_inbound_slot() {
        // Eight hosts of one /16 fill the node (a /61's eight /64s would do the same).
        let mut s = full_at(16);
        let attacker = |n: usize| ma(&format!("/ip4/203.0.{}.1/tcp/{n}", n % 8));
        for n in 0..16 {
            assert_eq!(admit(&mut s, n, &attacker(n)), Ok(None));
        }
        // More of theirs are refused: the node is full and they are the largest group.
        assert_eq!(admit(&mut s, 16, &attacker(16)), Err(Refused::Full(16)));
        // Peers from elsewhere get in, each in the place of the attacker's newest.
        let honest = |n: usize| ma(&format!("/ip4/198.{n}.100.1/tcp/1"));
        assert_eq!(admit(&mut s, 100, &honest(1)), Ok(Some(id(15))));
        assert_eq!(admit(&mut s, 101, &honest(2)), Ok(Some(id(14))));
        assert_eq!(
            admit(&mut s, 102, &ma("/ip6/2001:db8::1/tcp/1")),
            Ok(Some(id(13)))
        );
        // Reconnecting gains the attacker nothing: its group is still the largest.
        assert_eq!(admit(&mut s, 17, &attacker(17)), Err(Refused::Full(16)));
        assert_eq!(s.established.len(), 16);
    }

    #[test]
    fn groups_give_way_down_to_an_equal_share_and_no_further() {
        let mut s = full_at(6);
        let a = |n: usize| ma(&format!("/ip4/203.0.113.{n}/tcp/1"));
        let b = |n: usize| ma(&format!("/ip6/2001:db8:0:{n}::1/tcp/1"));
        for n in 0..6 {
            admit(&mut s, n, &a(n)).unwrap();
        }
        // /32 2001:db8 takes slots from 203.0/16 until both hold three.
        assert!(admit(&mut s, 10, &b(0)).unwrap().is_some());
        assert!(admit(&mut s, 11, &b(1)).unwrap().is_some());
        assert!(admit(&mut s, 12, &b(2)).unwrap().is_some());
        assert_eq!(admit(&mut s, 13, &b(3)), Err(Refused::Full(6)));
        assert_eq!(admit(&mut s, 7, &a(7)), Err(Refused::Full(6)));
        // One leaves: room for anyone again.
        s.closed(id(0));
        assert_eq!(admit(&mut s, 8, &a(8)), Ok(None));
    }

    #[test]
    fn a_wider_network_gets_its_pending_share() {
        let mut s = shares();
        // Eight /64s of one /32, two pending each at most, eight in all.
        let from = |n: usize| ma(&format!("/ip6/2001:db8:0:{n}::1/tcp/1"));
        let held = (0..20)
            .filter(|n| s.pending(id(*n), &tcp(), &from(n / 2)).is_ok())
            .count();
        assert_eq!(held, 8);
        assert_eq!(
            s.pending(id(30), &tcp(), &from(15)),
            Err(Refused::PendingGroup(8))
        );
        assert_eq!(
            s.pending(id(31), &tcp(), &ma("/ip6/2001:db9::1/tcp/1")),
            Ok(()),
            "another /32"
        );
        s.failed(id(0));
        assert_eq!(s.pending(id(32), &tcp(), &from(15)), Ok(()));
    }

    #[test]
    fn an_evicted_connection_closing_later_is_not_counted_twice() {
        let mut s = full_at(2);
        admit(&mut s, 1, &ma("/ip4/203.0.113.1/tcp/1")).unwrap();
        admit(&mut s, 2, &ma("/ip4/203.0.113.2/tcp/1")).unwrap();
        let victim = admit(&mut s, 3, &ma("/ip4/198.51.100.1/tcp/1")).unwrap();
        assert_eq!(victim, Some(id(2)));
        // The swarm reports its close afterwards.
        s.closed(id(2));
        assert_eq!(s.established.len(), 2);
        assert_eq!(
            s.groups
                .get(&IpKey::V4([203, 0, 113, 1].into()).group())
                .map(|c| c.established),
            Some(1)
        );
        assert_eq!(s.evict(id(2)), None);
    }
}
