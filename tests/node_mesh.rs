//! Five `meshd` processes on loopback: they find each other from one seed, establish
//! sessions, find any node's advertisement by node id through the mesh DHT, deliver a
//! signal-marker end to end, and a restarted node reconnects from its durable store
//! without the seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::time::Duration;

use meshd::{LOCAL, Meshd};

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn five_nodes_from_one_seed() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let seed = Meshd::start(dirs[0].path(), LOCAL);
    let seed_arg = seed.seed();
    let mut nodes = vec![seed];
    for d in &dirs[1..] {
        let mut args = LOCAL.to_vec();
        args.extend(["--seed", seed_arg.as_str()]);
        nodes.push(Meshd::start(d.path(), &args));
    }

    // Sessions: every node has one with the seed; the seed has all four.
    for n in &nodes[1..] {
        n.wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(1));
    }
    let s = nodes[0].wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(4));
    assert_eq!(s["connected_peers"].as_u64(), Some(4), "{s}");

    // Each node finds every other node's advertisement through the mesh DHT (the
    // store is skipped with --fresh), and the advertised address is the real one.
    let ids: Vec<String> = nodes.iter().map(Meshd::node_id).collect();
    let addrs: Vec<String> = nodes.iter().map(Meshd::addr).collect();
    for (i, n) in nodes.iter().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i == j {
                continue;
            }
            let found = wait_lookup(n, id);
            assert_eq!(found["source"], "mesh-dht", "{found}");
            assert_eq!(found["node"], id.as_str());
            assert_eq!(found["advert"]["node/id"], id.as_str());
            let got: Vec<&str> = found["addrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert!(got.contains(&addrs[j].as_str()), "{got:?} vs {}", addrs[j]);
        }
    }

    // A signal-marker from node 1 to node 4, addressed by node id only.
    let sent = nodes[1].cli_ok(&["marker", "send", &ids[4], "marker:hello-4"]);
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    let participant = ids[1].replacen("node:", "participant:", 1);
    let got = nodes[4]
        .wait_line(WAIT, |v| {
            v["event"] == "marker-received" && v["message_id"] == message_id.as_str()
        })
        .expect("node 4 never received the marker");
    assert_eq!(got["marker_ref"], "marker:hello-4");
    assert_eq!(got["participant"], participant.as_str());

    // Gossipsub: a message published on node 2 reaches the subscribers 0, 1 and 4
    // (signed, validated by each node before it is forwarded).
    for i in [0, 1, 2, 4] {
        assert_eq!(
            nodes[i].cli_ok(&["gossip", "subscribe", "chat"])["subscribed"],
            true
        );
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // Publishing fails until gossipsub knows subscribed peers (heartbeat, 1 s).
        let out = nodes[2].cli(&["gossip", "publish", "chat", "hello from 2"]);
        if out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "publish kept failing");
        std::thread::sleep(Duration::from_millis(300));
    }
    let author = nodes[2].peer_id();
    for i in [0, 1, 4] {
        let got = nodes[i]
            .wait_line(WAIT, |v| {
                v["event"] == "gossip-message" && v["topic"] == "chat"
            })
            .unwrap_or_else(|| panic!("node {i} got no gossip"));
        assert_eq!(got["data"], "hello from 2");
        assert_eq!(got["source"], author.as_str());
    }

    // Node 3 stops cleanly and comes back without any seed: it reconnects from its
    // durable store (the adverts it learned) and gets sessions again.
    let three = nodes.remove(3);
    let status = three.interrupt();
    assert!(status.success(), "meshd exited with {status}");
    assert!(
        !dirs[3].path().join("control.addr").exists(),
        "control.addr left behind"
    );
    let back = Meshd::start(dirs[3].path(), LOCAL);
    assert_eq!(back.node_id(), ids[3], "identity changed across restart");
    let s = back.wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(1));
    assert!(s["adverts_stored"].as_u64() >= Some(4), "{s}");
    // And it is findable again under its new address.
    let found = wait_lookup(&nodes[1], &ids[3]);
    assert_eq!(found["node"], ids[3].as_str());
}

/// `meshd lookup --fresh` until the mesh DHT answers (a node's record is put once its
/// routing table has peers; until then Amino peer routing answers with addresses only).
fn wait_lookup(n: &Meshd, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = n.cli(&["lookup", "--fresh", id]);
        let mut last = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["source"] == "mesh-dht" {
                return v;
            }
            last = v.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lookup of {id} never came from the mesh DHT: {last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
