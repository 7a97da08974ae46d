//! Byte-exact conformance with `shared/vectors/signing.json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use mesh_core::{
    Artifact, ErrorCode, NodeAdvertisement, NodeId, NodeKeypair, ParticipantId, PeerHandshake,
    Timestamp,
};
use serde_json::Value;

fn secret(hex_str: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).unwrap();
    out
}

#[test]
fn identity_vectors() {
    let v = common::vectors();
    let ids = v["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 3);
    for id in ids {
        let kp = NodeKeypair::from_secret_bytes(&secret(id["secret_key_hex"].as_str().unwrap()));
        assert_eq!(
            hex::encode(kp.fingerprint().as_bytes()),
            id["public_key_hex"].as_str().unwrap()
        );
        assert_eq!(kp.fingerprint().to_string(), id["did_key_fingerprint"]);
        assert_eq!(kp.node_id().to_string(), id["node_id"]);
        assert_eq!(kp.participant_id().to_string(), id["participant_id"]);
        let peer = kp.to_libp2p().public().to_peer_id();
        assert_eq!(peer.to_string(), id["libp2p_peer_id"]);
        // Conversions are lossless both ways.
        let node = NodeId::parse(id["node_id"].as_str().unwrap()).unwrap();
        assert_eq!(node.to_peer_id().unwrap(), peer);
        assert_eq!(NodeId::from_peer_id(&peer).unwrap(), node);
        let part = ParticipantId::parse(id["participant_id"].as_str().unwrap()).unwrap();
        assert_eq!(part.fingerprint(), node.fingerprint());
        assert_eq!(part.to_peer_id().unwrap(), peer);
    }
}

fn check_artifact_vector<A: Artifact>(vector: &Value) {
    let fixture = common::read_json(vector["fixture"].as_str().unwrap());
    assert_eq!(vector["domain"], A::FAMILY);
    let excluded: Vec<&str> = vector["excluded_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(excluded, A::UNSIGNED_FIELDS);
    let artifact = A::from_json(fixture.clone()).unwrap();

    // The signing input, byte for byte.
    let input = artifact.signing_input();
    assert_eq!(
        hex::encode(&input),
        vector["signing_input_hex"].as_str().unwrap()
    );

    // Our signature over it, byte for byte (Ed25519 is deterministic).
    let kp =
        NodeKeypair::from_secret_bytes(&secret(vector["signer_secret_key_hex"].as_str().unwrap()));
    let mut unsigned = fixture.as_object().unwrap().clone();
    unsigned.remove("signature");
    let signed = A::sign(unsigned, &kp).unwrap();
    assert_eq!(
        signed.as_map()["signature"]["value"],
        vector["signature_base64url"]
    );
    assert_eq!(
        signed.to_json(),
        fixture,
        "re-signing reproduces the fixture exactly"
    );

    // The published signature verifies, from JSON and from the CBOR wire form.
    artifact.verify_signature().unwrap();
    let wire = artifact.to_cbor();
    let back = A::from_cbor(&wire).unwrap();
    assert_eq!(back.to_json(), fixture);
    assert_eq!(back.signing_input(), input);
}

#[test]
fn advertisement_vector_byte_exact() {
    let v = common::vectors();
    check_artifact_vector::<NodeAdvertisement>(&v["artifacts"][0]);
    let fixture =
        common::read_json("orbiplex-schemas/examples/vector-signed.node-advertisement.json");
    let now = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
    let wire = NodeAdvertisement::from_json(fixture.clone())
        .unwrap()
        .to_cbor();
    let ad = NodeAdvertisement::verify_cbor(&wire, &now).unwrap();
    assert_eq!(ad.sequence_no(), 17);
    NodeAdvertisement::verify_json(fixture.clone(), &now).unwrap();
    // After expires-at it is E_ADV_EXPIRED, even though the signature is fine.
    let later = Timestamp::parse("2026-03-23T18:18:01Z").unwrap();
    assert_eq!(
        NodeAdvertisement::verify_cbor(&wire, &later)
            .unwrap_err()
            .code,
        ErrorCode::AdvExpired
    );
}

#[test]
fn handshake_vector_byte_exact_and_framing_fields_unsigned() {
    let v = common::vectors();
    check_artifact_vector::<PeerHandshake>(&v["artifacts"][1]);
    let fixture = common::read_json("orbiplex-schemas/examples/bootstrap.ack.peer-handshake.json");
    let now = Timestamp::parse("2026-03-23T18:10:10Z").unwrap();
    PeerHandshake::verify_json(fixture.clone(), &now).unwrap();
    // protocol/version and transport/profile are framing: changing them keeps the
    // signature valid; changing any signed field breaks it.
    let mut framing = fixture.clone();
    framing["transport/profile"] = "quic".into();
    framing["protocol/version"] = "0.2.0".into();
    PeerHandshake::verify_json(framing, &now).unwrap();
    let mut tampered = fixture.clone();
    tampered["nonce"] = "nonce:other".into();
    assert_eq!(
        PeerHandshake::verify_json(tampered, &now).unwrap_err().code,
        ErrorCode::SigInvalid
    );
    // Outside the +-30 s window it is a suspected replay.
    let late = Timestamp::parse("2026-03-23T18:10:34Z").unwrap();
    assert_eq!(
        PeerHandshake::verify_json(fixture.clone(), &late)
            .unwrap_err()
            .code,
        ErrorCode::HsReplay
    );
    let wire = PeerHandshake::from_json(fixture).unwrap().to_cbor();
    PeerHandshake::verify_cbor(&wire, &now).unwrap();
}
