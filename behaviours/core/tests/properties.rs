//! Property tests: codec round trips, no panics on any input, and no bit flip survives
//! verification.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use mesh_core::cbor::{self, DecodeLimits};
use mesh_core::{
    Artifact, CapabilityAdvertisement, Family, KeyFingerprint, NodeAdvertisement, NodeId,
    NodeIdentityRecord, NodeKeypair, PeerHandshake, PeerStatus, SignalMarker, SignalMarkerEnvelope,
    Timestamp,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just(0.5f64),
            Just(-0.0),
            Just(65504.0),
            Just(1.0e-7),
            Just(100000.0)
        ]
        .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn to_ciborium(v: &Value) -> ciborium::Value {
    match v {
        Value::Null => ciborium::Value::Null,
        Value::Bool(b) => ciborium::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                ciborium::Value::Integer(u.into())
            } else if let Some(i) = n.as_i64() {
                ciborium::Value::Integer(i.into())
            } else {
                ciborium::Value::Float(n.as_f64().unwrap())
            }
        }
        Value::String(s) => ciborium::Value::Text(s.clone()),
        Value::Array(a) => ciborium::Value::Array(a.iter().map(to_ciborium).collect()),
        Value::Object(m) => {
            let mut entries: Vec<(ciborium::Value, ciborium::Value)> = m
                .iter()
                .map(|(k, v)| (ciborium::Value::Text(k.clone()), to_ciborium(v)))
                .collect();
            entries.sort_by(|a, b| {
                let (ka, kb) = (a.0.as_text().unwrap(), b.0.as_text().unwrap());
                ka.len().cmp(&kb.len()).then(ka.cmp(kb))
            });
            ciborium::Value::Map(entries)
        }
    }
}

fn every_decoder(bytes: &[u8]) {
    let _ = cbor::decode(bytes);
    let _ = cbor::decode_top_map(bytes, DecodeLimits::default());
    let now = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
    let _ = NodeAdvertisement::verify_cbor(bytes, &now);
    let _ = PeerHandshake::verify_cbor(bytes, &now);
    let _ = CapabilityAdvertisement::verify_cbor(bytes, &now);
    let _ = SignalMarkerEnvelope::verify_cbor(bytes, &now);
    let _ = NodeIdentityRecord::from_cbor(bytes);
    let _ = SignalMarker::from_cbor(bytes);
    let _ = PeerStatus::from_cbor(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        for family in Family::ALL {
            if let Ok(v) = serde_json::from_str::<Value>(text) {
                let _ = family.verify_json(v, &now);
            }
        }
        let _ = NodeAdvertisement::from_json_str(text);
        let _ = NodeId::parse(text);
        let _ = KeyFingerprint::parse(text);
        let _ = Timestamp::parse(text);
        let _ = mesh_core::artifact::decode_signature(text);
    }
}

fn vector_advert_wire() -> Vec<u8> {
    let fixture =
        common::read_json("orbiplex-schemas/examples/vector-signed.node-advertisement.json");
    NodeAdvertisement::from_json(fixture).unwrap().to_cbor()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn encode_decode_round_trip(v in arb_json()) {
        let bytes = cbor::encode(&v);
        let back = cbor::decode_with(&bytes, DecodeLimits { max_bytes: 1 << 20, max_depth: 32, max_items: usize::MAX }).unwrap();
        prop_assert_eq!(&back, &v);
        // One value, one byte image.
        prop_assert_eq!(cbor::encode(&back), bytes.clone());
        // An independent CBOR implementation reads the same value, and its encoding of
        // the canonically ordered value is ours except for float widths (ciborium picks
        // widths its own way), so compare decoded values.
        let theirs: ciborium::Value = ciborium::from_reader(bytes.as_slice()).unwrap();
        prop_assert_eq!(theirs, to_ciborium(&v));
    }

    #[test]
    fn parsed_ids_print_back_to_their_input(
        key in any::<[u8; 32]>(),
        edit in any::<prop::sample::Index>(),
        ch in prop::sample::select(b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0OIl+/ ".to_vec()),
    ) {
        let text = NodeId::from_fingerprint(KeyFingerprint::from_bytes(key)).to_string();
        let parsed = NodeId::parse(&text).unwrap();
        prop_assert_eq!(parsed.fingerprint().as_bytes(), &key);
        // Any one-character edit either fails or yields an id that prints as the edit.
        let mut edited = text.clone().into_bytes();
        let at = edit.index(edited.len());
        edited[at] = ch;
        let edited = String::from_utf8(edited).unwrap();
        if let Ok(id) = NodeId::parse(&edited) {
            prop_assert_eq!(id.to_string(), edited);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        every_decoder(&bytes);
    }

    #[test]
    fn mutated_artifacts_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = vector_advert_wire();
        for (i, b) in edits {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        every_decoder(&bytes);
        let keep = cut.index(bytes.len());
        every_decoder(&bytes[..keep]);
    }

    #[test]
    fn typed_artifacts_round_trip_through_cbor(seq in any::<u64>(), port in 1u16..) {
        let key = NodeKeypair::generate();
        let now = Timestamp::parse("2026-03-23T18:08:00Z").unwrap();
        let doc = json!({
            "schema/v": 1, "advertisement/id": "adv:x", "node/id": key.node_id().to_string(),
            "sequence/no": seq, "advertised-at": now.as_str(),
            "expires-at": now.plus_secs(600).as_str(), "key/alg": "ed25519",
            "key/public": key.fingerprint().to_string(),
            "endpoints": [{"endpoint/url": format!("multiaddr:/ip4/127.0.0.1/tcp/{port}"),
                "endpoint/transport": "tcp", "endpoint/role": "listener", "endpoint/priority": 0}],
            "transports/supported": ["tcp"], "x-unknown": {"kept": [1.5, null]},
        });
        let ad = NodeAdvertisement::sign(doc.as_object().unwrap().clone(), &key).unwrap();
        let back = NodeAdvertisement::verify_cbor(&ad.to_cbor(), &now).unwrap();
        prop_assert_eq!(back.to_json(), ad.to_json());
        prop_assert_eq!(back.sequence_no(), seq);
    }
}

/// Flips every single bit of a signed artifact's wire form and checks that no flipped
/// image verifies.
fn assert_no_flip_verifies<A: Artifact>(wire: &[u8], now: &Timestamp) {
    A::verify_cbor(wire, now).unwrap();
    for bit in 0..wire.len() * 8 {
        let mut b = wire.to_vec();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(
            A::verify_cbor(&b, now).is_err(),
            "{}: flipping bit {bit} still verifies",
            A::FAMILY
        );
    }
}

#[test]
fn every_bit_flip_of_the_advertisement_vector_fails() {
    let now = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
    assert_no_flip_verifies::<NodeAdvertisement>(&vector_advert_wire(), &now);
}

#[test]
fn every_bit_flip_of_the_json_form_fails() {
    let fixture =
        common::read_json("orbiplex-schemas/examples/vector-signed.node-advertisement.json");
    let text = serde_json::to_string(&fixture).unwrap();
    let now = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
    NodeAdvertisement::verify_json(fixture, &now).unwrap();
    let mut survivors = Vec::new();
    for bit in 0..text.len() * 8 {
        let mut b = text.clone().into_bytes();
        b[bit / 8] ^= 1 << (bit % 8);
        let Ok(s) = String::from_utf8(b) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&s) else {
            continue;
        };
        if NodeAdvertisement::verify_json(v, &now).is_ok() {
            survivors.push(bit);
        }
    }
    assert!(
        survivors.is_empty(),
        "bits {survivors:?} flip without breaking verification"
    );
}

#[test]
fn every_bit_flip_of_other_signed_families_fails() {
    let key = NodeKeypair::generate();
    let now = Timestamp::parse("2026-03-30T14:00:10Z").unwrap();
    let caps =
        common::read_json("orbiplex-schemas/examples/base-node.capability-advertisement.json");
    let mut caps: Map<String, Value> = caps.as_object().unwrap().clone();
    caps.insert("node/id".into(), key.node_id().to_string().into());
    caps.insert("published-at".into(), "2026-03-30T14:00:00Z".into());
    let caps = CapabilityAdvertisement::sign(caps, &key).unwrap();
    assert_no_flip_verifies::<CapabilityAdvertisement>(&caps.to_cbor(), &now);

    let env = common::read_json(
        "orbiplex-schemas/examples/participant-broadcast.signal-marker-envelope.json",
    );
    let mut env: Map<String, Value> = env.as_object().unwrap().clone();
    env.insert(
        "sender/participant-id".into(),
        key.participant_id().to_string().into(),
    );
    let env = SignalMarkerEnvelope::sign(env, &key).unwrap();
    assert_no_flip_verifies::<SignalMarkerEnvelope>(&env.to_cbor(), &now);
}

#[test]
fn handshake_flips_outside_framing_fields_fail() {
    let fixture = common::read_json("orbiplex-schemas/examples/bootstrap.ack.peer-handshake.json");
    let hs = PeerHandshake::from_json(fixture).unwrap();
    let now = Timestamp::parse("2026-03-23T18:10:03Z").unwrap();
    let wire = hs.to_cbor();
    let (_, spans) = cbor::decode_top_map(&wire, DecodeLimits::default()).unwrap();
    let framing: Vec<std::ops::Range<usize>> = spans
        .iter()
        .filter(|s| {
            let k = &wire[s.key.clone()][1..];
            k == b"protocol/version" || k == b"transport/profile"
        })
        .map(|s| s.entry.clone())
        .collect();
    assert_eq!(framing.len(), 2);
    for bit in 0..wire.len() * 8 {
        if framing.iter().any(|r| r.contains(&(bit / 8))) {
            continue;
        }
        let mut b = wire.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(PeerHandshake::verify_cbor(&b, &now).is_err(), "bit {bit}");
    }
}

#[test]
fn non_deterministic_re_encoding_of_a_valid_artifact_is_refused() {
    // The same advertisement with `sequence/no` 17 written as a two-byte integer head.
    let wire = vector_advert_wire();
    let needle = [&b"ksequence/no"[..], &[0x11]].concat();
    let at = wire
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut long = wire[..at + needle.len() - 1].to_vec();
    long.extend_from_slice(&[0x18, 0x11]);
    long.extend_from_slice(&wire[at + needle.len()..]);
    let now = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
    let err = NodeAdvertisement::verify_cbor(&long, &now).unwrap_err();
    assert_eq!(err.code, mesh_core::ErrorCode::ProtoInvalid, "{err}");
}

/// What is taken from JSON reads back from its CBOR: nesting beyond the CBOR decoder's
/// depth is refused on the JSON side too (a seed directory took such advertisements
/// over HTTP, stored their CBOR and could never read them back).
#[test]
fn json_nesting_is_held_to_the_cbor_decoder_s_depth() {
    let key = NodeKeypair::generate();
    let now = Timestamp::parse("2026-03-23T18:08:00Z").unwrap();
    let deep = |k: usize| (0..k).fold(json!(1), |v, _| json!([v]));
    let doc = |k: usize| {
        json!({
            "schema/v": 1, "advertisement/id": "adv:x", "node/id": key.node_id().to_string(),
            "sequence/no": 1, "advertised-at": now.as_str(),
            "expires-at": now.plus_secs(600).as_str(), "key/alg": "ed25519",
            "key/public": key.fingerprint().to_string(),
            "endpoints": [{"endpoint/url": "multiaddr:/ip4/127.0.0.1/tcp/4001",
                "endpoint/transport": "tcp", "endpoint/role": "listener", "endpoint/priority": 0}],
            "transports/supported": ["tcp"], "x-deep": deep(k),
        })
        .as_object()
        .unwrap()
        .clone()
    };
    // The deepest the decoder takes (the top-level map at depth 0): its wire form reads
    // back.
    let ad = NodeAdvertisement::sign(doc(cbor::DEFAULT_MAX_DEPTH - 1), &key).unwrap();
    NodeAdvertisement::verify_json(ad.to_json(), &now).unwrap();
    NodeAdvertisement::verify_cbor(&ad.to_cbor(), &now).unwrap();
    // One deeper, and the audit's 41: not signed, not taken from JSON (before the
    // signature is looked at).
    for k in [cbor::DEFAULT_MAX_DEPTH, 41] {
        let err = NodeAdvertisement::sign(doc(k), &key).unwrap_err();
        assert_eq!(err.code, mesh_core::ErrorCode::ProtoInvalid, "{err}");
        let mut forged = ad.to_json();
        forged["x-deep"] = deep(k);
        let err = NodeAdvertisement::verify_json(forged, &now).unwrap_err();
        assert!(err.to_string().contains("nesting deeper"), "{err}");
    }
}

/// A unique string array of a peer's is checked whole however long it is: 17,000
/// distinct names (about as many as an artifact holds) pass the duplicate check (the
/// advertisement is then refused for want of `core/messaging`), and a name repeated far
/// down is found. (Checked pairwise, such an array took 0.4 s before any signature:
/// see BENCHMARKS, *Signing and verification*.)
#[test]
fn long_unique_arrays_are_checked_whole() {
    let alpha: Vec<char> = ('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain(['_', '-'])
        .collect();
    let name = |mut x: usize| {
        let mut s = String::new();
        loop {
            s.push(alpha[x % 64]);
            x /= 64;
            if x == 0 {
                return s;
            }
        }
    };
    let names: Vec<Value> = (0..17_000).map(|i| name(i).into()).collect();
    let doc = json!({"schema/v": 1, "capabilities/core": names});
    assert!(cbor::encode(&doc).len() <= mesh_core::MAX_ARTIFACT_BYTES);
    let e = CapabilityAdvertisement::from_json(doc).unwrap_err();
    assert_eq!(e.code, mesh_core::ErrorCode::ProtoCapMissing, "{e}");
    let mut repeated: Vec<Value> = (0..40).map(|i| name(i).into()).collect();
    repeated.push(name(3).into());
    let doc = json!({"schema/v": 1, "capabilities/core": repeated});
    let e = CapabilityAdvertisement::from_json(doc).unwrap_err();
    assert!(e.detail.contains("appears twice"), "{e}");
}
