//! AutoNAT verdicts on our own addresses, bounded. Pure: takes `now`.
//!
//! The addresses AutoNAT tests are candidates that other peers' observations suggest, so
//! the table is keyed by something peers choose: it holds at most
//! [`MAX_VERDICTS`] addresses. A new address in a full table takes the place of the
//! oldest *unreachable* verdict (those are what a stream of made-up candidates
//! produces), or of the oldest verdict when every one is reachable. A verdict on an
//! address already held replaces it in place.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::Multiaddr;

/// The most addresses with a verdict kept.
pub(crate) const MAX_VERDICTS: usize = 32;
/// Servers, each of its own network, that must agree on an address before it is a
/// verdict (libp2p-autonat as patched in `vendor/`: one hostile server's word no longer
/// confirms an address we are not at).
pub(crate) const CONFIRMATIONS: usize = 2;
/// How long a confirmed address stays confirmed before AutoNAT tests it again (and
/// drops it as an external address if servers now find it unreachable).
pub(crate) const RETEST_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Reachable or not, per tested address, with when it was decided.
#[derive(Debug, Default)]
pub(crate) struct NatVerdicts {
    by_addr: HashMap<Multiaddr, (bool, Instant)>,
}

impl NatVerdicts {
    /// Records AutoNAT's verdict on `addr`.
    pub(crate) fn insert(&mut self, addr: Multiaddr, reachable: bool, now: Instant) {
        if !self.by_addr.contains_key(&addr) && self.by_addr.len() >= MAX_VERDICTS {
            let victim = self
                .by_addr
                .iter()
                .min_by_key(|(a, (ok, at))| (*ok, *at, a.to_vec()))
                .map(|(a, _)| a.clone());
            if let Some(v) = victim {
                self.by_addr.remove(&v);
            }
        }
        self.by_addr.insert(addr, (reachable, now));
    }

    /// Every verdict held: the address and whether it was reachable.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Multiaddr, bool)> {
        self.by_addr.iter().map(|(a, (ok, _))| (a, *ok))
    }

    /// How many addresses have a verdict.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(i: usize) -> Multiaddr {
        format!("/ip4/192.0.2.1/tcp/{}", 1000 + i).parse().unwrap()
    }

    #[test]
    fn a_flood_of_candidates_is_bounded_and_keeps_the_reachable_verdicts() {
        let t0 = Instant::now();
        let mut v = NatVerdicts::default();
        v.insert(addr(0), true, t0);
        // A peer makes us test a thousand addresses of its choosing: all unreachable.
        for i in 1..=1000 {
            v.insert(addr(i), false, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(v.len(), MAX_VERDICTS);
        assert!(
            v.iter().any(|(a, ok)| *a == addr(0) && ok),
            "reachable kept"
        );
        // The newest unreachable ones are held, the oldest went.
        assert!(v.iter().any(|(a, _)| *a == addr(1000)));
        assert!(!v.iter().any(|(a, _)| *a == addr(1)));
        // A new verdict on a held address replaces it in place.
        v.insert(addr(1000), true, t0 + Duration::from_secs(5));
        assert_eq!(v.len(), MAX_VERDICTS);
        assert_eq!(v.iter().filter(|(_, ok)| *ok).count(), 2);
    }

    #[test]
    fn when_all_are_reachable_the_oldest_makes_room() {
        let t0 = Instant::now();
        let mut v = NatVerdicts::default();
        for i in 0..=MAX_VERDICTS {
            v.insert(addr(i), true, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(v.len(), MAX_VERDICTS);
        assert!(!v.iter().any(|(a, _)| *a == addr(0)));
        assert!(v.iter().any(|(a, _)| *a == addr(MAX_VERDICTS)));
    }
}
