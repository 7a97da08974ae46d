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
//! - its destination's network (an IPv4 /24, an IPv6 /64): [`PER_TARGET`];
//! - the network of the peer that handed the frame over (its IPv4 address or IPv6 /64,
//!   its peer id when its connection has no IP): [`PER_DELIVERER`];
//! - the node's: [`TOTAL`].
//!
//! An address is dialed only when all three have a token (a refusal takes none). Beyond
//! them the request is still answered (accept and our candidates), the requester still
//! dials us, and our own routes are not counted: only the responder's punches.

use std::net::IpAddr;
use std::time::Instant;

use libp2p::{Multiaddr, PeerId};
use mesh_advert::Source;
use mesh_core::{RateLimit, RateLimiter};

use crate::node::ip_scope::ip_of;

/// Addresses dialed per destination network: 8 at once, then 8 a minute.
pub(crate) const PER_TARGET: RateLimit = RateLimit {
    burst: 8,
    per_second: 8.0 / 60.0,
};

/// Addresses dialed for the frames one network handed over: 32 at once, then 32 a
/// minute (a signaling host delivering many requesters' frames included).
pub(crate) const PER_DELIVERER: RateLimit = RateLimit {
    burst: 32,
    per_second: 32.0 / 60.0,
};

/// Addresses dialed as the responder in all: 64 at once, then 120 a minute.
pub(crate) const TOTAL: RateLimit = RateLimit {
    burst: 64,
    per_second: 2.0,
};

/// Networks followed per bucket kind (the least recently used forgotten first).
const TRACKED: usize = 4096;

/// A destination network: an IPv4 /24 or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    V4([u8; 3]),
    V6(u64),
}

impl Target {
    fn of(ip: IpAddr) -> Target {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Target::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => Target::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// The three buckets.
#[derive(Debug)]
pub(crate) struct PunchBudget {
    start: Instant,
    targets: RateLimiter<Target>,
    deliverers: RateLimiter<Source>,
    total: RateLimiter<()>,
}

impl PunchBudget {
    /// A full budget, its clock starting at `start`.
    pub(crate) fn new(start: Instant) -> Self {
        PunchBudget {
            start,
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
        let ms = i64::try_from(now.saturating_duration_since(self.start).as_millis())
            .unwrap_or(i64::MAX);
        let deliverer = Source::of_peer(via, via_remote);
        addrs
            .into_iter()
            .filter(|addr| {
                let Some(target) = ip_of(addr).map(Target::of) else {
                    return false;
                };
                let room = self.targets.peek_ms(&target, ms).is_ok()
                    && self.deliverers.peek_ms(&deliverer, ms).is_ok()
                    && self.total.peek_ms(&(), ms).is_ok();
                if room {
                    // Each has a token (peeked at this very `ms`): the three are taken.
                    let _ = self.targets.check_ms(&target, ms);
                    let _ = self.deliverers.check_ms(&deliverer, ms);
                    let _ = self.total.check_ms(&(), ms);
                }
                room
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
    fn one_destination_network_gets_its_share_then_a_trickle() {
        let t0 = Instant::now();
        let mut b = PunchBudget::new(t0);
        let victim: Vec<Multiaddr> = (0..16).map(|i| quic("198.51.100.7", 1000 + i)).collect();
        let peer = PeerId::random();
        let first = b.admit(victim.clone(), peer, &from("203.0.113.1"), t0);
        assert_eq!(first.len(), PER_TARGET.burst as usize);
        // Another address of the same /24, from another deliverer: still that network.
        let other = b.admit(
            vec![quic("198.51.100.200", 9)],
            PeerId::random(),
            &from("203.0.113.2"),
            t0,
        );
        assert!(other.is_empty());
        // A minute on, eight more.
        let later = b.admit(
            victim,
            peer,
            &from("203.0.113.1"),
            t0 + Duration::from_secs(60),
        );
        assert_eq!(later.len(), 8);
    }

    #[test]
    fn one_deliverer_network_gets_its_share_whatever_its_peer_ids() {
        let t0 = Instant::now();
        let mut b = PunchBudget::new(t0);
        let mut dialed = 0;
        for i in 0..64u16 {
            let target = quic(&format!("198.51.{}.1", i), 443);
            dialed += b
                .admit(vec![target], PeerId::random(), &from("203.0.113.1"), t0)
                .len();
        }
        assert_eq!(dialed, PER_DELIVERER.burst as usize);
        // A refusal took no token of the target's: that network is still whole.
        let fresh = b.admit(
            vec![quic("198.51.63.1", 443)],
            PeerId::random(),
            &from("203.0.113.9"),
            t0,
        );
        assert_eq!(fresh.len(), 1);
    }

    #[test]
    fn the_node_dials_at_most_its_total() {
        let t0 = Instant::now();
        let mut b = PunchBudget::new(t0);
        let mut dialed = 0;
        for d in 0..16u8 {
            for i in 0..16u8 {
                let target = quic(&format!("198.{d}.{i}.1"), 443);
                dialed += b
                    .admit(
                        vec![target],
                        PeerId::random(),
                        &from(&format!("203.0.{d}.1")),
                        t0,
                    )
                    .len();
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
