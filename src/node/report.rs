//! The status and peer reports (`/status`, `meshd status`, `meshd peers`), read off
//! the swarm and the node's components.

use libp2p::kad;
use mesh_advert::AdvertStore;
use mesh_core::NodeId;

use super::Node;
use super::status::{DhtStatus, MeshStatus, NatStatus, PeerInfo, RoutingEntry, Status};

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
        .filter(|(_, ok)| *ok)
        .map(|(a, _)| a.to_string())
        .collect();
    let unreachable: Vec<String> = node
        .nat
        .iter()
        .filter(|(_, ok)| !*ok)
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
        traces_suppressed: node.stats.traces_suppressed(),
        swarm_arrivals: node.groups.arrivals(),
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
    let dial_addrs_refused = node.swarm.behaviour().0.refused();
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
    let gate = b.identify.candidate_gate();
    let (autonat_passed, autonat_refused) = (gate.passed(), gate.refused());
    let autonat_tests_refused = b.autonat_server.as_ref().map_or(0, |s| s.refused());
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
        autonat_passed,
        autonat_refused,
        autonat_tests_refused,
        dial_addrs_refused,
    };
    node.stats.sample(&sample);
}

/// The connected peers, each with its `peer-status.v1` record when the governor
/// knows it (a libmesh node that held or tried a session).
pub(super) fn peers(node: &Node) -> Vec<PeerInfo> {
    let swarm = &node.swarm;
    let b = swarm.behaviour();
    let now = mesh_core::Timestamp::now();
    let mut out: Vec<PeerInfo> = swarm
        .connected_peers()
        .map(|p| {
            let id = NodeId::from_peer_id(p).ok();
            let session = b.session.session(p);
            let addrs = node.waiting.remote_addrs(p);
            let status = id.and_then(|n| {
                let facts = facts(node, &n, p, &addrs);
                b.session.governor().peer_status_with(&n, &facts, &now)
            });
            PeerInfo {
                peer_id: p.to_string(),
                node_id: id.map(|n| n.to_string()),
                addrs: addrs.iter().map(ToString::to_string).collect(),
                state: id
                    .and_then(|n| b.session.governor().temperature(&n))
                    .map(|t| t.as_str()),
                session: session.is_some(),
                capabilities: session.map(|s| s.capabilities.clone()).unwrap_or_default(),
                status,
            }
        })
        .collect();
    out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    out
}

/// What the node knows of `node` (connected as `peer` at `addrs`) for its peer-status
/// record: the seed label as display name, the endpoint of its connection (a direct
/// one before a relay circuit) in the `multiaddr:` form of `endpoint/url`, and the
/// capabilities its session proved and those it listed without a valid passport.
fn facts(
    node: &Node,
    id: &NodeId,
    peer: &libp2p::PeerId,
    addrs: &[libp2p::Multiaddr],
) -> mesh_session::governor::PeerFacts {
    let session = node.swarm.behaviour().session.session(peer);
    let endpoint = addrs
        .iter()
        .find(|a| !super::router::plan::is_circuit(a))
        .or_else(|| addrs.first())
        .map(|a| format!("multiaddr:{}/p2p/{peer}", super::addrs::without_peer(a)));
    mesh_session::governor::PeerFacts {
        display_name: node
            .config
            .seeds
            .iter()
            .find(|s| s.node_id == *id)
            .and_then(|s| s.label.clone()),
        endpoint_url: endpoint,
        supported: session.map(|s| s.capabilities.clone()).unwrap_or_default(),
        missing: session
            .map(|s| s.unproven_capabilities.clone())
            .unwrap_or_default(),
    }
}

/// The routing table of `dht`: peers and the addresses it holds for them.
pub(super) fn routing_table(node: &mut Node, dht: super::Dht) -> Vec<RoutingEntry> {
    let b = node.swarm.behaviour_mut();
    let kad = match dht {
        super::Dht::Amino => &mut b.amino,
        super::Dht::Mesh => &mut b.mesh_kad,
    };
    let mut out: Vec<RoutingEntry> = kad
        .kbuckets()
        .flat_map(|bucket| {
            bucket
                .iter()
                .map(|e| RoutingEntry {
                    peer_id: e.node.key.preimage().to_string(),
                    addrs: e.node.value.iter().map(ToString::to_string).collect(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    out
}
