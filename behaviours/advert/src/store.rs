//! The advertisement store: one current signed advertisement per node id.
//!
//! Rules (all pure, `now` passed in): a higher `sequence/no` replaces, an equal or lower
//! one is `E_ADV_STALE_SEQ`, an expired one `E_ADV_EXPIRED`; a withdrawal removes the
//! entry and leaves a tombstone that refuses every advertisement at or below its
//! sequence number until any such advertisement must have expired; expired entries and
//! tombstones are swept; the number of entries and tombstones and the total encoded size
//! of the entries are capped, and only live ones count: a change that would pass a cap
//! first sweeps what has expired. Each publisher (node id) holds at most one record, of
//! at most [`StoreLimits::max_record_bytes`], and has a token-bucket rate limit. Node
//! ids cost nothing to make, so every change is also counted under its [`Source`] (the
//! network or relayed peer it came from, see [`crate::shares`]): a source holds at most
//! [`StoreLimits::per_source_entries`] and [`StoreLimits::per_source_bytes`], and when
//! the store is full (after the sweep) the source holding the most gives up its oldest
//! slot to one holding fewer. Nothing else a publisher sends removes another
//! publisher's live record. Artifacts reach the store already verified: the store
//! trusts signatures and checks only the rules above.
//!
//! Every accepted change gets a revision number, so a reader can walk the store in
//! batches with an opaque cursor and see every current advertisement exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use mesh_core::artifact::Artifact;
use mesh_core::{
    ErrorCode, MeshError, MeshResult, NodeAdvertisement, NodeId, RateLimit, RateLimiter, Timestamp,
};

use crate::shares::{Shares, Source};
use crate::withdrawal::NodeWithdrawal;

mod check;
mod floors;
mod room;
mod rows;

pub use floors::MAX_FLOORS;

/// Most slots one change may evict from other sources to make room.
const MAX_EVICTIONS: usize = 64;

/// Default [`StoreLimits::max_record_bytes`]: 16 KiB, about 60 endpoints (the node's own
/// advertisement is usually under 2 KiB).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 * 1024;

/// Limits of a store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreLimits {
    /// Most advertisements and withdrawal tombstones held, together.
    pub max_entries: usize,
    /// Most bytes of advertisements (their CBOR size) held.
    pub max_bytes: usize,
    /// Largest advertisement (CBOR size) one publisher may have stored: each node id
    /// holds one record, so this is also what one publisher key may hold.
    pub max_record_bytes: usize,
    /// Longest accepted lifetime (`expires-at` − `advertised-at`), in seconds. It also
    /// bounds how long a withdrawal's tombstone must live.
    pub max_lifetime_secs: i64,
    /// Per-publisher rate limit on accepted changes.
    pub per_publisher: RateLimit,
    /// Most advertisements and tombstones one [`Source`] (network, or peer without one)
    /// may hold.
    pub per_source_entries: usize,
    /// Most bytes of advertisements one [`Source`] may hold.
    pub per_source_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_entries: 100_000,
            max_bytes: 256 * 1024 * 1024,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_lifetime_secs: 24 * 3600,
            per_publisher: RateLimit::per_minute(10, 30),
            per_source_entries: 25_000,
            per_source_bytes: 64 * 1024 * 1024,
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

/// One stored advertisement: its CBOR wire form and the three fields the store indexes
/// by. The decoded document is not kept: a node holds about every advertisement of its
/// swarms, and a decoded document is about five times its wire form (3.6 KiB for a
/// 710-byte advertisement with two endpoints). [`StoredAdvert::advert`] decodes it
/// again when a caller needs more.
#[derive(Debug, Clone)]
pub struct StoredAdvert {
    node_id: NodeId,
    sequence_no: u64,
    expires_at: Timestamp,
    /// Its CBOR wire form.
    pub wire: Arc<[u8]>,
    /// The revision of the change that stored it.
    pub revision: u64,
}

impl StoredAdvert {
    /// An entry for `advert`, whose wire form is `wire`, stored by change `revision`.
    pub fn new(advert: &NodeAdvertisement, wire: Arc<[u8]>, revision: u64) -> Self {
        StoredAdvert {
            node_id: advert.node_id(),
            sequence_no: advert.sequence_no(),
            expires_at: advert.expires_at().clone(),
            wire,
            revision,
        }
    }

    /// The advertised node.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The advertisement's `sequence/no`.
    pub fn sequence_no(&self) -> u64 {
        self.sequence_no
    }

    /// The advertisement's `expires-at`.
    pub fn expires_at(&self) -> &Timestamp {
        &self.expires_at
    }

    /// The advertisement, decoded again from its wire form with the structural checks
    /// (its signature was verified when it was stored and is not checked again). A
    /// store's own entries always decode; the error is there for wire bytes that did not
    /// come from a [`NodeAdvertisement`].
    pub fn advert(&self) -> MeshResult<NodeAdvertisement> {
        NodeAdvertisement::from_cbor(&self.wire)
    }

    /// [`StoredAdvert::advert`], with a failure logged and given as `None`: for readers
    /// that skip what they cannot read.
    pub fn decoded(&self) -> Option<NodeAdvertisement> {
        self.advert()
            .inspect_err(|e| {
                let node = self.node_id;
                tracing::warn!(%node, error = %e, "stored advertisement does not decode");
            })
            .ok()
    }
}

/// What a sweep removed, so that a durable backend can delete the same rows (and put
/// them back with [`MemoryStore::restore_swept`] when it cannot).
#[derive(Debug, Clone, Default)]
pub struct Swept {
    /// Expired advertisements.
    pub adverts: Vec<StoredAdvert>,
    /// Lapsed tombstones: node, withdrawn sequence number, end.
    pub tombstones: Vec<(NodeId, u64, Timestamp)>,
}

impl Swept {
    /// How many advertisements and tombstones went.
    pub fn len(&self) -> usize {
        self.adverts.len() + self.tombstones.len()
    }

    /// Whether nothing went.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds what `other` removed.
    pub fn extend(&mut self, other: Swept) {
        self.adverts.extend(other.adverts);
        self.tombstones.extend(other.tombstones);
    }
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
    /// Stores a verified advertisement that came from `source`.
    fn insert_from(
        &mut self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError>;
    /// Applies a verified withdrawal that came from `source`.
    fn withdraw_from(
        &mut self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError>;
    /// Stores a verified advertisement of this node's own choosing ([`Source::Local`]).
    fn insert(
        &mut self,
        advert: NodeAdvertisement,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.insert_from(advert, Source::Local, now)
    }
    /// Applies a verified withdrawal of this node's own choosing ([`Source::Local`]).
    fn withdraw(&mut self, withdrawal: &NodeWithdrawal, now: &Timestamp) -> Result<(), StoreError> {
        self.withdraw_from(withdrawal, Source::Local, now)
    }
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

/// The highest revision a store counts from; see `MemoryStore::next_revision`.
pub(crate) const MAX_REVISION: u64 = 1 << 62;

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    limits: StoreLimits,
    entries: HashMap<NodeId, StoredAdvert>,
    tombstones: HashMap<NodeId, Tombstone>,
    by_revision: BTreeMap<u64, NodeId>,
    /// Entries by `expires-at`, so sweeping costs what it removes.
    by_expiry: BTreeSet<(Timestamp, NodeId)>,
    /// Tombstones by end.
    tombstones_by_end: BTreeSet<(Timestamp, NodeId)>,
    revision: u64,
    bytes: usize,
    rate: RateLimiter<NodeId>,
    shares: Shares,
    /// What evicted records leave behind (see [`floors`]).
    floors: floors::Floors,
}

impl MemoryStore {
    /// An empty store with `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        MemoryStore {
            limits,
            entries: HashMap::new(),
            tombstones: HashMap::new(),
            by_revision: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            tombstones_by_end: BTreeSet::new(),
            revision: 0,
            bytes: 0,
            rate: RateLimiter::new(limits.per_publisher, limits.max_entries.max(1024)),
            shares: Shares::default(),
            floors: floors::Floors::default(),
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
        let ad = self.entries.get(node).map(|e| e.sequence_no());
        let tomb = self.tombstones.get(node).map(|t| t.sequence_no);
        ad.max(tomb)
    }

    /// What this store holds for `node`: its advertisement's or its tombstone's
    /// sequence number, expired or not.
    pub fn held_sequence(&self, node: &NodeId) -> Option<crate::HeldSequence> {
        if let Some(t) = self.tombstones.get(node) {
            return Some(crate::HeldSequence::Withdrawn(t.sequence_no));
        }
        self.entries
            .get(node)
            .map(|e| crate::HeldSequence::Advert(e.sequence_no()))
    }

    /// The next change's revision. Past [`MAX_REVISION`] (only a damaged or tampered
    /// store file brings one: no store makes 2^62 changes) the entries are numbered
    /// again from 1 in their order first, so the count never wraps.
    fn next_revision(&mut self) -> u64 {
        if self.revision >= MAX_REVISION {
            let mut order: Vec<(u64, NodeId)> =
                self.entries.iter().map(|(n, e)| (e.revision, *n)).collect();
            order.sort_unstable();
            self.by_revision.clear();
            for (r, (_, node)) in (1..).zip(order) {
                if let Some(e) = self.entries.get_mut(&node) {
                    e.revision = r;
                    self.by_revision.insert(r, node);
                }
            }
            self.revision = self.by_revision.len() as u64;
        }
        self.revision += 1;
        self.revision
    }

    fn remove_entry(&mut self, node: &NodeId) -> Option<StoredAdvert> {
        let old = self.entries.remove(node)?;
        self.shares.forget(node);
        self.by_revision.remove(&old.revision);
        self.by_expiry.remove(&(old.expires_at().clone(), *node));
        self.bytes -= old.wire.len();
        Some(old)
    }

    fn put_entry(&mut self, node: NodeId, stored: StoredAdvert) {
        self.bytes += stored.wire.len();
        self.by_revision.insert(stored.revision, node);
        self.by_expiry.insert((stored.expires_at().clone(), node));
        self.entries.insert(node, stored);
    }

    fn put_tombstone(&mut self, node: NodeId, tombstone: Tombstone) {
        self.drop_tombstone(&node);
        self.tombstones_by_end
            .insert((tombstone.until.clone(), node));
        self.tombstones.insert(node, tombstone);
    }

    fn drop_tombstone(&mut self, node: &NodeId) -> Option<Tombstone> {
        let old = self.tombstones.remove(node)?;
        self.shares.forget(node);
        self.tombstones_by_end.remove(&(old.until.clone(), *node));
        Some(old)
    }

    /// Advertisements and tombstones held (what [`StoreLimits::max_entries`] caps).
    pub fn held(&self) -> usize {
        self.entries.len() + self.tombstones.len()
    }

    /// Whether a change for `node` takes a new slot (it has neither an entry nor a
    /// tombstone to replace).
    fn takes_slot(&self, node: &NodeId) -> bool {
        !self.entries.contains_key(node) && !self.tombstones.contains_key(node)
    }

    fn store_full(&self) -> StoreError {
        MeshError::new(
            ErrorCode::TransportRejected,
            format!(
                "store full ({} advertisements and tombstones)",
                self.limits.max_entries
            ),
        )
        .into()
    }

    /// Stores an advertisement whose wire form is already known (saves an encode).
    pub fn insert_with_wire(
        &mut self,
        advert: NodeAdvertisement,
        wire: Arc<[u8]>,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        self.insert_sweeping(advert, wire, Source::Local, now).0
    }

    /// As [`MemoryStore::insert_with_wire`], also returning what was swept to make room
    /// (whether or not the advertisement was then accepted).
    pub fn insert_sweeping(
        &mut self,
        advert: NodeAdvertisement,
        wire: Arc<[u8]>,
        source: Source,
        now: &Timestamp,
    ) -> (Result<InsertOutcome, StoreError>, Swept) {
        let previous = match self.check_insert(&advert, now) {
            Ok(p) => p,
            Err(e) => return (Err(e), Swept::default()),
        };
        if wire.len() > self.limits.max_record_bytes {
            let e = MeshError::new(
                ErrorCode::TransportRejected,
                format!(
                    "advertisement of {} bytes is over the {}-byte limit per publisher",
                    wire.len(),
                    self.limits.max_record_bytes
                ),
            );
            return (Err(e.into()), Swept::default());
        }
        let node = advert.node_id();
        let (share, mut swept) = self.check_share(&node, &source, wire.len(), now);
        if let Err(e) = share {
            return (Err(e), swept);
        }
        // The rate limit before anything is evicted for this change.
        if let Err(retry_after_secs) = self.rate.check(&node, now) {
            return (Err(StoreError::RateLimited { retry_after_secs }), swept);
        }
        swept.extend(self.make_room(&node, wire.len(), source, now));
        // An entry of this node that the sweep removed was expired, so not above this one.
        let previous = previous.filter(|_| self.entries.contains_key(&node));
        (self.insert_checked(advert, wire, source, previous), swept)
    }

    fn insert_checked(
        &mut self,
        advert: NodeAdvertisement,
        wire: Arc<[u8]>,
        source: Source,
        previous: Option<u64>,
    ) -> Result<InsertOutcome, StoreError> {
        let node = advert.node_id();
        let freed = self.entries.get(&node).map_or(0, |e| e.wire.len());
        if self.takes_slot(&node) && self.held() >= self.limits.max_entries {
            return Err(self.store_full());
        }
        if self.bytes - freed + wire.len() > self.limits.max_bytes {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("store full ({} bytes)", self.limits.max_bytes),
            )
            .into());
        }
        self.remove_entry(&node);
        self.drop_tombstone(&node);
        let len = wire.len();
        let stored = StoredAdvert::new(&advert, wire, self.next_revision());
        self.put_entry(node, stored);
        self.shares.attribute(node, source, len);
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

    /// Applies a verified withdrawal, also returning what was swept to make room for
    /// its tombstone.
    pub fn withdraw_sweeping(
        &mut self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> (Result<(), StoreError>, Swept) {
        if let Err(e) = self.check_withdraw(withdrawal) {
            return (Err(e), Swept::default());
        }
        let node = withdrawal.node_id();
        let (share, mut swept) = self.check_share(&node, &source, 0, now);
        if let Err(e) = share {
            return (Err(e), swept);
        }
        if let Err(retry_after_secs) = self.rate.check(&node, now) {
            return (Err(StoreError::RateLimited { retry_after_secs }), swept);
        }
        swept.extend(self.make_room(&node, 0, source, now));
        (self.withdraw_checked(withdrawal, source, now), swept)
    }

    fn withdraw_checked(
        &mut self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError> {
        let node = withdrawal.node_id();
        if self.takes_slot(&node) && self.held() >= self.limits.max_entries {
            return Err(self.store_full());
        }
        self.remove_entry(&node);
        // Every advertisement at or below this sequence number was issued before the
        // withdrawal, so it expires at most `max_lifetime` after it.
        let until = withdrawal
            .withdrawn_at()
            .max(now)
            .plus_secs(self.limits.max_lifetime_secs);
        self.put_tombstone(
            node,
            Tombstone {
                sequence_no: withdrawal.sequence_no(),
                until,
            },
        );
        self.shares.attribute(node, source, 0);
        self.next_revision();
        Ok(())
    }

    /// The entry held for `node`, expired or not.
    pub fn entry(&self, node: &NodeId) -> Option<&StoredAdvert> {
        self.entries.get(node)
    }

    /// Removes the entry of `node` (to undo a change a durable backend did not persist).
    pub fn remove(&mut self, node: &NodeId) -> Option<StoredAdvert> {
        self.remove_entry(node)
    }

    /// Removes the tombstone of `node` (undo, as [`MemoryStore::remove`]).
    pub fn remove_tombstone(&mut self, node: &NodeId) {
        self.drop_tombstone(node);
    }

    /// Nodes whose advertisement expired at `now` (cost: what it returns).
    pub fn expired(&self, now: &Timestamp) -> Vec<NodeId> {
        self.by_expiry
            .iter()
            .take_while(|(at, _)| now > at)
            .map(|(_, n)| *n)
            .collect()
    }

    /// Nodes whose tombstone lapsed at `now` (cost: what it returns).
    pub fn lapsed_tombstones(&self, now: &Timestamp) -> Vec<NodeId> {
        self.tombstones_by_end
            .iter()
            .take_while(|(until, _)| until < now)
            .map(|(_, n)| *n)
            .collect()
    }

    /// Restores an entry read back from durable storage, keeping its revision (no
    /// checks: it was checked when first stored), counted under [`Source::Restored`].
    pub fn restore(&mut self, stored: StoredAdvert) {
        let node = stored.node_id();
        self.remove_entry(&node);
        self.revision = self.revision.max(stored.revision);
        let len = stored.wire.len();
        self.put_entry(node, stored);
        self.shares.attribute(node, Source::Restored, len);
    }

    /// Raises the revision counter to the last one persisted (`since` stays valid).
    pub fn restore_revision(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    /// Restores a tombstone read back from durable storage, counted under
    /// [`Source::Restored`].
    pub fn restore_tombstone(&mut self, node: NodeId, sequence_no: u64, until: Timestamp) {
        self.put_tombstone(node, Tombstone { sequence_no, until });
        self.shares.attribute(node, Source::Restored, 0);
    }

    /// The tombstones, for persisting: `(node, sequence, until)`.
    pub fn tombstone_of(&self, node: &NodeId) -> Option<(u64, Timestamp)> {
        self.tombstones
            .get(node)
            .map(|t| (t.sequence_no, t.until.clone()))
    }
}

impl AdvertStore for MemoryStore {
    fn insert_from(
        &mut self,
        advert: NodeAdvertisement,
        source: Source,
        now: &Timestamp,
    ) -> Result<InsertOutcome, StoreError> {
        let wire: Arc<[u8]> = advert.to_cbor().into();
        self.insert_sweeping(advert, wire, source, now).0
    }

    fn withdraw_from(
        &mut self,
        withdrawal: &NodeWithdrawal,
        source: Source,
        now: &Timestamp,
    ) -> Result<(), StoreError> {
        self.withdraw_sweeping(withdrawal, source, now).0
    }

    fn get(&self, node: &NodeId, now: &Timestamp) -> Option<StoredAdvert> {
        self.entries
            .get(node)
            .filter(|e| now <= e.expires_at())
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
        Ok(self.take_expired(now).len())
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}
