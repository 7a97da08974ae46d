//! `node-withdrawal.v1`: a node's signed statement that its advertisement is gone. Its
//! `sequence/no` supersedes the last advertisement, so the withdrawal also blocks replays
//! of every older advertisement.

use mesh_core::artifact::{Artifact, not_in_future};
use mesh_core::{KeyFingerprint, MeshError, MeshResult, NodeId, NodeKeypair, Timestamp};
use serde_json::{Map, Value};

/// A structurally valid `node-withdrawal.v1`:
/// `{"schema/v": 1, "withdrawal/id", "node/id", "key/alg", "key/public", "sequence/no",
/// "withdrawn-at", "signature"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeWithdrawal {
    doc: Map<String, Value>,
    node_id: NodeId,
    sequence_no: u64,
    withdrawn_at: Timestamp,
}

impl NodeWithdrawal {
    /// Signs a withdrawal of `key`'s advertisement at `sequence_no`.
    pub fn create(key: &NodeKeypair, sequence_no: u64, now: &Timestamp) -> MeshResult<Self> {
        let mut doc = Map::new();
        doc.insert("schema/v".into(), 1.into());
        doc.insert(
            "withdrawal/id".into(),
            format!("wdr:{}:{sequence_no}", key.fingerprint()).into(),
        );
        doc.insert("node/id".into(), key.node_id().to_string().into());
        doc.insert("key/alg".into(), "ed25519".into());
        doc.insert("key/public".into(), key.fingerprint().to_string().into());
        doc.insert("sequence/no".into(), sequence_no.into());
        doc.insert("withdrawn-at".into(), now.as_str().into());
        Self::sign(doc, key)
    }

    /// The withdrawn node.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The sequence number; it must exceed the last advertisement's.
    pub fn sequence_no(&self) -> u64 {
        self.sequence_no
    }

    /// When the node withdrew.
    pub fn withdrawn_at(&self) -> &Timestamp {
        &self.withdrawn_at
    }
}

fn field<'a>(doc: &'a Map<String, Value>, key: &str) -> MeshResult<&'a Value> {
    doc.get(key).ok_or_else(|| {
        MeshError::invalid(format!(
            "node-withdrawal.v1: field `{key}`: required field is missing"
        ))
    })
}

fn text<'a>(doc: &'a Map<String, Value>, key: &str) -> MeshResult<&'a str> {
    match field(doc, key)? {
        Value::String(s) if !s.is_empty() => Ok(s),
        _ => Err(MeshError::invalid(format!(
            "node-withdrawal.v1: field `{key}`: must be a non-empty string"
        ))),
    }
}

impl Artifact for NodeWithdrawal {
    const FAMILY: &'static str = "node-withdrawal.v1";

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        match field(&doc, "schema/v")?.as_u64() {
            Some(1) => {}
            Some(v) => {
                return Err(MeshError::new(
                    mesh_core::ErrorCode::ProtoVersion,
                    format!("node-withdrawal.v1: schema/v {v} is not supported"),
                ));
            }
            None => return Err(MeshError::invalid("node-withdrawal.v1: schema/v must be 1")),
        }
        text(&doc, "withdrawal/id")?;
        let node_id = NodeId::parse(text(&doc, "node/id")?)
            .map_err(|e| MeshError::from(e).context("node-withdrawal.v1: node/id"))?;
        if text(&doc, "key/alg")? != "ed25519" {
            return Err(MeshError::invalid(
                "node-withdrawal.v1: key/alg must be ed25519",
            ));
        }
        if text(&doc, "key/public")? != node_id.fingerprint().to_string() {
            return Err(MeshError::invalid(
                "node-withdrawal.v1: key/public does not match node/id",
            ));
        }
        let sequence_no = field(&doc, "sequence/no")?.as_u64().ok_or_else(|| {
            MeshError::invalid("node-withdrawal.v1: sequence/no must be a non-negative integer")
        })?;
        let withdrawn_at = Timestamp::parse(text(&doc, "withdrawn-at")?)
            .map_err(|e| e.context("node-withdrawal.v1: withdrawn-at"))?;
        let sig = field(&doc, "signature")?;
        if sig.get("alg").and_then(Value::as_str) != Some("ed25519")
            || sig.get("value").and_then(Value::as_str).is_none()
        {
            return Err(MeshError::invalid(
                "node-withdrawal.v1: signature must be {alg: ed25519, value}",
            ));
        }
        Ok(NodeWithdrawal {
            doc,
            node_id,
            sequence_no,
            withdrawn_at,
        })
    }

    mesh_core::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.node_id.fingerprint())
    }

    /// `withdrawn-at` more than 30 s ahead of `now` is `E_PROTO_INVALID`.
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        not_in_future(Self::FAMILY, "withdrawn-at", &self.withdrawn_at, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::ErrorCode;

    #[test]
    fn sign_verify_and_tamper() {
        let key = NodeKeypair::generate();
        let now = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
        let w = NodeWithdrawal::create(&key, 18, &now).unwrap();
        let back = NodeWithdrawal::verify_cbor(&w.to_cbor(), &now).unwrap();
        assert_eq!(back.sequence_no(), 18);
        let mut json = w.to_json();
        json["sequence/no"] = 19.into();
        assert_eq!(
            NodeWithdrawal::verify_json(json, &now).unwrap_err().code,
            ErrorCode::SigInvalid
        );
        let other = NodeKeypair::generate();
        let mut json = w.to_json();
        json["node/id"] = other.node_id().to_string().into();
        assert_eq!(
            NodeWithdrawal::verify_json(json, &now).unwrap_err().code,
            ErrorCode::ProtoInvalid
        );
    }
}
