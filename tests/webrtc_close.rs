//! A WebRTC-direct connection that ends frees what it held. libp2p-swarm drops a
//! connection without closing its muxer when the connection ends on an error (its idle
//! timeout is one), and webrtc-rs frees a peer connection's tasks (its ICE agent's
//! checks among them), its DTLS and SCTP state and its UDP muxer entry only on
//! `close()`: every WebRTC connection that idled out stayed in memory, at both ends, for
//! the life of the process (`vendor/libp2p-webrtc/PATCHED.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libmesh::node::NodeConfig;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{SwarmEvent, dummy};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::node::{loopback_config, start_node};

#[path = "support/listen.rs"]
mod listen;
use listen::{listen_addr, webrtc_swarm};

const WAIT: Duration = Duration::from_secs(30);

/// A bare WebRTC-direct peer that keeps no connection it does not use (1 s).
fn client() -> libp2p::Swarm<dummy::Behaviour> {
    webrtc_swarm(dummy::Behaviour, Duration::from_secs(1))
}

/// One dial of `target` from a new client that connects and whose connection then
/// idles out: the client, and the runtime's tasks once it listened, before it dialed;
/// `None` when the dial failed (webrtc-rs's dialer loses a race now and then: see
/// `tests/node_webrtc.rs`).
async fn connect_and_idle_out(
    target: &Multiaddr,
) -> Option<(libp2p::Swarm<dummy::Behaviour>, usize)> {
    let mut c = client();
    c.listen_on("/ip4/127.0.0.1/udp/0/webrtc-direct".parse().unwrap())
        .unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { .. } = c.select_next_some().await {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    c.dial(target.clone()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        let mut established = false;
        loop {
            match c.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => established = true,
                SwarmEvent::ConnectionClosed { .. } if established => return true,
                SwarmEvent::OutgoingConnectionError { .. } => return false,
                _ => {}
            }
        }
    })
    .await;
    matches!(ended, Ok(true)).then_some((c, before))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_connection_that_idles_out_leaves_no_tasks_behind() {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/webrtc-direct".parse().unwrap()],
        idle_timeout_secs: 1,
        ..loopback_config()
    };
    let node = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    let target = listen_addr(&node, "webrtc-direct", true)
        .await
        .with(Protocol::P2p(node.peer));
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut done = None;
    for attempt in 0..4 {
        if let Some(d) = connect_and_idle_out(&target).await {
            done = Some(d);
            break;
        }
        eprintln!("dial {attempt} failed (webrtc-rs's dialer race); a new client dials");
    }
    let (mut client, before) = done.expect("no dial connected in 4 attempts");
    // The client stays and is driven (one task more), so that its side's close, which
    // goes through its UDP muxer, can end: dropping it at once left that close waiting
    // on a muxer gone, some 20 of its tasks with it, now and then.
    let driving = tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    let mut after = usize::MAX;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        after = metrics.num_alive_tasks();
        if after <= before + 3 {
            break;
        }
    }
    driving.abort();
    assert!(
        after <= before + 3,
        "{before} tasks before a connection that idled out, {after} 20 s after (34 without the patch)"
    );
}
