use std::time::Duration;

use super::*;

fn ma(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

const THREE: RateLimit = RateLimit {
    burst: 3,
    per_second: 3.0 / 60.0,
};

fn budget() -> DialBudget<()> {
    DialBudget::new(()).with_destinations(THREE, false)
}

#[test]
fn one_copy_of_each_address_and_none_the_dial_brings() {
    let t0 = Instant::now();
    let mut b = DialBudget::new(());
    let peer = PeerId::random();
    let a = ma("/ip4/198.51.100.7/tcp/4001");
    let given = ma("/ip4/198.51.100.9/tcp/4001");
    let added = vec![
        a.clone(),
        a.clone().with(libp2p::multiaddr::Protocol::P2p(peer)),
        given.clone().with(libp2p::multiaddr::Protocol::P2p(peer)),
        a.clone(),
    ];
    assert_eq!(b.screen(std::slice::from_ref(&given), added, t0), vec![a]);
    assert_eq!(b.refused(), 0, "copies are not refusals");
}

#[test]
fn a_destination_named_by_many_peers_gets_its_budget_once() {
    let t0 = Instant::now();
    let mut b = budget();
    // Three made-up peers' identify, each naming one host on five ports.
    let mut taken = 0;
    for _ in 0..3 {
        let added: Vec<Multiaddr> = (1..=5)
            .map(|p| ma(&format!("/ip4/203.0.113.9/tcp/{p}")))
            .collect();
        taken += b.screen(&[], added, t0).len();
    }
    assert_eq!(taken, 3);
    assert_eq!(b.refused(), 12);
    // Another host has its own tokens; an IPv6 /64 is one destination.
    let v6: Vec<Multiaddr> = (1..=4)
        .map(|h| ma(&format!("/ip6/2001:db8::{h}/tcp/1")))
        .collect();
    assert_eq!(b.screen(&[], v6, t0).len(), 3);
    // Twenty seconds on, one token again.
    let later = t0 + Duration::from_secs(20);
    let again = vec![ma("/ip4/203.0.113.9/tcp/6"), ma("/ip4/203.0.113.9/tcp/7")];
    assert_eq!(b.screen(&[], again, later).len(), 1);
}

#[test]
fn names_free_loopback_and_circuits_through_a_connected_relay_take_no_token() {
    let t0 = Instant::now();
    let mut b = budget();
    let names: Vec<Multiaddr> = (1..=6)
        .map(|p| ma(&format!("/dns4/node.example/tcp/{p}")))
        .collect();
    assert_eq!(b.screen(&[], names, t0).len(), 6);
    let local: Vec<Multiaddr> = (1..=6)
        .map(|p| ma(&format!("/ip4/127.0.0.1/tcp/{p}")))
        .collect();
    assert_eq!(
        b.screen(&[], local.clone(), t0).len(),
        3,
        "counted when asked"
    );
    let mut free = DialBudget::new(());
    assert_eq!(free.screen(&[], local, t0).len(), 6);

    // Circuits through one relay: counted at the relay's host until the node is
    // connected to it.
    let relay = PeerId::random();
    let circuits: Vec<Multiaddr> = (0..6)
        .map(|_| {
            ma(&format!(
                "/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit"
            ))
        })
        .map(|a| a.with(libp2p::multiaddr::Protocol::P2p(PeerId::random())))
        .collect();
    let mut b = budget();
    let one_by_one = |b: &mut DialBudget<()>| {
        circuits
            .iter()
            .map(|c| b.screen(&[], vec![c.clone()], t0).len())
            .sum::<usize>()
    };
    assert_eq!(one_by_one(&mut b), 3);
    // Reached through another relay only: still counted (the relay client would dial
    // the circuit's host to ask for the circuit).
    let (relayed, direct) = (
        ma("/ip4/192.0.2.7/tcp/4001/p2p-circuit"),
        ma("/ip4/198.51.100.1/tcp/4001"),
    );
    let endpoint = |addr: &Multiaddr| libp2p::core::ConnectedPoint::Dialer {
        address: addr.clone(),
        role_override: Endpoint::Dialer,
        port_use: libp2p::core::transport::PortUse::Reuse,
    };
    let (over_relay, over_tcp) = (endpoint(&relayed), endpoint(&direct));
    fn established(
        peer_id: PeerId,
        endpoint: &libp2p::core::ConnectedPoint,
        n: usize,
    ) -> FromSwarm<'_> {
        FromSwarm::ConnectionEstablished(libp2p::swarm::behaviour::ConnectionEstablished {
            peer_id,
            connection_id: libp2p::swarm::ConnectionId::new_unchecked(n),
            endpoint,
            failed_addresses: &[],
            other_established: 0,
        })
    }
    b.track(&established(relay, &over_relay, 1));
    assert_eq!(one_by_one(&mut b), 0, "the host's budget is spent");
    b.track(&established(relay, &over_tcp, 2));
    assert_eq!(one_by_one(&mut b), 6);
}

#[test]
fn a_host_the_dial_brings_is_charged_for_other_addresses() {
    let t0 = Instant::now();
    let mut b = budget();
    // A dial's own address may be peer-chosen too (a circuit's relay address, a
    // provider's advertisement): only copies of it are free.
    let given = [ma("/ip4/198.51.100.7/udp/4001/quic-v1")];
    let mut added: Vec<Multiaddr> = (1..=6)
        .map(|p| ma(&format!("/ip4/198.51.100.7/tcp/{p}")))
        .collect();
    added.push(given[0].clone());
    assert_eq!(b.screen(&given, added, t0).len(), 3);
}

#[test]
fn a_dial_takes_at_most_max_added() {
    let t0 = Instant::now();
    let mut b = DialBudget::new(());
    let many: Vec<Multiaddr> = (0..100u8)
        .map(|h| ma(&format!("/ip4/198.51.100.{h}/tcp/1")))
        .collect();
    assert_eq!(b.screen(&[], many, t0).len(), MAX_ADDED);
    assert_eq!(b.refused(), 100 - MAX_ADDED as u64);
}
