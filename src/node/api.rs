//! The node's API types: what the application asks (`Command`, built by
//! [`super::NodeHandle`]), what it gets back ([`Found`], [`Route`], [`GroupMember`],
//! [`GrantInfo`]) and how a call fails ([`HandleError`]).
//!
//! This module imports nothing from the node's components (the way Lighthouse keeps its
//! `api_types`): components import it, never the other way round.

use std::str::FromStr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, MeshError, NodeId};
use mesh_signal::group::DiscoveryKey;
use serde::Serialize;
use tokio::sync::oneshot;

use super::status::{PeerInfo, RoutingEntry, Status};

/// Largest setup payload [`super::NodeHandle::send_signal`] takes, bytes (before base64).
pub const MAX_SETUP_BYTES: usize = mesh_core::families::MAX_SETUP_B64 / 4 * 3;

/// Who to reach: a node id, a libp2p peer id, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A node id (`node:did:key:z6Mk…`).
    Node(NodeId),
    /// A peer id (`12D3KooW…`).
    Peer(PeerId),
    /// A multiaddr, ideally ending in `/p2p/<peer id>`.
    Addr(Multiaddr),
}

impl FromStr for Target {
    type Err = MeshError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.starts_with('/') {
            return s
                .parse()
                .map(Target::Addr)
                .map_err(|e| MeshError::invalid(format!("multiaddr {s}: {e}")));
        }
        if s.starts_with("node:") {
            return NodeId::parse(s)
                .map(Target::Node)
                .map_err(|e| MeshError::invalid(format!("node id {s}: {e}")));
        }
        s.parse()
            .map(Target::Peer)
            .map_err(|_| MeshError::invalid(format!("{s}: not a node id, peer id or multiaddr")))
    }
}

impl Target {
    /// The peer this target names, when it names one. For an address that is the
    /// `/p2p/` after its last `/p2p-circuit` (the relay's `/p2p/` before it names the
    /// relay, not the target).
    pub fn peer(&self) -> Option<PeerId> {
        match self {
            Target::Node(n) => n.to_peer_id().ok(),
            Target::Peer(p) => Some(*p),
            Target::Addr(a) => a.iter().fold(None, |peer, p| match p {
                Protocol::P2p(p) => Some(p),
                Protocol::P2pCircuit => None,
                _ => peer,
            }),
        }
    }
}

/// Which of the node's two Kademlia DHTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dht {
    /// The public Amino DHT (`/ipfs/kad/1.0.0`).
    Amino,
    /// The mesh DHT (`/mesh/kad/1.0.0`).
    Mesh,
}

/// The answer to a lookup.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The node.
    pub node: String,
    /// Where it can be dialed.
    pub addrs: Vec<String>,
    /// The verified advertisement (absent when only Amino peer routing knew it).
    pub advert: Option<serde_json::Value>,
    /// Where the answer came from: `store`, `mesh-dht` or `amino`.
    pub source: &'static str,
    /// The node withdrew its advertisement: the withdrawal's sequence number (then
    /// `advert` is `None` and `addrs` empty). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<u64>,
}

/// What `NodeHandle::withdraw` did.
#[derive(Debug, Clone, Serialize)]
pub struct Withdrawn {
    /// The withdrawal's sequence number (above every advertisement issued so far).
    pub sequence_no: u64,
    /// The signed `node-withdrawal.v1` (JSON form).
    pub withdrawal: serde_json::Value,
    /// Session peers it was sent to over `/mesh/advert/1.0.0`.
    pub sent_to_peers: usize,
    /// Whether the withdrawal record went out to the mesh DHT (it is retried when a
    /// mesh-DHT peer appears).
    pub dht_put: bool,
}

/// One stage's outcome in a [`Route`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageReport {
    /// The stage.
    pub stage: &'static str,
    /// Whether it ended in the connection.
    pub ok: bool,
    /// How long it ran, milliseconds.
    pub ms: u64,
    /// Why it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The answer to `connect`: the chosen path and the timings (also traced as
/// route/selected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The node.
    pub node: String,
    /// Its peer id.
    pub peer: String,
    /// `existing` (already connected), `direct`, `signaling` or `relay`.
    pub path: &'static str,
    /// The remote address of the connection.
    pub addr: String,
    /// Time from the request to the connection, milliseconds.
    pub ms: u64,
    /// Every stage that ran.
    pub stages: Vec<StageReport>,
}

/// A member of a discovery-key group (a "swarm" of the specifications) as the
/// application sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// Its node id.
    pub node: String,
    /// The addresses it announced.
    pub addrs: Vec<String>,
    /// When it counts as gone unless it re-announces.
    pub expires_at: String,
}

/// A live grant as `meshd relay grants` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantInfo {
    /// The admitted node.
    pub node: String,
    /// `ticket/id`.
    pub ticket: String,
    /// `reservation` or `circuit`.
    pub purpose: String,
    /// Granted without a request: a standard libp2p client the policy admitted from
    /// its peer id (ticket `ig:…`; requested grants are `rg:…`).
    pub implicit: bool,
    /// When it lapses.
    pub expires_at: String,
    /// Circuits open now from this node.
    pub open_circuits: usize,
    /// Circuits allowed at once.
    pub circuits: u32,
    /// Bytes per circuit.
    pub circuit_bytes: u64,
    /// Seconds per circuit.
    pub circuit_secs: u64,
}

/// Why a call on [`super::NodeHandle`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandleError {
    /// The node is not running (stopped, stopping, or every handle's node is gone).
    #[error("the node has stopped")]
    Stopped,
    /// Nothing answered in time.
    #[error("{}no answer within {} s", what.map(|w| format!("{w}: ")).unwrap_or_default(), after.as_secs())]
    TimedOut {
        /// What was waited for (a connection, a lookup…), when the node knows.
        what: Option<&'static str>,
        /// How long was waited.
        after: Duration,
    },
    /// The node or a peer refused, with one of the frozen codes.
    #[error(transparent)]
    Refused(#[from] MeshError),
}

impl HandleError {
    /// The frozen code the failure carries in JSON and on the CLI: the refusal's own,
    /// `E_TRANSPORT_UNAVAILABLE` for a stopped node or a timeout.
    pub fn code(&self) -> ErrorCode {
        match self {
            HandleError::Stopped | HandleError::TimedOut { .. } => ErrorCode::TransportUnavailable,
            HandleError::Refused(e) => e.code,
        }
    }

    /// A timeout of `what` after `after`.
    pub(crate) fn timed_out(what: &'static str, after: Duration) -> Self {
        HandleError::TimedOut {
            what: Some(what),
            after,
        }
    }
}

impl From<HandleError> for MeshError {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Refused(e) => e,
            other => MeshError::new(other.code(), other.to_string()),
        }
    }
}

/// Where the node answers a command.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, HandleError>>;

/// Answers `reply` with `result` (a refusal keeps its code).
pub(crate) fn answer<T>(reply: Reply<T>, result: Result<T, MeshError>) {
    let _ = reply.send(result.map_err(HandleError::Refused));
}

/// What the node is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Dial {
        target: Target,
        reply: Reply<PeerId>,
    },
    Lookup {
        node: NodeId,
        /// Skip the local store (ask the DHTs).
        fresh: bool,
        reply: Reply<Found>,
    },
    Publish {
        reply: Reply<u64>,
    },
    Withdraw {
        reply: Reply<Withdrawn>,
    },
    SendMarker {
        target: Target,
        text: String,
        reply: Reply<String>,
    },
    Subscribe {
        topic: String,
        reply: Reply<bool>,
    },
    PublishTopic {
        topic: String,
        data: Vec<u8>,
        reply: Reply<String>,
    },
    Provide {
        dht: Dht,
        key: Vec<u8>,
        reply: Reply<()>,
    },
    FindProviders {
        dht: Dht,
        key: Vec<u8>,
        reply: Reply<Vec<PeerId>>,
    },
    Connect {
        node: NodeId,
        reply: Reply<Route>,
    },
    SendSignal {
        node: NodeId,
        data: Vec<u8>,
        content_type: Option<String>,
        reply: Reply<String>,
    },
    JoinGroup {
        key: DiscoveryKey,
        reply: Reply<bool>,
    },
    LeaveGroup {
        key: DiscoveryKey,
        reply: Reply<bool>,
    },
    GroupMembers {
        key: DiscoveryKey,
        reply: Reply<Vec<GroupMember>>,
    },
    RelayGrants {
        reply: Reply<Vec<GrantInfo>>,
    },
    RelayRevoke {
        node: NodeId,
        reply: Reply<bool>,
    },
    Status {
        reply: Reply<Status>,
    },
    Peers {
        reply: Reply<Vec<PeerInfo>>,
    },
    RoutingTable {
        dht: Dht,
        reply: Reply<Vec<RoutingEntry>>,
    },
    SendSwarmMarker {
        key: DiscoveryKey,
        text: String,
        reply: Reply<String>,
    },
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let n = "node:did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        let t: Target = n.parse().unwrap();
        assert!(matches!(t, Target::Node(_)));
        let peer = t.peer().unwrap();
        let t: Target = peer.to_string().parse().unwrap();
        assert_eq!(t, Target::Peer(peer));
        let t: Target = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        assert_eq!(t.peer(), Some(peer));
        let t: Target = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert_eq!(t.peer(), None);
        // Through a relay: the target behind it, not the relay.
        let relay = PeerId::random();
        let t: Target = format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}/p2p-circuit/p2p/{peer}")
            .parse()
            .unwrap();
        assert_eq!(t.peer(), Some(peer));
        let t: Target = format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        assert_eq!(t.peer(), None);
        assert!("nonsense".parse::<Target>().is_err());
        assert!("node:did:key:z6Mkbad".parse::<Target>().is_err());
    }

    #[test]
    fn handle_errors_keep_their_codes_and_texts() {
        assert_eq!(HandleError::Stopped.code(), ErrorCode::TransportUnavailable);
        let t = HandleError::TimedOut {
            what: None,
            after: Duration::from_secs(30),
        };
        assert_eq!(t.to_string(), "no answer within 30 s");
        let t = HandleError::timed_out("lookup", Duration::from_secs(35));
        assert_eq!(t.to_string(), "lookup: no answer within 35 s");
        assert_eq!(t.code(), ErrorCode::TransportUnavailable);
        let r = HandleError::from(MeshError::invalid("bad"));
        assert_eq!(r.code(), ErrorCode::ProtoInvalid);
        let m = MeshError::from(HandleError::Stopped);
        assert_eq!(m.code, ErrorCode::TransportUnavailable);
        assert_eq!(m.detail, "the node has stopped");
    }
}
