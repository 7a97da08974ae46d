//! The node as a library: two `libmesh::node::Node`s in one process, driven through
//! `NodeHandle` and observed through the `NodeEvent` stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use libmesh::node::{
    Bootstrap, BootstrapName, Dht, KadMode, NodeConfig, NodeEvent, NodeHandle, Target,
};
use libp2p::Multiaddr;
use mesh_core::{MemoryTrace, NodeId, NodeKeypair, TraceEventType};
use mesh_testkit::node::start_node;
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(30);

struct Running {
    handle: NodeHandle,
    events: Receiver<NodeEvent>,
    node: NodeId,
    addr: Multiaddr,
    trace: Arc<MemoryTrace>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        // Amino provider records between loopback nodes need their loopback addresses.
        amino_private_addrs: true,
        ..NodeConfig::default()
    };
    let key = NodeKeypair::generate();
    let trace = Arc::new(MemoryTrace::new(4096));
    let n = start_node(key, config, trace.clone(), WAIT).await;
    Running {
        addr: n.p2p_addr(),
        handle: n.handle,
        events: n.events,
        node: n.node,
        trace,
        _dir: n.dir,
    }
}

async fn next(events: &mut Receiver<NodeEvent>, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = events.recv().await.expect("node stopped");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event did not come")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_through_the_api() {
    let mut a = start().await;
    let mut b = start().await;

    // Dial by address; both sides see the session with the other's node id.
    let peer = a.handle.dial(Target::Addr(b.addr.clone())).await.unwrap();
    assert_eq!(NodeId::from_peer_id(&peer).unwrap(), b.node);
    let bn = b.node;
    let e = next(
        &mut a.events,
        |e| matches!(e, NodeEvent::SessionEstablished { node, .. } if *node == bn),
    )
    .await;
    let NodeEvent::SessionEstablished { capabilities, .. } = e else {
        unreachable!()
    };
    assert!(capabilities.contains(&"core/messaging".to_owned()));
    let an = a.node;
    next(
        &mut b.events,
        |e| matches!(e, NodeEvent::SessionEstablished { node, .. } if *node == an),
    )
    .await;

    // The advertisement exchange: A stores B's advertisement (and the reverse).
    next(
        &mut a.events,
        |e| matches!(e, NodeEvent::AdvertStored { node, .. } if *node == bn),
    )
    .await;
    let found = a.handle.lookup(b.node).await.unwrap();
    assert_eq!(found.source, "store");
    assert!(
        found
            .addrs
            .iter()
            .any(|x| b.addr.to_string().starts_with(x.as_str()))
    );

    // A signal marker by node id, with traces on both sides.
    let id = a
        .handle
        .send_marker(Target::Node(b.node), "marker:api".into())
        .await
        .unwrap();
    let e = next(&mut b.events, |e| {
        matches!(e, NodeEvent::MarkerReceived { .. })
    })
    .await;
    let NodeEvent::MarkerReceived {
        message_id,
        marker_ref,
        participant,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(message_id, id);
    assert_eq!(marker_ref, "marker:api");
    assert_eq!(
        participant,
        a.node.to_string().replacen("node:", "participant:", 1)
    );
    let kinds = |t: &MemoryTrace| t.events().iter().map(|e| e.event_type).collect::<Vec<_>>();
    assert!(kinds(&a.trace).contains(&TraceEventType::SignalMarkerSent));
    assert!(kinds(&b.trace).contains(&TraceEventType::SignalMarkerReceived));
    assert!(kinds(&a.trace).contains(&TraceEventType::SessionEstablished));
    assert!(kinds(&a.trace).contains(&TraceEventType::PeerConnected));

    // Status reflects the session.
    let s = a.handle.status().await.unwrap();
    assert_eq!(s.connected_peers, 1);
    assert_eq!(s.mesh.sessions, 1);
    assert_eq!(s.node_id, a.node.to_string());
    let peers = a.handle.peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert!(peers[0].session);

    // Provider records (rendezvous: who has X) on both DHTs.
    let peer_a = NodeId::to_peer_id(&a.node).unwrap();
    for dht in [Dht::Mesh, Dht::Amino] {
        let key = format!("/swarm/test-{dht:?}").into_bytes();
        a.handle.provide(dht, key.clone()).await.unwrap();
        let found = b.handle.find_providers(dht, key).await.unwrap();
        assert_eq!(found, vec![peer_a], "{dht:?}");
        let none = b
            .handle
            .find_providers(dht, b"/swarm/nobody".to_vec())
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    // Errors carry frozen codes: an unknown node cannot be found or dialed.
    let stranger = NodeKeypair::generate().node_id();
    let err = a.handle.dial(Target::Node(stranger)).await.unwrap_err();
    assert_eq!(err.code().as_str(), "E_TRANSPORT_UNAVAILABLE");

    // Shutdown: B's side sees the session end.
    a.handle.shutdown().await;
    next(
        &mut b.events,
        |e| matches!(e, NodeEvent::SessionClosed { node, .. } if *node == an),
    )
    .await;
    assert!(
        a.handle.status().await.is_err(),
        "a stopped node still answers"
    );
}
