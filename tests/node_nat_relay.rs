//! Relays across real NAT, in network namespaces made by the test
//! (`support/netns.rs`): public relay servers (admission policy `advert`, the default)
//! and `meshd` nodes behind masquerading routers.
//!
//! 1. A node behind NAT holding a reservation is reachable through its relay: its
//!    advertisement carries a `/p2p-circuit` relay endpoint, the relay lists its grant,
//!    and a node behind another NAT connects to it by node id (the routing policy ends
//!    on the relay) and exchanges signal-markers over the circuit.
//! 2. Behind port-preserving NATs, DCUtR upgrades a relayed connection to a direct one
//!    (a hole punch coordinated over the circuit), over TCP and over QUIC.
//! 3. With `--max-relays 1` and two relays, a node holds its reservation on the
//!    preferred one; when that relay is killed, the node reserves on the other,
//!    republishes its advertisement (higher sequence number) with the new circuit, and
//!    is reached through it.
//!
//! Skipped with a message where the machine forbids namespaces, unless
//! `MESH_REQUIRE_NETNS=1`. Every wait is bounded; on failure the nodes' log tails are
//! printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;
#[path = "support/netns.rs"]
mod netns;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshd::Meshd;
use netns::{Host, NatKind, Topology, available_or_skip, tool};
use serde_json::Value;

/// The port every node listens on (QUIC and TCP); the second relay of test 3 uses
/// `PORT + 1`.
const PORT: u16 = 4001;
/// What the nodes log (to their data dirs, printed when a test fails).
const RUST_LOG: &str = "warn,libmesh=debug,mesh_admission=debug,libp2p_dcutr=debug";
/// Bound on every wait for the mesh to settle (reservation, advertisement spread,
/// re-selection). Generous for a loaded 2-core CI machine; a healthy run takes a few
/// seconds.
const SETTLE: Duration = Duration::from_secs(40);

/// Prints the nodes' log tails when the test panics (declared before the nodes so that
/// it runs after they are stopped, and after the data dirs so that the logs still
/// exist).
struct LogsOnPanic(Vec<(String, PathBuf)>);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (name, file) in &self.0 {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "----- {name}: last log lines ({}) -----\n{tail}",
                file.display()
            );
        }
    }
}

fn launcher(topo: &Topology, host: Host) -> Option<Vec<String>> {
    Some(vec![
        tool("ip").display().to_string(),
        "netns".into(),
        "exec".into(),
        topo.ns(host).to_owned(),
    ])
}

/// QUIC and TCP on `port` on every interface, no Amino, short route stages (the direct
/// stage fails fast here: private addresses are unroutable from outside).
fn common(port: u16, extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--listen".into(),
        format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
        "--listen".into(),
        format!("/ip4/0.0.0.0/tcp/{port}"),
        "--bootstrap".into(),
        "none".into(),
        "--route-timeouts".into(),
        "2,3,15".into(),
        "--events".into(),
    ];
    v.extend_from_slice(extra);
    v
}

/// A public relay server on the public host (`--external` for both transports, so it
/// accepts reservations at once; DHT server).
fn relay_args(topo: &Topology, port: u16) -> Vec<String> {
    let ip = topo.ip(Host::Pub);
    common(
        port,
        &[
            "--external".into(),
            format!("/ip4/{ip}/udp/{port}/quic-v1"),
            "--external".into(),
            format!("/ip4/{ip}/tcp/{port}"),
            "--kad-mode".into(),
            "server".into(),
            "--relay-server".into(),
        ],
    )
}

fn start(
    topo: &Topology,
    logs: &mut LogsOnPanic,
    name: &str,
    host: Host,
    dir: &Path,
    args: &[String],
) -> Meshd {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let m = Meshd::start_logged(launcher(topo, host), dir, &refs, RUST_LOG);
    logs.0.push((name.to_owned(), m.log_file()));
    m
}

/// How the private nodes reach the public ones (seed and relay addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Tcp,
    Quic,
}

/// A public node's address on `via`, without `/p2p`.
fn pub_addr(topo: &Topology, port: u16, via: Via) -> String {
    let ip = topo.ip(Host::Pub);
    match via {
        Via::Tcp => format!("/ip4/{ip}/tcp/{port}"),
        Via::Quic => format!("/ip4/{ip}/udp/{port}/quic-v1"),
    }
}

/// The relay's address `…/p2p/ID` (for `--relay`).
fn relay_addr(topo: &Topology, relay: &Meshd, port: u16, via: Via) -> String {
    format!("{}/p2p/{}", pub_addr(topo, port, via), relay.peer_id())
}

/// `NODE_ID@ADDR` (for `--seed`).
fn seed_of(topo: &Topology, node: &Meshd, port: u16, via: Via) -> String {
    format!("{}@{}", node.node_id(), pub_addr(topo, port, via))
}

/// Polls `f` every 300 ms until it gives a value; panics after `within`.
fn poll<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether `addr` is a circuit through `relay` (a peer id).
fn through(addr: &str, relay: &str) -> bool {
    addr.contains(&format!("/p2p/{relay}/p2p-circuit"))
}

/// The node's current listen addresses (status).
fn listen_addrs(node: &Meshd) -> Vec<String> {
    let status = node.cli_ok(&["status"]);
    assert!(status["listen_addrs"].is_array(), "{status}");
    strings(&status["listen_addrs"])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The relay endpoints (`endpoint/role` = `relay`) of an advertisement, as multiaddrs.
fn relay_endpoints(advert: &Value) -> Vec<String> {
    advert["endpoints"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["endpoint/role"] == "relay")
                .filter_map(|e| e["endpoint/url"].as_str())
                .map(|u| u.strip_prefix("multiaddr:").unwrap_or(u).to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `asker`'s fresh lookup (mesh DHT, not its store) of `node`: the advertisement, when
/// one was found.
fn lookup_fresh(asker: &Meshd, node: &str) -> Option<Value> {
    let out = asker.cli(&["lookup", "--fresh", node]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(v["advert"].clone()).filter(|a| a.is_object())
}

/// Polls `asker`'s fresh lookups of `node` until its advertisement satisfies `pred`.
fn advert_seen_by(asker: &Meshd, node: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    poll(SETTLE, what, || {
        lookup_fresh(asker, node).filter(|a| pred(a))
    })
}

/// The relay's live grants (`meshd relay grants`) for `node`: their purposes.
fn grants_of(relay: &Meshd, node: &str) -> Vec<String> {
    let v = relay.cli_ok(&["relay", "grants"]);
    v["grants"]
        .as_array()
        .expect("grants array")
        .iter()
        .filter(|g| g["node"] == node)
        .filter_map(|g| g["purpose"].as_str().map(str::to_owned))
        .collect()
}

/// The addresses of `from`'s connections to `peer` (`meshd peers`).
fn connections_to(from: &Meshd, peer: &str) -> Vec<String> {
    from.cli_ok(&["peers"])
        .as_array()
        .expect("meshd peers prints an array")
        .iter()
        .filter(|p| p["peer_id"] == peer)
        .flat_map(|p| strings(&p["addrs"]))
        .collect()
}

/// Markers both ways between `a` and `b` (by node id, over whatever connection they
/// hold), each confirmed by the receiver's `marker-received` line.
fn markers_both_ways(a: &mut Meshd, b: &mut Meshd, tag: &str) {
    let (a_id, b_id) = (a.node_id(), b.node_id());
    let to_b = format!("{tag}-to-b");
    a.cli_ok(&["marker", "send", &b_id, &to_b]);
    assert!(
        b.wait_line(Duration::from_secs(15), |v| v["event"] == "marker-received"
            && v["marker_ref"] == to_b.as_str())
            .is_some(),
        "{to_b} not received"
    );
    let to_a = format!("{tag}-to-a");
    b.cli_ok(&["marker", "send", &a_id, &to_a]);
    assert!(
        a.wait_line(Duration::from_secs(15), |v| v["event"] == "marker-received"
            && v["marker_ref"] == to_a.as_str())
            .is_some(),
        "{to_a} not received"
    );
}

/// `GET /metrics` from the node's metrics server (loopback inside its namespace): the
/// whole HTTP answer.
fn metrics_text(topo: &Topology, host: Host, node: &Meshd) -> String {
    let base = node.ready["metrics"].as_str().expect("metrics address");
    let hostport = base.strip_prefix("http://").unwrap().trim_end_matches('/');
    let addr: std::net::SocketAddr = hostport.parse().unwrap();
    let mut s = topo
        .within(host, || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })
        .expect("connect to the metrics server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the DCUtR counter for successful upgrades (0 when absent; the family
/// appears with its first event): `libp2p_dcutr_events_total`.
fn dcutr_successes(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && l.contains("dcutr_events_total{")
                && l.contains("DirectConnectionUpgradeSucceeded")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn nat_node_is_reachable_through_its_relay() {
    if !available_or_skip("nat_node_is_reachable_through_its_relay") {
        return;
    }
    // Symmetric-like NAT on both sides: no hole punch can work (tests/netns_harness.rs),
    // so the circuit is the only way in and stays the only connection.
    let topo = Topology::new("nrreach", NatKind::RandomFully).expect("NAT lab");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut logs = LogsOnPanic(Vec::new());
    let r = start(
        &topo,
        &mut logs,
        "relay",
        Host::Pub,
        dirs[0].path(),
        &relay_args(&topo, PORT),
    );
    let (seed, relay) = (
        seed_of(&topo, &r, PORT, Via::Tcp),
        relay_addr(&topo, &r, PORT, Via::Tcp),
    );
    let mut a = start(
        &topo,
        &mut logs,
        "a",
        Host::A,
        dirs[1].path(),
        &common(
            PORT,
            &[
                "--seed".into(),
                seed.clone(),
                "--relay".into(),
                relay,
                "--kad-mode".into(),
                "client".into(),
            ],
        ),
    );
    // B holds no reservation: it is only a client of the relay.
    let mut b = start(
        &topo,
        &mut logs,
        "b",
        Host::B,
        dirs[2].path(),
        &common(
            PORT,
            &["--seed".into(), seed, "--kad-mode".into(), "client".into()],
        ),
    );
    let (r_peer, a_id, a_peer) = (r.peer_id(), a.node_id(), a.peer_id());

    // A listens through R.
    poll(SETTLE, "A's reservation on R", || {
        listen_addrs(&a)
            .iter()
            .any(|x| through(x, &r_peer))
            .then_some(())
    });
    // B finds A's advertisement, with a relay endpoint through R, in the mesh DHT.
    let advert = advert_seen_by(&b, &a_id, "A's advertisement with a circuit at B", |ad| {
        relay_endpoints(ad).iter().any(|e| through(e, &r_peer))
    });
    assert_eq!(advert["node/id"], a_id.as_str(), "{advert}");
    for e in relay_endpoints(&advert) {
        assert!(e.ends_with("/p2p-circuit"), "relay endpoint {e}");
    }
    // R admitted A for a reservation.
    assert!(
        grants_of(&r, &a_id).iter().any(|p| p == "reservation"),
        "R's grants: {}",
        r.cli_ok(&["relay", "grants"])
    );
    assert!(
        connections_to(&b, &a_peer).is_empty(),
        "B reached A before connecting"
    );

    // B connects by node id: direct fails (private addresses), so does the hole punch;
    // the relay stage asks R for a circuit grant and opens the circuit.
    let route = b.cli_ok(&["connect", &a_id]);
    assert_eq!(route["path"], "relay", "{route}");
    let addr = route["addr"].as_str().unwrap();
    assert!(through(addr, &r_peer), "{route}");
    let stages: Vec<(&str, bool)> = route["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stage"].as_str().unwrap(), s["ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(stages.last(), Some(&("relay", true)), "{route}");
    assert!(
        grants_of(&r, &b.node_id()).iter().any(|p| p == "circuit"),
        "R's grants: {}",
        r.cli_ok(&["relay", "grants"])
    );

    markers_both_ways(&mut a, &mut b, "through-relay");
    // Everything went over the circuit: B has no other connection to A.
    let conns = connections_to(&b, &a_peer);
    assert!(!conns.is_empty(), "B is not connected to A");
    assert!(
        conns.iter().all(|c| c.contains("/p2p-circuit")),
        "B's connections to A: {conns:?}"
    );
    drop((a, b, r));
    drop(topo);
}

#[test]
fn port_preserving_nat_dcutr_upgrades_the_relayed_connection_tcp() {
    if !available_or_skip("port_preserving_nat_dcutr_upgrades_the_relayed_connection_tcp") {
        return;
    }
    dcutr_upgrade("nrdctcp", Via::Tcp);
}

#[test]
fn port_preserving_nat_dcutr_upgrades_the_relayed_connection_quic() {
    if !available_or_skip("port_preserving_nat_dcutr_upgrades_the_relayed_connection_quic") {
        return;
    }
    dcutr_upgrade("nrdcquic", Via::Quic);
}

/// A and B behind port-preserving NATs reach the relay (seed and reservation) over
/// `via` only, so what the relay observes of them, and so the DCUtR candidates, are
/// addresses on `via`: the hole punch is a TCP simultaneous open, or a QUIC punch (the
/// relayed listener sends the punch packets while the other side dials).
fn dcutr_upgrade(prefix: &str, via: Via) {
    let topo = Topology::new(prefix, NatKind::PortPreserving).expect("NAT lab");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut logs = LogsOnPanic(Vec::new());
    let r = start(
        &topo,
        &mut logs,
        "relay",
        Host::Pub,
        dirs[0].path(),
        &relay_args(&topo, PORT),
    );
    let (seed, relay) = (
        seed_of(&topo, &r, PORT, via),
        relay_addr(&topo, &r, PORT, via),
    );
    let private = |logs: &mut LogsOnPanic, name: &str, host: Host, dir: &Path| {
        start(
            &topo,
            logs,
            name,
            host,
            dir,
            &common(
                PORT,
                &[
                    "--seed".into(),
                    seed.clone(),
                    "--relay".into(),
                    relay.clone(),
                    "--kad-mode".into(),
                    "client".into(),
                    "--metrics".into(),
                    "127.0.0.1:0".into(),
                ],
            ),
        )
    };
    let mut a = private(&mut logs, "a", Host::A, dirs[1].path());
    let mut b = private(&mut logs, "b", Host::B, dirs[2].path());
    let (r_peer, a_id, a_peer) = (r.peer_id(), a.node_id(), a.peer_id());

    for (name, n) in [("A", &a), ("B", &b)] {
        poll(SETTLE, &format!("{name}'s reservation on R"), || {
            listen_addrs(n)
                .iter()
                .any(|x| through(x, &r_peer))
                .then_some(())
        });
    }
    let advert = advert_seen_by(&b, &a_id, "A's advertisement with a circuit at B", |ad| {
        relay_endpoints(ad).iter().any(|e| through(e, &r_peer))
    });
    assert!(connections_to(&b, &a_peer).is_empty(), "B reached A early");

    // B dials A's advertised circuit itself (the routing policy would take the
    // signaling path first and punch the hole on its own): the connection starts
    // relayed.
    let on_via = |a: &str| match via {
        Via::Tcp => a.contains("/tcp/"),
        Via::Quic => a.contains("/quic-v1"),
    };
    let circuit = relay_endpoints(&advert)
        .into_iter()
        .find(|e| through(e, &r_peer) && on_via(e))
        .expect("a circuit through R on the transport");
    let dialed = b.cli_ok(&["dial", &format!("{circuit}/p2p/{a_peer}")]);
    // The peer behind the relay, not the relay (the first `/p2p` of the address).
    assert_eq!(dialed["peer_id"], a_peer.as_str(), "{dialed}");
    let first = b
        .wait_line(Duration::from_secs(15), |v| {
            v["event"] == "peer-connected" && v["peer"] == a_peer.as_str()
        })
        .expect("B's peer-connected line for A");
    assert!(
        first["addr"].as_str().unwrap().contains("/p2p-circuit"),
        "B's first connection to A is not relayed: {first}"
    );

    // DCUtR (A, the relayed listener, starts it over the circuit) punches a direct
    // connection: both dial the addresses the relay observed for the other.
    let direct = poll(SETTLE, "a direct connection from B to A", || {
        let conns = connections_to(&b, &a_peer);
        conns.into_iter().find(|c| !c.contains("/p2p-circuit"))
    });
    eprintln!("{via:?}: direct connection B -> A: {direct}");
    assert!(
        direct.contains(&format!("/ip4/{}/", topo.wan_ip(netns::Router::A))) && on_via(&direct),
        "the direct connection goes to A's router on {via:?}: {direct}"
    );
    // And it was DCUtR that made it (counted on at least one side).
    let upgrades = poll(Duration::from_secs(10), "a DCUtR success counted", || {
        let n = dcutr_successes(&metrics_text(&topo, Host::A, &a))
            + dcutr_successes(&metrics_text(&topo, Host::B, &b));
        (n > 0).then_some(n)
    });
    eprintln!("DCUtR upgrades counted: {upgrades}");

    markers_both_ways(&mut a, &mut b, "after-upgrade");
    drop((a, b, r));
    drop(topo);
}

#[test]
fn relay_killed_mid_session_moves_the_reservation_to_the_next_relay() {
    if !available_or_skip("relay_killed_mid_session_moves_the_reservation_to_the_next_relay") {
        return;
    }
    let topo = Topology::new("nrfail", NatKind::RandomFully).expect("NAT lab");
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut logs = LogsOnPanic(Vec::new());
    let r1 = start(
        &topo,
        &mut logs,
        "relay1",
        Host::Pub,
        dirs[0].path(),
        &relay_args(&topo, PORT),
    );
    let r2 = start(
        &topo,
        &mut logs,
        "relay2",
        Host::Pub,
        dirs[1].path(),
        &relay_args(&topo, PORT + 1),
    );
    let (r1_peer, r2_peer) = (r1.peer_id(), r2.peer_id());

    // A: both relays as candidates, one reservation at a time; R2's tier (100, i.e.
    // +2000 to its score) puts it behind R1 even if R1's RTT was not measured yet
    // (an unmeasured RTT counts 1000 ms).
    let config = dirs[2].path().join("a.toml");
    std::fs::write(
        &config,
        format!(
            "relays = [\"{}\", \"{}\"]\n\n[relay_tiers]\n\"{r2_peer}\" = 100\n",
            relay_addr(&topo, &r1, PORT, Via::Tcp),
            relay_addr(&topo, &r2, PORT + 1, Via::Tcp),
        ),
    )
    .unwrap();
    let mut a = start(
        &topo,
        &mut logs,
        "a",
        Host::A,
        &dirs[2].path().join("data"),
        &common(
            PORT,
            &[
                "--config".into(),
                config.display().to_string(),
                "--max-relays".into(),
                "1".into(),
                "--seed".into(),
                seed_of(&topo, &r1, PORT, Via::Tcp),
                "--seed".into(),
                seed_of(&topo, &r2, PORT + 1, Via::Tcp),
                "--kad-mode".into(),
                "client".into(),
            ],
        ),
    );
    // B, behind another (symmetric-like) NAT, knows only R2.
    let mut b = start(
        &topo,
        &mut logs,
        "b",
        Host::B,
        dirs[3].path(),
        &common(
            PORT,
            &[
                "--seed".into(),
                seed_of(&topo, &r2, PORT + 1, Via::Tcp),
                "--kad-mode".into(),
                "client".into(),
            ],
        ),
    );
    let a_id = a.node_id();

    // A holds its one reservation on R1, and its advertisement names R1's circuit.
    poll(SETTLE, "A's reservation on R1", || {
        listen_addrs(&a)
            .iter()
            .any(|x| through(x, &r1_peer))
            .then_some(())
    });
    let before = advert_seen_by(&b, &a_id, "A's advertisement naming R1 at B", |ad| {
        relay_endpoints(ad).iter().any(|e| through(e, &r1_peer))
    });
    assert!(
        relay_endpoints(&before)
            .iter()
            .all(|e| through(e, &r1_peer)),
        "A advertises more than R1 with max_relays = 1: {before}"
    );
    assert!(
        !listen_addrs(&a).iter().any(|x| through(x, &r2_peer)),
        "A reserved on R2 as well: {:?}",
        listen_addrs(&a)
    );
    assert!(grants_of(&r1, &a_id).iter().any(|p| p == "reservation"));
    let seq_before = before["sequence/no"].as_u64().unwrap();

    // R1 crashes (its sockets close with the process: A sees the connection end).
    let killed = Instant::now();
    r1.kill();

    // A reserves on R2 and republishes: a higher sequence number, R2's circuit only.
    let published = a
        .wait_line(SETTLE, |v| {
            v["event"] == "own-advert-published"
                && v["sequence_no"].as_u64() > Some(seq_before)
                && strings(&v["addrs"]).iter().any(|x| through(x, &r2_peer))
                && !strings(&v["addrs"]).iter().any(|x| through(x, &r1_peer))
        })
        .unwrap_or_else(|| panic!("A published no advertisement through R2 after R1 died"));
    eprintln!(
        "A republished {:?} after R1 was killed: {published}",
        killed.elapsed()
    );
    assert!(grants_of(&r2, &a_id).iter().any(|p| p == "reservation"));
    // B sees it in the DHT (through R2).
    let after = advert_seen_by(&b, &a_id, "A's advertisement naming R2 at B", |ad| {
        ad["sequence/no"].as_u64() > Some(seq_before)
            && relay_endpoints(ad).iter().any(|e| through(e, &r2_peer))
    });
    assert!(
        !relay_endpoints(&after).iter().any(|e| through(e, &r1_peer)),
        "A still advertises the dead relay: {after}"
    );

    // B reaches A through R2.
    let route = b.cli_ok(&["connect", &a_id]);
    assert_eq!(route["path"], "relay", "{route}");
    assert!(
        through(route["addr"].as_str().unwrap(), &r2_peer),
        "{route}"
    );
    markers_both_ways(&mut a, &mut b, "via-r2");
    drop((a, b, r2));
    drop(topo);
}
