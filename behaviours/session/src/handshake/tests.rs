//! The handshake machine driven by hand, with real signed artifacts and a fake clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::artifacts::{HandshakeParams, MAX_CAPABILITIES, build_capabilities, build_hello};
use crate::governor::{GovernorConfig, Temperature};
use crate::protocol::decode;
use crate::secret::EphemeralKey;
use mesh_core::artifact::Artifact;

fn t(s: i64) -> Timestamp {
    Timestamp::parse("2026-03-23T18:10:00Z")
        .unwrap()
        .plus_secs(s)
}

/// One node: its key, its machine and its governor.
struct Node {
    key: NodeKeypair,
    hs: Handshakes,
    gov: Governor,
    peer: PeerId,
}

fn node_with(governor: GovernorConfig) -> Node {
    let key = NodeKeypair::generate();
    let trace: Arc<dyn TraceSink> = Arc::new(mesh_core::MemoryTrace::new(100));
    let config = Config {
        trace,
        ..Config::default()
    };
    Node {
        hs: Handshakes::new(key.clone(), &config, &t(0)),
        gov: Governor::new(governor),
        peer: key.node_id().to_peer_id().unwrap(),
        key,
    }
}

fn node() -> Node {
    node_with(GovernorConfig::default())
}

fn outputs(n: &mut Node) -> Vec<Output> {
    std::iter::from_fn(|| n.hs.next_output()).collect()
}

/// The request `a` sent to `to`, from its outputs.
fn sent(outs: &[Output], to: PeerId) -> Vec<u8> {
    outs.iter()
        .find_map(|o| match o {
            Output::Send { peer, bytes } if *peer == to => Some(bytes.clone()),
            _ => None,
        })
        .expect("a hello sent")
}

fn established(outs: &[Output]) -> Option<NodeId> {
    outs.iter().find_map(|o| match o {
        Output::Event(Event::SessionEstablished { node, .. }) => Some(*node),
        _ => None,
    })
}

/// The refusal event among `outs`: (code, hard, by_peer).
fn rejected(outs: &[Output]) -> Option<(ErrorCode, bool, bool)> {
    outs.iter().find_map(|o| match o {
        Output::Event(Event::Rejected {
            error,
            hard,
            by_peer,
            ..
        }) => Some((error.code, *hard, *by_peer)),
        _ => None,
    })
}

fn closes(outs: &[Output]) -> bool {
    outs.iter().any(|o| matches!(o, Output::Close(_)))
}

fn code_of(reply: &Reply) -> ErrorCode {
    match decode(&reply.bytes).unwrap() {
        Message::Rejected(e) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A hello from `from` to `to` signed by `signer`, as a raw peer would send it.
fn hello_from(signer: &NodeKeypair, to: NodeId, at: &Timestamp) -> Vec<u8> {
    let p = HandshakeParams {
        offered: &["core/messaging"],
        transport: "tcp",
        intent: "peer-connect",
    };
    let hello = build_hello(signer, &EphemeralKey::generate(), to, &p, at).unwrap();
    let caps = build_capabilities(signer, &[], &["tcp"], at, 600).unwrap();
    encode(&Message::Hello(Box::new(hello), Box::new(caps)))
}

/// `a` dials `b` over QUIC: the hello goes out at `t(0)`. Returns its bytes.
fn dial(a: &mut Node, b: &Node) -> Vec<u8> {
    a.hs.connected(b.peer, true, TransportProfile::Quic, &mut a.gov, &t(0));
    let outs = outputs(a);
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Event(Event::HandshakeStarted { .. })))
    );
    sent(&outs, b.peer)
}

#[test]
fn a_hello_is_acked_and_both_ends_derive_the_same_secret() {
    let (mut a, mut b) = (node(), node());
    let hello = dial(&mut a, &b);
    let Message::Hello(h, _) = decode(&hello).unwrap() else {
        panic!("not a hello")
    };
    assert_eq!(h.recipient(), Some(b.key.node_id()));
    assert_eq!(
        TransportProfile::of_handshake(&h),
        Some(TransportProfile::Quic)
    );

    // The listener computes its key and term ahead, then answers.
    b.hs.connected(a.peer, false, TransportProfile::Quic, &mut b.gov, &t(0));
    assert!(b.hs.work(&mut b.gov, &t(0)));
    let reply = b.hs.on_request(
        a.peer,
        TransportProfile::Quic,
        decode(&hello),
        &mut b.gov,
        &t(1),
    );
    assert!(!reply.close_after);
    let Message::Ack(ack, _) = decode(&reply.bytes).unwrap() else {
        panic!("not an ack")
    };
    assert_eq!(ack.ack_of(), Some(h.handshake_id()));
    assert_eq!(ack.sender(), b.key.node_id());
    // The responder derives after its ack is out: no session until its next work.
    assert_eq!(established(&outputs(&mut b)), None);
    assert!(b.hs.session(&a.peer).is_none());
    assert!(b.hs.work(&mut b.gov, &t(1)));
    assert_eq!(established(&outputs(&mut b)), Some(a.key.node_id()));

    a.hs.on_response(b.peer, decode(&reply.bytes), &mut a.gov, &t(1));
    assert_eq!(established(&outputs(&mut a)), Some(b.key.node_id()));

    let (sa, sb) = (
        a.hs.session(&b.peer).unwrap(),
        b.hs.session(&a.peer).unwrap(),
    );
    assert_eq!(sa.secret.as_bytes(), sb.secret.as_bytes());
    assert_eq!((sa.role, sb.role), (Role::Initiator, Role::Responder));
    assert_eq!(sa.capabilities[0], "core/messaging");
    for s in [sa, sb] {
        assert_eq!(s.transport, TransportProfile::Quic);
        assert_eq!(s.peer_transport, Some(TransportProfile::Quic));
    }
    assert_eq!(
        b.hs.capabilities_of(&a.key.node_id()).unwrap(),
        sa.capabilities.as_slice()
    );
    assert!(a.gov.temperature(&b.key.node_id()).is_some());
}

#[test]
fn a_replayed_hello_is_a_hard_refusal_closed_after_its_answer() {
    let (mut b, r) = (node(), NodeKeypair::generate());
    let pr = r.node_id().to_peer_id().unwrap();
    let hello = hello_from(&r, b.key.node_id(), &t(0));
    let first =
        b.hs.on_request(pr, TransportProfile::Tcp, decode(&hello), &mut b.gov, &t(0));
    assert!(matches!(decode(&first.bytes).unwrap(), Message::Ack(..)));
    let _ = outputs(&mut b);

    let again =
        b.hs.on_request(pr, TransportProfile::Tcp, decode(&hello), &mut b.gov, &t(1));
    assert_eq!(code_of(&again), ErrorCode::HsReplay);
    assert!(
        again.close_after,
        "the caller closes once the answer is sent"
    );
    let outs = outputs(&mut b);
    assert_eq!(rejected(&outs), Some((ErrorCode::HsReplay, true, false)));
    assert!(!closes(&outs), "not before the coded answer");
    assert!(
        b.hs.session(&pr).is_none(),
        "the first one's session is gone"
    );
}

/// A hello whose advertisement lists `extra` capabilities beside `core/messaging`, each
/// with its own signed passport.
fn hello_with_caps(signer: &NodeKeypair, to: NodeId, extra: usize, at: &Timestamp) -> Vec<u8> {
    let names: Vec<String> = (0..extra).map(|i| format!("plugin/cap{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let p = HandshakeParams {
        offered: &["core/messaging"],
        transport: "tcp",
        intent: "peer-connect",
    };
    let hello = build_hello(signer, &EphemeralKey::generate(), to, &p, at).unwrap();
    let caps = build_capabilities(signer, &names, &["tcp"], at, 600).unwrap();
    encode(&Message::Hello(Box::new(hello), Box::new(caps)))
}

#[test]
fn a_hello_over_the_rate_costs_no_signature_check() {
    use mesh_core::artifact::equations_on_this_thread as checked;
    let (mut b, r) = (node(), NodeKeypair::generate());
    let pr = r.node_id().to_peer_id().unwrap();
    let burst = GovernorConfig::default().handshakes.burst;
    for _ in 0..burst {
        let hello = decode(&hello_from(&r, b.key.node_id(), &t(0)));
        let reply =
            b.hs.on_request(pr, TransportProfile::Tcp, hello, &mut b.gov, &t(0));
        assert!(matches!(decode(&reply.bytes).unwrap(), Message::Ack(..)));
    }
    let _ = outputs(&mut b);
    // Over the rate, a hello with many passports is refused (softly) unchecked.
    let hello = decode(&hello_with_caps(&r, b.key.node_id(), 20, &t(0)));
    let before = checked();
    let reply =
        b.hs.on_request(pr, TransportProfile::Tcp, hello, &mut b.gov, &t(0));
    assert_eq!(code_of(&reply), ErrorCode::TransportRejected);
    assert!(!reply.close_after);
    assert_eq!(checked() - before, 0, "signatures checked over the rate");
}

#[test]
fn a_hello_is_read_for_its_first_32_capabilities() {
    use mesh_core::artifact::equations_on_this_thread as checked;
    let (mut b, r) = (node(), NodeKeypair::generate());
    let pr = r.node_id().to_peer_id().unwrap();
    // 1 + 59 capabilities, 60 passports (within the 64 KiB cap).
    let hello = decode(&hello_with_caps(&r, b.key.node_id(), 59, &t(0)));
    let before = checked();
    let reply =
        b.hs.on_request(pr, TransportProfile::Tcp, hello, &mut b.gov, &t(0));
    let spent = checked() - before;
    assert!(matches!(decode(&reply.bytes).unwrap(), Message::Ack(..)));
    // The handshake artifact, the advertisement and 32 passports.
    assert_eq!(spent, 2 + MAX_CAPABILITIES as u64, "signatures checked");
    assert!(b.hs.work(&mut b.gov, &t(0)));
    let outs = outputs(&mut b);
    let caps = outs
        .iter()
        .find_map(|o| match o {
            Output::Event(Event::SessionEstablished { capabilities, .. }) => {
                Some(capabilities.clone())
            }
            _ => None,
        })
        .expect("a session");
    assert_eq!(caps.len(), MAX_CAPABILITIES);
    assert_eq!(caps[0], "core/messaging");
    assert_eq!(caps[31], "plugin/cap30");
}

#[test]
fn a_hello_signed_by_another_node_than_the_peer_is_refused() {
    let (mut b, r, x) = (node(), NodeKeypair::generate(), NodeKeypair::generate());
    let pr = r.node_id().to_peer_id().unwrap();
    let reply = b.hs.on_request(
        pr,
        TransportProfile::Tcp,
        decode(&hello_from(&x, b.key.node_id(), &t(0))),
        &mut b.gov,
        &t(0),
    );
    assert_eq!(code_of(&reply), ErrorCode::SigUnknownSigner);
    assert!(reply.close_after);
    assert_eq!(
        rejected(&outputs(&mut b)),
        Some((ErrorCode::SigUnknownSigner, true, false))
    );
    // A hello to another node is refused too, softly.
    let reply = b.hs.on_request(
        pr,
        TransportProfile::Tcp,
        decode(&hello_from(&r, x.node_id(), &t(0))),
        &mut b.gov,
        &t(0),
    );
    assert_eq!(code_of(&reply), ErrorCode::ProtoInvalid);
    assert!(!reply.close_after);
}

#[test]
fn three_hard_refusals_block_the_peer() {
    let (mut b, r, x) = (node(), NodeKeypair::generate(), NodeKeypair::generate());
    let pr = r.node_id().to_peer_id().unwrap();
    for i in 0..3 {
        let forged = decode(&hello_from(&x, b.key.node_id(), &t(i)));
        let reply =
            b.hs.on_request(pr, TransportProfile::Tcp, forged, &mut b.gov, &t(i));
        assert_eq!(code_of(&reply), ErrorCode::SigUnknownSigner);
    }
    assert_eq!(b.gov.temperature(&r.node_id()), Some(Temperature::Blocked));
    let good = decode(&hello_from(&r, b.key.node_id(), &t(3)));
    let reply =
        b.hs.on_request(pr, TransportProfile::Tcp, good, &mut b.gov, &t(3));
    assert_eq!(code_of(&reply), ErrorCode::TransportRejected);
}

#[test]
fn an_ack_after_the_pending_hello_timed_out_is_refused() {
    for (arrives, ok) in [(29, true), (31, false)] {
        let (mut a, mut b) = (node(), node());
        let hello = dial(&mut a, &b);
        let reply = b.hs.on_request(
            a.peer,
            TransportProfile::Quic,
            decode(&hello),
            &mut b.gov,
            &t(1),
        );
        a.hs.on_response(b.peer, decode(&reply.bytes), &mut a.gov, &t(arrives));
        let outs = outputs(&mut a);
        if ok {
            assert_eq!(established(&outs), Some(b.key.node_id()));
        } else {
            assert_eq!(
                rejected(&outs),
                Some((ErrorCode::HsUnknownRef, false, false))
            );
            assert!(!closes(&outs), "a soft refusal leaves the connection");
            assert!(a.hs.session(&b.peer).is_none());
        }
    }
}

#[test]
fn an_ack_without_a_hello_is_refused() {
    let (a, mut b) = (node(), node());
    // A validly signed ack from A to B, of a hello B never sent.
    let p = HandshakeParams {
        offered: &[],
        transport: "tcp",
        intent: "peer-connect",
    };
    let eph = EphemeralKey::generate();
    let hello = build_hello(&b.key, &eph, a.key.node_id(), &p, &t(0)).unwrap();
    let ack = crate::artifacts::build_ack(&a.key, &eph, &hello, &p, &t(0)).unwrap();
    let caps = build_capabilities(&a.key, &[], &["tcp"], &t(0), 600).unwrap();
    let bytes = encode(&Message::Ack(Box::new(ack), Box::new(caps)));
    b.hs.on_response(a.peer, decode(&bytes), &mut b.gov, &t(0));
    let outs = outputs(&mut b);
    assert_eq!(
        rejected(&outs),
        Some((ErrorCode::HsUnknownRef, false, false))
    );
    assert!(!closes(&outs));
    assert!(b.hs.session(&a.peer).is_none());
}

#[test]
fn a_refusal_by_the_peer_ends_our_attempt_and_leaves_the_connection() {
    let (mut a, b) = (node(), node());
    a.gov.add_known(b.key.node_id());
    let _ = dial(&mut a, &b);
    assert!(a.hs.is_engaged(&b.peer));
    let refusal = encode(&Message::Rejected(MeshError::new(
        ErrorCode::TransportRejected,
        "no room",
    )));
    a.hs.on_response(b.peer, decode(&refusal), &mut a.gov, &t(1));
    let outs = outputs(&mut a);
    assert_eq!(
        rejected(&outs),
        Some((ErrorCode::TransportRejected, false, true))
    );
    assert!(!closes(&outs));
    assert!(!a.hs.is_engaged(&b.peer), "a new hello may be sent later");
    assert_eq!(a.gov.temperature(&b.key.node_id()), Some(Temperature::Cold));
}

/// An answer to our hello that is no ack and no refusal (an empty stream, a hello)
/// ends our attempt like a refusal: it was left pending, holding a session slot (with
/// `max_live` 1, no other handshake could start) for as long as the connection lasted.
#[test]
fn an_unreadable_answer_ends_our_attempt() {
    let mut a = node_with(GovernorConfig {
        max_live: 1,
        ..GovernorConfig::default()
    });
    let (b, c) = (node(), node());
    let _ = dial(&mut a, &b);
    assert!(a.hs.is_engaged(&b.peer));
    a.hs.on_response(b.peer, decode(&[]), &mut a.gov, &t(1));
    let outs = outputs(&mut a);
    assert_eq!(rejected(&outs).map(|r| r.0), Some(ErrorCode::ProtoInvalid));
    assert!(!a.hs.is_engaged(&b.peer), "our attempt is over");
    a.hs.connected(c.peer, true, TransportProfile::Quic, &mut a.gov, &t(1));
    assert!(a.hs.is_engaged(&c.peer), "the slot is free for the next");
}

/// Our hello unanswered (timeout, reset): the governor's dial of the peer is over too,
/// and it is dialed again after its backoff. It stayed "dialing" for good: never
/// evicted, never redialed, and counted against the dials the governor makes.
#[test]
fn an_unanswered_hello_ends_the_governor_s_dial() {
    let (mut a, b) = (node(), node());
    let nb = b.key.node_id();
    a.gov.add_known(nb);
    assert!(
        a.gov
            .tick(&t(0))
            .iter()
            .any(|x| matches!(x, Action::Dial(n) if *n == nb))
    );
    let _ = dial(&mut a, &b);
    a.hs.on_request_failed(&b.peer, &mut a.gov, &t(1));
    assert!(!a.hs.is_engaged(&b.peer));
    let status = a.gov.peer_status(&nb, &t(1)).unwrap();
    assert_ne!(status["lifecycle"], "dialing", "{status}");
    assert!(
        a.gov
            .tick(&t(400))
            .iter()
            .any(|x| matches!(x, Action::Dial(n) if *n == nb)),
        "dialed again after the backoff"
    );
}

#[test]
fn without_room_a_hello_is_refused_softly() {
    let mut b = node_with(GovernorConfig {
        max_live: 0,
        ..GovernorConfig::default()
    });
    let r = NodeKeypair::generate();
    let pr = r.node_id().to_peer_id().unwrap();
    let hello = decode(&hello_from(&r, b.key.node_id(), &t(0)));
    let reply =
        b.hs.on_request(pr, TransportProfile::Tcp, hello, &mut b.gov, &t(0));
    assert_eq!(code_of(&reply), ErrorCode::TransportRejected);
    assert!(!reply.close_after);
    // Nor does the node start one.
    assert!(!b.hs.start(pr, &mut b.gov, &t(0)));
    assert!(
        outputs(&mut b)
            .iter()
            .all(|o| !matches!(o, Output::Send { .. }))
    );
}

#[test]
fn undecodable_requests_are_answered_with_their_code() {
    let (mut b, r) = (node(), NodeKeypair::generate());
    let pr = r.node_id().to_peer_id().unwrap();
    let reply = b.hs.on_request(
        pr,
        TransportProfile::Tcp,
        decode(b"\xff not cbor"),
        &mut b.gov,
        &t(0),
    );
    assert_eq!(code_of(&reply), ErrorCode::ProtoInvalid);
    assert!(!reply.close_after);
}

#[test]
fn a_hello_built_while_dialing_is_reframed_for_the_transport_used() {
    let (mut a, mut b) = (node(), node());
    a.hs.dialing(b.peer, TransportProfile::Tcp);
    assert!(a.hs.work(&mut a.gov, &t(0)));
    assert_eq!(a.hs.ahead().prebuilt(), 1);
    // The connection came up over QUIC, not the TCP guessed from the addresses.
    let hello = dial(&mut a, &b);
    assert_eq!(a.hs.ahead().prebuilt(), 0, "the hello built ahead was used");
    assert_eq!(a.hs.ahead().queued(), 0, "its identity term came with it");
    let Message::Hello(h, _) = decode(&hello).unwrap() else {
        panic!("not a hello")
    };
    assert_eq!(
        TransportProfile::of_handshake(&h),
        Some(TransportProfile::Quic)
    );
    h.verify_signature().unwrap();
    let reply = b.hs.on_request(
        a.peer,
        TransportProfile::Quic,
        decode(&hello),
        &mut b.gov,
        &t(1),
    );
    a.hs.on_response(b.peer, decode(&reply.bytes), &mut a.gov, &t(1));
    assert_eq!(established(&outputs(&mut a)), Some(b.key.node_id()));
}

#[test]
fn a_stale_hello_built_ahead_is_not_sent() {
    let (mut a, b) = (node(), node());
    a.hs.dialing(b.peer, TransportProfile::Quic);
    assert!(a.hs.work(&mut a.gov, &t(0)));
    a.hs.connected(b.peer, true, TransportProfile::Quic, &mut a.gov, &t(60));
    let Message::Hello(h, _) = decode(&sent(&outputs(&mut a), b.peer)).unwrap() else {
        panic!("not a hello")
    };
    assert_eq!(h.ts(), &t(60), "a new hello, not the one of t(0)");
}

#[test]
fn the_last_connection_closing_ends_the_session() {
    let (mut a, mut b) = (node(), node());
    let hello = dial(&mut a, &b);
    let reply = b.hs.on_request(
        a.peer,
        TransportProfile::Quic,
        decode(&hello),
        &mut b.gov,
        &t(0),
    );
    a.hs.on_response(b.peer, decode(&reply.bytes), &mut a.gov, &t(0));
    let _ = outputs(&mut a);
    a.hs.disconnected(&b.peer, &mut a.gov, &t(5));
    let outs = outputs(&mut a);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Event(Event::SessionClosed { node, .. }) if *node == b.key.node_id()
    )));
    assert!(a.hs.session(&b.peer).is_none());
    assert!(!a.hs.is_connected(&b.peer));
    assert_eq!(a.gov.temperature(&b.key.node_id()), Some(Temperature::Cold));
    // B's ack was out but its derivation not done: gone with the connection.
    b.hs.disconnected(&a.peer, &mut b.gov, &t(5));
    assert!(!b.hs.work(&mut b.gov, &t(5)) || b.hs.session(&a.peer).is_none());
    assert!(b.hs.session(&a.peer).is_none());
}

/// A peer we dialed sends its own hello before it acks ours: the session of its hello
/// stands, and the ack that comes after (to a hello no longer pending) is refused
/// without taking it down. It was dropped without a `SessionClosed`, so the node kept a
/// session the machine no longer had.
#[test]
fn an_ack_after_a_crossed_hello_leaves_the_session_in_place() {
    let (mut a, mut b) = (node(), node());
    let ours = dial(&mut a, &b);
    let theirs = hello_from(&b.key, a.key.node_id(), &t(0));
    let reply = a.hs.on_request(
        b.peer,
        TransportProfile::Quic,
        decode(&theirs),
        &mut a.gov,
        &t(1),
    );
    assert!(matches!(decode(&reply.bytes).unwrap(), Message::Ack(..)));
    assert!(a.hs.work(&mut a.gov, &t(1)));
    assert_eq!(established(&outputs(&mut a)), Some(b.key.node_id()));

    b.hs.connected(a.peer, false, TransportProfile::Quic, &mut b.gov, &t(0));
    let ack = b.hs.on_request(
        a.peer,
        TransportProfile::Quic,
        decode(&ours),
        &mut b.gov,
        &t(1),
    );
    assert!(matches!(decode(&ack.bytes).unwrap(), Message::Ack(..)));
    a.hs.on_response(b.peer, decode(&ack.bytes), &mut a.gov, &t(2));
    let outs = outputs(&mut a);
    assert_eq!(rejected(&outs).map(|r| r.0), Some(ErrorCode::HsUnknownRef));
    assert!(
        a.hs.session(&b.peer).is_some(),
        "the session went without a SessionClosed"
    );
}

/// The sessions strangers start leave a quarter of `max_live` to named peers (and the
/// node's own dials), and the strangers of one network hold at most a quarter: here 8
/// sessions, 2 kept, 2 per network. Without these, one host's fresh keys held them all.
#[test]
fn strangers_leave_room_for_named_peers_and_one_network_holds_its_share() {
    use mesh_core::IpKey;
    let mut b = node_with(GovernorConfig {
        max_live: 8,
        ..GovernorConfig::default()
    });
    let me = b.key.node_id();
    let ask = |b: &mut Node, k: &NodeKeypair, net: Option<&str>| {
        let p = k.node_id().to_peer_id().unwrap();
        b.hs.connected(p, false, TransportProfile::Tcp, &mut b.gov, &t(0));
        if let Some(ip) = net {
            b.hs.inbound_from(p, IpKey::of(ip.parse().unwrap()));
        }
        let hello = decode(&hello_from(k, me, &t(0)));
        let reply =
            b.hs.on_request(p, TransportProfile::Tcp, hello, &mut b.gov, &t(0));
        match decode(&reply.bytes).unwrap() {
            Message::Ack(..) => Ok(()),
            Message::Rejected(e) => Err(e),
            other => panic!("{other:?}"),
        }
    };
    let keys: Vec<NodeKeypair> = (0..8).map(|_| NodeKeypair::generate()).collect();
    // One network: two, then refused for its network.
    for k in &keys[..2] {
        ask(&mut b, k, Some("198.51.100.7")).unwrap();
    }
    let e = ask(&mut b, &keys[2], Some("198.51.100.7")).unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    assert!(e.detail.contains("198.51.100.7"), "{e}");
    // Others, each its own network: up to 8 - 2 kept = 6 in all, then no room.
    for (i, k) in keys[3..7].iter().enumerate() {
        ask(&mut b, k, Some(&format!("203.0.113.{i}"))).unwrap();
    }
    let e = ask(&mut b, &keys[7], Some("192.0.2.1")).unwrap_err();
    assert!(e.detail.contains("no room for another session"), "{e}");
    // A named peer takes one of the two kept, from a full network too.
    let seed = NodeKeypair::generate();
    b.gov.add_known(seed.node_id());
    ask(&mut b, &seed, Some("198.51.100.7")).unwrap();
}

/// Three live sessions (of `max_live` 4): the node's own dial of a stranger leaves the
/// last slot to the named peer it still wants; and a named peer's hello that crosses
/// the node's own hello to it is not counted against itself.
#[test]
fn own_dials_leave_room_for_named_peers_and_crossed_hellos_count_once() {
    let mut b = node();
    for _ in 0..3 {
        let n = NodeKeypair::generate().node_id();
        let _ = b.gov.session_established(n, &t(0));
    }
    let seed = node();
    b.gov.add_known(seed.key.node_id());
    let (stranger, crossing) = (node(), node());
    // Room for one more: not for a stranger the node dials (the seed still wants it).
    assert!(!b.hs.start(stranger.peer, &mut b.gov, &t(0)));
    // A crossed hello: the node's hello to `crossing` (named) went out first, then
    // `crossing`'s own arrives.
    b.gov.add_known(crossing.key.node_id());
    b.hs.connected(
        crossing.peer,
        true,
        TransportProfile::Tcp,
        &mut b.gov,
        &t(0),
    );
    assert!(b.hs.is_engaged(&crossing.peer));
    let hello = decode(&hello_from(&crossing.key, b.key.node_id(), &t(0)));
    let reply = b.hs.on_request(
        crossing.peer,
        TransportProfile::Tcp,
        hello,
        &mut b.gov,
        &t(0),
    );
    assert!(
        matches!(decode(&reply.bytes).unwrap(), Message::Ack(..)),
        "the crossed hello was refused for the asker's own attempt"
    );
}

/// A past peer (a stored one, taken at a restart) is kept and dialed but not named:
/// its hello gets the room strangers get.
#[test]
fn a_past_peer_is_kept_not_named() {
    let mut b = node();
    let past = NodeKeypair::generate().node_id();
    b.gov.add_past(past);
    assert!(b.gov.is_kept(&past));
    assert!(!b.gov.is_named(&past));
}

mod refusals; // hellos refused before their signatures are checked
