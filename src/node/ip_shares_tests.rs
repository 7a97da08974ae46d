//! `ip_shares`' unit tests.

use super::*;

fn ma(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn id(n: usize) -> ConnectionId {
    ConnectionId::new_unchecked(n)
}

fn peer() -> PeerId {
    PeerId::random()
}

fn shares() -> IpShares {
    IpShares::new(IpCaps {
        max_pending: 2,
        max_established: 3,
        max_pending_webrtc: 4,
        max_pending_quic: 4,
        max_pending_relayed: 4,
        max_pending_circuits: 6,
        max_pending_group: 8,
        max_inbound: 100,
    })
}

/// The TCP listener a connection came in on.
fn tcp() -> Multiaddr {
    ma("/ip4/0.0.0.0/tcp/4001")
}

#[test]
fn webrtc_direct_attempts_from_any_networks_hold_their_share_only() {
    let mut s = shares();
    let webrtc = ma(
        "/ip4/0.0.0.0/udp/4004/webrtc-direct/certhash/uEiDDq4_xNyDorZBH3TlGazyJdOWSwvo4PUo5YHFMrvDE8g",
    );
    // One packet each from fresh (spoofed) addresses: four attempts, then none.
    let from = |n: usize| ma(&format!("/ip4/203.0.113.{n}/udp/5000"));
    for n in 0..4 {
        assert_eq!(s.pending(id(n), &webrtc, &from(n)), Ok(()));
    }
    assert_eq!(
        s.pending(id(4), &webrtc, &from(4)),
        Err(Refused::PendingWebrtc(4))
    );
    // Other transports still get their connections.
    assert_eq!(
        s.pending(id(5), &tcp(), &ma("/ip4/198.51.100.9/tcp/1")),
        Ok(())
    );
    // An attempt that ends makes room; one refused per network takes none.
    s.failed(id(0));
    let busy = ma("/ip4/198.51.100.9/udp/7");
    s.pending(id(6), &tcp(), &ma("/ip4/198.51.100.9/tcp/2"))
        .unwrap();
    assert_eq!(s.pending(id(7), &webrtc, &busy), Err(Refused::Pending(2)));
    assert_eq!(s.pending(id(8), &webrtc, &from(8)), Ok(()));
    assert_eq!(
        s.pending(id(9), &webrtc, &from(9)),
        Err(Refused::PendingWebrtc(4))
    );
}

#[test]
fn quic_attempts_from_any_networks_hold_their_share_only() {
    let mut s = shares();
    let quic = ma("/ip4/0.0.0.0/udp/4001/quic-v1");
    // One Initial each from fresh (spoofed) addresses: four attempts, then none.
    let from = |n: usize| ma(&format!("/ip4/203.0.113.{n}/udp/5000/quic-v1"));
    for n in 0..4 {
        assert_eq!(s.pending(id(n), &quic, &from(n)), Ok(()));
    }
    assert_eq!(
        s.pending(id(4), &quic, &from(4)),
        Err(Refused::PendingQuic(4))
    );
    // Other transports still get their connections; one that ends makes room.
    assert_eq!(
        s.pending(id(5), &tcp(), &ma("/ip4/198.51.100.9/tcp/1")),
        Ok(())
    );
    s.failed(id(0));
    assert_eq!(s.pending(id(6), &quic, &from(6)), Ok(()));
}

#[test]
fn one_network_gets_its_pending_share_and_no_more() {
    let mut s = shares();
    let a = ma("/ip4/198.51.100.1/tcp/5000");
    let a2 = ma("/ip4/198.51.100.1/tcp/5001");
    let b = ma("/ip4/198.51.100.2/tcp/5000");
    assert_eq!(s.pending(id(1), &tcp(), &a), Ok(()));
    assert_eq!(s.pending(id(2), &tcp(), &a2), Ok(()));
    assert_eq!(s.pending(id(3), &tcp(), &a), Err(Refused::Pending(2)));
    assert_eq!(s.pending(id(4), &tcp(), &b), Ok(()), "another network");
    // One ends (failed or established): room again.
    s.failed(id(1));
    assert_eq!(s.pending(id(5), &tcp(), &a), Ok(()));
    s.established(id(2), peer(), Some(&a2));
    assert_eq!(s.pending(id(6), &tcp(), &a), Ok(()));
    assert_eq!(s.pending(id(7), &tcp(), &a), Err(Refused::Pending(2)));
}

#[test]
fn ipv6_counts_by_its_64() {
    let mut s = shares();
    assert!(
        s.pending(id(1), &tcp(), &ma("/ip6/2001:db8::1/tcp/1"))
            .is_ok()
    );
    assert!(
        s.pending(id(2), &tcp(), &ma("/ip6/2001:db8::2/tcp/1"))
            .is_ok()
    );
    assert!(
        s.pending(id(3), &tcp(), &ma("/ip6/2001:db8::3/tcp/1"))
            .is_err()
    );
    assert!(
        s.pending(id(4), &tcp(), &ma("/ip6/2001:db8:0:1::1/tcp/1"))
            .is_ok()
    );
}

#[test]
fn established_inbound_connections_are_capped_per_network_until_one_closes() {
    let mut s = shares();
    let a = ma("/ip4/198.51.100.1/tcp/5000");
    for n in 0..3 {
        assert_eq!(s.check_established(&a), Ok(None));
        s.pending(id(n), &tcp(), &a).unwrap();
        s.established(id(n), peer(), Some(&a));
    }
    assert_eq!(s.check_established(&a), Err(Refused::Established(3)));
    // Outbound connections to that network do not count.
    s.established(id(10), peer(), None);
    s.closed(id(10));
    assert_eq!(s.check_established(&a), Err(Refused::Established(3)));
    s.closed(id(1));
    assert_eq!(s.check_established(&a), Ok(None));
}

#[test]
fn relayed_and_ip_less_connections_are_not_counted() {
    let mut s = shares();
    let circuit = ma(
        "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWGjMCgWVvg4wVKw8wqyKaxwQyfZ9aYQ8ZQ3MrK3n3y3Yd/p2p-circuit",
    );
    for n in 0..10 {
        assert!(s.pending(id(n), &tcp(), &circuit).is_ok());
        assert!(s.pending(id(100 + n), &tcp(), &ma("/memory/7")).is_ok());
    }
    assert_eq!(s.networks(), 0);
}

#[test]
fn circuits_through_one_relay_hold_its_share_only() {
    let mut s = shares();
    let via = |host: &str| ma(&format!("/ip4/{host}/tcp/4001/p2p-circuit"));
    // Relays reached by name: keyed by their peer ids.
    let named = |relay: &PeerId| {
        ma(&format!(
            "/dns4/relay.example/tcp/443/wss/p2p/{relay}/p2p-circuit"
        ))
    };
    let (r1, r2) = (peer(), peer());
    let from = || ma(&format!("/p2p/{}", peer()));
    // Fresh peer ids through relay A: four, then refused.
    for n in 0..4 {
        assert!(s.pending(id(n), &via("198.51.100.1"), &from()).is_ok());
    }
    assert_eq!(
        s.pending(id(4), &via("198.51.100.1"), &from()),
        Err(Refused::PendingRelayed(4))
    );
    // Another relay, and plain connections, are not held back.
    assert!(s.pending(id(5), &via("198.51.100.2"), &from()).is_ok());
    assert!(
        s.pending(id(6), &tcp(), &ma("/ip4/198.51.100.1/tcp/5000"))
            .is_ok()
    );
    // One of A's ends: room for one more.
    s.failed(id(0));
    assert!(s.pending(id(7), &via("198.51.100.1"), &from()).is_ok());
    s.established(id(1), peer(), Some(&from()));
    for n in [2, 3, 5, 6, 7] {
        s.failed(id(n));
    }
    assert!(s.relayed.is_empty() && s.relays.is_empty());

    // Two relays by name: four through the first, then two through the second (six
    // in all), then none.
    for n in 10..14 {
        assert!(s.pending(id(n), &named(&r1), &from()).is_ok());
    }
    assert_eq!(
        s.pending(id(14), &named(&r1), &from()),
        Err(Refused::PendingRelayed(4))
    );
    for n in 15..17 {
        assert!(s.pending(id(n), &named(&r2), &from()).is_ok());
    }
    assert_eq!(
        s.pending(id(17), &named(&r2), &from()),
        Err(Refused::PendingCircuits(6))
    );
}

#[test]
fn a_circuit_over_a_quic_relay_connection_is_not_a_quic_attempt() {
    let mut s = shares();
    let via = ma("/ip4/198.51.100.1/udp/4001/quic-v1/p2p-circuit");
    for n in 0..4 {
        s.pending(id(n), &via, &ma(&format!("/p2p/{}", peer())))
            .unwrap();
    }
    assert!(s.quic.is_empty());
}

#[test]
fn the_tables_empty_when_every_connection_is_gone() {
    let mut s = shares();
    let a = ma("/ip4/198.51.100.1/tcp/5000");
    let b = ma("/ip4/198.51.100.2/tcp/5000");
    s.pending(id(1), &tcp(), &a).unwrap();
    s.pending(id(2), &tcp(), &b).unwrap();
    let _ = s.pending(id(3), &tcp(), &a);
    let _ = s.pending(id(4), &tcp(), &a);
    s.established(id(1), peer(), Some(&a));
    s.failed(id(2));
    s.failed(id(4));
    s.closed(id(1));
    assert_eq!(s.networks(), 1, "3 is still pending");
    s.failed(id(3));
    assert_eq!(s.networks(), 0);
    assert!(s.pending.is_empty() && s.established.is_empty());
}

/// Shares where the node holds `inbound` connections in all, 64 per network.
fn full_at(inbound: u32) -> IpShares {
    IpShares::new(IpCaps {
        max_pending: 64,
        max_established: 64,
        max_pending_webrtc: 4,
        max_pending_quic: 4,
        max_pending_relayed: 4,
        max_pending_circuits: 6,
        max_pending_group: 64,
        max_inbound: inbound,
    })
}

/// Lets in a connection from `remote` as the node would: checked, the one chosen to
/// give way evicted, then established. The connection evicted, or why it was refused.
fn admit(s: &mut IpShares, n: usize, remote: &Multiaddr) -> Result<Option<ConnectionId>, Refused> {
    s.pending(id(n), &tcp(), remote)?;
    match s.check_established(remote) {
        Ok(victim) => {
            if let Some(v) = victim {
                assert!(s.evict(v).is_some());
            }
            s.established(id(n), peer(), Some(remote));
            Ok(victim)
        }
        Err(e) => {
            s.failed(id(n));
            Err(e)
        }
    }
}

#[test]
fn a_few_networks_cannot_hold_every_inbound_slot() {
    // Eight hosts of one /16 fill the node (a /61's eight /64s would do the same).
    let mut s = full_at(16);
    let attacker = |n: usize| ma(&format!("/ip4/203.0.{}.1/tcp/{n}", n % 8));
    for n in 0..16 {
        assert_eq!(admit(&mut s, n, &attacker(n)), Ok(None));
    }
    // More of theirs are refused: the node is full and they are the largest group.
    assert_eq!(admit(&mut s, 16, &attacker(16)), Err(Refused::Full(16)));
    // Peers from elsewhere get in, each in the place of the attacker's newest.
    let honest = |n: usize| ma(&format!("/ip4/198.{n}.100.1/tcp/1"));
    assert_eq!(admit(&mut s, 100, &honest(1)), Ok(Some(id(15))));
    assert_eq!(admit(&mut s, 101, &honest(2)), Ok(Some(id(14))));
    assert_eq!(
        admit(&mut s, 102, &ma("/ip6/2001:db8::1/tcp/1")),
        Ok(Some(id(13)))
    );
    // Reconnecting gains the attacker nothing: its group is still the largest.
    assert_eq!(admit(&mut s, 17, &attacker(17)), Err(Refused::Full(16)));
    assert_eq!(s.established.len(), 16);
}

#[test]
fn groups_give_way_down_to_an_equal_share_and_no_further() {
    let mut s = full_at(6);
    let a = |n: usize| ma(&format!("/ip4/203.0.113.{n}/tcp/1"));
    let b = |n: usize| ma(&format!("/ip6/2001:db8:0:{n}::1/tcp/1"));
    for n in 0..6 {
        admit(&mut s, n, &a(n)).unwrap();
    }
    // /32 2001:db8 takes slots from 203.0/16 until both hold three.
    assert!(admit(&mut s, 10, &b(0)).unwrap().is_some());
    assert!(admit(&mut s, 11, &b(1)).unwrap().is_some());
    assert!(admit(&mut s, 12, &b(2)).unwrap().is_some());
    assert_eq!(admit(&mut s, 13, &b(3)), Err(Refused::Full(6)));
    assert_eq!(admit(&mut s, 7, &a(7)), Err(Refused::Full(6)));
    // One leaves: room for anyone again.
    s.closed(id(0));
    assert_eq!(admit(&mut s, 8, &a(8)), Ok(None));
}

#[test]
fn a_wider_network_gets_its_pending_share() {
    let mut s = shares();
    // Eight /64s of one /32, two pending each at most, eight in all.
    let from = |n: usize| ma(&format!("/ip6/2001:db8:0:{n}::1/tcp/1"));
    let held = (0..20)
        .filter(|n| s.pending(id(*n), &tcp(), &from(n / 2)).is_ok())
        .count();
    assert_eq!(held, 8);
    assert_eq!(
        s.pending(id(30), &tcp(), &from(15)),
        Err(Refused::PendingGroup(8))
    );
    assert_eq!(
        s.pending(id(31), &tcp(), &ma("/ip6/2001:db9::1/tcp/1")),
        Ok(()),
        "another /32"
    );
    s.failed(id(0));
    assert_eq!(s.pending(id(32), &tcp(), &from(15)), Ok(()));
}

#[test]
fn an_evicted_connection_closing_later_is_not_counted_twice() {
    let mut s = full_at(2);
    admit(&mut s, 1, &ma("/ip4/203.0.113.1/tcp/1")).unwrap();
    admit(&mut s, 2, &ma("/ip4/203.0.113.2/tcp/1")).unwrap();
    let victim = admit(&mut s, 3, &ma("/ip4/198.51.100.1/tcp/1")).unwrap();
    assert_eq!(victim, Some(id(2)));
    // The swarm reports its close afterwards.
    s.closed(id(2));
    assert_eq!(s.established.len(), 2);
    assert_eq!(
        s.groups
            .get(&IpKey::V4([203, 0, 113, 1].into()).group())
            .map(|c| c.established),
        Some(1)
    );
    assert_eq!(s.evict(id(2)), None);
}
