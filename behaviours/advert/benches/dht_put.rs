//! An inbound mesh-DHT PUT (`kad::accept_put`) against the way it was checked before
//! (the offered record verified, then the held one verified again), in the same run.
//!
//! Three PUTs a node meets: a replay of the held record's exact bytes (a hostile peer
//! repeating it, or a neighbour republishing an unchanged advertisement), a newer
//! advertisement that replaces the held one, and an older one that is refused.
//!
//! `cargo bench -p mesh-advert --bench dht_put` (about 5 s).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use libp2p::kad::store::{MemoryStore, RecordStore};
use libp2p::kad::{Record, RecordKey};
use mesh_advert::kad::{accept_put, record_for, validate_record};
use mesh_core::{MeshError, NodeKeypair, Timestamp};
use mesh_testkit::ratio::{Ratio, compare, print_table};

const ROUNDS: usize = 15;
const ROUND: Duration = Duration::from_millis(100);

/// The check before this change, kept here as the baseline: the offered record and the
/// held one are both verified, then the sequence numbers compared.
fn before(store: &mut MemoryStore, record: Record, now: &Timestamp) -> Result<(), MeshError> {
    let entry = validate_record(&record, now)?;
    if let Some(held) = store.get(&record.key)
        && let Ok(held) = validate_record(&held, now)
        && held.sequence_no() >= entry.sequence_no()
    {
        return Err(MeshError::invalid("stale"));
    }
    store
        .put(record)
        .map_err(|e| MeshError::invalid(e.to_string()))
}

fn store_holding(key: &NodeKeypair, held: &Record) -> MemoryStore {
    let peer = key.to_libp2p().public().to_peer_id();
    let mut store = MemoryStore::new(peer);
    store.put(held.clone()).unwrap();
    store
}

fn main() {
    let now = Timestamp::now();
    let key = NodeKeypair::generate();
    let advert = |seq| {
        mesh_advert::own::advert_for(
            &key,
            &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            seq,
            &now,
            600,
        )
        .unwrap()
    };
    let [older, held, newer] = [4, 5, 6].map(|seq| record_for(&advert(seq), &now));
    assert_eq!(
        held.key,
        RecordKey::new(&format!("/mesh/adv/{}", key.node_id()))
    );

    let mut rows = Vec::new();
    // Targets: a replay costs a decode, not a check; the others one check, not two.
    for (name, offered, stored, target) in [
        ("replay of the held record / before", &held, false, 0.1),
        ("newer record (stored) / before", &newer, true, 0.7),
        ("older record (refused) / before", &older, false, 0.7),
    ] {
        // One store per side, built once; a stored PUT is undone by putting the held
        // record back (on both sides, so its cost, well under 1 us, cancels out).
        let (mut base_store, mut cand_store) =
            (store_holding(&key, &held), store_holding(&key, &held));
        let mut baseline = || {
            let r = before(&mut base_store, offered.clone(), &now);
            assert_eq!(black_box(r).is_ok(), stored);
            base_store.put(held.clone()).unwrap();
        };
        let mut candidate = || {
            let r = accept_put(&mut cand_store, offered.clone(), &now);
            assert_eq!(black_box(r).is_ok(), stored);
            cand_store.put(held.clone()).unwrap();
        };
        let (b, c) = compare(ROUNDS, ROUND, &mut baseline, &mut candidate);
        rows.push(Ratio {
            name,
            baseline_ns: b,
            candidate_ns: c,
            target,
            at_least: false,
        });
    }
    print_table(
        "accept_put against verifying the held record again (same run, interleaved, \
         median of 15 rounds; ns per PUT)",
        &rows,
    );
    println!("(both sides include putting the held record back after each PUT)");
}
