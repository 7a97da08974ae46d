//! How many candidate addresses the node dials as the responder of `connect` requests
//! (its QUIC hole punches toward the requester): pure, `now` passed in.
//!
//! A responder's punch dials addresses the requester named, for a requester the node
//! punches for (by default a session peer or a swarm member: a fresh key that sent one
//! presence is one), in frames any connected peer may hand over. Without a budget, one
//! connection made the node send QUIC Initials to 16 public addresses of its choosing
//! for every candidate frame, some 60 times the bytes it sent, to a victim outside the
//! mesh. Every address dialed now takes a token of three buckets:
//!
//! - its destination (an IPv4 address, an IPv6 /64): [`PER_TARGET`];
//! - the network of the peer that handed the frame over (its IPv4 address or IPv6 /64;
//!   for a relayed connection the relay's, as relay admission counts it; its peer id
//!   only when its connection has no IP at all): [`PER_DELIVERER`];
//! - the node's: [`TOTAL`].
//!
//! Destinations are single IPv4 addresses, not /24s: the NATs of many honest requesters
//! share /24s (a carrier-grade NAT pool, a data centre, the netns lab's 10.77.0.0/24).
//! What the budget costs honest use: one requester's address gets 8 punches' addresses,
//! then 8 a minute; all the requesters whose frames come through one signaling host
//! share 64, then 64 a minute (at one to three QUIC candidates a punch, some 20 to 60
//! punches a minute).
//!
//! An address is dialed only when all three have a token (a refusal takes none). Beyond
//! them the request is still answered (accept and our candidates), the requester still
//! dials us, and our own routes are not counted: only the responder's punches.

use std::time::Instant;

use libp2p::{Multiaddr, PeerId};
use mesh_advert::Source;
use mesh_core::{IpKey, RateLimit, RateLimiter, take_all};

use crate::node::ip_scope::ip_of;

/// Addresses dialed per destination (IPv4 address, IPv6 /64): 8 at once, then 8 a
/// minute.
pub(crate) const PER_TARGET: RateLimit = RateLimit {
    burst: 8,
    per_second: 8.0 / 60.0,
};

/// Addresses dialed for the frames one network handed over: 64 at once, then 64 a
/// minute (a signaling host delivering many requesters' frames included).
pub(crate) const PER_DELIVERER: RateLimit = RateLimit {
    burst: 64,
    per_second: 64.0 / 60.0,
};

/// Addresses dialed as the responder in all: 128 at once, then 240 a minute.
pub(crate) const TOTAL: RateLimit = RateLimit {
    burst: 128,
    per_second: 4.0,
};

/// Networks followed per bucket kind (the least recently used forgotten first).
const TRACKED: usize = 4096;

/// Who handed a frame over: the network its connection's packets come from (a relayed
/// connection's relay), or its peer id when they come from no IP.
fn deliverer(via: PeerId, via_remote: &[Multiaddr]) -> Source {
    via_remote
        .iter()
        .find_map(IpKey::of_multiaddr)
        .map_or(Source::Peer(via), Source::Network)
}

/// The three buckets.
#[derive(Debug)]
pub(crate) struct PunchBudget {
    /// The start of the buckets' clock: the first `now` the budget is given.
    start: Option<Instant>,
    targets: RateLimiter<IpKey>,
    deliverers: RateLimiter<Source>,
    total: RateLimiter<()>,
}

impl PunchBudget {
    /// A full budget.
    pub(crate) fn new() -> Self {
        PunchBudget {
            start: None,
            targets: RateLimiter::new(PER_TARGET, TRACKED),
            deliverers: RateLimiter::new(PER_DELIVERER, TRACKED),
            total: RateLimiter::new(TOTAL, 1),
        }
    }

    /// The addresses of `addrs` the budget lets the node dial at `now`, for a frame
    /// `via` handed over on connections from `via_remote`; each one dialed takes its
    /// tokens. Addresses without an IP are left out (the candidate scope has already
    /// refused them).
    pub(crate) fn admit(
        &mut self,
        addrs: Vec<Multiaddr>,
        via: PeerId,
        via_remote: &[Multiaddr],
        now: Instant,
    ) -> Vec<Multiaddr> {
        let start = *self.start.get_or_insert(now);
        let ms =
            i64::try_from(now.saturating_duration_since(start).as_millis()).unwrap_or(i64::MAX);
        let deliverer = deliverer(via, via_remote);
        addrs
            .into_iter()
            .filter(|addr| {
                let Some(target) = ip_of(addr).map(IpKey::of) else {
                    return false;
                };
                take_all(
                    ms,
                    &mut [
                        &mut self.targets.charge(&target),
                        &mut self.deliverers.charge(&deliverer),
                        &mut self.total.charge(&()),
                    ],
                )
                .is_ok()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn quic(ip: &str, port: u16) -> Multiaddr {
        format!("/ip4/{ip}/udp/{port}/quic-v1").parse().unwrap()
    }

    fn from(ip: &str) -> Vec<Multiaddr> {
        vec![format!("/ip4/{ip}/tcp/4001").parse().unwrap()]
    }

    #[test]
    fn one_destination_gets_its_share_then_a_trickle() {
        let t0 = Instant::now();
        let mut b = PunchBudget::new();
        let victim: Vec<Multiaddr> = (0..16).map(|i| quic("198.51.100.7", 1000 + i)).collect();
        let peer = PeerId::random();
        let first = b.admit(victim.clone(), peer, &from("203.0.113.1"), t0);
        assert_eq!(first.len(), PER_TARGET.burst as usize);
        // Another port of that address, from another deliverer: still that destination.
        let again = vec![quic("198.51.100.7", 9)];
        let other = b.admit(again, PeerId::random(), &from("203.0.113.2"), t0);
        assert!(other.is_empty());
        // Another address of its /24 (another NAT of the same pool) has its own.
        let neighbour = vec![quic("198.51.100.8", 9)];
        assert_eq!(b.admit(neighbour, peer, &from("203.0.113.2"), t0).len(), 1);
        // A minute on (and a second), eight more.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(b.admit(victim, peer, &from("203.0.113.1"), later).len(), 8);
    }

    #[test]
    fn one_deliverer_network_gets_its_share_whatever_its_peer_ids() {
        let t0 = Instant::now();
        let mut b = PunchBudget::new();
        let mut dialed = 0;
        for i in 0..100u16 {
            let target = quic(&format!("198.51.{}.1", i), 443);
            dialed += b
                .admit(vec![target], PeerId::random(), &from("203.0.113.1"), t0)
                .len();
        }
        assert_eq!(dialed, PER_DELIVERER.burst as usize);
        // A refusal took no token of the destination's: it is still whole.
        let refused_before = vec![quic("198.51.99.1", 443)];
        let fresh = b.admit(refused_before, PeerId::random(), &from("203.0.113.9"), t0);
        assert_eq!(fresh.len(), 1);
        // Peers that reach the node through one relay share the relay's share (a fresh
        // budget: the node's total is not the point here).
        let mut b = PunchBudget::new();
        let circuit = |p: PeerId| -> Vec<Multiaddr> {
            vec![
                format!(
                    "/ip4/192.0.2.5/tcp/4001/p2p/{}/p2p-circuit",
                    PeerId::random()
                )
                .parse()
                .unwrap(),
            ]
            .into_iter()
            .map(|a: Multiaddr| a.with(libp2p::multiaddr::Protocol::P2p(p)))
            .collect()
        };
        let mut relayed = 0;
        for i in 0..100u16 {
            let target = quic(&format!("198.18.{}.1", i), 443);
            let p = PeerId::random();
            relayed += b.admit(vec![target], p, &circuit(p), t0).len();
        }
        assert_eq!(relayed, PER_DELIVERER.burst as usize);
    }

    #[test]
    fn the_node_dials_at_most_its_total() {
        let t0 = Instant::now();
        let mut b = PunchBudget::new();
        let mut dialed = 0;
        for d in 0..16u8 {
            for i in 0..16u8 {
                let target = quic(&format!("198.{d}.{i}.1"), 443);
                let via = from(&format!("203.0.{d}.1"));
                dialed += b.admit(vec![target], PeerId::random(), &via, t0).len();
            }
        }
        assert_eq!(dialed, TOTAL.burst as usize);
        // Addresses without an IP are never dialed.
        let named: Multiaddr = "/dns4/example.com/udp/443/quic-v1".parse().unwrap();
        let later = t0 + Duration::from_secs(600);
        assert!(
            b.admit(vec![named], PeerId::random(), &[], later)
                .is_empty()
        );
    }
}
