//! Building a signed `relay-admission-request.v1` (the client's side).

use mesh_core::{
    Artifact, MeshError, NodeAdvertisement, NodeId, NodeKeypair, RelayAdmissionRequest, Timestamp,
};
use serde_json::{Value, json};

use crate::endorsement::{FederationEndorsement, REQUEST_FIELD};
use crate::policy::Purpose;

/// Signs a request from `key`'s node to `relay` for `purpose`, with a fresh nonce and
/// `ts = now`; `advertisement` (the node's own) is carried along when given.
pub fn request(
    key: &NodeKeypair,
    relay: NodeId,
    purpose: Purpose,
    advertisement: Option<&NodeAdvertisement>,
    now: &Timestamp,
) -> Result<RelayAdmissionRequest, MeshError> {
    request_with(key, relay, purpose, advertisement, &[], now)
}

/// [`request`], also carrying the node's federation `endorsements` (in the signed
/// `federation/endorsements` field; at most
/// [`crate::endorsement::MAX_ENDORSEMENTS`] are sent).
pub fn request_with(
    key: &NodeKeypair,
    relay: NodeId,
    purpose: Purpose,
    advertisement: Option<&NodeAdvertisement>,
    endorsements: &[FederationEndorsement],
    now: &Timestamp,
) -> Result<RelayAdmissionRequest, MeshError> {
    let mut doc = json!({
        "schema/v": 1,
        "message/kind": "relay-admission-request.v1",
        "node/id": key.node_id().to_string(),
        "relay/node-id": relay.to_string(),
        "purpose": purpose.as_str(),
        "nonce": crate::random_nonce(),
        "ts": now.as_str(),
    });
    if let Value::Object(m) = &mut doc {
        if let Purpose::Circuit { target: Some(t) } = purpose {
            m.insert("target/node-id".into(), Value::from(t.to_string()));
        }
        if let Some(a) = advertisement {
            m.insert("advertisement".into(), a.to_json());
        }
        if !endorsements.is_empty() {
            let list = endorsements
                .iter()
                .take(crate::endorsement::MAX_ENDORSEMENTS)
                .map(Artifact::to_json)
                .collect();
            m.insert(REQUEST_FIELD.into(), Value::Array(list));
        }
    }
    let Value::Object(doc) = doc else {
        return Err(MeshError::invalid("internal: request is not an object"));
    };
    RelayAdmissionRequest::sign(doc, key)
}
