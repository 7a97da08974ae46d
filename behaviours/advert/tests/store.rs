//! The in-memory store's rules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::collections::HashSet;

use mesh_advert::own::advert_for;
use mesh_advert::{
    AdvertStore, InsertOutcome, MemoryStore, NodeWithdrawal, Source, StoreError, StoreLimits,
};
use mesh_core::artifact::Artifact;
use mesh_core::{ErrorCode, IpKey, NodeAdvertisement, NodeKeypair, RateLimit, Timestamp};

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
    assert_eq!(s.get(&k.node_id(), &t(1)).unwrap().sequence_no(), 7);
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
            assert!(seen.insert(item.node_id()), "seen twice");
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

fn size_of(advert: &NodeAdvertisement) -> usize {
    mesh_core::Artifact::to_cbor(advert).len()
}

#[test]
fn the_byte_cap_counts_only_live_entries() {
    // Room for three advertisements; three short-lived ones fill it.
    let keys: Vec<NodeKeypair> = (0..5).map(|_| NodeKeypair::generate()).collect();
    let size = size_of(&ad(&keys[0], 1, 0, 60));
    let mut s = MemoryStore::new(StoreLimits {
        max_bytes: 3 * size + size / 2,
        ..generous()
    });
    for k in &keys[..3] {
        s.insert(ad(k, 1, 0, 60), &t(1)).unwrap();
    }
    // While they live, a new node is refused.
    let err = s.insert(ad(&keys[3], 1, 0, 600), &t(30)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TransportRejected));
    assert!(err.to_string().contains("store full"), "{err}");
    // Once they expired they no longer count: the new node is accepted, and what was
    // swept to make room is gone from the byte count.
    s.insert(ad(&keys[3], 1, 61, 600), &t(61)).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s.bytes(), size_of(&ad(&keys[3], 1, 61, 600)));
    s.insert(ad(&keys[4], 1, 61, 600), &t(61)).unwrap();
}

#[test]
fn tombstones_count_toward_the_entry_cap_until_they_lapse() {
    let mut s = MemoryStore::new(StoreLimits {
        max_entries: 3,
        max_lifetime_secs: 600,
        ..generous()
    });
    let keys: Vec<NodeKeypair> = (0..5).map(|_| NodeKeypair::generate()).collect();
    for k in &keys[..3] {
        s.withdraw(&NodeWithdrawal::create(k, 1, &t(0)).unwrap(), &t(0))
            .unwrap();
    }
    // Throwaway keys cannot pile up tombstones past the cap.
    let w = NodeWithdrawal::create(&keys[3], 1, &t(0)).unwrap();
    assert_eq!(
        s.withdraw(&w, &t(1)).unwrap_err().code(),
        Some(ErrorCode::TransportRejected)
    );
    assert_eq!(
        s.insert(ad(&keys[3], 1, 0, 60), &t(1)).unwrap_err().code(),
        Some(ErrorCode::TransportRejected)
    );
    // A withdrawn node coming back takes its tombstone's slot.
    s.insert(ad(&keys[0], 2, 0, 60), &t(1)).unwrap();
    // Lapsed tombstones make room.
    s.insert(ad(&keys[4], 1, 700, 60), &t(700)).unwrap();
    assert_eq!(s.held(), 1);
}

#[test]
fn one_record_per_publisher_of_bounded_size() {
    let k = NodeKeypair::generate();
    let one = ad(&k, 1, 0, 600);
    let mut s = MemoryStore::new(StoreLimits {
        max_record_bytes: size_of(&one) - 1,
        ..generous()
    });
    let err = s.insert(one.clone(), &t(1)).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TransportRejected));
    assert!(err.to_string().contains("per publisher"), "{err}");
    assert!(s.is_empty());
    let mut s = MemoryStore::new(StoreLimits {
        max_record_bytes: size_of(&one),
        ..generous()
    });
    // Re-publishing replaces: a publisher never holds two records.
    for seq in 1..=5 {
        s.insert(ad(&k, seq, 0, 600), &t(1)).unwrap();
    }
    assert_eq!((s.len(), s.held()), (1, 1));
}

#[test]
fn nothing_a_publisher_sends_removes_another_publishers_live_record() {
    let others: Vec<NodeKeypair> = (0..3).map(|_| NodeKeypair::generate()).collect();
    let (me, stranger) = (NodeKeypair::generate(), NodeKeypair::generate());
    let size = size_of(&ad(&me, 1, 0, 600));
    let mut s = MemoryStore::new(StoreLimits {
        max_entries: 4,
        max_bytes: 4 * size + 8,
        ..generous()
    });
    for k in others.iter().chain([&me]) {
        s.insert(ad(k, 1, 0, 600), &t(1)).unwrap();
    }
    let intact = |s: &MemoryStore| {
        for k in &others {
            assert_eq!(s.get(&k.node_id(), &t(2)).unwrap().sequence_no(), 1);
        }
    };
    // A stranger at the cap: refused, whatever it sends.
    assert!(s.insert(ad(&stranger, 1, 0, 600), &t(2)).is_err());
    assert!(
        s.withdraw(&NodeWithdrawal::create(&stranger, 1, &t(2)).unwrap(), &t(2))
            .is_err()
    );
    intact(&s);
    // A holder replaces, withdraws and comes back within its own slot.
    s.insert(ad(&me, 2, 0, 600), &t(2)).unwrap();
    s.withdraw(&NodeWithdrawal::create(&me, 3, &t(2)).unwrap(), &t(2))
        .unwrap();
    s.insert(ad(&me, 4, 0, 600), &t(2)).unwrap();
    intact(&s);
    assert_eq!(s.held(), 4);
    // Sweeps take only what expired.
    assert_eq!(s.sweep(&t(300)).unwrap(), 0);
    intact(&s);
}

#[test]
fn a_sweep_returns_what_it_removed_and_can_be_undone() {
    let mut s = MemoryStore::new(StoreLimits {
        max_lifetime_secs: 600,
        ..generous()
    });
    let (short, long, gone) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    s.insert(ad(&short, 1, 0, 60), &t(1)).unwrap();
    s.insert(ad(&long, 1, 0, 6000), &t(1)).unwrap_err(); // over the lifetime cap
    s.insert(ad(&long, 1, 50, 600), &t(51)).unwrap();
    s.withdraw(&NodeWithdrawal::create(&gone, 1, &t(0)).unwrap(), &t(0))
        .unwrap();
    let bytes = s.bytes();
    let swept = s.take_expired(&t(100));
    assert_eq!(swept.adverts.len(), 1);
    assert_eq!(swept.adverts[0].node_id(), short.node_id());
    assert!(swept.tombstones.is_empty());
    s.restore_swept(swept);
    assert_eq!((s.len(), s.bytes()), (2, bytes));
    let swept = s.take_expired(&t(620));
    assert_eq!(swept.len(), 2, "the short advert and the lapsed tombstone");
    assert_eq!(s.len(), 1);
    assert!(s.get(&long.node_id(), &t(500)).is_some());
}

fn net(last: u8) -> Source {
    Source::Network(IpKey::V4(std::net::Ipv4Addr::new(192, 0, 2, last)))
}

fn from(s: &mut MemoryStore, source: Source, at: i64) -> Result<NodeKeypair, StoreError> {
    let k = NodeKeypair::generate();
    s.insert_from(ad(&k, 1, at, 600), source, &t(at)).map(|_| k)
}

#[test]
fn one_network_holds_at_most_its_share_whatever_the_node_ids() {
    let mut s = MemoryStore::new(StoreLimits {
        per_source_entries: 3,
        ..generous()
    });
    for _ in 0..3 {
        from(&mut s, net(1), 0).unwrap();
    }
    // A fourth fresh node id from the same network is refused with a frozen code, so is
    // a withdrawal that would take a fourth slot; a newer record of a held node is not.
    let e = from(&mut s, net(1), 0).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TransportRejected), "{e}");
    assert!(e.to_string().contains("share"), "{e}");
    let k = NodeKeypair::generate();
    let w = NodeWithdrawal::create(&k, 1, &t(0)).unwrap();
    let e = s.withdraw_from(&w, net(1), &t(0)).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TransportRejected), "{e}");
    // Other networks and the node itself are not held back by it.
    from(&mut s, net(2), 0).unwrap();
    s.insert(ad(&k, 1, 0, 600), &t(0)).unwrap();
    assert_eq!(s.held_by(&net(1)).0, 3);
    assert_eq!((s.held_by(&net(2)).0, s.held_by(&Source::Local).0), (1, 0));
    assert_eq!((s.len(), s.sources()), (5, 2));
}

#[test]
fn a_full_store_takes_room_from_the_network_holding_the_most() {
    let mut s = MemoryStore::new(StoreLimits {
        max_entries: 6,
        ..generous()
    });
    let flood: Vec<NodeKeypair> = (0..6).map(|_| from(&mut s, net(1), 0).unwrap()).collect();
    // The flooder owns the whole store; another network still gets in, and the
    // flooder's oldest records make room, one per new record, down to an equal share.
    let mine: Vec<NodeKeypair> = (0..3).map(|_| from(&mut s, net(2), 1).unwrap()).collect();
    assert_eq!((s.held_by(&net(1)).0, s.held_by(&net(2)).0), (3, 3));
    for (i, k) in flood.iter().enumerate() {
        assert_eq!(s.get(&k.node_id(), &t(1)).is_some(), i >= 3, "flood {i}");
    }
    // At an equal share nobody gives way: the next one is refused, nothing is lost.
    let e = from(&mut s, net(2), 1).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TransportRejected), "{e}");
    // The flooder cannot take the room back.
    let e = from(&mut s, net(1), 1).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TransportRejected), "{e}");
    for k in &mine {
        assert!(s.get(&k.node_id(), &t(1)).is_some());
    }
    // The node's own changes take from the largest share, never from itself.
    s.insert(ad(&NodeKeypair::generate(), 1, 1, 600), &t(1))
        .unwrap();
    assert_eq!(s.len(), 6);
    assert_eq!(s.held_by(&net(1)).0 + s.held_by(&net(2)).0, 5);
}

#[test]
fn eviction_for_bytes_takes_the_heaviest_network_and_reports_what_went() {
    let one = {
        let k = NodeKeypair::generate();
        ad(&k, 1, 0, 600).to_cbor().len()
    };
    let mut s = MemoryStore::new(StoreLimits {
        max_bytes: one * 4 + one / 2,
        max_record_bytes: one * 2,
        ..generous()
    });
    for _ in 0..4 {
        from(&mut s, net(1), 0).unwrap();
    }
    let k = NodeKeypair::generate();
    let advert = ad(&k, 1, 0, 600);
    let wire: std::sync::Arc<[u8]> = advert.to_cbor().into();
    let (r, swept) = s.insert_sweeping(advert, wire, net(2), &t(0));
    r.unwrap();
    assert_eq!((swept.adverts.len(), swept.tombstones.len()), (1, 0));
    assert_eq!(s.source_of(&swept.adverts[0].node_id()), Source::Local);
    assert!(s.bytes() <= s.limits().max_bytes);
    assert_eq!((s.held_by(&net(1)).0, s.held_by(&net(2)).0), (3, 1));
}

#[test]
fn a_change_refused_by_the_rate_limit_evicts_nothing() {
    let mut s = MemoryStore::new(StoreLimits {
        max_entries: 3,
        per_publisher: RateLimit::per_minute(0, 1),
        ..StoreLimits::default()
    });
    // Three rows read back from disk fill the store (no rate limit on a restore).
    let held: Vec<NodeKeypair> = (0..3).map(|_| NodeKeypair::generate()).collect();
    for (i, k) in held.iter().enumerate() {
        let a = ad(k, 1, 0, 600);
        let wire: std::sync::Arc<[u8]> = a.to_cbor().into();
        s.restore(mesh_advert::StoredAdvert::new(&a, wire, i as u64 + 1));
    }
    let e = from(&mut s, net(2), 0).unwrap_err();
    assert!(matches!(e, StoreError::RateLimited { .. }), "{e}");
    for k in &held {
        assert!(s.get(&k.node_id(), &t(0)).is_some());
    }
    assert_eq!(s.held_by(&Source::Restored).0, 3);
}

#[test]
fn an_expired_record_does_not_count_against_its_network_s_share() {
    let mut s = MemoryStore::new(StoreLimits {
        per_source_entries: 2,
        ..generous()
    });
    // One short-lived and one long-lived record fill network 1's share.
    let short = NodeKeypair::generate();
    s.insert_from(ad(&short, 1, 0, 60), net(1), &t(0)).unwrap();
    let long = from(&mut s, net(1), 0).unwrap();
    assert!(
        from(&mut s, net(1), 30).is_err(),
        "at its share while both live"
    );
    // Once the short one has expired (nobody swept it), a new record fits, and the
    // expired one is reported gone so a durable store deletes it too.
    let k = NodeKeypair::generate();
    let advert = ad(&k, 1, 90, 600);
    let wire: std::sync::Arc<[u8]> = advert.to_cbor().into();
    let (r, swept) = s.insert_sweeping(advert, wire, net(1), &t(90));
    r.unwrap();
    let gone: Vec<_> = swept.adverts.iter().map(|a| a.node_id()).collect();
    assert_eq!(gone, vec![short.node_id()]);
    assert_eq!(s.held_by(&net(1)).0, 2);
    assert!(s.get(&long.node_id(), &t(90)).is_some());
    assert!(s.get(&k.node_id(), &t(90)).is_some());
}

#[test]
fn records_evicted_from_a_full_store_still_bar_their_replays() {
    let mut s = MemoryStore::new(StoreLimits {
        max_entries: 4,
        ..generous()
    });
    // A node withdraws (its tombstone counted under net 1), another advertises its
    // second sequence number (net 1 too).
    let gone = NodeKeypair::generate();
    let withdrawn = ad(&gone, 5, 0, 600);
    s.insert_from(withdrawn.clone(), net(1), &t(0)).unwrap();
    let w = NodeWithdrawal::create(&gone, 6, &t(1)).unwrap();
    s.withdraw_from(&w, net(1), &t(1)).unwrap();
    let moved = NodeKeypair::generate();
    s.insert_from(ad(&moved, 1, 1, 600), net(1), &t(1)).unwrap();
    s.insert_from(ad(&moved, 2, 2, 600), net(1), &t(2)).unwrap();
    from(&mut s, net(1), 2).unwrap();
    from(&mut s, net(1), 2).unwrap();
    // Others fill the store: net 1's oldest slots (the tombstone, then the
    // advertisement) make room.
    for _ in 0..2 {
        from(&mut s, net(2), 3).unwrap();
    }
    assert!(
        s.tombstone_of(&gone.node_id()).is_none(),
        "the tombstone was evicted"
    );
    assert!(
        s.get(&moved.node_id(), &t(3)).is_none(),
        "the advertisement was evicted"
    );
    // Their replays are still refused: the withdrawn advertisement, the older sequence.
    for (advert, floor) in [(withdrawn, 6), (ad(&moved, 1, 1, 600), 1)] {
        let e = s.insert_from(advert, net(3), &t(4)).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::AdvStaleSeq), "{e}");
        assert!(
            matches!(e, StoreError::Stale { current, .. } if current == floor),
            "{e}"
        );
    }
    // Newer records of both nodes are taken.
    s.insert_from(ad(&gone, 7, 4, 600), net(3), &t(4)).unwrap();
    s.insert_from(ad(&moved, 3, 4, 600), net(4), &t(4)).unwrap();
}

/// Revisions at the top of `u64` read back from a damaged store file: the next change
/// numbers the entries again from 1, in their order, instead of wrapping to 0 (or
/// panicking where overflow is checked), and paging by revision still sees every entry.
#[test]
fn revisions_at_the_top_from_a_damaged_file_are_numbered_again_not_wrapped() {
    let mut s = MemoryStore::new(generous());
    let (a, b, c) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    for (k, revision) in [(&a, u64::MAX - 1), (&b, u64::MAX)] {
        let advert = ad(k, 1, 0, 3600);
        let wire = advert.to_cbor();
        s.restore(mesh_advert::StoredAdvert::new(
            &advert,
            wire.into(),
            revision,
        ));
    }
    s.restore_revision(u64::MAX);
    s.insert(ad(&c, 1, 0, 3600), &t(1)).unwrap();
    assert_eq!(s.revision(), 3);
    let page = s.since(0, 10);
    let order: Vec<_> = page.items.iter().map(|e| e.node_id()).collect();
    assert_eq!(order, [a.node_id(), b.node_id(), c.node_id()]);
    assert_eq!(page.next, 3);
}
