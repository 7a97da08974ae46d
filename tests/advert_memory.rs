//! What the store keeps per advertisement: its wire form and a small index entry, not
//! the decoded document (a node holds about every advertisement of its swarms, and a
//! decoded `serde_json` document is about five times its wire form). One test alone in
//! this binary: the allocator's count is process-wide.
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::Arc;

use mesh_advert::own::advert_for;
use mesh_advert::{AdvertStore, MemoryStore, StoreLimits};
use mesh_core::artifact::Artifact;
use mesh_core::{NodeKeypair, RateLimit, Timestamp};
use mesh_testkit::heap::live;

/// jemalloc, as `meshd` runs it; its statistics give the bytes the program holds.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const N: usize = 2_000;

#[test]
fn a_stored_advertisement_costs_its_wire_bytes_and_a_small_index_entry() {
    let now = Timestamp::parse("2026-03-23T18:00:00Z").unwrap();
    let limits = StoreLimits {
        per_publisher: RateLimit::per_minute(1000, 60_000),
        ..StoreLimits::default()
    };
    let keys: Vec<NodeKeypair> = (0..N).map(|_| NodeKeypair::generate()).collect();
    // A member's advertisement in the swarm bench: a TCP and a QUIC listener.
    let addrs = [
        "/ip4/127.0.0.1/tcp/40011".parse().unwrap(),
        "/ip4/127.0.0.1/udp/40011/quic-v1".parse().unwrap(),
    ];
    let mut store = MemoryStore::new(limits);
    let mut wire_bytes = 0;
    for key in &keys {
        // The document is decoded from its wire form, as a publish from a peer is.
        let wire: Arc<[u8]> = advert_for(key, &addrs, 1, &now, 600)
            .unwrap()
            .to_cbor()
            .into();
        let ad = mesh_core::NodeAdvertisement::verify_cbor(&wire, &now).unwrap();
        wire_bytes += wire.len();
        store.insert_with_wire(ad, wire, &now).unwrap();
    }
    assert_eq!(store.len(), N);
    // What was stored reads back as the same advertisement.
    {
        let first = store.get(&keys[0].node_id(), &now).unwrap();
        let again = first.advert().unwrap();
        assert_eq!(again.node_id(), keys[0].node_id());
        assert_eq!(again.to_cbor().as_slice(), &*first.wire);
        again.verify_signature().unwrap();
    }
    // What the store holds is what dropping it gives back.
    let with_store = live();
    drop(store);
    let held = with_store - live();
    let per_entry = held as usize / N;
    let wire_per_entry = wire_bytes / N;
    let overhead = per_entry.saturating_sub(wire_per_entry);
    println!(
        "{N} advertisements: {held} bytes held, {per_entry} per entry \
         ({wire_per_entry} of wire, {overhead} beside it)"
    );
    // The index entries (by node, revision and expiry, and the publisher's rate
    // bucket) take about 670 bytes; with the decoded document kept it was about 4,250
    // (a 710-byte advertisement decodes to about 3.6 KiB of `serde_json` tree).
    assert!(
        overhead <= 1024,
        "{overhead} bytes per entry beside the wire form"
    );
}
