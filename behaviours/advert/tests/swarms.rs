//! `/mesh/advert/1.0.0` between real libp2p swarms (libp2p-swarm-test).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::raw;
use mesh_testkit::swarm_with;
use std::time::Duration;

use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt;
use mesh_advert::own::advert_for;
use mesh_advert::protocol::{self, PROTOCOL};
use mesh_advert::{
    AdvertStore, Answer, Behaviour, Config, Event, MemoryStore, NodeWithdrawal, StoreLimits,
};
use mesh_core::artifact::Artifact;
use mesh_core::{ErrorCode, NodeAdvertisement, NodeId, NodeKeypair, Timestamp};

type Node = Swarm<Behaviour<MemoryStore>>;

/// A swarm whose libp2p identity is `key` (so its peer id names the same node), with the
/// memory and TCP transports that libp2p-swarm-test's `listen()` expects.
fn node(key: &NodeKeypair) -> Node {
    swarm_with(
        key,
        Behaviour::new(MemoryStore::new(StoreLimits::default()), Config::default()),
    )
}

fn advert(key: &NodeKeypair, seq: u64) -> NodeAdvertisement {
    advert_for(
        key,
        &["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        seq,
        &Timestamp::now(),
        600,
    )
    .unwrap()
}

/// Polls every swarm until one yields a behaviour event; panics after 10 s.
async fn next_event(swarms: &mut [&mut Node]) -> (usize, Event) {
    tokio::time::timeout(Duration::from_secs(10), mesh_testkit::next_event(swarms))
        .await
        .expect("no event within 10 s")
}

/// Waits for the response to `correlation` at swarm `at`, collecting other events.
async fn response(
    swarms: &mut [&mut Node],
    at: usize,
    correlation: &str,
    others: &mut Vec<(usize, Event)>,
) -> Result<Answer, mesh_core::MeshError> {
    loop {
        match next_event(swarms).await {
            (
                i,
                Event::Response {
                    correlation: c,
                    result,
                    ..
                },
            ) if i == at && c == correlation => return result,
            (
                i,
                Event::OutboundFailure {
                    correlation: c,
                    error,
                    ..
                },
            ) if i == at && c == correlation => {
                panic!("request failed: {error}")
            }
            other => others.push(other),
        }
    }
}

async fn connect(a: &mut Node, b: &mut Node) {
    b.listen().with_memory_addr_external().await;
    a.connect(b).await;
}

#[tokio::test]
async fn publish_lookup_refresh_withdraw() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let (mut a, mut b) = (node(&ka), node(&kb));
    connect(&mut a, &mut b).await;
    let pb = *b.local_peer_id();
    let mut others = Vec::new();

    let c = a.behaviour_mut().publish(&pb, advert(&ka, 5));
    assert_eq!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap(),
        Answer::Stored
    );
    assert!(others.iter().any(|(i, e)| *i == 1
        && matches!(e, Event::Stored { node, sequence_no: 5, replaced: None, .. } if *node == ka.node_id())));

    let c = a.behaviour_mut().lookup(&pb, ka.node_id());
    match response(&mut [&mut a, &mut b], 0, &c, &mut others)
        .await
        .unwrap()
    {
        Answer::Found(ad) => assert_eq!(ad.sequence_no(), 5),
        other => panic!("{other:?}"),
    }
    let c = a.behaviour_mut().refresh(&pb, ka.node_id(), 5);
    assert_eq!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap(),
        Answer::Unchanged
    );
    let c = a.behaviour_mut().refresh(&pb, ka.node_id(), 4);
    assert!(matches!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap(),
        Answer::Found(_)
    ));

    // Stale and newer.
    let c = a.behaviour_mut().publish(&pb, advert(&ka, 5));
    let err = response(&mut [&mut a, &mut b], 0, &c, &mut others)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AdvStaleSeq);
    let c = a.behaviour_mut().publish(&pb, advert(&ka, 6));
    assert_eq!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap(),
        Answer::Replaced
    );

    // Withdraw, then the lookup finds nothing and a replay is refused.
    let w = NodeWithdrawal::create(&ka, 7, &Timestamp::now()).unwrap();
    let c = a.behaviour_mut().withdraw(&pb, w);
    assert_eq!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap(),
        Answer::Withdrawn
    );
    let c = a.behaviour_mut().lookup(&pb, ka.node_id());
    assert_eq!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap(),
        Answer::NotFound
    );
    let c = a.behaviour_mut().publish(&pb, advert(&ka, 6));
    assert_eq!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap_err()
            .code,
        ErrorCode::AdvStaleSeq
    );
    assert!(b.behaviour().store().is_empty());
}

/// A peer-id-keyed forgery: the advertisement names `victim` but is signed by `forger`.
fn forged(victim: &NodeKeypair, forger: &NodeKeypair, seq: u64) -> NodeAdvertisement {
    let honest = advert(victim, seq);
    let mut doc = honest.as_map().clone();
    // Re-sign with the forger's key while keeping the victim's ids.
    let input = honest.signing_input();
    doc.insert(
        "signature".into(),
        mesh_core::artifact::signature_value(&forger.sign(&input)),
    );
    NodeAdvertisement::from_map(doc).unwrap()
}

#[tokio::test]
async fn forged_adverts_are_rejected_and_not_forwarded_valid_ones_are() {
    let (ka, kb, kc, kx) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let (mut a, mut b, mut c) = (node(&ka), node(&kb), node(&kc));
    connect(&mut a, &mut b).await;
    connect(&mut c, &mut b).await;
    let pb = *b.local_peer_id();
    let mut others = Vec::new();

    // 1. Signed by another key than the advertised node: E_SIG_INVALID.
    let corr = a.behaviour_mut().publish(&pb, forged(&kx, &ka, 1));
    let err = response(&mut [&mut a, &mut b, &mut c], 0, &corr, &mut others)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::SigInvalid);

    // 2. A field changed after signing: E_SIG_INVALID.
    let mut doc = advert(&ka, 2).into_map();
    doc.insert("sequence/no".into(), 3.into());
    let tampered = NodeAdvertisement::from_map(doc).unwrap();
    let corr = a.behaviour_mut().publish(&pb, tampered);
    let err = response(&mut [&mut a, &mut b, &mut c], 0, &corr, &mut others)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::SigInvalid);

    // 3. Another node's advertisement, validly signed by that node: accepted (A relays X).
    let corr = a.behaviour_mut().publish(&pb, advert(&kx, 4));
    assert_eq!(
        response(&mut [&mut a, &mut b, &mut c], 0, &corr, &mut others)
            .await
            .unwrap(),
        Answer::Stored
    );

    // C must now receive exactly the valid one, forwarded by B.
    let (from, node_x) = loop {
        if let Some((_, Event::Stored { peer, node, .. })) = others.iter().find(|(i, _)| *i == 2) {
            break (*peer, *node);
        }
        let ev = next_event(&mut [&mut a, &mut b, &mut c]).await;
        others.push(ev);
    };
    assert_eq!(from, pb);
    assert_eq!(node_x, kx.node_id());
    assert_eq!(
        c.behaviour().store().len(),
        1,
        "only the valid advertisement reached C"
    );
    let held = c
        .behaviour()
        .store()
        .get(&kx.node_id(), &Timestamp::now())
        .unwrap();
    assert_eq!(held.sequence_no(), 4);
    assert!(
        c.behaviour()
            .store()
            .get(&kx.node_id(), &Timestamp::now())
            .is_some()
    );
    assert_eq!(b.behaviour().store().len(), 1);
    // B reported both rejections, with their codes; C saw nothing but the valid one.
    let codes: Vec<ErrorCode> = others
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Rejected { error, .. } if *i == 1 => Some(error.code),
            _ => None,
        })
        .collect();
    assert_eq!(codes, [ErrorCode::SigInvalid, ErrorCode::SigInvalid]);
    assert_eq!(others.iter().filter(|(i, _)| *i == 2).count(), 1);
}

#[tokio::test]
async fn malformed_and_oversized_requests_get_coded_rejections() {
    use libp2p::request_response::{self, Message, ProtocolSupport};
    let kb = NodeKeypair::generate();
    let mut b = node(&kb);
    let mut raw = swarm_with(
        &NodeKeypair::generate(),
        request_response::Behaviour::with_codec(
            raw::RawCodec,
            [(PROTOCOL, ProtocolSupport::Outbound)],
            request_response::Config::default(),
        ),
    );
    b.listen().with_memory_addr_external().await;
    raw.connect(&mut b).await;
    tokio::spawn(b.loop_on_next());
    let pb = kb.to_libp2p().public().to_peer_id();
    let junk: Vec<Vec<u8>> = vec![
        b"\xff\xfe not cbor".to_vec(),
        vec![0xa1, 0x61, b'k', 0x01, 0x02],
        mesh_core::cbor::encode(
            &serde_json::json!({"kind": "publish", "correlation/id": "x", "advert": {"schema/v": 1}}),
        ),
        vec![0x60; protocol::MAX_MESSAGE_BYTES + 10],
    ];
    for bytes in junk {
        raw.behaviour_mut().send_request(&pb, bytes);
        // `wait` panics when the swarm is silent for 10 s.
        let resp = raw
            .wait(|e| match e {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: Message::Response { response, .. },
                    ..
                }) => Some(response),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    error, ..
                }) => panic!("{error}"),
                _ => None,
            })
            .await;
        let r = protocol::decode_response(&resp).unwrap();
        assert_eq!(r.status, protocol::Status::Rejected);
        assert_eq!(r.error.unwrap().code, ErrorCode::ProtoInvalid);
    }
}

#[tokio::test]
async fn lookup_answers_are_verified_and_cached() {
    let (ka, kb, kx) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let (mut a, mut b) = (node(&ka), node(&kb));
    connect(&mut a, &mut b).await;
    let now = Timestamp::now();
    b.behaviour_mut()
        .store_mut()
        .insert(advert(&kx, 9), &now)
        .unwrap();
    let pb = *b.local_peer_id();
    let mut others = Vec::new();
    let c = a.behaviour_mut().lookup(&pb, kx.node_id());
    assert!(matches!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap(),
        Answer::Found(_)
    ));
    assert_eq!(
        a.behaviour()
            .store()
            .get(&kx.node_id(), &now)
            .unwrap()
            .sequence_no(),
        9
    );
    let unknown: NodeId = NodeKeypair::generate().node_id();
    let c = a.behaviour_mut().lookup(&pb, unknown);
    assert_eq!(
        response(&mut [&mut a, &mut b], 0, &c, &mut others)
            .await
            .unwrap(),
        Answer::NotFound
    );
}

/// What a peer publishes counts under its network, not its peer id: two peers connected
/// over TCP from 127.0.0.1 share one share of the listener's store, a peer on the
/// memory transport (no IP) has its own.
#[tokio::test]
async fn publishes_count_under_the_network_they_come_from() {
    let limits = StoreLimits {
        per_source_entries: 2,
        ..StoreLimits::default()
    };
    let config = Config {
        forward: false,
        ..Config::default()
    };
    let kb = NodeKeypair::generate();
    let mut b = swarm_with(&kb, Behaviour::new(MemoryStore::new(limits), config));
    let (k1, k2, k3) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let (mut a1, mut a2, mut m) = (node(&k1), node(&k2), node(&k3));
    b.listen().with_tcp_addr_external().await;
    a1.connect(&mut b).await;
    a2.connect(&mut b).await;
    let mut others = Vec::new();
    async fn publish(
        from: &mut Node,
        b: &mut Node,
        others: &mut Vec<(usize, Event)>,
    ) -> Result<Answer, mesh_core::MeshError> {
        let pb = *b.local_peer_id();
        let c = from
            .behaviour_mut()
            .publish(&pb, advert(&NodeKeypair::generate(), 1));
        response(&mut [from, b], 0, &c, others).await
    }
    assert_eq!(
        publish(&mut a1, &mut b, &mut others).await.unwrap(),
        Answer::Stored
    );
    assert_eq!(
        publish(&mut a1, &mut b, &mut others).await.unwrap(),
        Answer::Stored
    );
    // Another peer id from the same address: the same share, which is full.
    let e = publish(&mut a2, &mut b, &mut others).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected, "{e}");
    let loopback = mesh_advert::Source::of_ip("127.0.0.1".parse().unwrap());
    assert_eq!(b.behaviour().store().held_by(&loopback).0, 2);
    // A peer without an IP counts by its peer id.
    let memory_addr = b
        .listeners()
        .find(|a| a.to_string().starts_with("/memory"))
        .cloned()
        .expect("libp2p-swarm-test listens on memory too");
    m.dial(memory_addr).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::select! {
                e = m.next_swarm_event() => if matches!(e, SwarmEvent::ConnectionEstablished { .. }) { break },
                _ = b.next_swarm_event() => {},
            }
        }
    })
    .await
    .expect("memory connection");
    assert_eq!(
        publish(&mut m, &mut b, &mut others).await.unwrap(),
        Answer::Stored
    );
    let by_peer = mesh_advert::Source::Peer(*m.local_peer_id());
    assert_eq!(b.behaviour().store().held_by(&by_peer).0, 1);
    assert_eq!(b.behaviour().store().len(), 3);
}

/// An advertisement a peer hands us in answer to a lookup is cached under that peer's
/// network, as if it had published it: a peer cannot fill the store with entries that
/// count for nobody and are never evicted (the node looks up every session peer's own
/// advertisement, and a peer can make a fresh identity for every session).
#[tokio::test]
async fn lookup_answers_are_cached_under_the_answering_peer_s_network() {
    let limits = StoreLimits {
        per_source_entries: 2,
        ..StoreLimits::default()
    };
    let ka = NodeKeypair::generate();
    let mut a = swarm_with(
        &ka,
        Behaviour::new(MemoryStore::new(limits), Config::default()),
    );
    let kb = NodeKeypair::generate();
    let mut b = node(&kb);
    b.listen().with_tcp_addr_external().await;
    a.connect(&mut b).await;
    let now = Timestamp::now();
    let keys: Vec<NodeKeypair> = (0..3).map(|_| NodeKeypair::generate()).collect();
    for k in &keys {
        b.behaviour_mut()
            .store_mut()
            .insert(advert(k, 1), &now)
            .unwrap();
    }
    let pb = *b.local_peer_id();
    let mut others = Vec::new();
    for k in &keys {
        let c = a.behaviour_mut().lookup(&pb, k.node_id());
        let answer = response(&mut [&mut a, &mut b], 0, &c, &mut others).await;
        assert!(
            matches!(answer.unwrap(), Answer::Found(_)),
            "found either way"
        );
    }
    let loopback = mesh_advert::Source::of_ip("127.0.0.1".parse().unwrap());
    let store = a.behaviour().store();
    assert_eq!(store.held_by(&loopback).0, 2, "the peer's share holds two");
    assert_eq!(store.source_of(&keys[0].node_id()), loopback);
    assert_eq!(store.source_of(&keys[1].node_id()), loopback);
    assert!(
        store.get(&keys[2].node_id(), &now).is_none(),
        "beyond the peer's share the answer is not cached"
    );
}

/// What one peer's accepted changes cost our neighbours: forwarded within
/// `forward_per_source` per source, `forward_total` in all. Two peers (each its own
/// source on the memory transport) publish 12 advertisements of fresh keys each to B;
/// B stores all 24 and forwards 4 of the first's (its source's budget) and 2 of the
/// second's (the rest of the total budget) to C. Every one was forwarded before.
#[tokio::test]
async fn forwarding_stays_within_the_budgets() {
    let config = Config {
        forward_per_source: mesh_core::rate::RateLimit::per_minute(4, 0),
        forward_total: mesh_core::rate::RateLimit::per_minute(6, 0),
        ..Config::default()
    };
    let kb = NodeKeypair::generate();
    let mut b = swarm_with(
        &kb,
        Behaviour::new(MemoryStore::new(StoreLimits::default()), config),
    );
    let (k1, k2, kc) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let (mut a1, mut a2, mut c) = (node(&k1), node(&k2), node(&kc));
    b.listen().with_memory_addr_external().await;
    a1.connect(&mut b).await;
    a2.connect(&mut b).await;
    c.connect(&mut b).await;
    let pb = *b.local_peer_id();
    let mut others = Vec::new();
    for a in [&mut a1, &mut a2] {
        for _ in 0..12 {
            let corr = a
                .behaviour_mut()
                .publish(&pb, advert(&NodeKeypair::generate(), 1));
            let answer = response(&mut [a, &mut b, &mut c], 0, &corr, &mut others).await;
            assert_eq!(answer.unwrap(), Answer::Stored);
        }
    }
    assert_eq!(b.behaviour().store().len(), 24);
    // The forwards reach C (bounded: events for at most 3 s).
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            next_event(&mut [&mut a1, &mut a2, &mut b, &mut c]).await;
        }
    })
    .await;
    assert_eq!(
        c.behaviour().store().len(),
        6,
        "forwarded to C: 4 of the first peer's, 2 of the second's"
    );
}

/// Requests count per network too: peers of one address under fresh keys share one
/// budget (`Config::per_network`), each still within its own (`per_peer`). Three peers
/// over loopback TCP with three lookups each against a per-peer burst of 3 and a
/// per-network burst of 5, at a node that also listens on an interface (loopback is then
/// one network): five answered, four refused (all nine answered before). At a node on
/// loopback alone (several nodes of one host) each loopback peer counts for itself.
#[tokio::test]
async fn requests_of_one_network_share_its_budget() {
    assert_eq!(lookups_from_three_loopback_peers(true).await, (5, 4));
    assert_eq!(lookups_from_three_loopback_peers(false).await, (9, 0));
}

/// Three peers over loopback TCP send three lookups each to a node (per peer 3, per
/// network 5) that listens `beyond` loopback or not: (answered, refused).
async fn lookups_from_three_loopback_peers(beyond: bool) -> (usize, usize) {
    let limit = |burst| mesh_core::RateLimit {
        burst,
        per_second: 0.0,
    };
    let config = Config {
        forward: false,
        per_peer: limit(3),
        per_network: limit(5),
        ..Config::default()
    };
    let kb = NodeKeypair::generate();
    let mut b = swarm_with(
        &kb,
        Behaviour::new(MemoryStore::new(StoreLimits::default()), config),
    );
    b.listen().with_tcp_addr_external().await;
    if beyond {
        b.listen_on("/ip4/0.0.0.0/tcp/0".parse().unwrap()).unwrap();
        let interface = async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = b.next_swarm_event().await
                    && !address.to_string().starts_with("/ip4/127.")
                {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), interface)
            .await
            .expect("a listen address beyond loopback (this host has an interface)");
    }
    let pb = *b.local_peer_id();
    let mut clients: Vec<Node> = (0..3).map(|_| node(&NodeKeypair::generate())).collect();
    for c in &mut clients {
        c.connect(&mut b).await;
    }
    let (mut answered, mut refused) = (0, 0);
    let mut others = Vec::new();
    for c in &mut clients {
        for _ in 0..3 {
            let corr = c
                .behaviour_mut()
                .lookup(&pb, NodeKeypair::generate().node_id());
            match response(&mut [c, &mut b], 0, &corr, &mut others).await {
                Ok(Answer::NotFound) => answered += 1,
                Err(e) if e.code == ErrorCode::TransportRejected => refused += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    (answered, refused)
}
