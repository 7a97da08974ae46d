//! The relay's side of an admission request, without I/O: verify the signed request,
//! bind it to the connection's peer and to this relay, refuse replays and revoked
//! nodes, ask the policy, and issue the signed grant. `now` is passed in.

use std::sync::Arc;

use mesh_core::{
    Artifact, ErrorCode, GrantLimits, MeshError, NodeAdvertisement, NodeId, NodeKeypair,
    RelayAdmissionGrant, RelayAdmissionRequest, Timestamp,
};
use serde_json::{Value, json};

use crate::grants::{Grant, Grants};
use crate::policy::{AdmissionPolicy, Decision, Purpose, Query, min_limits};
use crate::replay::Nonces;

/// Where the relay looks up a requester's current advertisement (e.g. its advertisement
/// store). Return only verified, unexpired advertisements.
pub trait AdvertSource: Send + Sync + 'static {
    /// The current advertisement of `node`, if known.
    fn current(&self, node: &NodeId, now: &Timestamp) -> Option<NodeAdvertisement>;
}

/// Knows no advertisements (only the ones requests carry count).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAdverts;

impl AdvertSource for NoAdverts {
    fn current(&self, _: &NodeId, _: &Timestamp) -> Option<NodeAdvertisement> {
        None
    }
}

/// A request that passed every check, with the limits the policy granted.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The verified request.
    pub request: RelayAdmissionRequest,
    /// What it asks for.
    pub purpose: Purpose,
    /// The policy's limits, clamped to the relay's caps.
    pub limits: GrantLimits,
}

/// The checks, in order, for one relay.
pub struct Gate {
    relay: NodeId,
    policy: Arc<dyn AdmissionPolicy>,
    adverts: Arc<dyn AdvertSource>,
    caps: GrantLimits,
    nonces: Nonces,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("relay", &self.relay)
            .field("policy", &self.policy)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate for the relay `relay`, granting at most `caps`.
    pub fn new(
        relay: NodeId,
        policy: Arc<dyn AdmissionPolicy>,
        adverts: Arc<dyn AdvertSource>,
        caps: GrantLimits,
    ) -> Self {
        Gate {
            relay,
            policy,
            adverts,
            caps,
            nonces: Nonces::new(
                2 * mesh_core::CLOCK_SKEW_SECS + 60,
                crate::replay::PER_NODE,
                16_384,
            ),
        }
    }

    /// Checks request `bytes` (its CBOR wire form) received from `peer`. The grant table
    /// is consulted for blocks (a revoked node is refused before the policy runs).
    pub fn check(
        &mut self,
        bytes: &[u8],
        peer: &NodeId,
        grants: &Grants,
        now: &Timestamp,
    ) -> Result<Admitted, MeshError> {
        let request = RelayAdmissionRequest::verify_cbor(bytes, now)?;
        let node = request.node_id();
        if &node != peer {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                format!("request signed by {node}, but sent by {peer}"),
            ));
        }
        if request.relay_id() != self.relay {
            return Err(MeshError::invalid(format!(
                "request is for relay {}, not this one",
                request.relay_id()
            )));
        }
        self.nonces.check(node, request.nonce(), now)?;
        if let Some(until) = grants.blocked_until(&node, now) {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("revoked until {}", until.as_str()),
            ));
        }
        let purpose = match request.purpose() {
            "circuit" => Purpose::Circuit {
                target: request.target(),
            },
            _ => Purpose::Reservation,
        };
        let inline = match request.advertisement() {
            Some(v) => Some(inline_advert(v, &node, now)?),
            None => None,
        };
        let advertisement = inline.or_else(|| self.adverts.current(&node, now));
        let endorsements = crate::endorsement::carried(request.as_map(), &node, now)?;
        let query = Query {
            node,
            purpose,
            advertisement: advertisement.as_ref(),
            endorsements: &endorsements,
        };
        match self.policy.decide(&query, now) {
            Decision::Allow { limits } => Ok(Admitted {
                request,
                purpose,
                limits: min_limits(limits, self.caps),
            }),
            Decision::Deny { code, reason } => Err(MeshError::new(code, reason)),
        }
    }
}

fn inline_advert(
    v: &Value,
    node: &NodeId,
    now: &Timestamp,
) -> Result<NodeAdvertisement, MeshError> {
    let a = NodeAdvertisement::verify_json(v.clone(), now)
        .map_err(|e| e.context("the request's advertisement"))?;
    if &a.node_id() != node {
        return Err(MeshError::new(
            ErrorCode::SigUnknownSigner,
            "the request carries another node's advertisement",
        ));
    }
    Ok(a)
}

/// Signs the grant for `admitted` and the table entry that goes with it.
pub fn issue(
    key: &NodeKeypair,
    admitted: &Admitted,
    ttl_secs: i64,
    load_permille: u64,
    now: &Timestamp,
) -> Result<(RelayAdmissionGrant, Grant), MeshError> {
    let ticket = format!("rg:{}", crate::random_hex(12));
    let expires_at = now.plus_secs(ttl_secs);
    let l = admitted.limits;
    let mut doc = json!({
        "schema/v": 1,
        "message/kind": "relay-admission-grant.v1",
        "relay/node-id": key.node_id().to_string(),
        "node/id": admitted.request.node_id().to_string(),
        "ticket/id": ticket,
        "request/nonce": admitted.request.nonce(),
        "purpose": admitted.purpose.as_str(),
        "limits": {
            "circuits": l.circuits,
            "circuit-bytes": l.circuit_bytes,
            "circuit-secs": l.circuit_secs,
        },
        "relay/load-permille": load_permille.min(1000),
        "issued-at": now.as_str(),
        "expires-at": expires_at.as_str(),
    });
    if let (Purpose::Circuit { target: Some(t) }, Value::Object(m)) = (admitted.purpose, &mut doc) {
        m.insert("target/node-id".into(), Value::from(t.to_string()));
    }
    let Value::Object(doc) = doc else {
        return Err(MeshError::invalid("internal: grant is not an object"));
    };
    let grant = RelayAdmissionGrant::sign(doc, key)?;
    let entry = Grant {
        ticket: grant.ticket_id().to_owned(),
        node: admitted.request.node_id(),
        purpose: admitted.purpose,
        limits: l,
        issued_at: now.clone(),
        expires_at,
        implicit: false,
    };
    Ok((grant, entry))
}
