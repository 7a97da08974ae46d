//! Advertisements in a Kademlia DHT (`/mesh/kad/1.0.0`), under `/mesh/adv/<node-id>`.
//!
//! libp2p's Kademlia acknowledges a PUT before anyone validates it and returns GET
//! results unvalidated. So the DHT must run with `StoreInserts::FilterBoth` (see
//! [`config`]), every inbound PUT must go through [`accept_put`] (which stores only a
//! verified advertisement that is newer than the one held), and every GET result
//! through [`validate_record`]. A bad record is then never stored and never served.

use std::time::{Duration, Instant};

use libp2p::StreamProtocol;
use libp2p::kad::store::RecordStore;
use libp2p::kad::{Record, RecordKey, StoreInserts};
use mesh_core::artifact::Artifact;
use mesh_core::{ErrorCode, MeshError, MeshResult, NodeAdvertisement, NodeId, Timestamp};

/// The mesh DHT's protocol name.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/mesh/kad/1.0.0");

/// Prefix of advertisement record keys.
pub const KEY_PREFIX: &str = "/mesh/adv/";

/// A Kademlia configuration for the mesh DHT: our protocol name, filtered inserts,
/// packets large enough for an advertisement.
pub fn config() -> libp2p::kad::Config {
    let mut c = libp2p::kad::Config::new(KAD_PROTOCOL);
    c.set_record_filtering(StoreInserts::FilterBoth)
        .set_max_packet_size(mesh_core::MAX_ARTIFACT_BYTES * 2);
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

/// Checks a record from the DHT: the key names the advertised node, the value is a
/// verified, unexpired advertisement in deterministic CBOR.
pub fn validate_record(record: &Record, now: &Timestamp) -> MeshResult<NodeAdvertisement> {
    let node = node_of_key(&record.key)
        .ok_or_else(|| MeshError::invalid("record key is not /mesh/adv/<node-id>"))?;
    let advert = NodeAdvertisement::verify_cbor(&record.value, now)?;
    if advert.node_id() != node {
        return Err(MeshError::new(
            ErrorCode::SigUnknownSigner,
            "record key names another node than the advertisement",
        ));
    }
    Ok(advert)
}

/// Applies an inbound PUT (from `InboundRequest::PutRecord { record: Some(..) }`): stores
/// the record only if it validates and is newer than the advertisement held for that
/// node; its expiry is capped at the advertisement's.
pub fn accept_put<S: RecordStore>(
    store: &mut S,
    record: Record,
    now: &Timestamp,
) -> MeshResult<NodeAdvertisement> {
    let advert = validate_record(&record, now)?;
    if let Some(held) = store.get(&record.key)
        && let Ok(held) = validate_record(&held, now)
        && held.sequence_no() >= advert.sequence_no()
    {
        return Err(MeshError::new(
            ErrorCode::AdvStaleSeq,
            format!(
                "sequence {} is not above the held {}",
                advert.sequence_no(),
                held.sequence_no()
            ),
        ));
    }
    let cap = expiry_instant(&advert, now);
    let mut record = record;
    record.expires = Some(record.expires.map_or(cap, |e| e.min(cap)));
    store.put(record).map_err(|e| {
        MeshError::new(
            ErrorCode::TransportRejected,
            format!("DHT store refused: {e}"),
        )
    })?;
    Ok(advert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::kad::store::MemoryStore;
    use mesh_core::NodeKeypair;

    fn now() -> Timestamp {
        Timestamp::now()
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
}
