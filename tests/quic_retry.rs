//! While a QUIC listener has many handshakes under way, an Initial from an address not
//! yet validated is answered with a stateless Retry, not a TLS first flight. libp2p-quic
//! answered every Initial with one (a TLS handshake's server half, computed for a source
//! address that may be spoofed, and a connection's state for the 5 s handshake timeout);
//! the node's copy (`vendor/libp2p-quic`, `PATCHED.md`) sends a Retry once half of the
//! node's QUIC pending share is under way: a spoofed source never sends the token back,
//! a real client pays one round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
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

async fn start(max_pending_incoming: u32) -> TestNode {
    let config = NodeConfig {
        // Two QUIC listeners: the handshakes are counted over both.
        listen: vec![
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ],
        limits: Limits {
            max_pending_incoming,
            ..Limits::default()
        },
        ..loopback_config()
    };
    start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await
}

/// The packet type of a QUIC long header's first byte (RFC 9000, 17.2): 0 Initial,
/// 1 0-RTT, 2 Handshake, 3 Retry. (The fixed bit, 0x40, is not checked: quinn greases
/// it in the packets of a connection whose client allows that, as libp2p-quic's does.)
fn long_header_type(first: u8) -> u8 {
    assert_eq!(first & 0x80, 0x80, "not a long header: {first:#x}");
    (first >> 4) & 0x3
}

/// Ten Initials, each from its own loopback address and never followed up, sent to the
/// node's two QUIC listeners in turn, at a node whose QUIC pending share is 4
/// (`max_pending_incoming` 16): the first two get the server's Initial, every later one
/// a Retry (counted per listener, four would have had an Initial); a real QUIC peer
/// still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initials_beyond_the_handshakes_under_way_get_a_retry() {
    let node = start(16).await;
    let limits = Limits {
        max_pending_incoming: 16,
        ..Limits::default()
    };
    assert_eq!(limits.quic_pending_before_retry(), 2);
    let quic = listen_addr(&node, "quic-v1", true).await;
    let waiting = std::time::Instant::now();
    let ports: Vec<u16> = loop {
        let ports: Vec<u16> = node
            .handle
            .status()
            .await
            .unwrap()
            .listen_addrs
            .iter()
            .filter(|a| a.contains("/quic-v1"))
            .map(|a| udp_port(&a.parse().unwrap()))
            .collect();
        if ports.len() == 2 {
            break ports;
        }
        assert!(waiting.elapsed() < WAIT, "QUIC listeners: {ports:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let peer = start(128).await;

    let mut initials = Vec::new();
    for _ in 0..10 {
        initials.push(initial().await);
    }
    // Each attempt stays under way for the handshake timeout (5 s): the sockets are kept
    // and nothing is answered.
    let mut sockets = Vec::new();
    let mut kinds = Vec::new();
    for (n, bytes) in initials.iter().enumerate() {
        let s = tokio::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 4, 10 + n as u8), 0))
            .await
            .unwrap();
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, ports[n % 2]));
        s.send_to(bytes, target).await.unwrap();
        let mut buf = [0u8; 2048];
        let (len, _) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf))
            .await
            .expect("an answer to the Initial")
            .unwrap();
        assert!(len > 0);
        kinds.push(long_header_type(buf[0]));
        sockets.push(s);
    }
    assert_eq!(
        kinds,
        [0, 0, 3, 3, 3, 3, 3, 3, 3, 3],
        "answers' packet types"
    );

    let dialed = tokio::time::timeout(
        Duration::from_secs(10),
        peer.handle
            .dial(Target::Addr(quic.with(Protocol::P2p(node.peer)))),
    )
    .await
    .expect("the dial ended");
    assert_eq!(
        dialed.expect("a QUIC peer connects through a Retry"),
        node.peer
    );
}
