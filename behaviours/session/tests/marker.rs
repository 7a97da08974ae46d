//! `/mesh/marker/1.0.0` between real swarms.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::swarm_with;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt;
use mesh_core::artifact::Artifact;
use mesh_core::{
    ErrorCode, MemoryTrace, NodeId, NodeKeypair, RateLimit, SignalMarkerEnvelope, Timestamp,
};
use mesh_session::marker::guard::GuardConfig;
use mesh_session::marker::{Behaviour, Config, Event, envelope};
use serde_json::{Value, json};

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

    let env = envelope(
        &ka,
        kb.node_id(),
        "msg:1",
        "signal-marker:1",
        &Timestamp::now(),
    )
    .unwrap();
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
    let mut doc = envelope(
        &ka,
        kb.node_id(),
        "msg:2",
        "signal-marker:2",
        &Timestamp::now(),
    )
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
    let env3 = envelope(
        &ka,
        kb.node_id(),
        "msg:3",
        "signal-marker:3",
        &Timestamp::now(),
    )
    .unwrap();
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

/// An envelope signed by `key`, addressed to `to` (or to nobody), created at `at`. Built
/// from the document, as any signer could.
fn signed(key: &NodeKeypair, to: Option<NodeId>, id: &str, at: &Timestamp) -> SignalMarkerEnvelope {
    let mut doc = json!({
        "schema/v": 1,
        "message/id": id,
        "protocol/version": mesh_core::PROTOCOL_VERSION,
        "message/kind": "signal-marker-envelope.v1",
        "sender/participant-id": key.participant_id().to_string(),
        "created-at": at.as_str(),
        "marker/ref": "signal-marker:replay",
    });
    if let Some(to) = to {
        doc["recipient/node-id"] = to.to_string().into();
    }
    let Value::Object(map) = doc else {
        unreachable!()
    };
    SignalMarkerEnvelope::sign(map, key).unwrap()
}

fn default_node(key: &NodeKeypair) -> Swarm<Behaviour> {
    marker_node(
        key,
        Arc::new(MemoryTrace::new(50)),
        RateLimit::per_minute(100, 600),
    )
}

/// `from` sends `env` to `to`; the code `to` refused it with, or `None` if accepted.
async fn refusal(
    from: &mut Swarm<Behaviour>,
    to: &mut Swarm<Behaviour>,
    env: &SignalMarkerEnvelope,
) -> Option<ErrorCode> {
    match exchange(from, to, env).await {
        (Event::Sent { .. }, Event::Received { .. }) => None,
        (
            Event::Refused {
                error,
                by_peer: true,
                ..
            },
            Event::Refused {
                error: theirs,
                by_peer: false,
                ..
            },
        ) => {
            assert_eq!(error.code, theirs.code);
            Some(error.code)
        }
        other => panic!("{other:?}"),
    }
}

/// A marker taken once is refused when it comes again, from its sender or from a third
/// party that saw it: E_HS_REPLAY.
#[tokio::test]
async fn a_replayed_marker_is_refused() {
    let (ka, kb, kc) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let (mut a, mut b, mut c) = (default_node(&ka), default_node(&kb), default_node(&kc));
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    c.connect(&mut b).await;
    let env = signed(&ka, Some(kb.node_id()), "msg:once", &Timestamp::now());
    assert_eq!(refusal(&mut a, &mut b, &env).await, None);
    assert_eq!(
        refusal(&mut a, &mut b, &env).await,
        Some(ErrorCode::HsReplay)
    );
    assert_eq!(
        refusal(&mut c, &mut b, &env).await,
        Some(ErrorCode::HsReplay)
    );
    // Re-signed with a new created-at, the same message/id is still a replay.
    let again = signed(
        &ka,
        Some(kb.node_id()),
        "msg:once",
        &Timestamp::now().plus_secs(1),
    );
    assert_eq!(
        refusal(&mut a, &mut b, &again).await,
        Some(ErrorCode::HsReplay)
    );
    // A new message/id is taken.
    let next = signed(&ka, Some(kb.node_id()), "msg:twice", &Timestamp::now());
    assert_eq!(refusal(&mut a, &mut b, &next).await, None);
}

/// A marker older than the maximum age (default 300 s) is refused: E_HS_REPLAY.
#[tokio::test]
async fn an_old_marker_is_refused() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let (mut a, mut b) = (default_node(&ka), default_node(&kb));
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    let old = signed(
        &ka,
        Some(kb.node_id()),
        "msg:old",
        &Timestamp::now().plus_secs(-301),
    );
    assert_eq!(
        refusal(&mut a, &mut b, &old).await,
        Some(ErrorCode::HsReplay)
    );
    let recent = signed(
        &ka,
        Some(kb.node_id()),
        "msg:recent",
        &Timestamp::now().plus_secs(-200),
    );
    assert_eq!(refusal(&mut a, &mut b, &recent).await, None);
}

/// A marker addressed to node A, delivered by a third party to node B, is refused by B
/// (E_PROTO_INVALID) and taken by A; one addressed to nobody is refused too.
#[tokio::test]
async fn a_marker_for_another_node_is_refused() {
    let (ks, ka, kb, kc) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let (mut a, mut b, mut c) = (default_node(&ka), default_node(&kb), default_node(&kc));
    a.listen().with_memory_addr_external().await;
    b.listen().with_memory_addr_external().await;
    c.connect(&mut a).await;
    c.connect(&mut b).await;
    // S's marker for A, in C's hands.
    let for_a = signed(&ks, Some(ka.node_id()), "msg:for-a", &Timestamp::now());
    assert_eq!(
        refusal(&mut c, &mut b, &for_a).await,
        Some(ErrorCode::ProtoInvalid)
    );
    assert_eq!(refusal(&mut c, &mut a, &for_a).await, None);
    let for_nobody = signed(&ks, None, "msg:for-nobody", &Timestamp::now());
    assert_eq!(
        refusal(&mut c, &mut b, &for_nobody).await,
        Some(ErrorCode::ProtoInvalid)
    );
}

/// The maximum age and the recipient requirement are the receiver's settings.
#[tokio::test]
async fn age_and_recipient_policy_are_configurable() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut a = default_node(&ka);
    let mut b = swarm_with(
        &kb,
        Behaviour::new(Config {
            guard: GuardConfig {
                max_age_secs: 60,
                require_recipient: false,
                ..GuardConfig::default()
            },
            ..Config::new(kb.node_id())
        }),
    );
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    let at = |s| Timestamp::now().plus_secs(s);
    let to_b = Some(kb.node_id());
    assert_eq!(
        refusal(&mut a, &mut b, &signed(&ka, to_b, "m1", &at(-61))).await,
        Some(ErrorCode::HsReplay)
    );
    assert_eq!(
        refusal(&mut a, &mut b, &signed(&ka, to_b, "m2", &at(-50))).await,
        None
    );
    assert_eq!(
        refusal(&mut a, &mut b, &signed(&ka, None, "m3", &at(0))).await,
        None
    );
    // Addressed to another node is refused whatever the policy.
    let other = Some(NodeKeypair::generate().node_id());
    assert_eq!(
        refusal(&mut a, &mut b, &signed(&ka, other, "m4", &at(0))).await,
        Some(ErrorCode::ProtoInvalid)
    );
}

/// Many envelopes to one peer at once all arrive: beyond `MAX_IN_FLIGHT` they wait for
/// the ones in flight, and never exceed the streams a connection takes (`MAX_STREAMS`,
/// which our own sends share with the peer's: sent all at once, the ones beyond failed
/// with "max sub-streams reached").
#[tokio::test]
async fn a_burst_of_envelopes_to_one_peer_is_queued_and_all_arrive() {
    use mesh_session::marker::{MAX_IN_FLIGHT, MAX_STREAMS};
    const N: usize = 40;
    const { assert!(N > MAX_STREAMS && MAX_IN_FLIGHT < MAX_STREAMS) };
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let trace = || Arc::new(MemoryTrace::new(10));
    let mut a = marker_node(&ka, trace(), RateLimit::per_minute(1000, 1000));
    let mut b = marker_node(&kb, trace(), RateLimit::per_minute(1000, 1000));
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    let pb = *b.local_peer_id();
    let now = Timestamp::now();
    for i in 0..N {
        let env = envelope(&ka, kb.node_id(), &format!("msg:{i}"), "m:1", &now).unwrap();
        a.behaviour_mut().send(&pb, &env);
    }
    let (mut sent, mut received, mut refused) = (0, 0, Vec::new());
    let run = async {
        while sent + refused.len() < N || received < sent {
            tokio::select! {
                e = a.select_next_some() => match e {
                    SwarmEvent::Behaviour(Event::Sent { .. }) => sent += 1,
                    SwarmEvent::Behaviour(Event::Refused { error, .. }) => refused.push(error),
                    _ => {}
                },
                e = b.select_next_some() => {
                    if let SwarmEvent::Behaviour(Event::Received { .. }) = e {
                        received += 1;
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("timed out");
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!((sent, received), (N, N));
}

/// The peers of one network together get one peer's rate: fresh keys from one host
/// (here three over 127.0.0.1, at a node listening beyond loopback, where loopback is
/// one network) each with their own per-peer rate took a place in the replay guard
/// for every envelope, until the guard evicted honest senders' entries. With a
/// network rate of 5: 5 of 9 envelopes taken, the rest `E_TRANSPORT_REJECTED` (all 9
/// before).
#[tokio::test]
async fn the_peers_of_one_network_share_a_rate() {
    use mesh_testkit::{Net, net_swarm};
    let kb = NodeKeypair::generate();
    let mut b = net_swarm(
        &kb.to_libp2p(),
        Net::Tcp,
        Duration::from_secs(60),
        Behaviour::new(Config {
            per_network: RateLimit {
                burst: 5,
                per_second: 0.0,
            },
            ..Config::new(kb.node_id())
        }),
    );
    let lo = mesh_testkit::listen_beyond_loopback(&mut b).await;
    let mut taken = 0;
    let mut refused = Vec::new();
    for s in 0..3 {
        let ka = NodeKeypair::generate();
        let mut a = net_swarm(
            &ka.to_libp2p(),
            Net::Tcp,
            Duration::from_secs(60),
            Behaviour::new(Config::new(ka.node_id())),
        );
        a.dial(lo.clone()).unwrap();
        let pb = *b.local_peer_id();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !a.is_connected(&pb) {
                tokio::select! {
                    _ = a.select_next_some() => {}
                    _ = b.select_next_some() => {}
                }
            }
        })
        .await
        .expect("connected");
        for n in 0..3 {
            let env = signed(
                &ka,
                Some(kb.node_id()),
                &format!("msg:{s}:{n}"),
                &Timestamp::now(),
            );
            match refusal(&mut a, &mut b, &env).await {
                None => taken += 1,
                Some(code) => refused.push(code),
            }
        }
    }
    assert_eq!(taken, 5, "refused: {refused:?}");
    assert!(
        refused.iter().all(|c| *c == ErrorCode::TransportRejected),
        "{refused:?}"
    );
}
