//! A clock tests can move: the real time plus an offset.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use mesh_core::Timestamp;

/// A clock as the behaviours' configurations take it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The real time plus an offset (seconds) that the test sets or advances; clones share
/// the offset, so one `TestClock` can drive several swarms' clocks at once.
#[derive(Debug, Clone, Default)]
pub struct TestClock {
    offset: Arc<AtomicI64>,
}

impl TestClock {
    /// A clock on the real time (offset 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the offset from the real time to `secs`.
    pub fn set_offset(&self, secs: i64) {
        self.offset.store(secs, Ordering::SeqCst);
    }

    /// Moves the clock `secs` forward (back when negative).
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }

    /// The offset from the real time, seconds.
    pub fn offset(&self) -> i64 {
        self.offset.load(Ordering::SeqCst)
    }

    /// What the clock reads now.
    pub fn now(&self) -> Timestamp {
        Timestamp::now().plus_secs(self.offset())
    }

    /// The clock as a behaviour's `clock` field takes it.
    pub fn clock(&self) -> Clock {
        let this = self.clone();
        Arc::new(move || this.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_offset() {
        let c = TestClock::new();
        let f = c.clone().clock();
        c.set_offset(31);
        c.advance(-1);
        assert_eq!(c.offset(), 30);
        let (real, moved) = (Timestamp::now(), f());
        assert!((moved.secs_since(&real) - 30).abs() <= 1);
    }
}
