//! The governor keeps a known peer connected: first dial, then redial after a drop.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::swarm_with;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt;
use mesh_core::{ErrorCode, MemoryTrace, NodeKeypair, Timestamp};
use mesh_session::artifacts::{HandshakeParams, build_capabilities, build_hello};
use mesh_session::governor::{GovernorConfig, Temperature};
use mesh_session::protocol::{self, Message, PROTOCOL};
use mesh_session::secret::EphemeralKey;
use mesh_session::{Behaviour, Config, Event};
use mesh_testkit::raw;

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

type Raw = Swarm<request_response::Behaviour<raw::RawCodec>>;

/// A hello signed by `signer` and addressed to `to`, sent by a peer with another key:
/// `E_SIG_UNKNOWN_SIGNER`, a hard failure charged to the connecting peer's node id.
fn forged_hello(signer: &NodeKeypair, to: &NodeKeypair) -> Vec<u8> {
    let p = HandshakeParams {
        offered: &["core/messaging"],
        transport: "tcp",
        intent: "peer-connect",
    };
    let now = Timestamp::now();
    let hello = build_hello(signer, &EphemeralKey::generate(), to.node_id(), &p, &now).unwrap();
    let caps = build_capabilities(signer, &[], &["tcp"], &now, 60).unwrap();
    protocol::encode(&Message::Hello(Box::new(hello), Box::new(caps)))
}

/// What one step of [`drive`] saw.
enum Seen {
    B(Event),
    Raw(request_response::Event<Vec<u8>, Vec<u8>>),
    RawClosed,
    Other,
}

/// Polls `a`, `b`, `c` and the raw peer until `done` returns a value (10 s at most).
async fn drive<T>(
    a: &mut Swarm<Behaviour>,
    b: &mut Swarm<Behaviour>,
    c: &mut Swarm<Behaviour>,
    mut r: Option<&mut Raw>,
    mut done: impl FnMut(Seen, &Swarm<Behaviour>) -> Option<T>,
) -> T {
    let run = async {
        loop {
            let seen = tokio::select! {
                _ = a.select_next_some() => Seen::Other,
                _ = c.select_next_some() => Seen::Other,
                e = b.select_next_some() => match e {
                    SwarmEvent::Behaviour(e) => Seen::B(e),
                    _ => Seen::Other,
                },
                e = async {
                    match r.as_mut() {
                        Some(r) => r.select_next_some().await,
                        None => futures::future::pending().await,
                    }
                } => match e {
                    SwarmEvent::Behaviour(e) => Seen::Raw(e),
                    SwarmEvent::ConnectionClosed { .. } => Seen::RawClosed,
                    _ => Seen::Other,
                },
            };
            if let Some(v) = done(seen, b) {
                return v;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("timed out")
}

/// Throwaway keys that connect and fail the handshake hard each leave an entry in the
/// governor's table; the table stays at its cap, the peers that matter (one named with
/// `add_peer`, one that held a session) keep theirs, and the named one is redialed.
#[tokio::test]
async fn throwaway_keys_failing_the_handshake_keep_the_table_at_its_cap() {
    const CAP: usize = 16;
    const THROWAWAY: usize = 40;
    let config = |max_peers| Config {
        tick_interval: Duration::from_millis(50),
        governor: GovernorConfig {
            max_peers,
            ..GovernorConfig::default()
        },
        ..Config::default()
    };
    let (ka, kb, kc) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut a = swarm_with(&ka, Behaviour::new(ka.clone(), config(1024)));
    let mut b = swarm_with(&kb, Behaviour::new(kb.clone(), config(CAP)));
    let mut c = swarm_with(&kc, Behaviour::new(kc.clone(), config(1024)));
    let (a_addr, _) = a.listen().await;
    b.listen().with_memory_addr_external().await;
    let (pa, pb, pc) = (*a.local_peer_id(), *b.local_peer_id(), *c.local_peer_id());

    // A is named to B (B's governor dials it); C dials B and holds a session.
    b.behaviour_mut().add_peer(ka.node_id(), vec![a_addr]);
    let session_with = |p| {
        move |s: Seen, _: &Swarm<Behaviour>| match s {
            Seen::B(Event::SessionEstablished { peer, .. }) if peer == p => Some(()),
            _ => None,
        }
    };
    drive(&mut a, &mut b, &mut c, None, session_with(pa)).await;
    c.connect(&mut b).await;
    if b.behaviour().session(&pc).is_none() {
        drive(&mut a, &mut b, &mut c, None, session_with(pc)).await;
    }
    let gov = b.behaviour().governor();
    assert!(gov.is_kept(&ka.node_id()) && gov.is_kept(&kc.node_id()));

    // Both leave; C is now a past peer, cold (B has no address to redial it at).
    assert!(b.disconnect_peer_id(pa).is_ok());
    assert!(b.disconnect_peer_id(pc).is_ok());
    let mut closed = 0;
    drive(&mut a, &mut b, &mut c, None, |s, _| {
        if let Seen::B(Event::SessionClosed { .. }) = s {
            closed += 1;
        }
        (closed == 2).then_some(())
    })
    .await;

    // The flood: each throwaway key connects, sends a hello signed by another key and
    // is refused with E_SIG_UNKNOWN_SIGNER, a hard failure.
    let forger = NodeKeypair::generate();
    let mut most = 0;
    for _ in 0..THROWAWAY {
        let mut r: Raw = swarm_with(
            &NodeKeypair::generate(),
            request_response::Behaviour::with_codec(
                raw::RawCodec,
                [(PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        );
        r.connect(&mut b).await;
        r.behaviour_mut()
            .send_request(&pb, forged_hello(&forger, &kb));
        let mut answered = None;
        let mut gone = false;
        drive(&mut a, &mut b, &mut c, Some(&mut r), |s, b| {
            most = most.max(b.behaviour().governor().len());
            match s {
                Seen::Raw(request_response::Event::Message {
                    message: request_response::Message::Response { response, .. },
                    ..
                }) => answered = Some(protocol::decode(&response).unwrap()),
                Seen::Raw(request_response::Event::OutboundFailure { .. }) | Seen::RawClosed => {
                    gone = true
                }
                _ => {}
            }
            (answered.is_some() && gone).then_some(())
        })
        .await;
        match answered {
            Some(Message::Rejected(e)) => assert_eq!(e.code, ErrorCode::SigUnknownSigner),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let gov = b.behaviour().governor();
    assert!(
        most <= CAP && gov.len() <= CAP,
        "the table held {most} entries (cap {CAP}), {} at the end",
        gov.len()
    );
    assert_eq!(
        gov.len(),
        CAP,
        "the cap is reached: junk is recorded, just bounded"
    );
    assert!(gov.is_kept(&ka.node_id()), "the named peer lost its entry");
    assert!(gov.is_kept(&kc.node_id()), "the past peer lost its entry");

    // The named peer is still redialed: a session with A again (it may be back already).
    if b.behaviour().session(&pa).is_none() {
        drive(&mut a, &mut b, &mut c, None, session_with(pa)).await;
    }
    assert_eq!(
        b.behaviour().governor().temperature(&ka.node_id()),
        Some(Temperature::Hot)
    );
}

/// Sessions live at `b` (hot and warm).
fn live(b: &Swarm<Behaviour>) -> usize {
    let g = b.behaviour().governor();
    g.count(Temperature::Hot) + g.count(Temperature::Warm)
}

/// Drives `b` until `at_least` sessions are live (10 s at most, else panics), then for
/// `then` more; the sessions live at the end.
async fn live_after(b: &mut Swarm<Behaviour>, at_least: usize, then: Duration) -> usize {
    let up = async {
        while live(b) < at_least {
            b.select_next_some().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), up)
        .await
        .unwrap_or_else(|_| panic!("{at_least} sessions never came up"));
    let more = async {
        loop {
            b.select_next_some().await;
        }
    };
    let _ = tokio::time::timeout(then, more).await;
    live(b)
}

/// Strangers that dial the node take at most three quarters of its sessions: four
/// fresh keys dial B (`max_live` 4): three get a session, the fourth is refused softly,
/// and B's named peer A still gets one when B dials it. Without the reserve the four
/// held every session and B's dials of A found no room, forever.
#[tokio::test]
async fn strangers_leave_a_named_peer_its_session() {
    let config = || Config {
        tick_interval: Duration::from_millis(50),
        ..Config::default()
    };
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut a = swarm_with(&ka, Behaviour::new(ka.clone(), config()));
    let mut b = swarm_with(&kb, Behaviour::new(kb.clone(), config()));
    assert_eq!(b.behaviour().governor().max_live(), 4);
    let (a_addr, _) = a.listen().await;
    b.listen().with_memory_addr_external().await;
    let pa = *a.local_peer_id();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let k = NodeKeypair::generate();
        let mut s = swarm_with(&k, Behaviour::new(k.clone(), config()));
        s.connect(&mut b).await;
        tasks.push(tokio::spawn(async move {
            loop {
                s.select_next_some().await;
            }
        }));
    }
    // Three sessions come up; a second more gives the fourth its chance (bounded).
    let held = live_after(&mut b, 3, Duration::from_secs(1)).await;
    assert_eq!(held, 3, "sessions the strangers hold");

    b.behaviour_mut().add_peer(ka.node_id(), vec![a_addr]);
    until_a(
        &mut b,
        &mut a,
        |e| matches!(e, Event::SessionEstablished { peer, .. } if *peer == pa),
    )
    .await;
    assert_eq!(live(&b), 4);
    for t in tasks {
        t.abort();
    }
}

/// A peer that takes our hello and never answers it (it drops the request) does not
/// keep our attempt pending: B (`max_live` 1) dials such a peer, and a real peer A that
/// dials B afterwards still gets the session. The attempt held B's one slot for as long
/// as the silent peer's connection lasted.
#[tokio::test]
async fn a_hello_never_answered_frees_its_slot() {
    let config = |max_live| Config {
        tick_interval: Duration::from_millis(50),
        governor: GovernorConfig {
            max_live,
            ..GovernorConfig::default()
        },
        ..Config::default()
    };
    let (ka, kb, kc) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let mut a = swarm_with(&ka, Behaviour::new(ka.clone(), config(4)));
    let mut b = swarm_with(&kb, Behaviour::new(kb.clone(), config(1)));
    let mut c = swarm_with(&kc, Behaviour::new(kc.clone(), config(4)));
    b.listen().with_memory_addr_external().await;
    let mut silent: Raw = swarm_with(
        &NodeKeypair::generate(),
        request_response::Behaviour::with_codec(
            raw::RawCodec,
            [(PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
    );
    silent.listen().with_memory_addr_external().await;
    // B dials the silent peer: B's hello goes out and is dropped unanswered.
    b.connect(&mut silent).await;
    drive(&mut a, &mut b, &mut c, Some(&mut silent), |s, _| match s {
        Seen::Raw(request_response::Event::Message { .. }) => Some(()),
        _ => None,
    })
    .await;
    // Then A dials B.
    let pa = *a.local_peer_id();
    a.connect(&mut b).await;
    let got = drive(&mut a, &mut b, &mut c, Some(&mut silent), |s, _| match s {
        Seen::B(Event::SessionEstablished { peer, .. }) if peer == pa => Some(true),
        Seen::B(Event::Rejected { peer, .. }) if peer == pa => Some(false),
        _ => None,
    })
    .await;
    assert!(
        got,
        "A's hello was refused: no room beside the silent peer's attempt"
    );
}

/// A node that listens beyond loopback counts its loopback peers as one network: local
/// processes with fresh keys get that network's share (a quarter of `max_live`), not
/// the whole room peers may take. Four strangers over 127.0.0.1 against `max_live` 8:
/// two sessions (four before: loopback was not counted at all).
#[tokio::test]
async fn loopback_peers_are_one_network_for_a_node_listening_beyond_it() {
    let config = |max_live| Config {
        tick_interval: Duration::from_millis(50),
        governor: GovernorConfig {
            max_live,
            ..GovernorConfig::default()
        },
        ..Config::default()
    };
    let kb = NodeKeypair::generate();
    let mut b = swarm_with(&kb, Behaviour::new(kb.clone(), config(8)));
    let lo = mesh_testkit::listen_beyond_loopback(&mut b).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let k = NodeKeypair::generate();
        let mut s = swarm_with(&k, Behaviour::new(k.clone(), config(8)));
        s.dial(lo.clone()).unwrap();
        tasks.push(tokio::spawn(async move {
            loop {
                s.select_next_some().await;
            }
        }));
    }
    // Two sessions, then time for the other two hellos to come (and be refused).
    let held = live_after(&mut b, 2, Duration::from_secs(2)).await;
    assert_eq!(b.connected_peers().count(), 4, "every stranger connected");
    assert_eq!(held, 2, "sessions of the loopback network");
    for t in tasks {
        t.abort();
    }
}

/// Strangers over loopback (one network to a node listening beyond it) that each held
/// one short session: a quarter of `max_peers` of them stay past peers (kept and
/// redialed). Before, all six did, and enough of them evicted every honest past peer.
#[tokio::test]
async fn one_network_s_past_peers_hold_a_quarter_of_the_table() {
    let config = || Config {
        tick_interval: Duration::from_millis(50),
        governor: GovernorConfig {
            max_peers: 8,
            ..GovernorConfig::default()
        },
        ..Config::default()
    };
    let kb = NodeKeypair::generate();
    let mut b = swarm_with(&kb, Behaviour::new(kb.clone(), config()));
    let lo = mesh_testkit::listen_beyond_loopback(&mut b).await;
    let mut strangers = Vec::new();
    for _ in 0..6 {
        let k = NodeKeypair::generate();
        let mut s = swarm_with(&k, Behaviour::new(k.clone(), config()));
        let peer = *s.local_peer_id();
        s.dial(lo.clone()).unwrap();
        let task = tokio::spawn(async move {
            loop {
                s.select_next_some().await;
            }
        });
        let session = async {
            while b.behaviour().session(&peer).is_none() {
                b.select_next_some().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .expect("the stranger's session");
        // The stranger goes away; its session ends.
        task.abort();
        let gone = async {
            while b.behaviour().session(&peer).is_some() {
                b.select_next_some().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the session ended");
        strangers.push(k.node_id());
    }
    let kept = strangers
        .iter()
        .filter(|n| b.behaviour().governor().is_kept(n))
        .count();
    assert_eq!(kept, 2, "past peers of the loopback network");
}
