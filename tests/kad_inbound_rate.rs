//! The node answers Kademlia reads within a budget per peer (and per network): a
//! `FIND_NODE` of some 50 bytes comes back as up to 20 peers with their addresses, and a
//! peer used to get every one it asked for, as fast as it asked. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::kad_inbound::PER_PEER;
use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::kad_wire::find_node;
use mesh_testkit::node::start_node;

const WAIT: Duration = Duration::from_secs(30);

/// One peer asks 300 times in a row: a burst and what refilled meanwhile are answered
/// with peers, the rest with none (a few bytes). Before, all 300 with peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_its_burst_of_answers_and_the_refill() {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        ..NodeConfig::default()
    };
    let node = start_node(
        NodeKeypair::generate(),
        config.clone(),
        Arc::new(NoTrace),
        WAIT,
    )
    .await;
    // A peer in the node's mesh-DHT table, for its answers to name.
    let other = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    other
        .handle
        .dial(libmesh::node::Target::Addr(node.p2p_addr()))
        .await
        .unwrap();
    let in_table = Instant::now();
    while !node
        .handle
        .routing_table(libmesh::node::Dht::Mesh)
        .await
        .unwrap()
        .iter()
        .any(|e| e.peer_id == other.peer.to_string())
    {
        assert!(
            in_table.elapsed() < WAIT,
            "the other node never entered the table"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(node.p2p_addr(), WAIT).await.unwrap();
    let start = Instant::now();
    let mut answered = 0;
    for i in 0..300u32 {
        let request = find_node(format!("key-{i}").as_bytes());
        let answer = hostile.send(peer, "/mesh/kad/1.0.0", &request, WAIT).await;
        // The node answers with the other node (and its addresses); empty, with none.
        if answer.unwrap().len() > 40 {
            answered += 1;
        }
    }
    eprintln!("answered {answered} in {:?}", start.elapsed());
    let refill = (start.elapsed().as_secs_f64() * PER_PEER.per_second).ceil() as usize + 1;
    let burst = PER_PEER.burst as usize;
    assert!(
        (burst..=burst + refill).contains(&answered),
        "answered {answered} of 300 (burst {burst}, refill {refill} in {:?})",
        start.elapsed()
    );
    // Still connected, and answered again once its budget refilled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let again = hostile
        .send(peer, "/mesh/kad/1.0.0", &find_node(b"later"), WAIT)
        .await
        .unwrap();
    assert!(again.len() > 40, "{again:?}");
}
