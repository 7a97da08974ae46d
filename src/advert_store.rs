//! The durable advertisement store: `mesh-advert`'s [`MemoryStore`] as the index, written
//! through to a redb database in the data dir (`adverts.redb`).
//!
//! Every change is checked by the in-memory rules first, then committed in one redb
//! transaction, and undone in memory if the commit fails, so memory and the committed
//! state of the file never disagree once a change has returned (what is durable may lag
//! by the unsynced commits below). redb commits are atomic and checksummed.
//!
//! **Durability.** A change is fsync'd before it returns, except through the
//! `*_unsynced_from` methods: those commit without an fsync, and
//! [`DurableStore::flush`] makes them durable with one fsync'd commit (redb does too when
//! the store is dropped). The node takes peers' changes (`/mesh/advert` publishes and
//! withdrawals, mesh-DHT PUTs) and what its lookups found that way, and flushes every
//! second off its loop: each was one fsync on the node loop before (3 ms and more on a
//! slow disk), so a few dozen networks publishing within their rates could stall the
//! node. The node's own advertisement and sequence number and the seed directory's PUTs
//! (answered from the blocking pool) are fsync'd at once.
//! A process killed (or a machine that loses power) loses at most the unsynced changes
//! of the last second and the batch being committed, never an earlier entry: the file
//! reopens at the last fsync'd commit. After a restart the index is
//! rebuilt from disk, and expired advertisements and lapsed tombstones are deleted from
//! the file; that is what dialing and reconnect read first.
//!
//! The store is shared by reference (`&self`): the index sits behind its own mutex,
//! held only while memory changes, never during a commit, so readers (the node loop's
//! lookups, the directory's GETs) do not wait for a writer's fsync. Writers take turns
//! in arrival order (a FIFO turnstile), each holding its turn from the memory change
//! through the commit (and the undo, if the commit fails): no other change can slip in
//! between, so an undo puts back exactly what was there. A reader may see a change
//! whose commit is still in flight; if that commit fails, the change is taken back.
//!
//! Sweeps ([`DurableStore::sweep`], and the ones a change does when it would pass a
//! cap) delete the same rows from the file in the same way.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use mesh_advert::{
    AdvertStore, InsertOutcome, MemoryStore, NodeWithdrawal, Page, Source, StoreError, StoreLimits,
    StoredAdvert, Swept,
};
use mesh_core::artifact::Artifact;
use mesh_core::{NodeAdvertisement, NodeId, Timestamp};
use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata, TableDefinition};

/// node id -> revision (8 bytes BE) || expires-at unix seconds (8 bytes BE) || CBOR.
const ADVERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("adverts");
/// node id -> withdrawal sequence (8 bytes BE) || tombstone end unix seconds (8 bytes BE).
const TOMBSTONES: TableDefinition<&str, &[u8]> = TableDefinition::new("tombstones");
/// Small named counters (`own-sequence`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `META` key of a mark at or above every revision the index has handed out: a restart
/// resumes above it (from the rows alone the counter fell back below the revisions of
/// withdrawn and swept entries, and cursors handed out before skipped what came after).
/// A change whose revision passes the mark raises it by [`REVISION_STEP`] in its own
/// commit, fsync'd: unsynced commits that a crash loses never take the counter back
/// below a cursor already handed out (the directory's `since`), and the mark costs one
/// fsync per `REVISION_STEP` changes.
const REVISION: &str = "revision";
/// How far ahead of the counter [`REVISION`] is set.
const REVISION_STEP: u64 = 4096;

/// File name of the database inside the data dir.
pub const FILE_NAME: &str = "adverts.redb";
/// redb's page cache. The index in memory already holds every row, and the file is read
/// whole only at open, so the cache serves the B-tree pages a commit walks; redb's
/// default (1 GiB, filled up to the file's size) kept a second copy of the store in
/// memory: about 250 KiB per node at 200 in-process swarm members (BENCHMARKS,
/// *Swarms*, fourteenth session). Pages beyond it are read from the file (the OS page
/// cache).
pub const CACHE_BYTES: usize = 64 * 1024;

/// What reopening found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Advertisements loaded.
    pub loaded: usize,
    /// Expired ones dropped (and deleted from the file).
    pub expired: usize,
    /// Lapsed tombstones dropped (and deleted from the file).
    pub lapsed: usize,
    /// Entries that did not parse (left on disk untouched, not served).
    pub unreadable: usize,
}

/// How many rows the file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskCounts {
    /// Advertisement rows.
    pub adverts: u64,
    /// Tombstone rows.
    pub tombstones: u64,
}

/// A durable [`AdvertStore`], shareable by reference (see the module docs).
pub struct DurableStore {
    /// The open database; `None` between a close and the reopen after an I/O error.
    db: RwLock<Option<Arc<Database>>>,
    /// Opens the file (again, after an I/O error: see `advert_store_reopen.rs`).
    opener: reopen::Opener,
    /// An I/O error happened: redb refuses everything until the file is reopened, which
    /// the next change does first.
    broken: AtomicBool,
    mem: Mutex<MemoryStore>,
    turns: Turnstile,
    path: PathBuf,
    /// Some change since the last fsync'd commit (see [`DurableStore::flush`]).
    unflushed: AtomicBool,
    /// Commits fsync'd since the open.
    synced: AtomicU64,
    /// The [`REVISION`] mark on disk.
    revision_mark: AtomicU64,
    #[cfg(test)]
    seams: seams::Seams,
}

/// What an accepted insert replaced in memory, to put back if its commit fails.
struct Undo {
    node: NodeId,
    previous: Option<StoredAdvert>,
    tombstone: Option<(u64, Timestamp)>,
}

/// The rows one commit changes: deletions first, then insertions.
#[derive(Default)]
struct Writes {
    delete_adverts: Vec<String>,
    delete_tombstones: Vec<String>,
    put_adverts: Vec<(String, Vec<u8>)>,
    put_tombstones: Vec<(String, Vec<u8>)>,
    /// The index's revision counter after the change (persisted in `META`).
    revision: Option<u64>,
}

impl Writes {
    fn sweeping(swept: &Swept) -> Self {
        Writes {
            delete_adverts: swept
                .adverts
                .iter()
                .map(|s| s.node_id().to_string())
                .collect(),
            delete_tombstones: swept
                .tombstones
                .iter()
                .map(|(n, ..)| n.to_string())
                .collect(),
            ..Writes::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.delete_adverts.is_empty()
            && self.delete_tombstones.is_empty()
            && self.put_adverts.is_empty()
            && self.put_tombstones.is_empty()
    }
}

/// Locks `m`; a poisoned lock is recovered (the store's undo keeps memory consistent,
/// and a panicking writer's turn ends when it unwinds).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn unix(ts: &Timestamp) -> u64 {
    u64::try_from(ts.instant().timestamp()).unwrap_or(0)
}

fn encode_entry(revision: u64, expires: &Timestamp, wire: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + wire.len());
    v.extend_from_slice(&revision.to_be_bytes());
    v.extend_from_slice(&unix(expires).to_be_bytes());
    v.extend_from_slice(wire);
    v
}

fn encode_tombstone(sequence_no: u64, until: &Timestamp) -> Vec<u8> {
    let mut v = sequence_no.to_be_bytes().to_vec();
    v.extend_from_slice(&unix(until).to_be_bytes());
    v
}

fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_at_checked(8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(head);
    Some((u64::from_be_bytes(a), rest))
}

/// Opens (or creates) the database at `path`, every page's checksum checked: redb checks
/// them only after a crash otherwise, and a page damaged on disk (bit rot, a bad sector,
/// an editor) made a plain open panic, loop for good or load altered rows. Such a file is
/// refused with a storage error and left as it is.
fn open_file(path: &Path) -> Result<Database, StoreError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => storage(format!(
                "{} is damaged ({why}); the node does not start on it: move it aside to start \
                 with an empty store",
                path.display()
            )),
            e => storage(format!("{}: {e}", path.display())),
        })
}

impl DurableStore {
    /// Opens (or creates) `dir/adverts.redb`, rebuilds the index and deletes the rows
    /// that expired or lapsed while the store was closed.
    pub fn open(
        dir: &Path,
        limits: StoreLimits,
        now: &Timestamp,
    ) -> Result<(Self, LoadReport), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| storage(format!("{}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let at = path.clone();
        Self::open_with(path, Box::new(move || open_file(&at)), limits, now)
    }

    /// [`DurableStore::open`] of the database at `path` that `opener` opens (again after
    /// an I/O error).
    pub(crate) fn open_with(
        path: PathBuf,
        opener: reopen::Opener,
        limits: StoreLimits,
        now: &Timestamp,
    ) -> Result<(Self, LoadReport), StoreError> {
        let db = opener()?;
        let mut mem = MemoryStore::new(limits);
        let (report, stale) = load::load(&db, &mut mem, now)?;
        let revision = mem.revision();
        let store = DurableStore {
            db: RwLock::new(Some(Arc::new(db))),
            opener,
            broken: AtomicBool::new(false),
            mem: Mutex::new(mem),
            turns: Turnstile::default(),
            path,
            unflushed: AtomicBool::new(false),
            synced: AtomicU64::new(0),
            revision_mark: AtomicU64::new(revision),
            #[cfg(test)]
            seams: seams::Seams::default(),
        };
        if !stale.is_empty() {
            store.commit(&stale, true)?;
        }
        Ok((store, report))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The in-memory index (locked: hold it briefly).
    pub fn index(&self) -> MutexGuard<'_, MemoryStore> {
        lock(&self.mem)
    }

    /// How many rows the file holds.
    pub fn disk_counts(&self) -> Result<DiskCounts, StoreError> {
        let db = self.db()?;
        let tx = db.begin_read().map_err(|e| self.failed(e))?;
        let count = |def| match tx.open_table(def) {
            Ok(t) => t.len().map_err(|e| self.failed(e)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(self.failed(e)),
        };
        Ok(DiskCounts {
            adverts: count(ADVERTS)?,
            tombstones: count(TOMBSTONES)?,
        })
    }

    /// Inserts many advertisements with one commit. Results are per advertisement; when
    /// the commit fails, every one accepted in this batch is undone and reported as a
    /// storage failure (and whatever was swept to make room is put back).
    pub fn insert_batch(
        &self,
        adverts: Vec<NodeAdvertisement>,
        now: &Timestamp,
    ) -> Vec<Result<InsertOutcome, StoreError>> {
        self.insert_batch_from(adverts, Source::Local, now)
    }

    /// [`DurableStore::insert_batch`] for advertisements that came from `source`
    /// (counted under its share; see `mesh_advert::shares`).
    pub fn insert_batch_from(
        &self,
        adverts: Vec<NodeAdvertisement>,
        source: Source,
        now: &Timestamp,
    ) -> Vec<Result<InsertOutcome, StoreError>> {
        self.insert_batch_with(adverts, source, now, true)
    }

    /// [`DurableStore::insert_from`] committed without an fsync: durable at the next
    /// [`DurableStore::flush`] (see the module docs). What the node does with a peer's.
    pub fn insert_unsynced_from(
        &self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.insert_batch_with(vec![advert], source, now, false)
            .pop()
            .unwrap_or_else(|| Err(StoreError::Storage("empty batch".into())))
    }

    fn insert_batch_with(
        &self,
        adverts: Vec<NodeAdvertisement>,
        source: Source,
        now: &Timestamp,
        durable: bool,
    ) -> Vec<Result<InsertOutcome, StoreError>> {
        // Encoding (up to 64 KiB each) happens before any lock is taken.
        let adverts: Vec<(NodeAdvertisement, Arc<[u8]>)> = adverts
            .into_iter()
            .map(|a| {
                let wire = a.to_cbor().into();
                (a, wire)
            })
            .collect();
        let _turn = self.turns.enter();
        let mut results = Vec::with_capacity(adverts.len());
        let mut accepted: Vec<Undo> = Vec::new();
        let mut swept = Swept::default();
        let writes = {
            let mut mem = self.index();
            for (advert, wire) in adverts {
                let node = advert.node_id();
                // What the insert replaces in memory: the entry and a withdrawal's tombstone.
                let previous = mem.entry(&node).cloned();
                let tombstone = mem.tombstone_of(&node);
                let (r, s) = mem.insert_sweeping(advert, wire, source, now);
                swept.extend(s);
                if r.is_ok() {
                    accepted.push(Undo {
                        node,
                        previous,
                        tombstone,
                    });
                }
                results.push(r);
            }
            let mut writes = Writes::sweeping(&swept);
            writes.revision = Some(mem.revision());
            for Undo { node, .. } in &accepted {
                let key = node.to_string();
                if let Some(e) = mem.entry(node) {
                    let value = encode_entry(e.revision, e.expires_at(), &e.wire);
                    writes.put_adverts.push((key.clone(), value));
                }
                writes.delete_tombstones.push(key);
            }
            writes
        };
        if writes.is_empty() {
            return results;
        }
        if let Err(e) = self.commit(&writes, durable) {
            tracing::error!(error = %e, "advertisement batch not persisted; undone");
            let mut mem = self.index();
            for undo in accepted.into_iter().rev() {
                mem.remove(&undo.node);
                if let Some(p) = undo.previous {
                    mem.restore(p);
                }
                if let Some((seq, until)) = undo.tombstone {
                    mem.restore_tombstone(undo.node, seq, until);
                }
            }
            mem.restore_swept(swept);
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(e.clone());
                }
            }
        }
        results
    }

    /// Stores one advertisement of this node's own choosing (one commit).
    pub fn insert(
        &self,
        advert: NodeAdvertisement,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.insert_from(advert, Source::Local, now)
    }

    /// Stores one advertisement that came from `source` (one commit).
    pub fn insert_from(
        &self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.insert_batch_from(vec![advert], source, now)
            .pop()
            .unwrap_or_else(|| Err(StoreError::Storage("empty batch".into())))
    }

    /// Applies a verified withdrawal of this node's own choosing (one commit).
    pub fn withdraw(&self, withdrawal: &NodeWithdrawal, now: &Timestamp) -> Result<(), StoreError> {
        self.withdraw_from(withdrawal, Source::Local, now)
    }

    /// Applies a verified withdrawal that came from `source` (one commit).
    pub fn withdraw_from(
        &self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError> {
        self.withdraw_with(withdrawal, source, now, true)
    }

    /// [`DurableStore::withdraw_from`] committed without an fsync, as
    /// [`DurableStore::insert_unsynced_from`].
    pub fn withdraw_unsynced_from(
        &self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError> {
        self.withdraw_with(withdrawal, source, now, false)
    }

    fn withdraw_with(
        &self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
        durable: bool,
    ) -> Result<(), StoreError> {
        let node = withdrawal.node_id();
        let key = node.to_string();
        let _turn = self.turns.enter();
        let (result, swept, previous, previous_tombstone, writes) = {
            let mut mem = self.index();
            let previous = mem.entry(&node).cloned();
            let previous_tombstone = mem.tombstone_of(&node);
            let (result, swept) = mem.withdraw_sweeping(withdrawal, source, now);
            let mut writes = Writes::sweeping(&swept);
            writes.revision = Some(mem.revision());
            if result.is_ok()
                && let Some((seq, until)) = mem.tombstone_of(&node)
            {
                writes.delete_adverts.push(key.clone());
                writes
                    .put_tombstones
                    .push((key, encode_tombstone(seq, &until)));
            }
            (result, swept, previous, previous_tombstone, writes)
        };
        if writes.is_empty() {
            return result;
        }
        if let Err(e) = self.commit(&writes, durable) {
            let mut mem = self.index();
            if result.is_ok() {
                mem.remove_tombstone(&node);
                if let Some(p) = previous {
                    mem.restore(p);
                }
                if let Some((seq, until)) = previous_tombstone {
                    mem.restore_tombstone(node, seq, until);
                }
            }
            mem.restore_swept(swept);
            return Err(e);
        }
        result
    }

    /// Drops expired advertisements and lapsed tombstones from memory and from the file
    /// (one commit; nothing is written when nothing expired). Returns how many went.
    pub fn sweep(&self, now: &Timestamp) -> Result<usize, StoreError> {
        let _turn = self.turns.enter();
        let swept = self.index().take_expired(now);
        if swept.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.commit(&Writes::sweeping(&swept), true) {
            self.index().restore_swept(swept);
            return Err(e);
        }
        Ok(swept.len())
    }

    /// The current, unexpired advertisement of `node`.
    pub fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert> {
        self.index().get(node, now)
    }

    /// What the store holds for `node` (advertisement or tombstone), by sequence number.
    pub fn held_sequence(&self, node: &NodeId) -> Option<mesh_advert::HeldSequence> {
        self.index().held_sequence(node)
    }

    /// Up to `max` advertisements changed after `cursor`.
    pub fn since(&self, cursor: u64, max: usize) -> Page {
        self.index().since(cursor, max)
    }

    /// Number of advertisements held in memory.
    pub fn len(&self) -> usize {
        self.index().len()
    }

    /// Whether the store holds no advertisement.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes every change so far durable: one fsync'd commit, if any change was
    /// committed without one since the last (see the module docs). Returns whether it
    /// wrote. The node calls it every second on the blocking pool; redb does it when the
    /// store is dropped.
    pub fn flush(&self) -> Result<bool, StoreError> {
        let _turn = self.turns.enter();
        if !self.unflushed.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.commit(&Writes::default(), true)?;
        Ok(true)
    }

    /// Whether some change was committed without an fsync since the last one
    /// ([`DurableStore::flush`] has something to do).
    pub fn unflushed(&self) -> bool {
        self.unflushed.load(Ordering::Acquire)
    }

    /// Commits fsync'd since the open (the metrics' and the tests' count).
    pub fn synced_commits(&self) -> u64 {
        self.synced.load(Ordering::Relaxed)
    }

    /// Commits `writes` in one transaction, fsync'd when `durable` (which makes every
    /// earlier commit durable too), otherwise kept for the next [`DurableStore::flush`].
    /// Called with a turn held and no memory lock.
    fn commit(&self, writes: &Writes, durable: bool) -> Result<(), StoreError> {
        #[cfg(test)]
        self.seams.before_commit()?;
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        self.write(writes, durable)
    }

    /// [`DurableStore::commit`] to the database as it is.
    fn write(&self, writes: &Writes, durable: bool) -> Result<(), StoreError> {
        let mark = writes
            .revision
            .filter(|r| *r > self.revision_mark.load(Ordering::Acquire))
            .map(|r| r.saturating_add(REVISION_STEP));
        let durable = durable || mark.is_some();
        let db = self.db()?;
        let mut tx = db.begin_write().map_err(|e| self.failed(e))?;
        if !durable {
            tx.set_durability(Durability::None)
                .map_err(|e| self.failed(e))?;
        }
        {
            let mut adverts = tx.open_table(ADVERTS).map_err(|e| self.failed(e))?;
            let mut tombs = tx.open_table(TOMBSTONES).map_err(|e| self.failed(e))?;
            for key in &writes.delete_adverts {
                adverts.remove(key.as_str()).map_err(|e| self.failed(e))?;
            }
            for key in &writes.delete_tombstones {
                tombs.remove(key.as_str()).map_err(|e| self.failed(e))?;
            }
            for (key, value) in &writes.put_adverts {
                adverts
                    .insert(key.as_str(), value.as_slice())
                    .map_err(|e| self.failed(e))?;
            }
            for (key, value) in &writes.put_tombstones {
                tombs
                    .insert(key.as_str(), value.as_slice())
                    .map_err(|e| self.failed(e))?;
            }
            if let Some(mark) = mark {
                let mut meta = tx.open_table(META).map_err(|e| self.failed(e))?;
                meta.insert(REVISION, mark).map_err(|e| self.failed(e))?;
            }
        }
        tx.commit().map_err(|e| self.failed(e))?;
        if let Some(mark) = mark {
            self.revision_mark.store(mark, Ordering::Release);
        }
        if durable {
            self.unflushed.store(false, Ordering::Release);
            self.synced.fetch_add(1, Ordering::Relaxed);
        } else {
            self.unflushed.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// The last own-advertisement sequence number persisted.
    pub fn own_sequence(&self) -> Result<Option<u64>, StoreError> {
        let db = self.db()?;
        let tx = db.begin_read().map_err(|e| self.failed(e))?;
        match tx.open_table(META) {
            Ok(t) => Ok(t
                .get("own-sequence")
                .map_err(|e| self.failed(e))?
                .map(|g| g.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Persists the own-advertisement sequence number.
    pub fn set_own_sequence(&self, seq: u64) -> Result<(), StoreError> {
        let _turn = self.turns.enter();
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let db = self.db()?;
        let tx = db.begin_write().map_err(|e| self.failed(e))?;
        {
            let mut t = tx.open_table(META).map_err(|e| self.failed(e))?;
            t.insert("own-sequence", seq).map_err(|e| self.failed(e))?;
        }
        tx.commit().map_err(|e| self.failed(e))
    }
}

impl AdvertStore for DurableStore {
    fn insert_from(
        &mut self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        DurableStore::insert_from(self, advert, source, now)
    }

    fn withdraw_from(
        &mut self,
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

    fn sweep(&mut self, now: &Timestamp) -> Result<usize, StoreError> {
        DurableStore::sweep(self, now)
    }

    fn len(&self) -> usize {
        DurableStore::len(self)
    }
}

/// Test seams: make commits fail, or run a hook (which may block) before each commit.
#[cfg(test)]
#[path = "advert_store_seams.rs"]
pub(crate) mod seams;

#[path = "advert_store_load.rs"]
mod load;
#[path = "advert_store_reopen.rs"]
mod reopen;
#[path = "advert_store_turns.rs"]
mod turns;
use turns::Turnstile;

#[cfg(test)]
#[path = "advert_store_tests.rs"]
mod tests;
