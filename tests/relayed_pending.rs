//! Circuits through one relay hold a quarter of the node's pending-connection cap at
//! most. Peer ids cost nothing and a relay's limits count them, so a client of a relay
//! the node reserves on could open circuits to the node and leave each one silent after
//! choosing Noise: every one stayed pending, and at the global cap every other inbound
//! connection was refused. A stock rust-libp2p relay over loopback TCP, a client whose
//! security upgrade never finishes (it opens 10 circuits to the node, as many as a
//! libp2p relay client asks for at once), the node with a pending cap of 8 (2 through one
//! relay), and a TCP peer that must still connect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{self, BoxFuture};
use futures::{FutureExt, StreamExt};
use libmesh::node::config::Limits;
use libmesh::node::{NodeConfig, Target};
use libp2p::core::UpgradeInfo;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, ping, relay, tcp, yamux};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, loopback_config, start_node};

const WAIT: Duration = Duration::from_secs(30);

#[derive(NetworkBehaviour)]
struct Relay {
    relay: relay::Behaviour,
    ping: ping::Behaviour,
}

/// A relay on its own task, with no per-peer circuit limits; its `/p2p` address.
async fn running_relay() -> Multiaddr {
    let mut r = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|k| Relay {
            relay: relay::Behaviour::new(
                k.public().to_peer_id(),
                relay::Config {
                    max_circuits: 256,
                    max_circuits_per_peer: 256,
                    circuit_src_rate_limiters: Vec::new(),
                    reservation_rate_limiters: Vec::new(),
                    ..Default::default()
                },
            ),
            ping: ping::Behaviour::default(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(WAIT))
        .build();
    r.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = r.select_next_some().await {
            break address;
        }
    };
    r.add_external_address(addr.clone());
    let p2p = addr.with(Protocol::P2p(*r.local_peer_id()));
    tokio::spawn(async move {
        loop {
            r.select_next_some().await;
        }
    });
    p2p
}

/// A security upgrade that names Noise and then never sends a byte of its handshake.
#[derive(Clone)]
struct Silent;

impl UpgradeInfo for Silent {
    type Info = &'static str;
    type InfoIter = std::iter::Once<&'static str>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/noise")
    }
}

impl<C: Send + 'static> OutboundConnectionUpgrade<C> for Silent {
    type Output = (PeerId, C);
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<(PeerId, C), std::io::Error>>;

    fn upgrade_outbound(self, stream: C, _: &'static str) -> Self::Future {
        // Holds the stream open and never writes.
        async move {
            let _held = stream;
            future::pending().await
        }
        .boxed()
    }
}

impl<C: Send + 'static> InboundConnectionUpgrade<C> for Silent {
    type Output = (PeerId, C);
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<(PeerId, C), std::io::Error>>;

    fn upgrade_inbound(self, stream: C, _: &'static str) -> Self::Future {
        // Holds the stream open and never writes.
        async move {
            let _held = stream;
            future::pending().await
        }
        .boxed()
    }
}

#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
}

async fn start(config: NodeConfig) -> TestNode {
    start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuits_through_one_relay_leave_room_for_other_connections() {
    let relay_addr = running_relay().await;
    let node = start(NodeConfig {
        relays: vec![relay_addr.clone()],
        max_relays: 1,
        limits: Limits {
            max_pending_incoming: 8,
            ..Limits::default()
        },
        ..loopback_config()
    })
    .await;
    let circuit = relay_addr
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(node.peer));
    // The node's reservation.
    let start_at = Instant::now();
    while !node
        .handle
        .status()
        .await
        .unwrap()
        .listen_addrs
        .iter()
        .any(|a| a.contains("/p2p-circuit"))
    {
        assert!(start_at.elapsed() < WAIT, "no reservation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peer = start(loopback_config()).await;

    // The client: relay circuits whose Noise never starts.
    let mut client = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(
            |_: &libp2p::identity::Keypair| Ok::<_, std::io::Error>(Silent),
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_, relay| Client { relay })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(WAIT))
        .build();
    // Connected to the relay first (circuits asked before ride on that connection).
    client.dial(relay_addr.clone()).unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
                break;
            }
        }
    })
    .await
    .expect("the client reaches the relay");
    for _ in 0..10 {
        client
            .dial(
                DialOpts::peer_id(node.peer)
                    .addresses(vec![circuit.clone()])
                    .condition(PeerCondition::Always)
                    .build(),
            )
            .unwrap();
    }
    let driving = tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    // The circuits reach the node and stay in their handshakes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tcp = node.addr.clone().with(Protocol::P2p(node.peer));
    let dialed = tokio::time::timeout(Duration::from_secs(5), peer.handle.dial(Target::Addr(tcp)))
        .await
        .expect("the dial ended");
    assert_eq!(
        dialed.expect("a TCP peer connects beside the silent circuits"),
        node.peer
    );
    driving.abort();
}
