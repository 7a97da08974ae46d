//! What gossipsub queues for a peer that reads nothing: its per-peer send queue was
//! bounded by count alone (5,000 messages of up to `max_transmit_size` each), so a peer
//! that subscribed, read nothing and asked with IWANT for every cached message had all
//! of them queued, three times over, for as long as its connection lived. The patched
//! copy (`vendor/libp2p-gossipsub`, `PATCHED.md`) bounds the bytes queued per peer and
//! for all peers (`Behaviour::set_max_queue_bytes`). Over real TCP connections on
//! loopback, against a raw peer that holds the node's gossipsub stream unread.
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{
    StreamProtocol,
    gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode},
    identity::Keypair,
    swarm::{Swarm, SwarmEvent},
};
use mesh_testkit::gossip_wire::{MESHSUB, hold_gossip, iwant, subscribe};
use mesh_testkit::{Net, net_swarm};

const MESSAGES: usize = 100;
const SIZE: usize = 50_000;
const PER_PEER: usize = 1024 * 1024;

/// Drives `g` for `d`.
async fn drive(g: &mut Swarm<gossipsub::Behaviour>, d: Duration) {
    let _ = tokio::time::timeout(d, async {
        loop {
            g.select_next_some().await;
        }
    })
    .await;
}

/// The bytes the node queued for a raw peer that subscribed to its topic and reads
/// nothing, after the node published [`MESSAGES`] of [`SIZE`] bytes and the peer asked
/// for each with IWANT three times; `bounded` sets [`PER_PEER`].
async fn queued_for_a_silent_peer(bounded: bool) -> usize {
    let key = Keypair::generate_ed25519();
    let config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .max_transmit_size(64 * 1024)
        .build()
        .unwrap();
    let mut behaviour: gossipsub::Behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config).unwrap();
    if bounded {
        behaviour.set_max_queue_bytes(PER_PEER, 8 * PER_PEER, 64 * 1024);
    }
    let topic = IdentTopic::new("silent");
    behaviour.subscribe(&topic).unwrap();
    let mut g = net_swarm(&key, Net::Tcp, Duration::from_secs(60), behaviour);
    g.listen_on(Net::Tcp.listen_addr()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = g.select_next_some().await {
            break address;
        }
    };
    // The raw peer: holds the node's stream unread, subscribes on its own stream.
    let peer_key = Keypair::generate_ed25519();
    let mut peer = net_swarm(
        &peer_key,
        Net::Tcp,
        Duration::from_secs(60),
        libp2p_stream::Behaviour::new(),
    );
    let holding = hold_gossip(peer.behaviour().new_control());
    let mut control = peer.behaviour().new_control();
    peer.dial(addr).unwrap();
    let peer_id = *peer.local_peer_id();
    let driving = tokio::spawn(async move {
        loop {
            peer.select_next_some().await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !g.is_connected(&peer_id) {
        assert!(Instant::now() < deadline, "no connection");
        drive(&mut g, Duration::from_millis(50)).await;
    }
    let g_id = *g.local_peer_id();
    let (to_node, mut sent) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let writer = tokio::spawn(async move {
        let mut s = control
            .open_stream(g_id, StreamProtocol::new(MESHSUB))
            .await
            .unwrap();
        while let Some(frame) = sent.recv().await {
            s.write_all(&frame).await.unwrap();
            s.flush().await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    to_node
        .send(subscribe(&topic.hash().into_string()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while g
        .behaviour()
        .all_peers()
        .all(|(_, topics)| topics.is_empty())
    {
        assert!(Instant::now() < deadline, "the subscription did not come");
        drive(&mut g, Duration::from_millis(50)).await;
    }
    let mut ids = Vec::new();
    for n in 0..MESSAGES {
        let data = vec![(n % 251) as u8; SIZE];
        if let Ok(id) = g.behaviour_mut().publish(topic.clone(), data) {
            ids.push(id.0);
        }
        drive(&mut g, Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        to_node.send(iwant(&ids)).await.unwrap();
        drive(&mut g, Duration::from_millis(300)).await;
    }
    drive(&mut g, Duration::from_secs(1)).await;
    let queued = g.behaviour().queued_bytes();
    writer.abort();
    holding.abort();
    driving.abort();
    queued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_gets_its_bytes_bound_queued() {
    let bounded = queued_for_a_silent_peer(true).await;
    let unbounded = queued_for_a_silent_peer(false).await;
    eprintln!("queued for a silent peer: {bounded} bytes bounded, {unbounded} without the bound");
    assert!(
        bounded <= PER_PEER + SIZE + 1024,
        "{bounded} bytes queued against a bound of {PER_PEER}"
    );
    assert!(
        unbounded > 4 * PER_PEER,
        "without the bound only {unbounded} bytes were queued: the test did not fill it"
    );
}
