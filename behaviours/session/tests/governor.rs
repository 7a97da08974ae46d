//! The governor keeps a known peer connected: first dial, then redial after a drop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::swarm_with;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt;
use mesh_core::{MemoryTrace, NodeKeypair};
use mesh_session::governor::Temperature;
use mesh_session::{Behaviour, Config, Event};

async fn until_a(
    a: &mut Swarm<Behaviour>,
    b: &mut Swarm<Behaviour>,
    want: impl Fn(&Event) -> bool,
) {
    let run = async {
        loop {
            tokio::select! {
                ev = a.select_next_some() => if let SwarmEvent::Behaviour(e) = ev && want(&e) { return },
                _ = b.select_next_some() => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("timed out");
}

#[tokio::test]
async fn known_peer_is_dialed_and_redialed_after_a_drop() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let config = || Config {
        tick_interval: Duration::from_millis(50),
        trace: Arc::new(MemoryTrace::new(50)),
        ..Config::default()
    };
    let mut a = swarm_with(&ka, Behaviour::new(ka.clone(), config()));
    let mut b = swarm_with(&kb, Behaviour::new(kb.clone(), config()));
    let (b_addr, _) = b.listen().await;
    let pa = *a.local_peer_id();

    // Only the governor dials: A was told B's node id and address, nothing else.
    a.behaviour_mut().add_peer(kb.node_id(), vec![b_addr]);
    until_a(&mut a, &mut b, |e| {
        matches!(e, Event::SessionEstablished { .. })
    })
    .await;
    assert_eq!(
        a.behaviour().governor().temperature(&kb.node_id()),
        Some(Temperature::Hot)
    );

    // B drops the connection; A notices, backs off (the first retry is due within a
    // second: timestamps have whole-second resolution) and comes back with a new session.
    assert!(b.disconnect_peer_id(pa).is_ok());
    until_a(&mut a, &mut b, |e| matches!(e, Event::SessionClosed { .. })).await;
    assert_eq!(
        a.behaviour().governor().temperature(&kb.node_id()),
        Some(Temperature::Cold)
    );
    until_a(&mut a, &mut b, |e| {
        matches!(e, Event::SessionEstablished { .. })
    })
    .await;
    assert_eq!(
        a.behaviour().governor().temperature(&kb.node_id()),
        Some(Temperature::Hot)
    );
    assert!(a.behaviour().session(b.local_peer_id()).is_some());
}
