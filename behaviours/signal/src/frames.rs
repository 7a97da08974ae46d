//! Building signed `signal-frame.v1` frames.

use mesh_core::{Artifact, MeshResult, NodeId, NodeKeypair, SignalFrame, Timestamp};
use serde_json::{Map, Value, json};

/// How long the frames built here are valid, seconds.
pub const FRAME_TTL_SECS: i64 = 60;

/// A random id with `prefix` (`sf:` for frames, `corr:` for correlations).
pub fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// Signs a frame of `kind` from `key`'s node to `to` in correlation `correlation`,
/// with a fresh frame id, valid for [`FRAME_TTL_SECS`].
pub fn frame(
    key: &NodeKeypair,
    to: NodeId,
    kind: &str,
    correlation: &str,
    payload: Map<String, Value>,
    now: &Timestamp,
) -> MeshResult<SignalFrame> {
    let doc = json!({
        "schema/v": 1,
        "message/kind": "signal-frame.v1",
        "frame/id": random_id("sf:"),
        "kind": kind,
        "from": key.node_id().to_string(),
        "to": to.to_string(),
        "correlation/id": correlation,
        "created-at": now.as_str(),
        "expires-at": now.plus_secs(FRAME_TTL_SECS).as_str(),
        "payload": payload,
    });
    let Value::Object(doc) = doc else {
        return Err(mesh_core::MeshError::invalid(
            "internal: frame is not an object",
        ));
    };
    SignalFrame::sign(doc, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_verify_and_ids_differ() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let now = Timestamp::now();
        let mut p = Map::new();
        p.insert("purpose".into(), json!("connect"));
        let f = frame(
            &a,
            b.node_id(),
            "connect_request",
            "corr:1",
            p.clone(),
            &now,
        )
        .unwrap();
        let g = frame(&a, b.node_id(), "connect_request", "corr:1", p, &now).unwrap();
        assert_ne!(f.frame_id(), g.frame_id());
        let back = SignalFrame::verify_cbor(&f.to_cbor(), &now).unwrap();
        assert_eq!(back.kind(), "connect_request");
        assert_eq!(back.payload()["purpose"], "connect");
        assert!(frame(&a, a.node_id(), "connect_accept", "c", Map::new(), &now).is_err());
    }
}
