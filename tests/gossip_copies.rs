//! What gossipsub spends on copies and on peers gone (the patched copy in
//! `vendor/libp2p-gossipsub`): a copy of a message whose signature verified is not
//! verified again, a changed copy is, and the co-location table forgets the address
//! of a peer once its last connection closed. Over real TCP connections on loopback,
//! against the node's own gossipsub (`libmesh::node::build::gossipsub`).
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::{AsyncWriteExt, StreamExt};
use libmesh::node::build::gossipsub;
use libp2p::{
    Multiaddr, StreamProtocol,
    gossipsub::{Event, IdentTopic},
    identity::Keypair,
    swarm::{SwarmEvent, dummy},
};
use mesh_testkit::gossip_wire::{MESHSUB, RawPeer, frame, signed};
use mesh_testkit::{Net, net_swarm};

/// A peer sends one forged message, then 50 copies of one valid message, then a second
/// valid message, each in its own frame on one gossipsub stream: the node delivers the
/// two valid messages, never the forgery, and verifies three signatures (52 before:
/// each copy was verified in the codec, before the duplicate check).
#[tokio::test]
async fn a_copy_already_verified_is_not_verified_again() {
    let g_key = Keypair::generate_ed25519();
    let mut g = net_swarm(
        &g_key,
        Net::Tcp,
        Duration::from_secs(60),
        gossipsub(g_key.clone(), 64 * 1024).unwrap(),
    );
    let topic = IdentTopic::new("copies");
    g.behaviour_mut().subscribe(&topic).unwrap();
    g.listen_on(Net::Tcp.listen_addr()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = g.select_next_some().await {
            break address;
        }
    };

    let p = RawPeer::connect_to(&mut g, addr, Net::Tcp, Duration::from_secs(60)).await;
    let (p_key, mut control) = (p.key.clone(), p.control.clone());
    let g_id = *g.local_peer_id();

    let t = topic.hash().into_string();
    let mut wire = frame(&signed(&p_key, b"good", b"bad!", 1, &t));
    let good = frame(&signed(&p_key, b"good", b"good", 2, &t));
    for _ in 0..50 {
        wire.extend_from_slice(&good);
    }
    wire.extend(frame(&signed(&p_key, b"end", b"end", 3, &t)));

    // A process-wide count: the other test of this binary verifies no message.
    let before = libp2p::gossipsub::signatures_checked();
    let protocol = StreamProtocol::new(MESHSUB);
    let writer = tokio::spawn(async move {
        let mut s = control.open_stream(g_id, protocol).await.unwrap();
        s.write_all(&wire).await.unwrap();
        s.flush().await.unwrap();
        // Keep the stream open until the node has read it.
        tokio::time::sleep(Duration::from_secs(20)).await;
    });

    let mut delivered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while delivered.last().map(Vec::as_slice) != Some(b"end".as_slice()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, g.select_next_some()).await {
            Ok(SwarmEvent::Behaviour(Event::Message { message, .. })) => {
                delivered.push(message.data)
            }
            Ok(_) => {}
            Err(_) => panic!("the last message never came; delivered {delivered:?}"),
        }
    }
    let checked = libp2p::gossipsub::signatures_checked() - before;
    assert_eq!(delivered, vec![b"good".to_vec(), b"end".to_vec()]);
    assert_eq!(
        checked, 3,
        "signatures verified: the forgery, the first copy of `good`, `end`"
    );
    writer.abort();
    drop(p);
}

/// Ten peers connect from ten loopback addresses (QUIC) and leave: gossipsub's co-location
/// table held the ten while they were connected and none after (upstream kept an empty
/// set for every address for the life of the node, some 400 bytes each: an IPv6 peer
/// grew it at will).
#[tokio::test]
async fn the_colocation_table_forgets_peers_gone() {
    let g_key = Keypair::generate_ed25519();
    let mut g = net_swarm(
        &g_key,
        Net::Quic,
        Duration::from_secs(60),
        gossipsub(g_key.clone(), 64 * 1024).unwrap(),
    );
    g.listen_on(Net::Quic.listen_addr()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = g.select_next_some().await {
            break address;
        }
    };

    let mut peers = Vec::new();
    let mut sources = std::collections::HashSet::new();
    for k in 2..12u8 {
        let key = Keypair::generate_ed25519();
        let mut c = net_swarm(&key, Net::Quic, Duration::from_secs(60), dummy::Behaviour);
        // Listening first makes the dial leave from this address (QUIC dials from a
        // listener's socket).
        let own: Multiaddr = format!("/ip4/127.0.0.{k}/udp/0/quic-v1").parse().unwrap();
        c.listen_on(own).unwrap();
        loop {
            if let SwarmEvent::NewListenAddr { .. } = c.select_next_some().await {
                break;
            }
        }
        c.dial(addr.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no connection from 127.0.0.{k}");
            tokio::select! {
                e = g.select_next_some() => if let SwarmEvent::ConnectionEstablished { endpoint, .. } = e {
                    sources.insert(endpoint.get_remote_address().iter().next().map(|p| p.to_string()));
                    break;
                },
                _ = c.select_next_some() => {}
            }
        }
        peers.push(c);
    }
    assert_eq!(sources.len(), 10, "each peer from its own address");
    assert_eq!(g.behaviour().scored_ips(), 10);

    drop(peers);
    // QUIC's idle timeout (10 s) if a close frame were lost.
    let deadline = Instant::now() + Duration::from_secs(20);
    while g.connected_peers().count() > 0 {
        assert!(Instant::now() < deadline, "connections never closed");
        let _ = tokio::time::timeout(Duration::from_millis(200), g.select_next_some()).await;
    }
    assert_eq!(
        g.behaviour().scored_ips(),
        0,
        "addresses kept for peers gone"
    );
}
