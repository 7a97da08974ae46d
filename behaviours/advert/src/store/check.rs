//! The rules an advertisement must pass, checked without changing anything.

use mesh_core::{ErrorCode, MeshError, NodeAdvertisement, Timestamp};

use super::{MemoryStore, StoreError};

impl MemoryStore {
    /// Checks an advertisement against the rules without changing anything; what
    /// `insert` would do. Durable stores call this before writing.
    pub fn check_insert(
        &self,
        advert: &NodeAdvertisement,
        now: &Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        if now > advert.expires_at() {
            return Err(MeshError::new(
                ErrorCode::AdvExpired,
                format!("advertisement expired at {}", advert.expires_at()),
            )
            .into());
        }
        let lifetime = advert.expires_at().secs_since(advert.advertised_at());
        if lifetime > self.limits.max_lifetime_secs {
            return Err(MeshError::invalid(format!(
                "advertisement lifetime {lifetime} s exceeds the {} s maximum",
                self.limits.max_lifetime_secs
            ))
            .into());
        }
        let node = advert.node_id();
        let submitted = advert.sequence_no();
        if let Some(t) = self.tombstones.get(&node)
            && submitted <= t.sequence_no
        {
            return Err(StoreError::Stale {
                current: t.sequence_no,
                submitted,
            });
        }
        // A record of the node evicted from a full store still bars what it barred.
        if let Some(floor) = self.floors.floor(&node, now)
            && submitted <= floor
        {
            return Err(StoreError::Stale {
                current: floor,
                submitted,
            });
        }
        let previous = self.entries.get(&node).map(|e| e.sequence_no());
        if let Some(current) = previous
            && submitted <= current
        {
            return Err(StoreError::Stale { current, submitted });
        }
        Ok(previous)
    }
}
