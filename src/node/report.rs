//! The status and peer reports (`/status`, `meshd status`, `meshd peers`), read off
//! the swarm and the node's components.

use libp2p::{Swarm, kad};
use mesh_advert::AdvertStore;
use mesh_core::NodeId;

use super::Node;
use super::behaviour::MeshBehaviour;
use super::status::{DhtStatus, MeshStatus, NatStatus, PeerInfo, Status};
use super::waiting::Waiting;

/// The status of `node`.
pub(super) fn of(node: &mut Node) -> Status {
    let listen_addrs = node.swarm.listeners().map(ToString::to_string).collect();
    let external_addrs = node
        .swarm
        .external_addresses()
        .map(ToString::to_string)
        .collect();
    let reachable: Vec<String> = node
        .nat
        .iter()
        .filter(|(_, ok)| **ok)
        .map(|(a, _)| a.to_string())
        .collect();
    let unreachable: Vec<String> = node
        .nat
        .iter()
        .filter(|(_, ok)| !**ok)
        .map(|(a, _)| a.to_string())
        .collect();
    let nat_status = if !reachable.is_empty() {
        "public"
    } else if !unreachable.is_empty() {
        "private"
    } else {
        "unknown"
    };
    let b = node.swarm.behaviour_mut();
    use mesh_session::governor::Temperature;
    let gov = b.session.governor();
    let mesh = MeshStatus {
        sessions: gov.count(Temperature::Hot) + gov.count(Temperature::Warm),
        hot: gov.count(Temperature::Hot),
        warm: gov.count(Temperature::Warm),
        cold: gov.count(Temperature::Cold),
        blocked: gov.count(Temperature::Blocked),
    };
    let count_peers = |k: &mut kad::Behaviour<kad::store::MemoryStore>| {
        k.kbuckets().map(|b| b.num_entries()).sum::<usize>()
    };
    let amino_peers = count_peers(&mut b.amino);
    let mesh_peers = count_peers(&mut b.mesh_kad);
    let mesh_records = {
        use libp2p::kad::store::RecordStore;
        b.mesh_kad.store_mut().records().count()
    };
    let mode = b.mesh_kad.mode().to_string();
    let gossip_mesh_peers = b.gossipsub.all_mesh_peers().count();
    Status {
        node_id: node.node_id.to_string(),
        peer_id: node.swarm.local_peer_id().to_string(),
        agent: super::build::AGENT.into(),
        version: super::build::VERSION.into(),
        uptime_secs: node.started.elapsed().as_secs(),
        listen_addrs,
        external_addrs,
        nat: NatStatus {
            status: nat_status,
            reachable,
            unreachable,
        },
        connected_peers: node.swarm.connected_peers().count(),
        mesh,
        dht: DhtStatus {
            amino_peers,
            mesh_peers,
            mesh_records,
            mode,
        },
        adverts_stored: node.store.len(),
        own_advert_sequence: node.own.last_sequence(),
        topics: {
            let mut t: Vec<String> = node.topics.iter().cloned().collect();
            t.sort();
            t
        },
        gossip_mesh_peers,
        events_dropped: node.events_dropped,
        gossip_send_failed: node.gossip_send_failed,
    }
}

/// Sets the sampled gauges of libmesh's metrics (sessions by state, DHT tables and
/// stores, adverts held, swarms): called on the node's tick.
pub(super) fn sample_stats(node: &mut Node) {
    use libp2p::kad::store::RecordStore;
    use mesh_session::governor::Temperature;
    let swarms = node.groups.joined().len();
    let swarm_members = node.groups.member_total();
    let adverts = node.store.len();
    let b = node.swarm.behaviour_mut();
    let gov = b.session.governor();
    let (hot, warm, cold, blocked) = (
        gov.count(Temperature::Hot),
        gov.count(Temperature::Warm),
        gov.count(Temperature::Cold),
        gov.count(Temperature::Blocked),
    );
    let table = |k: &mut kad::Behaviour<kad::store::MemoryStore>| {
        k.kbuckets().map(|b| b.num_entries()).sum::<usize>()
    };
    let sample = super::stats::Sample {
        hot,
        warm,
        cold,
        blocked,
        amino_peers: table(&mut b.amino),
        amino_records: b.amino.store_mut().records().count(),
        mesh_peers: table(&mut b.mesh_kad),
        mesh_records: b.mesh_kad.store_mut().records().count(),
        adverts,
        swarms,
        swarm_members,
    };
    node.stats.sample(&sample);
}

/// The connected peers.
pub(super) fn peers(swarm: &Swarm<MeshBehaviour>, waiting: &Waiting) -> Vec<PeerInfo> {
    let b = swarm.behaviour();
    let mut out: Vec<PeerInfo> = swarm
        .connected_peers()
        .map(|p| {
            let node = NodeId::from_peer_id(p).ok();
            let session = b.session.session(p);
            PeerInfo {
                peer_id: p.to_string(),
                node_id: node.map(|n| n.to_string()),
                addrs: waiting
                    .remote_addrs(p)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                state: node
                    .and_then(|n| b.session.governor().temperature(&n))
                    .map(|t| t.as_str()),
                session: session.is_some(),
                capabilities: session.map(|s| s.capabilities.clone()).unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    out
}
