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
#[path = "ip_shares_tests.rs"]
mod tests;
