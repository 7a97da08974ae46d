use super::{pick, refusal};
use libp2p::gossipsub::MessageAcceptance;
use mesh_core::{Artifact, ErrorCode, MeshError, NodeKeypair, SwarmPresence, Timestamp};

/// An expired presence is ignored; forged, foreign or malformed ones are rejected.
#[test]
fn only_expired_presences_are_ignored() {
    let key = NodeKeypair::generate();
    let now = Timestamp::now();
    let doc = serde_json::json!({
        "schema/v": 1,
        "message/kind": "swarm-presence.v1",
        "swarm/key": "ab".repeat(32),
        "node/id": key.node_id().to_string(),
        "presence": "announce",
        "sequence/no": 1,
        "addrs": [],
        "created-at": now.as_str(),
        "expires-at": now.plus_secs(10).as_str(),
    });
    let serde_json::Value::Object(doc) = doc else {
        unreachable!("a JSON object")
    };
    let wire = SwarmPresence::sign(doc, &key).unwrap().to_cbor();
    let verdict = |at: &Timestamp, bytes: &[u8]| match SwarmPresence::verify_cbor(bytes, at) {
        Ok(_) => None,
        Err(e) => Some((e.code, refusal(&e))),
    };
    assert_eq!(verdict(&now, &wire), None);
    assert_eq!(
        verdict(&now.plus_secs(11), &wire),
        Some((ErrorCode::AdvExpired, MessageAcceptance::Ignore))
    );
    let mut altered = wire.clone();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    assert!(matches!(
        verdict(&now, &altered),
        Some((_, MessageAcceptance::Reject))
    ));
    assert!(matches!(
        verdict(&now, b"not cbor"),
        Some((ErrorCode::ProtoInvalid, MessageAcceptance::Reject))
    ));
    assert_eq!(
        refusal(&MeshError::new(ErrorCode::SigUnknownSigner, "foreign")),
        MessageAcceptance::Reject
    );
}

#[test]
fn pick_takes_k_distinct_items_or_all() {
    let mut calls = 0;
    let got = pick((0..10).collect(), 3, |n| {
        calls += 1;
        n - 1
    });
    assert_eq!(got, vec![9, 8, 7]);
    assert_eq!(calls, 3);
    let mut all = pick((0..4).collect::<Vec<u32>>(), 9, |_| 0);
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3]);
    assert!(pick(Vec::<u8>::new(), 2, |_| 0).is_empty());
    // An out-of-range draw is clamped, never a panic.
    assert_eq!(pick(vec![1, 2], 1, |n| n + 5), vec![2]);
}
