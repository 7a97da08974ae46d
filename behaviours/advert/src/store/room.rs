//! Room in the store: what each source holds, the caps a change would pass, sweeping
//! and evicting to make room for it (see [`crate::shares`]).

use mesh_core::{CLOCK_SKEW_SECS, ErrorCode, MeshError, NodeId, Timestamp};

use super::{MAX_EVICTIONS, MemoryStore, StoreError, Swept};
use crate::shares::{Pressure, Source};

impl MemoryStore {
    /// Slots and bytes held under `source` (zero for [`Source::Local`], which is not
    /// counted).
    pub fn held_by(&self, source: &Source) -> (usize, usize) {
        self.shares.held(source)
    }

    /// How many sources (other than [`Source::Local`]) hold slots.
    pub fn sources(&self) -> usize {
        self.shares.sources()
    }

    /// The source `node`'s slot is counted under ([`Source::Local`] when none).
    pub fn source_of(&self, node: &NodeId) -> Source {
        self.shares.holder(node)
    }

    /// Which cap a change of `node` to a record of `wire_len` bytes (0 for a withdrawal)
    /// would pass.
    fn pressure(&self, node: &NodeId, wire_len: usize) -> Option<Pressure> {
        let freed = self.entries.get(node).map_or(0, |e| e.wire.len());
        if self.takes_slot(node) && self.held() >= self.limits.max_entries {
            Some(Pressure::Entries)
        } else if self.bytes - freed + wire_len > self.limits.max_bytes {
            Some(Pressure::Bytes)
        } else {
            None
        }
    }

    /// Makes room for a change of `node` from `source` to a record of `wire_len` bytes
    /// (0 for a withdrawal): when it would pass a cap, sweeps whatever has expired at
    /// `now`, so the caps count only live entries; when that is not enough, evicts the
    /// oldest slots of the source holding the most, as long as it holds more than
    /// `source` would (at most 64). Returns what went.
    pub fn make_room(
        &mut self,
        node: &NodeId,
        wire_len: usize,
        source: Source,
        now: &Timestamp,
    ) -> Swept {
        if self.pressure(node, wire_len).is_none() {
            return Swept::default();
        }
        let mut swept = self.take_expired(now);
        for _ in 0..MAX_EVICTIONS {
            let Some(pressure) = self.pressure(node, wire_len) else {
                break;
            };
            let Some(victim) = self.shares.victim(node, &source, wire_len, pressure) else {
                break;
            };
            let source = self.shares.holder(&victim);
            if let Some(stored) = self.remove_entry(&victim) {
                // Any advertisement valid now expires within the longest lifetime.
                let until = now.plus_secs(self.limits.max_lifetime_secs + CLOCK_SKEW_SECS);
                let floor = stored.sequence_no().saturating_sub(1);
                self.floors.record(victim, floor, until);
                swept.adverts.push(stored);
            } else if let Some(t) = self.drop_tombstone(&victim) {
                self.floors.record(victim, t.sequence_no, t.until.clone());
                swept.tombstones.push((victim, t.sequence_no, t.until));
            } else {
                // Attributed but not held: cannot happen; drop the attribution.
                self.shares.forget(&victim);
            }
            tracing::debug!(node = %victim, ?source, "advertisement evicted for another source");
        }
        swept
    }

    /// Refuses a change of `node` to a record of `wire_len` bytes that would take
    /// `source` past its share. A share counts only live entries: when the change would
    /// pass it, whatever has expired at `now` is swept first (and returned, whether or
    /// not the change then fits).
    pub(super) fn check_share(
        &mut self,
        node: &NodeId,
        source: &Source,
        wire_len: usize,
        now: &Timestamp,
    ) -> (Result<(), StoreError>, Swept) {
        if *source == Source::Local || self.within_share(node, source, wire_len) {
            return (Ok(()), Swept::default());
        }
        let swept = self.take_expired(now);
        if self.within_share(node, source, wire_len) {
            return (Ok(()), swept);
        }
        let (held, held_bytes) = self.shares.held(source);
        let e = MeshError::new(
            ErrorCode::TransportRejected,
            format!(
                "source {source:?} holds its share of the store ({held} of {} entries, \
                 {held_bytes} of {} bytes)",
                self.limits.per_source_entries, self.limits.per_source_bytes
            ),
        );
        (Err(e.into()), swept)
    }

    fn within_share(&self, node: &NodeId, source: &Source, wire_len: usize) -> bool {
        let (slots, bytes) = self.shares.after(node, source, wire_len);
        slots <= self.limits.per_source_entries && bytes <= self.limits.per_source_bytes
    }

    /// Removes every advertisement expired at `now` and every tombstone lapsed at `now`,
    /// and returns them.
    pub fn take_expired(&mut self, now: &Timestamp) -> Swept {
        let expired = self.expired(now);
        let lapsed = self.lapsed_tombstones(now);
        Swept {
            adverts: expired
                .iter()
                .filter_map(|n| self.remove_entry(n))
                .collect(),
            tombstones: lapsed
                .into_iter()
                .filter_map(|n| self.drop_tombstone(&n).map(|t| (n, t.sequence_no, t.until)))
                .collect(),
        }
    }

    /// Puts back what a sweep removed (a durable backend that could not delete it).
    pub fn restore_swept(&mut self, swept: Swept) {
        for stored in swept.adverts {
            self.restore(stored);
        }
        for (node, sequence_no, until) in swept.tombstones {
            self.restore_tombstone(node, sequence_no, until);
        }
    }
}
