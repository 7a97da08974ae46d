//! `/mesh/marker/1.0.0` between real swarms.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::swarm_with;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt;
use mesh_core::artifact::Artifact;
use mesh_core::{ErrorCode, MemoryTrace, NodeKeypair, RateLimit, SignalMarkerEnvelope, Timestamp};
use mesh_session::marker::{Behaviour, Config, Event, envelope};

fn marker_node(
    key: &NodeKeypair,
    trace: Arc<MemoryTrace>,
    per_peer: RateLimit,
) -> Swarm<Behaviour> {
    swarm_with(
        key,
        Behaviour::new(Config {
            trace,
            per_peer,
            ..Config::new(key.node_id())
        }),
    )
}

/// The next event of `a` (the sender) and of `b` (the receiver) after one send.
async fn exchange(
    a: &mut Swarm<Behaviour>,
    b: &mut Swarm<Behaviour>,
    env: &SignalMarkerEnvelope,
) -> (Event, Event) {
    let pb = *b.local_peer_id();
    a.behaviour_mut().send(&pb, env);
    let (mut ea, mut eb) = (None, None);
    let run = async {
        while ea.is_none() || eb.is_none() {
            tokio::select! {
                e = a.select_next_some() => if let SwarmEvent::Behaviour(e) = e { ea = Some(e) },
                e = b.select_next_some() => if let SwarmEvent::Behaviour(e) = e { eb = Some(e) },
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("timed out");
    (ea.unwrap(), eb.unwrap())
}

#[tokio::test]
async fn envelopes_are_delivered_verified_and_limited() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let (ta, tb) = (
        Arc::new(MemoryTrace::new(50)),
        Arc::new(MemoryTrace::new(50)),
    );
    let mut a = marker_node(&ka, ta.clone(), RateLimit::per_minute(100, 100));
    let mut b = marker_node(&kb, tb.clone(), RateLimit::per_minute(2, 1));
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;

    let env = envelope(&ka, "msg:1", "signal-marker:1", &Timestamp::now()).unwrap();
    match exchange(&mut a, &mut b, &env).await {
        (Event::Sent { message_id, .. }, Event::Received { envelope, peer }) => {
            assert_eq!(message_id, "msg:1");
            assert_eq!(envelope.message_id(), "msg:1");
            assert_eq!(envelope.sender(), ka.participant_id());
            assert_eq!(peer, *a.local_peer_id());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        ta.events()
            .iter()
            .any(|e| e.event_type.as_str() == "signal-marker/sent")
    );
    assert!(
        tb.events()
            .iter()
            .any(|e| e.event_type.as_str() == "signal-marker/received")
    );

    // Changed after signing: refused by the receiver with E_SIG_INVALID.
    let mut doc = envelope(&ka, "msg:2", "signal-marker:2", &Timestamp::now())
        .unwrap()
        .into_map();
    doc.insert("marker/ref".into(), "signal-marker:other".into());
    let tampered = SignalMarkerEnvelope::from_map(doc).unwrap();
    match exchange(&mut a, &mut b, &tampered).await {
        (
            Event::Refused {
                error,
                by_peer: true,
                ..
            },
            Event::Refused { by_peer: false, .. },
        ) => {
            assert_eq!(error.code, ErrorCode::SigInvalid);
        }
        other => panic!("{other:?}"),
    }

    // The receiver's per-peer limit (2, and the tampered one counted): E_TRANSPORT_REJECTED.
    let env3 = envelope(&ka, "msg:3", "signal-marker:3", &Timestamp::now()).unwrap();
    match exchange(&mut a, &mut b, &env3).await {
        (
            Event::Refused {
                error,
                by_peer: true,
                ..
            },
            _,
        ) => assert_eq!(error.code, ErrorCode::TransportRejected),
        other => panic!("{other:?}"),
    }
}
