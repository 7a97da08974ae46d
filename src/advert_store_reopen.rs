//! The store after an I/O error. redb latches the first one: every later operation on
//! the database fails (`PreviousIo`, "close and re-open the database") until it is
//! closed and opened again, so a disk that was full for a moment (or a failing write)
//! left the node's store refusing every change until the process restarted. The store
//! now closes the file and opens it again before its next change; redb goes back to the
//! last durable commit (the unsynced ones since are lost, as in a crash), and the store
//! writes what memory holds over it in one fsync'd commit: every advertisement and
//! tombstone, and the deletion of the readable rows memory no longer holds (unreadable
//! rows stay, as at open). Until that succeeds every change is refused with a storage
//! error and undone in memory, as before; reads are served from memory throughout.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use mesh_advert::StoreError;
use mesh_core::NodeAdvertisement;
use mesh_core::artifact::Artifact;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    ADVERTS, DurableStore, TOMBSTONES, Writes, encode_entry, encode_tombstone, split_u64, storage,
};

/// Opens the store's database (at open, and again after an I/O error).
pub(crate) type Opener = Box<dyn Fn() -> Result<Database, StoreError> + Send + Sync>;

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

impl DurableStore {
    /// The open database (held by the caller for one transaction).
    pub(super) fn db(&self) -> Result<Arc<Database>, StoreError> {
        read(&self.db).clone().ok_or_else(|| {
            storage(format!(
                "{}: closed after an I/O error, opened again at the next change",
                self.path.display()
            ))
        })
    }

    /// A redb error as the store reports it; an I/O error (or redb's latch of an
    /// earlier one) has the file reopened before the next change.
    pub(super) fn failed(&self, e: impl Into<redb::Error>) -> StoreError {
        let e: redb::Error = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.broken.store(true, Ordering::Release);
        }
        storage(e)
    }

    /// Closes the database, opens it again and writes what memory holds over it (see
    /// the module's documentation). Called with a writer's turn held.
    pub(super) fn reopen(&self) -> Result<(), StoreError> {
        {
            let mut slot = write(&self.db);
            if let Some(old) = slot.take() {
                // A reader still holds it (a count of rows, the own sequence): the file
                // stays open, and the next change tries again.
                if let Err(old) = Arc::try_unwrap(old) {
                    *slot = Some(old);
                    return Err(storage("the store's file is in use: not reopened yet"));
                }
            }
            *slot = Some(Arc::new((self.opener)()?));
        }
        let writes = self.memory_over_disk()?;
        self.write(&writes, true)?;
        self.broken.store(false, Ordering::Release);
        tracing::warn!(
            path = %self.path.display(),
            adverts = writes.put_adverts.len(),
            tombstones = writes.put_tombstones.len(),
            "store file reopened after an I/O error and written again from memory"
        );
        Ok(())
    }

    /// The commit that makes the reopened file hold what memory holds.
    fn memory_over_disk(&self) -> Result<Writes, StoreError> {
        let db = self.db()?;
        let tx = db.begin_read().map_err(|e| self.failed(e))?;
        // The readable rows on disk (as the load reads them; unreadable ones stay).
        let rows = |def: TableDefinition<&str, &[u8]>, readable: fn(&[u8]) -> bool| {
            let table = match tx.open_table(def) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(self.failed(e)),
            };
            let mut keys = Vec::new();
            for item in table.iter().map_err(|e| self.failed(e))? {
                let (key, value) = item.map_err(|e| self.failed(e))?;
                if readable(value.value()) {
                    keys.push(key.value().to_owned());
                }
            }
            Ok(keys)
        };
        let on_disk_adverts = rows(ADVERTS, |v| {
            split_u64(v)
                .and_then(|(_, rest)| split_u64(rest))
                .is_some_and(|(_, wire)| NodeAdvertisement::from_cbor(wire).is_ok())
        })?;
        let on_disk_tombstones = rows(TOMBSTONES, |v| v.len() == 16)?;
        drop(tx);
        let mem = self.index();
        let mut w = Writes {
            revision: Some(mem.revision()),
            ..Writes::default()
        };
        for e in mem.entries() {
            let value = encode_entry(e.revision, e.expires_at(), &e.wire);
            w.put_adverts.push((e.node_id().to_string(), value));
        }
        for (node, seq, until) in mem.tombstones() {
            w.put_tombstones
                .push((node.to_string(), encode_tombstone(seq, &until)));
        }
        let held: HashSet<&str> = w.put_adverts.iter().map(|(k, _)| k.as_str()).collect();
        let gone: Vec<String> = on_disk_adverts
            .into_iter()
            .filter(|k| !held.contains(k.as_str()))
            .collect();
        let held: HashSet<&str> = w.put_tombstones.iter().map(|(k, _)| k.as_str()).collect();
        let gone_tombstones: Vec<String> = on_disk_tombstones
            .into_iter()
            .filter(|k| !held.contains(k.as_str()))
            .collect();
        w.delete_adverts = gone;
        w.delete_tombstones = gone_tombstones;
        Ok(w)
    }
}
