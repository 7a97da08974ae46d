//! The peers a restarted node takes from its durable store are dialed only at
//! addresses in its scope: anyone can publish an advertisement (fresh keys, any
//! endpoints), and these peers are redialed for as long as the node runs. A node with
//! an address beyond loopback does not dial a stored peer's loopback endpoint (it
//! did); a loopback-only node (several on one host, as in the tests) does. In-process
//! nodes over loopback TCP; the stored endpoint is a listener counting connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libmesh::advert_store::DurableStore;
use libmesh::node::{Bootstrap, BootstrapName, Dht, Node, NodeConfig, NodeHandle};
use libp2p::Multiaddr;
use mesh_advert::StoreLimits;
use mesh_advert::own::advert_for;
use mesh_core::{NoTrace, NodeKeypair, Timestamp};

/// A listener on 127.0.0.1 counting the connections it accepts; its port.
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            c.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (port, count)
}

/// A data directory whose store holds a stranger's advertisement naming only
/// 127.0.0.1:`port`; the stranger's peer id.
fn store_with_stranger_at(dir: &Path, port: u16) -> String {
    let now = Timestamp::now();
    let (store, _) = DurableStore::open(dir, StoreLimits::default(), &now).unwrap();
    let endpoint: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let key = NodeKeypair::generate();
    let ad = advert_for(&key, &[endpoint], 1, &now, 3600).unwrap();
    store.insert(ad, &now).unwrap();
    key.node_id().to_peer_id().unwrap().to_string()
}

fn start(dir: &Path, external: Vec<Multiaddr>) -> NodeHandle {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        external,
        ..NodeConfig::default()
    };
    let (mut node, handle, _events) =
        Node::new(NodeKeypair::generate(), config, dir, Arc::new(NoTrace)).unwrap();
    node.listen().unwrap();
    tokio::spawn(node.run());
    handle
}

/// Waits up to `within` for `count` to reach one; what it is then.
async fn dials(count: &AtomicUsize, within: Duration) -> usize {
    let end = Instant::now() + within;
    while count.load(Ordering::SeqCst) == 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    count.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_peers_are_dialed_only_in_the_node_s_scope() {
    // A node with a public address of its own: the stranger's loopback endpoint is
    // not its business.
    let (port, count) = counting_listener();
    let dir = tempfile::tempdir().unwrap();
    store_with_stranger_at(dir.path(), port);
    let public: Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse().unwrap();
    let _public_node = start(dir.path(), vec![public]);
    assert_eq!(
        dials(&count, Duration::from_secs(6)).await,
        0,
        "a node with a public address dialed a stored loopback endpoint"
    );

    // A loopback-only node does dial it (so the listener above would have counted).
    let (port, count) = counting_listener();
    let dir = tempfile::tempdir().unwrap();
    let stranger = store_with_stranger_at(dir.path(), port);
    let loopback_node = start(dir.path(), vec![]);
    assert!(
        dials(&count, Duration::from_secs(30)).await > 0,
        "a loopback-only node did not dial its stored peer"
    );
    // The stranger is not in the mesh DHT's routing table, which the node hands to
    // every asker: a stored advertisement is anyone's, and shows nothing of a DHT
    // server (it was, at the addresses its signer chose). A connection adds a peer
    // that serves the DHT.
    let table = loopback_node.routing_table(Dht::Mesh).await.unwrap();
    assert!(
        !table.iter().any(|e| e.peer_id == stranger),
        "a stored peer is in the mesh DHT's table: {table:?}"
    );
}
