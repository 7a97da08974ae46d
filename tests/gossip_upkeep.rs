//! Gossipsub's upkeep in the patched copy (`vendor/libp2p-gossipsub`, `PATCHED.md`): a
//! quiet behaviour keeps its heartbeat and its scores' decay, and the room a burst of messages grew in its
//! caches is given back once the burst expired (`src/sparse.rs`). Upstream ran a
//! heartbeat only when something else polled the behaviour, and kept the duplicate
//! cache, the message cache and the peer score's delivery records at the size of the
//! busiest minute the node ever saw. Over real TCP connections on loopback.
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{
    StreamProtocol,
    gossipsub::{self, Event, IdentTopic, MessageAuthenticity, ValidationMode},
    identity::Keypair,
    swarm::{Swarm, SwarmEvent},
};
use mesh_testkit::gossip_wire::{MESHSUB, RawPeer, frame, signed};
use mesh_testkit::{Net, net_swarm};

const BURST: u64 = 2_000;
const TAIL: u64 = 5;
/// How long the duplicate cache remembers a message here (the node: a minute).
const REMEMBER: Duration = Duration::from_secs(3);

/// Drives `g` until `n` messages came, at most `within`.
async fn messages(g: &mut Swarm<gossipsub::Behaviour>, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, g.select_next_some()).await {
            Ok(SwarmEvent::Behaviour(Event::Message { .. })) => got += 1,
            Ok(_) => {}
            Err(_) => panic!("{got} of {n} messages came within {within:?}"),
        }
    }
}

/// `behaviour` in a swarm listening on loopback TCP, with no peer and nothing else to
/// do, driven for `d`.
async fn quietly(
    key: &Keypair,
    behaviour: gossipsub::Behaviour,
    d: Duration,
) -> Swarm<gossipsub::Behaviour> {
    let mut g = net_swarm(key, Net::Tcp, Duration::from_secs(60), behaviour);
    g.listen_on(Net::Tcp.listen_addr()).unwrap();
    let _ = tokio::time::timeout(d, async {
        loop {
            g.select_next_some().await;
        }
    })
    .await;
    g
}

/// A gossipsub behaviour with a heartbeat every 100 ms, listening, with no peer and
/// nothing else to do: its heartbeat runs about ten times a second (upstream: once; a
/// fired timer gave its waker away and the reset registered none).
#[tokio::test]
async fn a_quiet_gossipsub_keeps_its_heartbeat() {
    let key = Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_initial_delay(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut behaviour: gossipsub::Behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config).unwrap();
    behaviour.subscribe(&IdentTopic::new("quiet")).unwrap();
    let g = quietly(&key, behaviour, Duration::from_secs(2)).await;
    let beats = g.behaviour().heartbeats();
    assert!(beats >= 10, "{beats} heartbeats in 2 s at one every 100 ms");
}

/// The peer scores' decay timer re-arms itself the same way: a behaviour with peer
/// scoring, a decay every second and its heartbeat a minute away (so nothing else
/// polls it), listening with no peer: the scores decay about once a second (upstream:
/// once; the reset timer had no waker).
#[tokio::test]
async fn a_quiet_gossipsub_keeps_decaying_its_scores() {
    let key = Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .heartbeat_initial_delay(Duration::from_secs(60))
        .heartbeat_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut behaviour: gossipsub::Behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config).unwrap();
    let params = gossipsub::PeerScoreParams {
        decay_interval: Duration::from_secs(1),
        ..Default::default()
    };
    behaviour
        .with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .unwrap();
    let g = quietly(&key, behaviour, Duration::from_millis(4_500)).await;
    let decays = g.behaviour().score_decays();
    assert!(decays >= 3, "{decays} decays in 4.5 s at one a second");
}

#[tokio::test]
async fn a_burst_s_room_in_the_caches_is_given_back_once_it_expired() {
    let g_key = Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .duplicate_cache_time(REMEMBER)
        .heartbeat_initial_delay(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100))
        .history_length(3)
        .history_gossip(2)
        .validation_mode(ValidationMode::Strict)
        .build()
        .unwrap();
    let behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(g_key.clone()), config).unwrap();
    let mut g = net_swarm(&g_key, Net::Tcp, Duration::from_secs(60), behaviour);
    let topic = IdentTopic::new("burst");
    g.behaviour_mut().subscribe(&topic).unwrap();
    g.listen_on(Net::Tcp.listen_addr()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = g.select_next_some().await {
            break address;
        }
    };
    let empty = g.behaviour().cache_room();

    let p = RawPeer::connect_to(&mut g, addr, Net::Tcp, Duration::from_secs(60)).await;
    let (p_key, mut control) = (p.key.clone(), p.control.clone());
    let g_id = *g.local_peer_id();

    let t = topic.hash().into_string();
    let message = |n: u64| frame(&signed(&p_key, &n.to_be_bytes(), &n.to_be_bytes(), n, &t));
    let burst: Vec<u8> = (1..=BURST).flat_map(message).collect();
    let tail: Vec<u8> = (BURST + 1..=BURST + TAIL).flat_map(message).collect();
    let (send_tail, tail_sent) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let mut s = control
            .open_stream(g_id, StreamProtocol::new(MESHSUB))
            .await
            .unwrap();
        s.write_all(&burst).await.unwrap();
        s.flush().await.unwrap();
        let _ = tail_sent.await;
        s.write_all(&tail).await.unwrap();
        s.flush().await.unwrap();
        // Keep the stream open until the node has read it.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });

    messages(&mut g, BURST, Duration::from_secs(60)).await;
    let grown = g.behaviour().cache_room();
    // The burst expires from the duplicate cache after `REMEMBER` and from the message
    // cache after three heartbeats; the tail makes the duplicate cache sweep.
    let _ = tokio::time::timeout(REMEMBER + Duration::from_secs(1), async {
        loop {
            g.select_next_some().await;
        }
    })
    .await;
    send_tail.send(()).unwrap();
    messages(&mut g, TAIL, Duration::from_secs(20)).await;
    let after = g.behaviour().cache_room();
    eprintln!(
        "room [duplicates, messages, deliveries]: empty {empty:?}, after the burst {grown:?}, after the tail {after:?}"
    );

    assert!(
        grown[0] >= BURST as usize,
        "the duplicate cache held the burst: {grown:?}"
    );
    assert!(
        after[0] <= 128,
        "the duplicate cache kept room for {} messages after the burst expired (it holds {TAIL})",
        after[0]
    );
    assert!(
        after[1] <= 128 && after[1] < grown[1].max(129),
        "the message cache kept room for {} messages after the burst expired (after the burst: {})",
        after[1],
        grown[1]
    );
    writer.abort();
    drop(p);
}

/// Peers under fresh keys, each pruning every topic of the node with the longest
/// backoff gossipsub takes (an hour) and leaving: the node keeps a peer's backoffs
/// while it is connected and forgets them when it goes. Upstream kept them for the hour
/// (5 peers × 4 topics = 20 here; a peer a second grew the table without bound).
#[tokio::test]
async fn the_backoffs_of_peers_gone_are_forgotten() {
    const PEERS: usize = 5;
    let topics = ["t1", "t2", "t3", "t4"];
    let key = Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .build()
        .unwrap();
    let mut behaviour: gossipsub::Behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config).unwrap();
    for t in topics {
        behaviour.subscribe(&IdentTopic::new(t)).unwrap();
    }
    let mut g = net_swarm(&key, Net::Tcp, Duration::from_secs(60), behaviour);
    g.listen_on(Net::Tcp.listen_addr()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = g.select_next_some().await {
            break address;
        }
    };
    let g_id = *g.local_peer_id();
    let hashes: Vec<String> = topics
        .iter()
        .map(|t| IdentTopic::new(*t).hash().into_string())
        .collect();
    let names: Vec<&str> = hashes.iter().map(String::as_str).collect();
    let mut held_while_connected = Vec::new();
    for _ in 0..PEERS {
        let p = RawPeer::connect_to(&mut g, addr.clone(), Net::Tcp, Duration::from_secs(60)).await;
        let mut control = p.control.clone();
        let frame = mesh_testkit::gossip_wire::prune(&names, 3600);
        let writer = tokio::spawn(async move {
            let mut s = control
                .open_stream(g_id, StreamProtocol::new(MESHSUB))
                .await
                .unwrap();
            s.write_all(&frame).await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let before = g.behaviour().backoffs_held();
        while g.behaviour().backoffs_held() < before + topics.len() {
            assert!(Instant::now() < deadline, "the prune was not taken");
            let _ = tokio::time::timeout(Duration::from_millis(100), g.select_next_some()).await;
        }
        held_while_connected.push(g.behaviour().backoffs_held());
        writer.abort();
        let peer = p.peer;
        drop(p);
        let deadline = Instant::now() + Duration::from_secs(10);
        while g.is_connected(&peer) {
            assert!(Instant::now() < deadline, "the peer did not go");
            let _ = tokio::time::timeout(Duration::from_millis(100), g.select_next_some()).await;
        }
    }
    eprintln!("backoffs held with each peer connected: {held_while_connected:?}");
    assert!(held_while_connected.iter().all(|n| *n == topics.len()));
    assert_eq!(g.behaviour().backoffs_held(), 0, "backoffs of peers gone");
}
