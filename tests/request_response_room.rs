//! The room request-response's per-peer tables keep, in the patched copy
//! (`vendor/libp2p-request-response`, `PATCHED.md`): a crowd of peers connected at once,
//! or a crowd of requests waiting for dials, grew them, and upstream kept that room for
//! as long as the behaviour lived (the node has six request-response protocols, each
//! with its tables: a swarm's mass join left every member with room for the whole
//! crowd). Real swarms over loopback TCP, with the node's `/mesh/swarm-table/1.0.0`
//! codec.
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, Config, ProtocolSupport};
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId};
use mesh_core::MeshError;
use mesh_signal::group::DiscoveryKey;
use mesh_signal::group::exchange::{Answer, Codec, PROTOCOL, TableRequest};
use mesh_testkit::{Net, net_swarm};

const CROWD: usize = 100;
const STAY: usize = 4;
const WAIT: Duration = Duration::from_secs(60);

type Table = request_response::Behaviour<Codec>;
type TableEvent = SwarmEvent<request_response::Event<Result<TableRequest, MeshError>, Answer>>;

fn swarm() -> Swarm<Table> {
    let key = Keypair::generate_ed25519();
    let behaviour = Table::with_codec(
        Codec::default(),
        [(PROTOCOL, ProtocolSupport::Full)],
        Config::default(),
    );
    net_swarm(&key, Net::Tcp, Duration::from_secs(300), behaviour)
}

/// Drives `s` until `done` holds of its events (counted by the caller), [`WAIT`] at most.
async fn drive(s: &mut Swarm<Table>, mut done: impl FnMut(&TableEvent) -> bool) {
    tokio::time::timeout(WAIT, async { while !done(&s.select_next_some().await) {} })
        .await
        .expect("within the bound");
}

/// 100 peers connect at once, then all but 4 leave: the table of connected peers gives
/// back its room (upstream kept room for the 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connected_table_gives_back_the_room_a_crowd_grew() {
    let mut s = swarm();
    s.listen_on(Net::Tcp.listen_addr()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            break address;
        }
    };
    let mut crowd = Vec::new();
    for _ in 0..CROWD {
        let mut c = swarm();
        c.dial(addr.clone()).unwrap();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = c.select_next_some() => {}
                    _ = &mut stopped => return,
                }
            }
        });
        crowd.push((stop, task));
    }
    let mut up = 0;
    drive(&mut s, |e| {
        up += usize::from(matches!(e, SwarmEvent::ConnectionEstablished { .. }));
        up == CROWD
    })
    .await;
    let [peak, _] = s.behaviour().room();
    assert!(
        peak >= CROWD,
        "room for {peak} connected peers with {CROWD} connected"
    );

    // All but STAY leave (their swarms dropped, so their connections close).
    for (stop, task) in crowd.drain(STAY..) {
        let _ = stop.send(());
        let _ = task.await;
    }
    let mut gone = 0;
    drive(&mut s, |e| {
        gone += usize::from(matches!(e, SwarmEvent::ConnectionClosed { .. }));
        gone == CROWD - STAY
    })
    .await;
    let [room, _] = s.behaviour().room();
    assert!(
        room <= 32,
        "room for {room} connected peers with {STAY} left (peak {peak})"
    );
    for (stop, _) in crowd {
        let _ = stop.send(());
    }
}

/// Requests to 100 peers that are not connected wait for their dials; the dials fail
/// (nothing listens at their addresses), and the table of waiting requests gives back
/// its room (upstream kept room for the 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_requests_table_gives_back_the_room_a_crowd_grew() {
    let mut s = swarm();
    let request = || Ok(TableRequest::first(DiscoveryKey::from_name("room")));
    // Ports where nothing listens: bound, then closed.
    let closed: Vec<Multiaddr> = (0..CROWD)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
        })
        .collect();
    for addr in closed {
        let peer = PeerId::random();
        s.behaviour_mut()
            .send_request_with_addresses(&peer, request(), vec![addr]);
    }
    let [_, peak] = s.behaviour().room();
    assert!(
        peak >= CROWD,
        "room for {peak} waiting peers with {CROWD} waiting"
    );
    let deadline = Instant::now() + WAIT;
    let mut failed = 0;
    drive(&mut s, |e| {
        failed += usize::from(matches!(
            e,
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. })
        ));
        failed == CROWD || Instant::now() > deadline
    })
    .await;
    assert_eq!(failed, CROWD, "every request failed with its dial");
    let [_, room] = s.behaviour().room();
    assert!(
        room <= 32,
        "room for {room} waiting peers with none waiting (peak {peak})"
    );
}
