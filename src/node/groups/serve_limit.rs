//! How many member-table pages the node serves: per peer, and per network.
//!
//! A page is up to 256 KiB for a request of about 100 bytes. Counted per peer id alone,
//! every fresh key got a fresh burst, and one host holds up to 64 connections: 8 pages
//! to each made the node upload 128 MiB for a few kilobytes asked. Both bounds hold:
//! the peer's ([`PER_PEER`]), then its network's ([`PER_NETWORK`]: the IPv4 address or
//! IPv6 /64 its connections come from, as the stores count sources). Pure; `ts` passed
//! in.
//!
//! And the node's own ([`TOTAL`], [`CHECKS_TOTAL`]): networks are cheap to hold many of
//! (the /64s of one /56, a few IPv4 addresses with 64 connections each), and each page
//! answered waits in memory, twice, until its asker reads it or the request times out
//! (10 s): without a bound for the node, peers of a few hundred networks asking pages
//! they never read held gigabytes.
//!
//! A table check (a request with the asker's digest) is counted apart first
//! ([`CHECKS_PER_PEER`], [`CHECKS_PER_NETWORK`]): when the tables agree it is answered
//! with an empty page, about a hundred bytes, and takes no page from the budget; only a
//! check whose tables differ takes pages. A node in many swarms whose checks pick the
//! same peer (up to 64 swarms, one check each per 22.5–37.5 s) used to run out of that
//! peer's pages with tables that agreed, and its checks were refused.

use libp2p::PeerId;
use mesh_advert::Source;
use mesh_core::{RateLimit, RateLimiter, Timestamp, take_all};

/// Pages per peer: a burst of 8 (two full 1,024-member tables), then 30 a minute (at
/// most 2 MiB at once and 128 KiB a second to one peer).
pub(crate) const PER_PEER: RateLimit = RateLimit {
    burst: 8,
    per_second: 0.5,
};

/// Pages per network: a burst of 64, then 240 a minute (at most 16 MiB at once and
/// 1 MiB a second to the peers of one network together).
pub(crate) const PER_NETWORK: RateLimit = RateLimit {
    burst: 64,
    per_second: 4.0,
};

/// Pages of the node in all: a burst of 256 (64 MiB at most), then 16 a second.
pub(crate) const TOTAL: RateLimit = RateLimit {
    burst: 256,
    per_second: 16.0,
};

/// Table checks per peer: a burst of 64 (one for each of the most swarms a node is
/// in), then 3 a second (64 swarms checked every 22.5 s at the soonest are 2.8 a
/// second). What one costs the server: its member list (up to 1,024) hashed once.
pub(crate) const CHECKS_PER_PEER: RateLimit = RateLimit {
    burst: 64,
    per_second: 3.0,
};

/// Table checks per network: a burst of 256, then 12 a second.
pub(crate) const CHECKS_PER_NETWORK: RateLimit = RateLimit {
    burst: 256,
    per_second: 12.0,
};

/// Table checks of the node in all: a burst of 1,024, then 48 a second (a
/// thousand-member table hashed 48 times a second is a few milliseconds of CPU).
pub(crate) const CHECKS_TOTAL: RateLimit = RateLimit {
    burst: 1024,
    per_second: 48.0,
};

/// Peers and networks followed at once (the least recently seen forgotten first).
const TRACKED: usize = 4096;

/// A budget per peer, per network and of the node, all of which must allow.
#[derive(Debug)]
struct Budget {
    peers: RateLimiter<PeerId>,
    networks: RateLimiter<Source>,
    total: RateLimiter<()>,
}

impl Budget {
    fn new(per_peer: RateLimit, per_network: RateLimit, total: RateLimit) -> Self {
        Budget {
            peers: RateLimiter::new(per_peer, TRACKED),
            networks: RateLimiter::new(per_network, TRACKED),
            total: RateLimiter::new(total, 1),
        }
    }

    /// One from `peer` of `network` at `ts`, else the seconds to wait. One refused takes
    /// no token: a peer whose network's budget others have spent keeps its own for when
    /// the network's refills.
    fn take(&mut self, peer: PeerId, network: &Source, ts: &Timestamp) -> Result<(), u64> {
        take_all(
            ts.instant().timestamp_millis(),
            &mut [
                &mut self.peers.charge(&peer),
                &mut self.networks.charge(network),
                &mut self.total.charge(&()),
            ],
        )
    }
}

/// The pages' and the checks' budgets.
#[derive(Debug)]
pub(crate) struct ServeLimits {
    pages: Budget,
    checks: Budget,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            pages: Budget::new(PER_PEER, PER_NETWORK, TOTAL),
            checks: Budget::new(CHECKS_PER_PEER, CHECKS_PER_NETWORK, CHECKS_TOTAL),
        }
    }
}

impl ServeLimits {
    /// Whether one more page goes to `peer` of `network` at `ts`; else the seconds to
    /// wait.
    pub(crate) fn check(
        &mut self,
        peer: PeerId,
        network: &Source,
        ts: &Timestamp,
    ) -> Result<(), u64> {
        self.pages.take(peer, network, ts)
    }

    /// Whether one more table check from `peer` of `network` is answered at `ts` (its
    /// pages, if the tables differ, are [`ServeLimits::check`]ed as well); else the
    /// seconds to wait.
    pub(crate) fn check_request(
        &mut self,
        peer: PeerId,
        network: &Source,
        ts: &Timestamp,
    ) -> Result<(), u64> {
        self.checks.take(peer, network, ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_keys_of_one_network_share_its_budget() {
        let mut l = ServeLimits::default();
        let ts = Timestamp::now();
        let net = Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));
        let mut served = 0;
        for _ in 0..64 {
            let peer = PeerId::random();
            served += (0..8).filter(|_| l.check(peer, &net, &ts).is_ok()).count();
        }
        assert_eq!(served, PER_NETWORK.burst as usize);
        // Another network has its own.
        let other = Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::new(192, 0, 2, 8)));
        assert!(l.check(PeerId::random(), &other, &ts).is_ok());
        // One peer gets its own burst and no more.
        let peer = PeerId::random();
        let one = (0..20)
            .filter(|_| l.check(peer, &other, &ts).is_ok())
            .count();
        assert_eq!(one, PER_PEER.burst as usize);
    }

    /// Peers of a thousand networks (a few /64s each costs nothing) asking 8 pages
    /// each at once get the node's budget, not 8,000 pages; the checks likewise.
    #[test]
    fn many_networks_share_the_node_s_budget() {
        let mut l = ServeLimits::default();
        let ts = Timestamp::now();
        let (mut pages, mut checks) = (0, 0);
        for i in 0..1000u64 {
            let net = Source::Network(mesh_core::IpKey::V6Prefix(0x2001_0db8_0000_0000 + i));
            let peer = PeerId::random();
            pages += (0..8).filter(|_| l.check(peer, &net, &ts).is_ok()).count();
            checks += (0..8)
                .filter(|_| l.check_request(peer, &net, &ts).is_ok())
                .count();
        }
        assert_eq!(pages, TOTAL.burst as usize);
        assert_eq!(checks, CHECKS_TOTAL.burst as usize);
        // A second later, the node's rate.
        let later = ts.plus_secs(1);
        let net = Source::Network(mesh_core::IpKey::V6Prefix(0x2001_0db8_0000_ffff));
        let peer = PeerId::random();
        let more = (0..8)
            .filter(|_| l.check(peer, &net, &later).is_ok())
            .count();
        assert_eq!(more, 8, "one peer's burst fits in the node's second");
    }

    #[test]
    fn checks_have_a_budget_of_their_own() {
        let mut l = ServeLimits::default();
        let ts = Timestamp::now();
        let net = Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::new(192, 0, 2, 9)));
        let peer = PeerId::random();
        let checks = (0..100)
            .filter(|_| l.check_request(peer, &net, &ts).is_ok())
            .count();
        assert_eq!(checks, CHECKS_PER_PEER.burst as usize);
        // The pages are untouched.
        let pages = (0..20).filter(|_| l.check(peer, &net, &ts).is_ok()).count();
        assert_eq!(pages, PER_PEER.burst as usize);
        // A second later, 3 more checks.
        let later = ts.plus_secs(1);
        let more = (0..10)
            .filter(|_| l.check_request(peer, &net, &later).is_ok())
            .count();
        assert_eq!(more, 3);
    }

    #[test]
    fn a_peer_refused_by_its_network_keeps_its_own_budget() {
        let mut l = ServeLimits::default();
        let ts = Timestamp::now();
        let net = Source::Network(mesh_core::IpKey::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));
        for _ in 0..8 {
            let peer = PeerId::random();
            for _ in 0..8 {
                l.check(peer, &net, &ts).unwrap();
            }
        }
        let honest = PeerId::random();
        for _ in 0..8 {
            assert!(l.check(honest, &net, &ts).is_err());
        }
        // Two seconds on, the network has 8 pages again: all of them for `honest`.
        let later = ts.plus_secs(2);
        let served = (0..8)
            .filter(|_| l.check(honest, &net, &later).is_ok())
            .count();
        assert_eq!(served, 8);
    }
}
