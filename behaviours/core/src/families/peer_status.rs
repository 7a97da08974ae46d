//! `peer-status.v1`: the operator-facing read model of one peer (unsigned, closed
//! schema: unknown fields are refused).

use serde_json::{Map, Value};

use crate::artifact::Artifact;
use crate::artifact::fields::Fields;
use crate::error::MeshResult;
use crate::id::KeyFingerprint;
use crate::time::Timestamp;

const FIELDS: &[&str] = &[
    "schema",
    "node_id",
    "display_name",
    "selected_endpoint_url",
    "temperature",
    "lifecycle",
    "quality_status",
    "score",
    "supported_capabilities",
    "missing_capabilities",
    "capability_missing_count",
    "failure_count",
    "replay_incidents",
    "cooldown_remaining_ms",
    "blocked_remaining_ms",
    "last_failure_reason",
];

/// A valid `peer-status.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    doc: Map<String, Value>,
}

fn nullable_str(f: &Fields<'_>, doc: &Map<String, Value>, key: &str, max: usize) -> MeshResult<()> {
    match doc.get(key) {
        Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Ok(()),
        Some(_) => Err(f.err(key, &format!("must be null or a string of 1..={max} chars"))),
        None => Err(f.err(key, "required field is missing")),
    }
}

fn nullable_u64(f: &Fields<'_>, doc: &Map<String, Value>, key: &str) -> MeshResult<()> {
    match doc.get(key) {
        Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some() => Ok(()),
        Some(_) => Err(f.err(key, "must be null or a non-negative integer")),
        None => Err(f.err(key, "required field is missing")),
    }
}

impl Artifact for PeerStatus {
    const FAMILY: &'static str = "peer-status.v1";
    const UNSIGNED_FIELDS: &'static [&'static str] = &[];

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        if let Some(k) = f.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(f.err(k, "unknown field (the schema is closed)"));
        }
        f.constant("schema", Self::FAMILY)?;
        let node = f.str("node_id")?;
        if !node.starts_with("node:did:key:z") || node.len() <= 14 || node.chars().count() > 512 {
            return Err(f.err(
                "node_id",
                "must match ^node:did:key:z.+$ (at most 512 chars)",
            ));
        }
        nullable_str(&f, &doc, "display_name", 256)?;
        nullable_str(&f, &doc, "selected_endpoint_url", 2048)?;
        f.one_of("temperature", &["cold", "warm", "hot", "blocked"])?;
        f.one_of(
            "lifecycle",
            &["idle", "dialing", "connected", "cooldown", "blocked"],
        )?;
        f.one_of(
            "quality_status",
            &[
                "healthy",
                "degraded",
                "capability_limited",
                "cooling_down",
                "benchlisted",
                "blocked",
            ],
        )?;
        if f.u64("score")? > 100 {
            return Err(f.err("score", "must be at most 100"));
        }
        let caps =
            |s: &str| (s.is_empty() || s.chars().count() > 256).then(|| "1..=256 chars".to_owned());
        f.strings("supported_capabilities", 0, false, caps)?;
        f.strings("missing_capabilities", 0, false, caps)?;
        f.u64("capability_missing_count")?;
        f.u64("failure_count")?;
        f.u64("replay_incidents")?;
        nullable_u64(&f, &doc, "cooldown_remaining_ms")?;
        nullable_u64(&f, &doc, "blocked_remaining_ms")?;
        nullable_str(&f, &doc, "last_failure_reason", 2048)?;
        Ok(PeerStatus { doc })
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
