//! What a DHT peer's answer can make the node dial: a peer that answers the node's
//! query with made-up peers, each at many addresses, gets at most
//! `kad_scope::MAX_DIAL_ADDRS` addresses of each tried (libp2p-kad alone tries them all).
//! A composed node, and a hostile mesh-DHT server (libmesh's own Kademlia behaviour in
//! server mode, its routing table filled with made-up peers at loopback sockets that
//! count who connects), over loopback TCP. The same bound holds for the endpoints of a
//! node's advertisement when the node is dialed by node id (an advertisement may name
//! hundreds, anyone's).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::advert_store::DurableStore;
use libmesh::node::kad_scope::{DialScope, MAX_DIAL_ADDRS, ScopedKad};
use libmesh::node::{Bootstrap, BootstrapName, Dht, KadMode, Node, NodeConfig, SeedPeer, Target};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, connection_limits, kad};
use mesh_advert::StoreLimits;
use mesh_advert::own::advert_for;
use mesh_core::{NoTrace, NodeKeypair, RateLimit, Timestamp};
use mesh_testkit::node::start_node;
use mesh_testkit::{Net, net_swarm};

const WAIT: Duration = Duration::from_secs(60);
const FAKES: usize = 12;
const ADDRS_EACH: usize = 20;

#[derive(NetworkBehaviour)]
struct Hostile {
    kad: kad::Behaviour<kad::store::MemoryStore>,
    no_dials: connection_limits::Behaviour,
}

/// A loopback socket that counts its connections under `who` and closes each at once.
async fn counting(seen: Arc<Mutex<HashMap<usize, usize>>>, who: usize) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((s, _)) = l.accept().await {
            // One address counts once, however often it is dialed.
            if first {
                *seen.lock().unwrap().entry(who).or_default() += 1;
                first = false;
            }
            drop(s);
        }
    });
    port
}

/// A hostile mesh-DHT server that names [`FAKES`] made-up peers at [`ADDRS_EACH`]
/// loopback counting sockets each (counted in `seen`), running on its own task: its
/// identity, address, and how many requests it answered.
async fn hostile_server(
    seen: &Arc<Mutex<HashMap<usize, usize>>>,
) -> (NodeKeypair, Multiaddr, Arc<std::sync::atomic::AtomicUsize>) {
    let mut fakes: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for who in 0..FAKES {
        let mut addrs = Vec::new();
        for _ in 0..ADDRS_EACH {
            let port = counting(seen.clone(), who).await;
            addrs.push(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
        }
        fakes.push((PeerId::random(), addrs));
    }

    // The hostile mesh-DHT server, which hands them out.
    let key = NodeKeypair::generate();
    let lp = key.to_libp2p();
    let hostile = Hostile {
        kad: libmesh::node::build::mesh_kad(lp.public().to_peer_id(), KadMode::Server),
        // It never dials: every connection to a counting socket is the node's.
        no_dials: connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default().with_max_pending_outgoing(Some(0)),
        ),
    };
    let mut hostile = net_swarm(&lp, Net::Tcp, WAIT, hostile);
    for (peer, addrs) in &fakes {
        for a in addrs {
            hostile.behaviour_mut().kad.add_address(peer, a.clone());
        }
    }
    hostile
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let hostile_addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = hostile.select_next_some().await {
            break address;
        }
    };
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(HostileEvent::Kad(kad::Event::InboundRequest { .. })) =
                hostile.select_next_some().await
            {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    (key, hostile_addr, asked)
}

/// The hostile server of [`hostile_server`] is the node's seed; the node, with
/// `external` addresses, asks the mesh DHT. How many sockets of each made-up peer it
/// reached, and how many requests the hostile server answered.
async fn dials_for_a_hostile_answer(external: Vec<Multiaddr>) -> (HashMap<usize, usize>, usize) {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let (key, hostile_addr, asked) = hostile_server(&seen).await;

    // The node knows the hostile server as its seed, and asks the mesh DHT.
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: KadMode::Server,
        external,
        seeds: vec![SeedPeer {
            node_id: key.node_id(),
            addr: hostile_addr,
            label: None,
        }],
        ..NodeConfig::default()
    };
    let node = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    let found = tokio::time::timeout(
        WAIT,
        node.handle.find_providers(Dht::Mesh, b"anything".to_vec()),
    )
    .await
    .expect("the query never ended");
    assert!(found.is_ok(), "{found:?}");
    // The last dials of the query reach their sockets.
    let settle = Instant::now() + Duration::from_secs(3);
    let mut last = seen.lock().unwrap().clone();
    while Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = seen.lock().unwrap().clone();
    }
    (last, asked.load(std::sync::atomic::Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_answer_gets_few_addresses_of_each_peer_it_names_dialed() {
    let (last, _) = dials_for_a_hostile_answer(Vec::new()).await;
    assert!(
        !last.is_empty(),
        "the node dialed none of the made-up peers"
    );
    let most = last.values().copied().max().unwrap_or(0);
    assert!(
        most <= MAX_DIAL_ADDRS,
        "{most} addresses of one made-up peer dialed (of {ADDRS_EACH}): {last:?}"
    );
}

/// A node with an address beyond loopback dials none of the loopback addresses a DHT
/// answer names (the mesh DHT's reach, `kad_scope::Reach`): they point at the node's own
/// host. It reached up to 8 of each made-up peer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_answer_cannot_point_a_node_beyond_loopback_at_its_own_host() {
    let external = vec!["/ip4/203.0.113.1/tcp/4001".parse().unwrap()];
    let (last, asked) = dials_for_a_hostile_answer(external).await;
    assert!(asked > 0, "the node never asked the hostile server");
    assert!(last.is_empty(), "loopback sockets reached: {last:?}");
}

/// `n` counting sockets, all counted under one name; their addresses.
async fn counting_addrs(seen: &Arc<Mutex<HashMap<usize, usize>>>, n: usize) -> Vec<Multiaddr> {
    let mut addrs = Vec::new();
    for _ in 0..n {
        let port = counting(seen.clone(), 0).await;
        addrs.push(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
    }
    addrs
}

/// How many of the sockets were reached, once the last dials had time to land.
async fn reached(seen: &Arc<Mutex<HashMap<usize, usize>>>) -> usize {
    tokio::time::sleep(Duration::from_secs(3)).await;
    seen.lock().unwrap().get(&0).copied().unwrap_or(0)
}

/// A node dialed by node id whose stored advertisement names 40 endpoints: at most
/// `MAX_DIAL_ADDRS` are dialed (all 40 were).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_by_node_id_takes_few_of_an_advertisement_s_endpoints() {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let endpoints = counting_addrs(&seen, 40).await;
    let stranger = NodeKeypair::generate();
    let dir = tempfile::tempdir().unwrap();
    {
        let now = Timestamp::now();
        let (store, _) = DurableStore::open(dir.path(), StoreLimits::default(), &now).unwrap();
        let ad = advert_for(&stranger, &endpoints, 1, &now, 3600).unwrap();
        store.insert(ad, &now).unwrap();
    }
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        autonat: false,
        ..NodeConfig::default()
    };
    let (mut node, handle, _events) = Node::new(
        NodeKeypair::generate(),
        config,
        dir.path(),
        Arc::new(NoTrace),
    )
    .unwrap();
    node.listen().unwrap();
    tokio::spawn(node.run());
    let dialed = tokio::time::timeout(WAIT, handle.dial(Target::Node(stranger.node_id())))
        .await
        .expect("the dial never ended");
    assert!(dialed.is_err(), "no socket speaks libp2p: {dialed:?}");
    let n = reached(&seen).await;
    assert!(n >= 1, "the node dialed none of the endpoints");
    assert!(
        n <= MAX_DIAL_ADDRS,
        "{n} of the advertisement's 40 endpoints were dialed"
    );
    handle.shutdown().await;
}

#[derive(NetworkBehaviour)]
struct Asker {
    kad: ScopedKad,
}

/// One DHT answer naming made-up peers, all at one host, gets that host only its
/// budget of the asking DHT's dials (`kad_scope::PER_DESTINATION`; counted here on
/// loopback, which the node leaves free): 12 made-up peers at 20 addresses each, all
/// on 127.0.0.1, got 8 addresses each dialed (96) with the per-peer bound alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dht_answer_aiming_made_up_peers_at_one_host_gets_it_only_its_budget() {
    const BUDGET: u32 = 10;
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let (hostile_key, hostile_addr, asked) = hostile_server(&seen).await;

    let key = NodeKeypair::generate().to_libp2p();
    let peer = key.public().to_peer_id();
    let kad = ScopedKad::new(
        libmesh::node::build::mesh_kad(peer, KadMode::Client),
        DialScope::Mesh,
    )
    .with_destinations(
        RateLimit {
            burst: BUDGET,
            per_second: 0.0,
        },
        false,
    );
    let mut asker = net_swarm(&key, Net::Tcp, WAIT, Asker { kad });
    asker
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let hostile_peer = hostile_key.node_id().to_peer_id().unwrap();
    asker
        .behaviour_mut()
        .kad
        .add_address(&hostile_peer, hostile_addr);
    asker
        .behaviour_mut()
        .kad
        .get_closest_peers(PeerId::random());
    tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::Behaviour(AskerEvent::Kad(kad::Event::OutboundQueryProgressed {
                step,
                ..
            })) = asker.select_next_some().await
                && step.last
            {
                return;
            }
        }
    })
    .await
    .expect("the query never ended");
    // The last dials reach their sockets.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        tokio::time::timeout(Duration::from_millis(200), asker.select_next_some())
            .await
            .ok();
    }
    let reached: usize = seen.lock().unwrap().values().sum();
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the hostile server was never asked"
    );
    // The hostile server's own address took one of the host's tokens.
    assert!(
        reached >= 1 && reached < BUDGET as usize,
        "{reached} addresses of one host dialed (budget {BUDGET})"
    );
}
