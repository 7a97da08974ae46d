//! The node's AutoNAT server runs a client's tests only within the test rate: a client
//! with thirty addresses to test gets the rate's dials, the rest are answered without a
//! dial (as an internal error, which libp2p's client takes as "no verdict"). Real
//! swarms over loopback TCP: libp2p's AutoNAT v2 client against the node's server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::future::{Either, select};
use libmesh::node::dial_back::{AutonatServer, DialBacks};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Swarm, autonat, identify};
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
