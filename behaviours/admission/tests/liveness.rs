//! A relay that stops answering without closing anything (a hung process: its sockets
//! stay open and the kernel keeps acknowledging) is noticed by `mesh_admission::Liveness`
//! from ping results, and closing its connections ends the reservation at once, instead
//! of the ~15 minutes TCP would take. Short intervals so the test is fast.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::swarm::SwarmEvent;
use mesh_admission::{Liveness, Open, Purpose, server};
use mesh_core::NodeKeypair;
use support::*;

const PING: Duration = Duration::from_millis(200);
const SILENCE: Duration = Duration::from_secs(1);

/// Feeds the watcher's ping results into `liveness` until `until` says stop or `within`
/// passes; returns whether the relay was lost, and when.
async fn watch(
    w: &mut Node<WatcherNode>,
    liveness: &mut Liveness<libp2p::PeerId>,
    within: Duration,
) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < within {
        let got = tokio::time::timeout(
            PING,
            w.wait_within("a ping result", within, |e| match e {
                SwarmEvent::Behaviour(WatcherNodeEvent::Ping(p)) => {
                    Some((p.peer, p.result.is_ok()))
                }
                _ => None,
            }),
        )
        .await;
        let now = Instant::now();
        if let Ok((peer, true)) = got {
            liveness.alive(&peer, now);
        }
        if !liveness.lost(now).is_empty() {
            return Some(now);
        }
    }
    None
}

#[tokio::test]
async fn a_frozen_relay_is_lost_and_its_reservation_ends() {
    let config = server::Config {
        policy: Arc::new(Open {
            limits: server::DEFAULT_CAPS,
        }),
        ..server::Config::default()
    };
    let mut relay = Relay::start_isolated("relay", config, base_relay_config()).await;
    let mut w = watcher(
        "watcher",
        NodeKeypair::generate(),
        PING,
        Duration::from_secs(20),
    );
    let (rp, addr) = (relay.node.peer, relay.addr());
    w.run(move |s| {
        s.behaviour_mut()
            .admission
            .request(rp, Purpose::Reservation, vec![addr])
            .unwrap()
    })
    .await;
    w.wait("the grant", |e| match e {
        SwarmEvent::Behaviour(WatcherNodeEvent::Admission(
            mesh_admission::client::Event::Granted { .. },
        )) => Some(()),
        _ => None,
    })
    .await;
    let listen = reserve(&mut w, &relay).await.unwrap();

    // While the relay answers, it is not lost (about ten pings).
    let mut liveness = Liveness::new(SILENCE);
    liveness.watch(rp, Instant::now());
    assert_eq!(
        watch(&mut w, &mut liveness, Duration::from_secs(2)).await,
        None,
        "a live relay was declared lost"
    );

    // The relay hangs.
    relay.node.freeze();
    let frozen = Instant::now();
    let lost = watch(&mut w, &mut liveness, Duration::from_secs(20))
        .await
        .expect("the frozen relay was never declared lost");
    assert!(
        lost - frozen >= SILENCE / 2,
        "lost {:?} after the freeze",
        lost - frozen
    );

    // Lost: its connections close, and with them the reservation.
    w.clear();
    w.run(move |s| s.disconnect_peer_id(rp)).await.unwrap();
    w.wait_within(
        "the reservation's listener closed",
        Duration::from_secs(10),
        |e| match e {
            SwarmEvent::ListenerClosed { addresses, .. } if addresses.contains(&listen) => Some(()),
            SwarmEvent::ExpiredListenAddr { address, .. } if *address == listen => Some(()),
            _ => None,
        },
    )
    .await;
    assert!(!w.run(move |s| s.is_connected(&rp)).await);
}
