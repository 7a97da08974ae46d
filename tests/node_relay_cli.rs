//! `meshd run --relay-server --admission POLICY`, `meshd relay grants` and `meshd relay
//! revoke` between three `meshd` processes on loopback: the relay admits the
//! allowlisted node (it reserves and gets a circuit address), denies the other one, and
//! a revocation ends the admitted node's reservation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::path::Path;
use std::time::{Duration, Instant};

use meshd::{LOCAL, Meshd, bin};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn node_id(dir: &Path) -> String {
    let out = std::process::Command::new(bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["identity", "init"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["node/id"].as_str().unwrap().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn circuits(n: &Meshd) -> Vec<String> {
    let s = n.cli_ok(&["status"]);
    s["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.contains("/p2p-circuit"))
        .map(str::to_owned)
        .collect()
}

fn granted_nodes(relay: &Meshd) -> Vec<String> {
    relay.cli_ok(&["relay", "grants"])["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["node"].as_str().unwrap().to_owned())
        .collect()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn code(out: &std::process::Output) -> String {
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    err["error/code"].as_str().unwrap_or("").to_owned()
}

#[test]
fn relay_admits_the_allowlisted_node_denies_others_and_revokes() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a_id = node_id(dirs[1].path());
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let trace = dirs[0].path().join("trace.jsonl");
    let policy = format!("allowlist:{a_id}");
    let relay = Meshd::start(
        dirs[0].path(),
        &[
            "--listen",
            &listen,
            "--external",
            &listen,
            "--bootstrap",
            "none",
            "--kad-mode",
            "server",
            "--events",
            "--relay-server",
            "--admission",
            &policy,
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    let relay_addr = format!("{listen}/p2p/{}", relay.peer_id());
    let seed = relay.seed();
    // AutoNAT off: on loopback every address is reachable, and a node that AutoNAT
    // confirms reachable holds no reservations.
    let mut args = LOCAL.to_vec();
    args.extend(["--seed", &seed, "--relay", &relay_addr, "--no-autonat"]);
    let a = Meshd::start(dirs[1].path(), &args);
    assert_eq!(a.node_id(), a_id);
    let b = Meshd::start(dirs[2].path(), &args);

    // A is admitted and holds a reservation: a circuit address through the relay.
    wait_for("A's circuit address", || {
        circuits(&a).iter().any(|c| c.contains(&relay.peer_id()))
    });
    wait_for("A's grant at the relay", || {
        granted_nodes(&relay) == vec![a_id.clone()]
    });
    let g = &relay.cli_ok(&["relay", "grants"])["grants"][0];
    assert_eq!(g["purpose"], "reservation");
    assert!(g["ticket"].as_str().unwrap().starts_with("rg:"));

    // B is denied: traced at the relay with its code, no grant, no circuit address.
    let b_id = b.node_id();
    wait_for("B's denial in the relay's trace", || {
        std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
                v["event/type"] == "relay/denied"
                    && v["peer"] == b_id.as_str()
                    && v["detail"]["code"] == "E_TRANSPORT_REJECTED"
            })
    });
    let admitted = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("relay/admitted"))
        .count();
    assert!(admitted >= 1);
    assert!(!granted_nodes(&relay).contains(&b_id));
    assert!(circuits(&b).is_empty());

    // Revoking A closes its reservation; it cannot come back while blocked.
    let r = relay.cli_ok(&["relay", "revoke", &a_id]);
    assert_eq!(r["revoked"], true);
    assert!(granted_nodes(&relay).is_empty());
    wait_for("A's circuit address to go", || circuits(&a).is_empty());
    std::thread::sleep(Duration::from_secs(5));
    assert!(circuits(&a).is_empty(), "a revoked node reserved again");
    assert!(granted_nodes(&relay).is_empty());

    // Coded errors: not a relay; not a node id.
    let out = a.cli(&["relay", "grants"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(code(&out), "E_PROTO_INVALID");
    let out = relay.cli(&["relay", "revoke", "node:did:key:nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(code(&out), "E_PROTO_INVALID");
}
