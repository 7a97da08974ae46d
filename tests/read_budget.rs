//! The node's read budget (`limits.read_budget_bytes`) against peers that send every
//! request but its end, over real connections: each protocol already caps what one
//! connection holds (16 signal requests of up to 1 MiB), but peers on several
//! connections together made the node hold the sum. With the budget the node holds at
//! most its cap of half-sent requests, drops the oldest for newer ones, and serves a
//! newcomer's request meanwhile; on libmesh's protocols and on the DHTs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use libmesh::node::config::{Limits, MIN_READ_BUDGET};
use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::node::{TestNode, start_node};

const WAIT: Duration = Duration::from_secs(30);

/// A node with the smallest read budget.
async fn node() -> TestNode {
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
    start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await
}

/// Three peers, 12 streams each on `protocol` (within what a connection takes), each
/// sent `body` and then nothing; how many the node held open for the whole patience
/// (6 s), and the answer to a newcomer's `request` on `protocol` sent meanwhile.
async fn half_sent(
    n: &TestNode,
    protocol: &'static str,
    body: &[u8],
    request: &[u8],
) -> (usize, Vec<u8>) {
    let mut hostile = Vec::new();
    for _ in 0..3 {
        let h = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let peer = h.connect(n.p2p_addr(), WAIT).await.unwrap();
        hostile.push((h, peer));
    }
    let patience = Duration::from_secs(6);
    let trickles = futures::future::join_all(
        hostile
            .iter()
            .flat_map(|(h, peer)| (0..12).map(|_| h.trickle(*peer, protocol, body, patience))),
    );
    let newcomer = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let h = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let peer = h.connect(n.p2p_addr(), WAIT).await.unwrap();
        h.send(peer, protocol, request, WAIT).await
    };
    let (held, answer) = tokio::join!(trickles, newcomer);
    let held = held
        .into_iter()
        .filter(|h| h.as_ref().is_ok_and(|d| *d >= patience))
        .count();
    (held, answer.unwrap())
}

/// 36 half-sent signal requests of 300,000 bytes (10.8 MB) against a budget of 2 MiB;
/// a newcomer's request (a malformed one: its coded refusal is the answer) is read and
/// answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_on_many_connections_hold_at_most_the_read_budget() {
    let n = node().await;
    const SENT: usize = 300_000;
    let (held, answer) = half_sent(&n, "/mesh/signal/1.0.0", &[0x5a; SENT], &[0xa1, 0x61]).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("E_PROTO_INVALID"), "{answer:?}");
    // Each held read holds room that doubled from 256 bytes past its 300,000: 512 KiB,
    // four in the budget.
    assert!(
        held * SENT.next_power_of_two() <= MIN_READ_BUDGET,
        "{held} half-sent requests of {SENT} bytes held at once (budget {MIN_READ_BUDGET})"
    );
    assert!(held > 0, "the newest reads are kept");
}

/// The same on the mesh DHT (libp2p-kad's framing, the vendored patch's budget): 36
/// requests announced at 120,000 bytes with 100,000 sent, 3.6 MB; a newcomer's
/// FIND_NODE is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_dht_requests_on_many_connections_hold_at_most_the_read_budget() {
    let n = node().await;
    const SENT: usize = 100_000;
    // The length prefix (varint 120,000), then the first bytes of the message.
    let mut body = vec![0xc0, 0xa9, 0x07];
    body.extend_from_slice(&[0x5a; SENT]);
    // FIND_NODE (type 4) for a 4-byte key, length-prefixed.
    let find_node = [0x08, 0x08, 0x04, 0x12, 0x04, 1, 2, 3, 4];
    let (held, answer) = half_sent(&n, "/mesh/kad/1.0.0", &body, &find_node).await;
    assert!(!answer.is_empty(), "the newcomer's FIND_NODE is answered");
    assert!(
        held * SENT <= MIN_READ_BUDGET,
        "{held} half-sent DHT requests of {SENT} bytes held at once (budget {MIN_READ_BUDGET})"
    );
    assert!(held > 0, "the newest reads are kept");
}
