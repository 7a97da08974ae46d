//! AutoNAT v2 verdicts and the Kademlia mode that follows them (`kad_mode = "auto"`, the
//! default), in network namespaces made by the test (`support/netns.rs`): a node on
//! the public host, two more public hosts running plain nodes (AutoNAT servers the
//! first one dials: AutoNAT v2 asks only servers it dialed, and the node takes an
//! address as reachable or not once servers of two networks agree), and a node behind
//! a masquerading router (whose two servers are the public nodes it dials). The public node's own address is tested reachable, it reports
//! `public` and its DHTs turn server; the NATed node's mapped address is tested
//! unreachable, it reports `private` and its DHTs stay client. Skipped with a message
//! where the machine forbids namespaces, unless `MESH_REQUIRE_NETNS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;
#[path = "support/netns.rs"]
mod netns;

use std::path::Path;
use std::time::Duration;

use meshd::Meshd;
use netns::{Host, NatKind, Router, Topology, available_or_skip, tool};
use serde_json::Value;

const PORT: u16 = 4001;
/// Bound on each wait for a verdict: AutoNAT v2 probes every 5 s, a dial-back that
/// fails takes up to 10 s, identify runs on connect.
const VERDICT_WITHIN: Duration = Duration::from_secs(90);
const LOG: &str = "info,libp2p_autonat=debug,libp2p_kad=debug,libmesh=debug";

fn launcher(ns: &str) -> Option<Vec<String>> {
    Some(vec![
        tool("ip").display().to_string(),
        "netns".into(),
        "exec".into(),
        ns.to_owned(),
    ])
}

/// QUIC and TCP on 4001 on every interface, no Amino, the default Kademlia mode
/// (`auto`) and AutoNAT on (the default), plus `extra`.
fn start(ns: &str, dir: &Path, extra: &[String]) -> Meshd {
    let mut args: Vec<String> = [
        "--listen",
        "/ip4/0.0.0.0/udp/4001/quic-v1",
        "--listen",
        "/ip4/0.0.0.0/tcp/4001",
        "--bootstrap",
        "none",
        "--events",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Meshd::start_logged(launcher(ns), dir, &refs, LOG)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `node`'s status until `pred` holds; on timeout shows the node's log.
fn wait(node: &Meshd, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + VERDICT_WITHIN;
    let mut last = Value::Null;
    while std::time::Instant::now() < deadline {
        let out = node.cli(&["status"]);
        if out.status.success() {
            last = serde_json::from_slice(&out.stdout).unwrap();
            if pred(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = std::fs::read_to_string(node.log_file()).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(80).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    panic!(
        "{what}: not within {VERDICT_WITHIN:?}; last status: {last}\nlog tail:\n{}",
        tail.join("\n")
    );
}

#[test]
fn public_node_turns_server_and_natted_node_stays_client() {
    if !available_or_skip("public_node_turns_server_and_natted_node_stays_client") {
        return;
    }
    let topo = Topology::new("autonat", NatKind::PortPreserving).expect("NAT lab");
    let pub2 = topo.add_public_host(2).expect("second public host");
    let pub3 = topo.add_public_host(3).expect("third public host");
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let pub_ip = topo.ip(Host::Pub);
    let wan_a = topo.wan_ip(Router::A);

    // The servers the public node dials (they have no seeds: nothing to ask
    // themselves). Two networks' servers must agree on an address.
    let s = start(pub2.ns(), dirs[0].path(), &[]);
    let s_tcp = format!("/ip4/{}/tcp/{PORT}", pub2.ip());
    let s2 = start(pub3.ns(), dirs[3].path(), &[]);
    let s2_tcp = format!("/ip4/{}/tcp/{PORT}", pub3.ip());
    // The public node: no `--external`, so only AutoNAT can confirm its address.
    // It dials the servers over TCP (which then observe its TCP address); A below
    // dials it over QUIC (and observes its QUIC address). Both go to the servers to
    // test.
    let p = start(
        topo.ns(Host::Pub),
        dirs[1].path(),
        &[
            "--seed".into(),
            format!("{}@{s_tcp}", s.node_id()),
            "--seed".into(),
            format!("{}@{s2_tcp}", s2.node_id()),
        ],
    );
    // The node behind router A dials both public nodes.
    let a = start(
        topo.ns(Host::A),
        dirs[2].path(),
        &[
            "--seed".into(),
            format!("{}@/ip4/{pub_ip}/udp/{PORT}/quic-v1", p.node_id()),
            "--seed".into(),
            format!("{}@{s_tcp}", s.node_id()),
        ],
    );

    // The public node: its own address tested reachable, confirmed as external
    // address, Kademlia server.
    let p_quic = format!("/ip4/{pub_ip}/udp/{PORT}/quic-v1");
    let p_tcp = format!("/ip4/{pub_ip}/tcp/{PORT}");
    let st = wait(&p, "the public node has a verdict on both addresses", |s| {
        let mut tested = strings(&s["nat"]["reachable"]);
        tested.extend(strings(&s["nat"]["unreachable"]));
        tested.contains(&p_quic) && tested.contains(&p_tcp)
    });
    assert_eq!(st["nat"]["status"], "public", "{st}");
    assert_eq!(st["dht"]["mode"], "server", "{st}");
    let reachable = strings(&st["nat"]["reachable"]);
    assert!(
        reachable.contains(&p_quic) && reachable.contains(&p_tcp),
        "{st}"
    );
    for addr in [&p_quic, &p_tcp] {
        assert!(
            strings(&st["external_addrs"]).contains(addr),
            "a reachable address is a confirmed external address: {st}"
        );
    }
    // Nothing stops a dial to it: no address may be found unreachable (an
    // unreachable verdict is final for the run).
    assert!(strings(&st["nat"]["unreachable"]).is_empty(), "{st}");
    for addr in strings(&st["nat"]["reachable"]) {
        assert!(
            addr.starts_with(&format!("/ip4/{pub_ip}/")),
            "only its own address is reachable: {st}"
        );
    }

    // The NATed node: the address its router maps it to, tested unreachable; private;
    // Kademlia client.
    let st = wait(&a, "the NATed node turns private", |s| {
        s["nat"]["status"] == "private"
            && strings(&s["nat"]["unreachable"])
                .iter()
                .any(|x| x.starts_with(&format!("/ip4/{wan_a}/")))
    });
    assert_eq!(st["dht"]["mode"], "client", "{st}");
    assert!(strings(&st["nat"]["reachable"]).is_empty(), "{st}");
    assert!(strings(&st["external_addrs"]).is_empty(), "{st}");
    // It stays so once the public node is a server it could be confused with.
    let st = a.cli_ok(&["status"]);
    assert_eq!(st["nat"]["status"], "private", "{st}");
    assert_eq!(st["dht"]["mode"], "client", "{st}");

    // Dial-backs are closed once their test is over: between the public node and the
    // server only the connection the public node opened stays.
    let connections = |node: &Meshd, peer: &str| -> usize {
        node.cli_ok(&["peers"])
            .as_array()
            .and_then(|a| a.iter().find(|x| x["peer_id"] == peer))
            .map_or(0, |x| strings(&x["addrs"]).len())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (to_p, to_s) = (connections(&s, &p.peer_id()), connections(&p, &s.peer_id()));
        if to_p == 1 && to_s == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connections between the public node and the server: {to_p} (server's view), \
             {to_s} (public node's view); peers: {}",
            s.cli_ok(&["peers"])
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The processes go before the namespaces.
    drop((a, p, s, s2));
    drop((pub2, pub3));
    drop(topo);
}
