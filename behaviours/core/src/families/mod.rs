//! The artifact families, typed, plus [`Family`] to pick one by name at run time.

mod capability_advertisement;
mod endpoint_url;
mod node_advertisement;
mod node_identity;
mod peer_handshake;
mod peer_status;
mod relay_admission_grant;
mod relay_admission_request;
mod signal_frame;
mod signal_marker;
mod signal_marker_envelope;
mod swarm_presence;

use serde_json::{Map, Value};

pub use capability_advertisement::{CORE_MESSAGING, CapabilityAdvertisement};
pub use endpoint_url::{MAX_ENDPOINT_URL, ws_url_multiaddr, wss_url};
pub use node_advertisement::{
    Endpoint, MAX_ADVERTISEMENT_ID, MAX_POLICY_ANNOTATIONS_BYTES, MULTIADDR_URL_PREFIX,
    NodeAdvertisement,
};
pub use node_identity::{NodeIdentityRecord, SIGNING_KEY_STORAGE_REF};
pub use peer_handshake::{HandshakeMode, MAX_HANDSHAKE_ID, MAX_HANDSHAKE_NONCE, PeerHandshake};
pub use peer_status::PeerStatus;
pub use relay_admission_grant::{GrantLimits, MAX_GRANT_TTL_SECS, RelayAdmissionGrant};
pub use relay_admission_request::{
    ADMISSION_PURPOSES, MAX_NONCE_LEN, MIN_NONCE_LEN, RelayAdmissionRequest,
};
pub use signal_frame::{
    FRAME_KINDS, MAX_CANDIDATES, MAX_CORRELATION, MAX_FRAME_ID, MAX_FRAME_ITEMS,
    MAX_FRAME_TTL_SECS, MAX_HOPS, MAX_SETUP_B64, SignalFrame,
};
pub use signal_marker::SignalMarker;
pub use signal_marker_envelope::SignalMarkerEnvelope;
pub use swarm_presence::{
    MAX_PRESENCE_ADDRS, MAX_PRESENCE_TTL_SECS, MIN_PRESENCE_TTL_SECS, PRESENCE_KINDS, SwarmPresence,
};

use crate::artifact::Artifact;
use crate::error::{MeshError, MeshResult};
use crate::keypair::NodeKeypair;
use crate::time::Timestamp;

/// A family chosen by name (for the CLI, HTTP and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `node-identity.v1` (unsigned)
    NodeIdentity,
    /// `node-advertisement.v1`
    NodeAdvertisement,
    /// `peer-handshake.v1`
    PeerHandshake,
    /// `capability-advertisement.v1`
    CapabilityAdvertisement,
    /// `signal-marker-envelope.v1`
    SignalMarkerEnvelope,
    /// `signal-marker.v1` (unsigned)
    SignalMarker,
    /// `peer-status.v1` (unsigned)
    PeerStatus,
    /// `signal-frame.v1` (libmesh signaling)
    SignalFrame,
    /// `swarm-presence.v1` (libmesh discovery-key swarms)
    SwarmPresence,
    /// `relay-admission-request.v1` (libmesh relay admission)
    RelayAdmissionRequest,
    /// `relay-admission-grant.v1` (libmesh relay admission)
    RelayAdmissionGrant,
}

macro_rules! dispatch {
    ($family:expr, $t:ident => $body:expr) => {
        match $family {
            Family::NodeIdentity => {
                type $t = NodeIdentityRecord;
                $body
            }
            Family::NodeAdvertisement => {
                type $t = NodeAdvertisement;
                $body
            }
            Family::PeerHandshake => {
                type $t = PeerHandshake;
                $body
            }
            Family::CapabilityAdvertisement => {
                type $t = CapabilityAdvertisement;
                $body
            }
            Family::SignalMarkerEnvelope => {
                type $t = SignalMarkerEnvelope;
                $body
            }
            Family::SignalMarker => {
                type $t = SignalMarker;
                $body
            }
            Family::PeerStatus => {
                type $t = PeerStatus;
                $body
            }
            Family::SignalFrame => {
                type $t = SignalFrame;
                $body
            }
            Family::SwarmPresence => {
                type $t = SwarmPresence;
                $body
            }
            Family::RelayAdmissionRequest => {
                type $t = RelayAdmissionRequest;
                $body
            }
            Family::RelayAdmissionGrant => {
                type $t = RelayAdmissionGrant;
                $body
            }
        }
    };
}

impl Family {
    /// Every family.
    pub const ALL: [Family; 11] = [
        Family::NodeIdentity,
        Family::NodeAdvertisement,
        Family::PeerHandshake,
        Family::CapabilityAdvertisement,
        Family::SignalMarkerEnvelope,
        Family::SignalMarker,
        Family::PeerStatus,
        Family::SignalFrame,
        Family::SwarmPresence,
        Family::RelayAdmissionRequest,
        Family::RelayAdmissionGrant,
    ];

    /// The family name, e.g. `node-advertisement.v1`.
    pub fn name(self) -> &'static str {
        dispatch!(self, T => T::FAMILY)
    }

    /// The family of a name; the `.v1` suffix may be left out.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.name() == name || f.name().strip_suffix(".v1") == Some(name))
    }

    /// Whether artifacts of this family carry a signature.
    pub fn is_signed(self) -> bool {
        dispatch!(self, T => T::UNSIGNED_FIELDS.contains(&"signature"))
    }

    /// Structural and time validation, without the signature.
    pub fn validate_json(self, value: Value, now: &Timestamp) -> MeshResult<Map<String, Value>> {
        dispatch!(self, T => {
            let a = T::from_json(value)?;
            a.validate(now)?;
            Ok(a.into_map())
        })
    }

    /// Full receiver-side check: structure, signature (for signed families), time.
    pub fn verify_json(self, value: Value, now: &Timestamp) -> MeshResult<Map<String, Value>> {
        if !self.is_signed() {
            return self.validate_json(value, now);
        }
        dispatch!(self, T => Ok(T::verify_json(value, now)?.into_map()))
    }

    /// Signs `doc` with `key`; unsigned families are `E_PROTO_INVALID`.
    pub fn sign(
        self,
        doc: Map<String, Value>,
        key: &NodeKeypair,
    ) -> MeshResult<Map<String, Value>> {
        if !self.is_signed() {
            return Err(MeshError::invalid(format!(
                "{} is not a signed family",
                self.name()
            )));
        }
        dispatch!(self, T => Ok(T::sign(doc, key)?.into_map()))
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
