//! Which addresses that peers claim to observe us at become AutoNAT candidates.
//!
//! identify hands every address a peer says it sees us at to the swarm as an external
//! address candidate, and libp2p-autonat's v2 client keeps every candidate it is given
//! for as long as the node runs (its table has no bound and no removal) and asks
//! servers to dial the best-scored untested ones. Left as it was, any peer could grow
//! that table without bound (a new claimed address per connection and per identify
//! round) and have servers dial addresses of its choosing on our behalf. So a
//! candidate goes through only when:
//!
//! - it is **plausible** as [`super::observed`] weighs an observation (a direct
//!   connection, a routable IP of the observer's scope, a transport we listen on);
//! - it is one AutoNAT already holds (a repeat only adds to its score), or it is new
//!   and both the observer's network and the node as a whole have budget for a new one
//!   ([`PER_GROUP`], [`OVERALL`]), or observers of two networks proposed it (it goes
//!   through within a budget of its own, [`CONFIRMED`]: a node whose address changed
//!   has it tested even while strangers spend the overall budget). An observer's
//!   network is its vote in [`super::observed`]: a wide one (IPv4 /16, IPv6 /32) for an
//!   Internet observer, its IPv4 address or IPv6 /56 on a LAN or loopback (counted per
//!   IPv4 address, eight addresses spent the overall budget for good);
//! - fewer than [`MAX_CANDIDATES`] have gone through in all. Beyond that no new
//!   candidate goes through (AutoNAT's table cannot be trimmed from outside): a bound
//!   of a few hundred KiB that an attacker needs many addresses and days to reach, and
//!   whose cost is that AutoNAT stops testing new addresses.
//!
//! Pure logic: `now` is passed in.

use std::collections::{HashMap, HashSet};

use libp2p::Multiaddr;
use mesh_core::{RateLimit, RateLimiter, Timestamp, take_all};

use super::observed::{Vote, plausible, vote_of};

/// New candidates one observer group may bring: 4 at once (one per transport), then 2
/// an hour.
pub const PER_GROUP: RateLimit = RateLimit {
    burst: 4,
    per_second: 2.0 / 3600.0,
};
/// New candidates from all observers together: 32 at once, then 16 an hour.
pub const OVERALL: RateLimit = RateLimit {
    burst: 32,
    per_second: 16.0 / 3600.0,
};
/// Most distinct candidates ever handed to AutoNAT.
pub const MAX_CANDIDATES: usize = 1024;
/// Observer networks whose budget is followed at once.
const GROUPS_TRACKED: usize = 256;
/// Candidates refused for the overall budget whose proposers are remembered (the ones
/// with the fewest, then the oldest, forgotten first).
const PROPOSALS: usize = 256;
/// Networks whose proposals of one candidate let it past the overall budget.
const CONFIRMING: usize = 2;
/// Candidates let past the budgets so: 8 at once, then 4 an hour (two networks
/// proposing addresses of their choosing would otherwise reach [`MAX_CANDIDATES`] in
/// minutes).
pub const CONFIRMED: RateLimit = RateLimit {
    burst: 8,
    per_second: 4.0 / 3600.0,
};

/// The gate in front of AutoNAT's candidate table.
#[derive(Debug)]
pub struct CandidateGate {
    passed: HashSet<Multiaddr>,
    per_group: RateLimiter<Vote>,
    /// Candidates refused for the overall budget: the networks that proposed each, and
    /// when the first did (for the order in which they are forgotten).
    proposals: HashMap<Multiaddr, (Vec<Vote>, u64)>,
    proposed: u64,
    confirmed: RateLimiter<()>,
    overall: RateLimiter<()>,
    refused: usize,
    /// Whether the bound was reached (said once).
    full: bool,
}

impl Default for CandidateGate {
    fn default() -> Self {
        CandidateGate::new(PER_GROUP, OVERALL)
    }
}

impl CandidateGate {
    /// A gate with these budgets for new candidates.
    pub fn new(per_group: RateLimit, overall: RateLimit) -> Self {
        CandidateGate {
            passed: HashSet::new(),
            per_group: RateLimiter::new(per_group, GROUPS_TRACKED),
            proposals: HashMap::new(),
            proposed: 0,
            confirmed: RateLimiter::new(CONFIRMED, 1),
            overall: RateLimiter::new(overall, 1),
            refused: 0,
            full: false,
        }
    }

    /// Whether candidate `addr`, from the observation of a peer connected to us from
    /// `remote`, goes to AutoNAT, given our listen addresses `listen`.
    pub fn admit(
        &mut self,
        remote: &Multiaddr,
        addr: &Multiaddr,
        listen: &[Multiaddr],
        now: &Timestamp,
    ) -> bool {
        let admitted = plausible(remote, addr, listen)
            .is_some_and(|group| self.budget(addr, vote_of(remote, group), now));
        if !admitted {
            self.refused += 1;
            tracing::debug!(%remote, %addr, "external address candidate not passed to AutoNAT");
        }
        admitted
    }

    /// Whether plausible candidate `addr` from network `vote` goes on: a repeat always,
    /// a new one within the budgets (or proposed by [`CONFIRMING`] networks) and the
    /// bound.
    fn budget(&mut self, addr: &Multiaddr, vote: Vote, now: &Timestamp) -> bool {
        if self.passed.contains(addr) {
            return true;
        }
        if self.passed.len() >= MAX_CANDIDATES {
            if !self.full {
                self.full = true;
                tracing::warn!(
                    "{MAX_CANDIDATES} external address candidates handed to AutoNAT: no new \
                     address is tested for the rest of the run"
                );
            }
            return false;
        }
        let ms = now.instant().timestamp_millis();
        let within = take_all(
            ms,
            &mut [
                &mut self.per_group.charge(&vote),
                &mut self.overall.charge(&()),
            ],
        )
        .is_ok();
        if within || (self.proposed_enough(addr, vote) && self.confirmed.check_ms(&(), ms).is_ok())
        {
            self.proposals.remove(addr);
            self.passed.insert(addr.clone());
            return true;
        }
        false
    }

    /// Records that `vote` proposed `addr` (refused for the budgets); whether networks
    /// enough have.
    fn proposed_enough(&mut self, addr: &Multiaddr, vote: Vote) -> bool {
        if !self.proposals.contains_key(addr) && self.proposals.len() >= PROPOSALS {
            let forget = self
                .proposals
                .iter()
                .min_by_key(|(_, (votes, first))| (votes.len(), *first))
                .map(|(a, _)| a.clone());
            if let Some(a) = forget {
                self.proposals.remove(&a);
            }
        }
        self.proposed += 1;
        let first = self.proposed;
        let (votes, _) = self
            .proposals
            .entry(addr.clone())
            .or_insert_with(|| (Vec::new(), first));
        // Enough votes are kept, no more (while the budget of its own is spent, further
        // proposers of one address would otherwise each add one).
        if votes.len() < CONFIRMING && !votes.contains(&vote) {
            votes.push(vote);
        }
        votes.len() >= CONFIRMING
    }

    /// Distinct candidates passed so far.
    pub fn passed(&self) -> usize {
        self.passed.len()
    }

    /// Candidates refused so far.
    pub fn refused(&self) -> usize {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::parse("2026-12-05T00:00:00Z")
            .unwrap()
            .plus_secs(secs)
    }

    fn listen() -> Vec<Multiaddr> {
        vec![ma("/ip4/0.0.0.0/tcp/4001")]
    }

    /// A distinct claimed address for each `i` below 250.
    fn claim(i: u32) -> Multiaddr {
        ma(&format!("/ip4/198.51.100.{}/tcp/4001", i % 250 + 1))
    }

    #[test]
    fn one_observer_brings_a_few_new_candidates_then_only_repeats() {
        let mut g = CandidateGate::default();
        let observer = ma("/ip4/203.0.113.7/tcp/50000");
        let admitted = (0..20)
            .filter(|i| g.admit(&observer, &claim(*i), &listen(), &t(0)))
            .count();
        assert_eq!(admitted, PER_GROUP.burst as usize);
        // A repeat of a candidate AutoNAT holds goes through, as it only adds to a score.
        assert!(g.admit(&observer, &claim(0), &listen(), &t(0)));
        // Another host of the same IPv4 address is the same group.
        let same_host = ma("/ip4/203.0.113.7/tcp/50001");
        assert!(!g.admit(&same_host, &claim(100), &listen(), &t(0)));
        // Half an hour later the group may bring one more.
        assert!(g.admit(&observer, &claim(101), &listen(), &t(1800)));
        assert_eq!((g.passed(), g.refused()), (5, 17));
    }

    #[test]
    fn implausible_claims_never_go_through() {
        let mut g = CandidateGate::default();
        let observer = ma("/ip4/203.0.113.7/tcp/50000");
        for (remote, addr) in [
            // A loopback address claimed by an Internet observer.
            (observer.clone(), ma("/ip4/127.0.0.1/tcp/4001")),
            // A transport we do not listen on.
            (observer.clone(), ma("/ip4/198.51.100.1/udp/4001/quic-v1")),
            // Over a relay circuit the observation describes the relay.
            (
                ma("/ip4/203.0.113.9/tcp/4001/p2p-circuit"),
                ma("/ip4/198.51.100.1/tcp/4001"),
            ),
        ] {
            assert!(
                !g.admit(&remote, &addr, &listen(), &t(0)),
                "{remote} {addr}"
            );
        }
        assert_eq!(g.passed(), 0);
    }

    #[test]
    fn many_observers_together_bring_at_most_the_overall_budget() {
        let mut g = CandidateGate::default();
        let admitted = (0..200u32)
            .filter(|i| {
                // 200 distinct /16s.
                let observer = ma(&format!("/ip4/120.{i}.7.1/tcp/50000"));
                g.admit(&observer, &claim(*i), &listen(), &t(0))
            })
            .count();
        assert_eq!(admitted, OVERALL.burst as usize);
    }

    #[test]
    fn the_table_stops_growing_at_its_bound() {
        let generous = RateLimit::per_minute(u32::MAX, u32::MAX);
        let mut g = CandidateGate::new(generous, generous);
        let observer = ma("/ip4/203.0.113.7/tcp/50000");
        for i in 0..(MAX_CANDIDATES as u32 + 10) {
            let addr = ma(&format!(
                "/ip4/198.51.{}.{}/tcp/4001",
                100 + i / 250,
                i % 250 + 1
            ));
            g.admit(&observer, &addr, &listen(), &t(0));
        }
        assert_eq!(g.passed(), MAX_CANDIDATES);
        assert_eq!(g.refused(), 10);
    }

    #[test]
    fn one_wide_network_is_one_budget_and_two_networks_pass_a_candidate_anyway() {
        let mut g = CandidateGate::default();
        // Many addresses of one /16 (and the /56s of one /48): one network's budget.
        let admitted = (0..50u32)
            .filter(|i| {
                let observer = ma(&format!("/ip4/203.0.{i}.7/tcp/50000"));
                g.admit(&observer, &claim(*i), &listen(), &t(0))
            })
            .count();
        assert_eq!(admitted, PER_GROUP.burst as usize);
        // Strangers of many networks spend the overall budget.
        for i in 0..OVERALL.burst {
            let observer = ma(&format!("/ip4/120.{i}.7.1/tcp/50000"));
            g.admit(&observer, &claim(100 + i), &listen(), &t(0));
        }
        let moved = ma("/ip4/192.0.2.99/tcp/4001");
        // The node's new address, seen by observers of two networks: it goes through.
        assert!(!g.admit(&ma("/ip4/121.1.1.1/tcp/1"), &moved, &listen(), &t(1)));
        assert!(g.admit(&ma("/ip4/122.2.2.2/tcp/1"), &moved, &listen(), &t(1)));
        // A lone network's candidate does not; nor, past their own budget, candidates two
        // networks propose.
        let lone = ma("/ip4/192.0.2.98/tcp/4001");
        assert!(!g.admit(&ma("/ip4/121.1.1.1/tcp/2"), &lone, &listen(), &t(1)));
        assert!(!g.admit(&ma("/ip4/121.1.9.9/tcp/2"), &lone, &listen(), &t(1)));
        let pushed = (0..20u32)
            .filter(|i| {
                let a = ma(&format!("/ip4/192.0.2.{}/tcp/4001", 10 + i));
                g.admit(&ma("/ip4/121.1.1.1/tcp/3"), &a, &listen(), &t(2));
                g.admit(&ma("/ip4/122.2.2.2/tcp/3"), &a, &listen(), &t(2))
            })
            .count();
        assert_eq!(pushed, CONFIRMED.burst as usize - 1);
    }
}
