//! `peer-handshake.v1`: the signed hello/ack of a session.

use serde_json::{Map, Value};

use crate::artifact::Artifact;
use crate::artifact::fields::{Fields, OFFERED_CAPABILITY, SESSION_PUB, TRANSPORTS, pattern_check};
use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::id::{KeyFingerprint, NodeId};
use crate::time::Timestamp;

/// Longest `handshake/id` and `ack/of-handshake-id`, bytes (both are kept in replay
/// memories, so a peer must not choose their size).
pub const MAX_HANDSHAKE_ID: usize = 128;
/// Longest `nonce`, bytes (kept in the per-peer nonce memory).
pub const MAX_HANDSHAKE_NONCE: usize = 128;

/// A required string of at most `max` bytes (`E_PROTO_INVALID` beyond).
fn capped<'a>(f: &Fields<'a>, key: &str, max: usize) -> MeshResult<&'a str> {
    let s = f.str(key)?;
    if s.len() > max {
        return Err(f.err(key, &format!("longer than {max} bytes")));
    }
    Ok(s)
}

/// `handshake/mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeMode {
    /// The initiator's hello.
    Hello,
    /// The responder's ack, bound to a hello by `ack/of-handshake-id`.
    Ack,
}

/// A structurally valid `peer-handshake.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerHandshake {
    doc: Map<String, Value>,
    mode: HandshakeMode,
    sender: NodeId,
    recipient: Option<NodeId>,
    ts: Timestamp,
}

impl PeerHandshake {
    /// Hello or ack.
    pub fn mode(&self) -> HandshakeMode {
        self.mode
    }

    /// `sender/node-id`.
    pub fn sender(&self) -> NodeId {
        self.sender
    }

    /// `recipient/node-id`, when directed.
    pub fn recipient(&self) -> Option<NodeId> {
        self.recipient
    }

    /// `ts`.
    pub fn ts(&self) -> &Timestamp {
        &self.ts
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.doc.get(key).and_then(Value::as_str)
    }

    /// `handshake/id`.
    pub fn handshake_id(&self) -> &str {
        self.text("handshake/id").unwrap_or_default()
    }

    /// `ack/of-handshake-id` (present on every ack).
    pub fn ack_of(&self) -> Option<&str> {
        self.text("ack/of-handshake-id")
    }

    /// `nonce`.
    pub fn nonce(&self) -> &str {
        self.text("nonce").unwrap_or_default()
    }

    /// `session/pub` (unpadded base64url of the X25519 key).
    pub fn session_pub(&self) -> &str {
        self.text("session/pub").unwrap_or_default()
    }

    /// `protocol/version`, when given.
    pub fn protocol_version(&self) -> Option<&str> {
        self.text("protocol/version")
    }
}

impl Artifact for PeerHandshake {
    const FAMILY: &'static str = "peer-handshake.v1";
    /// Framing metadata stays outside the signed payload.
    const UNSIGNED_FIELDS: &'static [&'static str] =
        &["signature", "protocol/version", "transport/profile"];

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        capped(&f, "handshake/id", MAX_HANDSHAKE_ID)?;
        let mode = match f.one_of("handshake/mode", &["hello", "ack"])? {
            "ack" => HandshakeMode::Ack,
            _ => HandshakeMode::Hello,
        };
        if mode == HandshakeMode::Ack || f.has("ack/of-handshake-id") {
            capped(&f, "ack/of-handshake-id", MAX_HANDSHAKE_ID)?;
        }
        let ts = f.timestamp("ts")?;
        let sender = f.node_id("sender/node-id")?;
        let recipient = f.opt_node_id("recipient/node-id")?;
        f.key_matches("sender/node-id")?;
        f.matching("session/pub", &SESSION_PUB)?;
        f.opt_str("protocol/version")?;
        f.opt_one_of("transport/profile", TRANSPORTS)?;
        f.opt_one_of(
            "session/intent",
            &["bootstrap", "peer-connect", "reconnect"],
        )?;
        let challenge = f.opt_str("probe/challenge")?;
        let purpose = f.opt_one_of("probe/purpose", &["seed-directory-address-verification"])?;
        if challenge.is_some() != purpose.is_some() {
            return Err(f.err(
                "probe/challenge",
                "probe/challenge and probe/purpose go together",
            ));
        }
        capped(&f, "nonce", MAX_HANDSHAKE_NONCE)?;
        f.opt_strings(
            "capabilities/offered",
            true,
            pattern_check(&OFFERED_CAPABILITY),
        )?;
        f.opt_object("terms/negotiated")?;
        f.signature_shape(true)?;
        f.opt_object("policy_annotations")?;
        Ok(PeerHandshake {
            doc,
            mode,
            sender,
            recipient,
            ts,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.sender.fingerprint())
    }

    /// `ts` more than 30 s away from `now`, either way, is `E_HS_REPLAY`.
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        let skew = self.ts.secs_since(now);
        if skew.abs() > crate::CLOCK_SKEW_SECS {
            return Err(MeshError::new(
                ErrorCode::HsReplay,
                format!(
                    "{}: ts {} is {skew} s from now ({now}), outside +-{} s",
                    Self::FAMILY,
                    self.ts,
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

    fn hello(
        key: &NodeKeypair,
        id: &str,
        nonce: &str,
        ack_of: Option<&str>,
    ) -> MeshResult<PeerHandshake> {
        let now = Timestamp::now();
        let mut doc = json!({
            "schema/v": 1,
            "handshake/id": id,
            "handshake/mode": if ack_of.is_some() { "ack" } else { "hello" },
            "ts": now.as_str(),
            "sender/node-id": key.node_id().to_string(),
            "key/alg": "ed25519",
            "key/public": key.fingerprint().to_string(),
            "session/pub": "A".repeat(43),
            "nonce": nonce,
        });
        if let Some(a) = ack_of {
            doc["ack/of-handshake-id"] = json!(a);
        }
        let Value::Object(m) = doc else {
            unreachable!()
        };
        PeerHandshake::sign(m, key)
    }

    #[test]
    fn ids_and_nonces_longer_than_their_caps_are_refused() {
        let key = NodeKeypair::generate();
        let ok_id = "h".repeat(MAX_HANDSHAKE_ID);
        let ok_nonce = "n".repeat(MAX_HANDSHAKE_NONCE);
        hello(&key, &ok_id, &ok_nonce, None).unwrap();
        hello(&key, &ok_id, &ok_nonce, Some(&ok_id)).unwrap();
        let long_id = "h".repeat(MAX_HANDSHAKE_ID + 1);
        let long_nonce = "n".repeat(MAX_HANDSHAKE_NONCE + 1);
        for (e, field) in [
            (hello(&key, &long_id, "n", None), "handshake/id"),
            (hello(&key, "h", &long_nonce, None), "nonce"),
            (hello(&key, "h", "n", Some(&long_id)), "ack/of-handshake-id"),
        ] {
            let e = e.unwrap_err();
            assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }
}
