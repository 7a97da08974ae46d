//! `signal-marker.v1`: the visible marker of how a user-facing artifact was shaped
//! (unsigned; it travels by reference inside a signed envelope).

use serde_json::{Map, Value};

use crate::artifact::Artifact;
use crate::artifact::fields::{Fields, enum_check};
use crate::error::MeshResult;
use crate::id::KeyFingerprint;
use crate::time::Timestamp;

const OPERATIONS: &[&str] = &[
    "structure_extraction",
    "summarization",
    "translation",
    "tone_shift",
    "formality_shift",
    "style_polish",
    "safety_redaction",
    "privacy_redaction",
];

/// A structurally valid `signal-marker.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalMarker {
    doc: Map<String, Value>,
    mode: String,
}

impl SignalMarker {
    /// `mode`: raw, structured, transformed or redacted.
    pub fn mode(&self) -> &str {
        &self.mode
    }
}

impl Artifact for SignalMarker {
    const FAMILY: &'static str = "signal-marker.v1";
    const UNSIGNED_FIELDS: &'static [&'static str] = &[];

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        f.str("marker_id")?;
        f.str("applies_to_ref")?;
        let mode = f
            .one_of("mode", &["raw", "structured", "transformed", "redacted"])?
            .to_owned();
        f.one_of("actor", &["ai", "human", "hybrid"])?;
        let requested_by = f.opt_one_of(
            "requested_by",
            &["user", "user_policy", "safety_policy", "exception"],
        )?;
        let basis_ref = f.opt_str("basis_ref")?;
        let operations = f.opt_strings("operations", true, enum_check(OPERATIONS))?;
        let visible = f.bool("visible_to_user")?;
        f.opt_str("transform_ref")?;
        f.opt_timestamp("created_at")?;
        f.opt_object("policy_annotations")?;
        if mode == "raw" {
            if !operations.is_empty() {
                return Err(f.err("operations", "a raw marker carries no operations"));
            }
        } else {
            if requested_by.is_none() {
                return Err(f.err("requested_by", "required when mode is not raw"));
            }
            if basis_ref.is_none() {
                return Err(f.err("basis_ref", "required when mode is not raw"));
            }
            if operations.is_empty() {
                return Err(f.err("operations", "at least one operation when mode is not raw"));
            }
            if !visible {
                return Err(f.err("visible_to_user", "must be true when mode is not raw"));
            }
        }
        Ok(SignalMarker { doc, mode })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        None
    }

    /// No time rules.
    fn validate(&self, _now: &Timestamp) -> MeshResult<()> {
        Ok(())
    }
}
