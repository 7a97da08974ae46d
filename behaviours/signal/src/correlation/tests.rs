//! Unit tests of the correlation table: transitions, expiry, quotas and room.
#![allow(clippy::unwrap_used)]
use super::*;
use mesh_core::{Artifact, NodeKeypair};
use serde_json::{Value, json};

fn t(s: i64) -> Timestamp {
    Timestamp::parse("2026-11-21T12:00:00Z")
        .unwrap()
        .plus_secs(s)
}

fn frame(from: &NodeKeypair, to: &NodeKeypair, kind: &str, corr: &str, at: i64) -> SignalFrame {
    let payload = match kind {
        "connect_reject" => json!({"reason/code": "E_TRANSPORT_REJECTED"}),
        "candidate" => json!({"addrs": ["/ip4/192.0.2.1/udp/1/quic-v1"]}),
        "setup_payload" => json!({"data/b64": "AA=="}),
        _ => json!({}),
    };
    let Value::Object(doc) = json!({
        "schema/v": 1, "message/kind": "signal-frame.v1", "frame/id": format!("{kind}-{at}"),
        "kind": kind, "from": from.node_id().to_string(), "to": to.node_id().to_string(),
        "correlation/id": corr, "created-at": t(at).as_str(),
        "expires-at": t(at + 60).as_str(), "payload": payload,
    }) else {
        unreachable!()
    };
    SignalFrame::sign(doc, from).unwrap()
}

#[test]
fn request_accept_candidates_done() {
    let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
    let (mut at_a, mut at_b) = (Correlations::default(), Correlations::default());
    let (me_a, me_b) = (a.node_id(), b.node_id());
    let req = frame(&a, &b, "connect_request", "c1", 0);
    assert_eq!(
        at_a.on_frame(&me_a, &req, &t(0)).unwrap(),
        Transition::Opened
    );
    assert_eq!(
        at_b.on_frame(&me_b, &req, &t(0)).unwrap(),
        Transition::Opened
    );
    // Candidates may trickle before the answer.
    let cand = frame(&a, &b, "candidate", "c1", 1);
    assert_eq!(
        at_b.on_frame(&me_b, &cand, &t(1)).unwrap(),
        Transition::Carried
    );
    let acc = frame(&b, &a, "connect_accept", "c1", 2);
    assert_eq!(
        at_b.on_frame(&me_b, &acc, &t(2)).unwrap(),
        Transition::Now(State::Accepted)
    );
    assert_eq!(
        at_a.on_frame(&me_a, &acc, &t(2)).unwrap(),
        Transition::Now(State::Accepted)
    );
    let back = frame(&b, &a, "setup_payload", "c1", 3);
    assert_eq!(
        at_a.on_frame(&me_a, &back, &t(3)).unwrap(),
        Transition::Carried
    );
    at_a.done(&me_b, "c1", &t(4)).unwrap();
    assert_eq!(at_a.state(&me_b, "c1"), Some(&State::Done));
    // After the end, late frames are refused as unknown references.
    let late = frame(&b, &a, "candidate", "c1", 5);
    assert_eq!(
        at_a.on_frame(&me_a, &late, &t(5)).unwrap_err().code,
        ErrorCode::HsUnknownRef
    );
}

#[test]
fn reject_out_of_turn_replay_and_unknown() {
    let (a, b, c) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut at_a = Correlations::default();
    let me = a.node_id();
    let req = frame(&a, &b, "connect_request", "c2", 0);
    at_a.on_frame(&me, &req, &t(0)).unwrap();
    // The initiator cannot accept its own request.
    let own_accept = frame(&a, &b, "connect_accept", "c2", 1);
    assert_eq!(
        at_a.on_frame(&me, &own_accept, &t(1)).unwrap_err().code,
        ErrorCode::ProtoInvalid
    );
    // A second request under the same id is a replay.
    assert_eq!(
        at_a.on_frame(&me, &req, &t(1)).unwrap_err().code,
        ErrorCode::HsReplay
    );
    // An accept for a correlation never opened.
    let stray = frame(&b, &a, "connect_accept", "nope", 1);
    assert_eq!(
        at_a.on_frame(&me, &stray, &t(1)).unwrap_err().code,
        ErrorCode::HsUnknownRef
    );
    // A frame between two other nodes.
    let other = frame(&b, &c, "connect_request", "x", 1);
    assert_eq!(
        at_a.on_frame(&me, &other, &t(1)).unwrap_err().code,
        ErrorCode::ProtoInvalid
    );
    // The reject carries its code.
    let rej = frame(&b, &a, "connect_reject", "c2", 2);
    assert_eq!(
        at_a.on_frame(&me, &rej, &t(2)).unwrap(),
        Transition::Now(State::Rejected(ErrorCode::TransportRejected))
    );
    assert!(at_a.done(&b.node_id(), "c2", &t(3)).is_err());
}

#[test]
fn expiry_linger_and_bounds() {
    let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
    let me = a.node_id();
    let limits = Limits {
        max_open: 2,
        max_frames: 3,
        ..Limits::default()
    };
    let mut at_a = Correlations::new(limits);
    at_a.on_frame(&me, &frame(&a, &b, "connect_request", "c3", 0), &t(0))
        .unwrap();
    assert!(at_a.sweep(&t(30)).is_empty());
    assert_eq!(at_a.sweep(&t(31)), vec![(b.node_id(), "c3".to_owned())]);
    assert_eq!(at_a.state(&b.node_id(), "c3"), Some(&State::Expired));
    let acc = frame(&b, &a, "connect_accept", "c3", 32);
    assert_eq!(
        at_a.on_frame(&me, &acc, &t(32)).unwrap_err().code,
        ErrorCode::HsUnknownRef
    );
    // Forgotten after the linger time.
    at_a.sweep(&t(31 + 121));
    assert!(at_a.is_empty());
    // A late answer to a request nobody swept yet is refused all the same.
    at_a.on_frame(&me, &frame(&a, &b, "connect_request", "e1", 160), &t(160))
        .unwrap();
    let late = frame(&b, &a, "connect_accept", "e1", 195);
    assert_eq!(
        at_a.on_frame(&me, &late, &t(195)).unwrap_err().code,
        ErrorCode::HsUnknownRef
    );
    at_a.sweep(&t(195 + 121));

    // At most `max_open` correlations, at most `max_frames` frames in one.
    at_a.on_frame(&me, &frame(&a, &b, "connect_request", "d1", 200), &t(200))
        .unwrap();
    at_a.on_frame(&me, &frame(&a, &b, "connect_request", "d2", 200), &t(200))
        .unwrap();
    let third = frame(&a, &b, "connect_request", "d3", 200);
    assert_eq!(
        at_a.on_frame(&me, &third, &t(200)).unwrap_err().code,
        ErrorCode::TransportRejected
    );
    let c = frame(&a, &b, "candidate", "d1", 201);
    at_a.on_frame(&me, &c, &t(201)).unwrap();
    at_a.on_frame(&me, &c, &t(201)).unwrap();
    assert_eq!(
        at_a.on_frame(&me, &c, &t(201)).unwrap_err().code,
        ErrorCode::TransportRejected
    );
}

/// Our key and a table of 8 (3 kept for our own), 2 per signer, 3 per link.
fn small_table() -> (NodeKeypair, Correlations) {
    let limits = Limits {
        max_open: 8,
        reserved_own: 3,
        max_per_peer: 2,
        max_per_link: 3,
        ..Limits::default()
    };
    (NodeKeypair::generate(), Correlations::new(limits))
}

#[test]
fn a_refused_request_takes_no_running_correlation_s_place() {
    let (me_key, mut table) = small_table();
    let me = me_key.node_id();
    let (s, c, d) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let (link_s, host) = (PeerId::random(), PeerId::random());
    let req = |k: &NodeKeypair, corr: &str| frame(k, &me_key, "connect_request", corr, 0);
    for (k, corr, link) in [
        (&s, "s1", link_s),
        (&s, "s2", link_s),
        (&c, "c1", host),
        (&c, "c2", host),
        (&d, "d1", host),
    ] {
        table
            .on_frame_via(&me, &req(k, corr), Some(link), &t(0))
            .unwrap();
    }
    // Full for others (5). S, at its own quota, asks through a link holding none:
    // refused, and the host's oldest (c1), still running, keeps its place.
    let e = table
        .on_frame_via(&me, &req(&s, "s3"), Some(PeerId::random()), &t(1))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    assert_eq!(table.len(), 5);
    assert!(
        table.open.contains_key(&(c.node_id(), "c1".to_owned())),
        "a running correlation was dropped for a refused request"
    );
}

#[test]
fn quotas_per_peer_and_link_and_room_kept_for_our_own() {
    let (me_key, mut table) = small_table();
    let me = me_key.node_id();
    let (a, c, d) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let (link_a, host) = (PeerId::random(), PeerId::random());
    let req = |k: &NodeKeypair, corr: &str| frame(k, &me_key, "connect_request", corr, 0);
    // One signer: two correlations, the third refused with a code.
    for corr in ["a1", "a2"] {
        table
            .on_frame_via(&me, &req(&a, corr), Some(link_a), &t(0))
            .unwrap();
    }
    let e = table
        .on_frame_via(&me, &req(&a, "a3"), Some(link_a), &t(0))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
    // Other signers through one host: the host's link quota (3) applies.
    table
        .on_frame_via(&me, &req(&c, "c1"), Some(host), &t(0))
        .unwrap();
    table
        .on_frame_via(&me, &req(&c, "c2"), Some(host), &t(0))
        .unwrap();
    table
        .on_frame_via(&me, &req(&d, "d1"), Some(host), &t(0))
        .unwrap();
    let e = table
        .on_frame_via(&me, &req(&d, "d2"), Some(host), &t(0))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    // Others may take 8 - 3 = 5 entries: full now (a1 a2 c1 c2 d1). The busiest link
    // (the host, 3) cannot take more; a request through a link that holds none takes
    // the place of the host's oldest (fair share), and the host stays refused.
    let e = table
        .on_frame_via(&me, &req(&a, "a9"), Some(host), &t(0))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    let (fresh, g) = (PeerId::random(), NodeKeypair::generate());
    table
        .on_frame_via(&me, &req(&g, "g1"), Some(fresh), &t(1))
        .unwrap();
    assert_eq!(table.len(), 5);
    let f = NodeKeypair::generate();
    let e = table
        .on_frame_via(&me, &req(&f, "f1"), Some(link_a), &t(1))
        .unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::TransportRejected,
        "link_a (2) is not two below the busiest (2 now)"
    );
    // Our own requests still find room: the three reserved ones.
    for corr in ["m1", "m2", "m3"] {
        let ours = frame(&me_key, &a, "connect_request", corr, 0);
        assert_eq!(
            table.on_frame(&me, &ours, &t(0)).unwrap(),
            Transition::Opened
        );
    }
    let ours = frame(&me_key, &a, "connect_request", "m4", 0);
    assert_eq!(
        table.on_frame(&me, &ours, &t(0)).unwrap_err().code,
        ErrorCode::TransportRejected
    );
    // A correlation that ended (and only lingers) gives its place up before a
    // request is refused.
    table.sweep(&t(31));
    assert_eq!(table.len(), 8, "expired ones linger");
    table
        .on_frame_via(&me, &req(&d, "d4"), Some(PeerId::random()), &t(32))
        .unwrap();
    assert_eq!(table.len(), 8);
}
