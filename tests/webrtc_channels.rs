//! A WebRTC-direct connection does not grow with the streams it has opened. Each libp2p
//! stream over WebRTC is a data channel, and webrtc-rs kept every data channel a peer
//! connection ever had (its `RTCDataChannel`, the SCTP stream under it, its label and
//! protocol) until the peer connection closed: a peer that opened and dropped streams
//! on one long-lived connection grew the node's memory without bound, at link speed
//! (`vendor/webrtc/PATCHED.md`). A client opens streams one after another for a
//! protocol the node does not speak (each a data channel opened, negotiated, refused
//! and dropped); the process's heap (node and client, on jemalloc as `meshd` runs) is
//! measured before and after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libmesh::node::NodeConfig;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, StreamProtocol, Transport};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::heap::live;
use mesh_testkit::node::{loopback_config, start_node};

#[path = "support/listen.rs"]
mod listen;
use listen::{listen_addr, webrtc_cert};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const WAIT: Duration = Duration::from_secs(30);

/// A protocol the node does not speak.
const UNSPOKEN: StreamProtocol = StreamProtocol::new("/libmesh-test/unspoken/1");

/// A bare WebRTC-direct peer that opens streams on demand.
fn client() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    let cert = webrtc_cert();
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            libp2p_webrtc::tokio::Transport::new(key.clone(), cert)
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
        })
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Opens `n` streams to `peer`, one after another; each is refused by the node.
async fn open_streams(control: &mut libp2p_stream::Control, peer: PeerId, n: usize) {
    for i in 0..n {
        let opened = tokio::time::timeout(WAIT, control.open_stream(peer, UNSPOKEN))
            .await
            .unwrap_or_else(|_| panic!("stream {i} not answered in {WAIT:?}"));
        match opened {
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {}
            other => panic!("stream {i}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_and_dropped_do_not_grow_a_webrtc_connection() {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/webrtc-direct".parse().unwrap()],
        ..loopback_config()
    };
    let node = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    let target = listen_addr(&node, "webrtc-direct", true)
        .await
        .with(Protocol::P2p(node.peer));

    let mut connected = None;
    for attempt in 0..4 {
        let mut c = client();
        // libp2p-webrtc dials from its listener's UDP socket.
        c.listen_on("/ip4/127.0.0.1/udp/0/webrtc-direct".parse().unwrap())
            .unwrap();
        c.dial(target.clone()).unwrap();
        let up = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match c.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => return true,
                    SwarmEvent::OutgoingConnectionError { .. } => return false,
                    _ => {}
                }
            }
        })
        .await;
        if matches!(up, Ok(true)) {
            connected = Some(c);
            break;
        }
        // webrtc-rs's dialer loses a race now and then (see `tests/node_webrtc.rs`).
        eprintln!("dial {attempt} failed; a new client dials");
    }
    let mut client = connected.expect("no dial connected in 4 attempts");
    let mut control = client.behaviour().new_control();
    let driving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { cause, .. } = client.select_next_some().await {
                panic!("the connection closed: {cause:?}");
            }
        }
    });

    // Warm up (the SCTP association's and the swarm's first allocations), then measure.
    open_streams(&mut control, node.peer, 200).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = live();
    const STREAMS: usize = 2000;
    open_streams(&mut control, node.peer, STREAMS).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = live();
    let closed = driving.is_finished();
    driving.abort();
    assert!(!closed, "the client's connection ended");
    let per_stream = (after - before) / STREAMS as isize;
    eprintln!("heap {before} -> {after}: {per_stream} bytes per stream");
    assert!(
        per_stream < 256,
        "the heap grew by {} bytes over {STREAMS} streams opened and dropped ({per_stream} \
         bytes each)",
        after - before
    );
}
