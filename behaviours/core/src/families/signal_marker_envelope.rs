//! `signal-marker-envelope.v1`: the participant-signed first application message.

use serde_json::{Map, Value};

use crate::artifact::fields::Fields;
use crate::artifact::{Artifact, not_in_future};
use crate::error::MeshResult;
use crate::id::{KeyFingerprint, ParticipantId};
use crate::time::Timestamp;

/// A structurally valid `signal-marker-envelope.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalMarkerEnvelope {
    doc: Map<String, Value>,
    sender: ParticipantId,
    created_at: Timestamp,
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
        f.signature_shape(true)?;
        f.opt_object("policy_annotations")?;
        Ok(SignalMarkerEnvelope {
            doc,
            sender,
            created_at,
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
