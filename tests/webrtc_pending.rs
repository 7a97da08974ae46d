//! WebRTC-direct attempts hold a quarter of the pending-connection cap at most. One UDP
//! packet (a STUN binding request with any user name) from a new source address starts
//! an inbound WebRTC-direct connection, with no handshake, and it stays pending for ten
//! seconds or more; source addresses cost nothing to spoof. Before, a few such packets
//! a second from fresh addresses held every pending slot, and every other inbound
//! connection (TCP here) was refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use libmesh::node::config::Limits;
use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig, Target};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mesh_core::{MemoryTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, start_node};

const WAIT: Duration = Duration::from_secs(30);

fn config(listen: &[&str], max_pending_incoming: u32) -> NodeConfig {
    NodeConfig {
        listen: listen.iter().map(|a| a.parse().unwrap()).collect(),
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        autonat: false,
        limits: Limits {
            max_pending_incoming,
            ..Limits::default()
        },
        ..NodeConfig::default()
    }
}

async fn start(config: NodeConfig) -> TestNode {
    start_node(
        NodeKeypair::generate(),
        config,
        Arc::new(MemoryTrace::new(1024)),
        WAIT,
    )
    .await
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

/// The port of the node's listen address on `transport` (`tcp`, `webrtc-direct`).
async fn listen_addr(node: &TestNode, webrtc: bool) -> Multiaddr {
    let status = node.handle.status().await.unwrap();
    status
        .listen_addrs
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .find(|a| a.iter().any(|p| matches!(p, Protocol::WebRTCDirect)) == webrtc)
        .unwrap_or_else(|| panic!("no such listen address: {:?}", status.listen_addrs))
}

fn udp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Udp(port) => Some(port),
            _ => None,
        })
        .unwrap()
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
    let webrtc = listen_addr(&node, true).await;
    let tcp = listen_addr(&node, false)
        .await
        .with(Protocol::P2p(node.peer));
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port(&webrtc)));

    let mut sockets = Vec::new();
    for n in 0..40u8 {
        let s = UdpSocket::bind((Ipv4Addr::new(127, 0, 1, 10 + n), 0)).unwrap();
        s.send_to(&stun_binding(u32::from(n)), target).unwrap();
        sockets.push(s);
    }
    // The attempts start (each stays pending for seconds).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let peer = start(config(&["/ip4/127.0.0.1/tcp/0"], 128)).await;
    let dialed = tokio::time::timeout(Duration::from_secs(10), peer.handle.dial(Target::Addr(tcp)))
        .await
        .expect("the dial ended");
    assert_eq!(
        dialed.expect("a TCP peer connects beside the WebRTC-direct attempts"),
        node.peer
    );
}
