//! Unit tests of the parent module.
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::{Multiaddr, PeerId};
use mesh_admission::client;
use mesh_core::{ErrorCode, MeshError, NodeKeypair, Timestamp};

use super::{ADVERT_WAIT, FRESH_GRANT, MAX_HELD_GRANTS, PROBE, Relays, hold_grant};
use crate::node::action::Action;
use mesh_admission::Purpose;
use std::collections::HashMap;

/// The liveness silence in these tests (the default).
const L: Duration = super::DEFAULT_LIVENESS;

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

fn asked(actions: &[Action]) -> Vec<PeerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AskRelay { relay, .. } => Some(*relay),
            _ => None,
        })
        .collect()
}

/// A reservation grant signed by `relay_key` for `me`, issued now.
fn grant(relay_key: &NodeKeypair, me: mesh_core::NodeId) -> Box<mesh_core::RelayAdmissionGrant> {
    use mesh_core::Artifact;
    let now = Timestamp::now();
    let doc = serde_json::json!({
        "schema/v": 1,
        "message/kind": "relay-admission-grant.v1",
        "relay/node-id": relay_key.node_id().to_string(),
        "node/id": me.to_string(),
        "ticket/id": "rg:0123456789abcdef01234567",
        "request/nonce": "AAAAAAAAAAAAAAAAAAAAAA",
        "purpose": "reservation",
        "limits": {"circuits": 4, "circuit-bytes": 1024, "circuit-secs": 60},
        "relay/load-permille": 0,
        "issued-at": now.as_str(),
        "expires-at": now.plus_secs(3600).as_str(),
    });
    let serde_json::Value::Object(doc) = doc else {
        unreachable!()
    };
    Box::new(mesh_core::RelayAdmissionGrant::sign(doc, relay_key).unwrap())
}

fn relay() -> (PeerId, Multiaddr) {
    let p = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let a = format!("/ip4/192.0.2.1/tcp/4001/p2p/{p}").parse().unwrap();
    (p, a)
}

fn listens(actions: &[Action]) -> Vec<PeerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ListenVia { relay, .. } => Some(*relay),
            _ => None,
        })
        .collect()
}

#[test]
fn relays_are_asked_once_the_advert_exists_and_the_best_is_reserved() {
    let t0 = Instant::now();
    let (r1, a1) = relay();
    let (r2, a2) = relay();
    let me = NodeKeypair::generate().node_id();
    let mut relays = Relays::new(me, 1, [(a1, 0), (a2, 0)], L, t0);
    // No advertisement yet, and still within the wait for it: nothing.
    assert!(relays.tick(false, false, t0).is_empty());
    let actions = relays.tick(false, true, t0);
    let asked: Vec<(PeerId, bool)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::AskRelay { relay, keep, .. } => Some((*relay, *keep)),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 2);
    assert!(asked.iter().all(|(_, keep)| *keep), "reservations are kept");
    // Without an advertisement the wait ends too.
    let mut late = Relays::new(me, 1, [(relay().1, 0)], L, t0);
    assert_eq!(late.tick(false, false, t0 + ADVERT_WAIT).len(), 1);
    // Both answer (plain relays); the faster one is reserved on.
    relays.rtt(&r1, Duration::from_millis(80), t0);
    relays.rtt(&r2, Duration::from_millis(20), t0);
    relays.on_admission(client::Event::Unsupported { relay: r1 }, t0);
    relays.on_admission(client::Event::Unsupported { relay: r2 }, t0);
    assert_eq!(listens(&relays.tick(false, true, t0 + PROBE)), vec![r2]);
    // Its reservation ends: it rests, the other takes the slot.
    let id = ListenerId::next();
    relays.listening(id, r2);
    assert!(!relays.listener_closed(ListenerId::next(), "closed", t0 + PROBE));
    assert!(relays.listener_closed(id, "closed", t0 + PROBE));
    assert_eq!(listens(&relays.tick(false, true, t0 + PROBE)), vec![r1]);
}

/// A node reserved (listening) at one relay without the admission protocol: the
/// relays, that relay, the listener and the start.
fn reserved() -> (Relays, PeerId, ListenerId, Instant) {
    let t0 = Instant::now();
    let (r1, a1) = relay();
    let me = NodeKeypair::generate().node_id();
    let mut relays = Relays::new(me, 2, [(a1, 0)], L, t0);
    relays.tick(false, true, t0);
    relays.on_admission(client::Event::Unsupported { relay: r1 }, t0);
    assert_eq!(listens(&relays.tick(false, true, t0 + PROBE)), vec![r1]);
    let id = ListenerId::next();
    relays.listening(id, r1);
    (relays, r1, id, t0)
}

/// A circuit refused at a relay (to one target, say) leaves our reservation there:
/// it was released, and the relay rested, as if the reservation had been refused.
#[test]
fn a_refused_circuit_leaves_the_reservation() {
    let (mut relays, r1, _, t0) = reserved();
    let me = relays.node_id;
    for e in [
        client::Event::Denied {
            relay: r1,
            purpose: Purpose::Circuit { target: Some(me) },
            error: MeshError::new(ErrorCode::TransportRejected, "not to that one"),
        },
        client::Event::Failed {
            relay: r1,
            purpose: Purpose::Circuit { target: Some(me) },
            error: MeshError::new(ErrorCode::TransportUnavailable, "timeout"),
        },
    ] {
        let actions = relays.on_admission(e, t0 + PROBE);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::StopListening(_) | Action::ForgetRelay(_))),
            "{actions:?}"
        );
    }
}

#[test]
fn a_denial_releases_the_relay_and_is_traced() {
    let (mut relays, r1, id, t0) = reserved();
    let error = MeshError::new(ErrorCode::TransportRejected, "revoked");
    let actions = relays.on_admission(
        client::Event::Denied {
            relay: r1,
            purpose: Purpose::Reservation,
            error,
        },
        t0 + PROBE,
    );
    assert!(actions.iter().any(|a| matches!(a, Action::Trace(_))));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::StopListening(x) if *x == id))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ForgetRelay(x) if *x == r1))
    );
    // It rests: not reserved on again at once.
    assert!(listens(&relays.tick(false, true, t0 + PROBE)).is_empty());
}

#[test]
fn a_directly_reachable_node_holds_no_reservation() {
    let t0 = Instant::now();
    let (r1, a1) = relay();
    let mut relays = Relays::new(NodeKeypair::generate().node_id(), 2, [(a1, 0)], L, t0);
    relays.tick(false, true, t0);
    relays.on_admission(client::Event::Unsupported { relay: r1 }, t0);
    relays.tick(false, true, t0 + PROBE);
    let actions = relays.tick(true, true, t0 + PROBE);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ForgetRelay(x) if *x == r1))
    );
    assert!(relays.tick(true, true, t0 + PROBE).is_empty());
    // No grant is held, so no circuit may be opened through it.
    let target = NodeKeypair::generate().node_id();
    assert!(!relays.may_open_circuit(&r1, target, &Timestamp::now()));
}

#[test]
fn only_own_non_circuit_addresses_count_as_reachable() {
    let mut nat = crate::node::nat_verdicts::NatVerdicts::default();
    let now = std::time::Instant::now();
    let (r, _) = relay();
    let circuit: Multiaddr = format!("/ip4/192.0.2.1/tcp/1/p2p/{r}/p2p-circuit")
        .parse()
        .unwrap();
    nat.insert(circuit, true, now);
    nat.insert("/ip4/192.0.2.9/tcp/1".parse().unwrap(), false, now);
    assert!(!super::publicly_reachable(&nat));
    nat.insert("/ip4/192.0.2.9/udp/1/quic-v1".parse().unwrap(), true, now);
    assert!(super::publicly_reachable(&nat));
}

#[test]
fn a_silent_relay_is_lost_disconnected_and_replaced_within_30_s() {
    let t0 = Instant::now();
    let (r1, a1) = relay();
    let (r2, a2) = relay();
    let me = NodeKeypair::generate().node_id();
    let mut relays = Relays::new(me, 1, [(a1, 0), (a2, 0)], L, t0);
    relays.tick(false, true, t0);
    relays.rtt(&r1, Duration::from_millis(10), t0);
    relays.rtt(&r2, Duration::from_millis(50), t0);
    relays.on_admission(client::Event::Unsupported { relay: r1 }, t0);
    relays.on_admission(client::Event::Unsupported { relay: r2 }, t0);
    let start = t0 + PROBE;
    assert_eq!(listens(&relays.tick(false, true, start)), vec![r1]);
    let id = ListenerId::next();
    relays.listening(id, r1);
    // Pings every 15 s for a minute: held, nothing happens.
    for s in (15..=60).step_by(15) {
        relays.rtt(
            &r1,
            Duration::from_millis(10),
            start + Duration::from_secs(s),
        );
        for tick in s - 14..=s {
            let a = relays.tick(false, true, start + Duration::from_secs(tick));
            assert!(a.is_empty(), "at {tick} s: {a:?}");
        }
    }
    // The relay hangs after its ping at 60 s: ticks every second until it is lost.
    let last = start + Duration::from_secs(60);
    let mut lost = None;
    for tick in 61..=120 {
        let now = start + Duration::from_secs(tick);
        let a = relays.tick(false, true, now);
        if a.iter()
            .any(|x| matches!(x, Action::Disconnect(p) if *p == r1))
        {
            assert!(
                a.iter()
                    .any(|x| matches!(x, Action::StopListening(i) if *i == id))
            );
            assert!(
                a.iter()
                    .any(|x| matches!(x, Action::ForgetRelay(p) if *p == r1))
            );
            assert!(a.iter().any(|x| matches!(x, Action::Trace(_))));
            // The other relay takes the slot in the same step.
            assert_eq!(listens(&a), vec![r2]);
            lost = Some(now);
            break;
        }
    }
    let lost = lost.expect("the silent relay was never lost");
    assert!(
        lost - last <= Duration::from_secs(30),
        "lost {:?} after its last ping",
        lost - last
    );
    assert!(lost - last > L);
    // A late answer from the lost relay changes nothing.
    relays.rtt(&r1, Duration::from_millis(10), lost);
    assert!(relays.tick(false, true, lost).is_empty());
}

#[test]
fn a_failing_relay_rests_longer_each_time_with_jitter() {
    let t0 = Instant::now();
    let (r1, a1) = relay();
    let me = NodeKeypair::generate().node_id();
    let mut relays = Relays::new(me, 1, [(a1, 0)], L, t0);
    assert_eq!(asked(&relays.tick(false, true, t0)), vec![r1]);
    let mut now = t0;
    let mut rests = Vec::new();
    for _ in 0..5 {
        let error = MeshError::new(ErrorCode::TransportUnavailable, "dial failed");
        relays.on_admission(
            client::Event::Failed {
                relay: r1,
                purpose: Purpose::Reservation,
                error,
            },
            now,
        );
        let failed = now;
        // Tick every second until it is asked again.
        loop {
            now += Duration::from_secs(1);
            assert!(
                now - failed < Duration::from_secs(3600),
                "never asked again"
            );
            if asked(&relays.tick(false, true, now)) == vec![r1] {
                break;
            }
        }
        rests.push((now - failed).as_secs());
    }
    // 10 s doubling, each scaled by [0.5, 1.0) (plus the tick's second).
    for (i, rest) in rests.iter().enumerate() {
        let ceiling = 10u64 << i;
        assert!(
            *rest >= ceiling / 2 && *rest <= ceiling + 1,
            "rest {i}: {rest} s ({rests:?})"
        );
    }
    assert!(rests[4] > rests[1], "{rests:?}");
    // A grant resets the back-off.
    relays.on_admission(
        client::Event::Granted {
            relay: r1,
            grant: grant(&NodeKeypair::generate(), me),
            renewed: false,
        },
        now,
    );
    let error = MeshError::new(ErrorCode::TransportRejected, "no");
    relays.on_admission(
        client::Event::Denied {
            relay: r1,
            purpose: Purpose::Reservation,
            error,
        },
        now,
    );
    assert!(asked(&relays.tick(false, true, secs(now, 4))).is_empty());
    assert_eq!(asked(&relays.tick(false, true, secs(now, 10))), vec![r1]);
}

#[test]
fn an_old_grant_is_renewed_before_reserving_with_it() {
    let t0 = Instant::now();
    let (r1, a1) = relay();
    let (r2, a2) = relay();
    let me = NodeKeypair::generate().node_id();
    let mut relays = Relays::new(me, 1, [(a1, 0), (a2, 0)], L, t0);
    relays.tick(false, true, t0);
    relays.rtt(&r1, Duration::from_millis(10), t0);
    relays.rtt(&r2, Duration::from_millis(50), t0);
    let key = NodeKeypair::generate();
    for r in [r1, r2] {
        let grant = grant(&key, me);
        relays.on_admission(
            client::Event::Granted {
                relay: r,
                grant,
                renewed: false,
            },
            t0,
        );
    }
    assert_eq!(listens(&relays.tick(false, true, t0 + PROBE)), vec![r1]);
    let id = ListenerId::next();
    relays.listening(id, r1);
    // Long after: r1's reservation ends; r2's grant is older than FRESH_GRANT.
    let later = t0 + FRESH_GRANT + Duration::from_secs(40);
    relays.rtt(&r1, Duration::from_millis(10), later);
    assert!(relays.listener_closed(id, "closed", later));
    let a = relays.tick(false, true, later);
    assert!(listens(&a).is_empty(), "reserved with an old grant: {a:?}");
    // Asked again, and reserved on once the fresh grant is in.
    let a = relays.tick(false, true, later + Duration::from_secs(1));
    assert_eq!(asked(&a), vec![r2]);
    let grant = grant(&key, me);
    relays.on_admission(
        client::Event::Granted {
            relay: r2,
            grant,
            renewed: true,
        },
        later,
    );
    assert_eq!(
        listens(&relays.tick(false, true, later + Duration::from_secs(2))),
        vec![r2]
    );
}

#[test]
fn a_relay_without_ping_is_not_watched() {
    let t0 = Instant::now();
    let (r1, a1) = relay();
    let me = NodeKeypair::generate().node_id();
    let mut relays = Relays::new(me, 1, [(a1, 0)], L, t0);
    relays.tick(false, true, t0);
    relays.unpingable(&r1);
    relays.on_admission(client::Event::Unsupported { relay: r1 }, t0);
    assert_eq!(listens(&relays.tick(false, true, t0 + PROBE)), vec![r1]);
    relays.listening(ListenerId::next(), r1);
    for s in 1..=120 {
        let a = relays.tick(false, true, t0 + PROBE + Duration::from_secs(s));
        assert!(a.is_empty(), "at {s} s: {a:?}");
    }
}

/// Grants held as a client are bounded: lapsed ones are forgotten when a new one comes,
/// and at `MAX_HELD_GRANTS` the one that lapses first makes room.
#[test]
fn held_grants_are_bounded_and_lapsed_ones_forgotten() {
    let t0 = Timestamp::parse("2026-12-04T12:00:00Z").unwrap();
    let mut held = HashMap::new();
    let peers: Vec<PeerId> = (0..MAX_HELD_GRANTS + 10).map(|_| relay().0).collect();
    for (i, p) in peers.iter().enumerate() {
        let at = t0.plus_secs(i as i64);
        hold_grant(
            &mut held,
            (*p, Purpose::Reservation),
            &at,
            &at.plus_secs(3600),
        );
    }
    assert_eq!(held.len(), MAX_HELD_GRANTS);
    assert!(
        !held.contains_key(&(peers[0], Purpose::Reservation)),
        "the first to lapse went"
    );
    assert!(held.contains_key(&(peers[peers.len() - 1], Purpose::Reservation)));
    // An hour and a bit later, one new grant: the lapsed ones are gone.
    let late = t0.plus_secs(3600 + 100);
    let (p, _) = relay();
    hold_grant(
        &mut held,
        (p, Purpose::Reservation),
        &late,
        &late.plus_secs(3600),
    );
    let left = MAX_HELD_GRANTS + 10 - 101 + 1;
    assert_eq!(held.len(), left);
}
