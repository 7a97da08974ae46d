//! Unit tests of the parent module.
use super::*;
use mesh_core::NodeKeypair;

const L: GrantLimits = GrantLimits {
    circuits: 2,
    circuit_bytes: 1 << 20,
    circuit_secs: 60,
};

fn t0() -> Timestamp {
    Timestamp::parse("2026-11-22T12:00:00Z").unwrap()
}

fn grant(node: NodeId, purpose: Purpose, ttl: i64) -> Grant {
    Grant {
        ticket: "rg:t".into(),
        node,
        purpose,
        limits: L,
        issued_at: t0(),
        expires_at: t0().plus_secs(ttl),
        implicit: false,
    }
}

fn node() -> NodeId {
    NodeKeypair::generate().node_id()
}

#[test]
fn reservation_lives_until_expiry() {
    let mut g = Grants::new(8);
    let n = node();
    assert!(g.check_reservation(&n, &t0()).is_err());
    g.admit(grant(n, Purpose::Reservation, 10), None, &t0())
        .unwrap();
    g.check_reservation(&n, &t0().plus_secs(9)).unwrap();
    g.check_circuit(&n, &t0().plus_secs(9)).unwrap();
    let e = g.check_reservation(&n, &t0().plus_secs(10)).unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    assert!(g.check_circuit(&n, &t0().plus_secs(10)).is_err());
    assert_eq!(g.sweep(&t0().plus_secs(10)), vec![n]);
    assert_eq!(g.admitted(&t0()), 0);
}

#[test]
fn circuits_are_counted_per_node() {
    let mut g = Grants::new(8);
    let (n, d) = (node(), node());
    g.admit(grant(n, Purpose::Reservation, 60), None, &t0())
        .unwrap();
    for _ in 0..2 {
        g.check_circuit(&n, &t0()).unwrap();
        assert_eq!(g.circuit_opened(n, d, &t0()), Opened::Ok);
    }
    assert!(g.check_circuit(&n, &t0()).is_err());
    g.circuit_closed(&n, &d);
    g.check_circuit(&n, &t0()).unwrap();
    assert_eq!(g.open_circuits(&n), 1);
}

#[test]
fn allowed_requests_count_until_they_open_or_fail() {
    let mut g = Grants::new(8);
    let (n, d) = (node(), node());
    g.admit(grant(n, Purpose::Reservation, 600), None, &t0())
        .unwrap();
    // Two requests allowed at once fill the quota of 2 before either opens.
    for _ in 0..2 {
        g.check_circuit(&n, &t0()).unwrap();
        g.circuit_allowed(n, &t0());
    }
    assert!(g.check_circuit(&n, &t0()).is_err());
    assert_eq!(g.circuit_opened(n, d, &t0()), Opened::Ok);
    assert!(g.check_circuit(&n, &t0()).is_err());
    // The other fails: its slot is free again.
    g.circuit_abandoned(&n);
    g.check_circuit(&n, &t0()).unwrap();
    assert_eq!(g.open_circuits(&n), 1);
    // One that never resolves stops counting after PENDING_SECS.
    g.circuit_allowed(n, &t0());
    assert!(g.check_circuit(&n, &t0()).is_err());
    g.sweep(&t0().plus_secs(PENDING_SECS + 1));
    g.check_circuit(&n, &t0().plus_secs(PENDING_SECS + 1))
        .unwrap();
}

#[test]
fn circuit_grants_cover_their_targets() {
    let mut g = Grants::new(8);
    let (n, a, b) = (node(), node(), node());
    g.admit(
        grant(n, Purpose::Circuit { target: Some(a) }, 60),
        None,
        &t0(),
    )
    .unwrap();
    assert!(g.check_reservation(&n, &t0()).is_err());
    g.check_circuit(&n, &t0()).unwrap();
    assert_eq!(g.circuit_opened(n, a, &t0()), Opened::Ok);
    assert!(matches!(
        g.circuit_opened(n, b, &t0()),
        Opened::Violation(_)
    ));
    g.admit(
        grant(n, Purpose::Circuit { target: Some(b) }, 60),
        None,
        &t0(),
    )
    .unwrap();
    g.circuit_closed(&n, &b);
    assert_eq!(g.circuit_opened(n, b, &t0()), Opened::Ok);
}

/// A node that keeps asking for circuits to fresh targets holds the newest
/// `MAX_TARGETS` of them, not one per request.
#[test]
fn a_circuit_grant_covers_the_newest_targets_up_to_the_cap() {
    let mut g = Grants::new(8);
    let n = node();
    let targets: Vec<NodeId> = (0..MAX_TARGETS + 36).map(|_| node()).collect();
    for (i, t) in targets.iter().enumerate() {
        let at = t0().plus_secs(i as i64);
        let target = Some(*t);
        g.admit(grant(n, Purpose::Circuit { target }, 3600), None, &at)
            .unwrap();
    }
    // Asking again for a held target does not push another one out.
    let newest = targets[targets.len() - 1];
    let target = Some(newest);
    g.admit(grant(n, Purpose::Circuit { target }, 3600), None, &t0())
        .unwrap();
    let held = g.entries[&n].targets.as_ref().unwrap();
    assert_eq!(held.len(), MAX_TARGETS);
    let at = t0().plus_secs(200);
    let first_held = targets.len() - MAX_TARGETS;
    assert!(matches!(
        g.circuit_opened(n, targets[first_held - 1], &at),
        Opened::Violation(_)
    ));
    assert!(matches!(
        g.circuit_opened(n, targets[0], &at),
        Opened::Violation(_)
    ));
    for t in [targets[first_held], newest] {
        assert_eq!(g.circuit_opened(n, t, &at), Opened::Ok);
    }
}

#[test]
fn revoke_blocks_then_lapses() {
    let mut g = Grants::new(8);
    let n = node();
    g.admit(grant(n, Purpose::Reservation, 600), None, &t0())
        .unwrap();
    assert!(g.revoke(&n, t0().plus_secs(30)));
    assert!(g.check_reservation(&n, &t0()).is_err());
    assert!(
        g.admit(grant(n, Purpose::Reservation, 600), None, &t0())
            .is_err()
    );
    assert!(g.blocked_until(&n, &t0().plus_secs(29)).is_some());
    g.sweep(&t0().plus_secs(30));
    g.admit(
        grant(n, Purpose::Reservation, 600),
        None,
        &t0().plus_secs(30),
    )
    .unwrap();
    assert!(g.revoke(&n, t0().plus_secs(60)));
    assert!(g.unblock(&n));
}

#[test]
fn overdue_circuits_and_bounded_table() {
    let mut g = Grants::new(1);
    let (n, d, other) = (node(), node(), node());
    g.admit(grant(n, Purpose::Reservation, 600), None, &t0())
        .unwrap();
    g.circuit_opened(n, d, &t0());
    assert!(g.overdue(&t0().plus_secs(60)).is_empty());
    assert_eq!(g.overdue(&t0().plus_secs(61)), vec![(n, d)]);
    let e = g
        .admit(grant(other, Purpose::Reservation, 600), None, &t0())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    assert_eq!(g.live(&t0()).len(), 1);
}

fn ip(s: &str) -> Option<IpKey> {
    Some(IpKey::of(s.parse().unwrap()))
}

#[test]
fn an_unused_grant_lapses_and_a_used_one_lives_on() {
    let mut g = Grants::new(8);
    let (idle, user) = (node(), node());
    g.admit(grant(idle, Purpose::Reservation, 3600), None, &t0())
        .unwrap();
    g.admit(grant(user, Purpose::Reservation, 3600), None, &t0())
        .unwrap();
    g.check_reservation(&user, &t0()).unwrap();
    g.reservation_allowed(&user, &t0());
    g.set_reserved(&user, true);
    assert!(g.sweep(&t0().plus_secs(119)).is_empty());
    assert_eq!(g.sweep(&t0().plus_secs(120)), vec![idle]);
    assert!(g.check_reservation(&idle, &t0().plus_secs(120)).is_err());
    g.check_reservation(&user, &t0().plus_secs(120)).unwrap();
    // A used grant stays used across renewals (a renewal is a new grant).
    g.set_reserved(&user, false);
    g.admit(
        grant(user, Purpose::Reservation, 3600),
        None,
        &t0().plus_secs(200),
    )
    .unwrap();
    assert!(g.sweep(&t0().plus_secs(600)).is_empty());
    assert_eq!(g.admitted(&t0().plus_secs(600)), 1);
}

#[test]
fn a_full_table_evicts_idle_nodes_before_refusing() {
    let mut g = Grants::new(2);
    let (a, b, c, d) = (node(), node(), node(), node());
    g.admit(grant(a, Purpose::Reservation, 600), None, &t0())
        .unwrap();
    g.admit(
        grant(b, Purpose::Reservation, 600),
        None,
        &t0().plus_secs(1),
    )
    .unwrap();
    // Both idle: the least recently active (a) makes room for c.
    g.admit(
        grant(c, Purpose::Reservation, 600),
        None,
        &t0().plus_secs(2),
    )
    .unwrap();
    assert!(g.check_reservation(&a, &t0().plus_secs(2)).is_err());
    g.check_reservation(&b, &t0().plus_secs(2)).unwrap();
    // b and c hold reservations: nobody is idle, d is refused.
    g.set_reserved(&b, true);
    g.set_reserved(&c, true);
    let e = g
        .admit(
            grant(d, Purpose::Reservation, 600),
            None,
            &t0().plus_secs(3),
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    assert!(e.detail.contains("full"), "{e}");
    // c's reservation ends: it is idle again and goes for d.
    g.set_reserved(&c, false);
    g.admit(
        grant(d, Purpose::Reservation, 600),
        None,
        &t0().plus_secs(4),
    )
    .unwrap();
    g.check_reservation(&b, &t0().plus_secs(4)).unwrap();
    assert!(g.check_reservation(&c, &t0().plus_secs(4)).is_err());
}

#[test]
fn nodes_per_ip_key_are_bounded() {
    let mut g = Grants::with_rules(Rules {
        max_nodes: 100,
        max_per_ip: 2,
        unused_secs: 120,
        ..Rules::default()
    });
    let home = ip("2001:db8:1:2::1");
    let neighbour = ip("2001:db8:1:2::99");
    let elsewhere = ip("2001:db8:1:3::1");
    let (a, b, c, d) = (node(), node(), node(), node());
    g.admit(grant(a, Purpose::Reservation, 600), home, &t0())
        .unwrap();
    g.admit(grant(b, Purpose::Reservation, 600), neighbour, &t0())
        .unwrap();
    for n in [a, b] {
        g.set_reserved(&n, true);
    }
    // A third node from the same /64 is refused; one from another /64 is not.
    let e = g
        .admit(grant(c, Purpose::Reservation, 600), home, &t0())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    assert!(e.detail.contains("2001:db8:1:2::/64"), "{e}");
    g.admit(grant(d, Purpose::Reservation, 600), elsewhere, &t0())
        .unwrap();
    // A node of the /64 that went idle makes room for c.
    g.set_reserved(&a, false);
    g.admit(grant(c, Purpose::Reservation, 600), home, &t0())
        .unwrap();
    assert!(g.check_reservation(&a, &t0()).is_err());
    // Renewals of a node already admitted are not counted again.
    g.admit(grant(b, Purpose::Reservation, 600), neighbour, &t0())
        .unwrap();
}

/// A node that asks again from another network moves into that network's share as a
/// newcomer would: two nodes of one network, active, asking once each from a second,
/// took the second's share and gave the first's back (each network then held twice its
/// share). A move within the share is taken.
#[test]
fn a_node_moving_to_another_network_needs_room_in_its_share() {
    let mut g = Grants::with_rules(Rules {
        max_nodes: 100,
        max_per_ip: 2,
        unused_secs: 120,
        ..Rules::default()
    });
    let (first, second) = (ip("192.0.2.1"), ip("198.51.100.1"));
    let nodes: Vec<NodeId> = (0..4).map(|_| node()).collect();
    for n in &nodes[..2] {
        g.admit(grant(*n, Purpose::Reservation, 600), first, &t0())
            .unwrap();
        g.set_reserved(n, true);
    }
    for n in &nodes[2..] {
        g.admit(grant(*n, Purpose::Reservation, 600), second, &t0())
            .unwrap();
        g.set_reserved(n, true);
    }
    // The second network's share is full of active nodes: the first's cannot move in.
    let e = g
        .admit(grant(nodes[0], Purpose::Reservation, 600), second, &t0())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    // ... so the first network's share stays full.
    let e = g
        .admit(grant(node(), Purpose::Reservation, 600), first, &t0())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    // With room (a node of the second gone idle), the move is taken.
    g.set_reserved(&nodes[3], false);
    g.admit(grant(nodes[0], Purpose::Reservation, 600), second, &t0())
        .unwrap();
    g.admit(grant(node(), Purpose::Reservation, 600), first, &t0())
        .unwrap();
}

/// Nodes asking over connections without an IP of their own (relayed ones) share one
/// IP key's share: fresh identities behind another relay cannot take the whole table.
#[test]
fn nodes_without_an_ip_share_one_share() {
    let mut g = Grants::with_rules(Rules {
        max_nodes: 100,
        max_per_ip: 2,
        unused_secs: 120,
        ..Rules::default()
    });
    let (a, b, c) = (node(), node(), node());
    for n in [a, b] {
        g.admit(grant(n, Purpose::Reservation, 600), None, &t0())
            .unwrap();
        g.set_reserved(&n, true);
    }
    let e = g
        .admit(grant(c, Purpose::Reservation, 600), None, &t0())
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    assert!(e.detail.contains("without an IP"), "{e}");
    g.admit(grant(c, Purpose::Reservation, 600), ip("192.0.2.1"), &t0())
        .unwrap();
}

#[test]
fn a_lapse_found_while_making_room_is_reported_by_the_next_sweep() {
    let mut g = Grants::new(1);
    let (a, b) = (node(), node());
    g.admit(grant(a, Purpose::Reservation, 10), None, &t0())
        .unwrap();
    g.reservation_allowed(&a, &t0());
    g.set_reserved(&a, true);
    // a's grant expires while it holds its reservation; b's request sweeps it.
    let e = g
        .admit(
            grant(b, Purpose::Reservation, 600),
            None,
            &t0().plus_secs(11),
        )
        .unwrap_err();
    assert!(e.detail.contains("full"), "{e}");
    assert_eq!(g.sweep(&t0().plus_secs(12)), vec![a]);
    assert!(g.sweep(&t0().plus_secs(13)).is_empty());
}

/// The nodes of one IP key hold at most `max_circuits_per_ip` circuits together:
/// fresh identities from one /64, each within its own quota, took every circuit the
/// relay had.
#[test]
fn circuits_per_ip_key_are_bounded() {
    let mut g = Grants::with_rules(Rules {
        max_nodes: 100,
        max_per_ip: 10,
        max_circuits_per_ip: 3,
        unused_secs: 120,
    });
    let home = ip("2001:db8:1:2::1");
    let neighbour = ip("2001:db8:1:2::99");
    let elsewhere = ip("2001:db8:1:3::1");
    let (a, b, c, d) = (node(), node(), node(), node());
    g.admit(grant(a, Purpose::Reservation, 600), home, &t0())
        .unwrap();
    g.admit(grant(b, Purpose::Reservation, 600), neighbour, &t0())
        .unwrap();
    g.admit(grant(c, Purpose::Reservation, 600), elsewhere, &t0())
        .unwrap();
    for _ in 0..2 {
        g.check_circuit(&a, &t0()).unwrap();
        assert_eq!(g.circuit_opened(a, d, &t0()), Opened::Ok);
    }
    // b is within its own quota of 2, but its /64 holds 2 of 3: one more, then none.
    g.check_circuit(&b, &t0()).unwrap();
    g.circuit_allowed(b, &t0());
    let e = g.check_circuit(&b, &t0()).unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    assert!(e.detail.contains("2001:db8:1:2::/64"), "{e}");
    // Another /64 has its own.
    g.check_circuit(&c, &t0()).unwrap();
    // One of a's closes: b gets the slot.
    g.circuit_closed(&a, &d);
    g.check_circuit(&b, &t0()).unwrap();
}

/// A node evicted between the relay allowing its reservation and reporting it does not
/// come back without a grant, outside its IP key's share.
#[test]
fn a_reservation_reported_after_eviction_does_not_bring_the_node_back() {
    let mut g = Grants::with_rules(Rules {
        max_nodes: 100,
        max_per_ip: 1,
        unused_secs: 120,
        ..Rules::default()
    });
    let home = ip("192.0.2.7");
    let (a, b) = (node(), node());
    g.admit(grant(a, Purpose::Reservation, 600), home, &t0())
        .unwrap();
    g.check_reservation(&a, &t0()).unwrap();
    g.reservation_allowed(&a, &t0());
    // b from the same address takes the share: a, idle until the relay reports its
    // reservation, is evicted.
    g.admit(
        grant(b, Purpose::Reservation, 600),
        home,
        &t0().plus_secs(1),
    )
    .unwrap();
    g.set_reserved(&a, true);
    assert!(!g.is_reserved(&a));
    assert!(g.check_reservation(&a, &t0().plus_secs(2)).is_err());
    assert_eq!(g.admitted(&t0().plus_secs(2)), 1);
}
