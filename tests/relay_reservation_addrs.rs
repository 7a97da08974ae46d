//! A relay chooses the addresses in its reservation answers (any addresses, new ones at
//! every renewal); the node's listen addresses (what identify sends and its
//! advertisement takes) hold the relay address it reserved through and the relay's
//! others on that host only. A stock rust-libp2p relay over loopback TCP whose external
//! addresses are its own, one more on its host (QUIC) and 10 documentation addresses
//! (198.51.100.0/24: a victim's, say), renewing every 6 s (an 8 s reservation) and
//! naming 5 more after the node's first reservation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::NodeConfig;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, relay};
use mesh_core::{MemoryTrace, NodeKeypair};
use mesh_testkit::node::{loopback_config, start_node};
use tokio::sync::mpsc;

#[path = "support/stock_relay.rs"]
mod stock_relay;
use stock_relay::{StockRelayEvent, stock_relay};

const WAIT: Duration = Duration::from_secs(30);

fn victims(from: u8, n: u8) -> Vec<Multiaddr> {
    (from..from + n)
        .map(|i| format!("/ip4/198.51.100.{i}/tcp/4001").parse().unwrap())
        .collect()
}

/// A relay on its own task: its `/p2p` address, a sender of external addresses to add,
/// and the count of renewals it accepted.
async fn running_relay() -> (Multiaddr, mpsc::Sender<Multiaddr>, Arc<AtomicUsize>) {
    let (mut r, p2p) = stock_relay(relay::Config {
        reservation_duration: Duration::from_secs(8),
        ..Default::default()
    })
    .await;
    r.add_external_address("/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap());
    // (The relay keeps its 20 latest external addresses.)
    for v in victims(1, 10) {
        r.add_external_address(v);
    }
    let (tx, mut rx) = mpsc::channel::<Multiaddr>(64);
    let renewals = Arc::new(AtomicUsize::new(0));
    let counted = renewals.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                e = r.select_next_some() => {
                    if let SwarmEvent::Behaviour(StockRelayEvent::Relay(
                        relay::Event::ReservationReqAccepted { renewed: true, .. },
                    )) = e
                    {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(a) = rx.recv() => r.add_external_address(a),
            }
        }
    });
    (p2p, tx, renewals)
}

fn circuits(listen: &[String]) -> BTreeSet<String> {
    listen
        .iter()
        .filter(|a| a.contains("/p2p-circuit"))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_reports_only_the_relay_address_reserved_through() {
    let (relay_addr, more, renewals) = running_relay().await;
    let a = start_node(
        NodeKeypair::generate(),
        NodeConfig {
            relays: vec![relay_addr.clone()],
            max_relays: 1,
            ..loopback_config()
        },
        Arc::new(MemoryTrace::new(1024)),
        WAIT,
    )
    .await;
    let relay = relay_addr.iter().last().unwrap();
    let expected: BTreeSet<String> = [
        format!("{relay_addr}/p2p-circuit/p2p/{}", a.peer),
        format!(
            "/ip4/127.0.0.1/udp/9/quic-v1{relay}/p2p-circuit/p2p/{}",
            a.peer
        ),
    ]
    .into();

    // The first reservation.
    let start = Instant::now();
    loop {
        let listen = a.handle.status().await.unwrap().listen_addrs;
        if circuits(&listen) == expected {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "listening on {listen:?} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The advertisement with the circuits: its sequence number unchanged for 2 s.
    let mut sequence = a.handle.status().await.unwrap().own_advert_sequence;
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) {
        assert!(start.elapsed() < WAIT, "the advertisement kept changing");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = a.handle.status().await.unwrap().own_advert_sequence;
        if now != sequence {
            (sequence, since) = (now, Instant::now());
        }
    }
    assert!(sequence.is_some());

    // The relay names 5 more addresses; two renewals later, the same addresses and no
    // new advertisement.
    for v in victims(11, 5) {
        more.send(v).await.unwrap();
    }
    let before = renewals.load(Ordering::Relaxed);
    let start = Instant::now();
    while renewals.load(Ordering::Relaxed) < before + 2 {
        assert!(start.elapsed() < WAIT, "the relay saw no renewals");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = a.handle.status().await.unwrap();
    assert_eq!(
        circuits(&status.listen_addrs),
        expected,
        "{:?}",
        status.listen_addrs
    );
    assert!(
        !status
            .listen_addrs
            .iter()
            .any(|a| a.contains("198.51.100.")),
        "{:?}",
        status.listen_addrs
    );
    assert_eq!(status.own_advert_sequence, sequence);
}
