//! The application's handle on a running node: commands with answers.

use std::str::FromStr;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{Artifact, ErrorCode, MeshError, NodeAdvertisement, NodeId};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::status::{PeerInfo, Status};

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
    /// The peer this target names, when it names one.
    pub fn peer(&self) -> Option<PeerId> {
        match self {
            Target::Node(n) => n.to_peer_id().ok(),
            Target::Peer(p) => Some(*p),
            // The last `/p2p`: in a circuit address (`…/p2p/<relay>/p2p-circuit/p2p/<peer>`)
            // the relay's comes first and is not the target.
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
}

impl Found {
    pub(crate) fn from_advert(ad: &NodeAdvertisement, source: &'static str) -> Self {
        Found {
            node: ad.node_id().to_string(),
            addrs: super::routing::advert_addrs(ad)
                .iter()
                .map(ToString::to_string)
                .collect(),
            advert: Some(ad.to_json()),
            source,
        }
    }
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, MeshError>>;

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
    Swarm(super::swarms::SwarmCommand),
    Route(super::connect::RouteCommand),
    Relay(super::relays::RelayCommand),
    Status {
        reply: oneshot::Sender<Status>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Shutdown,
}

/// A cloneable handle to a running [`Node`](super::Node).
#[derive(Debug, Clone)]
pub struct NodeHandle {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) timeout: Duration,
}

fn stopped() -> MeshError {
    MeshError::new(ErrorCode::TransportUnavailable, "the node has stopped")
}

impl NodeHandle {
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| stopped())?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(MeshError::new(
                ErrorCode::TransportUnavailable,
                format!("no answer within {} s", self.timeout.as_secs()),
            )),
        }
    }

    /// Connects to `target` (looking a node id up first); answers with its peer id.
    pub async fn dial(&self, target: Target) -> Result<PeerId, MeshError> {
        self.ask(|reply| Command::Dial { target, reply }).await
    }

    /// Finds `node`: the store, then the mesh DHT, then Amino peer routing.
    pub async fn lookup(&self, node: NodeId) -> Result<Found, MeshError> {
        self.ask(|reply| Command::Lookup {
            node,
            fresh: false,
            reply,
        })
        .await
    }

    /// Finds `node` without the local store: the mesh DHT, then Amino peer routing.
    pub async fn lookup_fresh(&self, node: NodeId) -> Result<Found, MeshError> {
        self.ask(|reply| Command::Lookup {
            node,
            fresh: true,
            reply,
        })
        .await
    }

    /// Signs and publishes a fresh advertisement now; answers with its sequence number.
    pub async fn publish(&self) -> Result<u64, MeshError> {
        self.ask(|reply| Command::Publish { reply }).await
    }

    /// Sends a signal-marker envelope with `marker/ref` = `text`; answers with its
    /// `message/id` once the peer accepted it.
    pub async fn send_marker(&self, target: Target, text: String) -> Result<String, MeshError> {
        self.ask(|reply| Command::SendMarker {
            target,
            text,
            reply,
        })
        .await
    }

    /// Subscribes to a gossipsub topic (false when already subscribed).
    pub async fn subscribe(&self, topic: String) -> Result<bool, MeshError> {
        self.ask(|reply| Command::Subscribe { topic, reply }).await
    }

    /// Publishes on a gossipsub topic; answers with the message id.
    pub async fn publish_topic(&self, topic: String, data: Vec<u8>) -> Result<String, MeshError> {
        self.ask(|reply| Command::PublishTopic { topic, data, reply })
            .await
    }

    /// Announces this node as a provider of `key` on `dht` (a rendezvous record: who
    /// has X); answers once the closest peers stored it. Kademlia republishes it.
    pub async fn provide(&self, dht: Dht, key: Vec<u8>) -> Result<(), MeshError> {
        self.ask(|reply| Command::Provide { dht, key, reply }).await
    }

    /// The providers of `key` on `dht` that the query found (possibly none).
    pub async fn find_providers(&self, dht: Dht, key: Vec<u8>) -> Result<Vec<PeerId>, MeshError> {
        self.ask(|reply| Command::FindProviders { dht, key, reply })
            .await
    }

    /// The node's status.
    pub async fn status(&self) -> Result<Status, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Status { reply: tx })
            .await
            .map_err(|_| stopped())?;
        tokio::time::timeout(self.timeout, rx)
            .await
            .map_err(|_| stopped())?
            .map_err(|_| stopped())
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, MeshError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Peers { reply: tx })
            .await
            .map_err(|_| stopped())?;
        tokio::time::timeout(self.timeout, rx)
            .await
            .map_err(|_| stopped())?
            .map_err(|_| stopped())
    }

    /// Asks the node to shut down (announce departure, flush, stop).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
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
        // A circuit names the peer behind the relay, not the relay.
        let relay = PeerId::random();
        let circuit = format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}/p2p-circuit");
        let t: Target = format!("{circuit}/p2p/{peer}").parse().unwrap();
        assert_eq!(t.peer(), Some(peer));
        let t: Target = circuit.parse().unwrap();
        assert_eq!(t.peer(), None);
        assert!("nonsense".parse::<Target>().is_err());
        assert!("node:did:key:z6Mkbad".parse::<Target>().is_err());
    }
}
