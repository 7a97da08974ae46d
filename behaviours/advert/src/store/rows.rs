//! Everything the store holds, for a durable backend that writes it all again (its file
//! lost commits: an I/O error, then a reopen at the last durable one).

use mesh_core::{NodeId, Timestamp};

use super::{MemoryStore, StoredAdvert};

impl MemoryStore {
    /// Every advertisement held, expired or not.
    pub fn entries(&self) -> impl Iterator<Item = &StoredAdvert> {
        self.entries.values()
    }

    /// Every tombstone held: `(node, withdrawal sequence, until)`.
    pub fn tombstones(&self) -> impl Iterator<Item = (NodeId, u64, Timestamp)> + '_ {
        self.tombstones
            .iter()
            .map(|(n, t)| (*n, t.sequence_no, t.until.clone()))
    }
}
