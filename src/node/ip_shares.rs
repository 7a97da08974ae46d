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
//! - **Pending WebRTC-direct** (any network): at most `max_pending_webrtc` in all. One
//!   UDP packet (a STUN request with any user name) from a new source address starts
//!   one, with no handshake, and a source address costs nothing to spoof: some 13
//!   packets a second from fresh addresses held every slot of the global pending cap
//!   (each attempt lives 10 s or more), and every inbound TCP, QUIC and WebSocket
//!   connection was refused. Now WebRTC-direct attempts hold a quarter at most.
//!
//! Relayed connections are not counted: their remote address is the relay's, shared by
//! every peer that reaches the node through it (the relay limits its own clients per
//! network). Neither are connections without an IP (the memory transport). The tables
//! hold one entry per pending or established connection, so the global caps bound them.

use std::collections::HashMap;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use mesh_core::IpKey;

/// The per-network caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCaps {
    /// Pending inbound connections per network.
    pub max_pending: u32,
    /// Established inbound connections per network.
    pub max_established: u32,
    /// Pending inbound WebRTC-direct connections in all.
    pub max_pending_webrtc: u32,
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
    established: HashMap<ConnectionId, IpKey>,
    counts: HashMap<IpKey, Count>,
    /// Pending WebRTC-direct connections (at most `max_pending_webrtc`).
    webrtc: std::collections::HashSet<ConnectionId>,
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
            webrtc: std::collections::HashSet::new(),
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
        if local.iter().any(|p| matches!(p, Protocol::WebRTCDirect)) {
            if self.webrtc.len() >= self.caps.max_pending_webrtc as usize {
                return Err(Refused::PendingWebrtc(self.caps.max_pending_webrtc));
            }
            self.webrtc.insert(id);
        }
        let Some(key) = key_of(remote) else {
            return Ok(());
        };
        let count = self.counts.entry(key).or_default();
        if count.pending >= self.caps.max_pending {
            let max = self.caps.max_pending;
            self.tidy(key);
            self.webrtc.remove(&id);
            return Err(Refused::Pending(max));
        }
        count.pending += 1;
        self.pending.insert(id, key);
        Ok(())
    }

    /// Connection `id` from `remote` finished its handshakes: whether it may be
    /// established.
    pub fn check_established(&self, remote: &Multiaddr) -> Result<(), Refused> {
        let Some(key) = key_of(remote) else {
            return Ok(());
        };
        let established = self.counts.get(&key).map_or(0, |c| c.established);
        if established >= self.caps.max_established {
            return Err(Refused::Established(self.caps.max_established));
        }
        Ok(())
    }

    /// Connection `id` was established; `inbound_from` is its remote address when a
    /// listener accepted it.
    pub fn established(&mut self, id: ConnectionId, inbound_from: Option<&Multiaddr>) {
        self.end_pending(id);
        if let Some(key) = inbound_from.and_then(key_of) {
            self.counts.entry(key).or_default().established += 1;
            self.established.insert(id, key);
        }
    }

    /// A pending connection `id` failed or was refused.
    pub fn failed(&mut self, id: ConnectionId) {
        self.end_pending(id);
    }

    /// Connection `id` closed.
    pub fn closed(&mut self, id: ConnectionId) {
        if let Some(key) = self.established.remove(&id) {
            if let Some(c) = self.counts.get_mut(&key) {
                c.established = c.established.saturating_sub(1);
            }
            self.tidy(key);
        }
    }

    /// Networks with a connection counted (for tests and metrics).
    pub fn networks(&self) -> usize {
        self.counts.len()
    }

    fn end_pending(&mut self, id: ConnectionId) {
        self.webrtc.remove(&id);
        if let Some(key) = self.pending.remove(&id) {
            if let Some(c) = self.counts.get_mut(&key) {
                c.pending = c.pending.saturating_sub(1);
            }
            self.tidy(key);
        }
    }

    fn tidy(&mut self, key: IpKey) {
        if self
            .counts
            .get(&key)
            .is_some_and(|c| c.pending == 0 && c.established == 0)
        {
            self.counts.remove(&key);
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

    fn shares() -> IpShares {
        IpShares::new(IpCaps {
            max_pending: 2,
            max_established: 3,
            max_pending_webrtc: 4,
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
        s.established(id(2), Some(&a2));
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
            assert_eq!(s.check_established(&a), Ok(()));
            s.pending(id(n), &tcp(), &a).unwrap();
            s.established(id(n), Some(&a));
        }
        assert_eq!(s.check_established(&a), Err(Refused::Established(3)));
        // Outbound connections to that network do not count.
        s.established(id(10), None);
        s.closed(id(10));
        assert_eq!(s.check_established(&a), Err(Refused::Established(3)));
        s.closed(id(1));
        assert_eq!(s.check_established(&a), Ok(()));
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
    fn the_tables_empty_when_every_connection_is_gone() {
        let mut s = shares();
        let a = ma("/ip4/198.51.100.1/tcp/5000");
        let b = ma("/ip4/198.51.100.2/tcp/5000");
        s.pending(id(1), &tcp(), &a).unwrap();
        s.pending(id(2), &tcp(), &b).unwrap();
        let _ = s.pending(id(3), &tcp(), &a);
        let _ = s.pending(id(4), &tcp(), &a);
        s.established(id(1), Some(&a));
        s.failed(id(2));
        s.failed(id(4));
        s.closed(id(1));
        assert_eq!(s.networks(), 1, "3 is still pending");
        s.failed(id(3));
        assert_eq!(s.networks(), 0);
        assert!(s.pending.is_empty() && s.established.is_empty());
    }
}
