//! Retry pacing for a relay that fails: exponential back-off with jitter. Pure logic:
//! the caller passes `now` and the randomness.
//!
//! After the `n`-th failure in a row the next attempt waits
//! `min(base × 2^(n-1), max) × j`, with `j` uniform in `[0.5, 1.0)`: so a dead relay is
//! asked at 10 s, then about 20, 40, … up to 10 min apart (the defaults), and nodes
//! that lost the same relay at the same moment do not come back in step. A success
//! resets the count.

use std::time::{Duration, Instant};

use rand_core::RngCore;

/// The back-off of one relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Waits `base` after the first failure, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The un-jittered wait after `failures` failures in a row (zero for none).
    pub fn ceiling(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// One more failure at `now`: when to try again.
    pub fn failed(&mut self, now: Instant, rng: &mut impl RngCore) -> Instant {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling(self.failures);
        // j in [0.5, 1.0) from 32 random bits.
        let j = 0.5 + f64::from(rng.next_u32()) / (f64::from(u32::MAX) + 1.0) / 2.0;
        now + ceiling.mul_f64(j)
    }

    /// It worked: the next failure waits `base` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator (SplitMix64) for the tests.
    struct Seeded(u64);

    impl RngCore for Seeded {
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.next_u32() as u8;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    #[test]
    fn waits_grow_exponentially_within_their_jitter_and_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(600));
        let mut rng = Seeded(7);
        let mut waits = Vec::new();
        for n in 1..=10u32 {
            let wait = b.failed(t0, &mut rng) - t0;
            let ceiling = Duration::from_secs((10u64 << (n - 1)).min(600));
            assert_eq!(b.ceiling(n), ceiling);
            assert!(
                wait >= ceiling / 2 && wait < ceiling,
                "failure {n}: {wait:?} vs {ceiling:?}"
            );
            waits.push(wait);
        }
        assert_eq!(b.failures(), 10);
        // Growing on average: each ceiling doubles until the cap.
        assert!(waits[3] > waits[0] && waits[6] > waits[3]);
        // A success starts over.
        b.succeeded();
        let wait = b.failed(t0, &mut rng) - t0;
        assert!(wait >= Duration::from_secs(5) && wait < Duration::from_secs(10));
    }

    #[test]
    fn jitter_spreads_nodes_that_failed_together() {
        let t0 = Instant::now();
        let mut waits: Vec<Duration> = (0..32u64)
            .map(|seed| {
                let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(600));
                b.failed(t0, &mut Seeded(seed)) - t0
            })
            .collect();
        waits.sort();
        waits.dedup();
        assert!(waits.len() > 16, "{waits:?}");
        assert!(
            waits[waits.len() - 1] - waits[0] > Duration::from_secs(2),
            "{waits:?}"
        );
        // The same seed gives the same wait.
        let mut a = Backoff::new(Duration::from_secs(10), Duration::from_secs(600));
        let mut b = a.clone();
        assert_eq!(a.failed(t0, &mut Seeded(3)), b.failed(t0, &mut Seeded(3)));
        // Huge counts saturate at the cap.
        assert_eq!(a.ceiling(u32::MAX), Duration::from_secs(600));
    }
}
