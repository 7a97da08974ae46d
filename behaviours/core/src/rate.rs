//! A keyed token-bucket rate limiter: pure logic, `now` passed in.
//!
//! Each key (a publisher's node id, a client address, …) has a bucket of `burst` tokens
//! refilled at `per_second`. The number of tracked keys is bounded: when the table is
//! full, the least recently used bucket is dropped (in constant time: the buckets are
//! kept in the order of their last use). Dropping a bucket that has refilled loses
//! nothing (it is indistinguishable from a new one); one that has not is the one left
//! alone the longest.
//!
//! The table used to look for refilled buckets among all of them before dropping the
//! least recently used: a scan of every key for each new key once full. Where the keys
//! are node ids (the advertisement store tracks up to 100,000, the signaling hosts
//! 65,536), fresh keys cost nothing to make, so a flood of them paid a scan of the whole
//! table per message.

use std::collections::hash_map::RandomState;
use std::hash::Hash;

use hashlink::LinkedHashMap;

use crate::time::Timestamp;

/// Rate-limit settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens a new key starts with, and the most it can save up.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl RateLimit {
    /// `burst` requests at once, then `per_minute` a minute.
    pub fn per_minute(burst: u32, per_minute: u32) -> Self {
        RateLimit {
            burst,
            per_second: f64::from(per_minute) / 60.0,
        }
    }

    /// Seconds until a bucket holding `tokens` (fewer than one) has one.
    fn retry_after(&self, tokens: f64) -> u64 {
        if self.per_second > 0.0 {
            ((1.0 - tokens) / self.per_second).ceil().max(1.0) as u64
        } else {
            u64::MAX
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

impl Bucket {
    /// The tokens it holds at `now_ms`.
    fn refilled(&self, limit: &RateLimit, now_ms: i64) -> f64 {
        let elapsed = (now_ms - self.last_ms).max(0) as f64 / 1000.0;
        (self.tokens + elapsed * limit.per_second).min(f64::from(limit.burst))
    }
}

/// A bounded table of token buckets.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    max_keys: usize,
    /// Least recently used first. Hashed with std's keyed SipHash (`RandomState`), not
    /// hashbrown's default: the keys are chosen by peers.
    buckets: LinkedHashMap<K, Bucket, RandomState>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter tracking at most `max_keys` keys.
    pub fn new(limit: RateLimit, max_keys: usize) -> Self {
        RateLimiter {
            limit,
            max_keys: max_keys.max(1),
            buckets: LinkedHashMap::with_hasher(RandomState::new()),
        }
    }

    /// Takes one token for `key`. `Err(retry_after_secs)` when the bucket is empty.
    pub fn check(&mut self, key: &K, now: &Timestamp) -> Result<(), u64> {
        self.check_ms(key, now.instant().timestamp_millis())
    }

    /// [`check`](Self::check) at `now_ms` milliseconds on any clock that only moves
    /// forward (a monotonic one, counted from a start of the caller's choosing).
    pub fn check_ms(&mut self, key: &K, now_ms: i64) -> Result<(), u64> {
        let limit = self.limit;
        if self.buckets.to_back(key).is_none() {
            while self.buckets.len() >= self.max_keys {
                self.buckets.pop_front();
            }
        }
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            last_ms: now_ms,
        });
        bucket.tokens = bucket.refilled(&limit, now_ms);
        bucket.last_ms = bucket.last_ms.max(now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(limit.retry_after(bucket.tokens))
        }
    }

    /// Whether [`check`](Self::check) would take a token for `key` at `now`, without
    /// taking it or tracking the key: for a request that must pass two limits, so that
    /// the second's refusal does not cost a token of the first.
    pub fn peek(&self, key: &K, now: &Timestamp) -> Result<(), u64> {
        self.peek_ms(key, now.instant().timestamp_millis())
    }

    /// [`peek`](Self::peek) at `now_ms` (see [`check_ms`](Self::check_ms)).
    pub fn peek_ms(&self, key: &K, now_ms: i64) -> Result<(), u64> {
        let tokens = match self.buckets.get(key) {
            Some(bucket) => bucket.refilled(&self.limit, now_ms),
            None => f64::from(self.limit.burst),
        };
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.limit.retry_after(tokens))
        }
    }

    /// Number of keys tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// One key of one limiter, to be charged with others by [`take_all`].
pub trait Charge {
    /// What [`RateLimiter::peek_ms`] says for this key.
    fn peek_ms(&self, now_ms: i64) -> Result<(), u64>;
    /// Takes this key's token ([`RateLimiter::check_ms`]).
    fn take_ms(&mut self, now_ms: i64) -> Result<(), u64>;
}

/// A limiter and the key a request is charged to in it ([`RateLimiter::charge`]).
#[derive(Debug)]
pub struct KeyCharge<'a, K> {
    limiter: &'a mut RateLimiter<K>,
    key: &'a K,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `key` in this limiter, for [`take_all`].
    pub fn charge<'a>(&'a mut self, key: &'a K) -> KeyCharge<'a, K> {
        KeyCharge { limiter: self, key }
    }
}

impl<K: Hash + Eq + Clone> Charge for KeyCharge<'_, K> {
    fn peek_ms(&self, now_ms: i64) -> Result<(), u64> {
        self.limiter.peek_ms(self.key, now_ms)
    }

    fn take_ms(&mut self, now_ms: i64) -> Result<(), u64> {
        self.limiter.check_ms(self.key, now_ms)
    }
}

/// Takes one token of each charge at `now_ms` if every one has a token, and none
/// otherwise: a request that must pass several limits (its peer's, its network's, the
/// node's) costs nothing in one when another refuses it, so a peer whose network's or
/// the node's budget others spent keeps its own for when those refill. `Err` carries the
/// longest wait among the refusing limits, in seconds.
pub fn take_all(now_ms: i64, charges: &mut [&mut dyn Charge]) -> Result<(), u64> {
    let wait = charges.iter().filter_map(|c| c.peek_ms(now_ms).err()).max();
    if let Some(wait) = wait {
        return Err(wait);
    }
    for charge in charges.iter_mut() {
        // Peeked at this very `now_ms`: the token is there.
        let taken = charge.take_ms(now_ms);
        debug_assert!(taken.is_ok(), "a token peeked was not there");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::parse("2026-01-01T00:00:00Z")
            .unwrap()
            .plus_secs(secs)
    }

    #[test]
    fn burst_then_refill() {
        let mut r = RateLimiter::new(RateLimit::per_minute(3, 60), 10);
        for _ in 0..3 {
            r.check(&"a", &at(0)).unwrap();
        }
        assert_eq!(r.check(&"a", &at(0)), Err(1));
        r.check(&"b", &at(0)).unwrap();
        r.check(&"a", &at(1)).unwrap();
        assert!(r.check(&"a", &at(1)).is_err());
        for _ in 0..3 {
            r.check(&"a", &at(100)).unwrap();
        }
    }

    #[test]
    fn table_is_bounded() {
        let mut r = RateLimiter::new(RateLimit::per_minute(1, 1), 100);
        for i in 0..10_000 {
            let _ = r.check(&i, &at(i64::from(i)));
        }
        assert!(r.tracked() <= 100);
    }

    #[test]
    fn peek_takes_nothing() {
        let mut r = RateLimiter::new(RateLimit::per_minute(2, 60), 10);
        assert_eq!(r.peek(&"a", &at(0)), Ok(()));
        assert_eq!(r.tracked(), 0);
        r.check(&"a", &at(0)).unwrap();
        for _ in 0..5 {
            assert_eq!(r.peek(&"a", &at(0)), Ok(()));
        }
        r.check(&"a", &at(0)).unwrap();
        assert_eq!(r.peek(&"a", &at(0)), Err(1));
        assert_eq!(r.check(&"a", &at(0)), Err(1));
        assert_eq!(r.peek(&"a", &at(1)), Ok(()));
    }

    #[test]
    fn a_full_table_drops_the_bucket_left_alone_longest() {
        let mut r = RateLimiter::new(RateLimit::per_minute(1, 1), 3);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            r.check(key, &at(i as i64)).unwrap();
        }
        // `a` used again (refused, but used): `b` is now the least recently used.
        assert!(r.check(&"a", &at(3)).is_err());
        r.check(&"d", &at(4)).unwrap();
        assert_eq!(r.tracked(), 3);
        assert!(r.check(&"a", &at(4)).is_err(), "a kept its empty bucket");
        assert!(r.check(&"c", &at(4)).is_err(), "c kept its empty bucket");
        // `b` was dropped for `d`: it comes back as new.
        r.check(&"b", &at(5)).unwrap();
        assert_eq!(r.tracked(), 3);
    }

    #[test]
    fn take_all_takes_every_token_or_none() {
        let mut peers = RateLimiter::new(RateLimit::per_minute(2, 60), 16);
        let mut overall = RateLimiter::new(RateLimit::per_minute(3, 6), 1);
        let ms = 0;
        // The node's budget is spent by others.
        for other in 0..3 {
            assert!(
                take_all(
                    ms,
                    &mut [&mut peers.charge(&(100 + other)), &mut overall.charge(&())]
                )
                .is_ok()
            );
        }
        // Peer 1 is refused by the node's limit, ten times: its own two tokens stay.
        for _ in 0..10 {
            assert_eq!(
                take_all(ms, &mut [&mut peers.charge(&1), &mut overall.charge(&())]),
                Err(10)
            );
        }
        assert!(peers.peek_ms(&1, ms).is_ok());
        // When the node's refills (10 s for one token), peer 1 gets its two.
        let later = 20_000;
        assert!(
            take_all(
                later,
                &mut [&mut peers.charge(&1), &mut overall.charge(&())]
            )
            .is_ok()
        );
        assert!(
            take_all(
                later,
                &mut [&mut peers.charge(&1), &mut overall.charge(&())]
            )
            .is_ok()
        );
        // Its third waits for its own bucket (1 s), though the node's has none either (10 s):
        // the longest wait is said.
        assert_eq!(
            take_all(
                later,
                &mut [&mut peers.charge(&1), &mut overall.charge(&())]
            ),
            Err(10)
        );
    }
}
