//! A composed node takes a hostile peer's mesh-DHT PUTs within that peer's network's
//! rate and share: valid, signed records of fresh node ids, sent as fast as the peer
//! can, do not fill the node's stores, and a second peer id from the same address gets
//! no fresh allowance. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::{Bootstrap, BootstrapName, Dht, KadMode, NodeConfig};
use mesh_advert::RecordLimits;
use mesh_advert::kad::record_for;
use mesh_core::{NoTrace, NodeKeypair, Timestamp};
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::kad_wire::{add_provider, put_value};
use mesh_testkit::node::{TestNode, start_node};

const WAIT: Duration = Duration::from_secs(60);

async fn start() -> TestNode {
    start_traced(Arc::new(NoTrace)).await
}

async fn start_traced(trace: Arc<dyn mesh_core::TraceSink>) -> TestNode {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        ..NodeConfig::default()
    };
    start_node(NodeKeypair::generate(), config, trace, WAIT).await
}

/// A valid, signed advertisement of `key`'s node at sequence `seq`, for 600 s.
fn advert(key: &NodeKeypair, seq: u64) -> mesh_core::NodeAdvertisement {
    let addrs = ["/ip4/192.0.2.1/tcp/4001".parse().unwrap()];
    mesh_advert::own::advert_for(key, &addrs, seq, &Timestamp::now(), 600).unwrap()
}

/// A mesh-DHT PUT of a fresh node's valid, signed advertisement.
fn fresh_put() -> Vec<u8> {
    let record = record_for(&advert(&NodeKeypair::generate(), 1), &Timestamp::now());
    put_value(record.key.as_ref(), &record.value)
}

/// `hostile` PUTs the mesh-DHT record of `ad` to `peer`.
async fn put_advert(
    hostile: &HostilePeer,
    peer: libp2p::PeerId,
    ad: &mesh_core::NodeAdvertisement,
) {
    let record = record_for(ad, &Timestamp::now());
    let put = put_value(record.key.as_ref(), &record.value);
    hostile
        .send(peer, "/mesh/kad/1.0.0", &put, WAIT)
        .await
        .unwrap();
}

/// Waits (bounded) until the node's mesh-DHT store holds its own record; asserts it
/// holds that one alone.
async fn own_record(node: &TestNode) -> usize {
    let mut held = 0;
    for _ in 0..100 {
        held = mesh_records(node).await;
        if held > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(held, 1, "the node's own record");
    held
}

/// Sends `n` PUTs from a new peer id.
async fn flood(node: &TestNode, n: usize) {
    let puts: Vec<Vec<u8>> = (0..n).map(|_| fresh_put()).collect();
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(node.p2p_addr(), WAIT).await.unwrap();
    for put in &puts {
        hostile
            .send(peer, "/mesh/kad/1.0.0", put, WAIT)
            .await
            .unwrap();
    }
}

async fn stored(node: &TestNode) -> usize {
    node.handle.status().await.unwrap().adverts_stored
}

/// Waits until the count of stored advertisements has not moved for a second.
async fn settled(node: &TestNode) -> usize {
    let mut last = stored(node).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stored(node).await;
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the store kept changing for 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_valid_dht_puts_is_held_to_its_networks_rate() {
    let node = start().await;
    let own = settled(&node).await;
    let limits = RecordLimits::default();
    let burst = limits.rate.burst as usize;

    // Three bursts' worth from one peer id, then one more from a second peer id at the
    // same address. Every PUT is answered (Kademlia's echo), so the node took them all.
    let start = Instant::now();
    flood(&node, 3 * burst).await;
    flood(&node, burst).await;
    let total = settled(&node).await - own;
    // Stored: one burst and what the rate refilled meanwhile (10 a second), not a
    // burst per peer id.
    let refill = (start.elapsed().as_secs_f64() * limits.rate.per_second).ceil() as usize + 1;
    assert!(
        (burst..=burst + refill).contains(&total),
        "stored {total} of {} (burst {burst}, refill {refill} in {:?})",
        4 * burst,
        start.elapsed()
    );
    assert!(total < 2 * burst, "stored {total}: a burst per peer id");
}

/// A peer that sends Amino provider records for more keys than libp2p's store holds
/// (1,024) gets its share stored and the rest refused, and the node can still announce
/// its own keys on Amino (it could not: `MaxProvidedKeys`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_fill_amino_s_provider_store() {
    let node = start().await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(node.p2p_addr(), WAIT).await.unwrap();
    let me = hostile.peer_id().to_bytes();
    let at = "/ip4/127.0.0.1/tcp/9"
        .parse::<libp2p::Multiaddr>()
        .unwrap()
        .to_vec();
    for i in 0..1100u32 {
        let key = format!("flood-{i}").into_bytes();
        let request = add_provider(&key, &me, std::slice::from_ref(&at));
        hostile
            .send(peer, "/ipfs/kad/1.0.0", &request, WAIT)
            .await
            .unwrap();
    }
    // The node's own records still go in.
    for i in 0..3u32 {
        let key = format!("mine-{i}").into_bytes();
        let r = tokio::time::timeout(WAIT, node.handle.provide(Dht::Amino, key)).await;
        assert!(matches!(r, Ok(Ok(()))), "{r:?}");
    }
}

async fn mesh_records(node: &TestNode) -> usize {
    node.handle.status().await.unwrap().dht.mesh_records
}

/// A `/mesh/advert` withdraw request for `key`'s node, sequence number `seq`.
fn withdraw_request(key: &NodeKeypair, seq: u64) -> Vec<u8> {
    let w = mesh_advert::NodeWithdrawal::create(key, seq, &Timestamp::now()).unwrap();
    mesh_advert::protocol::encode_request(&mesh_advert::protocol::Request::Withdraw {
        correlation: format!("w-{seq}"),
        withdrawal: Box::new(w),
    })
}

/// A withdrawal a peer sends on `/mesh/advert` replaces the mesh-DHT record the node
/// holds for that node, and takes no room in the store for a node it holds nothing of:
/// such records counted for no source and were never evicted, so withdrawals of fresh
/// keys (forwarded from node to node) could fill every store for a day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawals_take_dht_room_only_in_place_of_a_held_record() {
    let node = start().await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(node.p2p_addr(), WAIT).await.unwrap();
    // The node's own advertisement first.
    let before = own_record(&node).await;

    // A node whose advertisement the mesh DHT holds.
    let held = NodeKeypair::generate();
    put_advert(&hostile, peer, &advert(&held, 1)).await;

    // Twenty withdrawals of nodes it holds nothing of, then the held node's own.
    for _ in 0..20 {
        let answer = hostile
            .send(
                peer,
                "/mesh/advert/1.0.0",
                &withdraw_request(&NodeKeypair::generate(), 2),
                WAIT,
            )
            .await
            .unwrap();
        assert!(!answer.is_empty());
    }
    hostile
        .send(
            peer,
            "/mesh/advert/1.0.0",
            &withdraw_request(&held, 2),
            WAIT,
        )
        .await
        .unwrap();

    // Settled: the held record and nothing more.
    let mut last = usize::MAX;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = mesh_records(&node).await;
        if now == last {
            break;
        }
        last = now;
    }
    assert_eq!(last, before + 1, "{} records before", before);
}

/// What a peer's refused records make the node trace: the events of at most 60
/// refusals at once, then one a second, per source (they pushed every other event out of
/// the trace file). 200 malformed PUTs from one peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_puts_are_traced_within_the_peer_s_budget() {
    let trace = Arc::new(mesh_core::MemoryTrace::new(10_000));
    let node = start_traced(trace.clone()).await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(node.p2p_addr(), WAIT).await.unwrap();
    let started = Instant::now();
    for i in 0..200u32 {
        let put = put_value(format!("/mesh/advert/{i}").as_bytes(), b"not a record");
        hostile
            .send(peer, "/mesh/kad/1.0.0", &put, WAIT)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let secs = started.elapsed().as_secs() as usize;
    let from_peer = trace
        .events()
        .iter()
        .filter(|e| e.peer.as_deref() == Some(hostile.peer_id().to_string().as_str()))
        .filter(|e| e.event_type == mesh_core::TraceEventType::ErrorOccurred)
        .count();
    assert!(
        from_peer >= 60,
        "{from_peer} refusals traced: none refused?"
    );
    assert!(
        from_peer <= 60 + secs + 1,
        "{from_peer} refusals traced for 200 PUTs in {secs} s"
    );
}

/// A mesh-DHT record older than what the node's advertisement store holds is refused
/// (`E_ADV_STALE_SEQ`) and never served: a node withdrew at sequence 3 (pushed on
/// `/mesh/advert`), then a peer PUTs its advertisement of sequence 1, still unexpired.
/// The DHT's record store took it (only its own previous record was compared) and the
/// node's own fresh lookup answered it from there, past the withdrawal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_record_older_than_the_store_s_is_refused_and_not_served() {
    let node = start().await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(node.p2p_addr(), WAIT).await.unwrap();
    let before = own_record(&node).await;

    let gone = NodeKeypair::generate();
    hostile
        .send(
            peer,
            "/mesh/advert/1.0.0",
            &withdraw_request(&gone, 3),
            WAIT,
        )
        .await
        .unwrap();
    put_advert(&hostile, peer, &advert(&gone, 1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mesh_records(&node).await,
        before,
        "the withdrawn node's old record was taken"
    );
    let found = tokio::time::timeout(WAIT, node.handle.lookup_fresh(gone.node_id()))
        .await
        .expect("the lookup never ended");
    if let Ok(f) = &found {
        assert!(
            f.advert.is_none(),
            "the lookup answered the advertisement withdrawn: {f:?}"
        );
    }
}
