//! Dialing by peer id looks the peer up (issue 16 item 2): three in-process nodes on
//! loopback, A and C both bootstrapped from B, A never told of C; `A.dial(Peer(C))`
//! finds C through B (mesh DHT record or Amino peer routing) and connects. A peer id
//! nobody knows fails with a coded error, in bounded time. The same with three `meshd`
//! processes and `meshd dial <peer id>`, and for a plain rust-libp2p peer with an RSA key
//! (not a node id), found through Amino peer routing alone; a peer that moved (stopped,
//! back on another port) is found at its new address.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::{Bootstrap, BootstrapName, Dht, KadMode, NodeConfig, NodeHandle, Target};
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
    start_keyed(NodeKeypair::generate(), bootstrap, kad_mode).await
}

/// [`start`] with a given key.
async fn start_keyed(
    key: NodeKeypair,
    bootstrap: Option<Multiaddr>,
    kad_mode: KadMode,
) -> TestNode {
    logs();
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: match bootstrap {
            Some(b) => Bootstrap::Addrs(vec![b]),
            None => Bootstrap::Named(BootstrapName::None),
        },
        kad_mode,
        autonat: false,
        // Every address here is a loopback one: Amino must keep them.
        amino_private_addrs: true,
        ..NodeConfig::default()
    };
    let trace = Arc::new(MemoryTrace::new(4096));
    start_node(key, config, trace, WAIT).await
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

/// A black hole for `peer`: an address that accepts TCP connections and never speaks
/// (the Noise handshake hangs for the swarm's connection timeout, 10 s), and the task
/// holding them.
async fn black_hole(peer: PeerId) -> (Multiaddr, tokio::task::JoinHandle<()>) {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{peer}",
        hole.local_addr().unwrap().port()
    )
    .parse()
    .unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    (addr, holder)
}

/// A dial that fails while another connection to its peer came up is answered as
/// connected: dials no longer wait on each other, so the one at a dead address ends in
/// its own failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dial_is_answered_by_another_connection_to_the_peer() {
    let a = start(None, KadMode::Server).await;
    let c = start(None, KadMode::Server).await;
    let (hole_addr, holder) = black_hole(c.peer).await;
    let a2 = a.handle.clone();
    let stuck = tokio::spawn(async move { a2.dial(Target::Addr(hole_addr)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stuck.is_finished(), "the black hole answered");
    // Meanwhile A connects to C at its real address.
    let peer = tokio::time::timeout(WAIT, a.handle.dial(Target::Addr(c.p2p_addr())))
        .await
        .expect("dial answered in time")
        .expect("connected");
    assert_eq!(peer, c.peer);
    let answer = tokio::time::timeout(WAIT, stuck)
        .await
        .expect("answered when the black hole's dial timed out")
        .unwrap();
    assert_eq!(
        answer.expect("connected, through the other connection"),
        c.peer
    );
    holder.abort();
}

/// B (a DHT server), A (a DHT client of B that has not met C) and C (a server that B
/// knows), B holding C's record, which A finds there.
async fn c_recorded_at_b() -> (TestNode, TestNode, TestNode) {
    let b = start(None, KadMode::Server).await;
    let a = start(Some(b.p2p_addr()), KadMode::Client).await;
    connected(&a.handle, b.peer).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = start(Some(b.p2p_addr()), KadMode::Server).await;
    connected(&b.handle, c.peer).await;
    tokio::time::timeout(WAIT, async {
        while b.handle.lookup(c.node).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("B has C's record");
    (b, a, c)
}

/// A dial by peer id while another dial to the peer hangs (an address the peer left,
/// now a socket that never answers): the node dials what it knows or looks up itself
/// rather than waiting on the other dial, whose failure would never answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_by_peer_id_does_not_wait_for_another_dial_to_the_peer() {
    let (_b, a, c) = c_recorded_at_b().await;

    let (hole_addr, holder) = black_hole(c.peer).await;
    let a2 = a.handle.clone();
    let stuck = tokio::spawn(async move { a2.dial(Target::Addr(hole_addr)).await });
    // The stuck dial is under way before the dial by peer id starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stuck.is_finished(), "the black hole answered");

    let peer = tokio::time::timeout(WAIT, a.handle.dial(Target::Peer(c.peer)))
        .await
        .expect("dial answered in time")
        .expect("A finds C and connects, the other dial notwithstanding");
    assert_eq!(peer, c.peer);
    holder.abort();
    stuck.abort();
}

/// Dials by peer id at once, to a peer whose addresses a lookup finds, share one dial:
/// the peer sees one connection from the node, not one per command. Each command used to
/// dial on its own (a lookup answered from the store answers each one apart; one that
/// waited on a DHT query answered its waiters one dial each), and all of them came
/// through, as `PeerCondition::Disconnected` lets dials run side by side (some failed:
/// dials from the listening port to one address collide).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_by_peer_id_at_once_make_one_connection() {
    let (_b, a, c) = c_recorded_at_b().await;
    let from_a = connections_after_dials(&a, &c, Target::Peer(c.peer)).await;
    assert_eq!(
        from_a.len(),
        1,
        "{DIALS} dials by peer id at once: C holds these connections from A: {from_a:?}"
    );
}

/// Dials to one address at once share one dial too: C sees one connection from A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_to_one_address_at_once_make_one_connection() {
    let a = start(None, KadMode::Server).await;
    let c = start(None, KadMode::Server).await;
    let from_a = connections_after_dials(&a, &c, Target::Addr(c.p2p_addr())).await;
    assert_eq!(from_a.len(), 1, "{from_a:?}");
}

/// Dials at once in the tests above.
const DIALS: usize = 6;

/// `a` dials `target` (node `c`) [`DIALS`] times at once; once every dial is answered
/// (with `c`), the connections `c` holds from `a`.
async fn connections_after_dials(a: &TestNode, c: &TestNode, target: Target) -> Vec<String> {
    let dials: Vec<_> = (0..DIALS)
        .map(|_| {
            let (h, t) = (a.handle.clone(), target.clone());
            tokio::spawn(async move { h.dial(t).await })
        })
        .collect();
    for d in dials {
        let peer = tokio::time::timeout(WAIT, d)
            .await
            .expect("dial answered in time")
            .unwrap()
            .expect("connected");
        assert_eq!(peer, c.peer);
    }
    // Every connection A opened is up at A by now (each dial was answered by its
    // own); C's side of them a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    connections_from(&c.handle, a.peer).await
}

/// The remote addresses of `from`'s connections to `h` (one per connection).
async fn connections_from(h: &NodeHandle, from: PeerId) -> Vec<String> {
    h.peers()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.peer_id == from.to_string())
        .flat_map(|i| i.addrs)
        .collect()
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
        "--amino-private-addrs",
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

/// A plain rust-libp2p peer of the Amino DHT: Kademlia (server) and identify.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct AminoPeer {
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
    identify: libp2p::identify::Behaviour,
}

/// The test RSA key (PKCS#8, made once with `openssl genpkey`; test use only).
fn rsa_key() -> libp2p::identity::Keypair {
    use base64::Engine as _;
    let pem = include_str!("support/rsa-peer-key.pem");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    libp2p::identity::Keypair::rsa_from_pkcs8(&mut der).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_of_a_non_node_peer_id_uses_amino_peer_routing() {
    use futures::StreamExt as _;
    use libp2p::{identify, kad, noise, tcp, yamux};

    let b = start(None, KadMode::Server).await;
    let a = start(Some(b.p2p_addr()), KadMode::Client).await;
    connected(&a.handle, b.peer).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut c = libp2p::SwarmBuilder::with_existing_identity(rsa_key())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let mut kad = kad::Behaviour::new(peer, kad::store::MemoryStore::new(peer));
            kad.set_mode(Some(kad::Mode::Server));
            AminoPeer {
                kad,
                identify: identify::Behaviour::new(identify::Config::new(
                    "/ipfs/id/1.0.0".into(),
                    key.public(),
                )),
            }
        })
        .unwrap()
        .build();
    let c_peer = *c.local_peer_id();
    assert!(
        mesh_core::NodeId::from_peer_id(&c_peer).is_err(),
        "an RSA peer id is not a node id"
    );
    c.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    c.behaviour_mut().kad.add_address(&b.peer, b.addr.clone());
    c.behaviour_mut().kad.bootstrap().unwrap();
    // C runs on its own task until the test ends.
    let driver = tokio::spawn(async move {
        loop {
            c.select_next_some().await;
        }
    });
    connected(&b.handle, c_peer).await;
    // B hands C out once its Amino table holds C (after identify, not at the connection).
    tokio::time::timeout(WAIT, async {
        loop {
            let table = b.handle.routing_table(Dht::Amino).await.unwrap();
            if table
                .iter()
                .any(|e| e.peer_id == c_peer.to_string() && !e.addrs.is_empty())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("C in B's Amino table");
    let known = a.handle.peers().await.unwrap();
    assert!(
        !known.iter().any(|i| i.peer_id == c_peer.to_string()),
        "A must not know C yet: {known:?}"
    );

    let peer = tokio::time::timeout(WAIT, a.handle.dial(Target::Peer(c_peer)))
        .await
        .expect("dial answered in time")
        .expect("A finds C through B's Amino table and connects");
    assert_eq!(peer, c_peer);

    // An RSA-style peer id nobody knows (a random one: not an Ed25519 key).
    let nobody = PeerId::random();
    let err = tokio::time::timeout(Duration::from_secs(40), a.handle.dial(Target::Peer(nobody)))
        .await
        .expect("answered within the wait")
        .expect_err("nobody knows it");
    assert_eq!(err.code(), ErrorCode::TransportUnavailable, "{err}");
    assert!(err.to_string().contains("Amino peer routing"), "{err}");
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dial_by_peer_id_finds_a_peer_that_moved() {
    let b = start(None, KadMode::Server).await;
    let a = start(Some(b.p2p_addr()), KadMode::Client).await;
    connected(&a.handle, b.peer).await;
    let key = NodeKeypair::generate();
    let c1 = start_keyed(key.clone(), Some(b.p2p_addr()), KadMode::Server).await;
    let (c_node, c_peer, old_addr) = (c1.node, c1.peer, c1.addr.clone());
    // A meets C at its first address.
    a.handle.dial(Target::Addr(c1.p2p_addr())).await.unwrap();
    connected(&a.handle, c_peer).await;
    // C moves: it stops and comes back, same key, on another port.
    c1.handle.shutdown().await;
    tokio::time::timeout(WAIT, c1.task)
        .await
        .expect("C stopped")
        .unwrap();
    tokio::time::timeout(WAIT, async {
        while a
            .handle
            .peers()
            .await
            .unwrap()
            .iter()
            .any(|i| i.peer_id == c_peer.to_string())
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("A saw C go");
    let c2 = start_keyed(key, Some(b.p2p_addr()), KadMode::Server).await;
    assert_ne!(c2.addr, old_addr);
    // B finds C's new record, and its mesh-DHT table holds C at the new address, before
    // A asks: B answers A's query with the record or hands it C to ask (B's lookup alone
    // may have found the record at C itself, before C's put reached B's store).
    let new_addr = c2.addr.to_string();
    tokio::time::timeout(WAIT, async {
        loop {
            let table = b.handle.routing_table(Dht::Mesh).await.unwrap();
            let in_table = table.iter().any(|e| {
                e.peer_id == c_peer.to_string() && e.addrs.iter().any(|x| x.starts_with(&new_addr))
            });
            if let Ok(f) = b.handle.lookup_fresh(c_node).await
                && in_table
                && f.addrs.iter().any(|x| x.starts_with(&new_addr))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("B has C's new record");

    let peer = tokio::time::timeout(WAIT, a.handle.dial(Target::Peer(c_peer)))
        .await
        .expect("dial answered in time")
        .expect("the lookup finds C's new address");
    assert_eq!(peer, c_peer);
    let info = a.handle.peers().await.unwrap();
    let c_info = info
        .iter()
        .find(|i| i.peer_id == c_peer.to_string())
        .expect("connected");
    assert!(
        c_info.addrs.iter().any(|x| x.starts_with(&new_addr)),
        "{c_info:?} vs {new_addr}"
    );
}
