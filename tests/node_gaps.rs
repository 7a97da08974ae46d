//! Issue 16 item 8 end to end, on loopback: `peer-status.v1` records from real
//! sessions in `meshd peers`; the trace events `advertisement/fetched`,
//! `advertisement/rejected` and `peer/discovered`; loopback addresses kept out of the
//! Amino routing table unless `amino_private_addrs`; signal markers to a swarm
//! (`meshd marker send --swarm KEY TEXT`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::{Bootstrap, BootstrapName, Dht, KadMode, NodeConfig, NodeEvent};
use libp2p::{Multiaddr, PeerId};
use mesh_advert::own::advert_for;
use mesh_advert::protocol::{Request, encode_request};
use mesh_core::artifact::Artifact;
use mesh_core::{MemoryTrace, NodeKeypair, PeerStatus, Timestamp, TraceEvent, TraceEventType};
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::node::{TestNode, start_node};
use meshd::{LOCAL, Meshd};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// An in-process node on loopback, DHT server, no Amino bootstrap unless given.
async fn node(
    trace: Arc<MemoryTrace>,
    bootstrap: Option<Multiaddr>,
    seeds: Vec<libmesh::node::SeedPeer>,
    amino_private_addrs: bool,
) -> TestNode {
    if let Ok(f) = std::env::var("MESH_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: match bootstrap {
            Some(b) => Bootstrap::Addrs(vec![b]),
            None => Bootstrap::Named(BootstrapName::None),
        },
        seeds,
        kad_mode: KadMode::Server,
        autonat: false,
        amino_private_addrs,
        ..NodeConfig::default()
    };
    start_node(NodeKeypair::generate(), config, trace, WAIT).await
}

fn seed_of(n: &TestNode) -> libmesh::node::SeedPeer {
    libmesh::node::SeedPeer {
        node_id: n.node,
        addr: n.p2p_addr(),
        label: None,
    }
}

/// Waits (bounded) for a trace event matching `pred`.
async fn traced(trace: &MemoryTrace, pred: impl Fn(&TraceEvent) -> bool) -> TraceEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(e) = trace.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("trace event within the wait")
}

fn detail(e: &TraceEvent) -> Value {
    e.detail.clone().unwrap_or(Value::Null)
}

/// Waits (bounded) for an event of `n` matching `pred`.
async fn next_event(n: &mut TestNode, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = n.events.recv().await.expect("node running");
            if std::env::var("GAPS_DEBUG").is_ok() {
                eprintln!("{}", e.to_json());
            }
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event within the wait")
}

#[test]
fn meshd_peers_serves_peer_status_records() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let b = Meshd::start(dirs[0].path(), LOCAL);
    let seed = format!("seed-alpha={}", b.seed());
    let mut args = LOCAL.to_vec();
    args.extend(["--seed", seed.as_str()]);
    let a = Meshd::start(dirs[1].path(), &args);
    a.wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(1));
    let peers = a.cli_ok(&["peers"]);
    let entry = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == b.node_id().as_str())
        .unwrap_or_else(|| panic!("B in {peers}"))
        .clone();
    // The fields `meshd peers` always had are still there.
    assert_eq!(entry["peer_id"], b.peer_id().as_str());
    assert_eq!(entry["session"], true);
    assert!(entry["addrs"].as_array().is_some_and(|a| !a.is_empty()));
    assert!(entry["state"].is_string());
    // And the record, valid for the Orbiplex schema, from what the session learned.
    let status = entry["status"].clone();
    PeerStatus::from_json(status.clone()).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(status["schema"], "peer-status.v1");
    assert_eq!(status["node_id"], b.node_id().as_str());
    assert_eq!(status["display_name"], "seed-alpha");
    assert_eq!(status["lifecycle"], "connected");
    assert_eq!(status["quality_status"], "healthy");
    assert_eq!(status["temperature"], entry["state"]);
    let url = status["selected_endpoint_url"].as_str().unwrap();
    assert!(
        url.starts_with("multiaddr:/ip4/127.0.0.1/tcp/") && url.ends_with(&b.peer_id()),
        "{url}"
    );
    let supported: Vec<&str> = status["supported_capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(supported.contains(&"core/messaging"), "{status}");
    assert_eq!(
        Value::from(supported.clone()),
        entry["capabilities"],
        "the record names what the session proved"
    );
    assert_eq!(status["missing_capabilities"], serde_json::json!([]));
    assert_eq!(status["capability_missing_count"], 0);
    // B has no label for A: no display name, still a valid record.
    let on_b = b.cli_ok(&["peers"]);
    let rec = on_b[0]["status"].clone();
    PeerStatus::from_json(rec.clone()).unwrap_or_else(|e| panic!("{e}: {rec}"));
    assert_eq!(rec["display_name"], Value::Null);
    assert_eq!(rec["node_id"], a.node_id().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adverts_from_peers_and_the_mesh_dht_are_traced_fetched_or_rejected() {
    let (tb, ta) = (
        Arc::new(MemoryTrace::new(8192)),
        Arc::new(MemoryTrace::new(8192)),
    );
    let b = node(tb.clone(), None, Vec::new(), false).await;
    let a = node(ta.clone(), None, vec![seed_of(&b)], false).await;
    let (a_id, b_id) = (a.node.to_string(), b.node.to_string());

    // The session's advertisement exchange: each fetched the other's from a peer.
    for (trace, other, peer) in [(&ta, &b_id, b.peer), (&tb, &a_id, a.peer)] {
        let e = traced(trace, |e| {
            e.event_type == TraceEventType::AdvertisementFetched
                && detail(e)["node"] == other.as_str()
                && detail(e)["source"] == "peer"
        })
        .await;
        assert_eq!(e.peer, Some(peer.to_string()));
        assert!(detail(&e)["sequence/no"].as_u64().is_some());
    }
    // A lookup past the store: fetched from the mesh DHT.
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(f) = b.handle.lookup_fresh(a.node).await
                && f.source == "mesh-dht"
            {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("A's record in the mesh DHT");
    assert_eq!(found.node, a_id);
    traced(&tb, |e| {
        e.event_type == TraceEventType::AdvertisementFetched
            && detail(e)["node"] == a_id.as_str()
            && detail(e)["source"] == "mesh-dht"
    })
    .await;

    // A peer pushes adverts over /mesh/advert: a good one, an older one, an expired one.
    let key = NodeKeypair::generate();
    let k_id = key.node_id().to_string();
    let hostile = HostilePeer::spawn(key.clone(), Net::Tcp);
    let peer = hostile.connect(b.p2p_addr(), WAIT).await.unwrap();
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/9".parse().unwrap();
    let now = Timestamp::now();
    let publish = |ad| {
        encode_request(&Request::Publish {
            correlation: format!("c-{}", rand_suffix()),
            advert: Box::new(ad),
        })
    };
    let good = advert_for(&key, std::slice::from_ref(&addr), 5, &now, 600).unwrap();
    hostile
        .send(peer, "/mesh/advert/1.0.0", &publish(good), WAIT)
        .await
        .unwrap();
    let stale = advert_for(&key, std::slice::from_ref(&addr), 3, &now, 600).unwrap();
    hostile
        .send(peer, "/mesh/advert/1.0.0", &publish(stale), WAIT)
        .await
        .unwrap();
    let old_key = NodeKeypair::generate();
    let long_ago = now.plus_secs(-7200);
    let expired = advert_for(&old_key, &[addr], 1, &long_ago, 600).unwrap();
    hostile
        .send(peer, "/mesh/advert/1.0.0", &publish(expired), WAIT)
        .await
        .unwrap();
    let k_peer = hostile.peer_id().to_string();
    let fetched = traced(&tb, |e| {
        e.event_type == TraceEventType::AdvertisementFetched && detail(e)["node"] == k_id.as_str()
    })
    .await;
    assert_eq!(detail(&fetched)["sequence/no"], 5);
    assert_eq!(fetched.peer.as_deref(), Some(k_peer.as_str()));
    for code in ["E_ADV_STALE_SEQ", "E_ADV_EXPIRED"] {
        // From the hostile peer: another node passing on the same advertisement (an equal
        // sequence number) is refused as stale too, and may be traced first.
        let e = traced(&tb, |e| {
            e.event_type == TraceEventType::AdvertisementRejected
                && detail(e)["error/code"] == code
                && e.peer.as_deref() == Some(k_peer.as_str())
        })
        .await;
        assert_eq!(detail(&e)["source"], "peer");
        assert_eq!(e.peer.as_deref(), Some(k_peer.as_str()));
        assert!(detail(&e)["error/class"].is_string());
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `meshd --trace FILE advert lookup NODE --from URL`: a directory's verified answer is
/// `advertisement/fetched` (source `directory`); a forged one `advertisement/rejected`
/// with `E_SIG_INVALID`.
#[test]
fn directory_lookups_are_traced() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let run = |dir: &std::path::Path, args: &[&str]| {
        std::process::Command::new(meshd::bin())
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .output()
            .unwrap()
    };
    // A directory (meshd run --directory) and a publisher.
    let mut args = LOCAL.to_vec();
    args.extend(["--directory", "127.0.0.1:0"]);
    let d = Meshd::start(dirs[0].path(), &args);
    let url = d.ready["directory"]
        .as_str()
        .expect("the directory's URL")
        .to_owned();
    let out = run(
        dirs[1].path(),
        &[
            "advert",
            "publish",
            "--to",
            &url,
            "--addr",
            "/ip4/127.0.0.1/tcp/4001",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let published: Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = published["published"]["node/id"]
        .as_str()
        .unwrap()
        .to_owned();
    let trace_file = dirs[2].path().join("trace.jsonl");
    let trace_arg = trace_file.to_str().unwrap();
    let out = run(
        dirs[2].path(),
        &[
            "--trace", trace_arg, "advert", "lookup", &node, "--from", &url,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = read_trace(&trace_file);
    let fetched = events
        .iter()
        .find(|e| e["event/type"] == "advertisement/fetched")
        .unwrap_or_else(|| panic!("fetched in {events:?}"));
    assert_eq!(fetched["detail"]["source"], "directory");
    assert_eq!(fetched["detail"]["node"], node.as_str());

    // A directory that answers with a forged advertisement (an address changed after
    // signing).
    let mut forged = published["published"].clone();
    forged["endpoints"][0]["endpoint/url"] = "multiaddr:/ip4/127.0.0.1/tcp/4999".into();
    let body = forged.to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let forged_url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(answer.as_bytes());
    });
    let out = run(
        dirs[2].path(),
        &[
            "--trace",
            trace_arg,
            "advert",
            "lookup",
            &node,
            "--from",
            &forged_url,
        ],
    );
    server.join().unwrap();
    assert!(!out.status.success());
    let events = read_trace(&trace_file);
    let rejected = events
        .iter()
        .find(|e| e["event/type"] == "advertisement/rejected")
        .unwrap_or_else(|| panic!("rejected in {events:?}"));
    assert_eq!(rejected["detail"]["source"], "directory");
    assert_eq!(rejected["detail"]["error/code"], "E_SIG_INVALID");
}

fn read_trace(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A's loopback addresses reach B's Amino routing table only with
/// `amino_private_addrs`; A keeps B, its configured bootstrap, either way. The mesh DHT
/// takes them regardless. `peer/discovered` follows what the tables took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amino_keeps_loopback_addresses_only_when_told() {
    for keep in [false, true] {
        let (tb, ta) = (
            Arc::new(MemoryTrace::new(8192)),
            Arc::new(MemoryTrace::new(8192)),
        );
        let mut b = node(tb.clone(), None, Vec::new(), keep).await;
        let a = node(ta.clone(), Some(b.p2p_addr()), Vec::new(), keep).await;
        // B has heard A's identify (listen addresses and protocols, Amino among them).
        next_event(&mut b, |e| {
            matches!(e, NodeEvent::Identified { peer, protocols, .. }
                if *peer == a.peer && protocols.iter().any(|p| p == "/ipfs/kad/1.0.0"))
        })
        .await;
        // identify is handled before its event is handed out; a round trip through the
        // node's command queue orders this read after it.
        let b_amino = b.handle.routing_table(Dht::Amino).await.unwrap();
        let b_mesh = b.handle.routing_table(Dht::Mesh).await.unwrap();
        let a_amino = a.handle.routing_table(Dht::Amino).await.unwrap();
        let entry = |t: &[libmesh::node::RoutingEntry], p: &PeerId| {
            t.iter().find(|e| e.peer_id == p.to_string()).cloned()
        };
        let loopback = |e: &libmesh::node::RoutingEntry| {
            e.addrs.iter().any(|a| a.starts_with("/ip4/127.0.0.1/"))
        };
        assert!(
            entry(&b_mesh, &a.peer).is_some_and(|e| loopback(&e)),
            "the mesh DHT takes loopback: {b_mesh:?}"
        );
        assert!(
            entry(&a_amino, &b.peer).is_some_and(|e| loopback(&e)),
            "a configured bootstrap address stays: {a_amino:?}"
        );
        let in_amino = entry(&b_amino, &a.peer);
        if keep {
            assert!(in_amino.is_some_and(|e| loopback(&e)), "{b_amino:?}");
            let d = traced(&tb, |e| {
                e.event_type == TraceEventType::PeerDiscovered
                    && e.peer == Some(a.peer.to_string())
                    && detail(e)["via"] == "amino"
            })
            .await;
            assert!(
                detail(&d)["addrs"][0]
                    .as_str()
                    .unwrap()
                    .starts_with("/ip4/127.0.0.1/")
            );
        } else {
            assert!(
                in_amino.is_none_or(|e| !loopback(&e)),
                "no loopback address in B's Amino table: {b_amino:?}"
            );
            assert!(!tb.events().iter().any(|e| {
                e.event_type == TraceEventType::PeerDiscovered
                    && e.peer == Some(a.peer.to_string())
                    && detail(e)["via"] == "amino"
            }));
        }
        // Either way B discovered A through the mesh DHT, and A discovered B.
        traced(&tb, |e| {
            e.event_type == TraceEventType::PeerDiscovered
                && e.peer == Some(a.peer.to_string())
                && detail(e)["via"] == "mesh-dht"
        })
        .await;
        traced(&ta, |e| {
            e.event_type == TraceEventType::PeerDiscovered && e.peer == Some(b.peer.to_string())
        })
        .await;
        a.handle.shutdown().await;
        b.handle.shutdown().await;
    }
}

/// Three members of a swarm and a seed outside it: a marker from one member reaches the
/// other two (`marker-received` with the swarm), not the seed; a node outside the swarm
/// cannot send to it.
#[test]
fn a_marker_to_a_swarm_reaches_its_members_only() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut seed = Meshd::start(dirs[0].path(), LOCAL);
    let seed_arg = seed.seed();
    let mut args = LOCAL.to_vec();
    args.extend(["--seed", seed_arg.as_str()]);
    let mut members: Vec<Meshd> = (1..4)
        .map(|i| Meshd::start(dirs[i].path(), &args))
        .collect();
    let key = members[0].cli_ok(&["swarm", "join", "party"])["swarm"]
        .as_str()
        .unwrap()
        .to_owned();
    for m in &members[1..] {
        m.cli_ok(&["swarm", "join", "party"]);
    }
    // Everyone sees the two others.
    let deadline = Instant::now() + WAIT;
    for m in &members {
        loop {
            let v = m.cli_ok(&["swarm", "members", &key]);
            if v["members"].as_array().map(Vec::len) == Some(2) {
                break;
            }
            assert!(Instant::now() < deadline, "members never met: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let sent = members[0].cli_ok(&["marker", "send", "--swarm", "party", "dinner at eight"]);
    assert_eq!(sent["swarm"], key.as_str());
    let id = sent["message_id"].as_str().unwrap().to_owned();
    let sender = members[0].node_id();
    let sender_peer = members[0].peer_id();
    for m in &mut members[1..] {
        let got = m
            .wait_line(WAIT, |v| {
                v["event"] == "marker-received" && v["message_id"] == id.as_str()
            })
            .expect("the member got the marker");
        assert_eq!(got["swarm"], key.as_str());
        assert_eq!(got["marker_ref"], "dinner at eight");
        assert_eq!(got["peer"], sender_peer.as_str());
        assert!(
            got["participant"]
                .as_str()
                .unwrap()
                .ends_with(sender.trim_start_matches("node:")),
            "{got}"
        );
    }
    // The sender does not hear its own marker, the seed (not a member) none at all: a
    // second marker, received by both members, orders the check after both.
    let second = members[1].cli_ok(&["marker", "send", "--swarm", &key, "second"]);
    let id2 = second["message_id"].as_str().unwrap().to_owned();
    for i in [0, 2] {
        members[i]
            .wait_line(WAIT, |v| v["message_id"] == id2.as_str())
            .expect("the second marker");
    }
    assert!(
        seed.wait_line(Duration::from_secs(2), |v| v["event"] == "marker-received")
            .is_none(),
        "the seed is in no swarm"
    );
    assert!(
        members[0]
            .wait_line(Duration::from_millis(100), |v| v["message_id"]
                == id.as_str())
            .is_none()
    );
    // Outside the swarm: a coded refusal; so is TARGET with --swarm.
    let out = seed.cli(&["marker", "send", "--swarm", "party", "let me in"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["error/code"], "E_PROTO_INVALID", "{err}");
    let out = members[0].cli(&["marker", "send", "--swarm", "party", "x", "y"]);
    assert_eq!(out.status.code(), Some(1));
}
