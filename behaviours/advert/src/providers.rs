//! Provider records in the mesh DHT, taken in by hand.
//!
//! The mesh DHT runs with `StoreInserts::FilterBoth` (so that advertisement records are
//! validated, see [`crate::kad`]), which filters provider records too: an inbound
//! `ADD_PROVIDER` arrives as `InboundRequest::AddProvider { record: Some(..) }` and is
//! stored only if the application does it. [`ProviderBook::accept`] does, within bounds
//! a peer cannot push past:
//!
//! - libp2p-kad already drops a record whose provider is not the peer that sent it;
//! - a provider's `ADD_PROVIDER`s are rate-limited ([`ProviderLimits::rate`]) before
//!   anything else is looked at, so a flood costs the node one bucket look-up a message;
//! - the key is at most [`ProviderLimits::max_key_bytes`];
//! - the record keeps at most [`ProviderLimits::max_addrs`] addresses, and only those
//!   the provider is plausibly at: the IP it is connected from, or a relay circuit
//!   (other addresses would send the peers that ask to hosts of the provider's choosing);
//!   a record without addresses (libp2p-kad sends only confirmed external addresses, so
//!   a node that has none sends none) takes them from the listen addresses the provider
//!   reported in identify, under the same rule — Kademlia hands out a provider without
//!   addresses only if it is in the routing table, which a DHT client never is;
//! - at most [`ProviderLimits::per_provider`] keys per provider and
//!   [`ProviderLimits::per_network`] records per network (IPv4 address or IPv6 /64 it
//!   is connected from) — beyond them `E_TRANSPORT_REJECTED`;
//! - at most [`ProviderLimits::max_records`] records from other peers in all: when
//!   full, the record of the network holding the most that expires first makes room.
//!
//! The counts per provider and per network are kept beside the records, so a message
//! costs no scan of the book; expired records are looked for at most once a second
//! (the store drops them on its own when it meets them); only making room scans.
//!
//! Pure bookkeeping beside the store; `now` is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::kad::store::RecordStore;
use libp2p::kad::{ProviderRecord, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, IpKey, MeshError, MeshResult, RateLimit, RateLimiter};

/// Most provider peers whose `ADD_PROVIDER` rate is followed at once (as many as the
/// book holds records by default).
const RATE_KEYS: usize = 4096;

/// How often, at most, the book looks for expired records.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Bounds of the provider records kept for other peers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderLimits {
    /// Longest key, bytes.
    pub max_key_bytes: usize,
    /// Addresses kept per record.
    pub max_addrs: usize,
    /// Keys one provider may hold.
    pub per_provider: usize,
    /// Records the providers of one network (IPv4 address, IPv6 /64) may hold.
    pub per_network: usize,
    /// Records of other peers in all.
    pub max_records: usize,
    /// `ADD_PROVIDER`s one provider peer may send (checked before anything else).
    pub rate: RateLimit,
}

impl Default for ProviderLimits {
    /// A provider may announce its whole share (32 keys) at once, then one key a second:
    /// libp2p-kad republishes each key every 12 h, so a provider's useful traffic to one
    /// node is its 32 keys in bursts, far below that.
    fn default() -> Self {
        ProviderLimits {
            max_key_bytes: 128,
            max_addrs: 8,
            per_provider: 32,
            per_network: 256,
            max_records: 4096,
            rate: RateLimit::per_minute(32, 60),
        }
    }
}

/// Where a provider connects from: an IPv4 address or an IPv6 /64 ([`IpKey`]); `None`
/// for a connection that is not over IP (memory transport) or comes through a relay
/// circuit (all of those count as one network).
type Network = Option<IpKey>;

fn first_ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

fn network(remote: Option<&Multiaddr>) -> Network {
    remote
        .filter(|a| !is_circuit(a))
        .and_then(IpKey::of_multiaddr)
}

#[derive(Debug, Clone)]
struct Held {
    network: Network,
    expires: Option<Instant>,
}

/// The provider records this node keeps for other peers.
#[derive(Debug)]
pub struct ProviderBook {
    limits: ProviderLimits,
    held: HashMap<(RecordKey, PeerId), Held>,
    /// Records held per provider and per network (entries at zero are removed).
    of_provider: HashMap<PeerId, usize>,
    of_network: HashMap<Network, usize>,
    rate: RateLimiter<PeerId>,
    /// The first `now` seen: the rate limiter's clock counts from it.
    epoch: Option<Instant>,
    /// When expired records were last looked for.
    expired_at: Option<Instant>,
}

impl Default for ProviderBook {
    fn default() -> Self {
        ProviderBook::new(ProviderLimits::default())
    }
}

impl ProviderBook {
    /// An empty book with `limits`.
    pub fn new(limits: ProviderLimits) -> Self {
        ProviderBook {
            limits,
            held: HashMap::new(),
            of_provider: HashMap::new(),
            of_network: HashMap::new(),
            rate: RateLimiter::new(limits.rate, RATE_KEYS),
            epoch: None,
            expired_at: None,
        }
    }

    /// Records held for other peers.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes in `record` (from `InboundRequest::AddProvider`), whose provider is
    /// connected from `remote` (its connections' remote addresses) and reported
    /// `listen` in identify, into `store`.
    pub fn accept<S: RecordStore>(
        &mut self,
        store: &mut S,
        mut record: ProviderRecord,
        remote: &[Multiaddr],
        listen: &[Multiaddr],
        now: Instant,
    ) -> MeshResult<()> {
        let l = self.limits;
        // Before anything else: a provider over its rate costs one bucket look-up.
        let epoch = *self.epoch.get_or_insert(now);
        let ms = i64::try_from(now.saturating_duration_since(epoch).as_millis());
        if let Err(retry) = self.rate.check_ms(&record.provider, ms.unwrap_or(i64::MAX)) {
            return Err(refused(format!(
                "too many ADD_PROVIDER from {}; retry after {retry} s",
                record.provider
            )));
        }
        if record.key.as_ref().len() > l.max_key_bytes {
            return Err(MeshError::invalid(format!(
                "provider record key over {} bytes",
                l.max_key_bytes
            )));
        }
        let ips: Vec<IpAddr> = remote
            .iter()
            .filter(|a| !is_circuit(a))
            .filter_map(first_ip)
            .collect();
        if record.addresses.is_empty() {
            record.addresses = listen.to_vec();
        }
        record
            .addresses
            .retain(|a| is_circuit(a) || first_ip(a).is_some_and(|ip| ips.contains(&ip)));
        record.addresses.truncate(l.max_addrs);
        self.expire(store, now);
        let net = network(remote.first());
        let key = (record.key.clone(), record.provider);
        if !self.held.contains_key(&key) {
            let of_provider = count(&self.of_provider, &record.provider);
            if of_provider >= l.per_provider {
                return Err(refused(format!(
                    "this provider holds {} keys here already",
                    l.per_provider
                )));
            }
            let of_network = count(&self.of_network, &net);
            if of_network >= l.per_network {
                return Err(refused(format!(
                    "providers of this network hold {} records here already",
                    l.per_network
                )));
            }
            if self.held.len() >= l.max_records {
                self.evict(store);
            }
        }
        let held = Held {
            network: net,
            expires: record.expires,
        };
        match store.add_provider(record) {
            Ok(()) => {
                self.insert(key, held);
                Ok(())
            }
            Err(e) => Err(refused(format!("provider record not stored: {e}"))),
        }
    }

    /// Holds `held` under `key`, counted for its provider and network (instead of those
    /// of the record it replaces, if any).
    fn insert(&mut self, key: (RecordKey, PeerId), held: Held) {
        let (provider, net) = (key.1, held.network);
        if let Some(old) = self.held.insert(key, held) {
            self.uncount(&provider, &old.network);
        }
        *self.of_provider.entry(provider).or_default() += 1;
        *self.of_network.entry(net).or_default() += 1;
    }

    /// Drops the record under `key` from the book and `store`.
    fn remove<S: RecordStore>(&mut self, store: &mut S, key: &(RecordKey, PeerId)) {
        store.remove_provider(&key.0, &key.1);
        if let Some(old) = self.held.remove(key) {
            self.uncount(&key.1, &old.network);
        }
    }

    fn uncount(&mut self, provider: &PeerId, net: &Network) {
        decrement(&mut self.of_provider, provider);
        decrement(&mut self.of_network, net);
    }

    /// Forgets records that expired (the store drops them on its own when it meets
    /// them), unless it looked less than [`EXPIRE_EVERY`] ago.
    fn expire<S: RecordStore>(&mut self, store: &mut S, now: Instant) {
        if self
            .expired_at
            .is_some_and(|at| now.saturating_duration_since(at) < EXPIRE_EVERY)
        {
            return;
        }
        self.expired_at = Some(now);
        let gone: Vec<(RecordKey, PeerId)> = self
            .held
            .iter()
            .filter(|(_, h)| h.expires.is_some_and(|e| e <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.remove(store, &key);
        }
    }

    /// Makes room: the record that expires first among those of the network holding the
    /// most.
    fn evict<S: RecordStore>(&mut self, store: &mut S) {
        let busiest = self.of_network.iter().max_by_key(|(_, n)| **n);
        let Some(busiest) = busiest.map(|(k, _)| *k) else {
            return;
        };
        let victim = self
            .held
            .iter()
            .filter(|(_, h)| h.network == busiest)
            .min_by_key(|(_, h)| h.expires)
            .map(|(k, _)| k.clone());
        if let Some(key) = victim {
            self.remove(store, &key);
        }
    }
}

fn count<K: Hash + Eq>(counts: &HashMap<K, usize>, key: &K) -> usize {
    counts.get(key).copied().unwrap_or(0)
}

fn decrement<K: Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

fn refused(detail: String) -> MeshError {
    MeshError::new(ErrorCode::TransportRejected, detail)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
}
