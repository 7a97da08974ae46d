//! QUIC attempts hold a quarter of the pending-connection cap at most. Upstream
//! libp2p-quic answers every Initial packet without validating its source address
//! (the node's copy sends a Retry while many handshakes are under way, which this test
//! turns off: `quic_retry.rs`), and an Initial from a source address that never
//! answers stays pending for the 5 s handshake timeout; source addresses cost nothing
//! to spoof. Before, some 26 Initials a second from fresh
//! addresses held every pending slot, and every other inbound connection (TCP here) was
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use libmesh::node::config::Limits;
use libmesh::node::{NodeConfig, Target};
use libp2p::multiaddr::Protocol;
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, loopback_config, start_node};

#[path = "support/listen.rs"]
mod listen;
use listen::{listen_addr, udp_port};
#[path = "support/quic_initial.rs"]
mod quic_initial;
use quic_initial::initial;

const WAIT: Duration = Duration::from_secs(30);

async fn start(listen: &[&str], max_pending_incoming: u32) -> TestNode {
    let config = NodeConfig {
        listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
        limits: Limits {
            max_pending_incoming,
            // No Retry: the QUIC share itself is what is tested here.
            quic_retry_above: Some(u32::MAX),
            ..Limits::default()
        },
        ..loopback_config()
    };
    start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await
}

/// Forty Initials from forty loopback addresses (as many networks) at a node whose
/// pending cap is 16: a TCP peer still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_initials_from_fresh_addresses_leave_room_for_other_transports() {
    let node = start(
        &["/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/tcp/0"],
        16,
    )
    .await;
    let quic = listen_addr(&node, "quic-v1", true).await;
    let tcp = listen_addr(&node, "quic-v1", false)
        .await
        .with(Protocol::P2p(node.peer));
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port(&quic)));
    // The TCP peer is up before the Initials go (the attempts they start live 5 s).
    let peer = start(&["/ip4/127.0.0.1/tcp/0"], 128).await;

    let mut initials = Vec::new();
    for _ in 0..40 {
        initials.push(initial().await);
    }
    let mut sockets = Vec::new();
    for (n, bytes) in initials.iter().enumerate() {
        let s = UdpSocket::bind((Ipv4Addr::new(127, 0, 3, 10 + n as u8), 0)).unwrap();
        s.send_to(bytes, target).unwrap();
        sockets.push(s);
    }
    // The attempts start (each stays pending for the handshake timeout).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dialed = tokio::time::timeout(Duration::from_secs(4), peer.handle.dial(Target::Addr(tcp)))
        .await
        .expect("the dial ended");
    assert_eq!(
        dialed.expect("a TCP peer connects beside the QUIC attempts"),
        node.peer
    );
}
