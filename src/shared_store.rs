//! A store several tasks share by reference, each implementation deciding what it locks:
//! the seed directory reads and writes through it.

use std::sync::{Mutex, PoisonError};

use mesh_advert::{
    AdvertStore, InsertOutcome, NodeWithdrawal, Page, Source, StoreError, StoredAdvert,
};
use mesh_core::{NodeAdvertisement, NodeId, Timestamp};

use crate::advert_store::DurableStore;

/// What the directory needs of a store. [`DurableStore`] implements it without holding
/// any lock a reader needs during a commit; any [`AdvertStore`] behind a [`Mutex`] does
/// too, by locking for each call (fine for in-memory stores, which never wait on I/O).
pub trait ConcurrentStore: Send + Sync {
    /// Stores a verified advertisement that came from `source`. May block on I/O: call
    /// it off async workers.
    fn insert(
        &self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError>;
    /// Applies a verified withdrawal that came from `source` (the entry goes, a
    /// tombstone stays). May block on I/O, as `insert`.
    fn withdraw(
        &self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError>;
    /// The current, unexpired advertisement of `node`.
    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert>;
    /// Up to `max` advertisements changed after `cursor`.
    fn since(&self, cursor: u64, max: usize) -> Page;
}

impl<S: AdvertStore + Send> ConcurrentStore for Mutex<S> {
    fn insert(
        &self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert_from(advert, source, now)
    }

    fn withdraw(
        &self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError> {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .withdraw_from(withdrawal, source, now)
    }

    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert> {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node, now)
    }

    fn since(&self, cursor: u64, max: usize) -> Page {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .since(cursor, max)
    }
}

impl ConcurrentStore for DurableStore {
    fn insert(
        &self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        DurableStore::insert_from(self, advert, source, now)
    }

    fn withdraw(
        &self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError> {
        DurableStore::withdraw_from(self, withdrawal, source, now)
    }

    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert> {
        DurableStore::get(self, node, now)
    }

    fn since(&self, cursor: u64, max: usize) -> Page {
        DurableStore::since(self, cursor, max)
    }
}

#[cfg(test)]
#[path = "shared_store_tests.rs"]
mod tests;
