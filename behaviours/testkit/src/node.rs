//! libmesh nodes in this process, for the root crate's tests and benchmarks (feature
//! `node`).

use std::sync::Arc;
use std::time::Duration;

use libmesh::node::{Node, NodeConfig, NodeEvent, NodeHandle};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{NodeId, NodeKeypair, TraceSink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A node running on its own task, with a fresh data directory.
pub struct TestNode {
    /// Its handle (the node stops when the last handle is dropped).
    pub handle: NodeHandle,
    /// Its events after the first `Listening`.
    pub events: mpsc::Receiver<NodeEvent>,
    /// Its node id.
    pub node: NodeId,
    /// Its peer id.
    pub peer: PeerId,
    /// The first address it listened on (without `/p2p`).
    pub addr: Multiaddr,
    /// The task running it.
    pub task: JoinHandle<()>,
    /// Its data directory (removed when dropped).
    pub dir: tempfile::TempDir,
}

impl TestNode {
    /// [`TestNode::addr`] with `/p2p/<peer>`.
    pub fn p2p_addr(&self) -> Multiaddr {
        self.addr.clone().with(Protocol::P2p(self.peer))
    }
}

/// Starts a node for `key` with `config` and `trace` on a fresh data directory, and
/// waits until it listens (the events before its first `Listening` are dropped).
///
/// # Panics
/// When the node cannot be built or listen, stops, or does not listen within `within`
/// (a test setup error).
pub async fn start_node(
    key: NodeKeypair,
    config: NodeConfig,
    trace: Arc<dyn TraceSink>,
    within: Duration,
) -> TestNode {
    start_node_with(key, config, trace, within, |_| ()).await.0
}

/// As [`start_node`], handing the node to `before_run` before it runs (for what must be
/// taken from it first, such as its perf stream control).
///
/// # Panics
/// As [`start_node`].
#[allow(clippy::expect_used)]
pub async fn start_node_with<T>(
    key: NodeKeypair,
    config: NodeConfig,
    trace: Arc<dyn TraceSink>,
    within: Duration,
    before_run: impl FnOnce(&mut Node) -> T,
) -> (TestNode, T) {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let (mut node, handle, mut events) =
        Node::new(key, config, dir.path(), trace).expect("node built");
    node.listen().expect("node listens");
    let (id, peer) = (node.node_id(), node.peer_id());
    let taken = before_run(&mut node);
    let task = tokio::spawn(node.run());
    let addr = tokio::time::timeout(within, async {
        loop {
            if let NodeEvent::Listening { addr } = events.recv().await.expect("node stopped") {
                return addr;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("node did not listen within {within:?}"));
    let node = TestNode {
        handle,
        events,
        node: id,
        peer,
        addr,
        task,
        dir,
    };
    (node, taken)
}

/// A node on loopback TCP (an ephemeral port) with no bootstrap, a Kademlia server,
/// AutoNAT off: the usual start of a test's configuration.
///
/// # Panics
/// Never (the address is a constant).
#[allow(clippy::expect_used)]
pub fn loopback_config() -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")],
        bootstrap: libmesh::node::Bootstrap::Named(libmesh::node::BootstrapName::None),
        kad_mode: libmesh::node::KadMode::Server,
        autonat: false,
        ..NodeConfig::default()
    }
}

/// `base` made a relay server admitting anyone, on a fixed loopback port that is also
/// its external address (relay v2 needs a confirmed external address before it accepts
/// reservations).
///
/// # Panics
/// When no loopback port can be had.
#[allow(clippy::expect_used)]
pub fn open_relay_config(base: NodeConfig) -> NodeConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}")
        .parse()
        .expect("a multiaddr");
    NodeConfig {
        listen: vec![addr.clone()],
        external: vec![addr],
        relay_server: true,
        admission: libmesh::node::admission::AdmissionSettings {
            policy: "open".into(),
            ..libmesh::node::admission::AdmissionSettings::default()
        },
        ..base
    }
}
