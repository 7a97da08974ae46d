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
//! Skipped with a message where the machine forbids namespaces, unless
//! `MESH_REQUIRE_NETNS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/birthday_lab.rs"]
mod birthday_lab;
#[path = "support/netns.rs"]
mod netns;

use libmesh::node::birthday::Budget;
use netns::{Lab, Layout, NatKind, Topology, available_or_skip};

fn lab(a: NatKind, b: NatKind) -> Lab {
    Lab {
        a,
        b,
        layout: Layout::Separate,
        block_udp_a: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_probing_reaches_a_symmetric_nat_over_quic() {
    if !available_or_skip("birthday_probing_reaches_a_symmetric_nat_over_quic") {
        return;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn birthday_probing_cannot_meet_two_symmetric_nats() {
    if !available_or_skip("birthday_probing_cannot_meet_two_symmetric_nats") {
        return;
    }
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
