//! The advertisement store shared by the advert behaviour, the node loop and the seed
//! directory: one durable store, shared by reference (it locks its index only briefly
//! and never during a commit), and the timer that sweeps and flushes it. Through
//! [`AdvertStore`], what peers change is committed without an fsync (made durable by
//! the flush within a second, off the node loop); the node's own changes are fsync'd.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mesh_advert::{
    AdvertStore, InsertOutcome, NodeWithdrawal, Page, Source, StoreError, StoredAdvert,
};
use mesh_core::{NodeAdvertisement, NodeId, Timestamp};

use crate::advert_store::DurableStore;
use crate::directory::SharedStore;

/// A cloneable handle to the node's durable advertisement store.
#[derive(Clone)]
pub struct SharedAdverts(Arc<DurableStore>);

impl SharedAdverts {
    /// Wraps an opened store.
    pub fn new(store: DurableStore) -> Self {
        SharedAdverts(Arc::new(store))
    }

    /// The durable store.
    pub fn durable(&self) -> &DurableStore {
        &self.0
    }

    /// The same store as the directory's handle type.
    pub fn as_directory_store(&self) -> SharedStore {
        self.0.clone()
    }
}

impl std::fmt::Debug for SharedAdverts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAdverts").finish_non_exhaustive()
    }
}

impl AdvertStore for SharedAdverts {
    fn insert_from(
        &mut self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        match source {
            Source::Local => self.0.insert_from(advert, source, now),
            _ => self.0.insert_unsynced_from(advert, source, now),
        }
    }

    fn withdraw_from(
        &mut self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError> {
        match source {
            Source::Local => self.0.withdraw_from(withdrawal, source, now),
            _ => self.0.withdraw_unsynced_from(withdrawal, source, now),
        }
    }

    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert> {
        self.0.get(node, now)
    }

    fn since(&self, cursor: u64, max: usize) -> Page {
        self.0.since(cursor, max)
    }

    fn sweep(&mut self, now: &Timestamp) -> Result<usize, StoreError> {
        self.0.sweep(now)
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Sweeps the store every `every`, and flushes it ([`DurableStore::flush`]) every
/// second when a change waits for its fsync, on a blocking thread, off the node loop.
/// At most one sweep or flush runs at a time.
#[derive(Debug)]
pub(crate) struct Sweeper {
    every: Duration,
    next: Instant,
    running: Arc<AtomicBool>,
}

impl Sweeper {
    /// A sweeper whose first sweep is `every` after `at`.
    pub(crate) fn new(every: Duration, at: Instant) -> Self {
        Sweeper {
            every,
            next: at + every,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a sweep is due at `at` (and none is running); if so, the next one is
    /// scheduled `every` later.
    pub(crate) fn due(&mut self, at: Instant) -> bool {
        if at < self.next || self.running.load(Ordering::Acquire) {
            return false;
        }
        self.next = at + self.every;
        true
    }

    /// Whether nothing runs: a flush may start.
    pub(crate) fn idle(&self) -> bool {
        !self.running.load(Ordering::Acquire)
    }

    /// Sweeps `store` as of `now` (when `sweep`) and then flushes it, on tokio's
    /// blocking pool.
    pub(crate) fn start(&self, store: SharedAdverts, now: Timestamp, sweep: bool) {
        self.run(move || {
            if sweep {
                match store.durable().sweep(&now) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(swept = n, "advertisement store swept"),
                    Err(e) => tracing::warn!(error = %e, "advertisement store sweep failed"),
                }
            }
            if let Err(e) = store.durable().flush() {
                tracing::warn!(error = %e, "advertisement store flush failed");
            }
        });
    }

    /// Runs `work` on tokio's blocking pool as the running sweep: the next is due only
    /// once it has ended, however it ends (a panic in it, a page of the file damaged
    /// since the open, included: the flag was cleared only after a normal return, so
    /// one panic stopped the timed sweeps for good).
    fn run(&self, work: impl FnOnce() + Send + 'static) {
        /// Clears the flag when dropped, on a panic's unwinding too.
        struct Running(Arc<AtomicBool>);
        impl Drop for Running {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.running.store(true, Ordering::Release);
        let running = Running(self.running.clone());
        tokio::task::spawn_blocking(move || {
            let _running = running;
            work();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_is_due_every_period_and_never_twice_at_once() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        let mut s = Sweeper::new(every, t0);
        assert!(!s.due(t0));
        assert!(!s.due(t0 + Duration::from_secs(9)));
        assert!(s.due(t0 + every));
        assert!(!s.due(t0 + every), "scheduled again a period later");
        s.running.store(true, Ordering::Release);
        assert!(!s.due(t0 + every * 3), "one at a time");
        assert!(!s.idle());
        s.running.store(false, Ordering::Release);
        assert!(s.idle());
        assert!(s.due(t0 + every * 3));
    }

    /// Through the store the node's behaviours use, a peer's change is committed without
    /// an fsync (one each, on the node loop, before) and the node's own is fsync'd; the
    /// flush makes the peer's durable.
    #[test]
    fn peers_changes_are_unsynced_the_node_s_own_are_not() {
        use mesh_core::NodeKeypair;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let now = Timestamp::now();
        let (durable, _) = DurableStore::open(dir.path(), Default::default(), &now)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut store = SharedAdverts::new(durable);
        let peer = Source::of_ip("192.0.2.1".parse().unwrap_or_else(|_| unreachable!()));
        let advert = |k: &NodeKeypair| {
            let addr = "/ip4/127.0.0.1/tcp/4001"
                .parse()
                .unwrap_or_else(|_| unreachable!());
            mesh_advert::own::advert_for(k, &[addr], 1, &now, 600).unwrap_or_else(|e| panic!("{e}"))
        };
        // The first change raises the store's revision mark (fsync'd).
        AdvertStore::insert_from(&mut store, advert(&NodeKeypair::generate()), peer, &now)
            .unwrap_or_else(|e| panic!("{e}"));
        let base = store.durable().synced_commits();
        let k = NodeKeypair::generate();
        AdvertStore::insert_from(&mut store, advert(&k), peer, &now)
            .unwrap_or_else(|e| panic!("{e}"));
        let w = NodeWithdrawal::create(&k, 2, &now).unwrap_or_else(|e| panic!("{e}"));
        AdvertStore::withdraw_from(&mut store, &w, peer, &now).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.durable().synced_commits(), base);
        assert!(store.durable().unflushed());
        AdvertStore::insert_from(
            &mut store,
            advert(&NodeKeypair::generate()),
            Source::Local,
            &now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.durable().synced_commits(), base + 1);
    }

    #[tokio::test]
    async fn a_sweep_that_panics_does_not_stop_the_next() {
        let t0 = Instant::now();
        let every = Duration::from_secs(10);
        let mut s = Sweeper::new(every, t0);
        assert!(s.due(t0 + every));
        s.run(|| panic!("a damaged page"));
        let later = t0 + every * 2;
        let mut due = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if s.due(later) {
                due = true;
                break;
            }
        }
        assert!(due, "no sweep due after one panicked");
    }
}
