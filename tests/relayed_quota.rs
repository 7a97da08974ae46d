//! Peers that reach a node through one of its relay reservations count under the
//! relay's network in the session room. libp2p names such a connection's remote
//! `/p2p/<source>`, with no IP; the room did not count them by network at all, and
//! strangers with fresh keys behind one relay took every session strangers may hold.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::config::Limits;
use libmesh::node::{NodeConfig, Target};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{MemoryTrace, NodeKeypair, TraceEventType};
use mesh_testkit::node::{TestNode, loopback_config, open_relay_config, start_node};

const WAIT: Duration = Duration::from_secs(30);

async fn start(config: NodeConfig) -> TestNode {
    start_traced(config, Arc::new(MemoryTrace::new(1024))).await
}

async fn start_traced(config: NodeConfig, trace: Arc<MemoryTrace>) -> TestNode {
    start_node(NodeKeypair::generate(), config, trace, WAIT).await
}

/// Hellos `trace`'s node refused for want of room.
fn refused_for_room(trace: &MemoryTrace) -> usize {
    trace
        .events()
        .iter()
        .filter(|e| {
            e.event_type == TraceEventType::HandshakeRejected
                && e.detail
                    .as_ref()
                    .is_some_and(|d| d.to_string().contains("no room"))
        })
        .count()
}

/// `node`'s circuit address through `relay`, once it listens there.
async fn circuit_of(node: &TestNode, relay: PeerId) -> Multiaddr {
    let start = Instant::now();
    loop {
        let status = node.handle.status().await.unwrap();
        let circuit = status.listen_addrs.iter().find_map(|a| {
            let a: Multiaddr = a.parse().ok()?;
            let through = a.iter().any(|p| p == Protocol::P2p(relay))
                && a.iter().any(|p| p == Protocol::P2pCircuit);
            through.then_some(a)
        });
        if let Some(c) = circuit {
            return c;
        }
        assert!(start.elapsed() < WAIT, "no reservation on the relay");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sessions `node` holds with `peers`.
async fn sessions_with(node: &TestNode, peers: &[PeerId]) -> usize {
    let list = node.handle.peers().await.unwrap();
    list.iter()
        .filter(|p| p.session && peers.iter().any(|q| q.to_string() == p.peer_id))
        .count()
}

/// B listens beyond loopback (so all of loopback is one network to it) with
/// `max_sessions` 8 (a network's share: 2) and a reservation on a loopback relay. Four
/// strangers with fresh keys dial B through the relay: two sessions. Before, all four
/// (each relayed peer counted as a network of its own), and the node listed their
/// connections as `/p2p/<stranger>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_behind_one_relay_share_its_network() {
    let relay = start(open_relay_config(loopback_config())).await;
    let b_trace = Arc::new(MemoryTrace::new(4096));
    let b = start_traced(
        NodeConfig {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
                "/ip4/0.0.0.0/tcp/0".parse().unwrap(),
            ],
            relays: vec![relay.p2p_addr()],
            max_relays: 1,
            limits: Limits {
                max_sessions: 8,
                ..Limits::default()
            },
            ..loopback_config()
        },
        b_trace.clone(),
    )
    .await;
    let circuit = circuit_of(&b, relay.peer).await.with(Protocol::P2p(b.peer));

    let mut strangers = Vec::new();
    for _ in 0..4 {
        let s = start(loopback_config()).await;
        s.handle.dial(Target::Addr(circuit.clone())).await.unwrap();
        strangers.push(s);
    }
    let ids: Vec<PeerId> = strangers.iter().map(|s| s.peer).collect();

    // Until every stranger is connected and every hello has had its answer: two
    // sessions and two refused for want of room (with the fix), or more than two
    // sessions (without it).
    let start = Instant::now();
    let connected_strangers = |peers: &[libmesh::node::PeerInfo]| {
        peers
            .iter()
            .filter(|p| ids.iter().any(|q| q.to_string() == p.peer_id))
            .count()
    };
    let peers = loop {
        let peers = b.handle.peers().await.unwrap();
        let held = sessions_with(&b, &ids).await;
        let refused = refused_for_room(&b_trace);
        if connected_strangers(&peers) == 4 && (held > 2 || (held == 2 && refused >= 2)) {
            break peers;
        }
        assert!(
            start.elapsed() < WAIT,
            "{held} sessions, {refused} refused, after {WAIT:?}: {peers:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let connected = connected_strangers(&peers);
    assert_eq!(connected, 4, "every stranger connected: {peers:#?}");
    // What the punch budget reads and `meshd peers` shows: each stranger's connection is the circuit through the
    // relay (it was `/p2p/<stranger>`, no network at all).
    for s in &strangers {
        let info = peers
            .iter()
            .find(|p| p.peer_id == s.peer.to_string())
            .unwrap();
        let via_relay = info.addrs.iter().any(|a| {
            a.starts_with("/ip4/127.0.0.1/")
                && a.contains(&format!("/p2p/{}/p2p-circuit", relay.peer))
        });
        assert!(via_relay, "{info:#?}");
    }
    assert_eq!(
        sessions_with(&b, &ids).await,
        2,
        "sessions of the relay's network: {peers:#?}"
    );
}
