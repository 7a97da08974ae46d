//! `relay-admission-request.v1` (libmesh): a node asks one relay to admit it, for a
//! reservation (so others can reach it through the relay) or for circuits (so it can
//! reach a target through the relay). Signed by `node/id`; bound to one relay by
//! `relay/node-id`; fresh by `nonce` and `ts` (the relay keeps a nonce memory).

use serde_json::{Map, Value};

use crate::artifact::fields::Fields;
use crate::artifact::{Artifact, not_in_future};
use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::id::{KeyFingerprint, NodeId};
use crate::time::Timestamp;

/// What a node asks admission for.
pub const ADMISSION_PURPOSES: &[&str] = &["reservation", "circuit"];
/// Shortest accepted nonce (characters).
pub const MIN_NONCE_LEN: usize = 16;
/// Longest accepted nonce (characters).
pub const MAX_NONCE_LEN: usize = 128;

/// A structurally valid `relay-admission-request.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayAdmissionRequest {
    doc: Map<String, Value>,
    node: NodeId,
    relay: NodeId,
    target: Option<NodeId>,
    ts: Timestamp,
}

impl RelayAdmissionRequest {
    /// `node/id`: who asks (and signed).
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// `relay/node-id`: the relay asked.
    pub fn relay_id(&self) -> NodeId {
        self.relay
    }

    /// `purpose`: `reservation` or `circuit`.
    pub fn purpose(&self) -> &str {
        self.doc
            .get("purpose")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `target/node-id`: the node a circuit should reach (circuits only, optional:
    /// absent means any target).
    pub fn target(&self) -> Option<NodeId> {
        self.target
    }

    /// `nonce`.
    pub fn nonce(&self) -> &str {
        self.doc
            .get("nonce")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `ts`: when it was made.
    pub fn ts(&self) -> &Timestamp {
        &self.ts
    }

    /// `advertisement`: the requester's own signed `node-advertisement.v1`, offered so
    /// that a relay that has not seen it can apply advertisement-based policies.
    pub fn advertisement(&self) -> Option<&Value> {
        self.doc.get("advertisement")
    }
}

impl Artifact for RelayAdmissionRequest {
    const FAMILY: &'static str = "relay-admission-request.v1";

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        f.constant("message/kind", Self::FAMILY)?;
        let node = f.node_id("node/id")?;
        let relay = f.node_id("relay/node-id")?;
        if node == relay {
            return Err(f.err("relay/node-id", "a node cannot ask itself"));
        }
        let purpose = f.one_of("purpose", ADMISSION_PURPOSES)?;
        let target = f.opt_node_id("target/node-id")?;
        if target.is_some() && purpose != "circuit" {
            return Err(f.err("target/node-id", "only a circuit request names a target"));
        }
        let nonce = f.str("nonce")?;
        let nonce_ok = (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len())
            && nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !nonce_ok {
            return Err(f.err(
                "nonce",
                &format!("must be {MIN_NONCE_LEN}..={MAX_NONCE_LEN} base64url characters"),
            ));
        }
        let ts = f.timestamp("ts")?;
        if f.has("advertisement") {
            f.object("advertisement")?;
        }
        f.signature_shape(true)?;
        Ok(RelayAdmissionRequest {
            doc,
            node,
            relay,
            target,
            ts,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.node.fingerprint())
    }

    /// `ts` within [`crate::CLOCK_SKEW_SECS`] of `now` either way; an older request is
    /// `E_HS_REPLAY` (it may be a captured one), a later one `E_PROTO_INVALID`.
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        not_in_future(Self::FAMILY, "ts", &self.ts, now)?;
        if now.secs_since(&self.ts) > crate::CLOCK_SKEW_SECS {
            return Err(MeshError::new(
                ErrorCode::HsReplay,
                format!(
                    "{}: ts {} is more than {} s old",
                    Self::FAMILY,
                    self.ts.as_str(),
                    crate::CLOCK_SKEW_SECS
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypair::NodeKeypair;
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::parse("2026-11-22T12:00:00Z").unwrap()
    }

    fn doc(key: &NodeKeypair, relay: &NodeKeypair, purpose: &str) -> Map<String, Value> {
        let Value::Object(doc) = json!({
            "schema/v": 1,
            "message/kind": "relay-admission-request.v1",
            "node/id": key.node_id().to_string(),
            "relay/node-id": relay.node_id().to_string(),
            "purpose": purpose,
            "nonce": "AAAAAAAAAAAAAAAAAAAAAA",
            "ts": now().as_str(),
        }) else {
            unreachable!()
        };
        doc
    }

    #[test]
    fn signs_and_verifies() {
        let (k, r) = (NodeKeypair::generate(), NodeKeypair::generate());
        for purpose in ADMISSION_PURPOSES {
            let a = RelayAdmissionRequest::sign(doc(&k, &r, purpose), &k).unwrap();
            let back = RelayAdmissionRequest::verify_cbor(&a.to_cbor(), &now()).unwrap();
            assert_eq!(back.node_id(), k.node_id());
            assert_eq!(back.relay_id(), r.node_id());
            assert_eq!(back.purpose(), *purpose);
            assert_eq!(back.target(), None);
        }
        let mut d = doc(&k, &r, "circuit");
        d.insert("target/node-id".into(), json!(r.node_id().to_string()));
        let a = RelayAdmissionRequest::sign(d, &k).unwrap();
        assert_eq!(a.target(), Some(r.node_id()));
    }

    #[test]
    fn bad_requests_are_refused_with_codes() {
        let (k, r) = (NodeKeypair::generate(), NodeKeypair::generate());
        let mut bad = vec![doc(&k, &r, "transit"), doc(&k, &k, "reservation")];
        let mut d = doc(&k, &r, "reservation");
        d.insert("target/node-id".into(), json!(r.node_id().to_string()));
        bad.push(d);
        let mut d = doc(&k, &r, "reservation");
        d.insert("nonce".into(), json!("short"));
        bad.push(d);
        let mut d = doc(&k, &r, "reservation");
        d.insert("nonce".into(), json!("not base64url!!!!!!!!"));
        bad.push(d);
        for d in bad {
            let e = RelayAdmissionRequest::sign(d, &k).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        }
        let a = RelayAdmissionRequest::sign(doc(&k, &r, "reservation"), &k).unwrap();
        let old = RelayAdmissionRequest::verify_cbor(&a.to_cbor(), &now().plus_secs(31));
        assert_eq!(old.unwrap_err().code, ErrorCode::HsReplay);
        let early = RelayAdmissionRequest::verify_cbor(&a.to_cbor(), &now().plus_secs(-31));
        assert_eq!(early.unwrap_err().code, ErrorCode::ProtoInvalid);
        let mut j = a.to_json();
        j["purpose"] = json!("circuit");
        let e = RelayAdmissionRequest::verify_json(j, &now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::SigInvalid);
    }
}
