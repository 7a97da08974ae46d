//! The relay's admission table under pressure, over real swarms on loopback: requests per
//! IP, grants that are never used, a full table, federation membership by endorsement,
//! and a reservation whose grant lapses.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::swarm::SwarmEvent;
use mesh_admission::{Federation, FederationEndorsement, Open, Purpose, client, server};
use mesh_core::{Artifact, ErrorCode, NodeKeypair, Timestamp};
use mesh_testkit::TestClock;
use support::*;

fn open_with(clock: &TestClock) -> server::Config {
    server::Config {
        policy: Arc::new(Open {
            limits: server::DEFAULT_CAPS,
        }),
        clock: clock.clock(),
        // Requested grants only: these tests are about the table's rules for them (an
        // open policy would admit a client without one implicitly; `tests/implicit.rs`
        // covers implicit grants under the same rules).
        implicit_grants: false,
        ..server::Config::default()
    }
}

fn clocked_client(name: &str, clock: &TestClock) -> Client {
    let config = client::Config {
        clock: clock.clock(),
        ..client::Config::default()
    };
    client_with(name, NodeKeypair::generate(), config)
}

fn denied(answer: Result<mesh_core::RelayAdmissionGrant, client::Event>) -> mesh_core::MeshError {
    match answer {
        Err(client::Event::Denied { error, .. }) => error,
        other => panic!("expected a denial, got {other:?}"),
    }
}

async fn granted_nodes(relay: &Relay) -> Vec<mesh_core::NodeId> {
    let mut v: Vec<_> = relay
        .node
        .run(|s| s.behaviour().admission.grants())
        .await
        .into_iter()
        .map(|g| g.node)
        .collect();
    v.sort();
    v
}

/// Polls `check` every 100 ms until it holds, at most `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "not {what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Throwaway identities from one address: the relay answers the first 32 (the default
/// burst per IP key) and refuses the rest before looking at them. (The refill is slowed
/// to one a minute so that the test's own duration does not add a token.)
#[tokio::test]
async fn requests_from_one_ip_are_limited() {
    let clock = TestClock::new();
    let config = server::Config {
        requests_per_ip: mesh_core::RateLimit::per_minute(server::DEFAULT_REQUESTS_PER_IP.burst, 1),
        ..open_with(&clock)
    };
    let relay = Relay::start("relay", config, base_relay_config()).await;
    let mut outcomes = Vec::new();
    for i in 0..40 {
        let mut c = clocked_client(&format!("throwaway-{i}"), &clock);
        outcomes.push(c.ask(&relay, Purpose::Reservation).await);
    }
    let granted = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(granted, 32, "grants for 40 keys from 127.0.0.1");
    assert!(outcomes[..32].iter().all(Result::is_ok));
    let error = denied(outcomes.pop().unwrap());
    assert_eq!(error.code, ErrorCode::TransportRejected, "{error}");
    assert!(
        error
            .detail
            .contains("too many admission requests from 127.0.0.1"),
        "{error}"
    );
    // The limit refills with time.
    clock.advance(60);
    let mut late = clocked_client("late", &clock);
    late.ask(&relay, Purpose::Reservation).await.unwrap();
}

/// A grant that is never used for a reservation or circuit lapses after 120 s, though it
/// was issued for an hour; a used one stays.
#[tokio::test]
async fn an_unused_grant_lapses() {
    let clock = TestClock::new();
    let relay = Relay::start("relay", open_with(&clock), base_relay_config()).await;
    let (mut user, mut idler) = (
        clocked_client("user", &clock),
        clocked_client("idler", &clock),
    );
    let g = user.ask(&relay, Purpose::Reservation).await.unwrap();
    user.reserve(&relay).await.unwrap();
    let gi = idler.ask(&relay, Purpose::Reservation).await.unwrap();
    assert_eq!(gi.expires_at().secs_since(g.issued_at()), 3600);
    let mut both = vec![user.key.node_id(), idler.key.node_id()];
    both.sort();
    assert_eq!(granted_nodes(&relay).await, both);

    clock.advance(121);
    eventually("the unused grant lapsed", Duration::from_secs(10), || {
        let n = granted_nodes(&relay);
        let user = user.key.node_id();
        async move { n.await == vec![user] }
    })
    .await;
    // The idler's reservation is refused; the user's grant still admits it.
    assert!(idler.reserve(&relay).await.is_err());
    user.reserve(&relay).await.unwrap();
}

/// A full table evicts a node that holds nothing at the relay before refusing anyone,
/// and refuses only when every node in it holds a reservation.
#[tokio::test]
async fn a_full_table_evicts_idle_grants_before_refusing() {
    let clock = TestClock::new();
    let config = server::Config {
        max_nodes: 2,
        ..open_with(&clock)
    };
    let relay = Relay::start("relay", config, base_relay_config()).await;
    let (mut a, mut b, mut c, mut d) = (
        clocked_client("a", &clock),
        clocked_client("b", &clock),
        clocked_client("c", &clock),
        clocked_client("d", &clock),
    );
    a.ask(&relay, Purpose::Reservation).await.unwrap();
    a.reserve(&relay).await.unwrap();
    b.ask(&relay, Purpose::Reservation).await.unwrap();
    // The table is full; b holds nothing: it makes room for c.
    c.ask(&relay, Purpose::Reservation).await.unwrap();
    let mut expect = vec![a.key.node_id(), c.key.node_id()];
    expect.sort();
    assert_eq!(granted_nodes(&relay).await, expect);
    c.reserve(&relay).await.unwrap();
    // Now both hold reservations: d is refused.
    let error = denied(d.ask(&relay, Purpose::Reservation).await);
    assert_eq!(error.code, ErrorCode::TransportRejected);
    assert!(error.detail.contains("full"), "{error}");
    // b's grant is gone: its reservation is refused.
    assert!(b.reserve(&relay).await.is_err());
}

fn federation_relay(clock: &TestClock, endorser: &NodeKeypair) -> server::Config {
    server::Config {
        policy: Arc::new(Federation {
            ids: ["fed:a".to_owned()].into(),
            endorsers: [endorser.node_id()].into(),
            limits: server::DEFAULT_CAPS,
        }),
        ..open_with(clock)
    }
}

/// A node whose own advertisement claims the federation is refused; one endorsed by the
/// key the relay trusts is admitted; an endorsement by another key, or one forged in the
/// trusted key's name, is refused.
#[tokio::test]
async fn federation_membership_needs_an_endorsement_by_the_configured_key() {
    let clock = TestClock::new();
    let (operator, stranger) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut relay = Relay::start(
        "relay",
        federation_relay(&clock, &operator),
        base_relay_config(),
    )
    .await;
    let now = Timestamp::now();

    // Claims fed:a in its own advertisement.
    let mut claimer = clocked_client("claimer", &clock);
    let addr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let mut doc = mesh_advert::own::advert_for(&claimer.key, &[addr], 1, &now, 600)
        .unwrap()
        .into_map();
    doc.insert("federation/id".into(), "fed:a".into());
    let advert = mesh_core::NodeAdvertisement::sign(doc, &claimer.key).unwrap();
    claimer
        .run(move |s| s.behaviour_mut().admission.set_advertisement(Some(advert)))
        .await;
    let error = denied(claimer.ask(&relay, Purpose::Reservation).await);
    assert_eq!(error.code, ErrorCode::TransportRejected, "{error}");
    assert!(claimer.reserve(&relay).await.is_err());

    // Endorsed by the operator's key.
    let mut member = clocked_client("member", &clock);
    let e =
        FederationEndorsement::issue(&operator, "fed:a", member.key.node_id(), &now, 3600).unwrap();
    member
        .run(move |s| s.behaviour_mut().admission.set_endorsements(vec![e]))
        .await;
    let grant = member.ask(&relay, Purpose::Reservation).await.unwrap();
    assert_eq!(grant.node_id(), member.key.node_id());
    member.reserve(&relay).await.unwrap();

    // Endorsed by a key the relay does not trust.
    let mut outsider = clocked_client("outsider", &clock);
    let e = FederationEndorsement::issue(&stranger, "fed:a", outsider.key.node_id(), &now, 3600)
        .unwrap();
    outsider
        .run(move |s| s.behaviour_mut().admission.set_endorsements(vec![e]))
        .await;
    let error = denied(outsider.ask(&relay, Purpose::Reservation).await);
    assert_eq!(error.code, ErrorCode::TransportRejected, "{error}");

    // Forged: names the operator as endorser, signed by another key.
    let mut forger = clocked_client("forger", &clock);
    let real =
        FederationEndorsement::issue(&operator, "fed:a", member.key.node_id(), &now, 3600).unwrap();
    let mut doc = real.into_map();
    doc.insert("node/id".into(), forger.key.node_id().to_string().into());
    doc.remove("signature");
    let input =
        mesh_core::artifact::signing_input(FederationEndorsement::FAMILY, &["signature"], &doc);
    doc.insert(
        "signature".into(),
        mesh_core::artifact::signature_value(&stranger.sign(&input)),
    );
    let forged = FederationEndorsement::from_map(doc).unwrap();
    forger
        .run(move |s| s.behaviour_mut().admission.set_endorsements(vec![forged]))
        .await;
    let error = denied(forger.ask(&relay, Purpose::Reservation).await);
    assert_eq!(error.code, ErrorCode::SigInvalid, "{error}");
    let fp = forger.peer;
    relay
        .node
        .wait(
            "server Event::Denied for the forger",
            |e| match relay_admission(e)? {
                server::Event::Denied { peer, error } if *peer == fp => Some(error.code),
                _ => None,
            },
        )
        .await;
    assert_eq!(granted_nodes(&relay).await, vec![member.key.node_id()]);
}

/// A reservation whose grant lapses without renewal ends at once (its connection to the
/// relay closes), not at relay v2's next renewal up to an hour later.
#[tokio::test]
async fn a_reservation_ends_when_its_grant_lapses() {
    let clock = TestClock::new();
    let relay = Relay::start("relay", open_with(&clock), base_relay_config()).await;
    let mut a = clocked_client("a", &clock);
    a.ask(&relay, Purpose::Reservation).await.unwrap();
    let listen = a.reserve(&relay).await.unwrap();
    clock.advance(3601);
    let rp = relay.node.peer;
    let ended = a
        .wait("the reservation's listener closed", |e| match e {
            SwarmEvent::ListenerClosed { addresses, .. } if addresses.contains(&listen) => Some(()),
            SwarmEvent::ExpiredListenAddr { address, .. } if *address == listen => Some(()),
            _ => None,
        })
        .await;
    let () = ended;
    assert!(!a.run(move |s| s.is_connected(&rp)).await);
}
