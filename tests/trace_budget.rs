//! What a peer's refused input makes a composed node write to its trace: the events of
//! at most 60 refusals at once, then one a second, per source (the peer's network, or
//! the peer itself on loopback), for signal frames and for swarm presences handed
//! over by gossip under fresh authors, as for DHT records (`tests/node_dht_shares.rs`).
//! Each refusal wrote an event before, as fast as a peer sent them, pushing every
//! other event out of the operator's trace file. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use libp2p::StreamProtocol;
use libp2p::identity::Keypair;

use mesh_core::{MemoryTrace, NodeKeypair, TraceEventType};
use mesh_signal::group::DiscoveryKey;
use mesh_testkit::Net;
use mesh_testkit::gossip_wire::{MESHSUB, RawPeer, frame, signed};
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::node::{TestNode, loopback_config, start_node};

const WAIT: Duration = Duration::from_secs(60);

async fn start(trace: Arc<MemoryTrace>) -> TestNode {
    start_node(NodeKeypair::generate(), loopback_config(), trace, WAIT).await
}

/// The `error/occurred` events about `peer` (`None`: those naming no peer, as a refused
/// presence's, whose author is not who handed it over).
fn errors(trace: &MemoryTrace, peer: Option<&str>) -> usize {
    trace
        .events()
        .iter()
        .filter(|e| e.event_type == TraceEventType::ErrorOccurred)
        .filter(|e| e.peer.as_deref() == peer)
        .count()
}

/// Waits until `count` reaches 60 and then stays the same for a second (checked every
/// 250 ms, at most 30 s in all).
async fn settled(count: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut last, mut quiet) = (count(), 0);
    while Instant::now() < deadline && (last < 60 || quiet < 4) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = count();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    last
}

/// 200 requests of a malformed signal frame from one peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_signal_frames_are_traced_within_the_peer_s_budget() {
    let trace = Arc::new(MemoryTrace::new(10_000));
    let node = start(trace.clone()).await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(node.p2p_addr(), WAIT).await.unwrap();
    let id = hostile.peer_id().to_string();
    let started = Instant::now();
    for _ in 0..200 {
        // An empty CBOR map: no `signal-frame.v1`.
        hostile
            .send(peer, "/mesh/signal/1.0.0", &[0xa0], WAIT)
            .await
            .unwrap();
    }
    let traced = settled(|| errors(&trace, Some(&id))).await;
    let secs = started.elapsed().as_secs() as usize;
    assert!(traced >= 60, "{traced} refusals traced: none refused?");
    assert!(
        traced <= 60 + secs + 1,
        "{traced} refusals traced for 200 frames in {secs} s"
    );
    // The rest are counted.
    let suppressed = node.handle.status().await.unwrap().traces_suppressed as usize;
    assert!(
        traced + suppressed >= 200,
        "{traced} traced, {suppressed} counted"
    );
}

/// 200 malformed presences on a swarm's topic, each under a fresh gossipsub author,
/// all handed over by one neighbour: the budget counts the neighbour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_presences_are_traced_within_the_neighbour_s_budget() {
    let trace = Arc::new(MemoryTrace::new(10_000));
    let node = start(trace.clone()).await;
    let key = DiscoveryKey::from_name("traced");
    assert!(node.handle.join_swarm(key).await.unwrap());

    let mut p = RawPeer::dial(node.p2p_addr(), Net::Tcp, WAIT);
    p.connected(Duration::from_secs(10)).await;
    let mut control = p.control.clone();

    let topic = key.topic();
    let mut wire = Vec::new();
    for i in 0..200 {
        // An empty CBOR map: no `swarm-presence.v1`. A fresh author each time, so the
        // per-author presence rate admits every one.
        let author = Keypair::generate_ed25519();
        wire.extend(frame(&signed(&author, &[0xa0], &[0xa0], i, &topic)));
    }
    let started = Instant::now();
    let mut s = control
        .open_stream(node.peer, StreamProtocol::new(MESHSUB))
        .await
        .unwrap();
    s.write_all(&wire).await.unwrap();
    s.flush().await.unwrap();
    let traced = settled(|| errors(&trace, None)).await;
    let secs = started.elapsed().as_secs() as usize;
    assert!(traced >= 60, "{traced} refusals traced: none refused?");
    assert!(
        traced <= 60 + secs + 1,
        "{traced} refusals traced for 200 presences in {secs} s"
    );
    let suppressed = node.handle.status().await.unwrap().traces_suppressed as usize;
    assert!(
        traced + suppressed >= 200,
        "{traced} traced, {suppressed} counted"
    );
    drop(s);
    drop(p);
}
