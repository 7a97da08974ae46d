//! The advertisement store: one current signed advertisement per node id.
//!
//! Rules (all pure, `now` passed in): a higher `sequence/no` replaces, an equal or lower
//! one is `E_ADV_STALE_SEQ`, an expired one `E_ADV_EXPIRED`; a withdrawal removes the
//! entry and leaves a tombstone that refuses every advertisement at or below its
//! sequence number until any such advertisement must have expired; expired entries and
//! tombstones are swept; the number of entries and their total encoded size are capped;
//! each publisher (node id) has a token-bucket rate limit. Artifacts reach the store
//! already verified: the store trusts signatures and checks only the rules above.
//!
//! Every accepted change gets a revision number, so a reader can walk the store in
//! batches with an opaque cursor and see every current advertisement exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_core::artifact::Artifact;
use mesh_core::{
    ErrorCode, MeshError, NodeAdvertisement, NodeId, RateLimit, RateLimiter, Timestamp,
};

use crate::withdrawal::NodeWithdrawal;

/// Limits of a store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreLimits {
    /// Most advertisements held.
    pub max_entries: usize,
    /// Most bytes of advertisements (their CBOR size) held.
    pub max_bytes: usize,
    /// Longest accepted lifetime (`expires-at` − `advertised-at`), in seconds. It also
    /// bounds how long a withdrawal's tombstone must live.
    pub max_lifetime_secs: i64,
    /// Per-publisher rate limit on accepted changes.
    pub per_publisher: RateLimit,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_entries: 100_000,
            max_bytes: 256 * 1024 * 1024,
            max_lifetime_secs: 24 * 3600,
            per_publisher: RateLimit::per_minute(10, 30),
        }
    }
}

/// What an accepted insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The node had no advertisement.
    Stored,
    /// It replaced the advertisement with this sequence number.
    Replaced {
        /// The sequence number that was replaced.
        previous: u64,
    },
}

/// A refused change.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The rules refused it; carries the frozen code.
    #[error(transparent)]
    Rejected(#[from] MeshError),
    /// Not stale by content, but the sequence number is not above the current one.
    #[error("E_ADV_STALE_SEQ: sequence {submitted} is not above the current {current}")]
    Stale {
        /// The sequence number held (advertisement or withdrawal).
        current: u64,
        /// The sequence number offered.
        submitted: u64,
    },
    /// The publisher is over its rate limit.
    #[error("E_TRANSPORT_REJECTED: publisher rate limit; retry after {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a token is available.
        retry_after_secs: u64,
    },
    /// The durable backend failed (no code: it is not the input's fault).
    #[error("storage failure: {0}")]
    Storage(String),
}

impl StoreError {
    /// The frozen code of a rejection (`None` for storage failures).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            StoreError::Rejected(e) => Some(e.code),
            StoreError::Stale { .. } => Some(ErrorCode::AdvStaleSeq),
            StoreError::RateLimited { .. } => Some(ErrorCode::TransportRejected),
            StoreError::Storage(_) => None,
        }
    }

    /// As a `MeshError` for the wire (storage failures become `E_TRANSPORT_UNAVAILABLE`).
    pub fn to_mesh_error(&self) -> MeshError {
        match self {
            StoreError::Rejected(e) => e.clone(),
            other => MeshError::new(
                other.code().unwrap_or(ErrorCode::TransportUnavailable),
                other.to_string(),
            ),
        }
    }
}

/// One stored advertisement.
#[derive(Debug, Clone)]
pub struct StoredAdvert {
    /// The advertisement.
    pub advert: Arc<NodeAdvertisement>,
    /// Its CBOR wire form.
    pub wire: Arc<[u8]>,
    /// The revision of the change that stored it.
    pub revision: u64,
}

/// A batch of a cursor walk.
#[derive(Debug, Clone)]
pub struct Page {
    /// The advertisements, in revision order.
    pub items: Vec<StoredAdvert>,
    /// The cursor for the next batch (equal to the one given when nothing is left).
    pub next: u64,
}

/// What every store offers; `MemoryStore` is the reference, the node's durable store
/// implements the same trait.
pub trait AdvertStore {
    /// Stores a verified advertisement.
    fn insert(
        &mut self,
        advert: NodeAdvertisement,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError>;
    /// Applies a verified withdrawal.
    fn withdraw(&mut self, withdrawal: &NodeWithdrawal, now: &Timestamp) -> Result<(), StoreError>;
    /// The current, unexpired advertisement of `node`.
    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert>;
    /// Up to `max` advertisements changed after `cursor`.
    fn since(&self, cursor: u64, max: usize) -> Page;
    /// Drops expired advertisements and tombstones; returns how many went.
    fn sweep(&mut self, now: &Timestamp) -> Result<usize, StoreError>;
    /// Number of advertisements held.
    fn len(&self) -> usize;
    /// Whether the store is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
struct Tombstone {
    sequence_no: u64,
    until: Timestamp,
}

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    limits: StoreLimits,
    entries: HashMap<NodeId, StoredAdvert>,
    tombstones: HashMap<NodeId, Tombstone>,
    by_revision: BTreeMap<u64, NodeId>,
    revision: u64,
    bytes: usize,
    rate: RateLimiter<NodeId>,
}

impl MemoryStore {
    /// An empty store with `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        MemoryStore {
            limits,
            entries: HashMap::new(),
            tombstones: HashMap::new(),
            by_revision: BTreeMap::new(),
            revision: 0,
            bytes: 0,
            rate: RateLimiter::new(limits.per_publisher, limits.max_entries.max(1024)),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The latest revision number.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Total CBOR bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The highest sequence number this store knows for `node` (advertisement or
    /// withdrawal), expired or not.
    pub fn known_sequence(&self, node: &NodeId) -> Option<u64> {
        let ad = self.entries.get(node).map(|e| e.advert.sequence_no());
        let tomb = self.tombstones.get(node).map(|t| t.sequence_no);
        ad.max(tomb)
    }

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
        let previous = self.entries.get(&node).map(|e| e.advert.sequence_no());
        if let Some(current) = previous
            && submitted <= current
        {
            return Err(StoreError::Stale { current, submitted });
        }
        Ok(previous)
    }

    fn remove_entry(&mut self, node: &NodeId) -> Option<StoredAdvert> {
        let old = self.entries.remove(node)?;
        self.by_revision.remove(&old.revision);
        self.bytes -= old.wire.len();
        Some(old)
    }

    /// Stores an advertisement whose wire form is already known (saves an encode).
    pub fn insert_with_wire(
        &mut self,
        advert: NodeAdvertisement,
        wire: Arc<[u8]>,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        let previous = self.check_insert(&advert, now)?;
        let node = advert.node_id();
        let freed = self.entries.get(&node).map_or(0, |e| e.wire.len());
        if previous.is_none() && self.entries.len() >= self.limits.max_entries {
            self.sweep_expired(now);
        }
        if previous.is_none() && self.entries.len() >= self.limits.max_entries {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("store full ({} advertisements)", self.limits.max_entries),
            )
            .into());
        }
        if self.bytes - freed + wire.len() > self.limits.max_bytes {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("store full ({} bytes)", self.limits.max_bytes),
            )
            .into());
        }
        self.rate
            .check(&node, now)
            .map_err(|retry_after_secs| StoreError::RateLimited { retry_after_secs })?;
        self.remove_entry(&node);
        self.tombstones.remove(&node);
        self.revision += 1;
        self.bytes += wire.len();
        self.by_revision.insert(self.revision, node);
        self.entries.insert(
            node,
            StoredAdvert {
                advert: Arc::new(advert),
                wire,
                revision: self.revision,
            },
        );
        Ok(match previous {
            Some(previous) => InsertOutcome::Replaced { previous },
            None => InsertOutcome::Stored,
        })
    }

    /// Checks a withdrawal without changing anything.
    pub fn check_withdraw(&self, withdrawal: &NodeWithdrawal) -> Result<(), StoreError> {
        let submitted = withdrawal.sequence_no();
        match self.known_sequence(&withdrawal.node_id()) {
            Some(current) if submitted <= current => Err(StoreError::Stale { current, submitted }),
            _ => Ok(()),
        }
    }

    fn sweep_expired(&mut self, now: &Timestamp) -> usize {
        let expired: Vec<NodeId> = self
            .entries
            .iter()
            .filter(|(_, e)| now > e.advert.expires_at())
            .map(|(n, _)| *n)
            .collect();
        for node in &expired {
            self.remove_entry(node);
        }
        let before = self.tombstones.len();
        self.tombstones.retain(|_, t| &t.until >= now);
        expired.len() + before - self.tombstones.len()
    }

    /// The entry held for `node`, expired or not.
    pub fn entry(&self, node: &NodeId) -> Option<&StoredAdvert> {
        self.entries.get(node)
    }

    /// Removes the entry of `node` (used to undo a change a durable backend could not
    /// persist).
    pub fn remove(&mut self, node: &NodeId) -> Option<StoredAdvert> {
        self.remove_entry(node)
    }

    /// Removes the tombstone of `node` (undo, as [`MemoryStore::remove`]).
    pub fn remove_tombstone(&mut self, node: &NodeId) {
        self.tombstones.remove(node);
    }

    /// Nodes whose advertisement expired at `now`.
    pub fn expired(&self, now: &Timestamp) -> Vec<NodeId> {
        self.entries
            .iter()
            .filter(|(_, e)| now > e.advert.expires_at())
            .map(|(n, _)| *n)
            .collect()
    }

    /// Nodes whose tombstone lapsed at `now`.
    pub fn lapsed_tombstones(&self, now: &Timestamp) -> Vec<NodeId> {
        self.tombstones
            .iter()
            .filter(|(_, t)| &t.until < now)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Restores an entry read back from durable storage, keeping its revision (no
    /// checks: it was checked when first stored).
    pub fn restore(&mut self, stored: StoredAdvert) {
        let node = stored.advert.node_id();
        self.remove_entry(&node);
        self.revision = self.revision.max(stored.revision);
        self.bytes += stored.wire.len();
        self.by_revision.insert(stored.revision, node);
        self.entries.insert(node, stored);
    }

    /// Restores a tombstone read back from durable storage.
    pub fn restore_tombstone(&mut self, node: NodeId, sequence_no: u64, until: Timestamp) {
        self.tombstones
            .insert(node, Tombstone { sequence_no, until });
    }

    /// The tombstones, for persisting: `(node, sequence, until)`.
    pub fn tombstone_of(&self, node: &NodeId) -> Option<(u64, Timestamp)> {
        self.tombstones
            .get(node)
            .map(|t| (t.sequence_no, t.until.clone()))
    }
}

impl AdvertStore for MemoryStore {
    fn insert(
        &mut self,
        advert: NodeAdvertisement,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        let wire: Arc<[u8]> = advert.to_cbor().into();
        self.insert_with_wire(advert, wire, now)
    }

    fn withdraw(&mut self, withdrawal: &NodeWithdrawal, now: &Timestamp) -> Result<(), StoreError> {
        self.check_withdraw(withdrawal)?;
        let node = withdrawal.node_id();
        self.rate
            .check(&node, now)
            .map_err(|retry_after_secs| StoreError::RateLimited { retry_after_secs })?;
        self.remove_entry(&node);
        // Every advertisement at or below this sequence number was issued before the
        // withdrawal, so it expires at most `max_lifetime` after it.
        let until = withdrawal
            .withdrawn_at()
            .max(now)
            .plus_secs(self.limits.max_lifetime_secs);
        self.tombstones.insert(
            node,
            Tombstone {
                sequence_no: withdrawal.sequence_no(),
                until,
            },
        );
        self.revision += 1;
        Ok(())
    }

    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert> {
        self.entries
            .get(node)
            .filter(|e| now <= e.advert.expires_at())
            .cloned()
    }

    fn since(&self, cursor: u64, max: usize) -> Page {
        let items: Vec<StoredAdvert> = self
            .by_revision
            .range(cursor.saturating_add(1)..)
            .take(max)
            .filter_map(|(_, node)| self.entries.get(node).cloned())
            .collect();
        let next = items.last().map_or(cursor, |e| e.revision);
        Page { items, next }
    }

    fn sweep(&mut self, now: &Timestamp) -> Result<usize, StoreError> {
        Ok(self.sweep_expired(now))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}
