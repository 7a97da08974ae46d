//! What the behaviour tells the application: its events, and the sessions it holds.

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::ping;
use libp2p::swarm::ConnectionId;
use mesh_core::{MeshError, NodeId, Timestamp, TraceEvent, TraceEventType, TraceSink};

use crate::secret::{Role, SessionSecret};
use crate::transport::TransportProfile;

/// An established session.
#[derive(Debug)]
pub struct Session {
    /// The peer's node id.
    pub node: NodeId,
    /// The capabilities the peer proved with valid passports.
    pub capabilities: Vec<String>,
    /// The capabilities its advertisement listed without a valid, unexpired passport
    /// (at most 32).
    pub unproven_capabilities: Vec<String>,
    /// The secret both ends derived (the session binding).
    pub secret: Arc<SessionSecret>,
    /// Whether this side sent the hello.
    pub role: Role,
    /// When the session was established.
    pub established_at: Timestamp,
    /// The transport of the connection the handshake ran on, as this side sees it (and
    /// reported in its own hello or ack).
    pub transport: TransportProfile,
    /// The `transport/profile` the peer's hello or ack reported (unsigned framing: what
    /// the peer says; `None` when it said nothing this node knows).
    pub peer_transport: Option<TransportProfile>,
}

/// Events for the application.
#[derive(Debug)]
pub enum Event {
    /// This side sent a hello to `peer`.
    HandshakeStarted {
        /// The peer.
        peer: PeerId,
    },
    /// Hello/ack and capability exchange are done.
    SessionEstablished {
        /// The peer.
        peer: PeerId,
        /// Its node id.
        node: NodeId,
        /// Its proven capabilities.
        capabilities: Vec<String>,
    },
    /// Something failed; `by_peer` when the peer refused us, otherwise we refused it
    /// (`hard` refusals close the connection).
    Rejected {
        /// The peer.
        peer: PeerId,
        /// Why, with its code.
        error: MeshError,
        /// We refused a hard failure (connection closed).
        hard: bool,
        /// The peer refused us.
        by_peer: bool,
    },
    /// Pings to a peer with a session failed `keepalive_failures` times in a row.
    KeepaliveLost {
        /// The peer.
        peer: PeerId,
    },
    /// Pings to that peer succeed again.
    KeepaliveRestored {
        /// The peer.
        peer: PeerId,
    },
    /// The last connection to a peer with a session closed.
    SessionClosed {
        /// The peer.
        peer: PeerId,
        /// Its node id.
        node: NodeId,
    },
    /// One result of the behaviour's own libp2p ping (`/ipfs/ping/1.0.0`), as
    /// `libp2p::ping::Event` has it. Keepalive has already counted it (any
    /// `KeepaliveLost`/`KeepaliveRestored` it causes follows this event); it is passed
    /// on for round-trip times and ping metrics.
    Pinged {
        /// The peer.
        peer: PeerId,
        /// The connection the ping ran on.
        connection: ConnectionId,
        /// The round-trip time, or why the ping failed.
        result: Result<Duration, ping::Failure>,
    },
}

impl Event {
    /// The peer the event is about.
    pub fn peer(&self) -> PeerId {
        match self {
            Event::HandshakeStarted { peer }
            | Event::SessionEstablished { peer, .. }
            | Event::Rejected { peer, .. }
            | Event::KeepaliveLost { peer }
            | Event::KeepaliveRestored { peer }
            | Event::SessionClosed { peer, .. }
            | Event::Pinged { peer, .. } => *peer,
        }
    }
}

/// Emits a trace event about `peer` (when the sink takes events).
pub(crate) fn trace(
    sink: &dyn TraceSink,
    kind: TraceEventType,
    node: NodeId,
    peer: &PeerId,
    detail: Option<serde_json::Value>,
    now: &Timestamp,
) {
    if !sink.enabled() {
        return;
    }
    let mut e = TraceEvent::new(kind, node, now.clone()).with_peer(peer);
    if let Some(d) = detail {
        e = e.with_detail(d);
    }
    sink.emit(&e);
}
