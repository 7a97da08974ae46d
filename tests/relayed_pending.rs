//! Circuits through one relay hold a quarter of the node's pending-connection cap at
//! most. Peer ids cost nothing and a relay's limits count them, so a client of a relay
//! the node reserves on could open circuits to the node and send nothing on them: every
//! one stayed pending, and at the global cap every other inbound
//! connection was refused. A stock rust-libp2p relay over loopback TCP, a client whose
//! security upgrade sends nothing (it opens 10 circuits to the node, as many as a
//! libp2p relay client asks for at once), the node with a pending cap of 8 (2 through one
//! relay): it refuses 8 circuits at once, and a TCP peer still connects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{self, BoxFuture};
use futures::{AsyncRead, AsyncReadExt, FutureExt, StreamExt};
use libmesh::node::config::Limits;
use libmesh::node::{NodeConfig, Target};
use libp2p::core::UpgradeInfo;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, SwarmBuilder, noise, relay, tcp, yamux};
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, loopback_config, start_node};

#[path = "support/stock_relay.rs"]
mod stock_relay;
use stock_relay::stock_relay;

const WAIT: Duration = Duration::from_secs(30);

/// A relay on its own task, with no per-peer circuit limits; its `/p2p` address.
async fn running_relay() -> Multiaddr {
    let (mut r, addr) = stock_relay(relay::Config {
        max_circuits: 256,
        max_circuits_per_peer: 256,
        circuit_src_rate_limiters: Vec::new(),
        reservation_rate_limiters: Vec::new(),
        ..Default::default()
    })
    .await;
    tokio::spawn(async move {
        loop {
            r.select_next_some().await;
        }
    });
    addr
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

impl<C: AsyncRead + Unpin + Send + 'static> OutboundConnectionUpgrade<C> for Silent {
    type Output = (PeerId, C);
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<(PeerId, C), std::io::Error>>;

    fn upgrade_outbound(self, mut stream: C, _: &'static str) -> Self::Future {
        // Holds the stream open and never writes; reads (which sends nothing) until the
        // node drops the circuit, then fails.
        async move {
            let mut buf = [0u8; 64];
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            Err(std::io::Error::other("the node dropped the circuit"))
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
    // The node drops all but its relay share (2) at once, and holds those two in their
    // handshakes (until its 10 s connection timeout). Without the share it held 8, its
    // whole cap, and dropped 2.
    let dropped = tokio::time::timeout(Duration::from_secs(5), async {
        let mut dropped = 0;
        while dropped < 8 {
            if let SwarmEvent::OutgoingConnectionError { .. } = client.select_next_some().await {
                dropped += 1;
            }
        }
    })
    .await;
    assert!(
        dropped.is_ok(),
        "the node did not refuse 8 of the 10 circuits"
    );
    let driving = tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
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
