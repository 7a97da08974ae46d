//! The routing policy and signaling between in-process nodes on loopback: a node whose
//! advertised address is dead is reached by signaling through a host and both sides
//! dialing; without a signaling host the relay circuit wins; a setup payload travels
//! through a host; markers go both ways over the chosen path. A stranger's signaled
//! candidates make the node send nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use libmesh::node::config::RouteSettings;
use libmesh::node::{
    Bootstrap, BootstrapName, KadMode, NodeConfig, NodeEvent, NodeHandle, SeedPeer, Target,
};
use libp2p::Multiaddr;
use mesh_core::{ErrorCode, MemoryTrace, NodeId, NodeKeypair, TraceEventType};
use mesh_testkit::node::start_node;
use tokio::sync::mpsc::Receiver;

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

fn traced(t: &MemoryTrace, kind: TraceEventType) -> Vec<mesh_core::TraceEvent> {
    t.events()
        .into_iter()
        .filter(|e| e.event_type == kind)
        .collect()
}
/// TEST-NET-1: never routed, so a dial to it hangs until the stage times out.
const DEAD: &str = "/ip4/192.0.2.1/tcp/9";

struct Running {
    handle: NodeHandle,
    events: Receiver<NodeEvent>,
    node: NodeId,
    addr: Multiaddr,
    trace: Arc<MemoryTrace>,
    _dir: tempfile::TempDir,
}

fn base(seeds: Vec<SeedPeer>) -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        seeds,
        // No AutoNAT: its dial-back connections would let the DHT learn the hidden
        // nodes' real addresses, and connect them before the test asks.
        autonat: false,
        route: RouteSettings {
            direct_secs: 2,
            signaling_secs: 10,
            relay_secs: 6,
        },
        ..NodeConfig::default()
    }
}

async fn start(config: NodeConfig) -> Running {
    logs();
    let trace = Arc::new(MemoryTrace::new(8192));
    let n = start_node(NodeKeypair::generate(), config, trace.clone(), WAIT).await;
    Running {
        addr: n.p2p_addr(),
        handle: n.handle,
        events: n.events,
        node: n.node,
        trace,
        _dir: n.dir,
    }
}

fn seed(r: &Running) -> SeedPeer {
    SeedPeer {
        node_id: r.node,
        addr: r.addr.clone(),
        label: None,
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

/// Waits (bounded) until `r` holds sessions with every node of `with`.
async fn sessions(r: &Running, with: &[NodeId]) {
    tokio::time::timeout(WAIT, async {
        loop {
            let peers = r.handle.peers().await.unwrap();
            let ok = with.iter().all(|n| {
                peers
                    .iter()
                    .any(|p| p.session && p.node_id.as_deref() == Some(&n.to_string()))
            });
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("sessions");
}

/// A node that can only be reached through others: its advertisement names a dead
/// address, and it is a DHT client, so nobody learns its real one from a routing table
/// (DHT queries would otherwise connect every node of a small mesh to every other).
/// With that public address it is no node on loopback alone, and such a node takes no
/// loopback candidates through a signaling host (a host on its machine forwards for
/// anyone): these nodes take loopback and private candidates as a LAN's would
/// (`[signal] private_candidates`).
fn hidden(seeds: Vec<SeedPeer>) -> NodeConfig {
    let mut config = NodeConfig {
        external: vec![DEAD.parse().unwrap()],
        kad_mode: KadMode::Client,
        ..base(seeds)
    };
    config.signal.private_candidates = true;
    config
}

async fn markers_both_ways(a: &mut Running, b: &mut Running) {
    a.handle
        .send_marker(Target::Node(b.node), "ping-over-route".into())
        .await
        .unwrap();
    next(&mut b.events, |e| {
        matches!(e, NodeEvent::MarkerReceived { marker_ref, .. } if marker_ref == "ping-over-route")
    })
    .await;
    b.handle
        .send_marker(Target::Node(a.node), "pong-over-route".into())
        .await
        .unwrap();
    next(&mut a.events, |e| {
        matches!(e, NodeEvent::MarkerReceived { marker_ref, .. } if marker_ref == "pong-over-route")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_then_direct_when_the_advertised_address_is_dead() {
    let h = start(base(vec![])).await;
    let mut a = start(hidden(vec![seed(&h)])).await;
    let mut b = start(hidden(vec![seed(&h)])).await;
    sessions(&h, &[a.node, b.node]).await;
    // B's advertisement (with the dead address) reaches the mesh DHT through H.
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(f) = a.handle.lookup_fresh(b.node).await {
                assert_eq!(f.addrs, vec![DEAD.to_owned()]);
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
    .expect("B's advertisement in the mesh DHT");

    let route = a.handle.connect(b.node).await.unwrap();
    assert_eq!(route.path, "signaling", "{route:?}");
    assert_eq!(route.stages.len(), 2, "{route:?}");
    assert_eq!(route.stages[0].stage, "direct");
    assert!(!route.stages[0].ok);
    assert_eq!(route.stages[1].stage, "signaling");
    assert!(route.stages[1].ok);
    assert!(!route.addr.contains("p2p-circuit"), "{route:?}");
    // B saw the request through H, and answered.
    let e = next(
        &mut b.events,
        |e| matches!(e, NodeEvent::SignalReceived { kind, .. } if kind == "connect_request"),
    )
    .await;
    let NodeEvent::SignalReceived {
        from, via, payload, ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(from, a.node);
    assert_eq!(
        NodeId::from_peer_id(&via).unwrap(),
        h.node,
        "delivered by the host"
    );
    assert_eq!(payload["purpose"], "connect");
    // Traced: the host forwarded, A chose the route.
    let selected = traced(&a.trace, TraceEventType::RouteSelected);
    assert_eq!(selected.len(), 1);
    assert_eq!(selected[0].detail.as_ref().unwrap()["path"], "signaling");
    assert!(!traced(&b.trace, TraceEventType::SignalReceived).is_empty());

    // The same connect again: already connected.
    assert_eq!(a.handle.connect(b.node).await.unwrap().path, "existing");
    markers_both_ways(&mut a, &mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_when_no_host_can_signal() {
    // H: a relay server (with an external address, which relay v2 needs before it
    // accepts reservations) that does not forward signaling frames.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let h = start(NodeConfig {
        listen: vec![h_addr.clone()],
        external: vec![h_addr.clone()],
        relay_server: true,
        signaling_host: false,
        ..base(vec![])
    })
    .await;
    let relay = h.addr.clone();
    let mut a = start(hidden(vec![seed(&h)])).await;
    let mut b = start(NodeConfig {
        relays: vec![relay],
        ..hidden(vec![seed(&h)])
    })
    .await;
    // B advertises its circuit through H once the reservation is up.
    next(&mut b.events, |e| {
        matches!(e, NodeEvent::OwnAdvertPublished { addrs, .. }
            if addrs.iter().any(|a| a.to_string().contains("p2p-circuit")))
    })
    .await;
    sessions(&h, &[a.node, b.node]).await;
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(f) = a.handle.lookup_fresh(b.node).await
                && f.addrs.iter().any(|a| a.contains("p2p-circuit"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await
    .expect("B's circuit address in the mesh DHT");

    let route = a.handle.connect(b.node).await.unwrap();
    assert_eq!(route.path, "relay", "{route:?}");
    let stages: Vec<(&str, bool)> = route.stages.iter().map(|s| (s.stage, s.ok)).collect();
    assert_eq!(
        stages,
        vec![("direct", false), ("signaling", false), ("relay", true)],
        "{route:?}"
    );
    assert!(
        route.stages[1]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("no signaling host")
    );
    assert!(route.addr.contains("p2p-circuit"), "{route:?}");
    markers_both_ways(&mut a, &mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_payload_through_a_host() {
    let h = start(base(vec![])).await;
    let a = start(hidden(vec![seed(&h)])).await;
    let mut b = start(hidden(vec![seed(&h)])).await;
    sessions(&h, &[a.node, b.node]).await;
    let sdp = b"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n".to_vec();
    let corr = a
        .handle
        .send_signal(b.node, sdp.clone(), Some("application/sdp".into()))
        .await
        .unwrap();
    let e = next(
        &mut b.events,
        |e| matches!(e, NodeEvent::SignalReceived { kind, .. } if kind == "setup_payload"),
    )
    .await;
    let NodeEvent::SignalReceived {
        from,
        via,
        correlation,
        payload,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(from, a.node);
    assert_eq!(NodeId::from_peer_id(&via).unwrap(), h.node);
    assert_eq!(correlation, corr);
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD
        .decode(payload["data/b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(data, sdp);
    assert_eq!(payload["content-type"], "application/sdp");
    // A and B never connected: the frames went through H.
    let peers = a.handle.peers().await.unwrap();
    assert!(
        peers
            .iter()
            .all(|p| p.node_id.as_deref() != Some(&b.node.to_string()))
    );

    // Too large, and to a node nobody here can reach.
    let big = vec![0u8; libmesh::node::MAX_SETUP_BYTES + 1];
    let e = a.handle.send_signal(b.node, big, None).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ProtoInvalid);
    let stranger = NodeKeypair::generate().node_id();
    let e = a
        .handle
        .send_signal(stranger, b"x".to_vec(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TransportUnavailable, "{e}");
}

/// A node sends setup payloads to another one after the other, many more than the
/// per-signer quota of open correlations (16): each correlation ends when its payload
/// arrives, so none is refused and every payload is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_payloads_in_a_row_are_all_delivered() {
    let h = start(base(vec![])).await;
    let a = start(hidden(vec![seed(&h)])).await;
    let mut b = start(hidden(vec![seed(&h)])).await;
    sessions(&h, &[a.node, b.node]).await;
    const N: usize = 40;
    for i in 0..N {
        a.handle
            .send_signal(b.node, format!("payload {i}").into_bytes(), None)
            .await
            .unwrap_or_else(|e| panic!("payload {i}: {e}"));
    }
    for _ in 0..N {
        next(
            &mut b.events,
            |e| matches!(e, NodeEvent::SignalReceived { kind, .. } if kind == "setup_payload"),
        )
        .await;
    }
}

/// A stranger (no session, no swarm in common) connects to B and sends, as a key of
/// its choosing, a `connect` request and QUIC candidates that all point at a UDP socket
/// on loopback. B takes the frames (they are delivered), but sends not one datagram
/// there: it dials candidates only for requesters its policy knows (and ends the
/// stranger's correlation once it has answered it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_candidates_make_no_dial() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use mesh_signal::{Behaviour, Config, Event};
    use serde_json::{Map, json};

    let b = start(NodeConfig {
        listen: vec![
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        ],
        ..base(vec![])
    })
    .await;
    let victim = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = victim.local_addr().unwrap().port();

    // The frames are signed by X; the connection is Y's.
    let (kx, ky) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut y = mesh_testkit::swarm_with(&ky, Behaviour::new(Config::new(kx.node_id())));
    y.dial(b.addr.clone()).unwrap();
    let b_peer = b.node.to_peer_id().unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } = y.select_next_some().await
                && peer_id == b_peer
            {
                return;
            }
        }
    })
    .await
    .expect("connected to B");

    let now = mesh_core::Timestamp::now();
    let corr = "corr:stranger";
    let mut p = Map::new();
    p.insert("purpose".into(), json!("connect"));
    let mut frames =
        vec![mesh_signal::frame(&kx, b.node, "connect_request", corr, p, &now).unwrap()];
    let addrs: Vec<String> = (0..16)
        .map(|_| format!("/ip4/127.0.0.1/udp/{port}/quic-v1"))
        .collect();
    for _ in 0..4 {
        let mut p = Map::new();
        p.insert("addrs".into(), json!(addrs));
        frames.push(mesh_signal::frame(&kx, b.node, "candidate", corr, p, &now).unwrap());
    }
    for f in &frames {
        y.behaviour_mut().send(f, None).unwrap();
    }
    // B takes the request (and answers it); the stranger's correlation ends once
    // answered, so its candidate frames may be refused: either way every frame is
    // answered.
    let request_id = frames[0].frame_id().to_owned();
    let (mut answered, mut request_taken) = (0, false);
    tokio::time::timeout(WAIT, async {
        while answered < frames.len() {
            match y.select_next_some().await {
                SwarmEvent::Behaviour(Event::Delivered { frame_id, .. }) => {
                    request_taken |= frame_id == request_id;
                    answered += 1;
                }
                SwarmEvent::Behaviour(Event::Refused {
                    frame_id,
                    error,
                    by_peer: true,
                    ..
                }) => {
                    assert_ne!(
                        frame_id.as_deref(),
                        Some(request_id.as_str()),
                        "B refused the request: {error}"
                    );
                    answered += 1;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("frames answered");
    assert!(request_taken);
    // Nothing reaches the socket (bounded wait, the swarm kept polled meanwhile).
    let mut buf = [0u8; 2048];
    let mut datagrams = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        tokio::select! {
            r = victim.recv_from(&mut buf) => {
                if r.is_ok() {
                    datagrams += 1;
                }
            }
            _ = y.select_next_some() => {}
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    assert_eq!(datagrams, 0, "B sent datagrams to a stranger's candidate");
}
