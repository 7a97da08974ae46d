//! A hello carries up to 34 signatures (itself, its capability advertisement and 32
//! passports) and node ids are free: every refusal that needs no signature comes before
//! any is checked, the peers of one network share a handshake rate, and a peer's
//! advertisement and passports, sent again with each hello, are verified once.

use super::*;
use mesh_core::IpKey;
use mesh_core::artifact::equations_on_this_thread as checked;

/// `k`'s capability advertisement with `extra` capabilities beside `core/messaging`,
/// each with its passport.
fn caps_of(k: &NodeKeypair, extra: usize) -> CapabilityAdvertisement {
    let names: Vec<String> = (0..extra).map(|i| format!("plugin/cap{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    build_capabilities(k, &names, &["tcp"], &t(0), 600).unwrap()
}

/// A fresh hello of `k` to `b` with `caps`, over a connection from `net`: the reply and
/// the signature equations it cost.
fn hello_with(
    b: &mut Node,
    k: &NodeKeypair,
    caps: &CapabilityAdvertisement,
    net: Option<IpKey>,
) -> (Reply, u64) {
    let p = k.node_id().to_peer_id().unwrap();
    if !b.hs.is_engaged(&p) {
        b.hs.connected(p, false, TransportProfile::Tcp, &mut b.gov, &t(0));
    }
    if let Some(net) = net {
        b.hs.inbound_from(p, net);
    }
    let params = HandshakeParams {
        offered: &["core/messaging"],
        transport: "tcp",
        intent: "peer-connect",
    };
    let hello = build_hello(
        k,
        &EphemeralKey::generate(),
        b.key.node_id(),
        &params,
        &t(0),
    );
    let bytes = encode(&Message::Hello(
        Box::new(hello.unwrap()),
        Box::new(caps.clone()),
    ));
    let before = checked();
    let reply =
        b.hs.on_request(p, TransportProfile::Tcp, decode(&bytes), &mut b.gov, &t(0));
    (reply, checked() - before)
}

/// As [`hello_with`] with a fresh advertisement of `extra` capabilities.
fn hello(b: &mut Node, k: &NodeKeypair, extra: usize, net: Option<IpKey>) -> (Reply, u64) {
    let caps = caps_of(k, extra);
    hello_with(b, k, &caps, net)
}

fn acked(reply: &Reply) -> bool {
    matches!(decode(&reply.bytes).unwrap(), Message::Ack(..))
}

#[test]
fn a_hello_refused_for_room_costs_no_signature_check() {
    let mut b = node_with(GovernorConfig {
        max_live: 1,
        ..GovernorConfig::default()
    });
    let (reply, _) = hello(&mut b, &NodeKeypair::generate(), 0, None);
    assert!(acked(&reply));
    assert!(b.hs.work(&mut b.gov, &t(0)));
    // The only room is taken: a stranger's hello with 31 passports is refused unchecked.
    let (reply, spent) = hello(&mut b, &NodeKeypair::generate(), 31, None);
    assert_eq!(code_of(&reply), ErrorCode::TransportRejected);
    assert_eq!(spent, 0, "signatures checked for a hello without room");
}

#[test]
fn a_replayed_hello_costs_no_signature_check() {
    let (mut b, r) = (node(), NodeKeypair::generate());
    let p = r.node_id().to_peer_id().unwrap();
    b.hs.connected(p, false, TransportProfile::Tcp, &mut b.gov, &t(0));
    let bytes = hello_with_caps(&r, b.key.node_id(), 20, &t(0));
    let reply =
        b.hs.on_request(p, TransportProfile::Tcp, decode(&bytes), &mut b.gov, &t(0));
    assert!(acked(&reply));
    let before = checked();
    let reply =
        b.hs.on_request(p, TransportProfile::Tcp, decode(&bytes), &mut b.gov, &t(0));
    assert_eq!(code_of(&reply), ErrorCode::HsReplay);
    assert_eq!(checked() - before, 0, "signatures checked for a replay");
}

#[test]
fn the_peers_of_one_network_share_a_handshake_rate() {
    let mut b = node_with(GovernorConfig {
        max_live: 1024,
        ..GovernorConfig::default()
    });
    let burst = GovernorConfig::default().network_handshakes.burst;
    let (net, other) = (
        IpKey::of("198.51.100.7".parse().unwrap()),
        IpKey::of("203.0.113.9".parse().unwrap()),
    );
    // Fresh keys of one network: each its own per-peer rate, one network's share of
    // sessions (256 of 1024) far above the burst.
    for _ in 0..burst {
        let (reply, _) = hello(&mut b, &NodeKeypair::generate(), 0, Some(net));
        assert!(acked(&reply));
    }
    let (reply, spent) = hello(&mut b, &NodeKeypair::generate(), 31, Some(net));
    assert_eq!(code_of(&reply), ErrorCode::TransportRejected);
    assert_eq!(spent, 0, "signatures checked over the network's rate");
    // Another network is not held back; nor is a named peer of the spent one.
    let (reply, _) = hello(&mut b, &NodeKeypair::generate(), 0, Some(other));
    assert!(acked(&reply));
    let seed = NodeKeypair::generate();
    b.gov.add_known(seed.node_id());
    let (reply, _) = hello(&mut b, &seed, 0, Some(net));
    assert!(
        acked(&reply),
        "a named peer held back by its network's rate"
    );
}

/// Hellos refused for room take nothing of their network's rate: strangers of a
/// network whose share is full do not spend it for the others.
#[test]
fn hellos_refused_for_room_leave_the_network_s_rate_alone() {
    let mut b = node_with(GovernorConfig {
        max_live: 8,
        ..GovernorConfig::default()
    });
    let net = IpKey::of("198.51.100.7".parse().unwrap());
    let burst = GovernorConfig::default().network_handshakes.burst as usize;
    // The network's share (2 of 8) taken, then more than its rate's burst refused for room.
    let keys: Vec<NodeKeypair> = (0..burst + 2).map(|_| NodeKeypair::generate()).collect();
    for (i, k) in keys.iter().enumerate() {
        let (reply, _) = hello(&mut b, k, 0, Some(net));
        assert_eq!(acked(&reply), i < 2, "hello {i}");
    }
    // Room again (one of its peers leaves): the next is taken.
    let gone = keys[0].node_id().to_peer_id().unwrap();
    b.hs.disconnected(&gone, &mut b.gov, &t(0));
    let (reply, _) = hello(&mut b, &NodeKeypair::generate(), 0, Some(net));
    assert!(
        acked(&reply),
        "the network's rate was spent by hellos refused for room"
    );
}

#[test]
fn a_peer_s_advertisement_and_32_passports_are_verified_once() {
    let (mut b, r) = (node(), NodeKeypair::generate());
    let caps = caps_of(&r, 31);
    let first = hello_with(&mut b, &r, &caps, None);
    assert!(acked(&first.0));
    assert_eq!(first.1, 2 + MAX_CAPABILITIES as u64);
    // Its next hello (a renewal) carries the same advertisement and passports.
    let again = hello_with(&mut b, &r, &caps, None);
    assert!(acked(&again.0), "{:?}", decode(&again.0.bytes));
    assert_eq!(again.1, 1, "only the new hello's signature is checked");
}
