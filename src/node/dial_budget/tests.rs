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
fn the_dial_s_own_hosts_names_and_free_loopback_take_no_token() {
    let t0 = Instant::now();
    let mut b = budget();
    let given = [ma("/ip4/198.51.100.7/udp/4001/quic-v1")];
    let same_host: Vec<Multiaddr> = (1..=6)
        .map(|p| ma(&format!("/ip4/198.51.100.7/tcp/{p}")))
        .collect();
    assert_eq!(b.screen(&given, same_host, t0).len(), 6);
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
