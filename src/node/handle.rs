//! The application's handle on a running node: every command, with its answer.

use std::time::Duration;

use libp2p::PeerId;
use mesh_core::NodeId;
use mesh_signal::group::DiscoveryKey;
use tokio::sync::{mpsc, oneshot};

use super::api::{
    Command, Dht, Found, GrantInfo, GroupMember, HandleError, Reply, Route, Target, Withdrawn,
};
use super::status::{PeerInfo, RoutingEntry, Status};

/// A cloneable handle to a running [`Node`](super::Node).
#[derive(Debug, Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    timeout: Duration,
}

impl NodeHandle {
    pub(crate) fn new(tx: mpsc::Sender<Command>, timeout: Duration) -> Self {
        NodeHandle { tx, timeout }
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, HandleError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| HandleError::Stopped)?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(HandleError::Stopped),
            Err(_) => Err(HandleError::TimedOut {
                what: None,
                after: self.timeout,
            }),
        }
    }

    /// Connects to `target` (looking a node id up first); answers with its peer id.
    pub async fn dial(&self, target: Target) -> Result<PeerId, HandleError> {
        self.ask(|reply| Command::Dial { target, reply }).await
    }

    /// Finds `node`: the store, then the mesh DHT, then Amino peer routing.
    pub async fn lookup(&self, node: NodeId) -> Result<Found, HandleError> {
        self.ask(|reply| Command::Lookup {
            node,
            fresh: false,
            reply,
        })
        .await
    }

    /// Finds `node` without the local store: the mesh DHT, then Amino peer routing.
    pub async fn lookup_fresh(&self, node: NodeId) -> Result<Found, HandleError> {
        self.ask(|reply| Command::Lookup {
            node,
            fresh: true,
            reply,
        })
        .await
    }

    /// Signs and publishes a fresh advertisement now; answers with its sequence number.
    /// This also ends a withdrawal.
    pub async fn publish(&self) -> Result<u64, HandleError> {
        self.ask(|reply| Command::Publish { reply }).await
    }

    /// Withdraws this node's advertisement: signs a `node-withdrawal.v1` above every
    /// advertisement issued so far, keeps its tombstone in the store, sends it to every
    /// session peer and replaces the mesh-DHT record with it. The node then stops
    /// refreshing its advertisement until [`NodeHandle::publish`] (or a restart).
    pub async fn withdraw(&self) -> Result<Withdrawn, HandleError> {
        self.ask(|reply| Command::Withdraw { reply }).await
    }

    /// Sends a signal-marker envelope with `marker/ref` = `text`; answers with its
    /// `message/id` once the peer accepted it.
    pub async fn send_marker(&self, target: Target, text: String) -> Result<String, HandleError> {
        self.ask(|reply| Command::SendMarker {
            target,
            text,
            reply,
        })
        .await
    }

    /// Subscribes to a gossipsub topic (false when already subscribed).
    pub async fn subscribe(&self, topic: String) -> Result<bool, HandleError> {
        self.ask(|reply| Command::Subscribe { topic, reply }).await
    }

    /// Publishes on a gossipsub topic; answers with the message id.
    pub async fn publish_topic(&self, topic: String, data: Vec<u8>) -> Result<String, HandleError> {
        self.ask(|reply| Command::PublishTopic { topic, data, reply })
            .await
    }

    /// Announces this node as a provider of `key` on `dht` (a rendezvous record: who
    /// has X); answers once the closest peers stored it. Kademlia republishes it.
    pub async fn provide(&self, dht: Dht, key: Vec<u8>) -> Result<(), HandleError> {
        self.ask(|reply| Command::Provide { dht, key, reply }).await
    }

    /// The providers of `key` on `dht` that the query found (possibly none; at most
    /// 1,024, the answers being the answering peers' to choose).
    pub async fn find_providers(&self, dht: Dht, key: Vec<u8>) -> Result<Vec<PeerId>, HandleError> {
        self.ask(|reply| Command::FindProviders { dht, key, reply })
            .await
    }

    /// Connects to `node` by the routing policy and says which path won, with timings.
    pub async fn connect(&self, node: NodeId) -> Result<Route, HandleError> {
        self.ask(|reply| Command::Connect { node, reply }).await
    }

    /// Sends `data` (at most [`super::api::MAX_SETUP_BYTES`]) to `node` as a
    /// `setup_payload` in a new correlation (a `connect_request` with purpose `setup`,
    /// answered by the other node), directly or through a signaling host. Answers the
    /// correlation id once the payload went out.
    pub async fn send_signal(
        &self,
        node: NodeId,
        data: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<String, HandleError> {
        self.ask(|reply| Command::SendSignal {
            node,
            data,
            content_type,
            reply,
        })
        .await
    }

    /// Joins the discovery-key swarm `key`: subscribes to its topic, announces this
    /// node, registers as a provider and looks for members. `false` when already in it.
    pub async fn join_swarm(&self, key: DiscoveryKey) -> Result<bool, HandleError> {
        self.ask(|reply| Command::JoinGroup { key, reply }).await
    }

    /// Leaves the swarm `key`, announcing the departure. `false` when not in it.
    pub async fn leave_swarm(&self, key: DiscoveryKey) -> Result<bool, HandleError> {
        self.ask(|reply| Command::LeaveGroup { key, reply }).await
    }

    /// The members of the swarm `key` this node knows (not itself); `E_PROTO_INVALID`
    /// when not in it.
    pub async fn swarm_members(&self, key: DiscoveryKey) -> Result<Vec<GroupMember>, HandleError> {
        self.ask(|reply| Command::GroupMembers { key, reply }).await
    }

    /// The relay's live admission grants (`E_PROTO_INVALID` when not a relay).
    pub async fn relay_grants(&self) -> Result<Vec<GrantInfo>, HandleError> {
        self.ask(|reply| Command::RelayGrants { reply }).await
    }

    /// Revokes `node`'s grants at this relay, blocks it for a while and closes its
    /// connections. Whether it held a grant.
    pub async fn relay_revoke(&self, node: NodeId) -> Result<bool, HandleError> {
        self.ask(|reply| Command::RelayRevoke { node, reply }).await
    }

    /// The node's status.
    pub async fn status(&self) -> Result<Status, HandleError> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, HandleError> {
        self.ask(|reply| Command::Peers { reply }).await
    }

    /// The routing table of one of the node's DHTs: each peer with the addresses the
    /// table holds for it (what the DHT hands to others who ask).
    pub async fn routing_table(&self, dht: Dht) -> Result<Vec<RoutingEntry>, HandleError> {
        self.ask(|reply| Command::RoutingTable { dht, reply }).await
    }

    /// Sends a participant-signed signal-marker envelope (`marker/ref` = `text`, signed
    /// `swarm/key` = `key`) to every member of the swarm `key`, on the swarm's gossipsub
    /// topic; answers its `message/id` once it went out to at least one peer. The node
    /// must be in the swarm (`E_PROTO_INVALID` otherwise); no subscribed peer is
    /// `E_TRANSPORT_UNAVAILABLE`.
    pub async fn send_swarm_marker(
        &self,
        key: DiscoveryKey,
        text: String,
    ) -> Result<String, HandleError> {
        self.ask(|reply| Command::SendSwarmMarker { key, text, reply })
            .await
    }

    /// Asks the node to shut down (announce departure, flush, stop).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}
