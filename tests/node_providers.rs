//! Mesh-DHT provider records are kept by the nodes that receive them: swarm members that
//! run their Kademlia as clients (so no query can reach them) are still found by a
//! newcomer through the provider records the servers hold for them. Loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libmesh::node::{Bootstrap, BootstrapName, Dht, KadMode, NodeConfig, SeedPeer};
use libp2p::PeerId;
use mesh_core::{NoTrace, NodeKeypair};
use mesh_signal::group::DiscoveryKey;
use mesh_testkit::node::{TestNode, start_node};

const WAIT: Duration = Duration::from_secs(60);

async fn start(mode: KadMode, seeds: Vec<SeedPeer>) -> TestNode {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Bootstrap::Named(BootstrapName::None),
        kad_mode: mode,
        seeds,
        ..NodeConfig::default()
    };
    start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await
}

fn seed(n: &TestNode) -> SeedPeer {
    SeedPeer {
        node_id: n.node,
        addr: n.addr.clone(),
        label: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_behind_kademlia_clients_are_found_through_provider_records() {
    // Four DHT servers in a chain of seeds.
    let s0 = start(KadMode::Server, vec![]).await;
    let mut servers = vec![s0];
    for i in 1..4 {
        let n = start(KadMode::Server, vec![seed(&servers[i - 1])]).await;
        servers.push(n);
    }
    // Two members, Kademlia clients, each seeded to one server.
    let m1 = start(KadMode::Client, vec![seed(&servers[1])]).await;
    let m2 = start(KadMode::Client, vec![seed(&servers[2])]).await;
    let key = DiscoveryKey::new([7u8; 32]);
    // Let the servers learn each other before the members provide.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(m1.handle.join_swarm(key).await.unwrap());
    assert!(m2.handle.join_swarm(key).await.unwrap());

    // A newcomer that knows only the last server, a client too: no query of its can
    // reach a member, so only the servers' provider records can name them.
    let newcomer = start(KadMode::Client, vec![seed(&servers[3])]).await;
    let want: HashSet<PeerId> = [m1.peer, m2.peer].into();
    let deadline = Instant::now() + WAIT;
    loop {
        let found: HashSet<PeerId> = newcomer
            .handle
            .find_providers(Dht::Mesh, key.provider_key())
            .await
            .map(|v| v.into_iter().collect())
            .unwrap_or_default();
        if want.is_subset(&found) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the newcomer found {found:?}, not both members, within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And joining the swarm, it sees both members.
    assert!(newcomer.handle.join_swarm(key).await.unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        let members: HashSet<_> = newcomer
            .handle
            .swarm_members(key)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.node)
            .collect();
        if members.contains(&m1.node.to_string()) && members.contains(&m2.node.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "members seen: {members:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
