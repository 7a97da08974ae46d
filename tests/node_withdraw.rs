//! Withdrawal end to end, with `meshd` processes on loopback: `meshd advert withdraw`
//! reaches the session peers and the mesh DHT (every node's `lookup --fresh` then gives
//! `"advert": null`), a replay of the older advertisement is refused, `--to` a
//! directory makes it answer 404, and `withdraw_on_stop` withdraws on a clean stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use libmesh::directory::{DirectoryConfig, SharedStore, serve};
use libmesh::http_client::send;
use libmesh::mesh_client::{Ask, request};
use mesh_advert::{MemoryStore, StoreLimits};
use mesh_core::artifact::Artifact;
use mesh_core::{ErrorCode, NodeAdvertisement, NodeKeypair, Timestamp};
use serde_json::Value;

use meshd::{LOCAL, Meshd};

const WAIT: Duration = Duration::from_secs(60);
/// How long a withdrawal may take to reach another node's `lookup --fresh`.
const SPREAD: Duration = Duration::from_secs(20);

/// `lookup --fresh` until `pred` holds (within `within`); the last answer.
fn wait_lookup(n: &Meshd, id: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let out = n.cli(&["lookup", "--fresh", id]);
        let last = if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if pred(&v) {
                return v;
            }
            v.to_string()
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        assert!(Instant::now() < deadline, "lookup of {id}: {last}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn has_advert(v: &Value) -> bool {
    v["source"] == "mesh-dht" && v["advert"].is_object()
}

fn is_withdrawn(v: &Value) -> bool {
    v["advert"].is_null() && v["withdrawn"].is_u64()
}

#[test]
fn withdraw_reaches_peers_the_dht_and_a_directory() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // B is the seed; A and C know only B.
    let b = Meshd::start(dirs[1].path(), LOCAL);
    let mut args = LOCAL.to_vec();
    let seed = b.seed();
    args.extend(["--seed", seed.as_str()]);
    let a = Meshd::start(dirs[0].path(), &args);
    let c = Meshd::start(dirs[2].path(), &args);
    b.wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(2));
    let a_id = a.node_id();

    // B and C find A's advertisement in the mesh DHT.
    let found = wait_lookup(&b, &a_id, WAIT, has_advert);
    wait_lookup(&c, &a_id, WAIT, has_advert);
    let old = NodeAdvertisement::verify_json(found["advert"].clone(), &Timestamp::now()).unwrap();

    // A seed directory (in-process) that holds A's advertisement.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store: SharedStore = Arc::new(Mutex::new(MemoryStore::new(StoreLimits::default())));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(serve(
        listener,
        store,
        DirectoryConfig::default(),
        std::future::pending(),
    ));
    let adv_url = format!("{url}/adv/{a_id}");
    let body = serde_json::to_vec(&old.to_json()).unwrap();
    let r = rt
        .block_on(send(Method::PUT, &adv_url, Some(body)))
        .unwrap();
    assert_eq!(r.status.as_u16(), 201);

    // A withdraws, also to the directory.
    let out = a.cli_ok(&["advert", "withdraw", "--to", &url]);
    let seq = out["withdrawn"]["sequence_no"].as_u64().unwrap();
    assert!(seq > old.sequence_no(), "{out}");
    assert_eq!(out["withdrawn"]["withdrawal"]["node/id"], a_id.as_str());
    assert!(
        out["withdrawn"]["sent_to_peers"].as_u64() >= Some(1),
        "{out}"
    );
    assert_eq!(out["result"]["status"], "withdrawn", "{out}");

    // The directory answers 404 for A.
    let r = rt.block_on(send(Method::GET, &adv_url, None)).unwrap();
    assert_eq!(r.status.as_u16(), 404);

    // Every node's fresh lookup of A now says "no advertisement".
    for n in [&b, &c, &a] {
        let v = wait_lookup(n, &a_id, SPREAD, is_withdrawn);
        assert_eq!(v["withdrawn"].as_u64(), Some(seq), "{v}");
        assert_eq!(v["addrs"].as_array().map(Vec::len), Some(0), "{v}");
    }
    // A node that joins afterwards (it never had A's advertisement nor a session when
    // A withdrew) learns it from the mesh DHT.
    let e_dir = tempfile::tempdir().unwrap();
    let e = Meshd::start(e_dir.path(), &args);
    e.wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(1));
    let v = wait_lookup(&e, &a_id, SPREAD, is_withdrawn);
    assert_eq!(v["source"], "mesh-dht", "{v}");
    assert_eq!(v["withdrawn"].as_u64(), Some(seq), "{v}");

    // So does a lookup through B's store.
    let v = b.cli_ok(&["lookup", &a_id]);
    assert!(v["advert"].is_null(), "{v}");

    // A replay of A's older advertisement is refused by B and by the directory.
    let key = NodeKeypair::generate();
    let target: libp2p::Multiaddr = format!("{}/p2p/{}", b.addr(), b.peer_id()).parse().unwrap();
    let got = rt
        .block_on(request(
            &key,
            &target,
            Ask::Publish(Box::new(old.clone())),
            Duration::from_secs(15),
        ))
        .unwrap();
    assert_eq!(got.unwrap_err().code, ErrorCode::AdvStaleSeq);
    let body = serde_json::to_vec(&old.to_json()).unwrap();
    let r = rt
        .block_on(send(Method::PUT, &adv_url, Some(body)))
        .unwrap();
    assert_eq!(r.status.as_u16(), 409);

    // A does not come back on its own (its timer, its address events).
    std::thread::sleep(Duration::from_secs(2));
    assert!(is_withdrawn(&c.cli_ok(&["lookup", "--fresh", &a_id])));

    // `--to MULTIADDR`: a node outside the mesh (D, no seed) gets it over
    // `/mesh/advert/1.0.0` and applies it: it then refuses the older advertisement.
    let d_dir = tempfile::tempdir().unwrap();
    let d = Meshd::start(d_dir.path(), LOCAL);
    let d_addr = format!("{}/p2p/{}", d.addr(), d.peer_id());
    let out = a.cli_ok(&["advert", "withdraw", "--to", &d_addr]);
    assert_eq!(out["result"]["status"], "withdrawn", "{out}");
    assert!(
        out["withdrawn"]["sequence_no"].as_u64() > Some(seq),
        "{out}"
    );
    let target: libp2p::Multiaddr = d_addr.parse().unwrap();
    let got = rt
        .block_on(request(
            &key,
            &target,
            Ask::Publish(Box::new(old.clone())),
            Duration::from_secs(15),
        ))
        .unwrap();
    assert_eq!(got.unwrap_err().code, ErrorCode::AdvStaleSeq);
    // Sent again where it is already held, it is not an error.
    let c_addr = format!("{}/p2p/{}", c.addr(), c.peer_id());
    let out = a.cli_ok(&["advert", "withdraw", "--to", &c_addr]);
    assert!(
        ["withdrawn", "already-current"].contains(&out["result"]["status"].as_str().unwrap()),
        "{out}"
    );
}

#[test]
fn withdraw_on_stop_leaves_the_withdrawal_behind() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let b = Meshd::start(dirs[1].path(), LOCAL);
    let config = dirs[0].path().join("meshd.toml");
    std::fs::write(&config, "withdraw_on_stop = true\n").unwrap();
    let mut args = LOCAL.to_vec();
    let seed = b.seed();
    let config_arg = config.display().to_string();
    args.extend(["--seed", seed.as_str(), "--config", config_arg.as_str()]);
    let a = Meshd::start(dirs[0].path(), &args);
    let a_id = a.node_id();
    b.wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(1));
    wait_lookup(&b, &a_id, WAIT, has_advert);

    // A clean stop (SIGTERM) withdraws first.
    let status = a.terminate();
    assert!(status.success(), "meshd exited with {status}");
    let v = wait_lookup(&b, &a_id, SPREAD, is_withdrawn);
    assert!(v["advert"].is_null(), "{v}");
    let v = b.cli_ok(&["lookup", &a_id]);
    assert!(v["advert"].is_null(), "{v}");
}
