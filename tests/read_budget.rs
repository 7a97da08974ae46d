//! The node's read budget (`limits.read_budget_bytes`) against peers that send every
//! request but its end, over real connections: each protocol already caps what one
//! connection holds (16 signal requests of up to 1 MiB), but peers on several
//! connections together made the node hold the sum. With the budget the node holds at
//! most its cap of half-sent requests, drops the oldest for newer ones, and serves a
//! newcomer's request meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use libmesh::node::config::{Limits, MIN_READ_BUDGET};
use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::node::start_node;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_on_many_connections_hold_at_most_the_read_budget() {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        limits: Limits {
            read_budget_bytes: MIN_READ_BUDGET,
            ..Limits::default()
        },
        ..NodeConfig::default()
    };
    let n = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    // Three peers, 12 signal requests each (within the 16 streams a connection takes),
    // 300,000 bytes of each sent: 10.8 MB in all, against a budget of 2 MiB.
    const PEERS: usize = 3;
    const EACH: usize = 12;
    const SENT: usize = 300_000;
    let mut hostile = Vec::new();
    for _ in 0..PEERS {
        let h = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let peer = h.connect(n.p2p_addr(), WAIT).await.unwrap();
        hostile.push((h, peer));
    }
    let patience = Duration::from_secs(6);
    let body = vec![0x5a; SENT];
    let trickles = futures::future::join_all(hostile.iter().flat_map(|(h, peer)| {
        (0..EACH).map(|_| h.trickle(*peer, "/mesh/signal/1.0.0", &body, patience))
    }));
    // Meanwhile a newcomer's request (a malformed one: its coded refusal is the answer)
    // is read and answered.
    let newcomer = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let h = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let peer = h.connect(n.p2p_addr(), WAIT).await.unwrap();
        h.send(peer, "/mesh/signal/1.0.0", &[0xa1, 0x61], WAIT)
            .await
            .map(|answer| String::from_utf8_lossy(&answer).into_owned())
    };
    let (held, answer) = tokio::join!(trickles, newcomer);
    let answer = answer.unwrap();
    assert!(answer.contains("E_PROTO_INVALID"), "{answer:?}");
    let held = held
        .into_iter()
        .filter(|h| h.as_ref().is_ok_and(|d| *d >= patience))
        .count();
    // Each held read holds room that doubled from 256 bytes past its 300,000: 512 KiB,
    // four in the budget.
    assert!(
        held * SENT.next_power_of_two() <= MIN_READ_BUDGET,
        "{held} half-sent requests of {SENT} bytes held at once (budget {MIN_READ_BUDGET})"
    );
    assert!(held > 0, "the newest reads are kept");
}
