//! Birthday-paradox probing (issue 20, `libmesh::node::birthday`) across real NATs: in
//! network namespaces made by the test (`support/netns.rs`, prefix `bd`), host A behind
//! a port-preserving router (address-and-port-dependent filtering, C) and host B behind
//! a symmetric one (`--random-fully`, S), where DCUtR and the signaling punch never
//! work. S opens 256 probe sockets toward C's public probe address, C sends 256 probes
//! to random ports of S's public IP; on a hit both sides swap their probe socket for a
//! libp2p-quic listener on the same port and C dials S through both NATs
//! (`support/birthday_lab.rs`). A hit is likely (64 %), not certain, so the test makes
//! up to eight attempts and needs one QUIC connection; every hit must give one. With
//! both routers symmetric no probe can meet its NAT mapping: no hit.
//!
//! Then the same through the node: real `meshd` binaries in the NAT matrix's
//! port-preserving / symmetric cell (`support/nat_cell.rs`: a public seed, DHT server
//! and relay, fresh nodes A and B per attempt); `meshd connect B` on A runs the routing
//! policy, whose birthday stage follows the signaling punch, and must return path
//! `birthday` (a direct QUIC connection) in one of up to eight attempts, and the same
//! with the routers swapped (A symmetric asks B for the offer); with both routers
//! symmetric the stage does not apply (no report of it) and `connect` ends on the
//! relay.
//!
//! Skipped with a message where the machine forbids namespaces, unless
//! `MESH_REQUIRE_NETNS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/birthday_lab.rs"]
mod birthday_lab;
#[path = "support/meshd.rs"]
mod meshd;
#[path = "support/nat_cell.rs"]
mod nat_cell;
#[path = "support/netns.rs"]
mod netns;

use std::sync::Mutex;
use std::time::Instant;

use libmesh::node::birthday::Budget;
use nat_cell::{Transport, cells, routed};
use netns::{Lab, Layout, NatKind, Topology, available_or_skip};

/// The labs run one after the other (two cores; timing matters to the probes).
static SEQUENTIAL: Mutex<()> = Mutex::new(());

fn lab(a: NatKind, b: NatKind) -> Lab {
    Lab {
        a,
        b,
        layout: Layout::Separate,
        block_udp_a: false,
    }
}

// The lock only orders the tests; no task of the test's runtime takes it.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_probing_reaches_a_symmetric_nat_over_quic() {
    if !available_or_skip("birthday_probing_reaches_a_symmetric_nat_over_quic") {
        return;
    }
    let _one = SEQUENTIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topo = Topology::with("bdpp", lab(NatKind::PortPreserving, NatKind::RandomFully))
        .expect("NAT lab");
    let mut connected = None;
    for i in 0..8 {
        let o = birthday_lab::attempt(&topo, Budget::default()).await;
        eprintln!("attempt {i}: {o:?}");
        assert!(o.s_sent <= 257 && o.c_sent <= 256, "budget: {o:?}");
        if o.hit.is_some() {
            // A hit always gives the QUIC connection: the mappings survive the swap.
            assert!(o.confirmed.is_some(), "S's confirmation reached C: {o:?}");
            assert_eq!(o.confirmed, o.hit.map(|h| h.1), "C saw S at the hit port");
            assert!(o.quic, "QUIC through both NATs after the hit: {o:?}");
            connected = Some(o);
            break;
        }
        assert!(!o.quic);
    }
    let o = connected.expect("no hit in eight attempts (each 64 % likely)");
    eprintln!(
        "connected: {} + {} datagrams, hit after {:?} ms, QUIC after {:?} ms",
        o.s_sent, o.c_sent, o.hit_ms, o.quic_ms
    );
}

// The lock only orders the tests; no task of the test's runtime takes it.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_probing_cannot_meet_two_symmetric_nats() {
    if !available_or_skip("birthday_probing_cannot_meet_two_symmetric_nats") {
        return;
    }
    let _one = SEQUENTIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topo =
        Topology::with("bdsym", lab(NatKind::RandomFully, NatKind::RandomFully)).expect("NAT lab");
    // C's probes leave router A from random ports, so none matches S's mappings (made
    // toward C's probe port), and S's probes find no mapping on router A.
    let o = birthday_lab::attempt(&topo, Budget::default()).await;
    eprintln!("{o:?}");
    assert_eq!(o.hit, None, "{o:?}");
    assert!(!o.quic);
    assert_eq!((o.s_sent, o.c_sent), (256, 256));
}

fn stages(route: &serde_json::Value) -> Vec<(String, bool)> {
    route["stages"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|x| {
                    (
                        x["stage"].as_str().unwrap_or("").to_owned(),
                        x["ok"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn meshd_connect_reaches_a_symmetric_nat_by_the_birthday_stage() {
    if !available_or_skip("meshd_connect_reaches_a_symmetric_nat_by_the_birthday_stage") {
        return;
    }
    let _one = SEQUENTIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cell = cells().into_iter().find(|c| c.name == "pp-sym").unwrap();
    up_to_eight("bdm", &cell);
}

/// The other way round: A (behind the symmetric router) runs `connect`, so it asks B
/// for the offer first (`birthday/ask`).
#[test]
fn meshd_connect_from_the_symmetric_side_asks_for_the_offer() {
    if !available_or_skip("meshd_connect_from_the_symmetric_side_asks_for_the_offer") {
        return;
    }
    let _one = SEQUENTIAL.lock().unwrap_or_else(|e| e.into_inner());
    let pp_sym = cells().into_iter().find(|c| c.name == "pp-sym").unwrap();
    let cell = nat_cell::Cell {
        name: "sym-pp",
        title: "symmetric / port-preserving",
        lab: Lab {
            a: NatKind::RandomFully,
            b: NatKind::PortPreserving,
            ..pp_sym.lab
        },
        ..pp_sym
    };
    up_to_eight("bdr", &cell);
}

/// Up to eight attempts with fresh nodes until `connect` returns path `birthday`.
fn up_to_eight(prefix: &str, cell: &nat_cell::Cell) {
    let mut won = None;
    for i in 0..8 {
        let started = Instant::now();
        let (nodes, r) = routed(&format!("{prefix}{i}"), cell, Transport::Quic);
        let path = r.route["path"].as_str().unwrap_or("").to_owned();
        eprintln!(
            "attempt {i}: {} ({} s with the setup)",
            r.route,
            started.elapsed().as_secs()
        );
        if std::env::var_os("MESH_NAT_LOG").is_some() {
            eprintln!("{}", nodes.log_tails(60));
        }
        let s = stages(&r.route);
        assert!(
            s.iter().any(|(name, _)| name == "birthday"),
            "the birthday stage ran: {}",
            r.route
        );
        match path.as_str() {
            "birthday" => {
                assert!(r.direct, "a direct connection: {}", r.route);
                let addr = r.route["addr"].as_str().unwrap_or("");
                assert!(
                    addr.contains("/udp/") && addr.contains("/quic-v1"),
                    "{addr}"
                );
                assert_eq!(s.last(), Some(&("birthday".to_owned(), true)));
                won = won.or(Some((i, r.ms)));
                // MESH_BIRTHDAY_ALL=1 runs all eight (to measure the rate).
                if std::env::var_os("MESH_BIRTHDAY_ALL").is_none() {
                    break;
                }
            }
            "relay" => assert_eq!(s.last(), Some(&("relay".to_owned(), true))),
            other => panic!(
                "path {other} where only birthday or relay can work: {}",
                r.route
            ),
        }
    }
    let (i, ms) = won.expect("no birthday connection in eight attempts (each about 65 % likely)");
    eprintln!(
        "birthday path after {} attempt(s), {ms} ms from connect",
        i + 1
    );
}

#[test]
fn meshd_connect_between_two_symmetric_nats_stays_on_the_relay() {
    if !available_or_skip("meshd_connect_between_two_symmetric_nats_stays_on_the_relay") {
        return;
    }
    let _one = SEQUENTIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cell = cells().into_iter().find(|c| c.name == "sym-sym").unwrap();
    let (_nodes, r) = routed("bdmsym", &cell, Transport::Quic);
    eprintln!("{}", r.route);
    assert_eq!(r.route["path"], "relay", "{}", r.route);
    // The stage found nothing to do (both mappings vary) and left no report.
    let s = stages(&r.route);
    assert!(!s.iter().any(|(name, _)| name == "birthday"), "{}", r.route);
}
