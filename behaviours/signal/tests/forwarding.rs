//! `/mesh/signal/1.0.0` between real swarms: direct, through one and two signaling
//! hosts, and the refusals (forged or altered frames, hop limit, rate limit, duplicates);
//! the behaviour sweeps its correlation table itself; the quotas that keep one peer from
//! filling the correlation table, and a rate-limited frame that comes again in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::Swarm;
use libp2p_swarm_test::SwarmExt;
use mesh_core::{Artifact, ErrorCode, NodeKeypair, RateLimit, SignalFrame, Timestamp};
use mesh_signal::{Behaviour, Config, Event, Limits, State, Transition};
use mesh_testkit::{TestClock, next_event, swarm_with};
use serde_json::{Value, json};

fn node(key: &NodeKeypair, host: bool, per_sender: RateLimit) -> Swarm<Behaviour> {
    let mut config = Config {
        host,
        per_sender,
        ..Config::new(key.node_id())
    };
    // The per-peer allowance is not what these tests are about (when they ask for a
    // generous per-sender limit).
    if per_sender.burst >= 1000 {
        config.per_peer = per_sender;
        config.requests_per_network = per_sender;
    }
    swarm_with(key, Behaviour::new(config))
}

fn frame(from: &NodeKeypair, to: &NodeKeypair, kind: &str, corr: &str, id: &str) -> SignalFrame {
    let now = Timestamp::now();
    let payload = match kind {
        "candidate" => json!({"addrs": ["/ip4/192.0.2.1/udp/4001/quic-v1"]}),
        _ => json!({}),
    };
    let Value::Object(doc) = json!({
        "schema/v": 1, "message/kind": "signal-frame.v1", "frame/id": id, "kind": kind,
        "from": from.node_id().to_string(), "to": to.node_id().to_string(),
        "correlation/id": corr, "created-at": now.as_str(),
        "expires-at": now.plus_secs(60).as_str(), "payload": payload,
    }) else {
        unreachable!()
    };
    SignalFrame::sign(doc, from).unwrap()
}

/// Polls every swarm until `done` says so (bounded), collecting (index, event).
async fn run(
    swarms: &mut [&mut Swarm<Behaviour>],
    mut done: impl FnMut(&[(usize, Event)]) -> bool,
) -> Vec<(usize, Event)> {
    let mut seen = Vec::new();
    let work = async {
        while !done(&seen) {
            seen.push(next_event(swarms).await);
        }
    };
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .expect("timed out");
    seen
}

fn received(seen: &[(usize, Event)], at: usize) -> Option<&SignalFrame> {
    seen.iter().find_map(|(i, e)| match e {
        Event::Received { frame, .. } if *i == at => Some(&**frame),
        _ => None,
    })
}

fn refused(seen: &[(usize, Event)], at: usize) -> Option<ErrorCode> {
    seen.iter().find_map(|(i, e)| match e {
        Event::Refused {
            error,
            by_peer: false,
            ..
        } if *i == at => Some(error.code),
        _ => None,
    })
}

async fn connect(a: &mut Swarm<Behaviour>, b: &mut Swarm<Behaviour>) {
    b.listen().with_memory_addr_external().await;
    a.connect(b).await;
}

#[tokio::test]
async fn through_one_and_two_hosts() {
    let lots = RateLimit::per_minute(1000, 1000);
    let (ka, kh1, kh2, kb) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut a = node(&ka, false, lots);
    let mut h1 = node(&kh1, true, lots);
    let mut h2 = node(&kh2, true, lots);
    let mut b = node(&kb, false, lots);
    connect(&mut a, &mut h1).await;
    connect(&mut h1, &mut h2).await;
    connect(&mut h2, &mut b).await;
    connect(&mut h1, &mut b).await;

    // One host: A -> H1 -> B.
    let req = frame(&ka, &kb, "connect_request", "c1", "f1");
    a.behaviour_mut()
        .send(&req, Some(*h1.local_peer_id()))
        .unwrap();
    let seen = run(&mut [&mut a, &mut h1, &mut h2, &mut b], |s| {
        received(s, 3).is_some()
    })
    .await;
    let got = received(&seen, 3).unwrap();
    assert_eq!(got.hops(), 1);
    assert_eq!(got.from(), ka.node_id());
    assert!(
        seen.iter()
            .any(|(i, e)| *i == 1 && matches!(e, Event::Forwarded { .. }))
    );
    assert!(seen.iter().any(|(i, e)| *i == 3
        && matches!(
            e,
            Event::Received {
                transition: Transition::Opened,
                ..
            }
        )));

    // The answer comes back directly? B is not connected to A: through H1 as well.
    let acc = frame(&kb, &ka, "connect_accept", "c1", "f2");
    b.behaviour_mut()
        .send(&acc, Some(*h1.local_peer_id()))
        .unwrap();
    let seen = run(&mut [&mut a, &mut h1, &mut h2, &mut b], |s| {
        received(s, 0).is_some()
    })
    .await;
    assert_eq!(received(&seen, 0).unwrap().kind(), "connect_accept");

    // Two hosts: H1 loses its direct link to B and routes through H2: A -> H1 -> H2 -> B.
    let pb = *b.local_peer_id();
    h1.disconnect_peer_id(pb).unwrap();
    let _ = run(&mut [&mut a, &mut h1, &mut h2, &mut b], |_| true).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ph2 = *h2.local_peer_id();
    h1.behaviour_mut().add_route(kb.node_id(), ph2);
    let cand = frame(&ka, &kb, "candidate", "c1", "f3");
    a.behaviour_mut()
        .send(&cand, Some(*h1.local_peer_id()))
        .unwrap();
    let seen = run(&mut [&mut a, &mut h1, &mut h2, &mut b], |s| {
        received(s, 3).is_some()
    })
    .await;
    assert_eq!(received(&seen, 3).unwrap().hops(), 2);
}

#[tokio::test]
async fn forged_altered_duplicate_and_limited_frames_are_refused() {
    let (ka, kh, kb) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut a = node(&ka, false, RateLimit::per_minute(1000, 1000));
    let mut h = node(&kh, true, RateLimit::per_minute(2, 2));
    let mut b = node(&kb, false, RateLimit::per_minute(1000, 1000));
    connect(&mut a, &mut h).await;
    connect(&mut h, &mut b).await;
    let via = Some(*h.local_peer_id());

    // A host that rewrites a frame's candidates: the recipient refuses it (E_SIG_INVALID).
    // The rogue runs with A's node id in its config, so it may "send" A's frames.
    let kr = NodeKeypair::generate();
    let mut rogue = swarm_with(&kr, Behaviour::new(Config::new(ka.node_id())));
    connect(&mut rogue, &mut b).await;
    let honest = frame(&ka, &kb, "candidate", "c9", "f9");
    let mut doc = honest.to_json();
    doc["payload"]["addrs"] = json!(["/ip4/203.0.113.66/udp/1/quic-v1"]);
    let altered = SignalFrame::from_json(doc).unwrap();
    rogue.behaviour_mut().send(&altered, None).unwrap_err(); // no open correlation
    rogue
        .behaviour_mut()
        .correlations_mut()
        .on_frame(
            &ka.node_id(),
            &frame(&ka, &kb, "connect_request", "c9", "f8"),
            &Timestamp::now(),
        )
        .unwrap();
    rogue.behaviour_mut().send(&altered, None).unwrap();
    let seen = run(&mut [&mut rogue, &mut b], |s| refused(s, 1).is_some()).await;
    assert_eq!(refused(&seen, 1), Some(ErrorCode::SigInvalid));

    // Valid frames through the host; the same frame again is a duplicate.
    let req = frame(&ka, &kb, "connect_request", "c1", "g1");
    a.behaviour_mut().send(&req, via).unwrap();
    let seen = run(&mut [&mut a, &mut h, &mut b], |s| received(s, 2).is_some()).await;
    assert!(received(&seen, 2).is_some());
    // The same frame replayed (here by the rogue, straight to B) is a duplicate.
    rogue.behaviour_mut().send(&req, None).unwrap();
    let seen = run(&mut [&mut rogue, &mut b], |s| {
        s.iter()
            .filter(|(i, e)| *i == 1 && matches!(e, Event::Refused { .. }))
            .count()
            >= 1
    })
    .await;
    assert_eq!(refused(&seen, 1), Some(ErrorCode::HsReplay));

    let cand = frame(&ka, &kb, "candidate", "c1", "g2");
    a.behaviour_mut().send(&cand, via).unwrap();
    let seen = run(&mut [&mut a, &mut h, &mut b], |s| received(s, 2).is_some()).await;
    assert!(received(&seen, 2).is_some());

    // The host's per-sender limit (2 per minute) refuses the third.
    let cand = frame(&ka, &kb, "candidate", "c1", "g3");
    a.behaviour_mut().send(&cand, via).unwrap();
    let by_host = |s: &[(usize, Event)]| {
        s.iter().any(|(i, e)| {
            *i == 0
                && matches!(e, Event::Refused { by_peer: true, error, .. }
                    if error.code == ErrorCode::TransportRejected)
        })
    };
    let seen = run(&mut [&mut a, &mut h, &mut b], |s| {
        refused(s, 1).is_some() && by_host(s)
    })
    .await;
    assert_eq!(refused(&seen, 1), Some(ErrorCode::TransportRejected));
    assert!(received(&seen, 2).is_none(), "the limited frame reached B");

    // A frame claiming more hops than allowed is refused before anything else.
    let mut doc = frame(&ka, &kb, "candidate", "c1", "g4").to_json();
    doc["hops"] = json!(3);
    assert_eq!(
        SignalFrame::from_json(doc).unwrap_err().code,
        ErrorCode::TransportRejected
    );
}

#[tokio::test]
async fn many_frames_at_once_travel_in_batches() {
    let lots = RateLimit::per_minute(10_000, 10_000);
    let (ka, kh, kb) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut a = node(&ka, false, lots);
    let mut h = node(&kh, true, lots);
    // B takes 300 correlations from A here (the per-peer quotas are tested elsewhere).
    let mut b = swarm_with(
        &kb,
        Behaviour::new(Config {
            per_sender: lots,
            per_peer: lots,
            limits: Limits {
                max_per_peer: 1000,
                max_per_link: 1000,
                ..Limits::default()
            },
            ..Config::new(kb.node_id())
        }),
    );
    connect(&mut a, &mut h).await;
    connect(&mut h, &mut b).await;
    let via = Some(*h.local_peer_id());
    // More than `max_in_flight` requests' worth: the rest waits and leaves in batches.
    let n = 300;
    for i in 0..n {
        let f = frame(
            &ka,
            &kb,
            "connect_request",
            &format!("c{i}"),
            &format!("m{i}"),
        );
        a.behaviour_mut().send(&f, via).unwrap();
    }
    let count = |s: &[(usize, Event)], at: usize, what: fn(&Event) -> bool| {
        s.iter().filter(|(i, e)| *i == at && what(e)).count()
    };
    let seen = run(&mut [&mut a, &mut h, &mut b], |s| {
        count(s, 2, |e| matches!(e, Event::Received { .. })) == n
            && count(s, 0, |e| matches!(e, Event::Delivered { .. })) == n
    })
    .await;
    assert_eq!(count(&seen, 1, |e| matches!(e, Event::Forwarded { .. })), n);
    assert_eq!(count(&seen, 0, |e| matches!(e, Event::Refused { .. })), 0);
    // Every frame id came back as delivered exactly once.
    let mut ids: Vec<&str> = seen
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Delivered { frame_id, .. } if *i == 0 => Some(frame_id.as_str()),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n);

    // The queue towards one peer is bounded.
    let mut small = swarm_with(
        &ka,
        Behaviour::new(Config {
            max_queued: 2,
            max_in_flight: 1,
            ..Config::new(ka.node_id())
        }),
    );
    connect(&mut small, &mut h).await;
    let sent: Vec<_> = send_four(&mut small, &ka, &kb, via, "q")
        .into_iter()
        .map(|r| r.map_err(|e| e.code))
        .collect();
    assert_eq!(
        sent,
        vec![Ok(()), Ok(()), Ok(()), Err(ErrorCode::TransportRejected)]
    );
}

/// Sends four connect requests from `ka` to `kb` (frame ids `{prefix}0`…), through `via`.
fn send_four(
    s: &mut Swarm<Behaviour>,
    ka: &NodeKeypair,
    kb: &NodeKeypair,
    via: Option<libp2p::PeerId>,
    prefix: &str,
) -> Vec<mesh_core::MeshResult<()>> {
    (0..4)
        .map(|i| {
            let id = format!("{prefix}{i}");
            let f = frame(ka, kb, "connect_request", &id, &id);
            s.behaviour_mut().send(&f, via)
        })
        .collect()
}

/// The queue towards one hop is bounded in bytes as well as in frames.
#[tokio::test]
async fn the_queue_towards_a_hop_is_bounded_in_bytes() {
    let (ka, kh, kb) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut h = node(&kh, true, RateLimit::per_minute(1000, 1000));
    let via = Some(*h.local_peer_id());
    // Room for two and a half frames behind the one in flight.
    let len = frame(&ka, &kb, "connect_request", "b0", "b0")
        .to_cbor()
        .len();
    let mut tight = swarm_with(
        &ka,
        Behaviour::new(Config {
            max_queued: 1024,
            max_queued_bytes: 2 * len + len / 2,
            max_in_flight: 1,
            ..Config::new(ka.node_id())
        }),
    );
    connect(&mut tight, &mut h).await;
    let sent: Vec<_> = send_four(&mut tight, &ka, &kb, via, "b")
        .into_iter()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect();
    assert!(sent[..3].iter().all(Result::is_ok), "{sent:?}");
    let refused = sent[3].as_ref().unwrap_err();
    assert!(
        refused.contains("bytes already wait for the next hop"),
        "{refused}"
    );
}

#[tokio::test]
async fn an_answer_after_the_correlation_expired_is_refused() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    // A's clock can be moved forward; frames are stamped with the real time.
    let clock = TestClock::new();
    let mut a = swarm_with(
        &ka,
        Behaviour::new(Config {
            clock: clock.clock(),
            ..Config::new(ka.node_id())
        }),
    );
    let mut b = node(&kb, false, RateLimit::per_minute(100, 100));
    connect(&mut a, &mut b).await;
    a.behaviour_mut()
        .send(&frame(&ka, &kb, "connect_request", "late", "f1"), None)
        .unwrap();
    run(&mut [&mut a, &mut b], |seen| received(seen, 1).is_some()).await;
    // 31 s later on A's clock: the request went unanswered for longer than the 30 s
    // the state machine allows, so A refuses B's accept. (The frame itself is still
    // valid: it expires 60 s after it was made.) Nobody sweeps A's table here: the
    // behaviour does on its own, and the accept is refused either way.
    clock.set_offset(31);
    b.behaviour_mut()
        .send(&frame(&kb, &ka, "connect_accept", "late", "f2"), None)
        .unwrap();
    let seen = run(&mut [&mut a, &mut b], |seen| refused(seen, 0).is_some()).await;
    assert_eq!(refused(&seen, 0), Some(ErrorCode::HsUnknownRef));
    assert!(received(&seen, 0).is_none());
    // B hears the refusal with its code.
    let seen = if seen
        .iter()
        .any(|(i, e)| *i == 1 && matches!(e, Event::Refused { by_peer: true, .. }))
    {
        seen
    } else {
        run(&mut [&mut a, &mut b], |seen| {
            seen.iter()
                .any(|(i, e)| *i == 1 && matches!(e, Event::Refused { by_peer: true, .. }))
        })
        .await
    };
    let code = seen.iter().find_map(|(i, e)| match e {
        Event::Refused {
            error,
            by_peer: true,
            ..
        } if *i == 1 => Some(error.code),
        _ => None,
    });
    assert_eq!(code, Some(ErrorCode::HsUnknownRef));
}

/// Drives `swarm` until `cond` holds for its behaviour (10 s at most). It is checked after
/// every poll, so a change the behaviour makes in its own `poll`, with no event, is seen.
async fn drive_until(swarm: &mut Swarm<Behaviour>, what: &str, cond: impl Fn(&Behaviour) -> bool) {
    let fut = futures::future::poll_fn(|cx| {
        while let Poll::Ready(Some(_)) = swarm.poll_next_unpin(cx) {}
        if cond(swarm.behaviour()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 10 s"));
}

/// Nobody calls `sweep` here: the behaviour sweeps its correlation table itself, on a
/// timer and on its configured clock. A request left unanswered expires once the clock
/// is past its answer time, and is forgotten once it is past the linger time.
#[tokio::test]
async fn the_behaviour_sweeps_its_correlations_itself() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let clock = TestClock::new();
    let limits = Limits::default();
    let mut a = swarm_with(
        &ka,
        Behaviour::new(Config {
            clock: clock.clock(),
            sweep_interval: Duration::from_millis(50),
            ..Config::new(ka.node_id())
        }),
    );
    let mut b = node(&kb, false, RateLimit::per_minute(100, 100));
    connect(&mut a, &mut b).await;
    a.behaviour_mut()
        .send(&frame(&ka, &kb, "connect_request", "swept", "s1"), None)
        .unwrap();
    let ([delivered], [received]): ([Event; 1], [Event; 1]) =
        libp2p_swarm_test::drive(&mut a, &mut b).await;
    assert!(
        matches!(delivered, Event::Delivered { .. }),
        "{delivered:?}"
    );
    assert!(
        matches!(
            received,
            Event::Received {
                transition: Transition::Opened,
                ..
            }
        ),
        "{received:?}"
    );
    // B never answers.
    tokio::spawn(b.loop_on_next());
    let peer = kb.node_id();
    let state = |a: &Behaviour| a.correlations().state(&peer, "swept").cloned();
    assert_eq!(state(a.behaviour()), Some(State::Requested));

    clock.advance(limits.answer_secs + 1);
    drive_until(&mut a, "the unanswered request expired", |a| {
        state(a) == Some(State::Expired)
    })
    .await;
    assert_eq!(a.behaviour().correlations().len(), 1);

    clock.advance(limits.linger_secs + 1);
    drive_until(&mut a, "the expired request forgotten", |a| {
        a.correlations().is_empty()
    })
    .await;
    assert_eq!(state(a.behaviour()), None);
}

#[tokio::test]
async fn a_third_host_is_refused_by_the_hop_limit() {
    let lots = RateLimit::per_minute(1000, 1000);
    let keys: Vec<NodeKeypair> = (0..5).map(|_| NodeKeypair::generate()).collect();
    let (ka, kb) = (&keys[0], &keys[4]);
    let mut a = node(ka, false, lots);
    let mut h1 = node(&keys[1], true, lots);
    let mut h2 = node(&keys[2], true, lots);
    let mut h3 = node(&keys[3], true, lots);
    let mut b = node(kb, false, lots);
    // A - H1 - H2 - H3 - B: only the third host knows B.
    connect(&mut a, &mut h1).await;
    connect(&mut h1, &mut h2).await;
    connect(&mut h2, &mut h3).await;
    connect(&mut h3, &mut b).await;
    let (p2, p3) = (*h2.local_peer_id(), *h3.local_peer_id());
    h1.behaviour_mut().add_route(kb.node_id(), p2);
    h2.behaviour_mut().add_route(kb.node_id(), p3);
    let req = frame(ka, kb, "connect_request", "far", "h1");
    a.behaviour_mut()
        .send(&req, Some(*h1.local_peer_id()))
        .unwrap();
    // H3 receives it with 2 hops already and refuses a third.
    let seen = run(&mut [&mut a, &mut h1, &mut h2, &mut h3, &mut b], |s| {
        refused(s, 3).is_some()
    })
    .await;
    assert_eq!(refused(&seen, 3), Some(ErrorCode::TransportRejected));
    assert!(received(&seen, 4).is_none(), "the frame reached B");
    let forwarded = |at: usize| {
        seen.iter()
            .any(|(i, e)| *i == at && matches!(e, Event::Forwarded { .. }))
    };
    assert!(forwarded(1) && forwarded(2) && !forwarded(3));
}

/// The code and text of every refusal `at` made itself.
fn refusals(seen: &[(usize, Event)], at: usize) -> Vec<(ErrorCode, String)> {
    seen.iter()
        .filter_map(|(i, e)| match e {
            Event::Refused {
                error,
                by_peer: false,
                ..
            } if *i == at => Some((error.code, error.detail.clone())),
            _ => None,
        })
        .collect()
}

/// A floods B with requests of its own correlations: B holds at most its per-peer
/// quota (16 by default) for A and refuses the rest with `E_TRANSPORT_REJECTED`, while
/// C's requests, and B's own, still go through.
#[tokio::test]
async fn one_peer_cannot_fill_the_correlation_table() {
    let lots = RateLimit::per_minute(1000, 1000);
    let (ka, kb, kc) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut a = node(&ka, false, lots);
    let mut b = node(&kb, false, lots);
    let mut c = node(&kc, false, lots);
    connect(&mut a, &mut b).await;
    connect(&mut c, &mut b).await;
    let quota = Limits::default().max_per_peer;
    let flood = quota + 8;
    for i in 0..flood {
        let f = frame(
            &ka,
            &kb,
            "connect_request",
            &format!("x{i}"),
            &format!("x{i}"),
        );
        a.behaviour_mut().send(&f, None).unwrap();
    }
    let count = |s: &[(usize, Event)], at: usize, what: fn(&Event) -> bool| {
        s.iter().filter(|(i, e)| *i == at && what(e)).count()
    };
    let seen = run(&mut [&mut a, &mut b, &mut c], |s| {
        count(s, 0, |e| {
            matches!(e, Event::Delivered { .. } | Event::Refused { .. })
        }) == flood
    })
    .await;
    assert_eq!(
        count(&seen, 1, |e| matches!(e, Event::Received { .. })),
        quota
    );
    let refused_b = refusals(&seen, 1);
    assert_eq!(refused_b.len(), flood - quota, "{refused_b:?}");
    assert!(
        refused_b
            .iter()
            .all(|(code, _)| *code == ErrorCode::TransportRejected),
        "{refused_b:?}"
    );
    // C is another peer: its request is taken.
    c.behaviour_mut()
        .send(&frame(&kc, &kb, "connect_request", "y1", "y1"), None)
        .unwrap();
    let seen = run(&mut [&mut a, &mut b, &mut c], |s| received(s, 1).is_some()).await;
    assert_eq!(received(&seen, 1).unwrap().from(), kc.node_id());
    // B's own request to A goes out and is taken.
    b.behaviour_mut()
        .send(&frame(&kb, &ka, "connect_request", "z1", "z1"), None)
        .unwrap();
    let seen = run(&mut [&mut a, &mut b, &mut c], |s| received(s, 0).is_some()).await;
    assert_eq!(received(&seen, 0).unwrap().correlation(), "z1");
}

/// The host's per-sender limit refuses a frame with "retry after N s"; the same frame,
/// sent again N s later, is forwarded (it was not remembered as seen when refused).
#[tokio::test]
async fn a_rate_limited_frame_is_taken_when_retried_after_the_time_given() {
    let (ka, kh, kb) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let clock = TestClock::new();
    let mut a = node(&ka, false, RateLimit::per_minute(1000, 1000));
    let mut h = swarm_with(
        &kh,
        Behaviour::new(Config {
            host: true,
            per_sender: RateLimit::per_minute(2, 4),
            clock: clock.clock(),
            ..Config::new(kh.node_id())
        }),
    );
    let mut b = node(&kb, false, RateLimit::per_minute(1000, 1000));
    connect(&mut a, &mut h).await;
    connect(&mut h, &mut b).await;
    let via = Some(*h.local_peer_id());
    for (kind, id) in [("connect_request", "r1"), ("candidate", "r2")] {
        a.behaviour_mut()
            .send(&frame(&ka, &kb, kind, "c1", id), via)
            .unwrap();
        run(&mut [&mut a, &mut h, &mut b], |s| received(s, 2).is_some()).await;
    }
    let third = frame(&ka, &kb, "candidate", "c1", "r3");
    a.behaviour_mut().send(&third, via).unwrap();
    let seen = run(&mut [&mut a, &mut h, &mut b], |s| refused(s, 1).is_some()).await;
    let (code, detail) = refusals(&seen, 1).remove(0);
    assert_eq!(code, ErrorCode::TransportRejected);
    let secs: i64 = detail
        .split("retry after ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no retry time in {detail:?}"));
    assert!(received(&seen, 2).is_none());
    // The time given, later on the host's clock: the same frame goes through.
    clock.advance(secs);
    a.behaviour_mut().send(&third, via).unwrap();
    let seen = run(&mut [&mut a, &mut h, &mut b], |s| {
        received(s, 2).is_some() || refused(s, 1).is_some()
    })
    .await;
    assert_eq!(refusals(&seen, 1), vec![], "refused again");
    assert_eq!(received(&seen, 2).unwrap().frame_id(), "r3");
}

/// One connected peer may hand over only so many frames (here a burst of 3, then 1 a
/// minute), whoever signed them: the rest are refused with `E_TRANSPORT_REJECTED` and
/// the time to wait, before their signatures are checked.
#[tokio::test]
async fn one_peer_hands_over_a_bounded_number_of_frames() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let lots = RateLimit::per_minute(1000, 1000);
    let mut a = node(&ka, false, lots);
    let mut b = swarm_with(
        &kb,
        Behaviour::new(Config {
            per_peer: RateLimit::per_minute(3, 1),
            ..Config::new(kb.node_id())
        }),
    );
    connect(&mut a, &mut b).await;
    for i in 0..5 {
        let f = frame(
            &ka,
            &kb,
            "connect_request",
            &format!("p{i}"),
            &format!("p{i}"),
        );
        a.behaviour_mut().send(&f, None).unwrap();
    }
    let count = |s: &[(usize, Event)], at: usize, what: fn(&Event) -> bool| {
        s.iter().filter(|(i, e)| *i == at && what(e)).count()
    };
    let seen = run(&mut [&mut a, &mut b], |s| {
        count(s, 0, |e| {
            matches!(e, Event::Delivered { .. } | Event::Refused { .. })
        }) == 5
    })
    .await;
    assert_eq!(count(&seen, 1, |e| matches!(e, Event::Received { .. })), 3);
    let refused_b = refusals(&seen, 1);
    assert_eq!(refused_b.len(), 2, "{refused_b:?}");
    for (code, detail) in refused_b {
        assert_eq!(code, ErrorCode::TransportRejected);
        assert!(detail.contains("retry after"), "{detail}");
    }
}

/// Polls `swarms` (collecting their events) until `f` is done.
async fn driving<T>(
    swarms: &mut [&mut Swarm<Behaviour>],
    seen: &mut Vec<(usize, Event)>,
    f: impl std::future::Future<Output = T>,
) -> T {
    let work = async {
        tokio::pin!(f);
        loop {
            tokio::select! {
                out = &mut f => return out,
                ev = next_event(swarms) => seen.push(ev),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), work)
        .await
        .expect("timed out")
}

/// A frame's `hops` is not signed: a peer holding one of V's frames sends it again and
/// again at the hop limit. The host refuses every copy, and V's own next frame still
/// goes through: the host took V's token before the hop limit refused each copy, so
/// the copies drained V's allowance (burst 3 here) and V was refused "too many frames
/// from this sender".
#[tokio::test]
async fn replays_at_the_hop_limit_cost_the_signer_nothing() {
    let (kv, kh, kx) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let lots = RateLimit::per_minute(1000, 1000);
    let mut v = node(&kv, false, lots);
    let mut h = swarm_with(
        &kh,
        Behaviour::new(Config {
            host: true,
            per_sender: RateLimit::per_minute(3, 0),
            ..Config::new(kh.node_id())
        }),
    );
    let mut x = node(&kx, false, lots);
    let (_, tcp) = h.listen().with_tcp_addr_external().await;
    v.connect(&mut h).await;
    x.connect(&mut h).await;
    let ph = *h.local_peer_id();
    let at_limit = frame(&kv, &kx, "connect_request", "r", "r1")
        .forwarded()
        .unwrap()
        .forwarded()
        .unwrap()
        .to_cbor();
    let t =
        mesh_testkit::hostile::HostilePeer::spawn(NodeKeypair::generate(), mesh_testkit::Net::Tcp);
    let mut seen = Vec::new();
    let wait = Duration::from_secs(10);
    driving(&mut [&mut v, &mut h, &mut x], &mut seen, async {
        let peer = t.connect(tcp, wait).await.unwrap();
        for _ in 0..5 {
            t.send(peer, "/mesh/signal/1.0.0", &at_limit, wait)
                .await
                .unwrap();
        }
    })
    .await;
    let limited = refusals(&seen, 1);
    assert_eq!(limited.len(), 5, "{limited:?}");
    assert!(
        limited.iter().all(|(_, d)| d.contains("hop limit")),
        "{limited:?}"
    );

    let fresh = frame(&kv, &kx, "connect_request", "c", "f1");
    v.behaviour_mut().send(&fresh, Some(ph)).unwrap();
    let seen = run(&mut [&mut v, &mut h, &mut x], |s| {
        received(s, 2).is_some() || !refusals(s, 1).is_empty()
    })
    .await;
    assert_eq!(refusals(&seen, 1), Vec::new(), "the host refused V's frame");
    assert_eq!(received(&seen, 2).unwrap().frame_id(), "f1");
}

/// Requests handed over by one peer (one network) to one recipient, of a signer within
/// its own quotas (as many fresh signers would be): the host forwards its
/// `requests_per_network` share and refuses the rest, so they cannot take every place
/// the recipient keeps for the host; another peer's request to the same recipient still
/// goes through.
#[tokio::test]
async fn one_network_gets_a_share_of_the_requests_a_host_forwards_to_one_recipient() {
    let lots = RateLimit::per_minute(1000, 1000);
    let (ka, kh, kt, kc) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut a = node(&ka, false, lots);
    // T takes up to 100 requests of one signer (the host's share is what is tested).
    let mut t = swarm_with(
        &kt,
        Behaviour::new(Config {
            per_sender: lots,
            per_peer: lots,
            limits: Limits {
                max_per_peer: 100,
                ..Limits::default()
            },
            ..Config::new(kt.node_id())
        }),
    );
    let mut c = node(&kc, false, lots);
    // The host with the node's default share (the others generous).
    let mut h = swarm_with(
        &kh,
        Behaviour::new(Config {
            host: true,
            per_sender: lots,
            per_peer: lots,
            ..Config::new(kh.node_id())
        }),
    );
    connect(&mut a, &mut h).await;
    t.connect(&mut h).await;
    c.connect(&mut h).await;
    let share = Config::new(kh.node_id()).requests_per_network.burst as usize;
    let flood = share + 16;
    let ph = *h.local_peer_id();
    for i in 0..flood {
        let f = frame(
            &ka,
            &kt,
            "connect_request",
            &format!("x{i}"),
            &format!("x{i}"),
        );
        a.behaviour_mut().send(&f, Some(ph)).unwrap();
    }
    let count = |s: &[(usize, Event)], at: usize, what: fn(&Event) -> bool| {
        s.iter().filter(|(i, e)| *i == at && what(e)).count()
    };
    let seen = run(&mut [&mut a, &mut h, &mut t, &mut c], |s| {
        count(s, 2, |e| matches!(e, Event::Received { .. })) == share
            && count(s, 0, |e| {
                matches!(e, Event::Delivered { .. } | Event::Refused { .. })
            }) == flood
    })
    .await;
    let refused_at_h = refusals(&seen, 1);
    assert_eq!(refused_at_h.len(), flood - share, "{refused_at_h:?}");
    assert!(
        refused_at_h
            .iter()
            .all(|(code, _)| *code == ErrorCode::TransportRejected)
    );
    // C's request to T through H is forwarded.
    c.behaviour_mut()
        .send(&frame(&kc, &kt, "connect_request", "y1", "y1"), Some(ph))
        .unwrap();
    let seen = run(&mut [&mut a, &mut h, &mut t, &mut c], |s| {
        received(s, 2).is_some()
    })
    .await;
    assert_eq!(received(&seen, 2).unwrap().from(), kc.node_id());
}
