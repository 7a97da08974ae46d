//! `meshd swarm join|members|leave`, `meshd signal send` and `meshd connect` between
//! three `meshd` processes on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::time::{Duration, Instant};

use meshd::{LOCAL, Meshd};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn members(n: &Meshd, key: &str) -> Vec<String> {
    let v = n.cli_ok(&["swarm", "members", key]);
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node"].as_str().unwrap().to_owned())
        .collect()
}

fn code(out: &std::process::Output) -> String {
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    err["error/code"].as_str().unwrap_or("").to_owned()
}

#[test]
fn swarm_signal_and_connect_commands() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let seed = Meshd::start(dirs[0].path(), LOCAL);
    let seed_arg = seed.seed();
    let mut args = LOCAL.to_vec();
    args.extend(["--seed", seed_arg.as_str(), "--swarm-ttl", "10"]);
    let mut a = Meshd::start(dirs[1].path(), &args);
    let mut b = Meshd::start(dirs[2].path(), &args);
    for n in [&a, &b] {
        n.wait_status(WAIT, |s| s["mesh"]["sessions"].as_u64() >= Some(1));
    }
    let (a_id, b_id) = (a.node_id(), b.node_id());

    // A name becomes a key; joining twice is not an error.
    let j = a.cli_ok(&["swarm", "join", "board-games"]);
    assert_eq!(j["joined"], true);
    let key = j["swarm"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 64);
    assert!(j["cid"].as_str().unwrap().starts_with("bafkrei"));
    assert_eq!(a.cli_ok(&["swarm", "join", "board-games"])["joined"], false);
    // B joins by the hex key itself.
    assert_eq!(b.cli_ok(&["swarm", "join", &key])["swarm"], key.as_str());
    let deadline = Instant::now() + WAIT;
    while members(&a, &key) != vec![b_id.clone()] || members(&b, &key) != vec![a_id.clone()] {
        assert!(Instant::now() < deadline, "A and B never saw each other");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        a.wait_line(WAIT, |v| v["event"] == "swarm-member-joined"
            && v["node"] == b_id.as_str())
            .is_some()
    );
    // Not a member: a coded error.
    let out = seed.cli(&["swarm", "members", &key]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(code(&out), "E_PROTO_INVALID");

    // A setup payload from A to B (through the seed, or directly if they are connected).
    let f = dirs[1].path().join("offer.sdp");
    std::fs::write(&f, b"v=0\r\ns=libmesh\r\n").unwrap();
    let sent = a.cli_ok(&[
        "signal",
        "send",
        &b_id,
        "--payload-file",
        f.to_str().unwrap(),
        "--content-type",
        "application/sdp",
    ]);
    let corr = sent["correlation"].as_str().unwrap().to_owned();
    let got = b
        .wait_line(WAIT, |v| {
            v["event"] == "signal-received" && v["kind"] == "setup_payload"
        })
        .expect("B got the setup payload");
    assert_eq!(got["from"], a_id.as_str());
    assert_eq!(got["correlation"], corr.as_str());
    assert_eq!(got["payload"]["data/b64"], "dj0wDQpzPWxpYm1lc2gNCg==");
    assert_eq!(got["payload"]["content-type"], "application/sdp");
    // Too large, refused before anything is sent.
    let big = dirs[1].path().join("big.bin");
    std::fs::write(&big, vec![0u8; 20_000]).unwrap();
    let out = a.cli(&[
        "signal",
        "send",
        &b_id,
        "--payload-file",
        big.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(code(&out), "E_PROTO_INVALID");

    // connect: the route as JSON.
    let r = a.cli_ok(&["connect", &b_id]);
    assert!(
        ["existing", "direct"].contains(&r["path"].as_str().unwrap()),
        "{r}"
    );
    assert_eq!(r["node"], b_id.as_str());

    // B leaves: A sees it at once, with the reason.
    assert_eq!(b.cli_ok(&["swarm", "leave", &key])["left"], true);
    let left = a
        .wait_line(Duration::from_secs(5), |v| {
            v["event"] == "swarm-member-left" && v["node"] == b_id.as_str()
        })
        .expect("A saw B leave");
    assert_eq!(left["reason"], "leave");
    assert!(members(&a, &key).is_empty());
    assert_eq!(b.cli_ok(&["swarm", "leave", &key])["left"], false);
}
