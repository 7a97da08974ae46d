//! The replay guard with a fake clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_core::artifact::Artifact;
use mesh_core::{ErrorCode, NodeKeypair, PeerHandshake, Timestamp};
use mesh_session::replay::{ReplayConfig, ReplayGuard};
use mesh_session::secret::EphemeralKey;
use serde_json::json;

fn t(s: i64) -> Timestamp {
    Timestamp::parse("2026-03-23T18:10:00Z")
        .unwrap()
        .plus_secs(s)
}

fn hs(
    from: &NodeKeypair,
    to: &NodeKeypair,
    id: &str,
    nonce: &str,
    ack_of: Option<&str>,
    at: &Timestamp,
) -> PeerHandshake {
    let mut doc = json!({
        "schema/v": 1, "handshake/id": id, "handshake/mode": if ack_of.is_some() { "ack" } else { "hello" },
        "ts": at.as_str(), "sender/node-id": from.node_id().to_string(),
        "recipient/node-id": to.node_id().to_string(), "key/alg": "ed25519",
        "key/public": from.fingerprint().to_string(), "session/pub": EphemeralKey::generate().session_pub(),
        "protocol/version": mesh_core::PROTOCOL_VERSION, "nonce": nonce,
        "capabilities/offered": ["core/messaging"],
    });
    if let Some(of) = ack_of {
        doc["ack/of-handshake-id"] = of.into();
    }
    PeerHandshake::sign(doc.as_object().unwrap().clone(), from).unwrap()
}

fn guard() -> ReplayGuard {
    ReplayGuard::new(ReplayConfig::default(), mesh_core::PROTOCOL_VERSION)
}

#[test]
fn replayed_hello_is_refused_until_the_nonce_is_forgotten() {
    let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut g = guard();
    let hello = hs(&a, &b, "hs:1", "n1", None, &t(0));
    assert!(g.check_incoming(&hello, &t(1)).unwrap().is_none());
    assert_eq!(
        g.check_incoming(&hello, &t(2)).unwrap_err().code,
        ErrorCode::HsReplay
    );
    // A new handshake id with the same nonce is still a replay.
    let again = hs(&a, &b, "hs:2", "n1", None, &t(3));
    assert_eq!(
        g.check_incoming(&again, &t(3)).unwrap_err().code,
        ErrorCode::HsReplay
    );
    // Another sender may use the same nonce.
    let c = NodeKeypair::generate();
    g.check_incoming(&hs(&c, &b, "hs:1", "n1", None, &t(3)), &t(3))
        .unwrap();
    // Captured and replayed much later: outside the skew window.
    assert_eq!(
        g.check_incoming(&hello, &t(200)).unwrap_err().code,
        ErrorCode::HsReplay
    );
}

#[test]
fn clock_skew_window() {
    let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut g = guard();
    g.check_incoming(&hs(&a, &b, "h1", "n1", None, &t(30)), &t(0))
        .unwrap();
    g.check_incoming(&hs(&a, &b, "h2", "n2", None, &t(-30)), &t(0))
        .unwrap();
    assert_eq!(
        g.check_incoming(&hs(&a, &b, "h3", "n3", None, &t(31)), &t(0))
            .unwrap_err()
            .code,
        ErrorCode::HsReplay
    );
    assert_eq!(
        g.check_incoming(&hs(&a, &b, "h4", "n4", None, &t(-31)), &t(0))
            .unwrap_err()
            .code,
        ErrorCode::HsReplay
    );
}

#[test]
fn acks_must_answer_a_pending_hello_from_its_recipient_in_time() {
    let (a, b, c) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut g = guard();
    // Unknown reference.
    let stray = hs(&b, &a, "ack:0", "s0", Some("hs:never"), &t(0));
    assert_eq!(
        g.check_incoming(&stray, &t(0)).unwrap_err().code,
        ErrorCode::HsUnknownRef
    );
    // The right ack, once.
    g.hello_sent("hs:1", b.node_id(), &t(0)).unwrap();
    let ack = hs(&b, &a, "ack:1", "s1", Some("hs:1"), &t(1));
    let answered = g.check_incoming(&ack, &t(1)).unwrap().unwrap();
    assert_eq!(answered.to, b.node_id());
    let ack_again = hs(&b, &a, "ack:1b", "s1b", Some("hs:1"), &t(2));
    assert_eq!(
        g.check_incoming(&ack_again, &t(2)).unwrap_err().code,
        ErrorCode::HsUnknownRef
    );
    // An ack from a node the hello did not go to.
    g.hello_sent("hs:2", b.node_id(), &t(0)).unwrap();
    let wrong = hs(&c, &a, "ack:2", "s2", Some("hs:2"), &t(1));
    assert_eq!(
        g.check_incoming(&wrong, &t(1)).unwrap_err().code,
        ErrorCode::HsUnknownRef
    );
    // Too late: the pending hello timed out after 30 s.
    let late = hs(&b, &a, "ack:3", "s3", Some("hs:2"), &t(31));
    assert_eq!(
        g.check_incoming(&late, &t(31)).unwrap_err().code,
        ErrorCode::HsUnknownRef
    );
    g.hello_sent("hs:3", b.node_id(), &t(0)).unwrap();
    assert_eq!(g.sweep(&t(40)).len(), 1);
    assert_eq!(g.pending(), 0);
}

#[test]
fn another_protocol_version_is_a_version_mismatch() {
    let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut g = ReplayGuard::new(ReplayConfig::default(), "9.9.9");
    assert_eq!(
        g.check_incoming(&hs(&a, &b, "h", "n", None, &t(0)), &t(0))
            .unwrap_err()
            .code,
        ErrorCode::ProtoVersion
    );
}

#[test]
fn memory_is_bounded() {
    let b = NodeKeypair::generate();
    let mut g = ReplayGuard::new(
        ReplayConfig {
            max_peers: 8,
            max_nonces_per_peer: 4,
            max_pending: 3,
            ..ReplayConfig::default()
        },
        mesh_core::PROTOCOL_VERSION,
    );
    for i in 0..20 {
        let a = NodeKeypair::generate();
        g.check_incoming(
            &hs(&a, &b, &format!("h{i}"), &format!("n{i}"), None, &t(0)),
            &t(0),
        )
        .unwrap();
    }
    for i in 0..3 {
        g.hello_sent(&format!("p{i}"), b.node_id(), &t(0)).unwrap();
    }
    assert!(g.hello_sent("p3", b.node_id(), &t(1)).is_err());
    assert!(
        g.hello_sent("p3", b.node_id(), &t(31)).is_ok(),
        "timed-out hellos make room"
    );
}
