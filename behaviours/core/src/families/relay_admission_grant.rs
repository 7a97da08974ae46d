//! `relay-admission-grant.v1` (libmesh): a relay's signed answer that admits one node
//! for a while, with limits. Signed by `relay/node-id`; names the grantee (`node/id`)
//! and the request it answers (`request/nonce`), so a grant cannot be moved to another
//! node or replayed as the answer to another request.

use serde_json::{Map, Value};

use crate::artifact::fields::Fields;
use crate::artifact::{Artifact, not_in_future};
use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::families::relay_admission_request::ADMISSION_PURPOSES;
use crate::id::{KeyFingerprint, NodeId};
use crate::time::Timestamp;

/// Longest grant lifetime, seconds (one day).
pub const MAX_GRANT_TTL_SECS: i64 = 86_400;

/// The limits a grant carries (per node id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantLimits {
    /// `limits/circuits`: circuits open at once.
    pub circuits: u32,
    /// `limits/circuit-bytes`: bytes per circuit (both directions).
    pub circuit_bytes: u64,
    /// `limits/circuit-secs`: duration of one circuit, seconds.
    pub circuit_secs: u64,
}

/// A structurally valid `relay-admission-grant.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayAdmissionGrant {
    doc: Map<String, Value>,
    relay: NodeId,
    node: NodeId,
    target: Option<NodeId>,
    limits: GrantLimits,
    issued_at: Timestamp,
    expires_at: Timestamp,
}

impl RelayAdmissionGrant {
    /// `relay/node-id`: the relay that granted (and signed).
    pub fn relay_id(&self) -> NodeId {
        self.relay
    }

    /// `node/id`: the node admitted.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// `ticket/id`: names this grant (for revocation and logs).
    pub fn ticket_id(&self) -> &str {
        self.str_field("ticket/id")
    }

    /// `request/nonce`: the nonce of the request this answers.
    pub fn request_nonce(&self) -> &str {
        self.str_field("request/nonce")
    }

    /// `purpose`: `reservation` or `circuit`.
    pub fn purpose(&self) -> &str {
        self.str_field("purpose")
    }

    /// `target/node-id` of a circuit grant (absent: any target).
    pub fn target(&self) -> Option<NodeId> {
        self.target
    }

    /// The limits.
    pub fn limits(&self) -> GrantLimits {
        self.limits
    }

    /// `relay/load-permille`: how full the relay was when it granted, 0..=1000.
    pub fn load_permille(&self) -> u64 {
        self.doc
            .get("relay/load-permille")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// `issued-at`.
    pub fn issued_at(&self) -> &Timestamp {
        &self.issued_at
    }

    /// `expires-at`: after it the relay refuses the node's reservations and circuits.
    pub fn expires_at(&self) -> &Timestamp {
        &self.expires_at
    }

    fn str_field(&self, key: &str) -> &str {
        self.doc
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

impl Artifact for RelayAdmissionGrant {
    const FAMILY: &'static str = "relay-admission-grant.v1";

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        f.constant("message/kind", Self::FAMILY)?;
        let relay = f.node_id("relay/node-id")?;
        let node = f.node_id("node/id")?;
        let ticket = f.str("ticket/id")?;
        if ticket.is_empty() || ticket.len() > 128 {
            return Err(f.err("ticket/id", "must be 1..=128 characters"));
        }
        let nonce = f.str("request/nonce")?;
        if nonce.is_empty() || nonce.len() > 128 {
            return Err(f.err("request/nonce", "must be 1..=128 characters"));
        }
        let purpose = f.one_of("purpose", ADMISSION_PURPOSES)?;
        let target = f.opt_node_id("target/node-id")?;
        if target.is_some() && purpose != "circuit" {
            return Err(f.err("target/node-id", "only a circuit grant names a target"));
        }
        let l = f.object("limits")?;
        let circuits = u32::try_from(l.u64("circuits")?)
            .map_err(|_| f.err("limits", "circuits must fit 32 bits"))?;
        let limits = GrantLimits {
            circuits,
            circuit_bytes: l.u64("circuit-bytes")?,
            circuit_secs: l.u64("circuit-secs")?,
        };
        if f.has("relay/load-permille") && f.u64("relay/load-permille")? > 1000 {
            return Err(f.err("relay/load-permille", "must be 0..=1000"));
        }
        let issued_at = f.timestamp("issued-at")?;
        let expires_at = f.timestamp("expires-at")?;
        let ttl = expires_at.secs_since(&issued_at);
        if !(1..=MAX_GRANT_TTL_SECS).contains(&ttl) {
            return Err(f.err(
                "expires-at",
                &format!("must be 1..={MAX_GRANT_TTL_SECS} s after issued-at"),
            ));
        }
        f.signature_shape(true)?;
        Ok(RelayAdmissionGrant {
            doc,
            relay,
            node,
            target,
            limits,
            issued_at,
            expires_at,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.relay.fingerprint())
    }

    /// `issued-at` at most 30 s ahead; a grant past `expires-at` is `E_ADV_EXPIRED`.
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        not_in_future(Self::FAMILY, "issued-at", &self.issued_at, now)?;
        if &self.expires_at <= now {
            return Err(MeshError::new(
                ErrorCode::AdvExpired,
                format!("{}: expired at {}", Self::FAMILY, self.expires_at.as_str()),
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

    fn doc(relay: &NodeKeypair, node: &NodeKeypair, ttl: i64) -> Map<String, Value> {
        let Value::Object(doc) = json!({
            "schema/v": 1,
            "message/kind": "relay-admission-grant.v1",
            "relay/node-id": relay.node_id().to_string(),
            "node/id": node.node_id().to_string(),
            "ticket/id": "rg:1",
            "request/nonce": "AAAAAAAAAAAAAAAAAAAAAA",
            "purpose": "reservation",
            "limits": {"circuits": 4, "circuit-bytes": 1_048_576, "circuit-secs": 600},
            "relay/load-permille": 250,
            "issued-at": now().as_str(),
            "expires-at": now().plus_secs(ttl).as_str(),
        }) else {
            unreachable!()
        };
        doc
    }

    #[test]
    fn signs_verifies_and_expires() {
        let (r, n) = (NodeKeypair::generate(), NodeKeypair::generate());
        let g = RelayAdmissionGrant::sign(doc(&r, &n, 60), &r).unwrap();
        let back = RelayAdmissionGrant::verify_cbor(&g.to_cbor(), &now()).unwrap();
        assert_eq!(back.relay_id(), r.node_id());
        assert_eq!(back.node_id(), n.node_id());
        assert_eq!(back.ticket_id(), "rg:1");
        assert_eq!(back.load_permille(), 250);
        assert_eq!(
            back.limits(),
            GrantLimits {
                circuits: 4,
                circuit_bytes: 1_048_576,
                circuit_secs: 600
            }
        );
        let late = RelayAdmissionGrant::verify_cbor(&g.to_cbor(), &now().plus_secs(60));
        assert_eq!(late.unwrap_err().code, ErrorCode::AdvExpired);
        // Only the relay can sign it.
        assert!(RelayAdmissionGrant::sign(doc(&r, &n, 60), &n).is_err());
        let mut j = g.to_json();
        j["node/id"] = json!(r.node_id().to_string());
        let e = RelayAdmissionGrant::verify_json(j, &now()).unwrap_err();
        assert_eq!(e.code, ErrorCode::SigInvalid);
    }

    #[test]
    fn bad_grants_are_refused() {
        let (r, n) = (NodeKeypair::generate(), NodeKeypair::generate());
        let mut bad = vec![doc(&r, &n, 0), doc(&r, &n, MAX_GRANT_TTL_SECS + 1)];
        let mut d = doc(&r, &n, 60);
        d.insert("limits".into(), json!({"circuits": 1}));
        bad.push(d);
        let mut d = doc(&r, &n, 60);
        d.insert("relay/load-permille".into(), json!(1001));
        bad.push(d);
        let mut d = doc(&r, &n, 60);
        d.insert("ticket/id".into(), json!(""));
        bad.push(d);
        for d in bad {
            let e = RelayAdmissionGrant::sign(d, &r).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        }
    }
}
