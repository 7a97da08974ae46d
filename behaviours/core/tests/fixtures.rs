//! Every fixture under `shared/orbiplex-schemas/examples/` parses and validates as its
//! family; every fixture under `invalid/` is rejected with its code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use mesh_core::{Artifact, ErrorCode, Family, Timestamp};
use serde_json::Value;

fn family_of(file_name: &str) -> Family {
    // `<label>.<family>.json`, family without `.v1`.
    let stem = file_name.strip_suffix(".json").unwrap();
    let family = stem.rsplit('.').next().unwrap();
    Family::from_name(family).unwrap_or_else(|| panic!("no family for {file_name}"))
}

/// A `now` inside every fixture's validity window.
fn fixture_now(family: Family) -> Timestamp {
    Timestamp::parse(match family {
        Family::PeerHandshake => "2026-03-23T18:10:01Z",
        Family::SignalMarkerEnvelope => "2026-03-30T14:00:10Z",
        _ => "2026-03-23T18:12:00Z",
    })
    .unwrap()
}

fn fixtures(sub: &str) -> Vec<(String, Value)> {
    let dir = common::shared_dir()
        .join("orbiplex-schemas/examples")
        .join(sub);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn every_valid_fixture_validates_as_its_family() {
    let all = fixtures("");
    assert!(
        all.len() >= 9,
        "expected the shared fixtures, found {}",
        all.len()
    );
    for (name, value) in all {
        let family = family_of(&name);
        let now = fixture_now(family);
        let doc = family
            .validate_json(value.clone(), &now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // Unknown fields kept: the parsed document is the input, exactly.
        assert_eq!(Value::Object(doc), value, "{name}");
        // Signed fixtures either verify (the vectors) or carry placeholder signatures,
        // which are E_PROTO_INVALID and never a crash.
        if family.is_signed() {
            match family.verify_json(value.clone(), &now) {
                Ok(_) => {}
                Err(e) => {
                    let placeholder = value["signature"]["value"]
                        .as_str()
                        .unwrap()
                        .starts_with("base64url:");
                    assert!(placeholder, "{name}: {e}");
                    assert_eq!(e.code, ErrorCode::ProtoInvalid, "{name}: {e}");
                }
            }
        }
    }
}

#[test]
fn every_invalid_fixture_is_rejected_with_its_code() {
    let expected = [
        (
            "ack-without-reference.peer-handshake.json",
            ErrorCode::ProtoInvalid,
        ),
        ("inline-secret.node-identity.json", ErrorCode::ProtoInvalid),
        (
            "missing-storage-ref.node-identity.json",
            ErrorCode::ProtoInvalid,
        ),
        (
            "no-core-caps.capability-advertisement.json",
            ErrorCode::ProtoCapMissing,
        ),
        (
            "no-endpoints.node-advertisement.json",
            ErrorCode::ProtoInvalid,
        ),
        (
            "raw-with-operations.signal-marker.json",
            ErrorCode::ProtoInvalid,
        ),
        (
            "wrong-kind.signal-marker-envelope.json",
            ErrorCode::ProtoInvalid,
        ),
    ];
    let all = fixtures("invalid");
    assert_eq!(
        all.len(),
        expected.len(),
        "a new invalid fixture needs an expected code here"
    );
    for (name, value) in all {
        let code = expected
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no expected code for {name}"))
            .1;
        let family = family_of(&name);
        let err = family
            .validate_json(value, &fixture_now(family))
            .expect_err(&name);
        assert_eq!(err.code, code, "{name}: {err}");
    }
}

#[test]
fn inline_secret_is_named_as_such() {
    let v = common::read_json("orbiplex-schemas/examples/invalid/inline-secret.node-identity.json");
    let err = mesh_core::NodeIdentityRecord::from_json(v).unwrap_err();
    assert!(err.detail.contains("private_key_base64"), "{err}");
}

#[test]
fn schema_version_other_than_one_is_a_version_mismatch() {
    for (name, mut value) in fixtures("") {
        let family = family_of(&name);
        if value.get("schema/v").is_none() {
            continue; // peer-status uses `schema`
        }
        value["schema/v"] = 2.into();
        let err = family
            .validate_json(value, &fixture_now(family))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ProtoVersion, "{name}");
    }
}

#[test]
fn libmesh_transports_are_accepted_and_others_refused() {
    let base = common::read_json("orbiplex-schemas/examples/seed-wss.node-advertisement.json");
    let now = fixture_now(Family::NodeAdvertisement);
    for t in ["wss", "ws", "tcp", "quic"] {
        let mut v = base.clone();
        v["transports/supported"] = serde_json::json!([t]);
        Family::NodeAdvertisement.validate_json(v, &now).unwrap();
    }
    let mut v = base.clone();
    v["transports/supported"] = serde_json::json!(["webrtc"]);
    assert_eq!(
        Family::NodeAdvertisement
            .validate_json(v, &now)
            .unwrap_err()
            .code,
        ErrorCode::ProtoInvalid
    );
}

#[test]
fn free_form_advertisement_fields_are_capped() {
    use mesh_core::{MAX_ADVERTISEMENT_ID, MAX_POLICY_ANNOTATIONS_BYTES};
    let base = common::read_json("orbiplex-schemas/examples/seed-wss.node-advertisement.json");
    let now = fixture_now(Family::NodeAdvertisement);
    let refused = |v: Value, field: &str| {
        let err = Family::NodeAdvertisement
            .validate_json(v, &now)
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ProtoInvalid, "{err}");
        assert!(err.to_string().contains(field), "{err}");
    };
    let mut v = base.clone();
    v["advertisement/id"] = "a".repeat(MAX_ADVERTISEMENT_ID).into();
    Family::NodeAdvertisement.validate_json(v, &now).unwrap();
    let mut v = base.clone();
    v["advertisement/id"] = "a".repeat(MAX_ADVERTISEMENT_ID + 1).into();
    refused(v, "advertisement/id");
    let mut v = base.clone();
    v["policy_annotations"] = serde_json::json!({"note": "x".repeat(MAX_POLICY_ANNOTATIONS_BYTES)});
    refused(v, "policy_annotations");
    let mut v = base.clone();
    v["policy_annotations"] = serde_json::json!({"tier": "gold"});
    Family::NodeAdvertisement.validate_json(v, &now).unwrap();
}
