use std::time::Duration;

use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};

use super::*;

fn ma(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn store() -> MemoryStore {
    MemoryStore::with_config(
        PeerId::random(),
        MemoryStoreConfig {
            max_provided_keys: 100_000,
            ..MemoryStoreConfig::default()
        },
    )
}

fn record(key: &str, provider: PeerId, addrs: &[&str], now: Instant) -> ProviderRecord {
    ProviderRecord {
        key: RecordKey::new(&key),
        provider,
        expires: Some(now + Duration::from_secs(3600)),
        addresses: addrs.iter().map(|a| ma(a)).collect(),
    }
}

#[test]
fn a_record_keeps_only_the_addresses_its_provider_is_at() {
    let (mut s, mut book, now) = (store(), ProviderBook::default(), Instant::now());
    let p = PeerId::random();
    let remote = [ma("/ip4/198.51.100.7/tcp/5555")];
    let r = record(
        "k",
        p,
        &[
            "/ip4/198.51.100.7/tcp/4001",
            "/ip4/198.51.100.7/udp/4001/quic-v1",
            "/ip4/192.0.2.99/tcp/53",
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/203.0.113.1/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo/p2p-circuit",
        ],
        now,
    );
    book.accept(&mut s, r, &remote, &[], now).unwrap();
    let held = s.providers(&RecordKey::new(&"k"));
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].addresses,
        vec![
            ma("/ip4/198.51.100.7/tcp/4001"),
            ma("/ip4/198.51.100.7/udp/4001/quic-v1"),
            ma(
                "/ip4/203.0.113.1/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo/p2p-circuit"
            ),
        ]
    );
    // A record without addresses takes the provider's identify listen addresses,
    // under the same rule.
    let bare = record("k2", p, &[], now);
    let listen = [
        ma("/ip4/198.51.100.7/tcp/4001"),
        ma("/ip4/10.0.0.7/tcp/4001"),
    ];
    book.accept(&mut s, bare, &remote, &listen, now).unwrap();
    assert_eq!(
        s.providers(&RecordKey::new(&"k2"))[0].addresses,
        vec![ma("/ip4/198.51.100.7/tcp/4001")]
    );
    // A long key is refused.
    let long = record(&"x".repeat(129), p, &[], now);
    let e = book.accept(&mut s, long, &remote, &[], now).unwrap_err();
    assert_eq!(e.code, ErrorCode::ProtoInvalid);
}

#[test]
fn quotas_per_provider_and_per_network_and_a_global_cap_with_eviction() {
    let limits = ProviderLimits {
        per_provider: 3,
        per_network: 5,
        max_records: 8,
        ..ProviderLimits::default()
    };
    let (mut s, mut book, now) = (store(), ProviderBook::new(limits), Instant::now());
    let remote = |i: u8| [ma(&format!("/ip4/198.51.100.{i}/tcp/1"))];
    // One provider: three keys, the fourth refused; its refresh of a key it holds is
    // taken.
    let p = PeerId::random();
    for k in 0..3 {
        book.accept(
            &mut s,
            record(&format!("a{k}"), p, &[], now),
            &remote(1),
            &[],
            now,
        )
        .unwrap();
    }
    let e = book
        .accept(&mut s, record("a3", p, &[], now), &remote(1), &[], now)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    book.accept(&mut s, record("a0", p, &[], now), &remote(1), &[], now)
        .unwrap();
    // Many keys from one network (fresh peer ids each): five, then refused.
    for k in 0..2 {
        book.accept(
            &mut s,
            record(&format!("b{k}"), PeerId::random(), &[], now),
            &remote(1),
            &[],
            now,
        )
        .unwrap();
    }
    let e = book
        .accept(
            &mut s,
            record("b9", PeerId::random(), &[], now),
            &remote(1),
            &[],
            now,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
    assert_eq!(book.len(), 5);
    // Other networks fill the book to its cap; then the busiest network (198.51.100.1)
    // gives up a record for each newcomer.
    for i in 2..=4 {
        book.accept(
            &mut s,
            record(&format!("c{i}"), PeerId::random(), &[], now),
            &remote(i),
            &[],
            now,
        )
        .unwrap();
    }
    assert_eq!(book.len(), 8);
    book.accept(
        &mut s,
        record("d", PeerId::random(), &[], now),
        &remote(9),
        &[],
        now,
    )
    .unwrap();
    assert_eq!(book.len(), 8);
    let of_first: usize = ["a0", "a1", "a2", "b0", "b1"]
        .iter()
        .map(|k| s.providers(&RecordKey::new(k)).len())
        .sum();
    assert_eq!(
        of_first, 4,
        "one of the busiest network's records made room"
    );
    assert_eq!(s.providers(&RecordKey::new(&"d")).len(), 1);
    assert_counts(&book);
}

/// The counts kept beside the records are those a scan finds.
fn assert_counts(book: &ProviderBook) {
    let mut of_provider: HashMap<PeerId, usize> = HashMap::new();
    let mut of_network: HashMap<Network, usize> = HashMap::new();
    for ((_, p), h) in &book.held {
        *of_provider.entry(*p).or_default() += 1;
        *of_network.entry(h.network).or_default() += 1;
    }
    assert_eq!(book.of_provider, of_provider);
    assert_eq!(book.of_network, of_network);
}

/// One provider floods `ADD_PROVIDER` (10,000 keys at one instant): its burst is
/// taken and the rest refused by its rate (it all was taken, within shares this
/// large); other providers are not held up; a minute later it may add again.
#[test]
fn a_flood_from_one_provider_takes_its_burst_then_waits() {
    let limits = ProviderLimits {
        per_provider: 100_000,
        per_network: 100_000,
        max_records: 100_000,
        ..ProviderLimits::default()
    };
    let (mut s, mut book, now) = (store(), ProviderBook::new(limits), Instant::now());
    let remote = [ma("/ip4/198.51.100.1/tcp/1")];
    let mut flood = |p: PeerId, tag: &str, at: Instant| -> usize {
        (0..10_000)
            .filter(|i| {
                let r = record(&format!("{tag}{i}"), p, &[], at);
                match book.accept(&mut s, r, &remote, &[], at) {
                    Ok(()) => true,
                    Err(e) => {
                        assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
                        assert!(e.detail.contains("too many ADD_PROVIDER"), "{e}");
                        false
                    }
                }
            })
            .count()
    };
    let burst = limits.rate.burst as usize;
    assert_eq!(burst, ProviderLimits::default().per_provider);
    let p = PeerId::random();
    assert_eq!(flood(p, "a", now), burst);
    assert_eq!(flood(PeerId::random(), "b", now), burst);
    assert_eq!(flood(p, "c", now + Duration::from_secs(60)), burst);
    assert_eq!(book.len(), 3 * burst);
}

/// A provider over its rate is refused before the book is looked at: not even the
/// expired records are looked for.
#[test]
fn a_provider_over_its_rate_costs_no_look_at_the_book() {
    let limits = ProviderLimits {
        rate: RateLimit::per_minute(3, 1),
        ..ProviderLimits::default()
    };
    let (mut s, mut book, now) = (store(), ProviderBook::new(limits), Instant::now());
    let remote = [ma("/ip4/198.51.100.1/tcp/1")];
    let mut short = record("short", PeerId::random(), &[], now);
    short.expires = Some(now + Duration::from_secs(5));
    book.accept(&mut s, short, &remote, &[], now).unwrap();
    let p = PeerId::random();
    for k in 0..3 {
        let r = record(&format!("k{k}"), p, &[], now);
        book.accept(&mut s, r, &remote, &[], now).unwrap();
    }
    let short_key = RecordKey::new(&"short");
    let held_short = |b: &ProviderBook| b.held.keys().any(|(k, _)| *k == short_key);
    let later = now + Duration::from_secs(10);
    for k in 0..1000 {
        let r = record(&format!("k{k}"), p, &[], later);
        let e = book.accept(&mut s, r, &remote, &[], later).unwrap_err();
        assert!(e.detail.contains("too many ADD_PROVIDER"), "{e}");
    }
    assert!(held_short(&book), "expired, but nobody looked");
    assert_eq!(book.len(), 4);
    // A minute on, one more token: taken, and the expired record is gone.
    let minute = now + Duration::from_secs(60);
    let r = record("k3", p, &[], minute);
    book.accept(&mut s, r, &remote, &[], minute).unwrap();
    assert!(!held_short(&book));
    assert_eq!(book.len(), 4);
    assert_counts(&book);
}

#[test]
fn expired_records_are_looked_for_at_most_once_a_second() {
    let (mut s, mut book, now) = (store(), ProviderBook::default(), Instant::now());
    let remote = [ma("/ip4/198.51.100.1/tcp/1")];
    let mut at = |ms: u64, key: &str, life_ms: u64| {
        let at = now + Duration::from_millis(ms);
        let mut r = record(key, PeerId::random(), &[], at);
        r.expires = Some(at + Duration::from_millis(life_ms));
        book.accept(&mut s, r, &remote, &[], at).unwrap();
        book.len()
    };
    assert_eq!(at(0, "brief", 100), 1);
    assert_eq!(
        at(500, "b", 3_600_000),
        2,
        "not looked for within the second"
    );
    assert_eq!(at(1000, "c", 3_600_000), 2, "looked for: `brief` is gone");
    assert_eq!(at(1500, "d", 3_600_000), 3);
}

/// A refresh from another network moves the record's count to that network.
#[test]
fn counts_follow_refreshes_from_another_network() {
    let limits = ProviderLimits {
        per_network: 1,
        ..ProviderLimits::default()
    };
    let (mut s, mut book, now) = (store(), ProviderBook::new(limits), Instant::now());
    let remote = |i: u8| [ma(&format!("/ip4/198.51.100.{i}/tcp/1"))];
    let p = PeerId::random();
    book.accept(&mut s, record("k", p, &[], now), &remote(1), &[], now)
        .unwrap();
    book.accept(&mut s, record("k", p, &[], now), &remote(2), &[], now)
        .unwrap();
    assert_counts(&book);
    book.accept(
        &mut s,
        record("q", PeerId::random(), &[], now),
        &remote(1),
        &[],
        now,
    )
    .unwrap();
    let e = book
        .accept(
            &mut s,
            record("r", PeerId::random(), &[], now),
            &remote(2),
            &[],
            now,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
    assert_counts(&book);
}

#[test]
fn expired_records_leave_the_book_and_the_store() {
    let (mut s, mut book, now) = (store(), ProviderBook::default(), Instant::now());
    let remote = [ma("/ip4/198.51.100.1/tcp/1")];
    book.accept(
        &mut s,
        record("old", PeerId::random(), &[], now),
        &remote,
        &[],
        now,
    )
    .unwrap();
    let later = now + Duration::from_secs(7200);
    book.accept(
        &mut s,
        record("new", PeerId::random(), &[], later),
        &remote,
        &[],
        later,
    )
    .unwrap();
    assert_eq!(book.len(), 1);
    assert!(s.providers(&RecordKey::new(&"old")).is_empty());
    assert_counts(&book);
}

/// The providers of `key` the store holds.
fn of_key(s: &MemoryStore, key: &str) -> Vec<PeerId> {
    s.providers(&RecordKey::new(&key))
        .into_iter()
        .map(|r| r.provider)
        .collect()
}

/// libp2p-kad's store keeps the first 20 providers of a key and ignores the rest: 20
/// fresh keys of one host held a group's key against every honest provider. Now one
/// network holds at most 4 of a key, and a full key takes a newcomer from a network
/// holding at least two fewer in place of the busiest network's newest record.
#[test]
fn one_network_holds_a_share_of_a_key_and_a_full_key_makes_room_for_another() {
    let (mut s, mut book, t0) = (store(), ProviderBook::default(), Instant::now());
    let remote = |i: u8| [ma(&format!("/ip4/198.51.100.{i}/tcp/1"))];
    let add = |book: &mut ProviderBook, s: &mut MemoryStore, net: u8, at: Instant| {
        let p = PeerId::random();
        book.accept(s, record("group", p, &[], at), &remote(net), &[], at)
            .map(|()| p)
    };
    // One host: 4, then refused.
    for n in 0..4u32 {
        add(&mut book, &mut s, 1, t0 + Duration::from_secs(n.into())).unwrap();
    }
    let e = add(&mut book, &mut s, 1, t0).unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
    assert_eq!(of_key(&s, "group").len(), 4);
    // Five hosts fill the key (20, the store's bound).
    for net in 2..=5 {
        for n in 0..4u32 {
            add(&mut book, &mut s, net, t0 + Duration::from_secs(n.into())).unwrap();
        }
    }
    assert_eq!(of_key(&s, "group").len(), 20);
    // A newcomer from another host takes the place of a busiest host's newest record;
    // a second one from it as well.
    let honest = add(&mut book, &mut s, 9, t0 + Duration::from_secs(10)).unwrap();
    let second = add(&mut book, &mut s, 9, t0 + Duration::from_secs(11)).unwrap();
    let held = of_key(&s, "group");
    assert_eq!(held.len(), 20);
    assert!(held.contains(&honest) && held.contains(&second));
    // Hosts holding the most still give way to a host holding fewer; the newcomers are
    // not the ones taken while others hold more.
    for net in 10..=13 {
        add(&mut book, &mut s, net, t0 + Duration::from_secs(12)).unwrap();
    }
    let held = of_key(&s, "group");
    assert!(held.contains(&honest) && held.contains(&second));
    assert_eq!(book.len(), 20);
    assert_counts(&book);
}

/// A key held by one provider from each of 20 hosts is even: a newcomer from a 21st is
/// refused and none of the twenty is pushed out (fresh hosts taking turns would push out
/// every honest provider, one `ADD_PROVIDER` each); a host holding two more than the
/// newcomer's gives up its newest record, not its oldest.
#[test]
fn an_even_key_keeps_its_providers_and_a_crowded_one_gives_up_its_newest() {
    let remote = |i: u8| [ma(&format!("/ip4/198.51.100.{i}/tcp/1"))];
    let t0 = Instant::now();
    let add = |book: &mut ProviderBook, s: &mut MemoryStore, net: u8, secs: u64| {
        let (p, at) = (PeerId::random(), t0 + Duration::from_secs(secs));
        book.accept(s, record("group", p, &[], at), &remote(net), &[], at)
            .map(|()| p)
    };
    let (mut s, mut book) = (store(), ProviderBook::default());
    let mut even: Vec<PeerId> = (1..=20u8)
        .map(|net| add(&mut book, &mut s, net, net.into()).unwrap())
        .collect();
    let e = add(&mut book, &mut s, 30, 30).unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
    let mut held = of_key(&s, "group");
    held.sort();
    even.sort();
    assert_eq!(held, even);

    // Host 1 holds three, seventeen hosts one each.
    let (mut s, mut book) = (store(), ProviderBook::default());
    let host_1: Vec<PeerId> = (1..=3)
        .map(|secs| add(&mut book, &mut s, 1, secs).unwrap())
        .collect();
    for net in 2..=18u8 {
        add(&mut book, &mut s, net, 10).unwrap();
    }
    let honest = add(&mut book, &mut s, 31, 20).unwrap();
    let held = of_key(&s, "group");
    assert_eq!(held.len(), 20);
    assert!(held.contains(&honest));
    assert!(held.contains(&host_1[0]) && held.contains(&host_1[1]));
    assert!(!held.contains(&host_1[2]), "host 1's newest gave way");
    assert_counts(&book);
}

/// Relayed providers (no network of their own) each count apart for a key's share:
/// they all fell under one "network", so four relayed providers held a key against
/// every provider behind a NAT.
#[test]
fn relayed_providers_each_count_apart_in_a_key() {
    let (mut s, mut book, now) = (store(), ProviderBook::default(), Instant::now());
    for _ in 0..6 {
        let p = PeerId::random();
        let circuit = [ma(&format!("/p2p/{p}"))];
        book.accept(&mut s, record("group", p, &[], now), &circuit, &[], now)
            .unwrap();
    }
    assert_eq!(of_key(&s, "group").len(), 6);
    assert_counts(&book);
}

/// A provider the store ignores is refused and not counted (the book counted it as held).
#[test]
fn a_provider_the_store_ignores_is_not_counted() {
    let mut s = MemoryStore::with_config(
        PeerId::random(),
        MemoryStoreConfig {
            max_providers_per_key: 3,
            ..MemoryStoreConfig::default()
        },
    );
    let (mut book, now) = (ProviderBook::default(), Instant::now());
    let remote = |i: u8| [ma(&format!("/ip4/198.51.100.{i}/tcp/1"))];
    for net in 1..=3u8 {
        book.accept(
            &mut s,
            record("k", PeerId::random(), &[], now),
            &remote(net),
            &[],
            now,
        )
        .unwrap();
    }
    let e = book
        .accept(
            &mut s,
            record("k", PeerId::random(), &[], now),
            &remote(4),
            &[],
            now,
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
    assert_eq!(book.len(), 3);
    assert_counts(&book);
}
