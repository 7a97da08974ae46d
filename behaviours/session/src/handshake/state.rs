//! The handshake machine's per-peer states, and which refusals are hard.

use libp2p::PeerId;
use mesh_core::{ErrorCode, NodeId, PeerHandshake, Timestamp};

use crate::event::Session;
use crate::secret::{EphemeralKey, IdentityTerm};
use crate::transport::TransportProfile;

pub(super) enum State {
    /// We sent a hello and wait for the ack.
    AwaitingAck {
        hello: Box<PeerHandshake>,
        eph: EphemeralKey,
        /// `eph` × the responder's identity, once computed.
        term: Option<IdentityTerm>,
        transport: TransportProfile,
    },
    /// Done.
    Established(Session),
}

/// A responder's session whose ack has been sent; the secret is derived next.
pub(super) struct Deriving {
    pub(super) peer: PeerId,
    pub(super) node: NodeId,
    pub(super) capabilities: Vec<String>,
    pub(super) unproven: Vec<String>,
    pub(super) eph: EphemeralKey,
    pub(super) term: IdentityTerm,
    pub(super) hello_pub: [u8; 32],
    pub(super) hello_id: String,
    pub(super) ack_id: String,
    pub(super) at: Timestamp,
    pub(super) transport: TransportProfile,
    pub(super) peer_transport: Option<TransportProfile>,
}

/// Refusals that close the connection and count towards blocking the peer.
pub(super) fn is_hard(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::SigInvalid | ErrorCode::SigUnknownSigner | ErrorCode::HsReplay
    )
}
