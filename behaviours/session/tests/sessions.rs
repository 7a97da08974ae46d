//! `/mesh/session/1.0.0` between real swarms, and against a raw peer that misbehaves.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use mesh_testkit::TestClock;
use mesh_testkit::raw;
use mesh_testkit::swarm_with;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt;
use mesh_core::artifact::Artifact;
use mesh_core::{ErrorCode, MemoryTrace, NodeKeypair, PeerHandshake, Timestamp};
use mesh_session::artifacts::{HandshakeParams, build_hello};
use mesh_session::protocol::{self, Message, PROTOCOL};
use mesh_session::secret::EphemeralKey;
use mesh_session::{Behaviour, Config, Event};

fn node(key: &NodeKeypair, trace: Arc<MemoryTrace>) -> Swarm<Behaviour> {
    swarm_with(
        key,
        Behaviour::new(
            key.clone(),
            Config {
                trace,
                ..Config::default()
            },
        ),
    )
}

/// Polls both swarms until `done` returns a value (10 s at most).
async fn until<A: NetworkBehaviour, B: NetworkBehaviour, T>(
    a: &mut Swarm<A>,
    b: &mut Swarm<B>,
    mut done: impl FnMut(Option<SwarmEvent<A::ToSwarm>>, Option<SwarmEvent<B::ToSwarm>>) -> Option<T>,
) -> T {
    let fut = futures::future::poll_fn(|cx| {
        loop {
            let ea = match a.poll_next_unpin(cx) {
                Poll::Ready(Some(e)) => Some(e),
                _ => None,
            };
            let eb = match b.poll_next_unpin(cx) {
                Poll::Ready(Some(e)) => Some(e),
                _ => None,
            };
            if ea.is_none() && eb.is_none() {
                return Poll::Pending;
            }
            if let Some(v) = done(ea, eb) {
                return Poll::Ready(v);
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("timed out")
}

#[tokio::test]
async fn full_session_with_shared_secret_and_capabilities() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let (ta, tb) = (
        Arc::new(MemoryTrace::new(100)),
        Arc::new(MemoryTrace::new(100)),
    );
    let (mut a, mut b) = (node(&ka, ta.clone()), node(&kb, tb.clone()));
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    let (pa, pb) = (*a.local_peer_id(), *b.local_peer_id());
    let mut established = (false, false);
    until(&mut a, &mut b, |ea, eb| {
        if let Some(SwarmEvent::Behaviour(Event::SessionEstablished { node, .. })) = ea {
            assert_eq!(node, kb.node_id());
            established.0 = true;
        }
        if let Some(SwarmEvent::Behaviour(Event::SessionEstablished { node, .. })) = eb {
            assert_eq!(node, ka.node_id());
            established.1 = true;
        }
        (established.0 && established.1).then_some(())
    })
    .await;
    let (sa, sb) = (
        a.behaviour().session(&pb).unwrap(),
        b.behaviour().session(&pa).unwrap(),
    );
    assert_eq!(
        sa.secret.as_bytes(),
        sb.secret.as_bytes(),
        "both ends derive the same secret"
    );
    assert_eq!(
        sa.capabilities,
        ["core/messaging", "core/discovery", "core/keepalive"]
    );
    assert_eq!(
        b.behaviour().capabilities_of(&ka.node_id()).unwrap()[0],
        "core/messaging"
    );
    let kinds: Vec<&str> = ta.events().iter().map(|e| e.event_type.as_str()).collect();
    for k in [
        "handshake/started",
        "handshake/accepted",
        "capability/exchanged",
        "session/established",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert!(
        tb.events()
            .iter()
            .any(|e| e.event_type.as_str() == "session/established")
    );
}

type Raw = Swarm<request_response::Behaviour<raw::RawCodec>>;

fn raw_peer(key: &NodeKeypair) -> Raw {
    swarm_with(
        key,
        request_response::Behaviour::with_codec(
            raw::RawCodec,
            [(PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default(),
        ),
    )
}

/// Sends `bytes` from the raw peer to `b` and returns the decoded answer, plus whether
/// the connection was closed by `b` while waiting.
async fn ask(r: &mut Raw, b: &mut Swarm<Behaviour>, bytes: Vec<u8>) -> (Message, bool) {
    let pb = *b.local_peer_id();
    r.behaviour_mut().send_request(&pb, bytes);
    let mut answer = None;
    let mut closed = false;
    until(r, b, |er, _| {
        match er {
            Some(SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            })) => answer = Some(protocol::decode(&response).unwrap()),
            Some(SwarmEvent::ConnectionClosed { .. }) => closed = true,
            Some(SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                error, ..
            })) => panic!("{error}"),
            _ => {}
        }
        answer.clone().map(|a| (a, closed))
    })
    .await
}

fn hello_bytes(from: &NodeKeypair, to: &NodeKeypair, version: Option<&str>) -> Vec<u8> {
    let p = HandshakeParams {
        offered: &["core/messaging"],
        transport: "tcp",
        intent: "peer-connect",
    };
    let hello = build_hello(
        from,
        &EphemeralKey::generate(),
        to.node_id(),
        &p,
        &Timestamp::now(),
    )
    .unwrap();
    let hello = match version {
        Some(v) => {
            let mut doc = hello.into_map();
            doc.insert("protocol/version".into(), v.into()); // unsigned framing field
            PeerHandshake::from_map(doc).unwrap()
        }
        None => hello,
    };
    let caps =
        mesh_session::artifacts::build_capabilities(from, &[], &["tcp"], &Timestamp::now(), 60)
            .unwrap();
    protocol::encode(&Message::Hello(Box::new(hello), Box::new(caps)))
}

/// A hello whose message carries no capability advertisement.
fn hello_without_caps(from: &NodeKeypair, to: &NodeKeypair) -> Vec<u8> {
    let mut v = mesh_core::cbor::decode(&hello_bytes(from, to, None)).unwrap();
    v.as_object_mut().unwrap().remove("advertisement");
    mesh_core::cbor::encode(&v)
}

fn code_of(m: &Message) -> ErrorCode {
    match m {
        Message::Rejected(e) => e.code,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn rejection_paths_answer_with_codes_and_only_hard_ones_close() {
    let (kb, kr, kx) = (
        NodeKeypair::generate(),
        NodeKeypair::generate(),
        NodeKeypair::generate(),
    );
    let tb = Arc::new(MemoryTrace::new(200));
    let mut b = node(&kb, tb.clone());
    b.listen().with_memory_addr_external().await;

    // A healthy session A-B first: nothing below may disturb it.
    let ka = NodeKeypair::generate();
    let mut a = node(&ka, Arc::new(MemoryTrace::new(100)));
    a.connect(&mut b).await;
    let mut done = (false, false);
    until(&mut a, &mut b, |ea, eb| {
        done.0 |= matches!(
            ea,
            Some(SwarmEvent::Behaviour(Event::SessionEstablished { .. }))
        );
        done.1 |= matches!(
            eb,
            Some(SwarmEvent::Behaviour(Event::SessionEstablished { .. }))
        );
        (done.0 && done.1).then_some(())
    })
    .await;
    let pa = *a.local_peer_id();

    // Soft: malformed bytes, another protocol version, capabilities before a handshake.
    let mut r = raw_peer(&kr);
    r.connect(&mut b).await;
    let (m, closed) = ask(&mut r, &mut b, b"\xff not cbor".to_vec()).await;
    assert_eq!((code_of(&m), closed), (ErrorCode::ProtoInvalid, false));
    let (m, closed) = ask(&mut r, &mut b, hello_bytes(&kr, &kb, Some("9.9.9"))).await;
    assert_eq!((code_of(&m), closed), (ErrorCode::ProtoVersion, false));
    let (m, closed) = ask(&mut r, &mut b, hello_without_caps(&kr, &kb)).await;
    assert_eq!((code_of(&m), closed), (ErrorCode::ProtoCapMissing, false));

    // A good hello gets an ack; the same hello again is a replay, which closes.
    let hello = hello_bytes(&kr, &kb, None);
    let (m, _) = ask(&mut r, &mut b, hello.clone()).await;
    assert!(matches!(m, Message::Ack(..)), "{m:?}");
    let (m, closed) = ask(&mut r, &mut b, hello).await;
    assert_eq!(code_of(&m), ErrorCode::HsReplay);
    if !closed {
        // The close may arrive just after the answer.
        until(&mut r, &mut b, |er, _| {
            matches!(er, Some(SwarmEvent::ConnectionClosed { .. })).then_some(())
        })
        .await;
    }

    // A hello signed by another node than the connection's peer: unknown signer.
    let mut r2 = raw_peer(&NodeKeypair::generate());
    r2.connect(&mut b).await;
    let (m, _) = ask(&mut r2, &mut b, hello_bytes(&kx, &kb, None)).await;
    assert_eq!(code_of(&m), ErrorCode::SigUnknownSigner);

    // Every refusal was traced with its code, and the A-B session is intact on both ends.
    let codes: Vec<String> = tb
        .events()
        .iter()
        .filter(|e| e.event_type.as_str() == "error/occurred")
        .filter_map(|e| {
            e.detail
                .as_ref()?
                .get("error/code")?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    for code in [
        "E_PROTO_INVALID",
        "E_PROTO_VERSION",
        "E_PROTO_CAP_MISSING",
        "E_HS_REPLAY",
        "E_SIG_UNKNOWN_SIGNER",
    ] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} not traced: {codes:?}"
        );
    }
    assert!(b.behaviour().session(&pa).is_some());
    assert!(b.is_connected(&pa));
    assert!(a.behaviour().session(b.local_peer_id()).is_some());
}

#[tokio::test]
async fn an_ack_for_an_unknown_hello_is_refused() {
    let (ka, kr) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut a = node(&ka, Arc::new(MemoryTrace::new(100)));
    let mut r = raw_peer(&kr);
    r.listen().with_memory_addr_external().await;
    a.connect(&mut r).await; // `a` dials, so `a` sends the hello
    let run = async {
        loop {
            tokio::select! {
                ev = r.select_next_some() => {
                    if let SwarmEvent::Behaviour(request_response::Event::Message {
                        message: request_response::Message::Request { request, channel, .. },
                        ..
                    }) = ev
                    {
                        let Message::Hello(hello, _) = protocol::decode(&request).unwrap() else {
                            panic!("expected a hello")
                        };
                        // A validly signed ack that refers to another hello.
                        let p = HandshakeParams { offered: &[], transport: "tcp", intent: "peer-connect" };
                        let mut doc = mesh_session::artifacts::build_ack(&kr, &EphemeralKey::generate(), &hello, &p, &Timestamp::now())
                            .unwrap()
                            .into_map();
                        doc.insert("ack/of-handshake-id".into(), "hs:someone-else".into());
                        let ack = PeerHandshake::sign(doc, &kr).unwrap();
                        let caps = mesh_session::artifacts::build_capabilities(&kr, &[], &["tcp"], &Timestamp::now(), 60).unwrap();
                        r.behaviour_mut().send_response(channel, protocol::encode(&Message::Ack(Box::new(ack), Box::new(caps)))).unwrap();
                    }
                }
                ev = a.select_next_some() => {
                    if let SwarmEvent::Behaviour(Event::Rejected { error, by_peer: false, .. }) = ev {
                        break error;
                    }
                }
            }
        }
    };
    let err = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("timed out");
    assert_eq!(err.code, ErrorCode::HsUnknownRef);
    assert!(a.behaviour().session(r.local_peer_id()).is_none());
}

/// The hello of `hello_bytes` with `session/pub` replaced (re-signed) and, optionally, a
/// passport signed by `forger` in its advertisement (which `from` re-signs).
fn tampered_hello(
    from: &NodeKeypair,
    to: &NodeKeypair,
    session_pub: Option<&str>,
    forger: Option<&NodeKeypair>,
) -> Vec<u8> {
    let Message::Hello(hello, caps) = protocol::decode(&hello_bytes(from, to, None)).unwrap()
    else {
        unreachable!()
    };
    let mut doc = hello.into_map();
    if let Some(p) = session_pub {
        doc.insert("session/pub".into(), p.into());
    }
    let hello = PeerHandshake::sign(doc, from).unwrap();
    let mut ad = caps.as_map().clone();
    if let Some(f) = forger {
        let mut passport = ad["capabilities/presented"][0]["passport"]
            .as_object()
            .unwrap()
            .clone();
        passport.remove("signature");
        let input = mesh_core::artifact::signing_input(
            mesh_session::artifacts::PASSPORT_FAMILY,
            &["signature"],
            &passport,
        );
        ad["capabilities/presented"][0]["passport"]["signature"] =
            mesh_core::artifact::signature_value(&f.sign(&input));
    }
    let caps = mesh_core::CapabilityAdvertisement::sign(ad, from).unwrap();
    protocol::encode(&Message::Hello(Box::new(hello), Box::new(caps)))
}

#[tokio::test]
async fn a_hello_that_fails_late_checks_gets_its_code_not_an_ack() {
    let (kb, kr) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut b = node(&kb, Arc::new(MemoryTrace::new(100)));
    b.listen().with_memory_addr_external().await;
    let mut r = raw_peer(&kr);
    r.connect(&mut b).await;
    // A small-order session key: refused before any ack is sent (the responder derives
    // after sending its ack only when the derivation cannot fail).
    let zero = "A".repeat(43);
    let (m, closed) = ask(&mut r, &mut b, tampered_hello(&kr, &kb, Some(&zero), None)).await;
    assert_eq!((code_of(&m), closed), (ErrorCode::ProtoInvalid, false));
    // The untampered form of the same kind of hello is acked.
    let (m, _) = ask(&mut r, &mut b, tampered_hello(&kr, &kb, None, None)).await;
    assert!(matches!(m, Message::Ack(..)), "{m:?}");
    // A passport signed by another key: the batch fails, one-by-one names it.
    let other = NodeKeypair::generate();
    let (m, _) = ask(&mut r, &mut b, tampered_hello(&kr, &kb, None, Some(&other))).await;
    assert_eq!(code_of(&m), ErrorCode::SigInvalid);
}

/// The dialer builds its hello while the connection is set up. When the connection takes
/// longer than a hello stays fresh (here: both clocks jump 60 s between the dial and the
/// connection, twice the allowed skew), a new hello is built: the old one would be
/// refused as a replay.
#[tokio::test]
async fn a_hello_built_while_dialing_is_not_sent_stale() {
    let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
    let clock = TestClock::new();
    let with_clock = |key: &NodeKeypair| {
        swarm_with(
            key,
            Behaviour::new(
                key.clone(),
                Config {
                    clock: clock.clock(),
                    ..Config::default()
                },
            ),
        )
    };
    let (mut a, mut b) = (with_clock(&ka), with_clock(&kb));
    let (addr, _) = b.listen().with_memory_addr_external().await;
    let pb = *b.local_peer_id();
    a.dial(
        libp2p::swarm::dial_opts::DialOpts::peer_id(pb)
            .addresses(vec![addr])
            .build(),
    )
    .unwrap();
    // Poll the dialer alone: it builds the hello; the listener has not accepted yet.
    let mut polls = 0;
    futures::future::poll_fn(|cx| {
        while let Poll::Ready(Some(_)) = a.poll_next_unpin(cx) {}
        polls += 1;
        Poll::Ready(())
    })
    .await;
    assert_eq!(polls, 1);
    clock.set_offset(60);
    let mut established = (false, false);
    until(&mut a, &mut b, |ea, eb| {
        if let Some(SwarmEvent::Behaviour(Event::Rejected { error, .. })) = &eb {
            panic!("the listener refused the hello: {error}");
        }
        if let Some(SwarmEvent::Behaviour(Event::SessionEstablished { .. })) = ea {
            established.0 = true;
        }
        if let Some(SwarmEvent::Behaviour(Event::SessionEstablished { .. })) = eb {
            established.1 = true;
        }
        (established.0 && established.1).then_some(())
    })
    .await;
}

/// Each side's hello or ack reports the transport the connection really uses: over QUIC
/// the hello B receives says `quic` (and so does A's ack), over TCP `tcp`.
#[tokio::test]
async fn the_handshake_reports_the_transport_really_used() {
    use mesh_session::TransportProfile;
    use mesh_testkit::Net;
    for (net, want) in [
        (Net::Quic, TransportProfile::Quic),
        (Net::Tcp, TransportProfile::Tcp),
    ] {
        let (ka, kb) = (NodeKeypair::generate(), NodeKeypair::generate());
        let make = |k: &NodeKeypair| {
            mesh_testkit::net_swarm(
                &k.to_libp2p(),
                net,
                Duration::from_secs(10),
                Behaviour::new(k.clone(), Config::default()),
            )
        };
        let (mut a, mut b) = (make(&ka), make(&kb));
        b.listen_on(net.listen_addr()).unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
                break address;
            }
        };
        let (pa, pb) = (*a.local_peer_id(), *b.local_peer_id());
        // By peer id, as nodes dial: the hello is built while the connection is set up.
        a.dial(
            libp2p::swarm::dial_opts::DialOpts::peer_id(pb)
                .addresses(vec![addr])
                .build(),
        )
        .unwrap();
        let mut established = (false, false);
        until(&mut a, &mut b, |ea, eb| {
            established.0 |= matches!(
                ea,
                Some(SwarmEvent::Behaviour(Event::SessionEstablished { .. }))
            );
            established.1 |= matches!(
                eb,
                Some(SwarmEvent::Behaviour(Event::SessionEstablished { .. }))
            );
            (established.0 && established.1).then_some(())
        })
        .await;
        let (sa, sb) = (
            a.behaviour().session(&pb).unwrap(),
            b.behaviour().session(&pa).unwrap(),
        );
        assert_eq!(
            sb.peer_transport,
            Some(want),
            "{net:?}: the hello B received"
        );
        assert_eq!(sa.peer_transport, Some(want), "{net:?}: the ack A received");
        assert_eq!((sa.transport, sb.transport), (want, want), "{net:?}");
    }
}
