//! Which relays to hold reservations on: pure logic, `now` passed in.
//!
//! Every configured relay is a candidate with a tier (from the configuration), an RTT
//! (from ping) and a load (from its admission grant). Score = `rtt_ms + load*100 +
//! tier*20` (load 0..=1; lower is better; an unmeasured RTT counts as
//! [`UNMEASURED_RTT_MS`]). The node keeps reservations on the best `keep` usable
//! relays. A held relay is only replaced when it fails or denies us (no flapping on
//! RTT noise); a failed relay rests for a back-off before it is asked again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// RTT assumed for a relay not yet pinged.
pub const UNMEASURED_RTT_MS: u64 = 1000;

/// Where a candidate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Not asked yet (or its rest is over).
    New,
    /// Admission asked at this instant.
    Asked(Instant),
    /// Admitted (a grant, or a relay without the admission protocol).
    Usable,
    /// Denied or failed: rest until then.
    Resting(Instant),
}

/// A relay candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its address (with `/p2p/<relay>`).
    pub addr: Multiaddr,
    /// Configured tier (0 is best).
    pub tier: u32,
    /// Last measured round trip.
    pub rtt: Option<Duration>,
    /// Load from its last grant, permille.
    pub load_permille: u64,
    /// Where it stands.
    pub standing: Standing,
}

impl Candidate {
    /// `rtt_ms + load*100 + tier*20`.
    pub fn score(&self) -> u64 {
        let rtt = self.rtt.map_or(UNMEASURED_RTT_MS, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        });
        rtt.saturating_add(self.load_permille / 10)
            .saturating_add(u64::from(self.tier) * 20)
    }
}

/// The candidates and the choice.
#[derive(Debug, Clone)]
pub struct RelaySelect {
    candidates: BTreeMap<PeerId, Candidate>,
    held: Vec<PeerId>,
    keep: usize,
    started: Instant,
    probe: Duration,
}

impl RelaySelect {
    /// Keeps `keep` reservations; waits up to `probe` after `now` for measurements
    /// before the first choice (unless every candidate answered earlier).
    pub fn new(keep: usize, probe: Duration, now: Instant) -> Self {
        RelaySelect {
            candidates: BTreeMap::new(),
            held: Vec::new(),
            keep,
            started: now,
            probe,
        }
    }

    /// Adds a candidate.
    pub fn add(&mut self, peer: PeerId, addr: Multiaddr, tier: u32) {
        self.candidates.entry(peer).or_insert(Candidate {
            addr,
            tier,
            rtt: None,
            load_permille: 0,
            standing: Standing::New,
        });
    }

    /// Whether `peer` is a candidate.
    pub fn is_candidate(&self, peer: &PeerId) -> bool {
        self.candidates.contains_key(peer)
    }

    /// A candidate.
    pub fn get(&self, peer: &PeerId) -> Option<&Candidate> {
        self.candidates.get(peer)
    }

    /// All candidates.
    pub fn candidates(&self) -> impl Iterator<Item = (&PeerId, &Candidate)> {
        self.candidates.iter()
    }

    /// Candidates to ask for admission now (new ones, and rested ones); marks them
    /// asked.
    pub fn to_ask(&mut self, now: Instant) -> Vec<(PeerId, Multiaddr)> {
        let mut out = Vec::new();
        for (p, c) in self.candidates.iter_mut() {
            let due = match c.standing {
                Standing::New => true,
                Standing::Resting(until) => until <= now,
                Standing::Asked(_) | Standing::Usable => false,
            };
            if due {
                c.standing = Standing::Asked(now);
                out.push((*p, c.addr.clone()));
            }
        }
        out
    }

    /// A ping answered.
    pub fn rtt(&mut self, peer: &PeerId, rtt: Duration) {
        if let Some(c) = self.candidates.get_mut(peer) {
            c.rtt = Some(rtt);
        }
    }

    /// Admitted, with the relay's load (0 for a relay without the protocol).
    pub fn admitted(&mut self, peer: &PeerId, load_permille: u64) {
        if let Some(c) = self.candidates.get_mut(peer) {
            c.load_permille = load_permille.min(1000);
            c.standing = Standing::Usable;
        }
    }

    /// Denied, unreachable or its reservation failed: rest for `backoff`, and lose
    /// its slot if it held one.
    pub fn failed(&mut self, peer: &PeerId, now: Instant, backoff: Duration) {
        if let Some(c) = self.candidates.get_mut(peer) {
            c.standing = Standing::Resting(now + backoff);
        }
        self.held.retain(|p| p != peer);
    }

    /// Asks `peer` again (its grant may have lapsed) before it is reserved on: back to
    /// new, out of the held slots.
    pub fn refresh(&mut self, peer: &PeerId) {
        if let Some(c) = self.candidates.get_mut(peer) {
            c.standing = Standing::New;
        }
        self.held.retain(|p| p != peer);
    }

    /// The relays held now.
    pub fn held(&self) -> &[PeerId] {
        &self.held
    }

    /// Fills free slots with the best usable relays; returns the newly chosen ones
    /// (to reserve on). Before the probe time is over, waits while some candidate has
    /// not answered yet.
    pub fn choose(&mut self, now: Instant) -> Vec<PeerId> {
        let waiting = self
            .candidates
            .values()
            .any(|c| matches!(c.standing, Standing::New | Standing::Asked(_)));
        if self.held.is_empty() && waiting && now < self.started + self.probe {
            return Vec::new();
        }
        let mut usable: Vec<(u64, PeerId)> = self
            .candidates
            .iter()
            .filter(|(p, c)| c.standing == Standing::Usable && !self.held.contains(p))
            .map(|(p, c)| (c.score(), *p))
            .collect();
        usable.sort();
        let free = self.keep.saturating_sub(self.held.len());
        let chosen: Vec<PeerId> = usable.into_iter().take(free).map(|(_, p)| p).collect();
        self.held.extend(chosen.iter().copied());
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn addr(p: &PeerId) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/1/p2p/{p}").parse().unwrap()
    }

    #[test]
    fn score_is_rtt_plus_load_plus_tier() {
        let c = Candidate {
            addr: addr(&peer()),
            tier: 2,
            rtt: Some(Duration::from_millis(30)),
            load_permille: 500,
            standing: Standing::Usable,
        };
        assert_eq!(c.score(), 30 + 50 + 40);
        let unmeasured = Candidate { rtt: None, ..c };
        assert_eq!(unmeasured.score(), UNMEASURED_RTT_MS + 90);
    }

    #[test]
    fn keeps_the_best_two_and_replaces_a_failed_one() {
        let t = Instant::now();
        let mut s = RelaySelect::new(2, Duration::from_secs(3), t);
        let (a, b, c) = (peer(), peer(), peer());
        s.add(a, addr(&a), 0);
        s.add(b, addr(&b), 1);
        s.add(c, addr(&c), 0);
        assert_eq!(s.to_ask(t).len(), 3);
        assert!(s.to_ask(t).is_empty());
        s.rtt(&a, Duration::from_millis(10));
        s.rtt(&b, Duration::from_millis(5));
        s.rtt(&c, Duration::from_millis(40));
        s.admitted(&a, 0);
        s.admitted(&b, 0);
        // c has not answered and the probe time is not over: wait.
        assert!(s.choose(t).is_empty());
        s.admitted(&c, 900);
        // a: 10, b: 5 + 20 = 25, c: 40 + 90 = 130.
        let chosen = s.choose(t);
        assert_eq!(chosen, vec![a, b]);
        // RTT noise does not move a held relay.
        s.rtt(&c, Duration::from_millis(1));
        assert!(s.choose(t).is_empty());
        // a fails: c takes its slot; a rests, then is asked again but not chosen.
        s.failed(&a, t, Duration::from_secs(10));
        assert_eq!(s.choose(t), vec![c]);
        assert_eq!(s.held(), &[b, c]);
        assert!(s.to_ask(t + Duration::from_secs(5)).is_empty());
        assert_eq!(s.to_ask(t + Duration::from_secs(10)), vec![(a, addr(&a))]);
        s.admitted(&a, 0);
        assert!(s.choose(t + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn the_probe_time_bounds_the_wait() {
        let t = Instant::now();
        let mut s = RelaySelect::new(2, Duration::from_secs(3), t);
        let (a, b) = (peer(), peer());
        s.add(a, addr(&a), 0);
        s.add(b, addr(&b), 0);
        s.to_ask(t);
        s.admitted(&a, 0);
        assert!(s.choose(t + Duration::from_secs(2)).is_empty());
        assert_eq!(s.choose(t + Duration::from_secs(3)), vec![a]);
        // A denied relay is not chosen.
        s.failed(&b, t, Duration::from_secs(60));
        assert!(s.choose(t + Duration::from_secs(4)).is_empty());
    }
}
