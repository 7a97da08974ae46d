//! `node-identity.v1`: the persisted public identity record (unsigned).

use serde_json::{Map, Value};

use crate::artifact::fields::{Fields, STORAGE_REF};
use crate::artifact::{Artifact, not_in_future};
use crate::error::MeshResult;
use crate::id::{KeyFingerprint, NodeId, ParticipantId};
use crate::time::Timestamp;

/// The storage reference of the node's secret, relative to the data dir.
pub const SIGNING_KEY_STORAGE_REF: &str = "local-file:identity/node-signing-key.v1.json";

/// A validated `node-identity.v1` record. It never holds secret material: a record with
/// an inline secret (any field whose name mentions `secret` or `private`) is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeIdentityRecord {
    doc: Map<String, Value>,
    node_id: NodeId,
    participant_id: ParticipantId,
    created_at: Timestamp,
    storage_ref: String,
}

impl NodeIdentityRecord {
    /// A fresh record for `node_id` (with the participant id of the same key), created
    /// `now`, pointing at the standard secret file.
    pub fn new(node_id: NodeId, now: &Timestamp) -> Self {
        let mut doc = Map::new();
        doc.insert("schema/v".into(), 1.into());
        doc.insert("node/id".into(), node_id.to_string().into());
        let participant = ParticipantId::from_fingerprint(*node_id.fingerprint());
        doc.insert("participant/id".into(), participant.to_string().into());
        doc.insert("created-at".into(), now.as_str().into());
        doc.insert("identity/status".into(), "active".into());
        doc.insert("key/alg".into(), "ed25519".into());
        doc.insert(
            "key/public".into(),
            node_id.fingerprint().to_string().into(),
        );
        doc.insert("key/storage-ref".into(), SIGNING_KEY_STORAGE_REF.into());
        NodeIdentityRecord {
            doc,
            node_id,
            participant_id: participant,
            created_at: now.clone(),
            storage_ref: SIGNING_KEY_STORAGE_REF.into(),
        }
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The participant id.
    pub fn participant_id(&self) -> ParticipantId {
        self.participant_id
    }

    /// The public key.
    pub fn fingerprint(&self) -> &KeyFingerprint {
        self.node_id.fingerprint()
    }

    /// When the identity was created.
    pub fn created_at(&self) -> &Timestamp {
        &self.created_at
    }

    /// `key/storage-ref`, e.g. `local-file:identity/node-signing-key.v1.json`.
    pub fn storage_ref(&self) -> &str {
        &self.storage_ref
    }
}

impl Artifact for NodeIdentityRecord {
    const FAMILY: &'static str = "node-identity.v1";
    const UNSIGNED_FIELDS: &'static [&'static str] = &[];

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        if let Some(k) = f.keys().find(|k| {
            let k = k.to_ascii_lowercase();
            k.contains("secret") || k.contains("private")
        }) {
            return Err(f.err(k, "secret key material must never be inline in the record"));
        }
        let node_id = f.node_id("node/id")?;
        let participant_id = f.participant_id("participant/id")?;
        let created_at = f.timestamp("created-at")?;
        f.opt_one_of("identity/status", &["active"])?;
        f.key_matches("node/id")?;
        let storage_ref = f.matching("key/storage-ref", &STORAGE_REF)?.to_owned();
        f.opt_object("policy_annotations")?;
        Ok(NodeIdentityRecord {
            doc,
            node_id,
            participant_id,
            created_at,
            storage_ref,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        None
    }

    /// A record created in the future (beyond 30 s of skew) is refused.
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        not_in_future(Self::FAMILY, "created-at", &self.created_at, now)
    }
}
