//! `federation-endorsement.v1` (libmesh's own family; Orbiplex has none for federation
//! membership): a key the relay operator trusts says that a node belongs to a
//! federation, until a given time. The relay's `federation` policy admits a node only
//! with such an endorsement, signed by one of the endorser keys it is configured with; a
//! node's own advertisement claiming a `federation/id` proves nothing (anyone can sign
//! that about themselves).
//!
//! ```json
//! {
//!   "schema/v": 1,
//!   "message/kind": "federation-endorsement.v1",
//!   "federation/id": "fed:example",
//!   "node/id": "node:did:key:z6Mk…",          // the member
//!   "endorser/node-id": "node:did:key:z6Mk…", // who signed
//!   "issued-at": "2026-11-22T12:00:00Z",
//!   "expires-at": "2027-11-22T12:00:00Z",
//!   "signature": {"alg": "ed25519", "value": "…"}
//! }
//! ```
//!
//! Signed like every libmesh artifact (deterministic CBOR of the document without
//! `signature`, under the family name as domain) by the `endorser/node-id` key. Rules:
//! `federation/id` 1–128 bytes; `expires-at` after `issued-at` and at most
//! [`MAX_ENDORSEMENT_SECS`] later; `issued-at` at most 30 s in the future
//! (`E_PROTO_INVALID`); past `expires-at` is `E_ADV_EXPIRED`. Unknown fields are kept
//! and signed. An admission request carries up to [`MAX_ENDORSEMENTS`] of them in its
//! (signed) `federation/endorsements` array.

use mesh_core::{
    Artifact, ErrorCode, KeyFingerprint, MeshError, MeshResult, NodeId, NodeKeypair, Timestamp,
};
use serde_json::{Map, Value, json};

/// Longest accepted endorsement lifetime: one year and a day.
pub const MAX_ENDORSEMENT_SECS: i64 = 366 * 24 * 3600;
/// Longest `federation/id`, bytes.
pub const MAX_FEDERATION_ID_BYTES: usize = 128;
/// Endorsements one admission request may carry.
pub const MAX_ENDORSEMENTS: usize = 4;
/// The request field that carries them.
pub const REQUEST_FIELD: &str = "federation/endorsements";

/// A structurally valid `federation-endorsement.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationEndorsement {
    doc: Map<String, Value>,
    federation: String,
    node: NodeId,
    endorser: NodeId,
    issued_at: Timestamp,
    expires_at: Timestamp,
}

impl FederationEndorsement {
    /// Signs an endorsement of `node` as a member of `federation` by `endorser`'s key,
    /// valid from `now` for `ttl_secs`.
    pub fn issue(
        endorser: &NodeKeypair,
        federation: &str,
        node: NodeId,
        now: &Timestamp,
        ttl_secs: i64,
    ) -> MeshResult<Self> {
        let doc = json!({
            "schema/v": 1,
            "message/kind": Self::FAMILY,
            "federation/id": federation,
            "node/id": node.to_string(),
            "endorser/node-id": endorser.node_id().to_string(),
            "issued-at": now.as_str(),
            "expires-at": now.plus_secs(ttl_secs).as_str(),
        });
        match doc {
            Value::Object(m) => Self::sign(m, endorser),
            _ => Err(MeshError::invalid("internal: endorsement is not an object")),
        }
    }

    /// `federation/id`.
    pub fn federation_id(&self) -> &str {
        &self.federation
    }

    /// `node/id`: the member.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// `endorser/node-id`: who signed.
    pub fn endorser(&self) -> NodeId {
        self.endorser
    }

    /// `expires-at`.
    pub fn expires_at(&self) -> &Timestamp {
        &self.expires_at
    }
}

fn invalid(field: &str, why: &str) -> MeshError {
    MeshError::invalid(format!(
        "{}: `{field}` {why}",
        FederationEndorsement::FAMILY
    ))
}

fn text<'a>(doc: &'a Map<String, Value>, field: &str) -> MeshResult<&'a str> {
    doc.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(field, "must be a string"))
}

fn node_id(doc: &Map<String, Value>, field: &str) -> MeshResult<NodeId> {
    NodeId::parse(text(doc, field)?).map_err(|e| invalid(field, &format!("is not a node id: {e}")))
}

fn timestamp(doc: &Map<String, Value>, field: &str) -> MeshResult<Timestamp> {
    Timestamp::parse(text(doc, field)?).map_err(|e| e.context(FederationEndorsement::FAMILY))
}

impl Artifact for FederationEndorsement {
    const FAMILY: &'static str = "federation-endorsement.v1";

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        match doc.get("schema/v").and_then(Value::as_u64) {
            Some(1) => {}
            Some(v) => {
                return Err(MeshError::new(
                    ErrorCode::ProtoVersion,
                    format!("{}: schema/v {v} is not supported", Self::FAMILY),
                ));
            }
            None => return Err(invalid("schema/v", "must be 1")),
        }
        if text(&doc, "message/kind")? != Self::FAMILY {
            return Err(invalid(
                "message/kind",
                &format!("must be {}", Self::FAMILY),
            ));
        }
        let federation = text(&doc, "federation/id")?.to_owned();
        if federation.is_empty() || federation.len() > MAX_FEDERATION_ID_BYTES {
            return Err(invalid(
                "federation/id",
                &format!("must be 1..={MAX_FEDERATION_ID_BYTES} bytes"),
            ));
        }
        let node = node_id(&doc, "node/id")?;
        let endorser = node_id(&doc, "endorser/node-id")?;
        let issued_at = timestamp(&doc, "issued-at")?;
        let expires_at = timestamp(&doc, "expires-at")?;
        let life = expires_at.secs_since(&issued_at);
        if !(1..=MAX_ENDORSEMENT_SECS).contains(&life) {
            return Err(invalid(
                "expires-at",
                &format!("must be 1..={MAX_ENDORSEMENT_SECS} s after issued-at"),
            ));
        }
        mesh_core::artifact::read_signature(&doc).map_err(|e| e.context(Self::FAMILY))?;
        Ok(FederationEndorsement {
            doc,
            federation,
            node,
            endorser,
            issued_at,
            expires_at,
        })
    }

    mesh_core::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.endorser.fingerprint())
    }

    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        mesh_core::artifact::not_in_future(Self::FAMILY, "issued-at", &self.issued_at, now)?;
        if now >= &self.expires_at {
            return Err(MeshError::new(
                ErrorCode::AdvExpired,
                format!("{}: expired at {}", Self::FAMILY, self.expires_at.as_str()),
            ));
        }
        Ok(())
    }
}

/// The endorsements a request carries in [`REQUEST_FIELD`], verified (signature, rules,
/// clock) and about `node`. A malformed, forged or foreign one fails the whole request:
/// an honest client sends only its own, valid ones.
pub fn carried(
    request: &Map<String, Value>,
    node: &NodeId,
    now: &Timestamp,
) -> MeshResult<Vec<FederationEndorsement>> {
    let Some(v) = request.get(REQUEST_FIELD) else {
        return Ok(Vec::new());
    };
    let list = v.as_array().ok_or_else(|| {
        MeshError::invalid(format!(
            "relay-admission-request.v1: `{REQUEST_FIELD}` must be an array"
        ))
    })?;
    if list.len() > MAX_ENDORSEMENTS {
        return Err(MeshError::invalid(format!(
            "relay-admission-request.v1: at most {MAX_ENDORSEMENTS} endorsements"
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let e = FederationEndorsement::verify_json(e.clone(), now)
            .map_err(|e| e.context("the request's endorsement"))?;
        if &e.node_id() != node {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                "the request carries an endorsement of another node",
            ));
        }
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        Timestamp::parse("2026-11-22T12:00:00Z").unwrap()
    }

    #[test]
    fn an_endorsement_verifies_only_with_its_endorsers_key() {
        let (op, member, other) = (
            NodeKeypair::generate(),
            NodeKeypair::generate(),
            NodeKeypair::generate(),
        );
        let e = FederationEndorsement::issue(&op, "fed:a", member.node_id(), &t0(), 600).unwrap();
        let back = FederationEndorsement::verify_json(e.to_json(), &t0()).unwrap();
        assert_eq!(back.federation_id(), "fed:a");
        assert_eq!(back.node_id(), member.node_id());
        assert_eq!(back.endorser(), op.node_id());
        FederationEndorsement::verify_cbor(&e.to_cbor(), &t0()).unwrap();
        // Signed by another key while naming the operator as endorser: forged.
        let mut doc = e.clone().into_map();
        doc.remove("signature");
        let input =
            mesh_core::artifact::signing_input(FederationEndorsement::FAMILY, &["signature"], &doc);
        doc.insert(
            "signature".into(),
            mesh_core::artifact::signature_value(&other.sign(&input)),
        );
        let err = FederationEndorsement::verify_json(Value::Object(doc), &t0()).unwrap_err();
        assert_eq!(err.code, ErrorCode::SigInvalid, "{err}");
        // A changed federation breaks the signature.
        let mut doc = e.clone().into_map();
        doc.insert("federation/id".into(), "fed:b".into());
        let err = FederationEndorsement::verify_json(Value::Object(doc), &t0()).unwrap_err();
        assert_eq!(err.code, ErrorCode::SigInvalid, "{err}");
        // Expiry and the clock.
        let err =
            FederationEndorsement::verify_json(e.to_json(), &t0().plus_secs(600)).unwrap_err();
        assert_eq!(err.code, ErrorCode::AdvExpired);
        let err =
            FederationEndorsement::verify_json(e.to_json(), &t0().plus_secs(-31)).unwrap_err();
        assert_eq!(err.code, ErrorCode::ProtoInvalid);
    }

    #[test]
    fn shapes_are_checked() {
        let op = NodeKeypair::generate();
        let n = NodeKeypair::generate().node_id();
        let long = "f".repeat(MAX_FEDERATION_ID_BYTES + 1);
        for (fed, ttl) in [
            ("", 60),
            (long.as_str(), 60),
            ("fed:a", 0),
            ("fed:a", MAX_ENDORSEMENT_SECS + 1),
        ] {
            let e = FederationEndorsement::issue(&op, fed, n, &t0(), ttl).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtoInvalid, "{fed} {ttl}: {e}");
        }
        let ok = FederationEndorsement::issue(&op, "fed:a", n, &t0(), 60).unwrap();
        let mut doc = ok.into_map();
        doc.insert("schema/v".into(), 2.into());
        let e = FederationEndorsement::from_map(doc).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoVersion);
    }

    #[test]
    fn a_request_carries_only_its_own_valid_endorsements() {
        let op = NodeKeypair::generate();
        let (me, other) = (
            NodeKeypair::generate().node_id(),
            NodeKeypair::generate().node_id(),
        );
        let mine = FederationEndorsement::issue(&op, "fed:a", me, &t0(), 60).unwrap();
        let theirs = FederationEndorsement::issue(&op, "fed:a", other, &t0(), 60).unwrap();
        let req = |list: Vec<Value>| {
            let mut m = Map::new();
            m.insert(REQUEST_FIELD.into(), Value::Array(list));
            m
        };
        assert!(carried(&Map::new(), &me, &t0()).unwrap().is_empty());
        assert_eq!(
            carried(&req(vec![mine.to_json()]), &me, &t0()).unwrap(),
            vec![mine.clone()]
        );
        let e = carried(&req(vec![theirs.to_json()]), &me, &t0()).unwrap_err();
        assert_eq!(e.code, ErrorCode::SigUnknownSigner);
        let e = carried(&req(vec![mine.to_json(); MAX_ENDORSEMENTS + 1]), &me, &t0()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid);
        let e = carried(&req(vec![Value::from("x")]), &me, &t0()).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtoInvalid);
    }
}
