//! What a peer's identify can put into the node's dials by peer id: only listen
//! addresses it could plausibly be at, seen from its connection (public ones and names;
//! loopback over a loopback connection; a private network the node or the connection
//! is on). identify's own cache kept every address a peer listed and handed it to every
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
