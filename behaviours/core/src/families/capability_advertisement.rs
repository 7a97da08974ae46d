//! `capability-advertisement.v1`: a node's signed capability surface in passport form.

use serde_json::{Map, Value};

use crate::artifact::fields::{
    BLOB_REF, CAPABILITY_ID, Fields, LANG, PASSPORT_HASH, TRANSPORTS, WIRE_NAME, enum_check,
    non_empty, pattern_check,
};
use crate::artifact::{Artifact, not_in_future};
use crate::error::{ErrorCode, MeshResult};
use crate::id::{KeyFingerprint, NodeId};
use crate::time::Timestamp;

/// The capability every node must present.
pub const CORE_MESSAGING: &str = "core/messaging";

/// A structurally valid `capability-advertisement.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct CapabilityAdvertisement {
    doc: Map<String, Value>,
    node_id: NodeId,
    published_at: Timestamp,
    core: Vec<String>,
}

impl CapabilityAdvertisement {
    /// The advertising node, which is also the signer.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// `published-at`.
    pub fn published_at(&self) -> &Timestamp {
        &self.published_at
    }

    /// `capabilities/core`, the wire names a peer can route on.
    pub fn capabilities(&self) -> &[String] {
        &self.core
    }

    /// Whether `capabilities/core` lists `name`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.core.iter().any(|c| c == name)
    }
}

fn check_profile(p: &Fields<'_>) -> MeshResult<()> {
    for key in [
        "compatible_with",
        "display/name",
        "description",
        "schema/id",
        "schema/media-type",
        "doc/url",
    ] {
        p.opt_str(key)?;
    }
    p.opt_matching("lang", &LANG)?;
    p.opt_matching("doc/ref", &BLOB_REF)?;
    p.opt_matching("schema/ref", &BLOB_REF)?;
    Ok(())
}

impl Artifact for CapabilityAdvertisement {
    const FAMILY: &'static str = "capability-advertisement.v1";

    fn from_map(doc: Map<String, Value>) -> MeshResult<Self> {
        let f = Fields::new(&doc, Self::FAMILY);
        f.schema_v()?;
        // The capability rule comes first: an advertisement without core/messaging is
        // E_PROTO_CAP_MISSING whatever else is wrong with it.
        let core = f.strings("capabilities/core", 1, true, pattern_check(&WIRE_NAME))?;
        if !core.contains(&CORE_MESSAGING) {
            return Err(f.err_code(
                ErrorCode::ProtoCapMissing,
                "capabilities/core",
                "must contain `core/messaging`",
            ));
        }
        let core: Vec<String> = core.into_iter().map(str::to_owned).collect();
        let presented = f.array("capabilities/presented", 1)?;
        let mut presents_messaging = false;
        for (i, item) in presented.iter().enumerate() {
            let p = f.item("capabilities/presented", i, item)?;
            p.matching("capability/id", &CAPABILITY_ID)?;
            presents_messaging |= p.matching("wire/name", &WIRE_NAME)? == CORE_MESSAGING;
            p.one_of(
                "assertion/kind",
                &[
                    "self-issued-passport",
                    "issuer-passport",
                    "federation-endorsed-passport",
                ],
            )?;
            p.object("passport")?;
            p.opt_matching("passport/hash", &PASSPORT_HASH)?;
            if let Some(profile) = p.opt_object("capability/profile")? {
                check_profile(&profile)?;
            }
            if p.has("endorsements") {
                let endorsements = p.array("endorsements", 0)?;
                for (j, e) in endorsements.iter().enumerate() {
                    p.item("endorsements", j, e)?;
                }
            }
            p.opt_object("scope/summary")?;
        }
        if !presents_messaging {
            return Err(f.err_code(
                ErrorCode::ProtoCapMissing,
                "capabilities/presented",
                "must present `core/messaging`",
            ));
        }
        f.str("advertisement/id")?;
        let node_id = f.node_id("node/id")?;
        let published_at = f.timestamp("published-at")?;
        f.str("protocol/version")?;
        f.strings("transport/profiles", 1, true, enum_check(TRANSPORTS))?;
        f.strings("messages/supported", 1, true, non_empty)?;
        if let Some(anchors) = f.opt_object("anchor_identities")? {
            for k in anchors.keys() {
                anchors.str(k)?;
            }
        }
        f.opt_strings("roles/attached", true, non_empty)?;
        f.opt_strings("surfaces/exposed", true, non_empty)?;
        f.signature_shape(false)?;
        f.opt_object("policy_annotations")?;
        Ok(CapabilityAdvertisement {
            doc,
            node_id,
            published_at,
            core,
        })
    }

    crate::artifact_doc_accessors!();

    fn signer(&self) -> Option<KeyFingerprint> {
        Some(*self.node_id.fingerprint())
    }

    /// `published-at` more than 30 s ahead of `now` is `E_PROTO_INVALID`.
    fn validate(&self, now: &Timestamp) -> MeshResult<()> {
        not_in_future(Self::FAMILY, "published-at", &self.published_at, now)
    }
}
