//! What the relay's admission side tells the application, and what it refused.

use std::fmt;

use libp2p::{PeerId, relay};
use mesh_core::{MeshError, NodeId, RelayAdmissionGrant};

use crate::grants::Grant;

/// What the relay refused: a reservation or a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requested {
    /// A reservation (or its renewal).
    Reservation,
    /// A circuit (the peer is its source).
    Circuit,
}

impl Requested {
    /// `reservation` or `circuit` (as in traces).
    pub fn as_str(self) -> &'static str {
        match self {
            Requested::Reservation => "reservation",
            Requested::Circuit => "circuit",
        }
    }
}

impl fmt::Display for Requested {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the relay tells the application.
#[derive(Debug)]
pub enum Event {
    /// A node was admitted.
    Granted {
        /// The connection's peer.
        peer: PeerId,
        /// The signed grant it received.
        grant: Box<RelayAdmissionGrant>,
    },
    /// A peer without a grant (a standard libp2p relay client, or a libmesh node that
    /// did not ask) was admitted for a reservation or circuit under an implicit grant:
    /// the policy allowed it from its peer id and the relay's advertisements
    /// ([`crate::implicit`]). Also when an implicit grant is renewed.
    Admitted {
        /// The peer.
        peer: PeerId,
        /// What it asked the relay for.
        what: Requested,
        /// The grant, as the table holds it ([`Grant::implicit`] set).
        grant: Grant,
    },
    /// A request was refused (policy, bad signature, replay, revoked node, ...).
    Denied {
        /// The connection's peer.
        peer: PeerId,
        /// Why, with its code.
        error: MeshError,
    },
    /// The relay refused a reservation or circuit because no live grant covers it.
    Refused {
        /// The peer.
        peer: PeerId,
        /// A reservation or a circuit.
        what: Requested,
        /// Why.
        error: MeshError,
    },
    /// A node's grants were revoked; its connections are being closed.
    Revoked {
        /// The node.
        node: NodeId,
    },
    /// An event of the circuit relay v2 server itself, already counted by the admission
    /// side (reservations for the load figure, circuits per node id).
    Relay(relay::Event),
}
