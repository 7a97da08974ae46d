//! Dialing by peer id looks the peer up (issue 16 item 2): three in-process nodes on
//! loopback, A and C both bootstrapped from B, A never told of C; `A.dial(Peer(C))`
//! finds C through B (mesh DHT record or Amino peer routing) and connects. A peer id
//! nobody knows fails with a coded error, in bounded time. The same with three `meshd`
//! processes and `meshd dial <peer id>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig, NodeHandle, Target};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, MemoryTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, start_node};

const WAIT: Duration = Duration::from_secs(30);

/// `MESH_TEST_LOG=libmesh=debug` shows the nodes' logs.
fn logs() {
    if let Ok(f) = std::env::var("MESH_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// A node on loopback whose only Amino bootstrap peer is `bootstrap` (none: no
/// bootstrap at all); no seeds, no AutoNAT (its dial-backs would introduce nodes).
async fn start(bootstrap: Option<Multiaddr>, kad_mode: KadMode) -> TestNode {
    logs();
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: match bootstrap {
            Some(b) => Bootstrap::Addrs(vec![b]),
            None => Bootstrap::Named(BootstrapName::None),
        },
        kad_mode,
        autonat: false,
        ..NodeConfig::default()
    };
    let trace = Arc::new(MemoryTrace::new(4096));
    start_node(NodeKeypair::generate(), config, trace, WAIT).await
}

/// Waits (bounded) until `h` is connected to `peer`.
async fn connected(h: &NodeHandle, peer: PeerId) {
    let p = peer.to_string();
    tokio::time::timeout(WAIT, async {
        loop {
            if h.peers().await.unwrap().iter().any(|i| i.peer_id == p) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_by_peer_id_looks_the_peer_up() {
    let b = start(None, KadMode::Server).await;
    // A is a DHT client (a node behind NAT, as a CLI user's often is): B does not hand it
    // to C's queries, so C never connects to A by itself.
    let a = start(Some(b.p2p_addr()), KadMode::Client).await;
    connected(&a.handle, b.peer).await;
    // Let A's start-up bootstrap query end before C exists, so it cannot learn C.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = start(Some(b.p2p_addr()), KadMode::Server).await;
    connected(&b.handle, c.peer).await;
    connected(&c.handle, b.peer).await;
    let known = a.handle.peers().await.unwrap();
    assert!(
        !known.iter().any(|i| i.peer_id == c.peer.to_string()),
        "A must not know C yet: {known:?}"
    );

    let peer = tokio::time::timeout(WAIT, a.handle.dial(Target::Peer(c.peer)))
        .await
        .expect("dial answered in time")
        .expect("A finds C through B and connects");
    assert_eq!(peer, c.peer);
    connected(&a.handle, c.peer).await;

    // A peer id nobody knows: a coded error, in bounded time, saying it was looked up.
    let nobody = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(40), a.handle.dial(Target::Peer(nobody)))
        .await
        .expect("answered within the wait")
        .expect_err("nobody knows it");
    assert_eq!(err.code(), ErrorCode::TransportUnavailable, "{err}");
    assert!(err.to_string().contains("Amino"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(40));
}

/// `meshd run` flags for a loopback node bootstrapping from `bootstrap` (none: none).
fn cli_args<'a>(bootstrap: &'a str, kad_mode: &'a str) -> Vec<&'a str> {
    vec![
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--bootstrap",
        bootstrap,
        "--kad-mode",
        kad_mode,
        "--no-autonat",
        "--events",
    ]
}

/// Waits (bounded) until `n`'s `meshd peers` lists `peer`.
fn cli_connected(n: &meshd::Meshd, peer: &str) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let out = n.cli(&["peers"]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains(peer) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{peer} not connected within {WAIT:?}");
}

#[test]
fn meshd_dial_peer_id_looks_the_peer_up() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let b = meshd::Meshd::start(dirs[0].path(), &cli_args("none", "server"));
    let b_addr = format!("{}/p2p/{}", b.addr(), b.peer_id());
    let a = meshd::Meshd::start(dirs[1].path(), &cli_args(&b_addr, "client"));
    cli_connected(&a, &b.peer_id());
    std::thread::sleep(Duration::from_secs(2));
    let c = meshd::Meshd::start(dirs[2].path(), &cli_args(&b_addr, "server"));
    cli_connected(&b, &c.peer_id());
    let peers = a.cli_ok(&["peers"]).to_string();
    assert!(
        !peers.contains(&c.peer_id()),
        "A must not know C yet: {peers}"
    );

    let out = a.cli_ok(&["dial", &c.peer_id()]);
    assert_eq!(out["peer_id"], c.peer_id().as_str(), "{out}");
    cli_connected(&a, &c.peer_id());

    // Nobody knows this one: exit 1 and a coded error naming the lookup.
    let nobody = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let out = a.cli(&["dial", &nobody.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("E_TRANSPORT_UNAVAILABLE"), "{err}");
    assert!(err.contains("Amino"), "{err}");
}
