//! The routing policy across real NAT, in network namespaces made by the test
//! (`support/netns.rs`): two `meshd` nodes behind separate masquerading routers and one
//! public node (seed, signaling host and relay). With port-preserving NAT, `meshd
//! connect` ends on a direct connection after signaling (both sides dial at once, a
//! QUIC hole punch); with `--random-fully` (symmetric-like) it ends on the relay. Either
//! way both ends then exchange signal-markers. Skipped with a message where the machine
//! forbids namespaces, unless `MESH_REQUIRE_NETNS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;
#[path = "support/netns.rs"]
mod netns;

use std::time::Duration;

use meshd::Meshd;
use netns::{Host, NatKind, Topology, available_or_skip, tool};
use serde_json::Value;

const PORT: u16 = 4001;

fn launcher(topo: &Topology, host: Host) -> Option<Vec<String>> {
    Some(vec![
        tool("ip").display().to_string(),
        "netns".into(),
        "exec".into(),
        topo.ns(host).to_owned(),
    ])
}

/// The flags every node here gets: QUIC and TCP on 4001 on every interface, no Amino,
/// short route stages.
fn common(extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--listen",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "--listen",
        "/ip4/0.0.0.0/tcp/4001",
        "--bootstrap",
        "none",
        "--route-timeouts",
        "3,10,10",
        "--events",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend_from_slice(extra);
    v
}

fn start(topo: &Topology, host: Host, dir: &std::path::Path, args: &[String]) -> Meshd {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Meshd::start_with(launcher(topo, host), dir, &refs)
}

fn has_circuit(status: &Value) -> bool {
    status["listen_addrs"].as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x.as_str().unwrap_or("").contains("p2p-circuit"))
    })
}

/// Builds the lab, runs the three nodes, connects A to B and exchanges markers.
/// Returns the route A reported.
fn connect_across(prefix: &str, nat: NatKind) -> Value {
    let topo = Topology::new(prefix, nat).expect("NAT lab");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let pub_ip = topo.ip(Host::Pub);
    let p = start(
        &topo,
        Host::Pub,
        dirs[0].path(),
        &common(&[
            "--external".into(),
            format!("/ip4/{pub_ip}/udp/{PORT}/quic-v1"),
            "--external".into(),
            format!("/ip4/{pub_ip}/tcp/{PORT}"),
            "--kad-mode".into(),
            "server".into(),
            "--relay-server".into(),
        ]),
    );
    let seed = format!("{}@/ip4/{pub_ip}/udp/{PORT}/quic-v1", p.node_id());
    let relay = format!("/ip4/{pub_ip}/tcp/{PORT}/p2p/{}", p.peer_id());
    // A and B share no swarm: each must punch for the other, which the default
    // policy (session peers and swarm members) does not do for strangers.
    let private = |host: Host, dir: &std::path::Path| {
        let config = dir.join("signal.toml");
        std::fs::write(&config, "[signal]\npunch_for = \"anyone\"\n").unwrap();
        start(
            &topo,
            host,
            dir,
            &common(&[
                "--config".into(),
                config.display().to_string(),
                "--seed".into(),
                seed.clone(),
                "--relay".into(),
                relay.clone(),
                "--kad-mode".into(),
                "client".into(),
            ]),
        )
    };
    let mut a = private(Host::A, dirs[1].path());
    let mut b = private(Host::B, dirs[2].path());

    // Both hold a session with the public node and a reservation on its relay.
    for n in [&a, &b] {
        n.wait_status(Duration::from_secs(30), |s| {
            s["mesh"]["sessions"].as_u64() >= Some(1) && has_circuit(s)
        });
    }
    // A finds B's advertisement (with its circuit) through the public node's DHT.
    let b_id = b.node_id();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = a.cli(&["lookup", "--fresh", &b_id]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            let circuit = v["addrs"].as_array().is_some_and(|x| {
                x.iter()
                    .any(|s| s.as_str().unwrap_or("").contains("p2p-circuit"))
            });
            if circuit {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B's advertisement never reached A"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let route = a.cli_ok(&["connect", &b_id]);
    eprintln!("{nat:?}: {route}");

    // Markers both ways over whatever path won.
    let a_id = a.node_id();
    a.cli_ok(&["marker", "send", &b_id, "hello-from-a"]);
    assert!(
        b.wait_line(Duration::from_secs(15), |v| v["event"] == "marker-received"
            && v["marker_ref"] == "hello-from-a")
            .is_some(),
        "B got A's marker"
    );
    b.cli_ok(&["marker", "send", &a_id, "hello-from-b"]);
    assert!(
        a.wait_line(Duration::from_secs(15), |v| v["event"] == "marker-received"
            && v["marker_ref"] == "hello-from-b")
            .is_some(),
        "A got B's marker"
    );
    // The processes go before the namespaces.
    drop((a, b, p));
    drop(topo);
    route
}

#[test]
fn port_preserving_nat_ends_direct_after_signaling() {
    if !available_or_skip("port_preserving_nat_ends_direct_after_signaling") {
        return;
    }
    let route = connect_across("natpp", NatKind::PortPreserving);
    assert_eq!(route["path"], "signaling", "{route}");
    let addr = route["addr"].as_str().unwrap();
    assert!(!addr.contains("p2p-circuit"), "{route}");
    let stages: Vec<&str> = route["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["direct", "signaling"], "{route}");
}

#[test]
fn symmetric_nat_ends_on_the_relay() {
    if !available_or_skip("symmetric_nat_ends_on_the_relay") {
        return;
    }
    let route = connect_across("natrf", NatKind::RandomFully);
    assert_eq!(route["path"], "relay", "{route}");
    assert!(
        route["addr"].as_str().unwrap().contains("p2p-circuit"),
        "{route}"
    );
    let stages: Vec<(&str, bool)> = route["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [("direct", false), ("signaling", false), ("relay", true)],
        "{route}"
    );
}
