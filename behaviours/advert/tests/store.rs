//! The in-memory store's rules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::HashSet;

use mesh_advert::own::advert_for;
use mesh_advert::{
    AdvertStore, InsertOutcome, MemoryStore, NodeWithdrawal, StoreError, StoreLimits,
};
use mesh_core::{ErrorCode, NodeAdvertisement, NodeKeypair, RateLimit, Timestamp};

fn t(secs: i64) -> Timestamp {
    Timestamp::parse("2026-03-23T18:00:00Z")
        .unwrap()
        .plus_secs(secs)
}

fn ad(key: &NodeKeypair, seq: u64, at: i64, ttl: i64) -> NodeAdvertisement {
    advert_for(
        key,
        &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        seq,
        &t(at),
        ttl,
    )
    .unwrap()
}

fn generous() -> StoreLimits {
    StoreLimits {
        per_publisher: RateLimit::per_minute(1000, 60_000),
        ..StoreLimits::default()
    }
}

#[test]
fn higher_replaces_equal_and_lower_are_stale() {
    let mut s = MemoryStore::new(generous());
    let k = NodeKeypair::generate();
    assert_eq!(
        s.insert(ad(&k, 5, 0, 600), &t(1)).unwrap(),
        InsertOutcome::Stored
    );
    assert_eq!(
        s.insert(ad(&k, 7, 0, 600), &t(1)).unwrap(),
        InsertOutcome::Replaced { previous: 5 }
    );
    for seq in [7, 6, 1] {
        let err = s.insert(ad(&k, seq, 0, 600), &t(1)).unwrap_err();
        assert_eq!(
            err,
            StoreError::Stale {
                current: 7,
                submitted: seq
            }
        );
        assert_eq!(err.code(), Some(ErrorCode::AdvStaleSeq));
    }
    assert_eq!(s.get(&k.node_id(), &t(1)).unwrap().advert.sequence_no(), 7);
    assert_eq!(s.len(), 1);
}

#[test]
fn expired_is_refused_hidden_and_swept() {
    let mut s = MemoryStore::new(generous());
    let k = NodeKeypair::generate();
    let err = s.insert(ad(&k, 1, 0, 60), &t(61)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AdvExpired));
    s.insert(ad(&k, 2, 0, 60), &t(10)).unwrap();
    assert!(s.get(&k.node_id(), &t(60)).is_some());
    assert!(
        s.get(&k.node_id(), &t(61)).is_none(),
        "expired entries are not served"
    );
    let other = NodeKeypair::generate();
    s.insert(ad(&other, 1, 0, 600), &t(10)).unwrap();
    assert_eq!(s.sweep(&t(100)).unwrap(), 1);
    assert_eq!(s.len(), 1);
    assert!(s.get(&other.node_id(), &t(100)).is_some());
}

#[test]
fn lifetime_over_the_maximum_is_refused() {
    let mut s = MemoryStore::new(StoreLimits {
        max_lifetime_secs: 3600,
        ..generous()
    });
    let k = NodeKeypair::generate();
    let err = s.insert(ad(&k, 1, 0, 7200), &t(1)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProtoInvalid));
}

#[test]
fn withdrawal_removes_and_blocks_replays() {
    let mut s = MemoryStore::new(generous());
    let k = NodeKeypair::generate();
    s.insert(ad(&k, 5, 0, 600), &t(1)).unwrap();
    // A withdrawal at or below the held sequence is stale.
    let w5 = NodeWithdrawal::create(&k, 5, &t(2)).unwrap();
    assert_eq!(
        s.withdraw(&w5, &t(2)).unwrap_err().code(),
        Some(ErrorCode::AdvStaleSeq)
    );
    let w6 = NodeWithdrawal::create(&k, 6, &t(2)).unwrap();
    s.withdraw(&w6, &t(2)).unwrap();
    assert!(s.get(&k.node_id(), &t(3)).is_none());
    assert_eq!(s.len(), 0);
    // Replays of older advertisements are refused; a newer one is accepted.
    for seq in [5, 6] {
        assert_eq!(
            s.insert(ad(&k, seq, 0, 600), &t(3)).unwrap_err().code(),
            Some(ErrorCode::AdvStaleSeq)
        );
    }
    s.insert(ad(&k, 7, 3, 600), &t(4)).unwrap();
    // The tombstone outlives every advertisement it must block, then is swept.
    let mut s2 = MemoryStore::new(StoreLimits {
        max_lifetime_secs: 600,
        ..generous()
    });
    s2.withdraw(&w6, &t(2)).unwrap();
    assert_eq!(s2.sweep(&t(500)).unwrap(), 0);
    assert_eq!(s2.sweep(&t(700)).unwrap(), 1);
}

#[test]
fn per_publisher_rate_limit() {
    let mut s = MemoryStore::new(StoreLimits {
        per_publisher: RateLimit::per_minute(3, 1),
        ..StoreLimits::default()
    });
    let k = NodeKeypair::generate();
    for seq in 1..=3 {
        s.insert(ad(&k, seq, 0, 600), &t(1)).unwrap();
    }
    let err = s.insert(ad(&k, 4, 0, 600), &t(1)).unwrap_err();
    assert!(matches!(err, StoreError::RateLimited { retry_after_secs } if retry_after_secs >= 1));
    assert_eq!(err.code(), Some(ErrorCode::TransportRejected));
    // Another publisher is not affected.
    s.insert(ad(&NodeKeypair::generate(), 1, 0, 600), &t(1))
        .unwrap();
    // The limited one recovers after a minute.
    s.insert(ad(&k, 4, 0, 600), &t(62)).unwrap();
}

#[test]
fn entry_and_byte_limits() {
    let mut s = MemoryStore::new(StoreLimits {
        max_entries: 3,
        ..generous()
    });
    let keys: Vec<NodeKeypair> = (0..4).map(|_| NodeKeypair::generate()).collect();
    for k in &keys[..3] {
        s.insert(ad(k, 1, 0, 600), &t(1)).unwrap();
    }
    let err = s.insert(ad(&keys[3], 1, 0, 600), &t(1)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TransportRejected));
    // Replacing an existing entry is still allowed when full.
    s.insert(ad(&keys[0], 2, 0, 600), &t(1)).unwrap();
    let one = ad(&keys[0], 3, 0, 600);
    let size = mesh_core::Artifact::to_cbor(&one).len();
    let mut small = MemoryStore::new(StoreLimits {
        max_bytes: size + 10,
        ..generous()
    });
    small.insert(one, &t(1)).unwrap();
    assert!(small.insert(ad(&keys[1], 1, 0, 600), &t(1)).is_err());
    assert!(small.bytes() <= size + 10);
}

#[test]
fn cursor_walk_sees_every_current_advertisement_once() {
    let mut s = MemoryStore::new(generous());
    let keys: Vec<NodeKeypair> = (0..25).map(|_| NodeKeypair::generate()).collect();
    for k in &keys {
        s.insert(ad(k, 1, 0, 600), &t(1)).unwrap();
    }
    // Replace some: they move to the end, and the old revision is gone.
    for k in &keys[..5] {
        s.insert(ad(k, 2, 0, 600), &t(1)).unwrap();
    }
    let mut seen = HashSet::new();
    let mut cursor = 0;
    let mut batches = 0;
    loop {
        let page = s.since(cursor, 4);
        if page.items.is_empty() {
            break;
        }
        assert!(page.items.len() <= 4);
        for item in &page.items {
            assert!(seen.insert(item.advert.node_id()), "seen twice");
        }
        assert!(page.next > cursor);
        cursor = page.next;
        batches += 1;
        assert!(batches < 100);
    }
    assert_eq!(seen.len(), 25);
    // Nothing new: the cursor stays.
    assert_eq!(s.since(cursor, 4).next, cursor);
}
