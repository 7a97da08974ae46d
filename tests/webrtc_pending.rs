//! WebRTC-direct attempts hold a quarter of the pending-connection cap at most. One UDP
//! packet (a STUN binding request with any user name) from a new source address starts
//! an inbound WebRTC-direct connection, with no handshake, and it stays pending for ten
//! seconds or more; source addresses cost nothing to spoof. Before, a few such packets
//! a second from fresh addresses held every pending slot, and every other inbound
//! connection (TCP here) was refused.
//!
//! And the table of new source addresses the WebRTC-direct listener keeps (one entry per
//! source that sent a STUN request, until a connection is set up for it) is bounded
//! (`vendor/libp2p-webrtc/PATCHED.md`): upstream kept every failed source for the life
//! of the listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libmesh::node::config::Limits;
use libmesh::node::{NodeConfig, Target};
use libp2p::connection_limits;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, loopback_config, start_node};

#[path = "support/listen.rs"]
mod listen;
use listen::{listen_addr, udp_port, webrtc_swarm};

const WAIT: Duration = Duration::from_secs(30);

fn config(listen: &[&str], max_pending_incoming: u32) -> NodeConfig {
    NodeConfig {
        listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
        limits: Limits {
            max_pending_incoming,
            ..Limits::default()
        },
        ..loopback_config()
    }
}

async fn start(config: NodeConfig) -> TestNode {
    start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await
}

/// A STUN binding request with a USERNAME attribute and nothing else: all the
/// WebRTC-direct listener reads before it starts a connection.
fn stun_binding(n: u32) -> Vec<u8> {
    let user = format!("srv:libp2p+webrtc+v1/{n:08x}");
    let mut value = user.into_bytes();
    let len = value.len();
    value.resize(len.div_ceil(4) * 4, 0);
    let mut m = Vec::new();
    m.extend_from_slice(&0x0001u16.to_be_bytes());
    m.extend_from_slice(&(4 + value.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112_A442u32.to_be_bytes());
    m.extend_from_slice(&[7; 8]);
    m.extend_from_slice(&n.to_be_bytes());
    m.extend_from_slice(&0x0006u16.to_be_bytes());
    m.extend_from_slice(&(len as u16).to_be_bytes());
    m.extend_from_slice(&value);
    m
}

/// Forty packets from forty loopback addresses (as many networks) at a node whose
/// pending cap is 16: a TCP peer still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_packets_from_fresh_addresses_leave_room_for_other_transports() {
    let node = start(config(
        &["/ip4/127.0.0.1/udp/0/webrtc-direct", "/ip4/127.0.0.1/tcp/0"],
        16,
    ))
    .await;
    let webrtc = listen_addr(&node, "webrtc-direct", true).await;
    let tcp = listen_addr(&node, "webrtc-direct", false)
        .await
        .with(Protocol::P2p(node.peer));
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port(&webrtc)));
    // The TCP peer is up before the packets go (the attempts they start live ~10 s).
    let peer = start(config(&["/ip4/127.0.0.1/tcp/0"], 128)).await;

    let mut sockets = Vec::new();
    for n in 0..40u8 {
        let s = UdpSocket::bind((Ipv4Addr::new(127, 0, 1, 10 + n), 0)).unwrap();
        s.send_to(&stun_binding(u32::from(n)), target).unwrap();
        sockets.push(s);
    }
    // The attempts start (each stays pending for seconds).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dialed = tokio::time::timeout(Duration::from_secs(10), peer.handle.dial(Target::Addr(tcp)))
        .await
        .expect("the dial ended");
    assert_eq!(
        dialed.expect("a TCP peer connects beside the WebRTC-direct attempts"),
        node.peer
    );
}

/// A bare swarm listening on WebRTC-direct that refuses every inbound connection while
/// it is pending (so no attempt runs): each STUN request the listener takes for a new
/// source shows as one `IncomingConnectionError`.
fn refusing_webrtc_swarm() -> libp2p::Swarm<connection_limits::Behaviour> {
    let refuse_pending =
        connection_limits::ConnectionLimits::default().with_max_pending_incoming(Some(0));
    webrtc_swarm(
        connection_limits::Behaviour::new(refuse_pending),
        Duration::ZERO,
    )
}

/// [`refusing_webrtc_swarm`] listening on loopback, and its UDP socket address.
async fn listening_refusing_swarm() -> (libp2p::Swarm<connection_limits::Behaviour>, SocketAddr) {
    let mut swarm = refusing_webrtc_swarm();
    swarm
        .listen_on("/ip4/127.0.0.1/udp/0/webrtc-direct".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port(&addr)));
    (swarm, target)
}

/// Incoming attempts the swarm reports within `within` (each refused).
async fn attempts(
    swarm: &mut libp2p::Swarm<connection_limits::Behaviour>,
    within: Duration,
) -> usize {
    let mut n = 0;
    let _ = tokio::time::timeout(within, async {
        loop {
            if let SwarmEvent::IncomingConnectionError { .. } = swarm.select_next_some().await {
                n += 1;
            }
        }
    })
    .await;
    n
}

/// 300 sources send one request each; then the first sends again. The listener follows
/// 256 sources at most, so the first was forgotten and its request is a new attempt.
/// Upstream kept all 300 (and would for good): the first's second request was ignored.
#[tokio::test]
async fn the_table_of_new_stun_sources_is_bounded() {
    let (mut swarm, target) = listening_refusing_swarm().await;
    let sockets: Vec<UdpSocket> = (0..300)
        .map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
        .collect();
    let mut seen = 0;
    for (n, s) in sockets.iter().enumerate() {
        s.send_to(&stun_binding(n as u32), target).unwrap();
        if n % 50 == 49 {
            seen += attempts(&mut swarm, Duration::from_millis(300)).await;
        }
    }
    seen += attempts(&mut swarm, Duration::from_secs(1)).await;
    assert_eq!(seen, 300, "one attempt per source");
    // Each source again: those still followed are ignored, the forgotten start anew.
    sockets[0].send_to(&stun_binding(1_000), target).unwrap();
    sockets[299].send_to(&stun_binding(1_001), target).unwrap();
    assert_eq!(
        attempts(&mut swarm, Duration::from_secs(1)).await,
        1,
        "the oldest source was forgotten, the newest was not"
    );
}

/// Two sources send a request with the same ufrag (a browser checks from each of its
/// local candidates with one): one attempt. Upstream started one per source; both shared
/// the ufrag's muxer connection, so closing the attempt that lost (the node closes every
/// unfinished attempt) closed the other's.
#[tokio::test]
async fn one_attempt_per_ufrag() {
    let (mut swarm, target) = listening_refusing_swarm().await;
    let (a, b) = (
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
        UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap(),
    );
    a.send_to(&stun_binding(5), target).unwrap();
    b.send_to(&stun_binding(5), target).unwrap();
    assert_eq!(attempts(&mut swarm, Duration::from_secs(1)).await, 1);
    // Another ufrag from the second source is an attempt of its own.
    b.send_to(&stun_binding(6), target).unwrap();
    // (The second source is not followed: its request was dropped, not taken.)
    assert_eq!(attempts(&mut swarm, Duration::from_secs(1)).await, 1);
}
