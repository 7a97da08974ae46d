//! What `/status` and `meshd status` / `meshd peers` report.

use serde::Serialize;

/// The node's status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// `did:key:…`.
    pub node_id: String,
    /// The libp2p peer id.
    pub peer_id: String,
    /// The agent version.
    pub agent: String,
    /// The version of this build, with its git revision when built from a checkout.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Listen addresses.
    pub listen_addrs: Vec<String>,
    /// Confirmed external addresses.
    pub external_addrs: Vec<String>,
    /// Reachability as AutoNAT found it.
    pub nat: NatStatus,
    /// Connected peers.
    pub connected_peers: usize,
    /// Mesh peers by governor state (`hot`, `warm`, `cold`, `blocked`) and sessions.
    pub mesh: MeshStatus,
    /// DHT sizes.
    pub dht: DhtStatus,
    /// Advertisements held.
    pub adverts_stored: usize,
    /// The sequence number of the node's own advertisement.
    pub own_advert_sequence: Option<u64>,
    /// Gossipsub topics subscribed.
    pub topics: Vec<String>,
    /// Distinct peers in the gossipsub meshes of those topics.
    pub gossip_mesh_peers: usize,
    /// Events the application did not take in time (the event queue is bounded).
    pub events_dropped: u64,
    /// Gossipsub messages that never went out to a peer because its send queue was full
    /// or they waited there too long (gossipsub's `SlowPeer` reports), since start.
    pub gossip_send_failed: u64,
    /// Trace events of refused input not written because their source's trace budget
    /// was spent (60, then one a second per source), since start.
    pub traces_suppressed: u64,
    /// Members that came into this node's swarm tables since start, by how they came.
    pub swarm_arrivals: SwarmArrivals,
}

/// Members that came into the swarm tables, by how they came (the `via` of the
/// `swarm/joined` traces).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SwarmArrivals {
    /// Their presence came by gossip.
    pub gossip: u64,
    /// In the member table a newcomer fetched.
    pub table: u64,
    /// In a periodic check of the table against a subscriber's: gossip had lost
    /// their presence, or a table server had left them out.
    pub check: u64,
}

/// Reachability.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NatStatus {
    /// `unknown`, `public` (an address was confirmed reachable) or `private` (tests
    /// failed and none succeeded).
    pub status: &'static str,
    /// Addresses AutoNAT found reachable.
    pub reachable: Vec<String>,
    /// Addresses AutoNAT found unreachable.
    pub unreachable: Vec<String>,
}

/// Mesh peers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeshStatus {
    /// Established sessions.
    pub sessions: usize,
    /// Peers the governor keeps hot.
    pub hot: usize,
    /// Warm peers.
    pub warm: usize,
    /// Cold (known, no session) peers.
    pub cold: usize,
    /// Blocked peers.
    pub blocked: usize,
}

/// DHT sizes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DhtStatus {
    /// Peers in the Amino routing table.
    pub amino_peers: usize,
    /// Peers in the mesh DHT routing table.
    pub mesh_peers: usize,
    /// Records held by the mesh DHT.
    pub mesh_records: usize,
    /// Kademlia mode (`server` or `client`).
    pub mode: String,
}

/// One connected peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// Its peer id.
    pub peer_id: String,
    /// Its node id when it is a libmesh node (Ed25519 key).
    pub node_id: Option<String>,
    /// Remote addresses of its connections.
    pub addrs: Vec<String>,
    /// Governor state (`hot`, `warm`, `cold`, `blocked`) when known.
    pub state: Option<&'static str>,
    /// Whether a session is established.
    pub session: bool,
    /// The capabilities it proved.
    pub capabilities: Vec<String>,
    /// Its `peer-status.v1` record (governor state with what its session proved), when
    /// the governor knows it; `null` for peers that are no libmesh node or never tried
    /// a session.
    pub status: Option<serde_json::Value>,
}

/// One peer of a DHT routing table (`NodeHandle::routing_table`).
#[derive(Debug, Clone, Serialize)]
pub struct RoutingEntry {
    /// Its peer id.
    pub peer_id: String,
    /// The addresses the table holds for it (what the DHT hands to others).
    pub addrs: Vec<String>,
}
