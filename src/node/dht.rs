//! What the node feeds its two Kademlia routing tables, as functions over the
//! behaviour: peers that serve a DHT (identify says so) with their direct addresses,
//! and the addresses of verified advertisements for peers already in the mesh DHT.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::{Multiaddr, PeerId, identify, kad};
use mesh_advert::providers::ProviderBook;
use mesh_advert::{AdvertStore, StoredAdvert};
use mesh_core::{IpKey, MeshResult, NodeId, RateLimit, Timestamp};

use super::addrs;
use super::api::Dht;
use super::behaviour::MeshBehaviour;
use super::build::speaks;
use super::destination_budget::DestinationBudget;
use super::router::plan::is_circuit;
use super::store::SharedAdverts;

pub(crate) use super::ip_scope::amino_worthy;

/// identify told us a peer's protocols and listen addresses: feed both DHTs the ones
/// the identify wrapper `kept` (plausible from the peer's connection; Amino only those
/// [`amino_worthy`] passes). A peer that does not serve a DHT
/// (a Kademlia client) leaves that DHT's routing table: queries would dial it for
/// nothing, and it would be handed to others as a peer to ask. Whether the peer serves
/// the mesh DHT.
pub(crate) fn learn_from_identify(
    b: &mut MeshBehaviour,
    peer: PeerId,
    info: &identify::Info,
    kept: &[Multiaddr],
    amino_private: bool,
) -> bool {
    let amino = speaks(&info.protocols, &kad::PROTOCOL_NAME);
    let mesh = speaks(&info.protocols, &mesh_advert::kad::KAD_PROTOCOL);
    if !amino {
        b.amino.remove_peer(&peer);
    }
    if !mesh {
        b.mesh_kad.remove_peer(&peer);
    }
    let direct = kept.iter().filter(|a| !is_circuit(a));
    for addr in direct.take(MAX_ADDRS_PER_ENTRY).map(addrs::without_peer) {
        if amino && amino_worthy(&addr, amino_private) {
            b.amino.add_address(&peer, addr.clone());
        }
        if mesh {
            b.mesh_kad.add_address(&peer, addr);
        }
    }
    cap_entry(&mut b.amino, &peer);
    cap_entry(&mut b.mesh_kad, &peer);
    mesh
}

/// Addresses one peer's entry in either routing table keeps at most. libp2p-kad appends
/// every address it is given to the entry and drops one only when a dial to it fails,
/// so a peer pushing identify with fresh addresses again and again (or publishing
/// advertisements with new ones) would grow its entry without end, and every insert
/// clones the whole list into a `RoutingUpdated` event.
pub(crate) const MAX_ADDRS_PER_ENTRY: usize = 32;

/// Drops the oldest addresses of `peer`'s entry beyond [`MAX_ADDRS_PER_ENTRY`] (the
/// entry's list is in the order the addresses came). How many it dropped.
pub(crate) fn cap_entry<S: kad::store::RecordStore + Send + 'static>(
    kad: &mut kad::Behaviour<S>,
    peer: &PeerId,
) -> usize {
    let Some(bucket) = kad.kbucket(*peer) else {
        return 0;
    };
    let extra: Vec<Multiaddr> = bucket
        .iter()
        .find(|e| e.node.key.preimage() == peer)
        .map(|e| {
            let over = e.node.value.len().saturating_sub(MAX_ADDRS_PER_ENTRY);
            e.node.value.iter().take(over).cloned().collect()
        })
        .unwrap_or_default();
    for a in &extra {
        kad.remove_address(peer, a);
    }
    extra.len()
}

/// Amino's routing table took `addrs` for `peer` (Kademlia adds the address it dialed
/// a peer at by itself): drops those [`amino_worthy`] refuses, except addresses the
/// operator configured (`configured`, the bootstrap list). How many it dropped.
pub(crate) fn scope_amino_entry(
    b: &mut MeshBehaviour,
    peer: &PeerId,
    addrs: &[Multiaddr],
    configured: impl Fn() -> Vec<Multiaddr>,
    amino_private: bool,
) -> usize {
    let unworthy: Vec<&Multiaddr> = addrs
        .iter()
        .filter(|a| !amino_worthy(a, amino_private))
        .collect();
    if unworthy.is_empty() {
        return 0;
    }
    let configured: Vec<Multiaddr> = configured()
        .iter()
        .filter(|a| a.iter().last() == Some(libp2p::multiaddr::Protocol::P2p(*peer)))
        .map(addrs::without_peer)
        .collect();
    let mut dropped = 0;
    for a in unworthy {
        // Kademlia keeps addresses with `/p2p/<peer>`.
        if !configured.contains(&addrs::without_peer(a)) {
            tracing::debug!(%peer, addr = %a, "not for the Amino routing table");
            b.amino.remove_address(peer, a);
            dropped += 1;
        }
    }
    dropped
}

/// A node's verified advertisement: its addresses go to the mesh DHT's routing table,
/// if the node is in it already (Kademlia put it there after the node answered on
/// `/mesh/kad`, or identify said it serves the DHT). An advertisement does not say
/// whether its node serves the DHT, and a client in the routing table is dialed by
/// every query and handed to every asker. Relay circuits stay out: a DHT query should
/// not open circuits. So does every address beyond the node's scope
/// ([`addrs::in_node_scope`], given its own addresses `own`): the table hands its
/// addresses to every asker, and an advertisement names whatever its signer likes
/// (its askers' LAN hosts, their loopback services).
pub(crate) fn learn_advert(b: &mut MeshBehaviour, held: &StoredAdvert, own: &[Multiaddr]) {
    let Ok(peer) = held.node_id().to_peer_id() else {
        return;
    };
    let known = b
        .mesh_kad
        .kbucket(peer)
        .is_some_and(|bucket| bucket.iter().any(|e| e.node.key.preimage() == &peer));
    if !known {
        return;
    }
    // Decoded only for a node the table holds: most stored advertisements are not.
    let Some(ad) = held.decoded() else {
        return;
    };
    for addr in advert_table_addrs(&addrs::advert_addrs(&ad), own) {
        b.mesh_kad.add_address(&peer, addr);
    }
    cap_entry(&mut b.mesh_kad, &peer);
}

/// The addresses of an advertisement (`advertised`) that [`learn_advert`] puts in the
/// mesh DHT's routing table: no relay circuit, only those in the node's scope, at most
/// [`MAX_ADDRS_PER_ENTRY`].
fn advert_table_addrs(advertised: &[Multiaddr], own: &[Multiaddr]) -> Vec<Multiaddr> {
    let direct: Vec<Multiaddr> = advertised
        .iter()
        .filter(|a| !is_circuit(a))
        .cloned()
        .collect();
    addrs::in_node_scope(&direct, own, MAX_ADDRS_PER_ENTRY)
}

/// The longest gap between two bootstraps of the DHTs.
pub(crate) const BOOTSTRAP_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// The gap before the next bootstrap: [`BOOTSTRAP_EVERY`] less up to a fifth of it,
/// chosen by `random` (any `u32`). Nodes that started together (a fleet restarted, a
/// test network) would otherwise bootstrap together for ever: every Kademlia client
/// reconnects to the same servers in the same few seconds (200 nodes in one process
/// opened about 1,400 connections per five minutes, bunched around the bootstraps). The
/// jitter spreads them over a minute, and further with every period; it does not make
/// them fewer. (libp2p-kad's own periodic bootstrap, also 5 minutes, restarts its timer
/// at every bootstrap, so it never fires.)
pub(crate) fn bootstrap_gap(random: u32) -> std::time::Duration {
    let fifth = BOOTSTRAP_EVERY.as_millis() / 5;
    let less = u128::from(random) % (fifth + 1);
    let millis = BOOTSTRAP_EVERY.as_millis().saturating_sub(less);
    std::time::Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// Starts a bootstrap of both DHTs (each fails harmlessly while its routing table is
/// empty).
pub(crate) fn bootstrap(b: &mut MeshBehaviour) {
    let _ = b.amino.bootstrap();
    let _ = b.mesh_kad.bootstrap();
}

/// Peers whose live advertisements the store holds when the node starts (from its
/// earlier runs), with their advertised addresses: for [`remember_stored`] once the
/// node knows its own addresses, which takes `max` of them. Four times as many are
/// read, so that those its scope and destination budget leave out (anyone's, pushed)
/// do not crowd the rest out.
pub(crate) fn stored_peers(
    store: &SharedAdverts,
    me: NodeId,
    max: usize,
) -> Vec<(NodeId, Vec<Multiaddr>)> {
    let max = max.saturating_mul(4);
    let now = Timestamp::now();
    let mut cursor = 0;
    let mut out = Vec::new();
    loop {
        let page = store.since(cursor, 256);
        for item in &page.items {
            let node = item.node_id();
            if node == me || out.len() >= max || item.expires_at() <= &now {
                continue;
            }
            if let Some(ad) = item.decoded() {
                out.push((node, addrs::advert_addrs(&ad)));
            }
        }
        if page.next == cursor || page.items.is_empty() || out.len() >= max {
            break;
        }
        cursor = page.next;
    }
    out
}

/// Stored peers one destination (an IPv4 address, an IPv6 /64) may be dialed for at a
/// restart, over all the stored advertisements (loopback free): anyone can push an
/// advertisement naming any host, and the governor dials what it is given (and redials
/// it until it forgets the peer). Counted by peer, not by address, so that the members
/// reached through one relay (their circuit addresses start with the relay's) or the
/// nodes of one host are not cut to a few addresses.
pub(crate) const STORED_PER_DESTINATION: RateLimit = RateLimit {
    burst: 16,
    per_second: 0.0,
};

/// Addresses of one stored peer at one destination (its TCP, QUIC and WebSocket ports).
pub(crate) const STORED_ADDRS_PER_DESTINATION: usize = 3;

/// Of `peers` ([`stored_peers`], in the store's order), the first `max` to redial and at
/// which addresses: those in the node's scope (`own`: its listen and external
/// addresses; see [`addrs::in_node_scope`], at most [`super::kad_scope::MAX_DIAL_ADDRS`]
/// each), at most [`STORED_ADDRS_PER_DESTINATION`] of a peer per destination, and each
/// destination for no more than [`STORED_PER_DESTINATION`] peers in all. Peers left
/// without an address do not count towards `max`. Pure.
pub(crate) fn stored_dials(
    peers: Vec<(NodeId, Vec<Multiaddr>)>,
    own: &[Multiaddr],
    max: usize,
    now: Instant,
) -> Vec<(NodeId, Vec<Multiaddr>)> {
    let mut budget = DestinationBudget::new(STORED_PER_DESTINATION, 4096).loopback_free();
    let mut out = Vec::new();
    for (node, advertised) in peers {
        if out.len() >= max {
            break;
        }
        if node.to_peer_id().is_err() {
            continue;
        }
        let scoped = addrs::in_node_scope(&advertised, own, super::kad_scope::MAX_DIAL_ADDRS);
        // One token per destination this peer names (loopback free), its first
        // addresses there only: what each destination has left for this peer (none
        // once refused).
        let mut left: HashMap<IpKey, usize> = HashMap::new();
        let mut kept = Vec::new();
        for a in scoped {
            let Some(ip) = super::ip_scope::ip_of(&a) else {
                continue;
            };
            let n = left.entry(IpKey::of(ip)).or_insert_with(|| {
                if budget.admit_ip(ip, now) {
                    STORED_ADDRS_PER_DESTINATION
                } else {
                    0
                }
            });
            if *n > 0 {
                *n -= 1;
                kept.push(a);
            }
        }
        if !kept.is_empty() {
            out.push((node, kept));
        }
    }
    out
}

/// Hands `peers` ([`stored_dials`]) to the governor, so a restarted node reconnects
/// without its seeds. How many. As past peers, not named ones: anyone can publish an
/// advertisement. Not to the mesh DHT's routing table, which hands its entries to every
/// asker: an advertisement shows nothing of a DHT server (a connection to one adds it
/// there).
pub(crate) fn remember_stored(
    b: &mut MeshBehaviour,
    peers: Vec<(NodeId, Vec<Multiaddr>)>,
    own: &[Multiaddr],
) -> usize {
    let dials = stored_dials(peers, own, super::STORED_PEERS, Instant::now());
    let taken = dials.len();
    for (node, addrs) in dials {
        b.session.add_past_peer(node, addrs);
    }
    taken
}

/// A peer's provider record for `dht` (libp2p-kad checked that the provider is the
/// peer that sent it), connected from `remote`: into that DHT's store through `book`
/// (shares, plausible addresses; see `mesh_advert::providers`). Amino keeps no other
/// peer's values (see `build::amino`).
pub(crate) fn take_provider(
    b: &mut MeshBehaviour,
    book: &mut ProviderBook,
    dht: Dht,
    record: kad::ProviderRecord,
    remote: &[Multiaddr],
) -> MeshResult<()> {
    let provider = record.provider;
    let listen = b.identify.listen_addrs(&provider).to_vec();
    let store = match dht {
        Dht::Mesh => b.mesh_kad.store_mut(),
        Dht::Amino => b.amino.store_mut(),
    };
    let r = book.accept(store, record, remote, &listen, Instant::now());
    if let Err(e) = &r {
        tracing::debug!(%provider, ?dht, code = e.code.as_str(), error = %e, "provider record refused");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::{
        BOOTSTRAP_EVERY, MAX_ADDRS_PER_ENTRY, STORED_ADDRS_PER_DESTINATION, STORED_PER_DESTINATION,
        amino_worthy, bootstrap_gap, cap_entry, stored_dials,
    };
    use libp2p::{Multiaddr, PeerId, kad};
    use mesh_core::NodeId;
    use std::time::{Duration, Instant};

    /// Stored advertisements at a restart: many (anyone's) naming one host get it
    /// dialed for its budget of peers, a few addresses each; another host, the members
    /// behind one relay up to the budget, loopback on a loopback node free, and the
    /// peers left without an address do not count towards the `max` taken.
    #[test]
    fn stored_advertisements_aiming_at_one_host_get_it_only_its_budget() {
        let own: Vec<Multiaddr> = vec!["/ip4/192.0.2.1/tcp/4001".parse().unwrap()];
        let node = || mesh_core::NodeKeypair::generate().node_id();
        let at = |host: &str, port: usize| -> Multiaddr {
            format!("/ip4/{host}/tcp/{port}").parse().unwrap()
        };
        let budget = STORED_PER_DESTINATION.burst as usize;
        let mut peers: Vec<(NodeId, Vec<Multiaddr>)> = (0..40)
            .map(|i| {
                let ports = (0..8)
                    .map(|p| at("198.51.100.7", 1000 + 10 * i + p))
                    .collect();
                (node(), ports)
            })
            .collect();
        let other = node();
        peers.push((other, vec![at("203.0.113.9", 4001), at("10.9.9.9", 22)]));
        let dials = stored_dials(peers, &own, 64, Instant::now());
        let to_host: usize = dials
            .iter()
            .flat_map(|(_, a)| a)
            .filter(|a| a.to_string().contains("198.51.100.7"))
            .count();
        assert_eq!(to_host, budget * STORED_ADDRS_PER_DESTINATION, "{dials:?}");
        assert_eq!(
            dials.len(),
            budget + 1,
            "the host's budget of peers, plus the other"
        );
        assert_eq!(dials.last(), Some(&(other, vec![at("203.0.113.9", 4001)])));

        // Members behind one relay: their circuit addresses start with its address.
        let relay =
            "/ip4/203.0.113.50/tcp/4001/p2p/12D3KooWLRPJAA5o6e6Ypvwyvhd4QH5cjvWjbYwhh89bmtyN2ryL";
        let members: Vec<_> = (0..budget + 4)
            .map(|_| {
                let circuit: Multiaddr = format!("{relay}/p2p-circuit").parse().unwrap();
                (node(), vec![circuit])
            })
            .collect();
        assert_eq!(
            stored_dials(members, &own, 64, Instant::now()).len(),
            budget
        );

        // `max` counts the peers taken, after the budget: junk first does not crowd
        // out the honest peers behind it.
        let mut peers: Vec<_> = (0..64)
            .map(|i| (node(), vec![at("198.51.100.7", 3000 + i)]))
            .collect();
        peers.extend((0..10).map(|i| (node(), vec![at(&format!("203.0.113.{i}"), 4001)])));
        let dials = stored_dials(peers, &own, 20, Instant::now());
        assert_eq!(dials.len(), 20);
        assert_eq!(
            dials
                .iter()
                .filter(|(_, a)| a[0].to_string().contains("203.0.113."))
                .count(),
            4
        );
        let dials = stored_dials(
            (0..64)
                .map(|i| (node(), vec![at("198.51.100.7", 3000 + i)]))
                .chain((0..10).map(|i| (node(), vec![at(&format!("203.0.113.{i}"), 4001)])))
                .collect(),
            &own,
            64,
            Instant::now(),
        );
        assert_eq!(dials.len(), budget + 10, "every honest peer after the junk");

        // Nodes on one host (loopback alone): free.
        let lo: Vec<Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
        let peers: Vec<_> = (0..40)
            .map(|i| (node(), vec![at("127.0.0.1", 5000 + i)]))
            .collect();
        assert_eq!(stored_dials(peers, &lo, 64, Instant::now()).len(), 40);
    }

    /// An entry fed more addresses than the cap keeps the newest `MAX_ADDRS_PER_ENTRY`
    /// (libp2p-kad alone keeps them all).
    #[test]
    fn a_routing_entry_keeps_the_newest_addresses_up_to_the_cap() {
        let me = PeerId::random();
        let mut k = kad::Behaviour::new(me, kad::store::MemoryStore::new(me));
        let peer = PeerId::random();
        let addr = |i: usize| -> Multiaddr {
            format!("/ip4/203.0.113.7/tcp/{}", 1000 + i)
                .parse()
                .unwrap()
        };
        let n = MAX_ADDRS_PER_ENTRY + 8;
        for i in 0..n {
            k.add_address(&peer, addr(i));
        }
        let held = |k: &mut kad::Behaviour<kad::store::MemoryStore>| -> Vec<Multiaddr> {
            let bucket = k.kbucket(peer).unwrap();
            let e = bucket
                .iter()
                .find(|e| e.node.key.preimage() == &peer)
                .unwrap();
            e.node.value.iter().cloned().collect()
        };
        assert_eq!(held(&mut k).len(), n, "libp2p-kad keeps every address");
        assert_eq!(cap_entry(&mut k, &peer), 8);
        let kept = held(&mut k);
        assert_eq!(kept.len(), MAX_ADDRS_PER_ENTRY);
        let newest = addr(n - 1).with_p2p(peer).unwrap();
        let oldest = addr(0).with_p2p(peer).unwrap();
        assert!(
            kept.contains(&newest) && !kept.contains(&oldest),
            "{kept:?}"
        );
        assert_eq!(cap_entry(&mut k, &peer), 0);
        assert_eq!(cap_entry(&mut k, &PeerId::random()), 0);
    }

    #[test]
    fn bootstraps_come_every_four_to_five_minutes_spread_by_chance() {
        assert_eq!(bootstrap_gap(0), BOOTSTRAP_EVERY);
        assert_eq!(bootstrap_gap(60_000), Duration::from_secs(240));
        let gaps: std::collections::HashSet<Duration> = (0..1000u32)
            .map(|i| bootstrap_gap(i.wrapping_mul(2_654_435_761)))
            .collect();
        assert!(
            gaps.iter()
                .all(|g| (Duration::from_secs(240)..=BOOTSTRAP_EVERY).contains(g))
        );
        // Spread over the minute, not a few values.
        assert!(gaps.len() > 900, "{}", gaps.len());
        let (lo, hi) = (gaps.iter().min(), gaps.iter().max());
        assert!(lo < Some(&Duration::from_secs(245)) && hi > Some(&Duration::from_secs(295)));
    }

    #[test]
    fn amino_takes_public_addresses_only() {
        let ok = |s: &str, keep| amino_worthy(&s.parse().unwrap(), keep);
        assert!(ok("/ip4/203.0.113.7/tcp/4001", false));
        assert!(ok("/ip6/2001:db8::1/udp/4001/quic-v1", false));
        // A name may resolve anywhere, the node's own host or LAN included.
        assert!(!ok("/dns4/example.org/tcp/443/wss", false));
        assert!(!ok("/dns4/127.0.0.1.nip.io/tcp/6379", false));
        assert!(ok("/dns4/example.org/tcp/443/wss", true));
        for private in [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/10.1.2.3/tcp/4001",
            "/ip4/192.168.1.5/udp/4001/quic-v1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip6/::1/tcp/4001",
            "/ip6/fe80::1/tcp/4001",
            "/dns4/localhost/tcp/6379",
            "/dns4/metadata.google.internal/tcp/80",
            "/dns6/printer.local/tcp/9100",
        ] {
            assert!(!ok(private, false), "{private} filtered by default");
            assert!(ok(private, true), "{private} kept with the switch");
        }
        assert!(!ok("/ip4/0.0.0.0/tcp/4001", true));
    }

    /// An advertisement's addresses enter the mesh DHT's routing table (which hands
    /// them to every asker) only within the node's scope: not a LAN the node is not on,
    /// not loopback for a node beyond it, not a relay circuit.
    #[test]
    fn advertised_addresses_enter_the_table_only_in_scope() {
        let ma = |s: &str| -> Multiaddr { s.parse().unwrap() };
        let advertised = [
            ma("/ip4/127.0.0.1/tcp/6379"),
            ma("/ip4/192.168.1.1/tcp/80"),
            ma("/ip4/10.0.0.1/udp/4001/quic-v1"),
            ma(
                "/ip4/198.51.100.7/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
            ),
            ma("/ip4/198.51.100.8/udp/4001/quic-v1"),
        ];
        let own = [
            ma("/ip4/203.0.113.5/tcp/4001"),
            ma("/ip4/10.0.0.9/tcp/4001"),
        ];
        assert_eq!(
            super::advert_table_addrs(&advertised, &own),
            [
                ma("/ip4/10.0.0.1/udp/4001/quic-v1"),
                ma("/ip4/198.51.100.8/udp/4001/quic-v1")
            ]
        );
        // Several nodes on one host (the tests): loopback is theirs.
        let alone = [ma("/ip4/127.0.0.1/tcp/4001")];
        assert_eq!(
            super::advert_table_addrs(&advertised[..1], &alone),
            [ma("/ip4/127.0.0.1/tcp/6379")]
        );
    }
}
