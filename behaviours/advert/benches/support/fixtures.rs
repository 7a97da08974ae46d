//! Fixtures shared by the advertisement benches (mesh-advert's store bench and
//! libmesh's durable-store and directory benches, which include this file by path).

use std::hint::black_box;
use std::sync::Arc;

use libp2p::Multiaddr;
use mesh_advert::MemoryStore;
use mesh_advert::own::advert_for;
use mesh_core::{Artifact, NodeAdvertisement, NodeKeypair, Timestamp};

/// `n` advertisements, each from its own key (sequence `1 + i`, one TCP endpoint),
/// signed at `now` with `ttl_secs`, built on every core.
pub(crate) fn signed_adverts(
    n: usize,
    now: &Timestamp,
    ttl_secs: i64,
) -> Vec<(NodeKeypair, NodeAdvertisement)> {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t * per..((t + 1) * per).min(n))
                        .map(|i| {
                            let key = NodeKeypair::generate();
                            let addr: Multiaddr =
                                format!("/ip4/10.{}.{}.1/tcp/4001", i >> 16, (i >> 8) & 0xff)
                                    .parse()
                                    .unwrap();
                            let ad =
                                advert_for(&key, &[addr], 1 + i as u64, now, ttl_secs).unwrap();
                            (key, ad)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// What a receiver does with advertisements off the wire: verify, then store with the
/// received bytes (copied into the shared buffer the store keeps).
pub(crate) fn verify_and_insert(store: &mut MemoryStore, wires: &[Vec<u8>], now: &Timestamp) {
    for wire in wires {
        let ad = NodeAdvertisement::verify_cbor(black_box(wire), now).unwrap();
        black_box(
            store
                .insert_with_wire(ad, Arc::from(wire.as_slice()), now)
                .unwrap(),
        );
    }
}

/// Deterministic Fisher-Yates shuffle driven by a 64-bit LCG.
pub(crate) fn shuffle<T>(items: &mut [T]) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((state >> 33) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
