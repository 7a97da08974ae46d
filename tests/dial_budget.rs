//! What peers' identify can make the node dial at a third party's host: every dial by
//! peer id asks the node's behaviours for addresses, identify's listen addresses of the
//! peer among them (any public IP, 16 per peer), and peer ids cost nothing. Made-up
//! peers each listing one host on 16 ports got that host 16 connection attempts per
//! peer dialed; behind the node's [`DialBudget`] the host gets its budget, however many
//! peers name it. The node's identify wrapper behind the budget against stock libp2p
//! identify peers, over loopback TCP, the host's ports counting who connects (loopback
//! is counted here; the node leaves it free).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::dial_budget::DialBudget;
use libmesh::node::identify_observed::Identify;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{Multiaddr, identify, request_response};
use mesh_core::{NodeKeypair, RateLimit, ReadBudget};
use mesh_testkit::{Net, net_swarm};

const WAIT: Duration = Duration::from_secs(30);
const PROTOCOL: &str = "/ipfs/id/1.0.0";
/// Made-up peers, each listing the same host on [`PORTS`] ports.
const PEERS: usize = 4;
const PORTS: usize = 16;
const BUDGET: u32 = 10;

/// A loopback socket that counts the connections it accepts and closes each at once.
async fn counting(seen: Arc<AtomicUsize>) -> Multiaddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

/// A stock identify peer that listens nowhere and lists `host` as its addresses.
fn made_up_peer(host: &[Multiaddr]) -> Swarm<identify::Behaviour> {
    let key = NodeKeypair::generate().to_libp2p();
    let mut peer = net_swarm(
        &key,
        Net::Tcp,
        WAIT,
        identify::Behaviour::new(identify::Config::new(PROTOCOL.into(), key.public())),
    );
    for a in host {
        peer.add_external_address(a.clone());
    }
    peer
}

/// Drives `node` and `peers` until `done` or [`WAIT`]; `done` sees the node's events.
async fn drive<B: NetworkBehaviour>(
    node: &mut Swarm<B>,
    peers: &mut [Swarm<identify::Behaviour>],
    mut done: impl FnMut(&SwarmEvent<B::ToSwarm>) -> bool,
) {
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        let others = futures::future::select_all(peers.iter_mut().map(|p| p.select_next_some()));
        tokio::select! {
            ev = node.select_next_some() => if done(&ev) { return },
            _ = others => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    panic!("not done within {WAIT:?}");
}

/// What of the node answers a dial by peer id with addresses: identify's kept ones and
/// a request-response behaviour's cache (fed by identify, 10 per peer, with `/p2p`).
#[derive(NetworkBehaviour)]
struct Parts {
    identify: Identify,
    table: request_response::Behaviour<mesh_signal::group::exchange::Codec>,
}

/// Connection attempts at the host when the node, its parts wrapped as `wrap` says,
/// has met [`PEERS`] made-up peers naming it and then dials each by peer id.
async fn attempts_at_the_host<B: NetworkBehaviour>(wrap: impl FnOnce(Parts) -> B) -> usize
where
    B::ToSwarm: std::fmt::Debug,
{
    let seen = Arc::new(AtomicUsize::new(0));
    let mut host = Vec::new();
    for _ in 0..PORTS {
        host.push(counting(seen.clone()).await);
    }
    let key = NodeKeypair::generate().to_libp2p();
    let parts = Parts {
        identify: Identify::new(identify::Config::new(PROTOCOL.into(), key.public())),
        table: request_response::Behaviour::with_codec(
            mesh_signal::group::exchange::Codec(ReadBudget::default()),
            [(
                mesh_signal::group::exchange::PROTOCOL,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default(),
        ),
    };
    let mut node = net_swarm(&key, Net::Tcp, WAIT, wrap(parts));
    node.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let node_addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = node.select_next_some().await {
            break address;
        }
    };
    let mut peers: Vec<_> = (0..PEERS).map(|_| made_up_peer(&host)).collect();
    for p in &mut peers {
        p.dial(node_addr.clone()).unwrap();
    }
    // Until the node has every peer's identify.
    let mut identified = 0;
    drive(&mut node, &mut peers, |ev| {
        if let SwarmEvent::NewExternalAddrOfPeer { .. } = ev {
            identified += 1;
        }
        identified >= PEERS * PORTS
    })
    .await;
    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing dialed yet");

    // Something dials each peer by its id (a DHT query, a swarm member, a route).
    let ids: Vec<_> = peers.iter().map(|p| *p.local_peer_id()).collect();
    // A dial left with no address fails at once.
    let mut ended = 0;
    for id in &ids {
        let dial = DialOpts::peer_id(*id)
            .condition(PeerCondition::Always)
            .build();
        if node.dial(dial).is_err() {
            ended += 1;
        }
    }
    if ended < PEERS {
        drive(&mut node, &mut peers, |ev| {
            if let SwarmEvent::OutgoingConnectionError { .. } = ev {
                ended += 1;
            }
            ended >= PEERS
        })
        .await;
    }
    // The last attempts reach their sockets.
    tokio::time::sleep(Duration::from_millis(300)).await;
    seen.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_naming_one_host_get_it_only_the_node_s_budget() {
    let limit = RateLimit {
        burst: BUDGET,
        per_second: 0.0,
    };
    let budgeted =
        attempts_at_the_host(|i| DialBudget::new(i).with_destinations(limit, false)).await;
    assert!(
        (1..=BUDGET as usize).contains(&budgeted),
        "{budgeted} attempts at one host behind a budget of {BUDGET}"
    );
    // The same without the budget: every port of every peer, and the 10 the cache
    // keeps again (with `/p2p`, another address to the swarm): 26 per peer.
    let bare = attempts_at_the_host(|i| i).await;
    assert_eq!(bare, PEERS * (PORTS + 10), "without the budget");
}
