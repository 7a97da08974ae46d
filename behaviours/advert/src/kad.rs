//! Advertisements in a Kademlia DHT (`/mesh/kad/1.0.0`), under `/mesh/adv/<node-id>`.
//!
//! The record of a node is either its current `node-advertisement.v1` or, once it has
//! withdrawn, its `node-withdrawal.v1` (both deterministic CBOR, told apart by their id
//! field). A withdrawal replaces the advertisement like a newer advertisement would:
//! its sequence number must be above the held one, and it then refuses every
//! advertisement at or below its own sequence number. A lookup that meets a withdrawal
//! answers "withdrawn" (no advertisement).
//!
//! libp2p's Kademlia acknowledges a PUT before anyone validates it and returns GET
//! results unvalidated. So the DHT must run with `StoreInserts::FilterBoth` (see
//! [`config`]), every inbound PUT must go through [`accept_put`] (which stores only a
//! verified record that is newer than the one held) or [`crate::RecordBook::accept`]
//! (the same, within per-source shares of the store), and every GET result through
//! [`validate_record`]. A bad record is then never stored and never served.

use std::time::{Duration, Instant};

use libp2p::StreamProtocol;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{Record, RecordKey, StoreInserts};
use mesh_core::artifact::Artifact;
use mesh_core::cbor::{self, DecodeLimits};
use mesh_core::{ErrorCode, MeshError, MeshResult, NodeAdvertisement, NodeId, Timestamp};

use crate::withdrawal::NodeWithdrawal;

/// How long a withdrawal record lives in the DHT after `withdrawn-at`: as long as the
/// store's tombstone (the default [`crate::StoreLimits::max_lifetime_secs`], 24 h), so it
/// outlives every advertisement it supersedes.
pub const WITHDRAWAL_RECORD_SECS: i64 = 24 * 3600;

/// A verified mesh-DHT record: an advertisement or a withdrawal.
#[derive(Debug, Clone, PartialEq)]
pub enum DhtEntry {
    /// The node's current advertisement.
    Advert(NodeAdvertisement),
    /// The node withdrew: there is no advertisement.
    Withdrawn(NodeWithdrawal),
}

impl DhtEntry {
    /// The node the record is about.
    pub fn node_id(&self) -> NodeId {
        match self {
            DhtEntry::Advert(a) => a.node_id(),
            DhtEntry::Withdrawn(w) => w.node_id(),
        }
    }

    /// Its sequence number.
    pub fn sequence_no(&self) -> u64 {
        match self {
            DhtEntry::Advert(a) => a.sequence_no(),
            DhtEntry::Withdrawn(w) => w.sequence_no(),
        }
    }

    /// The advertisement, unless this is a withdrawal.
    pub fn advert(&self) -> Option<&NodeAdvertisement> {
        match self {
            DhtEntry::Advert(a) => Some(a),
            DhtEntry::Withdrawn(_) => None,
        }
    }

    fn expiry(&self, now: &Timestamp) -> Instant {
        let until = match self {
            DhtEntry::Advert(a) => a.expires_at().clone(),
            DhtEntry::Withdrawn(w) => w.withdrawn_at().plus_secs(WITHDRAWAL_RECORD_SECS),
        };
        let secs = until.secs_since(now).max(0);
        Instant::now() + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }
}

/// The mesh DHT's protocol name.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/mesh/kad/1.0.0");

/// Prefix of advertisement record keys.
pub const KEY_PREFIX: &str = "/mesh/adv/";

/// A Kademlia configuration for the mesh DHT: our protocol name, filtered inserts,
/// packets large enough for an advertisement, and no re-puts of held records:
/// libp2p's default re-put every record the store held to the 20 closest peers each
/// hour (and every 22 hours without that), so one PUT of a made-up node's
/// advertisement (up to 64 KiB, living a day) had the node send it some 460 times, on
/// after its sender left. A node re-puts its own advertisement itself well within its
/// lifetime (at three quarters of it, `node::own`), as go-libp2p's DHT leaves it to
/// publishers.
pub fn config() -> libp2p::kad::Config {
    let mut c = libp2p::kad::Config::new(KAD_PROTOCOL);
    c.set_record_filtering(StoreInserts::FilterBoth)
        .set_max_packet_size(mesh_core::MAX_ARTIFACT_BYTES * 2)
        .set_replication_interval(None)
        .set_publication_interval(None);
    c
}

/// The record key of `node`'s advertisement.
pub fn record_key(node: &NodeId) -> RecordKey {
    RecordKey::new(&format!("{KEY_PREFIX}{node}"))
}

/// The node a record key names, if it is an advertisement key.
pub fn node_of_key(key: &RecordKey) -> Option<NodeId> {
    let text = std::str::from_utf8(key.as_ref()).ok()?;
    NodeId::parse(text.strip_prefix(KEY_PREFIX)?).ok()
}

/// The record for `advert`: its CBOR wire form, expiring with the advertisement.
pub fn record_for(advert: &NodeAdvertisement, now: &Timestamp) -> Record {
    let mut r = Record::new(record_key(&advert.node_id()), advert.to_cbor());
    r.expires = Some(expiry_instant(advert, now));
    r
}

fn expiry_instant(advert: &NodeAdvertisement, now: &Timestamp) -> Instant {
    let secs = advert.expires_at().secs_since(now).max(0);
    Instant::now() + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// The record for `withdrawal`: its CBOR wire form under the node's key, living
/// [`WITHDRAWAL_RECORD_SECS`] after `withdrawn-at`.
pub fn record_for_withdrawal(withdrawal: &NodeWithdrawal, now: &Timestamp) -> Record {
    let entry = DhtEntry::Withdrawn(withdrawal.clone());
    let mut r = Record::new(record_key(&withdrawal.node_id()), withdrawal.to_cbor());
    r.expires = Some(entry.expiry(now));
    r
}

/// Whether a CBOR value is a withdrawal (it has `withdrawal/id`) rather than an
/// advertisement. Values that do not decode count as advertisements, whose verification
/// then reports the decoding error.
fn is_withdrawal(value: &[u8]) -> bool {
    cbor::decode_top_map(value, DecodeLimits::default())
        .is_ok_and(|(map, _)| map.contains_key("withdrawal/id"))
}

/// Checks a record from the DHT: the key names the node, the value is a verified,
/// unexpired advertisement or a verified withdrawal of that node, in deterministic CBOR.
/// An advertisement's lifetime (`expires-at` − `advertised-at`) is at most the
/// advertisement store's (the default [`crate::StoreLimits::max_lifetime_secs`], 24 h):
/// the record's own expiry is capped at the advertisement's, so a longer one would be
/// kept and served that long. A withdrawal has no expiry of its own: its record lives
/// [`WITHDRAWAL_RECORD_SECS`] after `withdrawn-at`, which is never in the future.
pub fn validate_record(record: &Record, now: &Timestamp) -> MeshResult<DhtEntry> {
    let node = node_of_key(&record.key)
        .ok_or_else(|| MeshError::invalid("record key is not /mesh/adv/<node-id>"))?;
    let entry = if is_withdrawal(&record.value) {
        DhtEntry::Withdrawn(NodeWithdrawal::verify_cbor(&record.value, now)?)
    } else {
        let advert = NodeAdvertisement::verify_cbor(&record.value, now)?;
        check_lifetime(&advert)?;
        DhtEntry::Advert(advert)
    };
    if entry.node_id() != node {
        return Err(MeshError::new(
            ErrorCode::SigUnknownSigner,
            "record key names another node than the record's signer",
        ));
    }
    Ok(entry)
}

/// `E_PROTO_INVALID` for an advertisement that lives longer than the advertisement
/// store accepts by default (the same rule and wording as the store's).
fn check_lifetime(advert: &NodeAdvertisement) -> MeshResult<()> {
    let max = crate::StoreLimits::default().max_lifetime_secs;
    let lifetime = advert.expires_at().secs_since(advert.advertised_at());
    if lifetime > max {
        return Err(MeshError::invalid(format!(
            "advertisement lifetime {lifetime} s exceeds the {max} s maximum"
        )));
    }
    Ok(())
}

/// Applies an inbound PUT (from `InboundRequest::PutRecord { record: Some(..) }`): stores
/// the record only if it validates and its sequence number is above that of the record
/// held for that node (advertisement or withdrawal: a withdrawal replaces an older
/// advertisement, and refuses every advertisement at or below its own sequence number);
/// its expiry is capped at the advertisement's, or the withdrawal's
/// [`WITHDRAWAL_RECORD_SECS`].
///
/// One signature check at most: the held record is read without checking its signature
/// again (everything in the store came in through this function or is the node's own),
/// and a PUT of the held record's exact bytes (a replay, or a republish of an unchanged
/// advertisement) is answered from the held record without any.
pub fn accept_put<S: RecordStore>(
    store: &mut S,
    record: Record,
    now: &Timestamp,
) -> MeshResult<DhtEntry> {
    let (entry, record) = prepare_put(store, record, None, now)?;
    store.put(record).map_err(refused)?;
    Ok(entry)
}

/// What an advertisement store holds for a node, by sequence number (see
/// [`crate::MemoryStore::held_sequence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldSequence {
    /// Its advertisement of that sequence number.
    Advert(u64),
    /// A tombstone: it withdrew at that sequence number.
    Withdrawn(u64),
}

/// The sequence number that makes `entry` stale, given what the node's advertisement
/// store holds for its node (`held`): a tombstone at or above an advertisement's
/// sequence (the node withdrew it), an advertisement above it, or anything above a
/// withdrawal. `None`: `entry` is as new as what the store holds, or newer. The
/// DHT's record store and the advertisement store are fed by different paths (a PUT, a
/// push on `/mesh/advert`); a record older than what the other holds is a replay of
/// what the node signed before, kept and served past its withdrawal without this.
pub fn superseded(entry: &DhtEntry, held: Option<crate::HeldSequence>) -> Option<u64> {
    use crate::HeldSequence::{Advert, Withdrawn};
    let seq = entry.sequence_no();
    match (entry, held?) {
        (DhtEntry::Advert(_), Withdrawn(t)) if seq <= t => Some(t),
        (DhtEntry::Advert(_), Advert(a)) if seq < a => Some(a),
        // A withdrawal is above the advertisement it withdraws.
        (DhtEntry::Withdrawn(_), Advert(a)) if seq <= a => Some(a),
        (DhtEntry::Withdrawn(_), Withdrawn(t)) if seq < t => Some(t),
        _ => None,
    }
}

/// [`accept_put`] up to the write: the verified entry and the record to store, its
/// expiry capped.
pub(crate) fn prepare_put<S: RecordStore>(
    store: &S,
    record: Record,
    elsewhere: Option<crate::HeldSequence>,
    now: &Timestamp,
) -> MeshResult<(DhtEntry, Record)> {
    let held = store.get(&record.key).and_then(|h| {
        held_entry(&h, now)
            .ok()
            .map(|e| (e, h.value == record.value))
    });
    if let Some((held, true)) = &held {
        return Err(stale(held.sequence_no(), held.sequence_no()));
    }
    let entry = validate_record(&record, now)?;
    if let Some((held, _)) = &held
        && held.sequence_no() >= entry.sequence_no()
    {
        return Err(stale(entry.sequence_no(), held.sequence_no()));
    }
    if let Some(current) = superseded(&entry, elsewhere) {
        return Err(stale(entry.sequence_no(), current));
    }
    let cap = entry.expiry(now);
    let mut record = record;
    record.expires = Some(record.expires.map_or(cap, |e| e.min(cap)));
    Ok((entry, record))
}

pub(crate) fn refused(e: libp2p::kad::store::Error) -> MeshError {
    MeshError::new(
        ErrorCode::TransportRejected,
        format!("DHT store refused: {e}"),
    )
}

fn stale(offered: u64, held: u64) -> MeshError {
    MeshError::new(
        ErrorCode::AdvStaleSeq,
        format!("sequence {offered} is not above the held {held}"),
    )
}

/// A record of the node's own store: decoded and held to the time rules like
/// [`validate_record`], its signature not checked again (it was on the way in).
fn held_entry(record: &Record, now: &Timestamp) -> MeshResult<DhtEntry> {
    let entry = if is_withdrawal(&record.value) {
        DhtEntry::Withdrawn(NodeWithdrawal::from_cbor(&record.value)?)
    } else {
        DhtEntry::Advert(NodeAdvertisement::from_cbor(&record.value)?)
    };
    match &entry {
        DhtEntry::Advert(a) => a.validate(now)?,
        DhtEntry::Withdrawn(w) => w.validate(now)?,
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::kad::store::MemoryStore;
    use mesh_core::NodeKeypair;

    fn now() -> Timestamp {
        Timestamp::now()
    }

    /// Other nodes' records are not re-put (libp2p's default did so every hour, to the
    /// 20 closest peers, for as long as the record lived).
    #[test]
    fn the_mesh_dht_does_not_replicate_other_nodes_records() {
        let c = format!("{:?}", config());
        assert!(c.contains("record_replication_interval: None"), "{c}");
        // Without it, libp2p's put job runs on the publication interval, re-putting
        // other nodes' records too.
        assert!(c.contains("record_publication_interval: None"), "{c}");
        let default = format!("{:?}", libp2p::kad::Config::new(KAD_PROTOCOL));
        assert!(
            !default.contains("record_replication_interval: None"),
            "{default}"
        );
    }

    fn advert(key: &NodeKeypair, seq: u64) -> NodeAdvertisement {
        crate::own::advert_for(
            key,
            &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            seq,
            &now(),
            600,
        )
        .unwrap()
    }

    /// The DHT keeps an advertisement no longer than the advertisement store would: a
    /// 10-year lifetime was stored (and served for as long as the node ran); 24 h is
    /// still taken.
    #[test]
    fn an_advert_living_longer_than_the_store_s_maximum_is_refused() {
        let key = NodeKeypair::generate();
        let peer = key.to_libp2p().public().to_peer_id();
        let mut store = MemoryStore::new(peer);
        let max = crate::StoreLimits::default().max_lifetime_secs;
        assert_eq!(
            max, WITHDRAWAL_RECORD_SECS,
            "a tombstone outlives every advert"
        );
        let addr: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let with_ttl = |seq, ttl| {
            let ad = crate::own::advert_for(&key, std::slice::from_ref(&addr), seq, &now(), ttl);
            record_for(&ad.unwrap(), &now())
        };
        let ten_years = 10 * 365 * 86_400;
        let e = accept_put(&mut store, with_ttl(1, ten_years), &now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        assert!(store.get(&record_key(&key.node_id())).is_none());
        // Nor is it taken from a GET result, or through the book.
        let e = validate_record(&with_ttl(1, ten_years), &now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        let mut book = crate::RecordBook::default();
        let from = crate::Source::Network(mesh_core::IpKey::V4([192, 0, 2, 1].into()));
        let e = book
            .accept(&mut store, with_ttl(1, ten_years), from, &now())
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        let e = accept_put(&mut store, with_ttl(2, max + 1), &now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        assert_eq!(
            accept_put(&mut store, with_ttl(3, max), &now()).map(|e| e.sequence_no()),
            Ok(3)
        );
    }

    #[test]
    fn a_record_older_than_the_advert_store_s_is_superseded() {
        use crate::HeldSequence::{Advert, Withdrawn};
        let key = NodeKeypair::generate();
        let ad = DhtEntry::Advert(advert(&key, 5));
        let w = DhtEntry::Withdrawn(crate::NodeWithdrawal::create(&key, 5, &now()).unwrap());
        // Nothing held, or the same advertisement: as new as the store's.
        assert_eq!(superseded(&ad, None), None);
        assert_eq!(superseded(&ad, Some(Advert(5))), None);
        assert_eq!(superseded(&ad, Some(Advert(4))), None);
        // A newer advertisement, or a withdrawal at or above it.
        assert_eq!(superseded(&ad, Some(Advert(6))), Some(6));
        assert_eq!(superseded(&ad, Some(Withdrawn(5))), Some(5));
        assert_eq!(superseded(&ad, Some(Withdrawn(4))), None);
        // A withdrawal is above what it withdraws.
        assert_eq!(superseded(&w, Some(Advert(5))), Some(5));
        assert_eq!(superseded(&w, Some(Advert(4))), None);
        assert_eq!(superseded(&w, Some(Withdrawn(5))), None);
        assert_eq!(superseded(&w, Some(Withdrawn(6))), Some(6));
        // Through the PUT: refused as stale.
        let peer = key.to_libp2p().public().to_peer_id();
        let store = MemoryStore::new(peer);
        let r5 = record_for(&advert(&key, 5), &now());
        let e = prepare_put(&store, r5, Some(Withdrawn(7)), &now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::AdvStaleSeq);
    }

    #[test]
    fn only_valid_newer_records_are_stored() {
        let key = NodeKeypair::generate();
        let peer = key.to_libp2p().public().to_peer_id();
        let mut store = MemoryStore::new(peer);
        let r5 = record_for(&advert(&key, 5), &now());
        accept_put(&mut store, r5.clone(), &now()).unwrap();
        assert_eq!(
            accept_put(&mut store, r5, &now()).unwrap_err().code,
            ErrorCode::AdvStaleSeq
        );
        let r4 = record_for(&advert(&key, 4), &now());
        assert_eq!(
            accept_put(&mut store, r4, &now()).unwrap_err().code,
            ErrorCode::AdvStaleSeq
        );
        accept_put(&mut store, record_for(&advert(&key, 6), &now()), &now()).unwrap();

        // A record under another node's key.
        let other = NodeKeypair::generate();
        let mut wrong = record_for(&advert(&other, 9), &now());
        wrong.key = record_key(&key.node_id());
        assert_eq!(
            accept_put(&mut store, wrong, &now()).unwrap_err().code,
            ErrorCode::SigUnknownSigner
        );

        // A tampered value.
        let mut tampered = record_for(&advert(&key, 10), &now());
        let last = tampered.value.len() - 1;
        tampered.value[last - 10] ^= 1;
        assert!(accept_put(&mut store, tampered, &now()).is_err());

        let held = store.get(&record_key(&key.node_id())).unwrap();
        assert_eq!(validate_record(&held, &now()).unwrap().sequence_no(), 6);
        assert!(node_of_key(&RecordKey::new(&"/mesh/adv/nope")).is_none());
    }

    /// A PUT costs one signature check at most: the held record is not checked again,
    /// and a replay of its exact bytes costs none (it cost two before).
    #[test]
    fn a_put_checks_one_signature_at_most_and_a_replay_none() {
        use mesh_core::artifact::equations_on_this_thread as checked;
        let key = NodeKeypair::generate();
        let peer = key.to_libp2p().public().to_peer_id();
        let mut store = MemoryStore::new(peer);
        let [r4, r5, r6] = [4, 5, 6].map(|seq| record_for(&advert(&key, seq), &now()));
        let w = NodeWithdrawal::create(&key, 7, &now()).unwrap();
        let w7 = record_for_withdrawal(&w, &now());
        let mut put = |r: &Record| {
            let before = checked();
            let out = accept_put(&mut store, r.clone(), &now()).map_err(|e| e.code);
            (out.map(|e| e.sequence_no()), checked() - before)
        };
        assert_eq!(put(&r5), (Ok(5), 1), "the first PUT");
        let stale = Err(ErrorCode::AdvStaleSeq);
        assert_eq!(put(&r5), (stale, 0), "a replay of the held bytes");
        assert_eq!(put(&r4), (stale, 1), "an older record");
        assert_eq!(put(&r6), (Ok(6), 1), "a newer record");
        assert_eq!(put(&w7), (Ok(7), 1), "a withdrawal");
        assert_eq!(put(&w7), (stale, 0), "the withdrawal again");
        assert_eq!(
            put(&r6),
            (stale, 1),
            "an advertisement below the withdrawal"
        );
    }

    #[test]
    fn a_withdrawal_replaces_the_advertisement_and_refuses_older_ones() {
        let key = NodeKeypair::generate();
        let peer = key.to_libp2p().public().to_peer_id();
        let mut store = MemoryStore::new(peer);
        accept_put(&mut store, record_for(&advert(&key, 5), &now()), &now()).unwrap();

        // A withdrawal at or below the held advertisement is stale.
        let old = NodeWithdrawal::create(&key, 5, &now()).unwrap();
        assert_eq!(
            accept_put(&mut store, record_for_withdrawal(&old, &now()), &now())
                .unwrap_err()
                .code,
            ErrorCode::AdvStaleSeq
        );
        let w = NodeWithdrawal::create(&key, 7, &now()).unwrap();
        let got = accept_put(&mut store, record_for_withdrawal(&w, &now()), &now()).unwrap();
        assert_eq!(got, DhtEntry::Withdrawn(w.clone()));
        assert!(got.advert().is_none());
        let held = store.get(&record_key(&key.node_id())).unwrap();
        assert_eq!(
            validate_record(&held, &now()).unwrap(),
            DhtEntry::Withdrawn(w)
        );

        // Replays of older advertisements are refused; a newer one replaces it.
        for seq in [5, 6, 7] {
            assert_eq!(
                accept_put(&mut store, record_for(&advert(&key, seq), &now()), &now())
                    .unwrap_err()
                    .code,
                ErrorCode::AdvStaleSeq
            );
        }
        accept_put(&mut store, record_for(&advert(&key, 8), &now()), &now()).unwrap();

        // Another node's withdrawal under this key, and a tampered one.
        let other = NodeKeypair::generate();
        let mut wrong =
            record_for_withdrawal(&NodeWithdrawal::create(&other, 99, &now()).unwrap(), &now());
        wrong.key = record_key(&key.node_id());
        assert_eq!(
            accept_put(&mut store, wrong, &now()).unwrap_err().code,
            ErrorCode::SigUnknownSigner
        );
        let mut tampered =
            record_for_withdrawal(&NodeWithdrawal::create(&key, 50, &now()).unwrap(), &now());
        let last = tampered.value.len() - 1;
        tampered.value[last - 10] ^= 1;
        assert!(accept_put(&mut store, tampered, &now()).is_err());
        let held = store.get(&record_key(&key.node_id())).unwrap();
        assert_eq!(validate_record(&held, &now()).unwrap().sequence_no(), 8);
    }
}
