//! A keyed token-bucket rate limiter: pure logic, `now` passed in.
//!
//! Each key (a publisher's node id, a client address, …) has a bucket of `burst` tokens
//! refilled at `per_second`. The number of tracked keys is bounded: when the table is
//! full, buckets that have refilled completely (indistinguishable from new ones) are
//! dropped first, then the least recently used.

use std::collections::HashMap;
use std::hash::Hash;

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
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

/// A bounded table of token buckets.
#[derive(Debug)]
pub struct RateLimiter<K> {
    limit: RateLimit,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter tracking at most `max_keys` keys.
    pub fn new(limit: RateLimit, max_keys: usize) -> Self {
        RateLimiter {
            limit,
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `key`. `Err(retry_after_secs)` when the bucket is empty.
    pub fn check(&mut self, key: &K, now: &Timestamp) -> Result<(), u64> {
        let now_ms = now.instant().timestamp_millis();
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.evict(now_ms);
        }
        let limit = self.limit;
        let bucket = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            last_ms: now_ms,
        });
        let elapsed = (now_ms - bucket.last_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(f64::from(limit.burst));
        bucket.last_ms = bucket.last_ms.max(now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else if limit.per_second > 0.0 {
            Err(((1.0 - bucket.tokens) / limit.per_second).ceil().max(1.0) as u64)
        } else {
            Err(u64::MAX)
        }
    }

    /// Number of keys tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn evict(&mut self, now_ms: i64) {
        let limit = self.limit;
        self.buckets.retain(|_, b| {
            let elapsed = (now_ms - b.last_ms).max(0) as f64 / 1000.0;
            b.tokens + elapsed * limit.per_second < f64::from(limit.burst)
        });
        if self.buckets.len() >= self.max_keys
            && let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last_ms)
                .map(|(k, _)| k.clone())
        {
            self.buckets.remove(&oldest);
        }
    }
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
}
