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
//!   full, the record of the network holding the most that expires first makes room;
//! - per key, at most [`ProviderLimits::per_key_network`] records from one network (a
//!   relayed provider counts as its own), and when the key holds
//!   [`ProviderLimits::per_key`] (the store's own bound, which libp2p-kad's
//!   `MemoryStore` keeps by ignoring any provider past it: the first 20 fresh keys of one
//!   host held a group's key against every honest provider), the network holding the
//!   most of that key gives up its newest record to a newcomer from a network holding
//!   at least two fewer (so networks even out, and the records held longest stay);
//!   otherwise `E_TRANSPORT_REJECTED`. A record the store did not take is refused, not
//!   counted.
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
use mesh_core::{ErrorCode, IpKey, MeshError, MeshResult, RateLimit, RateLimiter, Source};

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
    /// Providers the store keeps per key (`MemoryStoreConfig::max_providers_per_key`,
    /// 20 by default; the node's own record counts).
    pub per_key: usize,
    /// Records of one key the providers of one network may hold.
    pub per_key_network: usize,
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
            per_key: 20,
            per_key_network: 4,
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

/// The network of a provider connected over `remote` (all its connections): that of a
/// direct connection if it has one.
fn network(remote: &[Multiaddr]) -> Network {
    remote
        .iter()
        .filter(|a| !is_circuit(a))
        .find_map(IpKey::of_multiaddr)
}

/// What a provider's records of one key count under: its network, or, without one (a
/// relayed provider), itself.
fn key_group(network: Network, provider: PeerId) -> Source {
    network.map_or(Source::Peer(provider), Source::Network)
}

#[derive(Debug, Clone)]
struct Held {
    network: Network,
    expires: Option<Instant>,
    /// When the book first took this provider's record of this key (a refresh keeps it).
    since: Instant,
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
        let net = network(remote);
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
            self.make_room_in_key(store, &key.0, key_group(net, key.1))?;
            if self.held.len() >= l.max_records {
                self.evict(store);
            }
        }
        let since = self.held.get(&key).map_or(now, |h| h.since);
        let held = Held {
            network: net,
            expires: record.expires,
            since,
        };
        if let Err(e) = store.add_provider(record) {
            return Err(refused(format!("provider record not stored: {e}")));
        }
        // libp2p-kad's store answers `Ok` for a provider it ignored (its key full).
        if !store.providers(&key.0).iter().any(|p| p.provider == key.1) {
            return Err(refused("the key's providers are full".into()));
        }
        self.insert(key, held);
        Ok(())
    }

    /// Before a record of a new provider of `key` counted under `group`: refuses it
    /// when `group` holds its share of the key; when the key is full, takes the newest
    /// record of the group holding the most of the key if that is at least two more
    /// than `group` holds, and refuses otherwise.
    fn make_room_in_key<S: RecordStore>(
        &mut self,
        store: &mut S,
        key: &RecordKey,
        group: Source,
    ) -> MeshResult<()> {
        let l = self.limits;
        let listed = store.providers(key);
        let mut of_key: HashMap<Source, Vec<(PeerId, Instant)>> = HashMap::new();
        for p in &listed {
            // The node's own record is not in the book: never given up.
            if let Some(h) = self.held.get(&(key.clone(), p.provider)) {
                of_key
                    .entry(key_group(h.network, p.provider))
                    .or_default()
                    .push((p.provider, h.since));
            }
        }
        let mine = of_key.get(&group).map_or(0, Vec::len);
        if mine >= l.per_key_network {
            return Err(refused(format!(
                "providers of this network hold {} records of this key already",
                l.per_key_network
            )));
        }
        if listed.len() < l.per_key {
            return Ok(());
        }
        let most = of_key.values().map(Vec::len).max().unwrap_or(0);
        if most < mine + 2 {
            return Err(refused("the key's providers are full".into()));
        }
        let victim = of_key
            .values()
            .filter(|v| v.len() == most)
            .flatten()
            .max_by_key(|(_, since)| *since)
            .map(|(p, _)| (key.clone(), *p));
        if let Some(victim) = victim {
            self.remove(store, &victim);
        }
        Ok(())
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
mod tests;
