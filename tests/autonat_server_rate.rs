//! The node's AutoNAT server runs a client's tests only within the test rate: a client
//! with thirty addresses to test gets the rate's dials, the rest are answered without a
//! dial (as an internal error, which libp2p's client takes as "no verdict"). Real
//! swarms over loopback TCP: libp2p's AutoNAT v2 client against the node's server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::future::{Either, select};
use libmesh::node::dial_back::{AutonatServer, DialBacks, MAX_DIAL_BACKS};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{PeerId, Swarm, autonat, identify};
use libp2p_swarm_test::SwarmExt;
use mesh_core::RateLimit;
use mesh_testkit::candidates::Candidates;

#[derive(NetworkBehaviour)]
struct Server {
    identify: identify::Behaviour,
    autonat: AutonatServer,
}

#[derive(NetworkBehaviour)]
struct Client {
    identify: identify::Behaviour,
    autonat: autonat::v2::client::Behaviour,
    feed: Candidates,
}

fn identify_of(key: &libp2p::identity::Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new(
        "/libmesh/test/1.0.0".into(),
        key.public(),
    ))
}

#[tokio::test]
async fn a_client_gets_only_its_rate_of_tests() {
    const BURST: u32 = 4;
    let mut server = Swarm::new_ephemeral_tokio(|k| Server {
        identify: identify_of(&k),
        // Four tests at once and no refill: the count after the run is exact.
        autonat: AutonatServer::with_rates(
            DialBacks::default(),
            RateLimit {
                burst: BURST,
                per_second: 0.0,
            },
            RateLimit::per_minute(1000, 1000),
        ),
    });
    let (_, server_addr) = server.listen().await;
    // Thirty addresses of the client's host where nothing listens (ports just freed):
    // each test is one dial of ours, refused at once.
    let candidates = (0..30)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
        })
        .collect();
    let mut client = Swarm::new_ephemeral_tokio(|k| Client {
        identify: identify_of(&k),
        // Its first probe comes 5 s after it starts: ten candidates, all asked of
        // our server, the only one.
        autonat: autonat::v2::client::Behaviour::default(),
        feed: Candidates(candidates),
    });
    client.dial(server_addr).unwrap();

    // Until shortly after that first probe.
    let (mut dials, mut verdicts) = (0usize, 0usize);
    let end = Instant::now() + Duration::from_millis(7500);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let next = select(server.next_swarm_event(), client.next_swarm_event());
        match tokio::time::timeout(left, next).await {
            Ok(Either::Left((SwarmEvent::Dialing { .. }, _))) => dials += 1,
            Ok(Either::Right((SwarmEvent::Behaviour(ClientEvent::Autonat(e)), _))) => {
                assert!(e.result.is_err(), "nothing listens at {}", e.tested_addr);
                verdicts += 1;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(dials, BURST as usize, "dials our server made");
    assert_eq!(verdicts, BURST as usize, "verdicts the client got");
    let refused = server.behaviour().autonat.refused();
    assert_eq!(refused, 10 - u64::from(BURST), "tests refused for the rate");
}

/// A listener on 127.0.0.1 that counts the connections it accepts.
fn counting_listener() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    (port, count)
}

/// The server dials a client back only where the client could be: `0.0.0.0` (which
/// Linux connects to its own loopback) is refused without a dial, the client's own
/// loopback address (it came over loopback) is dialed. libp2p's server dialed whatever
/// the client named.
#[tokio::test]
async fn a_dial_back_goes_only_where_the_client_could_be() {
    let mut server = Swarm::new_ephemeral_tokio(|k| Server {
        identify: identify_of(&k),
        autonat: AutonatServer::new(DialBacks::default()),
    });
    let (_, server_addr) = server.listen().await;
    let (sneaky_port, sneaky) = counting_listener();
    let (own_port, own) = counting_listener();
    let candidates = [
        format!("/ip4/0.0.0.0/tcp/{sneaky_port}").parse().unwrap(),
        format!("/ip4/127.0.0.1/tcp/{own_port}").parse().unwrap(),
    ]
    .into();
    let mut client = Swarm::new_ephemeral_tokio(|k| Client {
        identify: identify_of(&k),
        autonat: autonat::v2::client::Behaviour::default(),
        feed: Candidates(candidates),
    });
    client.dial(server_addr).unwrap();

    let mut verdicts = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    while verdicts.len() < 2 {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            break;
        };
        let next = select(server.next_swarm_event(), client.next_swarm_event());
        match tokio::time::timeout(left, next).await {
            Ok(Either::Right((SwarmEvent::Behaviour(ClientEvent::Autonat(e)), _))) => {
                verdicts.push((e.tested_addr.to_string(), e.result.is_ok()));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let ordering = std::sync::atomic::Ordering::SeqCst;
    // The listener's thread counts a connection when its `accept` returns, which may
    // come after the verdict (the server's dial failed at the handshake): wait for it.
    let end = Instant::now() + Duration::from_secs(5);
    while own.load(ordering) == 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(verdicts.len(), 2, "verdicts: {verdicts:?}");
    assert!(verdicts.iter().all(|(_, ok)| !ok), "{verdicts:?}");
    assert_eq!(sneaky.load(ordering), 0, "the server dialed 0.0.0.0");
    assert_eq!(server.behaviour().autonat.out_of_scope(), 1);
    assert!(
        own.load(ordering) >= 1,
        "the client's own address was not dialed"
    );
}

/// With [`MAX_DIAL_BACKS`] dial-backs in flight, a client's tests are refused before any
/// dial (no verdict, as beyond the rates): the scope check knows a dial-back's client
/// only through that table, and a dial-back it could not record went out unchecked,
/// here to `0.0.0.0` (the server's own loopback).
#[tokio::test]
async fn no_dial_back_leaves_untracked_when_the_table_is_full() {
    let dial_backs = DialBacks::default();
    let mut server = Swarm::new_ephemeral_tokio(|k| Server {
        identify: identify_of(&k),
        autonat: AutonatServer::with_rates(
            dial_backs.clone(),
            RateLimit::per_minute(1000, 1000),
            RateLimit::per_minute(1000, 1000),
        ),
    });
    // Other clients' dial-backs, still running.
    for i in 0..MAX_DIAL_BACKS {
        let id = ConnectionId::new_unchecked(1_000_000 + i);
        assert!(dial_backs.record(id, PeerId::random()));
    }
    assert_eq!(dial_backs.in_flight(), MAX_DIAL_BACKS);
    let (_, server_addr) = server.listen().await;
    let (sneaky_port, sneaky) = counting_listener();
    let candidates = [format!("/ip4/0.0.0.0/tcp/{sneaky_port}").parse().unwrap()].into();
    let mut client = Swarm::new_ephemeral_tokio(|k| Client {
        identify: identify_of(&k),
        autonat: autonat::v2::client::Behaviour::default(),
        feed: Candidates(candidates),
    });
    client.dial(server_addr).unwrap();
    // Past the client's first probe (5 s after it starts).
    let end = Instant::now() + Duration::from_millis(7500);
    let mut dials = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let next = select(server.next_swarm_event(), client.next_swarm_event());
        match tokio::time::timeout(left, next).await {
            Ok(Either::Left((SwarmEvent::Dialing { .. }, _))) => dials += 1,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dials, 0, "the server dialed a test back");
    assert_eq!(sneaky.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        server.behaviour().autonat.refused() >= 1,
        "the test refused"
    );
}
