//! What the dials that feed a thin gossipsub mesh may reach: the addresses a member's
//! presence names (or its stored advertisement), and how often one member is dialed.
//!
//! Both come from whoever signed the presence, and anyone can sign presences under
//! fresh identities, so a dial here must not become a way to make members connect to
//! addresses of a stranger's choosing: to a service on their own host, to their LAN,
//! or, all members together, at a third party. Pure; `now` passed in.
//!
//! - An address is dialed only if it is one the node's transports dial
//!   ([`addrs::dialable`]), starts with an IP (not a DNS name, which could point
//!   anywhere) and is in the node's scope: public, loopback only when the node itself
//!   has no address beyond loopback (several nodes on one host, as in the tests), a
//!   private or link-local address only on a network the node has an address in. At
//!   most [`FEED_ADDRS`] of a member's addresses are dialed.
//! - One member is dialed at most once every [`FEED_REDIAL`] unless it was seen
//!   connected since (then it is forgotten and may be dialed again when it is not), so
//!   members that never answer are not picked again and again; the memory of dialed
//!   members is bounded ([`FEED_MEMORY`], the oldest forgotten first).
//! - Each address dialed takes a token of its destination ([`FEED_PER_TARGET`]: an
//!   IPv4 address, an IPv6 /64; loopback, in scope only for a node on loopback alone,
//!   is not counted): made-up members are many, one presence each, and a thousand of
//!   them naming one host had every member with a thin mesh dial it 24 addresses
//!   every 5 s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use mesh_core::{NodeId, RateLimit};

use crate::node::addrs;
use crate::node::destination_budget::DestinationBudget;

/// Most addresses of one member dialed at once.
pub(super) const FEED_ADDRS: usize = 4;
/// A member is dialed for a thin mesh at most this often.
pub(super) const FEED_REDIAL: Duration = Duration::from_secs(600);
/// Members remembered as dialed (and destinations counted).
pub(super) const FEED_MEMORY: usize = 4096;
/// Addresses dialed per destination (IPv4 address, IPv6 /64) for thin meshes: 8 at
/// once (two members' worth), then 8 a minute.
pub(super) const FEED_PER_TARGET: RateLimit = RateLimit {
    burst: 8,
    per_second: 8.0 / 60.0,
};

/// The addresses of `candidates` a feed dial may use, given the node's own listen and
/// external addresses `own`: at most [`FEED_ADDRS`], in order ([`addrs::in_node_scope`]).
pub(super) fn feed_addrs(candidates: &[Multiaddr], own: &[Multiaddr]) -> Vec<Multiaddr> {
    addrs::in_node_scope(candidates, own, FEED_ADDRS)
}

/// The members dialed for thin meshes lately, and the destinations' budget.
#[derive(Debug)]
pub(super) struct Fed {
    at: HashMap<NodeId, Instant>,
    /// Loopback destinations free.
    pub(super) targets: DestinationBudget,
}

impl Default for Fed {
    fn default() -> Self {
        Fed {
            at: HashMap::new(),
            targets: DestinationBudget::new(FEED_PER_TARGET, FEED_MEMORY).loopback_free(),
        }
    }
}

impl Fed {
    /// Whether `node` was dialed less than [`FEED_REDIAL`] before `now`.
    pub(super) fn recently(&self, node: &NodeId, now: Instant) -> bool {
        self.at
            .get(node)
            .is_some_and(|t| now.saturating_duration_since(*t) < FEED_REDIAL)
    }

    /// `node` is dialed at `now`. Beyond [`FEED_MEMORY`] members, those dialed longer
    /// than [`FEED_REDIAL`] ago are forgotten, then the oldest.
    pub(super) fn dialed(&mut self, node: NodeId, now: Instant) {
        self.at.insert(node, now);
        if self.at.len() <= FEED_MEMORY {
            return;
        }
        self.at
            .retain(|_, t| now.saturating_duration_since(*t) < FEED_REDIAL);
        while self.at.len() > FEED_MEMORY {
            let Some(oldest) = self.at.iter().min_by_key(|(_, t)| **t).map(|(n, _)| *n) else {
                break;
            };
            self.at.remove(&oldest);
        }
    }

    /// `node` was seen connected: it may be dialed again.
    pub(super) fn forget(&mut self, node: &NodeId) {
        self.at.remove(node);
    }

    /// Members remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_core::NodeKeypair;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn strs(v: &[Multiaddr]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_public_node_dials_public_addresses_only() {
        let own = [
            ma("/ip4/127.0.0.1/tcp/4001"),
            ma("/ip4/203.0.113.5/tcp/4001"),
        ];
        let named = [
            ma("/ip4/127.0.0.1/tcp/22"),
            ma("/ip4/10.0.0.1/tcp/80"),
            ma("/ip4/0.0.0.0/tcp/4001"),
            ma("/dns4/example.org/tcp/4001"),
            ma("/ip4/198.51.100.7/udp/4001/quic-v1"),
            ma("/ip4/198.51.100.7/udp/4001/webrtc-direct"),
        ];
        assert_eq!(
            strs(&feed_addrs(&named, &own)),
            ["/ip4/198.51.100.7/udp/4001/quic-v1"]
        );
    }

    #[test]
    fn private_addresses_only_on_a_network_of_the_node_and_loopback_only_on_loopback() {
        let lan = [ma("/ip4/192.168.1.20/tcp/4001")];
        let named = [
            ma("/ip4/192.168.1.30/tcp/4001"),
            ma("/ip4/192.168.7.30/tcp/4001"),
            ma("/ip4/127.0.0.1/tcp/4001"),
        ];
        assert_eq!(
            strs(&feed_addrs(&named, &lan)),
            ["/ip4/192.168.1.30/tcp/4001"]
        );
        let host_only = [ma("/ip4/127.0.0.1/tcp/4001")];
        assert_eq!(
            strs(&feed_addrs(&named, &host_only)),
            ["/ip4/127.0.0.1/tcp/4001"]
        );
    }

    #[test]
    fn at_most_a_few_addresses_of_one_member() {
        let named: Vec<Multiaddr> = (1..=16)
            .map(|i| ma(&format!("/ip4/198.51.100.{i}/tcp/4001")))
            .collect();
        assert_eq!(feed_addrs(&named, &[]).len(), FEED_ADDRS);
    }

    #[test]
    fn a_member_is_dialed_once_per_period_and_the_memory_is_bounded() {
        let mut fed = Fed::default();
        let t0 = Instant::now();
        let n = NodeKeypair::generate().node_id();
        fed.dialed(n, t0);
        assert!(fed.recently(&n, t0 + FEED_REDIAL - Duration::from_secs(1)));
        assert!(!fed.recently(&n, t0 + FEED_REDIAL));
        for i in 0..FEED_MEMORY as u64 + 10 {
            fed.dialed(
                NodeKeypair::generate().node_id(),
                t0 + Duration::from_millis(i + 1),
            );
        }
        assert_eq!(fed.len(), FEED_MEMORY);
        assert!(!fed.recently(&n, t0), "the oldest was forgotten first");
    }
}
