//! What a peer's identify can put into the node's dials by peer id: only listen
//! addresses it could plausibly be at, seen from its connection (public ones; names and
//! loopback over a loopback connection, as here; a private network the node or the
//! connection is on). identify's own cache kept every address a peer listed and handed it to every
//! dial of that peer, past the DHTs' and the feed's scopes. The node's identify wrapper
//! against a stock libp2p identify peer, over loopback TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use libmesh::node::identify_observed::Identify;
use libp2p::core::Endpoint;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, identify};
use mesh_core::NodeKeypair;
use mesh_testkit::{Net, net_swarm};

const WAIT: Duration = Duration::from_secs(30);
const PROTOCOL: &str = "/ipfs/id/1.0.0";

fn ma(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_plausible_listen_addresses_reach_the_node_s_dials() {
    let node_key = NodeKeypair::generate().to_libp2p();
    let mut node = net_swarm(
        &node_key,
        Net::Tcp,
        Duration::from_secs(60),
        Identify::new(identify::Config::new(PROTOCOL.into(), node_key.public())),
    );
    let peer_key = NodeKeypair::generate().to_libp2p();
    let mut peer = net_swarm(
        &peer_key,
        Net::Tcp,
        Duration::from_secs(60),
        identify::Behaviour::new(identify::Config::new(PROTOCOL.into(), peer_key.public())),
    );
    peer.listen_on(ma("/ip4/127.0.0.1/tcp/0")).unwrap();
    let listen = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = peer.select_next_some().await {
            break address;
        }
    };
    let kept = [
        ma("/ip4/203.0.113.5/tcp/4001"),
        ma("/dns4/node.example/tcp/443/wss"),
        listen.clone(),
    ];
    let refused = [
        ma("/ip4/10.99.0.1/tcp/6379"),
        ma("/ip4/192.168.77.1/tcp/80/ws"),
        ma("/ip4/169.254.169.254/tcp/80"),
        ma("/ip4/0.0.0.0/tcp/22"),
        ma("/ip4/203.0.113.5/udp/4001/quic-v1/webtransport"),
    ];
    for a in kept.iter().chain(&refused) {
        peer.add_external_address(a.clone());
    }
    let peer_id = *peer.local_peer_id();
    node.dial(listen.clone()).unwrap();

    // Until the node has the peer's identify, and the addresses it passes on.
    let mut told = HashSet::new();
    let run = async {
        let mut received = false;
        loop {
            tokio::select! {
                ev = node.select_next_some() => match ev {
                    SwarmEvent::Behaviour(identify::Event::Received { .. }) => received = true,
                    SwarmEvent::NewExternalAddrOfPeer { address, .. } => {
                        told.insert(address);
                    }
                    _ => {}
                },
                _ = peer.select_next_some() => {}
                _ = tokio::time::sleep(Duration::from_millis(300)), if received => break,
            }
        }
    };
    tokio::time::timeout(WAIT, run).await.unwrap();

    let dial = node
        .behaviour_mut()
        .handle_pending_outbound_connection(
            ConnectionId::new_unchecked(u32::MAX as usize),
            Some(peer_id),
            &[],
            Endpoint::Dialer,
        )
        .unwrap();
    let dial: HashSet<Multiaddr> = dial.into_iter().collect();
    for a in &kept {
        assert!(dial.contains(a), "{a} not kept: {dial:?}");
        assert!(told.contains(a), "{a} not passed on: {told:?}");
    }
    for a in &refused {
        assert!(!dial.contains(a), "{a} would be dialed: {dial:?}");
        assert!(!told.contains(a), "{a} passed on: {told:?}");
    }
}

#[derive(NetworkBehaviour)]
struct DhtPeer {
    identify: identify::Behaviour,
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
}

/// A peer that serves the mesh DHT gets into the node's routing table with the listen
/// addresses the node kept from its identify (plausible from its connection), not all
/// it listed: the table dials them and hands them to every querier. A stock identify
/// and Kademlia peer lists a LAN address besides its loopback one; a querier asking the
/// node for it learns only the loopback one (both before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_dht_hands_out_only_a_peer_s_plausible_addresses() {
    use libmesh::node::{Bootstrap, BootstrapName, KadMode, NodeConfig};
    use libp2p::kad;
    use mesh_core::NoTrace;

    let node = mesh_testkit::node::start_node(
        NodeKeypair::generate(),
        NodeConfig {
            listen: vec![ma("/ip4/127.0.0.1/tcp/0")],
            bootstrap: Bootstrap::Named(BootstrapName::None),
            kad_mode: KadMode::Server,
            autonat: false,
            ..NodeConfig::default()
        },
        std::sync::Arc::new(NoTrace),
        WAIT,
    )
    .await;
    let node_addr: Multiaddr = node.p2p_addr();

    // The listing peer: a LAN address (not the node's, not its connection's) and its
    // loopback listener.
    let h_key = NodeKeypair::generate().to_libp2p();
    let h_id = h_key.public().to_peer_id();
    let mut h = net_swarm(
        &h_key,
        Net::Tcp,
        WAIT,
        DhtPeer {
            identify: identify::Behaviour::new(identify::Config::new(
                PROTOCOL.into(),
                h_key.public(),
            )),
            kad: libmesh::node::build::mesh_kad(h_id, KadMode::Server),
        },
    );
    h.listen_on(ma("/ip4/127.0.0.1/tcp/0")).unwrap();
    let lan = ma("/ip4/10.99.0.7/tcp/4001");
    h.add_external_address(lan.clone());
    h.dial(node_addr.clone()).unwrap();
    tokio::spawn(async move {
        loop {
            h.select_next_some().await;
        }
    });
    // The querier asks the node (its only peer) for peers close to the listing one,
    // until the node has it (identify reaches the node some time after the connection).
    let q_key = NodeKeypair::generate().to_libp2p();
    let q_id = q_key.public().to_peer_id();
    let mut q = net_swarm(
        &q_key,
        Net::Tcp,
        WAIT,
        libmesh::node::build::mesh_kad(q_id, KadMode::Client),
    );
    q.behaviour_mut().add_address(&node.peer, node.addr.clone());
    let mut heard: Option<Vec<Multiaddr>> = None;
    let end = tokio::time::Instant::now() + WAIT;
    while heard.is_none() {
        q.behaviour_mut().get_closest_peers(h_id);
        let answer = loop {
            match tokio::time::timeout_at(end, q.select_next_some()).await {
                Ok(SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::GetClosestPeers(r),
                    ..
                })) => {
                    break match r {
                        Ok(ok) => ok.peers,
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                    };
                }
                Ok(_) => {}
                Err(_) => panic!("the node never named the listing peer"),
            }
        };
        heard = answer
            .into_iter()
            .find(|p| p.peer_id == h_id)
            .map(|p| p.addrs);
        if heard.is_none() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let heard = heard.unwrap();
    assert!(
        heard
            .iter()
            .any(|a| a.to_string().starts_with("/ip4/127.0.0.1/")),
        "the node handed out the peer's loopback address: {heard:?}"
    );
    assert!(
        !heard
            .iter()
            .any(|a| a.to_string().starts_with(&lan.to_string())),
        "the node handed out {lan}: {heard:?}"
    );
    node.handle.shutdown().await;
}
