//! Members of a swarm for the member-table tests (`tests/node_swarm_table.rs`,
//! `tests/node_swarm_checks.rs`): in-process nodes on loopback with a 10-minute presence
//! TTL, their tables and traces, and mallory, a raw libp2p peer on the swarm's topic
//! that serves `/mesh/swarm-table/1.0.0` as it likes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::config::SwarmSettings;
use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig, NodeHandle, SeedPeer, Target};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, gossipsub};
use mesh_core::{
    Artifact, MemoryTrace, NodeId, NodeKeypair, SwarmPresence, Timestamp, TraceEventType,
};
use mesh_signal::group::exchange::{self, Answer};
use mesh_signal::group::{DiscoveryKey, SETTLED_SECS};
use mesh_testkit::node::{TestNode, start_node};

/// Long enough that no re-announce happens during a test.
pub(crate) const TTL: i64 = 600;

pub(crate) struct Member {
    pub(crate) handle: NodeHandle,
    pub(crate) node: NodeId,
    pub(crate) addr: Multiaddr,
    pub(crate) trace: Arc<MemoryTrace>,
    _t: TestNode,
}

pub(crate) async fn start(seeds: Vec<SeedPeer>) -> Member {
    start_checking(seeds, SwarmSettings::default().check_secs).await
}

/// [`start`] with member-table checks every `check_secs` (a quarter either way).
pub(crate) async fn start_checking(seeds: Vec<SeedPeer>, check_secs: u64) -> Member {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        seeds,
        swarm: SwarmSettings {
            ttl_secs: TTL,
            check_secs,
            ..SwarmSettings::default()
        },
        ..NodeConfig::default()
    };
    let trace = Arc::new(MemoryTrace::new(65_536));
    let t = start_node(
        NodeKeypair::generate(),
        config,
        trace.clone(),
        Duration::from_secs(30),
    )
    .await;
    Member {
        handle: t.handle.clone(),
        node: t.node,
        addr: t.addr.clone(),
        trace,
        _t: t,
    }
}

pub(crate) fn seed(m: &Member) -> SeedPeer {
    SeedPeer {
        node_id: m.node,
        addr: m.addr.clone(),
        label: None,
    }
}

pub(crate) async fn members_of(h: &NodeHandle, key: DiscoveryKey) -> HashSet<NodeId> {
    h.swarm_members(key)
        .await
        .unwrap()
        .into_iter()
        .map(|m| NodeId::parse(&m.node).unwrap())
        .collect()
}

/// Waits (bounded) until `h`'s table of `key` holds `want`; returns what it holds.
pub(crate) async fn wait_table(
    h: &NodeHandle,
    key: DiscoveryKey,
    want: &HashSet<NodeId>,
    limit: Duration,
) -> HashSet<NodeId> {
    let start = Instant::now();
    loop {
        let got = members_of(h, key).await;
        if &got == want || start.elapsed() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The members `trace` saw arrive in `key`, with how (`gossip` or `table`).
pub(crate) fn arrivals(trace: &MemoryTrace, key: DiscoveryKey) -> Vec<(String, String)> {
    trace
        .events()
        .into_iter()
        .filter(|e| e.event_type == TraceEventType::SwarmJoined)
        .filter_map(|e| {
            let d = e.detail?;
            if d["swarm"] != key.to_hex().as_str() {
                return None;
            }
            Some((
                d["member"].as_str()?.to_owned(),
                d["via"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct Hostile {
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) table: request_response::Behaviour<exchange::Codec>,
}

/// Mallory: a raw libp2p peer subscribed to `key`'s topic that serves
/// `/mesh/swarm-table/1.0.0`; its peer id, its listen address, its swarm.
pub(crate) async fn mallory(
    key: &DiscoveryKey,
) -> (libp2p::PeerId, Multiaddr, libp2p::Swarm<Hostile>) {
    mallory_as(NodeKeypair::generate(), key).await
}

/// [`mallory`] under a given key.
pub(crate) async fn mallory_as(
    mallory_key: NodeKeypair,
    key: &DiscoveryKey,
) -> (libp2p::PeerId, Multiaddr, libp2p::Swarm<Hostile>) {
    let mut gs = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(mallory_key.to_libp2p()),
        gossipsub::Config::default(),
    )
    .unwrap();
    gs.subscribe(&gossipsub::IdentTopic::new(key.topic()))
        .unwrap();
    let table = request_response::Behaviour::with_codec(
        exchange::Codec::default(),
        [(exchange::PROTOCOL, ProtocolSupport::Full)],
        request_response::Config::default(),
    );
    let mut swarm = mesh_testkit::swarm_with(
        &mallory_key,
        Hostile {
            gossipsub: gs,
            table,
        },
    );
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    (mallory_key.node_id().to_peer_id().unwrap(), addr, swarm)
}

/// `n` dials member `m`.
pub(crate) async fn meet(n: &Member, m: &Member) {
    let peer = m.node.to_peer_id().unwrap();
    let addr = m.addr.clone().with(libp2p::multiaddr::Protocol::P2p(peer));
    n.handle.dial(Target::Addr(addr)).await.unwrap();
}

/// `newcomer` dials `peer` at `addr`, then joins `key`: `peer` is the first subscriber
/// it meets, the one it asks for the table.
pub(crate) async fn join_through(
    newcomer: &Member,
    peer: libp2p::PeerId,
    addr: Multiaddr,
    key: DiscoveryKey,
) {
    newcomer
        .handle
        .dial(Target::Addr(
            addr.with(libp2p::multiaddr::Protocol::P2p(peer)),
        ))
        .await
        .unwrap();
    newcomer.handle.join_swarm(key).await.unwrap();
}

/// Mallory answers every table request with `entries` (any order) as one page.
pub(crate) fn serve_always(
    mut mallory: libp2p::Swarm<Hostile>,
    entries: &[(NodeId, Vec<u8>)],
) -> tokio::task::JoinHandle<()> {
    let mut entries = entries.to_vec();
    entries.sort_by_key(|(n, _)| *n);
    let page = exchange::page_of(entries.iter().map(|(n, b)| (*n, b.as_slice())), None);
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(HostileEvent::Table(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) = mallory.select_next_some().await
            {
                let _ = mallory
                    .behaviour_mut()
                    .table
                    .send_response(channel, Answer::Page(page.clone()));
            }
        }
    })
}

/// Members M and X of `key`, each in the other's table, settled: their own joins went
/// out `SETTLED_SECS` ago, so they leave a newcomer's join that fetches the table
/// unanswered.
pub(crate) async fn settled_pair(key: DiscoveryKey) -> (Member, Member) {
    let m = start(vec![]).await;
    let x = start(vec![seed(&m)]).await;
    for n in [&m, &x] {
        n.handle.join_swarm(key).await.unwrap();
    }
    let want: HashSet<NodeId> = [m.node].into();
    assert_eq!(
        wait_table(&x.handle, key, &want, Duration::from_secs(30)).await,
        want
    );
    tokio::time::sleep(Duration::from_secs(SETTLED_SECS as u64 + 1)).await;
    (m, x)
}

pub(crate) fn signed_presence(key: &NodeKeypair, swarm: &DiscoveryKey, now: &Timestamp) -> Vec<u8> {
    signed_as(key, swarm, now, "announce", 5)
}

/// A presence of `key`'s, `presence` (`announce`, `leave`) with `seq`, valid 120 s.
pub(crate) fn signed_as(
    key: &NodeKeypair,
    swarm: &DiscoveryKey,
    now: &Timestamp,
    presence: &str,
    seq: u64,
) -> Vec<u8> {
    let serde_json::Value::Object(doc) = serde_json::json!({
        "schema/v": 1, "message/kind": "swarm-presence.v1", "swarm/key": swarm.to_hex(),
        "node/id": key.node_id().to_string(), "presence": presence, "sequence/no": seq,
        "addrs": ["/ip4/127.0.0.1/tcp/9"], "created-at": now.as_str(),
        "expires-at": now.plus_secs(120).as_str(),
    }) else {
        unreachable!()
    };
    SwarmPresence::sign(doc, key).unwrap().to_cbor()
}

/// Drives `mallory` until `done` (asked every 100 ms) holds; false after `limit`.
pub(crate) async fn drive_until<F, Fut>(
    mallory: &mut libp2p::Swarm<Hostile>,
    limit: Duration,
    mut done: F,
) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        let _ = tokio::time::timeout(Duration::from_millis(100), mallory.select_next_some()).await;
        if done().await {
            return true;
        }
    }
    false
}
