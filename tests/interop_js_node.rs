//! libmesh's composed node (`libmesh::node::Node`, in process) against an independent
//! implementation, a js-libp2p 3 node (`tests/interop/js/node.mjs`): ping and identify
//! both ways over TCP and WS, each other's peers and records through Kademlia (Amino
//! peer routing and the mesh DHT with signed advertisements), gossipsub both ways.
//! Loopback only; no public bootstrap on either side.
//!
//! Skipped (with a message) when the npm packages are not installed, unless
//! `MESH_REQUIRE_JS_INTEROP` is set (CI sets it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/js_node.rs"]
mod js_node;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use js_node::{JsNode, is_ws};
use libmesh::node::{
    Bootstrap, BootstrapName, KadMode, Node, NodeConfig, NodeEvent, NodeHandle, Target,
};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_advert::kad::{record_for, record_key, validate_record};
use mesh_core::{NodeId, NodeKeypair, Timestamp};
use serde_json::{Value, json};
use tokio::sync::mpsc::Receiver;

const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "mesh-interop";

struct Ours {
    handle: NodeHandle,
    events: Receiver<NodeEvent>,
    backlog: Vec<NodeEvent>,
    node: NodeId,
    peer: PeerId,
    tcp: Multiaddr,
    ws: Multiaddr,
    _dir: tempfile::TempDir,
}

impl Ours {
    async fn start() -> Ours {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
                "/ip4/127.0.0.1/tcp/0/ws".parse().unwrap(),
            ],
            bootstrap: Bootstrap::Named(BootstrapName::None),
            kad_mode: KadMode::Server,
            // Amino peer routing among loopback peers needs their loopback addresses.
            amino_private_addrs: true,
            ..NodeConfig::default()
        };
        let (mut node, handle, events) = Node::new(
            NodeKeypair::generate(),
            config,
            dir.path(),
            Arc::new(mesh_core::NoTrace),
        )
        .unwrap();
        node.listen().unwrap();
        let (id, peer) = (node.node_id(), node.peer_id());
        tokio::spawn(node.run());
        let mut ours = Ours {
            handle,
            events,
            backlog: Vec::new(),
            node: id,
            peer,
            tcp: Multiaddr::empty(),
            ws: Multiaddr::empty(),
            _dir: dir,
        };
        while ours.tcp.is_empty() || ours.ws.is_empty() {
            let NodeEvent::Listening { addr } = ours
                .next(|e| matches!(e, NodeEvent::Listening { .. }))
                .await
            else {
                unreachable!()
            };
            if is_ws(&addr) {
                ours.ws = addr;
            } else {
                ours.tcp = addr;
            }
        }
        ours
    }

    async fn next(&mut self, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        tokio::time::timeout(WAIT, async {
            loop {
                let e = self.events.recv().await.expect("node stopped");
                if pred(&e) {
                    return e;
                }
                if self.backlog.len() < 10_000 {
                    self.backlog.push(e);
                }
            }
        })
        .await
        .expect("expected node event did not come")
    }

    fn forget(&mut self, peer: PeerId) {
        self.backlog.retain(|e| match e {
            NodeEvent::Identified { peer: p, .. } | NodeEvent::Pinged { peer: p, .. } => *p != peer,
            _ => true,
        });
    }
}

fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    addr.clone().with(Protocol::P2p(peer))
}

async fn call(js: &mut JsNode, cmd: Value) -> Value {
    match js.call(cmd.clone()).await {
        Ok(v) => v,
        Err(e) => panic!("js {cmd}: {e}\n{}", js.stderr_tail()),
    }
}

/// Ping and identify both ways on one connection over `transport`.
async fn ping_identify(ours: &mut Ours, js: &mut JsNode, ws: bool, we_dial: bool) {
    let jsp = js.peer_id;
    ours.forget(jsp);
    if we_dial {
        let addr = js.addrs.iter().find(|a| is_ws(a) == ws).unwrap().clone();
        ours.handle
            .dial(Target::Addr(with_peer(&addr, jsp)))
            .await
            .unwrap();
    } else {
        let addr = if ws { &ours.ws } else { &ours.tcp };
        call(
            js,
            json!({"cmd": "dial", "addr": with_peer(addr, ours.peer).to_string()}),
        )
        .await;
    }
    // Ours: identify of js and a ping round trip.
    let NodeEvent::Identified {
        agent, protocols, ..
    } = ours
        .next(|e| matches!(e, NodeEvent::Identified { peer, .. } if *peer == jsp))
        .await
    else {
        unreachable!()
    };
    assert!(agent.starts_with("js-libp2p/"), "{agent}");
    for p in [
        "/ipfs/ping/1.0.0",
        "/ipfs/kad/1.0.0",
        "/mesh/kad/1.0.0",
        "/meshsub/1.1.0",
    ] {
        assert!(
            protocols.iter().any(|x| x == p),
            "js lacks {p}: {protocols:?}"
        );
    }
    ours.next(|e| matches!(e, NodeEvent::Pinged { peer, .. } if *peer == jsp))
        .await;
    // Js: a ping and an identify of ours, over the same transport.
    let ping = call(js, json!({"cmd": "ping", "peer": ours.peer.to_string()})).await;
    assert!(ping["rtt"].as_f64().is_some(), "{ping}");
    let id = call(
        js,
        json!({"cmd": "identify", "peer": ours.peer.to_string()}),
    )
    .await;
    assert!(
        id["agentVersion"].as_str().unwrap().starts_with("libmesh/"),
        "{id}"
    );
    let theirs: Vec<&str> = id["protocols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for p in [
        "/ipfs/id/1.0.0",
        "/ipfs/ping/1.0.0",
        "/ipfs/kad/1.0.0",
        "/mesh/kad/1.0.0",
        "/mesh/session/1.0.0",
        "/mesh/advert/1.0.0",
    ] {
        assert!(theirs.contains(&p), "we lack {p}: {theirs:?}");
    }
    for c in id["connections"].as_array().unwrap() {
        let c: Multiaddr = c.as_str().unwrap().parse().unwrap();
        assert_eq!(is_ws(&c), ws, "{c} is not over the expected transport");
    }
    call(js, json!({"cmd": "hangup", "peer": ours.peer.to_string()})).await;
    ours.next(|e| matches!(e, NodeEvent::PeerDisconnected { peer } if *peer == jsp))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libmesh_node_and_js_libp2p() {
    let Some(mut js) = JsNode::spawn().await.unwrap() else {
        return;
    };
    let mut ours = Ours::start().await;

    for (ws, we_dial) in [(false, true), (false, false), (true, true), (true, false)] {
        ping_identify(&mut ours, &mut js, ws, we_dial).await;
    }

    // Stay connected for the DHT and gossip parts.
    let addr = with_peer(&ours.tcp, ours.peer).to_string();
    call(&mut js, json!({"cmd": "dial", "addr": addr})).await;

    // Mesh DHT, js -> ours: js puts the signed advertisement of a node nobody else
    // knows; our node verifies it on PUT (accept_put) and finds it in the mesh DHT.
    let now = Timestamp::now();
    let third = NodeKeypair::generate();
    let ad = mesh_advert::own::advert_for(
        &third,
        &["/ip4/127.0.0.1/tcp/9".parse().unwrap()],
        1,
        &now,
        600,
    )
    .unwrap();
    let record = record_for(&ad, &now);
    let key = String::from_utf8(record.key.to_vec()).unwrap();
    let put = call(
        &mut js,
        json!({"cmd": "kad-put", "dht": "mesh", "key": key, "valueB64": B64.encode(&record.value)}),
    )
    .await;
    assert!(
        put["storedAt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == &ours.peer.to_string()),
        "{put}"
    );
    let found = ours.handle.lookup_fresh(third.node_id()).await.unwrap();
    assert_eq!(found.source, "mesh-dht");
    assert_eq!(found.addrs, vec!["/ip4/127.0.0.1/tcp/9".to_owned()]);

    // Mesh DHT, ours -> js: our node put its own advertisement; js gets and we verify it.
    let our_key = String::from_utf8(record_key(&ours.node).to_vec()).unwrap();
    let got = wait_js_get(&mut js, &our_key).await;
    let rec = libp2p::kad::Record::new(
        record_key(&ours.node),
        B64.decode(got["valueB64"].as_str().unwrap()).unwrap(),
    );
    let theirs = validate_record(&rec, &Timestamp::now()).unwrap();
    assert_eq!(theirs.node_id(), ours.node);

    // Peers through Amino: a second js-libp2p node known only to the first js node is
    // found by our node (store and mesh DHT have nothing: Amino peer routing answers).
    let Some(js2) = JsNode::spawn().await.unwrap() else {
        return;
    };
    let js2_addrs: Vec<String> = js2.addrs.iter().map(ToString::to_string).collect();
    call(
        &mut js,
        json!({"cmd": "kad-add-peer", "dht": "ipfs", "peer": js2.peer_id.to_string(), "addrs": js2_addrs}),
    )
    .await;
    let js2_node = NodeId::from_peer_id(&js2.peer_id).unwrap();
    let found = ours.handle.lookup_fresh(js2_node).await.unwrap();
    assert_eq!(found.source, "amino", "{found:?}");
    assert!(found.advert.is_none());
    assert!(!found.addrs.is_empty());
    // And the other way: js finds a second libmesh node known only to ours.
    let mut ours2 = Ours::start().await;
    ours.handle
        .dial(Target::Addr(with_peer(&ours2.tcp, ours2.peer)))
        .await
        .unwrap();
    let p2 = ours2.peer;
    ours.next(|e| matches!(e, NodeEvent::Identified { peer, .. } if *peer == p2))
        .await;
    let fp = call(
        &mut js,
        json!({"cmd": "kad-find-peer", "dht": "ipfs", "peer": ours2.peer.to_string()}),
    )
    .await;
    let want = ours2.tcp.to_string();
    assert!(
        fp["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with(&want)),
        "{fp}"
    );
    let _ = ours2
        .next(|e| matches!(e, NodeEvent::PeerConnected { .. }))
        .await;

    // Gossipsub both ways on one topic.
    ours.handle.subscribe(TOPIC.into()).await.unwrap();
    call(&mut js, json!({"cmd": "subscribe", "topic": TOPIC})).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Publishing fails until each side has seen the other's subscription.
        let r = js
            .call(json!({"cmd": "publish", "topic": TOPIC, "dataB64": B64.encode(b"from js")}))
            .await;
        if r.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "js publish kept failing: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let jsp = js.peer_id;
    let NodeEvent::GossipMessage { data, source, .. } = ours
        .next(|e| matches!(e, NodeEvent::GossipMessage { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(data, b"from js");
    assert_eq!(source, Some(jsp));
    loop {
        let r = ours
            .handle
            .publish_topic(TOPIC.into(), b"from libmesh".to_vec())
            .await;
        if r.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "our publish kept failing: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let m = js
        .wait_event(WAIT, |v| v["event"] == "message" && v["topic"] == TOPIC)
        .await
        .unwrap();
    assert_eq!(
        B64.decode(m["dataB64"].as_str().unwrap()).unwrap(),
        b"from libmesh"
    );
    assert_eq!(m["from"], ours.peer.to_string());
    assert_eq!(m["signed"], true);

    js2.shutdown().await;
    js.shutdown().await;
    ours.handle.shutdown().await;
    ours2.handle.shutdown().await;
}

/// Js `kad-get` on the mesh DHT until the record is there (our node puts it once it
/// knows a mesh-DHT peer).
async fn wait_js_get(js: &mut JsNode, key: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match js
            .call(json!({"cmd": "kad-get", "dht": "mesh", "key": key}))
            .await
        {
            Ok(v) => return v,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "js never got {key}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}
