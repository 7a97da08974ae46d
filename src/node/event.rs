//! The one event type the application sees.

use libp2p::{Multiaddr, PeerId};
use mesh_core::NodeId;
use serde_json::{Value, json};

/// Something the node did or saw.
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// Listening on a new address.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// A connection to `peer` came up (the first one).
    PeerConnected {
        /// The peer.
        peer: PeerId,
        /// The remote address.
        addr: Multiaddr,
    },
    /// identify told us what `peer` is.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Its agent version.
        agent: String,
        /// Its identify protocol version.
        protocol_version: String,
        /// The protocols it speaks.
        protocols: Vec<String>,
        /// The addresses it listens on.
        listen_addrs: Vec<Multiaddr>,
    },
    /// A ping to `peer` succeeded.
    Pinged {
        /// The peer.
        peer: PeerId,
        /// The round trip.
        rtt: std::time::Duration,
    },
    /// The last connection to `peer` closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A mesh session is up (handshake and capabilities verified).
    SessionEstablished {
        /// The peer.
        peer: PeerId,
        /// Its node id.
        node: NodeId,
        /// Its proven capabilities.
        capabilities: Vec<String>,
    },
    /// A mesh session ended.
    SessionClosed {
        /// The peer.
        peer: PeerId,
        /// Its node id.
        node: NodeId,
    },
    /// A handshake was refused (by us or by the peer).
    SessionRejected {
        /// The peer.
        peer: PeerId,
        /// The frozen code.
        code: String,
        /// Why.
        message: String,
        /// The peer refused us.
        by_peer: bool,
    },
    /// Keepalive to a session peer failed repeatedly.
    KeepaliveLost {
        /// The peer.
        peer: PeerId,
    },
    /// Keepalive recovered.
    KeepaliveRestored {
        /// The peer.
        peer: PeerId,
    },
    /// A verified advertisement was stored.
    AdvertStored {
        /// The advertised node.
        node: NodeId,
        /// Its sequence number.
        sequence_no: u64,
    },
    /// The node published a new advertisement of itself.
    OwnAdvertPublished {
        /// Its sequence number.
        sequence_no: u64,
        /// The advertised addresses.
        addrs: Vec<Multiaddr>,
    },
    /// A verified signal-marker envelope arrived.
    MarkerReceived {
        /// The peer that delivered it.
        peer: PeerId,
        /// The signing participant.
        participant: String,
        /// Its `message/id`.
        message_id: String,
        /// Its `marker/ref`.
        marker_ref: String,
    },
    /// A verified signal-marker envelope to a swarm this node is in arrived on the
    /// swarm's topic.
    SwarmMarkerReceived {
        /// The swarm.
        swarm: mesh_signal::group::DiscoveryKey,
        /// The author (the gossipsub message's signed source; the signer's peer id).
        peer: PeerId,
        /// The signing participant.
        participant: String,
        /// Its `message/id`.
        message_id: String,
        /// Its `marker/ref`.
        marker_ref: String,
    },
    /// A gossipsub message passed validation.
    GossipMessage {
        /// The topic.
        topic: String,
        /// The signed author.
        source: Option<PeerId>,
        /// The payload.
        data: Vec<u8>,
    },
    /// AutoNAT tested one of our addresses.
    Reachability {
        /// The address tested.
        addr: Multiaddr,
        /// Whether a server could reach it.
        reachable: bool,
    },
    /// `connect` (or a dial or marker to a node id) found its path (also traced as
    /// route/selected).
    RouteSelected {
        /// The path and timings.
        route: super::api::Route,
    },
    /// A verified signaling frame for this node.
    SignalReceived {
        /// The signer.
        from: NodeId,
        /// The peer that delivered it (`from` itself or a signaling host).
        via: PeerId,
        /// The frame kind.
        kind: String,
        /// The correlation.
        correlation: String,
        /// The payload (candidates, a setup payload's `data/b64`, a reject's code).
        payload: Value,
    },
    /// A member arrived in one of our swarms.
    SwarmMemberJoined {
        /// The swarm.
        swarm: mesh_signal::group::DiscoveryKey,
        /// The member.
        node: NodeId,
        /// The addresses it announced.
        addrs: Vec<String>,
    },
    /// A member left one of our swarms: `leave` (it said so), `expired`, or `evicted`
    /// (the member table was full and it was not seen alive).
    SwarmMemberLeft {
        /// The swarm.
        swarm: mesh_signal::group::DiscoveryKey,
        /// The member.
        node: NodeId,
        /// `leave`, `expired` or `evicted`.
        reason: &'static str,
    },
}

impl NodeEvent {
    /// A JSON object (`{"event": "...", ...}`) for logs and the control API.
    pub fn to_json(&self) -> Value {
        match self {
            NodeEvent::Listening { addr } => {
                json!({"event": "listening", "addr": addr.to_string()})
            }
            NodeEvent::PeerConnected { peer, addr } => {
                json!({"event": "peer-connected", "peer": peer.to_string(), "addr": addr.to_string()})
            }
            NodeEvent::Identified {
                peer,
                agent,
                protocol_version,
                protocols,
                listen_addrs,
            } => json!({
                "event": "identified", "peer": peer.to_string(), "agent": agent,
                "protocol_version": protocol_version, "protocols": protocols,
                "listen_addrs": listen_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
            NodeEvent::Pinged { peer, rtt } => json!({
                "event": "pinged", "peer": peer.to_string(),
                "rtt_ms": rtt.as_secs_f64() * 1000.0,
            }),
            NodeEvent::PeerDisconnected { peer } => {
                json!({"event": "peer-disconnected", "peer": peer.to_string()})
            }
            NodeEvent::SessionEstablished {
                peer,
                node,
                capabilities,
            } => json!({
                "event": "session-established", "peer": peer.to_string(),
                "node": node.to_string(), "capabilities": capabilities,
            }),
            NodeEvent::SessionClosed { peer, node } => json!({
                "event": "session-closed", "peer": peer.to_string(), "node": node.to_string(),
            }),
            NodeEvent::SessionRejected {
                peer,
                code,
                message,
                by_peer,
            } => json!({
                "event": "session-rejected", "peer": peer.to_string(), "code": code,
                "message": message, "by_peer": by_peer,
            }),
            NodeEvent::KeepaliveLost { peer } => {
                json!({"event": "keepalive-lost", "peer": peer.to_string()})
            }
            NodeEvent::KeepaliveRestored { peer } => {
                json!({"event": "keepalive-restored", "peer": peer.to_string()})
            }
            NodeEvent::AdvertStored { node, sequence_no } => json!({
                "event": "advert-stored", "node": node.to_string(), "sequence_no": sequence_no,
            }),
            NodeEvent::OwnAdvertPublished { sequence_no, addrs } => json!({
                "event": "own-advert-published", "sequence_no": sequence_no,
                "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
            NodeEvent::MarkerReceived {
                peer,
                participant,
                message_id,
                marker_ref,
            } => json!({
                "event": "marker-received", "peer": peer.to_string(), "participant": participant,
                "message_id": message_id, "marker_ref": marker_ref,
            }),
            NodeEvent::SwarmMarkerReceived {
                swarm,
                peer,
                participant,
                message_id,
                marker_ref,
            } => json!({
                "event": "marker-received", "swarm": swarm.to_hex(), "peer": peer.to_string(),
                "participant": participant, "message_id": message_id, "marker_ref": marker_ref,
            }),
            NodeEvent::GossipMessage {
                topic,
                source,
                data,
            } => json!({
                "event": "gossip-message", "topic": topic,
                "source": source.map(|s| s.to_string()),
                "data": String::from_utf8_lossy(data),
            }),
            NodeEvent::Reachability { addr, reachable } => json!({
                "event": "reachability", "addr": addr.to_string(), "reachable": reachable,
            }),
            NodeEvent::RouteSelected { route } => {
                json!({"event": "route-selected", "route": route})
            }
            NodeEvent::SignalReceived {
                from,
                via,
                kind,
                correlation,
                payload,
            } => json!({
                "event": "signal-received", "from": from.to_string(), "via": via.to_string(),
                "kind": kind, "correlation": correlation, "payload": payload,
            }),
            NodeEvent::SwarmMemberJoined { swarm, node, addrs } => json!({
                "event": "swarm-member-joined", "swarm": swarm.to_hex(),
                "node": node.to_string(), "addrs": addrs,
            }),
            NodeEvent::SwarmMemberLeft {
                swarm,
                node,
                reason,
            } => json!({
                "event": "swarm-member-left", "swarm": swarm.to_hex(),
                "node": node.to_string(), "reason": reason,
            }),
        }
    }
}
