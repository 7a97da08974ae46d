//! A relay that hangs without closing anything (its runtime stops: sockets stay open,
//! the kernel keeps acknowledging, nothing answers) is noticed by the node within its
//! `relay_liveness_secs`, and the node takes another relay. Short ping and liveness
//! intervals so the test is fast.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::{NodeConfig, NodeHandle};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{MemoryTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, loopback_config, open_relay_config, start_node};

const WAIT: Duration = Duration::from_secs(30);

fn base() -> NodeConfig {
    NodeConfig {
        ping_interval_secs: 1,
        relay_liveness_secs: 3,
        ..loopback_config()
    }
}

fn relay_config() -> NodeConfig {
    open_relay_config(base())
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

/// A node on a runtime of its own (own thread), and the switch that stops that runtime
/// without dropping anything.
struct Isolated {
    node: TestNode,
    freeze: Option<tokio::sync::oneshot::Sender<()>>,
    _stop: std::sync::mpsc::Sender<()>,
}

fn start_isolated(config: NodeConfig) -> Isolated {
    let (node_tx, node_rx) = std::sync::mpsc::channel();
    let (freeze_tx, freeze_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let _ = node_tx.send(start(config).await);
            let _ = freeze_rx.await;
        });
        // Frozen: nothing on the runtime runs again until the test ends.
        let _ = stop_rx.recv();
    });
    Isolated {
        node: node_rx.recv_timeout(WAIT).unwrap(),
        freeze: Some(freeze_tx),
        _stop: stop_tx,
    }
}

/// The peer ids of the relays `handle`'s node listens through now.
async fn listening_via(handle: &NodeHandle) -> Vec<PeerId> {
    let status = handle.status().await.unwrap();
    status
        .listen_addrs
        .iter()
        .filter_map(|a| {
            let a: Multiaddr = a.parse().ok()?;
            let mut before_circuit = None;
            for p in a.iter() {
                match p {
                    libp2p::multiaddr::Protocol::P2p(id) => before_circuit = Some(id),
                    libp2p::multiaddr::Protocol::P2pCircuit => return before_circuit,
                    _ => {}
                }
            }
            None
        })
        .collect()
}

async fn until_listening_via(handle: &NodeHandle, expect: &[PeerId], within: Duration) {
    let start = Instant::now();
    loop {
        let via = listening_via(handle).await;
        if via == expect {
            return;
        }
        assert!(
            start.elapsed() < within,
            "listening via {via:?}, not {expect:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_relay_is_lost_and_another_takes_its_place() {
    let mut h1 = start_isolated(relay_config());
    let h2 = start(relay_config()).await;
    let (p1, p2) = (h1.node.peer, h2.peer);
    // A prefers H1 (H2 is two tiers down) and holds one reservation.
    let a = start(NodeConfig {
        relays: vec![h1.node.p2p_addr(), h2.p2p_addr()],
        relay_tiers: [(p2.to_string(), 2)].into(),
        max_relays: 1,
        ..base()
    })
    .await;
    until_listening_via(&a.handle, &[p1], WAIT).await;

    // While H1 answers, A stays on it (several liveness periods).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(listening_via(&a.handle).await, vec![p1]);

    // H1 hangs.
    let _ = h1.freeze.take().unwrap().send(());
    let frozen = Instant::now();
    until_listening_via(&a.handle, &[p2], WAIT).await;
    let took = frozen.elapsed();
    // Not before the silence could have passed (the last answer came at most one ping
    // interval before the freeze).
    assert!(took >= Duration::from_secs(2), "moved after {took:?}");
    // Its connections to H1 are closed.
    let peers = a.handle.peers().await.unwrap();
    assert!(
        !peers.iter().any(|p| p.peer_id == p1.to_string()),
        "still connected to the hung relay: {peers:?}"
    );
}
