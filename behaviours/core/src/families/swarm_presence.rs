//! `swarm-presence.v1` (libmesh): a node's signed statement that it is in (or has left)
//! the swarm named by a 32-byte discovery key. Members publish it on the swarm's
//! gossipsub topic; every member keeps a table of the others with expiry.

use serde_json::{Map, Value};

use crate::artifact::fields::Fields;
use crate::artifact::{Artifact, not_in_future};
use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::id::{KeyFingerprint, NodeId};
use crate::time::Timestamp;

/// What a presence says.
pub const PRESENCE_KINDS: &[&str] = &["join", "announce", "leave"];
/// Shortest TTL a presence may claim, seconds.
pub const MIN_PRESENCE_TTL_SECS: i64 = 2;
/// Longest TTL a presence may claim, seconds.
pub const MAX_PRESENCE_TTL_SECS: i64 = 3600;
/// Most addresses in one presence.
pub const MAX_PRESENCE_ADDRS: usize = 16;

/// A structurally valid `swarm-presence.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmPresence {
    doc: Map<String, Value>,
    node: NodeId,
    key: [u8; 32],
    created_at: Timestamp,
    expires_at: Timestamp,
}

impl SwarmPresence {
    /// `node/id`, the signer.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// `swarm/key`, the discovery key.
    pub fn swarm_key(&self) -> &[u8; 32] {
        &self.key
    }

    /// `presence`: `join` (new here; members answer with an `announce`), `announce`
    /// (still here) or `leave`.
    pub fn presence(&self) -> &str {
        self.doc
            .get("presence")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `sequence/no`: grows with every presence of this node in this swarm.
    pub fn sequence_no(&self) -> u64 {
        self.doc
            .get("sequence/no")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// `addrs` (multiaddrs; may be empty).
    pub fn addrs(&self) -> Vec<String> {
        self.doc
            .get("addrs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `created-at`.
    pub fn created_at(&self) -> &Timestamp {
        &self.created_at
    }

    /// `expires-at`: the member counts as gone after it unless it re-announces.
    pub fn expires_at(&self) -> &Timestamp {
        &self.expires_at
    }
}

impl Artifact for SwarmPresence {
    const FAMILY: &'static str = "swarm-presence.v1";

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        f.constant("message/kind", Self::FAMILY)?;
        let key_hex = f.str("swarm/key")?;
        let mut key = [0u8; 32];
        let lower = key_hex.bytes().all(|b| !b.is_ascii_uppercase());
        if !lower || hex::decode_to_slice(key_hex, &mut key).is_err() {
            return Err(f.err("swarm/key", "must be 64 lowercase hex digits"));
        }
        let node = f.node_id("node/id")?;
        f.one_of("presence", PRESENCE_KINDS)?;
        f.u64("sequence/no")?;
        if f.has("addrs") {
            let addrs = f.array("addrs", 0)?;
            if addrs.len() > MAX_PRESENCE_ADDRS {
                return Err(f.err("addrs", &format!("at most {MAX_PRESENCE_ADDRS} addresses")));
            }
            for (i, a) in addrs.iter().enumerate() {
                let ok = a
                    .as_str()
                    .is_some_and(|s| s.parse::<multiaddr::Multiaddr>().is_ok());
                if !ok {
                    return Err(f.err(&format!("addrs[{i}]"), "must be a multiaddr"));
                }
            }
        }
        let created_at = f.timestamp("created-at")?;
        let expires_at = f.timestamp("expires-at")?;
        let ttl = expires_at.secs_since(&created_at);
        if !(MIN_PRESENCE_TTL_SECS..=MAX_PRESENCE_TTL_SECS).contains(&ttl) {
            return Err(f.err(
                "expires-at",
                &format!(
                    "must be {MIN_PRESENCE_TTL_SECS}..={MAX_PRESENCE_TTL_SECS} s after created-at"
                ),
            ));
        }
        f.signature_shape(true)?;
        Ok(SwarmPresence {
            doc,
            node,
            key,
            created_at,
            expires_at,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.node.fingerprint())
    }

    /// `created-at` at most 30 s ahead of `now`; an expired presence is
    /// `E_ADV_EXPIRED` (an authentic announcement that is out of date, as for node
    /// advertisements: checks run after the signature).
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        not_in_future(Self::FAMILY, "created-at", &self.created_at, now)?;
        if &self.expires_at <= now {
            return Err(MeshError::new(
                ErrorCode::AdvExpired,
                format!("swarm-presence.v1: expired at {}", self.expires_at.as_str()),
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
        Timestamp::parse("2026-11-21T12:00:00Z").unwrap()
    }

    fn doc(key: &NodeKeypair, presence: &str, ttl: i64) -> Map<String, Value> {
        let t = now();
        let Value::Object(doc) = json!({
            "schema/v": 1,
            "message/kind": "swarm-presence.v1",
            "swarm/key": "ab".repeat(32),
            "node/id": key.node_id().to_string(),
            "presence": presence,
            "sequence/no": 3,
            "addrs": ["/ip4/192.0.2.1/udp/4001/quic-v1"],
            "created-at": t.as_str(),
            "expires-at": t.plus_secs(ttl).as_str(),
        }) else {
            unreachable!()
        };
        doc
    }

    #[test]
    fn signs_and_verifies_in_both_forms() {
        let k = NodeKeypair::generate();
        for kind in PRESENCE_KINDS {
            let p = SwarmPresence::sign(doc(&k, kind, 60), &k).unwrap();
            let back = SwarmPresence::verify_cbor(&p.to_cbor(), &now()).unwrap();
            assert_eq!(back.presence(), *kind);
            assert_eq!(back.node_id(), k.node_id());
            assert_eq!(back.swarm_key(), &[0xab; 32]);
            assert_eq!(back.sequence_no(), 3);
            assert_eq!(back.addrs(), vec!["/ip4/192.0.2.1/udp/4001/quic-v1"]);
            SwarmPresence::verify_json(p.to_json(), &now()).unwrap();
        }
    }

    #[test]
    fn bad_presences_are_refused_with_codes() {
        let k = NodeKeypair::generate();
        let mut cases: Vec<Map<String, Value>> = Vec::new();
        let mut d = doc(&k, "join", 60);
        d.insert("swarm/key".into(), json!("AB".repeat(32)));
        cases.push(d);
        let mut d = doc(&k, "join", 60);
        d.insert("swarm/key".into(), json!("ab".repeat(31)));
        cases.push(d);
        cases.push(doc(&k, "hello", 60));
        cases.push(doc(&k, "join", 1));
        cases.push(doc(&k, "join", MAX_PRESENCE_TTL_SECS + 1));
        let mut d = doc(&k, "join", 60);
        d.insert("addrs".into(), json!(["nope"]));
        cases.push(d);
        let mut d = doc(&k, "join", 60);
        let many: Vec<String> = (0..=MAX_PRESENCE_ADDRS)
            .map(|i| format!("/ip4/192.0.2.1/tcp/{i}"))
            .collect();
        d.insert("addrs".into(), json!(many));
        cases.push(d);
        for d in cases {
            let e = SwarmPresence::sign(d, &k).unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
        }
        // Signed by another key than `node/id`.
        let other = NodeKeypair::generate();
        assert!(SwarmPresence::sign(doc(&k, "join", 60), &other).is_err());
        // Altered after signing.
        let p = SwarmPresence::sign(doc(&k, "announce", 60), &k).unwrap();
        let mut j = p.to_json();
        j["presence"] = json!("leave");
        assert_eq!(
            SwarmPresence::verify_json(j, &now()).unwrap_err().code,
            ErrorCode::SigInvalid
        );
        // Expired.
        assert_eq!(
            SwarmPresence::verify_cbor(&p.to_cbor(), &now().plus_secs(60))
                .unwrap_err()
                .code,
            ErrorCode::AdvExpired
        );
    }
}
