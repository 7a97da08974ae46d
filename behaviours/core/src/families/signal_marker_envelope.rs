//! `signal-marker-envelope.v1`: the participant-signed first application message.
//!
//! The Orbiplex schema has no recipient field but allows additional properties, so
//! libmesh binds an envelope to the node it is for with an optional, signed
//! `recipient/node-id` (the name `peer-handshake.v1` uses). Envelopes without it (the
//! schema's broadcast example) stay valid artifacts; whether a receiver takes them is
//! the receiver's policy (`mesh-session`'s marker behaviour refuses them by default).

use serde_json::{Map, Value};

use crate::artifact::fields::Fields;
use crate::artifact::{Artifact, not_in_future};
use crate::error::MeshResult;
use crate::id::{KeyFingerprint, NodeId, ParticipantId};
use crate::time::Timestamp;

/// A structurally valid `signal-marker-envelope.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalMarkerEnvelope {
    doc: Map<String, Value>,
    sender: ParticipantId,
    created_at: Timestamp,
    recipient: Option<NodeId>,
}

impl SignalMarkerEnvelope {
    /// `sender/participant-id`, the signer.
    pub fn sender(&self) -> ParticipantId {
        self.sender
    }

    /// `created-at`.
    pub fn created_at(&self) -> &Timestamp {
        &self.created_at
    }

    /// `recipient/node-id`: the node the envelope is for (signed), when it names one.
    pub fn recipient(&self) -> Option<NodeId> {
        self.recipient
    }

    /// `message/id`.
    pub fn message_id(&self) -> &str {
        self.doc
            .get("message/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `marker/ref`.
    pub fn marker_ref(&self) -> &str {
        self.doc
            .get("marker/ref")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

impl Artifact for SignalMarkerEnvelope {
    const FAMILY: &'static str = "signal-marker-envelope.v1";

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        f.str("message/id")?;
        f.str("protocol/version")?;
        f.constant("message/kind", Self::FAMILY)?;
        let sender = f.participant_id("sender/participant-id")?;
        let created_at = f.timestamp("created-at")?;
        f.str("marker/ref")?;
        let recipient = f.opt_node_id("recipient/node-id")?;
        f.signature_shape(true)?;
        f.opt_object("policy_annotations")?;
        Ok(SignalMarkerEnvelope {
            doc,
            sender,
            created_at,
            recipient,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.sender.fingerprint())
    }

    /// `created-at` more than 30 s ahead of `now` is `E_PROTO_INVALID`.
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        not_in_future(Self::FAMILY, "created-at", &self.created_at, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKeypair;
    use crate::error::ErrorCode;
    use serde_json::json;

    fn doc(recipient: Option<&str>) -> Map<String, Value> {
        let key = NodeKeypair::generate();
        let mut v = json!({
            "schema/v": 1,
            "message/id": "msg:1",
            "protocol/version": "0.1.0",
            "message/kind": "signal-marker-envelope.v1",
            "sender/participant-id": key.participant_id().to_string(),
            "created-at": "2026-03-30T14:00:00Z",
            "marker/ref": "signal-marker:1",
        });
        if let Some(r) = recipient {
            v["recipient/node-id"] = r.into();
        }
        let Value::Object(m) = v else { unreachable!() };
        SignalMarkerEnvelope::sign(m, &key).unwrap().into_map()
    }

    #[test]
    fn the_recipient_is_optional_signed_and_parsed_strictly() {
        let to = NodeKeypair::generate().node_id();
        let env = SignalMarkerEnvelope::from_map(doc(Some(&to.to_string()))).unwrap();
        assert_eq!(env.recipient(), Some(to));
        env.verify_signature().unwrap();
        // Signed: another recipient breaks the signature.
        let mut moved = env.clone().into_map();
        let other = NodeKeypair::generate().node_id();
        moved.insert("recipient/node-id".into(), other.to_string().into());
        let moved = SignalMarkerEnvelope::from_map(moved).unwrap();
        assert_eq!(
            moved.verify_signature().unwrap_err().code,
            ErrorCode::SigInvalid
        );
        // Absent: still a valid artifact, with no recipient.
        let bare = SignalMarkerEnvelope::from_map(doc(None)).unwrap();
        assert_eq!(bare.recipient(), None);
        // Not a node id: E_PROTO_INVALID.
        let mut bad = doc(None);
        bad.insert("recipient/node-id".into(), "node:did:key:nope".into());
        let err = SignalMarkerEnvelope::from_map(bad).unwrap_err();
        assert_eq!(err.code, ErrorCode::ProtoInvalid);
    }
}
