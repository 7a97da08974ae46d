//! The advertisement store shared by the advert behaviour, the node loop and the seed
//! directory: one durable store behind a mutex.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mesh_advert::{AdvertStore, InsertOutcome, NodeWithdrawal, Page, StoreError, StoredAdvert};
use mesh_core::{NodeAdvertisement, NodeId, Timestamp};

use crate::advert_store::DurableStore;
use crate::directory::SharedStore;

/// A cloneable handle to the node's durable advertisement store.
#[derive(Clone)]
pub struct SharedAdverts(Arc<Mutex<DurableStore>>);

impl SharedAdverts {
    /// Wraps an opened store.
    pub fn new(store: DurableStore) -> Self {
        SharedAdverts(Arc::new(Mutex::new(store)))
    }

    /// Locks the store (a poisoned lock is recovered: the store's own undo keeps it
    /// consistent after a panic in another holder).
    pub fn lock(&self) -> MutexGuard<'_, DurableStore> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
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
    fn insert(
        &mut self,
        advert: NodeAdvertisement,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.lock().insert(advert, now)
    }

    fn withdraw(&mut self, withdrawal: &NodeWithdrawal, now: &Timestamp) -> Result<(), StoreError> {
        self.lock().withdraw(withdrawal, now)
    }

    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert> {
        self.lock().get(node, now)
    }

    fn since(&self, cursor: u64, max: usize) -> Page {
        self.lock().since(cursor, max)
    }

    fn sweep(&mut self, now: &Timestamp) -> Result<usize, StoreError> {
        self.lock().sweep(now)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}
