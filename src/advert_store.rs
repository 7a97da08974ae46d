//! The durable advertisement store: `mesh-advert`'s [`MemoryStore`] as the index, written
//! through to a redb database in the data dir (`adverts.redb`).
//!
//! Every change is checked by the in-memory rules first, then committed in one redb
//! transaction (durable when `commit` returns), and undone in memory if the commit
//! fails, so memory and disk never disagree. redb commits are atomic and checksummed: a
//! process killed during a write loses at most the batch being committed, never an
//! earlier entry. After a restart the index is rebuilt from disk (expired entries are
//! dropped), and that is what dialing and reconnect read first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_advert::{
    AdvertStore, InsertOutcome, MemoryStore, NodeWithdrawal, Page, StoreError, StoreLimits,
    StoredAdvert,
};
use mesh_core::artifact::Artifact;
use mesh_core::{NodeAdvertisement, NodeId, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// node id -> revision (8 bytes BE) || expires-at unix seconds (8 bytes BE) || CBOR.
const ADVERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("adverts");
/// node id -> withdrawal sequence (8 bytes BE) || tombstone end unix seconds (8 bytes BE).
const TOMBSTONES: TableDefinition<&str, &[u8]> = TableDefinition::new("tombstones");
/// Small named counters (`own-sequence`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// File name of the database inside the data dir.
pub const FILE_NAME: &str = "adverts.redb";

/// What reopening found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Advertisements loaded.
    pub loaded: usize,
    /// Expired ones dropped.
    pub expired: usize,
    /// Entries that did not parse (left on disk untouched, not served).
    pub unreadable: usize,
}

/// A durable [`AdvertStore`].
pub struct DurableStore {
    db: Database,
    mem: MemoryStore,
    path: PathBuf,
    /// Test seam: make every commit fail.
    #[cfg(test)]
    fail_commits: bool,
}

/// What an accepted insert replaced in memory, to put back if its commit fails.
struct Undo {
    node: NodeId,
    previous: Option<StoredAdvert>,
    tombstone: Option<(u64, Timestamp)>,
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

fn split_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_at_checked(8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(head);
    Some((u64::from_be_bytes(a), rest))
}

impl DurableStore {
    /// Opens (or creates) `dir/adverts.redb` and rebuilds the index.
    pub fn open(
        dir: &Path,
        limits: StoreLimits,
        now: &Timestamp,
    ) -> Result<(Self, LoadReport), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| storage(format!("{}: {e}", dir.display())))?;
        let path = dir.join(FILE_NAME);
        let db =
            Database::create(&path).map_err(|e| storage(format!("{}: {e}", path.display())))?;
        let mut store = DurableStore {
            db,
            mem: MemoryStore::new(limits),
            path,
            #[cfg(test)]
            fail_commits: false,
        };
        let report = store.load(now)?;
        Ok((store, report))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The in-memory index.
    pub fn index(&self) -> &MemoryStore {
        &self.mem
    }

    fn load(&mut self, now: &Timestamp) -> Result<LoadReport, StoreError> {
        let mut report = LoadReport::default();
        let tx = self.db.begin_read().map_err(storage)?;
        match tx.open_table(ADVERTS) {
            Ok(table) => {
                for item in table.iter().map_err(storage)? {
                    let (key, value) = item.map_err(storage)?;
                    let parsed = split_u64(value.value())
                        .and_then(|(rev, rest)| split_u64(rest).map(|(_, wire)| (rev, wire)))
                        .and_then(|(rev, wire)| {
                            NodeAdvertisement::from_cbor(wire)
                                .ok()
                                .filter(|a| a.node_id().to_string() == key.value())
                                .map(|a| (rev, a, wire.to_vec()))
                        });
                    match parsed {
                        Some((_, advert, _)) if now > advert.expires_at() => report.expired += 1,
                        Some((revision, advert, wire)) => {
                            self.mem.restore(StoredAdvert {
                                advert: Arc::new(advert),
                                wire: wire.into(),
                                revision,
                            });
                            report.loaded += 1;
                        }
                        None => {
                            tracing::warn!(
                                node = key.value(),
                                "unreadable advertisement entry skipped"
                            );
                            report.unreadable += 1;
                        }
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(storage(e)),
        }
        match tx.open_table(TOMBSTONES) {
            Ok(table) => {
                for item in table.iter().map_err(storage)? {
                    let (key, value) = item.map_err(storage)?;
                    let Ok(node) = NodeId::parse(key.value()) else {
                        continue;
                    };
                    let Some((seq, rest)) = split_u64(value.value()) else {
                        continue;
                    };
                    let Some((until, _)) = split_u64(rest) else {
                        continue;
                    };
                    let until = chrono::DateTime::from_timestamp(
                        i64::try_from(until).unwrap_or(i64::MAX),
                        0,
                    )
                    .map(Timestamp::from_instant);
                    if let Some(until) = until.filter(|u| u >= now) {
                        self.mem.restore_tombstone(node, seq, until);
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(storage(e)),
        }
        Ok(report)
    }

    /// Inserts many advertisements with one commit. Results are per advertisement; when
    /// the commit fails, every one accepted in this batch is undone and reported as a
    /// storage failure.
    pub fn insert_batch(
        &mut self,
        adverts: Vec<NodeAdvertisement>,
        now: &Timestamp,
    ) -> Vec<Result<InsertOutcome, StoreError>> {
        let mut results = Vec::with_capacity(adverts.len());
        let mut accepted: Vec<Undo> = Vec::new();
        for advert in adverts {
            let node = advert.node_id();
            // What the insert replaces in memory: the entry and a withdrawal's tombstone.
            let previous = self.mem.entry(&node).cloned();
            let tombstone = self.mem.tombstone_of(&node);
            let wire: Arc<[u8]> = advert.to_cbor().into();
            let r = self.mem.insert_with_wire(advert, wire, now);
            if r.is_ok() {
                accepted.push(Undo {
                    node,
                    previous,
                    tombstone,
                });
            }
            results.push(r);
        }
        if accepted.is_empty() {
            return results;
        }
        if let Err(e) = self.persist(&accepted) {
            tracing::error!(error = %e, "advertisement batch not persisted; undone");
            for undo in accepted.into_iter().rev() {
                self.mem.remove(&undo.node);
                if let Some(p) = undo.previous {
                    self.mem.restore(p);
                }
                if let Some((seq, until)) = undo.tombstone {
                    self.mem.restore_tombstone(undo.node, seq, until);
                }
            }
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(e.clone());
                }
            }
        }
        results
    }

    fn persist(&self, accepted: &[Undo]) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.fail_commits {
            return Err(StoreError::Storage("injected commit failure".into()));
        }
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut adverts = tx.open_table(ADVERTS).map_err(storage)?;
            let mut tombs = tx.open_table(TOMBSTONES).map_err(storage)?;
            for Undo { node, .. } in accepted {
                let Some(e) = self.mem.entry(node) else {
                    continue;
                };
                let key = node.to_string();
                let value = encode_entry(e.revision, e.advert.expires_at(), &e.wire);
                adverts
                    .insert(key.as_str(), value.as_slice())
                    .map_err(storage)?;
                tombs.remove(key.as_str()).map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    /// The last own-advertisement sequence number persisted.
    pub fn own_sequence(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().map_err(storage)?;
        match tx.open_table(META) {
            Ok(t) => Ok(t.get("own-sequence").map_err(storage)?.map(|g| g.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(storage(e)),
        }
    }

    /// Persists the own-advertisement sequence number.
    pub fn set_own_sequence(&self, seq: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut t = tx.open_table(META).map_err(storage)?;
            t.insert("own-sequence", seq).map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }
}

impl AdvertStore for DurableStore {
    fn insert(
        &mut self,
        advert: NodeAdvertisement,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.insert_batch(vec![advert], now)
            .pop()
            .unwrap_or_else(|| Err(StoreError::Storage("empty batch".into())))
    }

    fn withdraw(&mut self, withdrawal: &NodeWithdrawal, now: &Timestamp) -> Result<(), StoreError> {
        let node = withdrawal.node_id();
        let previous = self.mem.entry(&node).cloned();
        let previous_tombstone = self.mem.tombstone_of(&node);
        self.mem.withdraw(withdrawal, now)?;
        let key = node.to_string();
        let result = (|| {
            #[cfg(test)]
            if self.fail_commits {
                return Err(StoreError::Storage("injected commit failure".into()));
            }
            let (seq, until) = self
                .mem
                .tombstone_of(&node)
                .ok_or_else(|| StoreError::Storage("tombstone missing".into()))?;
            let mut value = seq.to_be_bytes().to_vec();
            value.extend_from_slice(&unix(&until).to_be_bytes());
            let tx = self.db.begin_write().map_err(storage)?;
            {
                let mut adverts = tx.open_table(ADVERTS).map_err(storage)?;
                adverts.remove(key.as_str()).map_err(storage)?;
                let mut tombs = tx.open_table(TOMBSTONES).map_err(storage)?;
                tombs
                    .insert(key.as_str(), value.as_slice())
                    .map_err(storage)?;
            }
            tx.commit().map_err(storage)
        })();
        if let Err(e) = result {
            self.mem.remove_tombstone(&node);
            if let Some(p) = previous {
                self.mem.restore(p);
            }
            if let Some((seq, until)) = previous_tombstone {
                self.mem.restore_tombstone(node, seq, until);
            }
            return Err(e);
        }
        Ok(())
    }

    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert> {
        self.mem.get(node, now)
    }

    fn since(&self, cursor: u64, max: usize) -> Page {
        self.mem.since(cursor, max)
    }

    fn sweep(&mut self, now: &Timestamp) -> Result<usize, StoreError> {
        let expired = self.mem.expired(now);
        let lapsed = self.mem.lapsed_tombstones(now);
        if expired.is_empty() && lapsed.is_empty() {
            return Ok(0);
        }
        let tx = self.db.begin_write().map_err(storage)?;
        {
            let mut adverts = tx.open_table(ADVERTS).map_err(storage)?;
            for node in &expired {
                adverts.remove(node.to_string().as_str()).map_err(storage)?;
            }
            let mut tombs = tx.open_table(TOMBSTONES).map_err(storage)?;
            for node in &lapsed {
                tombs.remove(node.to_string().as_str()).map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)?;
        self.mem.sweep(now)
    }

    fn len(&self) -> usize {
        self.mem.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_advert::NodeWithdrawal;
    use mesh_advert::own::advert_for;
    use mesh_core::{ErrorCode, NodeKeypair, RateLimit};

    fn ad(key: &NodeKeypair, seq: u64, now: &Timestamp) -> NodeAdvertisement {
        let addr = "/ip4/127.0.0.1/tcp/4001"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        advert_for(key, &[addr], seq, now, 600).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_failed_commit_undoes_memory_completely() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let now = Timestamp::now();
        let limits = StoreLimits {
            per_publisher: RateLimit::per_minute(1000, 1000),
            ..StoreLimits::default()
        };
        let (mut s, _) =
            DurableStore::open(dir.path(), limits, &now).unwrap_or_else(|e| panic!("{e}"));
        let (k, fresh) = (NodeKeypair::generate(), NodeKeypair::generate());
        s.insert(ad(&k, 5, &now), &now)
            .unwrap_or_else(|e| panic!("{e}"));
        s.withdraw(
            &NodeWithdrawal::create(&k, 6, &now).unwrap_or_else(|e| panic!("{e}")),
            &now,
        )
        .unwrap_or_else(|e| panic!("{e}"));

        s.fail_commits = true;
        let results = s.insert_batch(vec![ad(&k, 7, &now), ad(&fresh, 1, &now)], &now);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(StoreError::Storage(_))))
        );
        s.fail_commits = false;

        // Memory is as before the batch: no entries, and the tombstone still refuses
        // replays of sequences at or below the withdrawal.
        assert!(s.get(&fresh.node_id(), &now).is_none());
        assert!(s.get(&k.node_id(), &now).is_none());
        let replay = s.insert(ad(&k, 6, &now), &now).unwrap_err();
        assert_eq!(replay.code(), Some(ErrorCode::AdvStaleSeq));
        s.insert(ad(&k, 7, &now), &now)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_failed_withdrawal_commit_keeps_the_earlier_tombstone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let now = Timestamp::now();
        let limits = StoreLimits {
            per_publisher: RateLimit::per_minute(1000, 1000),
            ..StoreLimits::default()
        };
        let (mut s, _) =
            DurableStore::open(dir.path(), limits, &now).unwrap_or_else(|e| panic!("{e}"));
        let k = NodeKeypair::generate();
        let w = |seq| NodeWithdrawal::create(&k, seq, &now).unwrap_or_else(|e| panic!("{e}"));
        s.withdraw(&w(6), &now).unwrap_or_else(|e| panic!("{e}"));
        s.fail_commits = true;
        assert!(matches!(
            s.withdraw(&w(8), &now),
            Err(StoreError::Storage(_))
        ));
        s.fail_commits = false;
        let replay = s.insert(ad(&k, 5, &now), &now).unwrap_err();
        assert_eq!(
            replay.code(),
            Some(ErrorCode::AdvStaleSeq),
            "the seq-6 tombstone still holds"
        );
    }
}
