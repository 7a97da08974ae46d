//! A running node against a hostile peer that sends malformed, oversized and
//! nonsensical bodies on every libmesh protocol: each gets an answer carrying one of the
//! frozen error codes, never a panic; a request that never ends is given up; and the
//! node goes on serving well-behaved peers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig, NodeEvent};
use mesh_core::{ErrorCode, NoTrace, NodeKeypair};
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::node::{TestNode, start_node};

const WAIT: Duration = Duration::from_secs(30);

async fn node() -> TestNode {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        ..NodeConfig::default()
    };
    start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await
}

/// The frozen code in an answer (a CBOR map with `error/code`, possibly nested in a
/// batch's results), if any.
fn code_in(answer: &[u8]) -> Option<String> {
    let v = mesh_core::cbor::decode(answer).ok()?;
    fn find(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(m) => m
                .get("error/code")
                .and_then(|c| c.as_str().map(str::to_owned))
                .or_else(|| m.values().find_map(find)),
            serde_json::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v)
}

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("garbage", (0..1000u32).map(|i| (i * 7 + 3) as u8).collect()),
        ("truncated map", vec![0xa2, 0x61, b'k']),
        ("deep nesting", vec![0x81; 4096]),
        ("indefinite map", vec![0xbf, 0x61, b'a', 0x01, 0xff]),
        (
            "huge length head",
            vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
        (
            "well-formed nonsense",
            mesh_core::cbor::encode(&serde_json::json!({"kind": "nonsense", "x": [1, 2]})),
        ),
        ("oversized", vec![0xa0; 3 << 20]),
    ]
}

const PROTOCOLS: [&str; 4] = [
    "/mesh/session/1.0.0",
    "/mesh/marker/1.0.0",
    "/mesh/signal/1.0.0",
    "/mesh/advert/1.0.0",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_on_every_protocol_get_coded_errors_and_the_node_serves_on() {
    let mut n = node().await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(n.p2p_addr(), WAIT).await.unwrap();
    assert_eq!(peer, n.peer);
    let frozen: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    for protocol in PROTOCOLS {
        for (what, body) in bodies() {
            let r = hostile.send(peer, protocol, &body, WAIT).await;
            match r {
                Ok(answer) => {
                    let code = code_in(&answer)
                        .unwrap_or_else(|| panic!("{protocol} {what}: no error code"));
                    assert!(frozen.contains(&code.as_str()), "{protocol} {what}: {code}");
                }
                Err(e) => panic!("{protocol} {what}: {e}"),
            }
        }
    }
    // A request that never ends is given up by the node (request timeouts of 10 s, 30 s
    // for a handshake), not held forever.
    let patience = Duration::from_secs(45);
    let held = futures::future::join_all(
        PROTOCOLS.map(|p| hostile.trickle(peer, p, &[0xa2, 0x61], patience)),
    )
    .await;
    for (protocol, held) in PROTOCOLS.iter().zip(held) {
        let held = held.unwrap();
        assert!(
            held < patience,
            "{protocol}: a half-sent request held {held:?}"
        );
    }
    // The node is alive and serves a well-behaved peer.
    let status = n.handle.status().await.unwrap();
    assert_eq!(status.peer_id, n.peer.to_string());
    let friend = node().await;
    friend
        .handle
        .dial(libmesh::node::Target::Addr(n.p2p_addr()))
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let NodeEvent::SessionEstablished { .. } = n.events.recv().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("a session with a well-behaved peer after the hostile bodies");
}

/// Requests are read whole (`/mesh/signal` up to 1 MiB, `/mesh/session` and
/// `/mesh/marker` up to 64 KiB)
/// before they are checked, so the streams one connection may hold open at once are
/// few: of 40 half-sent requests on one connection, the node holds the protocol's
/// `MAX_STREAMS` and drops the rest at once (libp2p's default of 100 streams let a
/// connection make it hold 100 MiB of signal requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_few_half_sent_requests_open_at_once() {
    let n = node().await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(n.p2p_addr(), WAIT).await.unwrap();
    for (protocol, max) in [
        ("/mesh/signal/1.0.0", mesh_signal::MAX_STREAMS),
        ("/mesh/session/1.0.0", mesh_session::MAX_STREAMS),
        ("/mesh/marker/1.0.0", mesh_session::marker::MAX_STREAMS),
    ] {
        let kept = held_at_once(&hostile, peer, protocol).await;
        assert!(
            kept <= max,
            "{protocol}: {kept} half-sent requests held at once on one connection"
        );
        assert!(
            kept > 0,
            "{protocol}: the node serves some requests at once"
        );
    }
}

/// Of 40 half-sent requests on `protocol` over one connection to `peer`, how many the
/// node held open for the whole 4 s patience.
async fn held_at_once(
    hostile: &HostilePeer,
    peer: libp2p::PeerId,
    protocol: &'static str,
) -> usize {
    let patience = Duration::from_secs(4);
    let held = futures::future::join_all(
        (0..40).map(|_| hostile.trickle(peer, protocol, &[0x5a; 1000], patience)),
    )
    .await;
    held.into_iter()
        .filter(|h| h.as_ref().is_ok_and(|d| *d >= patience))
        .count()
}

/// The same for a relay's admission requests (up to 64 KiB each): libp2p's default of
/// 100 streams let one connection hold 100 of them open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relays_connection_holds_few_half_sent_admission_requests() {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        relay_server: true,
        ..NodeConfig::default()
    };
    let n = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(n.p2p_addr(), WAIT).await.unwrap();
    let kept = held_at_once(&hostile, peer, "/mesh/relay-admission/1.0.0").await;
    assert!(
        (1..=mesh_admission::server::MAX_STREAMS).contains(&kept),
        "{kept} half-sent admission requests held at once on one connection"
    );
}

/// A DHT request short of its last byte is dropped after `kad::MESSAGE_WAIT` (10 s), on
/// both DHTs: libp2p-kad read inbound requests with no timer, so a peer held 32 such
/// streams per connection (up to 256 KiB each on the mesh DHT) for as long as it liked
/// (vendor/libp2p-kad/PATCHED.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_dht_requests_are_dropped_after_the_wait() {
    let n = node().await;
    let hostile = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    let peer = hostile.connect(n.p2p_addr(), WAIT).await.unwrap();
    let wait = libp2p::kad::MESSAGE_WAIT;
    let patience = wait * 2 + Duration::from_secs(5);
    // A request announced at 8,000 bytes (varint 0xc0 0x3e; under both DHTs' packet
    // sizes), half of it sent.
    let mut half = vec![0xc0, 0x3e];
    half.extend_from_slice(&[0x5a; 4000]);
    let held = futures::future::join_all(
        ["/mesh/kad/1.0.0", "/ipfs/kad/1.0.0"]
            .into_iter()
            .flat_map(|p| std::iter::repeat_n(p, 4))
            .map(|protocol| hostile.trickle(peer, protocol, &half, patience)),
    )
    .await;
    for h in held {
        let h = h.unwrap();
        assert!(
            h >= wait && h < wait + Duration::from_secs(5),
            "a half-sent DHT request held for {h:?} (the wait is {wait:?})"
        );
    }
}
