//! The member-table check, as pure state: every member of a swarm compares its table
//! with a connected subscriber's, picked at random, once per [`Checks`] period (with a
//! quarter of it either way at random), for as long as it is in the swarm.
//!
//! The request carries the digest of our members (`TableRequest::unless`): a peer
//! whose table has the same members answers an empty page. Otherwise its whole table
//! comes, page after page (at most `max_members / PAGE_MAX + 2`; each request names
//! the digest, so the server sees a check, which its idle rule does not count as use),
//! and every presence in it that we lacked, or held older, goes into our table as if
//! it came by gossip.
//!
//! Why: a presence gossipsub lost stays lost until its member's next refresh, which is
//! minutes away in a large swarm (presences live up to 900 s). Gossipsub loses them when
//! a slow peer's queue is full (thousands of messages in a 200-member mass join on two
//! cores, BENCHMARKS, *Swarms*), and a table server may leave members out of the table
//! it hands a newcomer, by accident or on purpose; a check against a random subscriber
//! mends both within a period.
//!
//! A check is not started while the newcomer's own table fetch is in progress, and one
//! that gets no answer is given up after two periods (request-response's own timeout
//! is shorter, this is the bound).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use mesh_core::NodeId;
use mesh_signal::group::DiscoveryKey;
use mesh_signal::group::exchange::{MemberDigest, PAGE_MAX, TableRequest};

/// The default period between two checks of one swarm.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
enum State {
    /// The next check is due at the instant.
    Due(Instant),
    /// `peer` was asked at `since`, with our digest `have`; `pages` pages came so far.
    Asking {
        peer: PeerId,
        have: MemberDigest,
        pages: usize,
        since: Instant,
    },
}

/// The checks of the swarms we are in.
#[derive(Debug)]
pub(crate) struct Checks {
    every: Duration,
    by_key: HashMap<DiscoveryKey, State>,
}

impl Checks {
    pub(crate) fn new(every: Duration) -> Self {
        Checks {
            every,
            by_key: HashMap::new(),
        }
    }

    /// One period from `now`, moved by up to a quarter of it either way (`rnd` is a
    /// random number).
    fn next_at(&self, now: Instant, rnd: u32) -> Instant {
        let quarter = self.every / 4;
        let spread = quarter * 2;
        let offset = spread.mul_f64(f64::from(rnd) / f64::from(u32::MAX));
        now + (self.every - quarter) + offset
    }

    /// We joined `key`: its first check is a period away.
    pub(crate) fn joined(&mut self, key: DiscoveryKey, now: Instant, rnd: u32) {
        let at = self.next_at(now, rnd);
        self.by_key.insert(key, State::Due(at));
    }

    /// We left `key`.
    pub(crate) fn forget(&mut self, key: &DiscoveryKey) {
        self.by_key.remove(key);
    }

    /// The swarms whose check is due at `now` (an unanswered one after two periods).
    pub(crate) fn due(&self, now: Instant) -> Vec<DiscoveryKey> {
        self.by_key
            .iter()
            .filter(|(_, s)| match s {
                State::Due(at) => *at <= now,
                State::Asking { since, .. } => {
                    now.saturating_duration_since(*since) >= 2 * self.every
                }
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// `key`'s check asks `peer` now, with our digest `have`.
    pub(crate) fn asked(
        &mut self,
        key: DiscoveryKey,
        peer: PeerId,
        have: MemberDigest,
        now: Instant,
    ) {
        if let Some(s) = self.by_key.get_mut(&key) {
            *s = State::Asking {
                peer,
                have,
                pages: 0,
                since: now,
            };
        }
    }

    /// Whether `key`'s check waits for `peer`'s answer.
    pub(crate) fn asking(&self, key: &DiscoveryKey, peer: &PeerId) -> bool {
        matches!(self.by_key.get(key), Some(State::Asking { peer: p, .. }) if p == peer)
    }

    /// `key`'s check is over for this period (done, failed, or nobody to ask): the next
    /// is a period from `now`.
    pub(crate) fn rest(&mut self, key: DiscoveryKey, now: Instant, rnd: u32) {
        if self.by_key.contains_key(&key) {
            let at = self.next_at(now, rnd);
            self.by_key.insert(key, State::Due(at));
        }
    }

    /// A page of `key`'s table came from `peer`: the request for the next page, or
    /// `None` when the check is over (the next one scheduled).
    pub(crate) fn page(
        &mut self,
        key: DiscoveryKey,
        peer: PeerId,
        more: bool,
        last: Option<NodeId>,
        max_members: usize,
        (now, rnd): (Instant, u32),
    ) -> Option<TableRequest> {
        let Some(State::Asking {
            peer: p,
            pages,
            have,
            ..
        }) = self.by_key.get_mut(&key)
        else {
            return None;
        };
        if *p != peer {
            return None;
        }
        *pages += 1;
        // The members and as many `leave`s (a check's answer carries both).
        let max_pages = (2 * max_members).div_ceil(PAGE_MAX) + 2;
        match last {
            Some(after) if more && *pages < max_pages => Some(TableRequest {
                key,
                after: Some(after),
                have: Some(*have),
            }),
            _ => {
                self.rest(key, now, rnd);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::NodeKeypair;

    const EVERY: Duration = Duration::from_secs(30);
    const HAVE: MemberDigest = MemberDigest([7; 32]);

    #[test]
    fn a_check_is_due_a_period_after_the_join_give_or_take_a_quarter() {
        let t0 = Instant::now();
        let key = DiscoveryKey::from_name("c");
        for (rnd, at) in [(0, 22_500), (u32::MAX, 37_500), (u32::MAX / 2, 30_000)] {
            let mut c = Checks::new(EVERY);
            c.joined(key, t0, rnd);
            let at = Duration::from_millis(at);
            assert!(c.due(t0 + at - Duration::from_millis(10)).is_empty());
            assert_eq!(c.due(t0 + at + Duration::from_millis(10)), vec![key]);
        }
    }

    #[test]
    fn a_check_pages_through_a_table_then_rests_a_period() {
        let t0 = Instant::now();
        let key = DiscoveryKey::from_name("c");
        let (a, b) = (PeerId::random(), PeerId::random());
        let last = NodeKeypair::generate().node_id();
        let mut c = Checks::new(EVERY);
        c.joined(key, t0, 0);
        let t1 = t0 + EVERY;
        c.asked(key, a, HAVE, t1);
        assert!(c.asking(&key, &a) && !c.asking(&key, &b));
        assert!(c.due(t1).is_empty());
        // Another peer's page is not ours to take.
        assert_eq!(c.page(key, b, true, Some(last), 1024, (t1, 0)), None);
        assert_eq!(
            c.page(key, a, true, Some(last), 1024, (t1, 0)),
            Some(TableRequest {
                key,
                after: Some(last),
                have: Some(HAVE),
            }),
            "the next page, still naming our digest (a check's request to the server)"
        );
        // The last page ends the check: the next is a period on.
        assert_eq!(c.page(key, a, false, Some(last), 1024, (t1, 0)), None);
        assert!(!c.asking(&key, &a));
        assert!(c.due(t1 + EVERY / 2).is_empty());
        assert_eq!(c.due(t1 + EVERY), vec![key]);
    }

    #[test]
    fn a_server_that_always_says_more_is_left_after_the_cap() {
        let t0 = Instant::now();
        let key = DiscoveryKey::from_name("c");
        let a = PeerId::random();
        let last = NodeKeypair::generate().node_id();
        let mut c = Checks::new(EVERY);
        c.joined(key, t0, 0);
        c.asked(key, a, HAVE, t0);
        // max_members 256: 256 members and 256 leaves in 2 pages, + 2: the first
        // page and 3 more asked.
        let asked = (0..10)
            .take_while(|_| c.page(key, a, true, Some(last), 256, (t0, 0)).is_some())
            .count();
        assert_eq!(asked, 3);
        assert!(!c.asking(&key, &a));
    }

    #[test]
    fn an_unanswered_check_is_due_again_after_two_periods_and_a_left_swarm_never() {
        let t0 = Instant::now();
        let key = DiscoveryKey::from_name("c");
        let a = PeerId::random();
        let mut c = Checks::new(EVERY);
        c.joined(key, t0, 0);
        c.asked(key, a, HAVE, t0);
        assert!(c.due(t0 + EVERY).is_empty());
        assert_eq!(c.due(t0 + 2 * EVERY), vec![key]);
        c.forget(&key);
        assert!(c.due(t0 + 10 * EVERY).is_empty());
        // Resting a swarm we left does not bring it back.
        c.rest(key, t0, 0);
        assert!(c.due(t0 + 10 * EVERY).is_empty());
    }
}
