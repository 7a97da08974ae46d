//! A node listening on WebRTC-direct and a client connected to it that opens streams on
//! demand, with the heap measured around them: for `tests/webrtc_channels.rs` and
//! `tests/webrtc_channels_closed.rs` (one measurement per process: jemalloc's count is
//! the process's), `tests/webrtc_unanswered.rs`, `tests/webrtc_messages.rs`,
//! `tests/webrtc_sctp_gaps.rs` and `tests/webrtc_forward_tsn.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, StreamExt};
use libmesh::node::NodeConfig;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::heap::live;
use mesh_testkit::node::{TestNode, loopback_config, start_node};

use crate::listen::{listen_addr, webrtc_swarm};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A protocol the node answers and then closes.
pub(crate) const IDENTIFY: StreamProtocol = StreamProtocol::new("/ipfs/id/1.0.0");

/// The node's peer id in `addr`'s `/p2p` part.
pub(crate) fn peer_of(addr: &Multiaddr) -> PeerId {
    addr.iter()
        .find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        })
        .unwrap()
}

/// Opens an identify stream to `peer` and reads its answer to the end (10 s for each),
/// returning the stream.
pub(crate) async fn identify(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
) -> Result<libp2p::Stream, String> {
    let wait = Duration::from_secs(10);
    let mut stream = tokio::time::timeout(wait, control.open_stream(peer, IDENTIFY))
        .await
        .map_err(|_| "not opened in 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "not answered in 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    if answer.is_empty() {
        return Err("an empty answer".into());
    }
    Ok(stream)
}

/// A bare WebRTC-direct peer that opens streams on demand.
pub(crate) fn client() -> libp2p::Swarm<libp2p_stream::Behaviour> {
    webrtc_swarm(libp2p_stream::Behaviour::new(), Duration::from_secs(60))
}

/// A client connected to `target` over WebRTC-direct.
pub(crate) async fn connect(target: &Multiaddr) -> libp2p::Swarm<libp2p_stream::Behaviour> {
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
    connected.expect("no dial connected in 4 attempts")
}

/// For a hostile peer's process: the node's address, from the environment variable
/// `env`, or `None` (with a line saying so) when it is unset, as when the ignored test
/// that plays the peer runs other than from its file's test.
pub(crate) fn hostile_target(env: &str) -> Option<Multiaddr> {
    let Ok(target) = std::env::var(env) else {
        eprintln!("{env} unset: run by the tests of this file only");
        return None;
    };
    Some(target.parse().unwrap())
}

/// For a hostile peer's process: a client connected to `target`, its swarm driven on a
/// task of its own that prints each close (`closed: …`), its peer id printed
/// (`peer <id>`); returns its stream control. DTLS's rustls needs a process-wide
/// provider, which the node installs in the test's process: this installs it here.
pub(crate) async fn hostile_client(target: &Multiaddr) -> libp2p_stream::Control {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client = connect(target).await;
    println!("peer {}", client.local_peer_id());
    let control = client.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { cause, .. } = client.select_next_some().await {
                println!("closed: {cause:?}");
            }
        }
    });
    control
}

/// A node listening on WebRTC-direct, and its address (with `/p2p`).
pub(crate) async fn webrtc_node() -> (TestNode, Multiaddr) {
    webrtc_node_with(loopback_config()).await
}

/// A node with `config` listening on WebRTC-direct (only), and its address (with
/// `/p2p`).
pub(crate) async fn webrtc_node_with(config: NodeConfig) -> (TestNode, Multiaddr) {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/webrtc-direct".parse().unwrap()],
        ..config
    };
    let node = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    let target = listen_addr(&node, "webrtc-direct", true)
        .await
        .with(Protocol::P2p(node.peer));
    (node, target)
}

/// A node listening on WebRTC-direct, a client connected to it (driven by a task that
/// panics if the connection closes) and the client's stream control.
pub(crate) async fn node_and_client() -> (
    TestNode,
    libp2p_stream::Control,
    tokio::task::JoinHandle<()>,
) {
    let (node, target) = webrtc_node().await;
    let mut client = connect(&target).await;
    let control = client.behaviour().new_control();
    let driving = tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { cause, .. } = client.select_next_some().await {
                panic!("the connection closed: {cause:?}");
            }
        }
    });
    (node, control, driving)
}

/// The heap's growth per stream between `before` and now, after `settle`; fails when
/// the client's connection ended.
pub(crate) async fn growth_per_stream(
    before: isize,
    streams: usize,
    settle: Duration,
    driving: tokio::task::JoinHandle<()>,
) -> isize {
    tokio::time::sleep(settle).await;
    let after = live();
    let closed = driving.is_finished();
    driving.abort();
    assert!(!closed, "the client's connection ended");
    let per_stream = (after - before) / streams as isize;
    eprintln!("heap {before} -> {after}: {per_stream} bytes per stream");
    per_stream
}
