//! Peers that reach a node through one of its relay reservations count under the
//! relay's network. libp2p names such a connection's remote `/p2p/<source>`, with no IP;
//! counted by that, each was a network of its own, and strangers with fresh keys behind
//! one relay took every session strangers may hold (and a share of the advertisement
//! store, DHT records and table pages each).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::admission::AdmissionSettings;
use libmesh::node::config::Limits;
use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig, Target};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{MemoryTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, start_node};

const WAIT: Duration = Duration::from_secs(30);

fn base() -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        autonat: false,
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

/// A relay server on a fixed loopback port (relay v2 needs a confirmed external address
/// before it accepts reservations), admitting anyone.
fn relay_config() -> NodeConfig {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    NodeConfig {
        listen: vec![addr.clone()],
        external: vec![addr],
        relay_server: true,
        admission: AdmissionSettings {
            policy: "open".into(),
            ..AdmissionSettings::default()
        },
        ..base()
    }
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
    let relay = start(relay_config()).await;
    let b = start(NodeConfig {
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
        ..base()
    })
    .await;
    let circuit = circuit_of(&b, relay.peer).await.with(Protocol::P2p(b.peer));

    let mut strangers = Vec::new();
    for _ in 0..4 {
        let s = start(base()).await;
        s.handle.dial(Target::Addr(circuit.clone())).await.unwrap();
        strangers.push(s);
    }
    let ids: Vec<PeerId> = strangers.iter().map(|s| s.peer).collect();

    // Two sessions come up; then time for the other two hellos (refused).
    let start = Instant::now();
    while sessions_with(&b, &ids).await < 2 {
        assert!(start.elapsed() < WAIT, "no sessions with the strangers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let peers = b.handle.peers().await.unwrap();
    let connected = peers
        .iter()
        .filter(|p| ids.iter().any(|q| q.to_string() == p.peer_id))
        .count();
    assert_eq!(connected, 4, "every stranger connected: {peers:#?}");
    // What the node's own per-network limits (DHT records, table pages, punches) read,
    // and `meshd peers` shows: each stranger's connection is the circuit through the
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
