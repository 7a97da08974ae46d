//! Per-source shares of the mesh DHT's record store.
//!
//! libp2p-kad's `MemoryStore` holds at most `max_records` records (1,024 by default) and
//! refuses every new key once full, so one peer with fresh node ids could keep every
//! other publisher out of a node's part of the DHT. [`RecordBook::accept`] puts an
//! inbound PUT through [`super::kad::accept_put`]'s checks and counts the record under
//! its [`Source`] (the putter's network, see [`crate::shares`]): a source holds at most
//! [`RecordLimits::per_source`] records, and when the store is full, the source holding
//! the most gives up its oldest record to one holding fewer, and a source's PUTs are
//! rate-limited ([`RecordLimits::rate`]) before any signature is checked, so a flood of
//! valid records costs the node a bounded number of verifications (a replay of the held
//! record's bytes, refused as stale without one, does not count). Records the node put
//! itself are counted for nobody and never evicted.
//!
//! Pure bookkeeping beside the store: the wall clock is passed in (`now`); the record
//! expiry the book follows is the store's own `Instant`.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use libp2p::kad::Record;
use libp2p::kad::store::{Error as KadStoreError, RecordStore};
use mesh_core::{ErrorCode, MeshError, MeshResult, NodeId, RateLimit, RateLimiter, Timestamp};

use crate::kad::{DhtEntry, prepare_put, record_key, refused};
use crate::shares::{Pressure, Shares, Source};

/// Most records one PUT may evict from other sources.
const MAX_EVICTIONS: usize = 8;

/// Bounds of the records held for other peers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordLimits {
    /// Records one source (network, or peer without one) may have in the store.
    pub per_source: usize,
    /// PUTs one source may make (checked before the signature).
    pub rate: RateLimit,
}

impl Default for RecordLimits {
    /// A quarter of libp2p-kad's default `max_records` (1,024); 64 PUTs at once, then
    /// 600 a minute.
    fn default() -> Self {
        RecordLimits {
            per_source: 256,
            rate: RateLimit::per_minute(64, 600),
        }
    }
}

/// Most sources whose PUT rate is followed at once.
const RATE_KEYS: usize = 4096;

/// Who put the records of a mesh-DHT store.
#[derive(Debug)]
pub struct RecordBook {
    limits: RecordLimits,
    rate: RateLimiter<Source>,
    shares: Shares,
    /// Attributed records by expiry, so an expired one stops counting.
    expiry: BTreeSet<(Instant, NodeId)>,
    expires: HashMap<NodeId, Instant>,
}

impl Default for RecordBook {
    fn default() -> Self {
        RecordBook::new(RecordLimits::default())
    }
}

impl RecordBook {
    /// An empty book with `limits`.
    pub fn new(limits: RecordLimits) -> Self {
        RecordBook {
            limits,
            rate: RateLimiter::new(limits.rate, RATE_KEYS),
            shares: Shares::default(),
            expiry: BTreeSet::new(),
            expires: HashMap::new(),
        }
    }

    /// Records counted under `source` (zero for [`Source::Local`]).
    pub fn held_by(&self, source: &Source) -> usize {
        self.shares.held(source).0
    }

    fn forget(&mut self, node: &NodeId) {
        self.shares.forget(node);
        if let Some(at) = self.expires.remove(node) {
            self.expiry.remove(&(at, *node));
        }
    }

    /// Stops counting records that have expired at `at`.
    fn prune(&mut self, at: Instant) {
        while let Some(&(when, node)) = self.expiry.first() {
            if when > at {
                break;
            }
            self.forget(&node);
        }
    }

    /// Applies an inbound PUT from `source` (see [`super::kad::accept_put`] for the
    /// checks), within the source's share; when the store is full, makes room from the
    /// source holding the most.
    pub fn accept<S: RecordStore>(
        &mut self,
        store: &mut S,
        record: Record,
        source: Source,
        now: &Timestamp,
    ) -> MeshResult<DhtEntry> {
        self.accept_above(store, record, source, None, now)
    }

    /// [`RecordBook::accept`], refusing as stale (`E_ADV_STALE_SEQ`) a record older
    /// than what the node's advertisement store holds for its node (`held`, see
    /// [`crate::kad::superseded`]).
    pub fn accept_above<S: RecordStore>(
        &mut self,
        store: &mut S,
        record: Record,
        source: Source,
        held: Option<crate::HeldSequence>,
        now: &Timestamp,
    ) -> MeshResult<DhtEntry> {
        self.prune(Instant::now());
        // A replay of the held record's bytes costs no verification (it is refused as
        // stale): it does not count against the rate.
        let replay = store
            .get(&record.key)
            .is_some_and(|held| held.value == record.value);
        // Before the signature check: a source over its rate or at its share costs no
        // verification.
        if !replay
            && source != Source::Local
            && let Err(retry) = self.rate.check(&source, now)
        {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("too many DHT PUTs from {source:?}; retry after {retry} s"),
            ));
        }
        if let Some(node) = crate::kad::node_of_key(&record.key) {
            self.check_share(&node, &source)?;
        }
        let (entry, record) = prepare_put(store, record, held, now)?;
        let node = entry.node_id();
        self.check_share(&node, &source)?;
        let expires = record.expires;
        self.put_evicting(store, record, &node, &source)?;
        self.attribute(node, source, expires);
        Ok(entry)
    }

    /// Puts `record` (of `node`, from `source`) into `store`; when the store is full,
    /// the source holding the most gives up its oldest record, at most
    /// [`MAX_EVICTIONS`] times.
    fn put_evicting<S: RecordStore>(
        &mut self,
        store: &mut S,
        record: Record,
        node: &NodeId,
        source: &Source,
    ) -> MeshResult<()> {
        for _ in 0..MAX_EVICTIONS {
            match store.put(record.clone()) {
                Err(KadStoreError::MaxRecords) => {}
                r => return r.map_err(refused),
            }
            let Some(victim) = self.shares.victim(node, source, 0, Pressure::Entries) else {
                break;
            };
            store.remove(&record_key(&victim));
            self.forget(&victim);
            tracing::debug!(node = %victim, ?source, "DHT record evicted for another source");
        }
        store.put(record).map_err(refused)
    }

    /// Takes the node's own `record` into `store` before it is put to the DHT (which
    /// stores it locally first): the record counts for nobody from now on, even if a
    /// peer PUT the same key before, and when the store is full, the source holding the
    /// most gives up its oldest record for it.
    pub fn put_own<S: RecordStore>(&mut self, store: &mut S, record: &Record) -> MeshResult<()> {
        self.prune(Instant::now());
        let Some(node) = crate::kad::node_of_key(&record.key) else {
            return store.put(record.clone()).map_err(refused);
        };
        self.forget(&node);
        self.put_evicting(store, record.clone(), &node, &Source::Local)
    }

    fn check_share(&self, node: &NodeId, source: &Source) -> MeshResult<()> {
        if *source != Source::Local && self.shares.after(node, source, 0).0 > self.limits.per_source
        {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!(
                    "source {source:?} holds its share of the DHT store ({} records)",
                    self.limits.per_source
                ),
            ));
        }
        Ok(())
    }

    fn attribute(&mut self, node: NodeId, source: Source, expires: Option<Instant>) {
        self.forget(&node);
        if source == Source::Local {
            return;
        }
        self.shares.attribute(node, source, 0);
        if let Some(at) = expires {
            self.expires.insert(node, at);
            self.expiry.insert((at, node));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kad::record_for;
    use libp2p::PeerId;
    use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
    use mesh_core::{IpKey, NodeKeypair};

    fn net(last: u8) -> Source {
        Source::Network(IpKey::V4(std::net::Ipv4Addr::new(192, 0, 2, last)))
    }

    fn store(max_records: usize) -> MemoryStore {
        MemoryStore::with_config(
            PeerId::random(),
            MemoryStoreConfig {
                max_records,
                ..MemoryStoreConfig::default()
            },
        )
    }

    fn record_for_fresh_advert() -> Record {
        let key = NodeKeypair::generate();
        let now = Timestamp::now();
        let ad = crate::own::advert_for(
            &key,
            &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            1,
            &now,
            600,
        )
        .unwrap();
        record_for(&ad, &now)
    }

    fn put(book: &mut RecordBook, store: &mut MemoryStore, source: Source) -> MeshResult<NodeId> {
        let now = Timestamp::now();
        book.accept(store, record_for_fresh_advert(), source, &now)
            .map(|e| e.node_id())
    }

    #[test]
    fn a_source_holds_at_most_its_share_of_records() {
        let mut book = RecordBook::new(RecordLimits {
            per_source: 2,
            ..RecordLimits::default()
        });
        let mut s = store(1024);
        put(&mut book, &mut s, net(1)).unwrap();
        put(&mut book, &mut s, net(1)).unwrap();
        let e = put(&mut book, &mut s, net(1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
        put(&mut book, &mut s, net(2)).unwrap();
        put(&mut book, &mut s, Source::Local).unwrap();
        assert_eq!((book.held_by(&net(1)), book.held_by(&net(2))), (2, 1));
        assert_eq!(s.records().count(), 4);
    }

    #[test]
    fn a_full_store_takes_room_from_the_source_holding_the_most() {
        let mut book = RecordBook::new(RecordLimits {
            per_source: 100,
            ..RecordLimits::default()
        });
        let mut s = store(4);
        let flood: Vec<NodeId> = (0..4)
            .map(|_| put(&mut book, &mut s, net(1)).unwrap())
            .collect();
        // Without the book, libp2p-kad refuses every new key once full.
        let mine = put(&mut book, &mut s, net(2)).unwrap();
        assert!(s.get(&record_key(&mine)).is_some());
        assert!(s.get(&record_key(&flood[0])).is_none(), "the oldest went");
        assert!(s.get(&record_key(&flood[1])).is_some());
        put(&mut book, &mut s, net(2)).unwrap();
        // Equal shares: nobody gives way, and the flooder cannot take room back.
        let e = put(&mut book, &mut s, net(2)).unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
        let e = put(&mut book, &mut s, net(1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
        assert_eq!((book.held_by(&net(1)), book.held_by(&net(2))), (2, 2));
        assert_eq!(s.records().count(), 4);
    }

    #[test]
    fn a_source_over_its_rate_is_refused_before_any_signature_check() {
        let mut book = RecordBook::new(RecordLimits {
            per_source: 100,
            rate: mesh_core::RateLimit::per_minute(3, 1),
        });
        let mut s = store(1024);
        for _ in 0..3 {
            put(&mut book, &mut s, net(1)).unwrap();
        }
        // A forged record: the refusal names the rate, not the signature.
        let mut forged = record_for_fresh_advert();
        forged.value[10] ^= 0xff;
        let e = book
            .accept(&mut s, forged, net(1), &Timestamp::now())
            .unwrap_err();
        assert!(e.detail.contains("too many DHT PUTs"), "{e}");
        put(&mut book, &mut s, net(2)).unwrap();
        put(&mut book, &mut s, Source::Local).unwrap();
        // A replay of a held record is refused as stale, not counted as a PUT.
        let held = s.records().next().unwrap().into_owned();
        let e = book
            .accept(&mut s, held, net(1), &Timestamp::now())
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::AdvStaleSeq, "{e}");
    }

    #[test]
    fn the_node_s_own_record_counts_for_nobody_even_after_a_peer_put_it() {
        let mut book = RecordBook::new(RecordLimits {
            per_source: 100,
            ..RecordLimits::default()
        });
        let mut s = store(3);
        // A peer relays our own record to us first: it counts under that peer.
        let own = record_for_fresh_advert();
        let now = Timestamp::now();
        let me = book
            .accept(&mut s, own.clone(), net(1), &now)
            .unwrap()
            .node_id();
        put(&mut book, &mut s, net(1)).unwrap();
        put(&mut book, &mut s, net(2)).unwrap();
        assert_eq!(book.held_by(&net(1)), 2);
        // Our own put takes it back: it no longer counts for the peer, and a full store
        // never gives it up for another source.
        book.put_own(&mut s, &own).unwrap();
        assert_eq!(book.held_by(&net(1)), 1);
        for _ in 0..3 {
            let _ = put(&mut book, &mut s, net(3));
        }
        assert!(s.get(&record_key(&me)).is_some(), "own record kept");
        // A full store makes room for a new own record from the largest share.
        let mine_too = record_for_fresh_advert();
        book.put_own(&mut s, &mine_too).unwrap();
        assert!(s.get(&mine_too.key).is_some());
        assert!(s.get(&record_key(&me)).is_some());
        assert_eq!(s.records().count(), 3);
    }

    #[test]
    fn an_expired_record_stops_counting() {
        let mut book = RecordBook::new(RecordLimits {
            per_source: 1,
            ..RecordLimits::default()
        });
        let node = NodeKeypair::generate().node_id();
        book.attribute(node, net(1), Some(Instant::now()));
        assert_eq!(book.held_by(&net(1)), 1);
        book.prune(Instant::now());
        assert_eq!(book.held_by(&net(1)), 0);
        assert!(book.expires.is_empty() && book.expiry.is_empty());
    }
}
