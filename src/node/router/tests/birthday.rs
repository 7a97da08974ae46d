//! The birthday stage without a swarm: two routers, C (port-preserving: the host saw
//! its listen port) starting the route and S (symmetric: the host saw another port)
//! answering, trade their frames through a signaling host; probe tasks are played by
//! hand as the node loop would report them.

use std::net::SocketAddr;

use super::*;
use crate::node::birthday::probe::Hit;
use crate::node::birthday::run::ProbeEvent;
use crate::node::config::PunchFor;
use crate::node::router::plan::Stage;

const HOST_ADDR: &str = "/ip4/10.77.0.1/udp/4001/quic-v1";

fn side(listen: &str, observed: Option<&str>, host: PeerId, t0: Instant) -> Bench {
    let me = NodeKeypair::generate();
    let settings = SignalSettings {
        punch_for: PunchFor::Anyone,
        ..SignalSettings::default()
    };
    let mut b = Bench {
        router: Router::new(me.clone(), RouteSettings::default(), settings),
        me,
        view: FakeView::default(),
        t0,
    };
    b.view.listen = vec![ma(listen)];
    b.view.session(host, HOST_ADDR, &["core/signaling"]);
    if let Some(o) = observed {
        b.router.observed(&ma(HOST_ADDR), &ma(o), &b.view, t0);
    }
    b
}

/// C: behind a port-preserving NAT (observed at its own port).
fn preserving(host: PeerId, t0: Instant) -> Bench {
    let observed = "/ip4/10.77.0.2/udp/4001/quic-v1";
    side(
        "/ip4/192.168.1.2/udp/4001/quic-v1",
        Some(observed),
        host,
        t0,
    )
}

/// S: behind a symmetric NAT (observed at another port).
fn symmetric(host: PeerId, t0: Instant) -> Bench {
    let observed = "/ip4/10.77.0.3/udp/51234/quic-v1";
    side(
        "/ip4/192.168.2.2/udp/4001/quic-v1",
        Some(observed),
        host,
        t0,
    )
}

/// Hands the frames among `actions` to `to` (through `host`); returns `to`'s actions.
fn deliver(to: &mut Bench, host: PeerId, actions: Vec<Action>, secs: u64) -> Vec<Action> {
    let at = to.at(secs);
    let mut out = Vec::new();
    for a in actions {
        if let Action::SendFrame { frame, .. } = a {
            let ev = mesh_signal::Event::Received {
                via: host,
                frame,
                transition: mesh_signal::Transition::Carried,
            };
            out.extend(to.router.on_signal(ev, &to.view, &|_| false, at));
        }
    }
    out
}

fn probe_bind(actions: &[Action]) -> Option<u64> {
    actions.iter().find_map(|a| match a {
        Action::ProbeBind { job, .. } => Some(*job),
        _ => None,
    })
}

fn probe_actions(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::ProbeBind { .. }
                    | Action::ProbeSpray { .. }
                    | Action::ProbeSockets { .. }
                    | Action::ProbeListen { .. }
            )
        })
        .count()
}

fn step_of(actions: &[Action]) -> Option<serde_json::Value> {
    actions.iter().find_map(|a| match a {
        Action::SendFrame { frame, .. } if frame.payload().contains_key("birthday/token") => {
            Some(serde_json::Value::Object(frame.payload().clone()))
        }
        _ => None,
    })
}

/// Lookup fails, signaling runs (both sides trade candidates) and times out: the
/// actions of the stage after it.
type Answer = oneshot::Receiver<Result<Route, HandleError>>;

fn to_birthday(c: &mut Bench, s: &mut Bench, host: PeerId) -> (u64, Vec<Action>, Answer) {
    let (id, rx) = c.connect(s.me.node_id());
    let e = HandleError::timed_out("lookup", Duration::from_secs(1));
    let req = c.router.lookup_failed(id, &e, &c.view, c.at(0));
    let answer = deliver(s, host, req, 0);
    let mine = deliver(c, host, answer, 0);
    let punch = deliver(s, host, mine, 0);
    assert_eq!(dials(&punch).len(), 1, "S punches toward C's candidates");
    let secs = RouteSettings::default().signaling_secs;
    (id, c.router.tick(&c.view, c.at(secs)), rx)
}

#[test]
fn a_preserving_initiator_and_a_symmetric_responder_meet_by_probing() {
    let t0 = Instant::now();
    let host = PeerId::random();
    let c_pub = "/ip4/10.77.0.2/udp/4001/quic-v1";
    let s_pub = "/ip4/10.77.0.3/udp/51234/quic-v1";
    let mut c = side("/ip4/192.168.1.2/udp/4001/quic-v1", Some(c_pub), host, t0);
    let mut s = side("/ip4/192.168.2.2/udp/4001/quic-v1", Some(s_pub), host, t0);
    let s_peer = s.me.node_id().to_peer_id().unwrap();
    let (_, actions, mut rx) = to_birthday(&mut c, &mut s, host);
    // C binds its probe socket, then offers it at its public IP.
    let job = probe_bind(&actions).expect("C binds a probe socket");
    let offer = c.router.birthday_bound(job, Ok(40000), &c.view, c.at(11));
    let payload = step_of(&offer).expect("the offer");
    assert_eq!(payload["birthday/probe"], "10.77.0.2:40000");
    assert_eq!(payload["birthday/mapping"], "preserving");
    assert!(!payload["addrs"].as_array().unwrap().is_empty());
    // S opens its sockets toward exactly that address.
    let actions = deliver(&mut s, host, offer, 11);
    let target: SocketAddr = "10.77.0.2:40000".parse().unwrap();
    let s_job = actions
        .iter()
        .find_map(|a| match a {
            Action::ProbeSockets {
                job,
                target: t,
                count,
                ..
            } => {
                assert_eq!((*t, *count), (target, 256));
                Some(*job)
            }
            _ => None,
        })
        .expect("S's probe sockets");
    assert!(dials(&actions).is_empty(), "a step frame is not dialed");
    // Probes out: S says ready, leading with its observed address; C sprays it.
    let ready = s.router.probe_event(
        ProbeEvent::Probed {
            job: s_job,
            sent: 256,
        },
        &s.view,
        s.at(11),
    );
    let p = step_of(&ready).expect("ready");
    assert_eq!(p["birthday/ready"], true);
    assert_eq!(p["addrs"][0], s_pub);
    let actions = deliver(&mut c, host, ready, 12);
    let sprayed = actions.iter().find_map(|a| match a {
        Action::ProbeSpray { ip, count, .. } => Some((*ip, *count)),
        _ => None,
    });
    assert_eq!(sprayed, Some(("10.77.0.3".parse().unwrap(), 256)));
    // S's hit: it listens on the hit socket's port for C's probe address.
    let hit = Hit {
        local_port: 50000,
        external_port: 61000,
    };
    let actions = s.router.probe_event(
        ProbeEvent::Hit {
            job: s_job,
            hit: Some(hit),
            sent: 257,
        },
        &s.view,
        s.at(12),
    );
    assert!(actions.iter().any(|a| matches!(a,
        Action::ProbeListen { local, remote }
            if *local == "0.0.0.0:50000".parse::<SocketAddr>().unwrap() && *remote == target)));
    // C's confirmation: it listens on its probe port and dials S through both NATs.
    let s_ext: SocketAddr = "10.77.0.3:61000".parse().unwrap();
    let actions = c.router.probe_event(
        ProbeEvent::Confirmed {
            job,
            local: "0.0.0.0:40000".parse().unwrap(),
            from: Some(s_ext),
            sent: 256,
        },
        &c.view,
        c.at(12),
    );
    assert!(actions.iter().any(|a| matches!(a,
        Action::ProbeListen { local, remote }
            if *local == "0.0.0.0:40000".parse::<SocketAddr>().unwrap() && *remote == s_ext)));
    let d = dials(&actions);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].get_peer_id(), Some(s_peer));
    // The connection comes up: the route names the birthday path.
    let addr = ma("/ip4/10.77.0.3/udp/61000/quic-v1");
    settle(c.router.connection_up(s_peer, &addr, c.at(13)));
    let route = rx.try_recv().unwrap().unwrap();
    assert_eq!(route.path, "birthday");
    let stages: Vec<(&str, bool)> = route.stages.iter().map(|s| (s.stage, s.ok)).collect();
    assert_eq!(
        stages,
        [("direct", false), ("signaling", false), ("birthday", true)]
    );
}

#[test]
fn a_symmetric_initiator_asks_for_the_offer() {
    let t0 = Instant::now();
    let host = PeerId::random();
    // This time S starts the route, C answers.
    let mut s = symmetric(host, t0);
    let mut c = preserving(host, t0);
    let (_, actions, _) = to_birthday(&mut s, &mut c, host);
    let ask = step_of(&actions).expect("S asks");
    assert_eq!(ask["birthday/ask"], true);
    let actions = deliver(&mut c, host, actions, 11);
    let job = probe_bind(&actions).expect("C binds on the ask");
    let offer = c.router.birthday_bound(job, Ok(40001), &c.view, c.at(11));
    let p = step_of(&offer).unwrap();
    assert_eq!(
        p["birthday/token"], ask["birthday/token"],
        "the asked token"
    );
    let actions = deliver(&mut s, host, offer, 11);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ProbeSockets { .. }))
    );
}

#[test]
fn no_probing_without_both_mappings_or_beyond_the_peers_addresses() {
    let t0 = Instant::now();
    let host = PeerId::random();
    // Both symmetric: the stage passes to the relay at once, nothing probed.
    let mut c = side(
        "/ip4/192.168.1.2/udp/4001/quic-v1",
        Some("/ip4/10.77.0.2/udp/50001/quic-v1"),
        host,
        t0,
    );
    let mut s = symmetric(host, t0);
    let (id, actions, _) = to_birthday(&mut c, &mut s, host);
    assert_eq!(probe_actions(&actions), 0);
    assert!(step_of(&actions).is_none());
    assert!(
        c.router
            .attempts
            .get(&id)
            .is_none_or(|a| a.plan.stage() != Stage::Birthday)
    );
    // A peer whose mapping is unknown (an old node sends none): not probed either.
    let mut c = preserving(host, t0);
    let mut old = side("/ip4/192.168.2.2/udp/4001/quic-v1", None, host, t0);
    let (_, actions, _) = to_birthday(&mut c, &mut old, host);
    assert_eq!(probe_actions(&actions), 0);
    // An offer whose probe address is none of the offerer's candidates: S does not
    // probe it; a step in a correlation nobody opened is ignored.
    let mut c = preserving(host, t0);
    let mut s = symmetric(host, t0);
    let (id, _, _) = to_birthday(&mut c, &mut s, host);
    let corr = c.router.attempts[&id].outbound.clone().unwrap();
    let forged = |corr: &str, probe: &str| {
        s.frame_from(
            &c.me,
            host,
            "candidate",
            corr,
            json!({
                "addrs": ["/ip4/10.77.0.2/udp/4001/quic-v1"],
                "birthday/mapping": "preserving",
                "birthday/token": "0102030405060708",
                "birthday/probe": probe,
            }),
        )
    };
    let (victim, stray) = (
        forged(&corr, "192.0.2.99:53"),
        forged("corr:nobody", "10.77.0.2:40000"),
    );
    let actions = s.router.on_signal(victim, &s.view, &|_| false, s.at(11));
    assert_eq!(probe_actions(&actions), 0, "victim address refused");
    let ev = stray;
    let actions = s.router.on_signal(ev, &s.view, &|_| false, s.at(11));
    assert_eq!(probe_actions(&actions), 0, "stranger correlation ignored");
    // The preserving side asking (the symmetric side's step) is out of turn.
    let ask = s.frame_from(
        &c.me,
        host,
        "candidate",
        &corr,
        json!({
            "addrs": ["/ip4/10.77.0.2/udp/4001/quic-v1"],
            "birthday/mapping": "preserving",
            "birthday/token": "0102030405060708",
            "birthday/ask": true,
        }),
    );
    let actions = s.router.on_signal(ask, &s.view, &|_| false, s.at(11));
    assert_eq!(probe_actions(&actions), 0, "an ask out of turn");
    assert!(step_of(&actions).is_none());
}

#[test]
fn a_failed_attempt_moves_the_route_on_and_the_limiter_holds_the_next() {
    let t0 = Instant::now();
    let host = PeerId::random();
    let mut c = preserving(host, t0);
    let mut s = symmetric(host, t0);
    let (id, actions, _) = to_birthday(&mut c, &mut s, host);
    let job = probe_bind(&actions).unwrap();
    assert_eq!(c.router.attempts[&id].plan.stage(), Stage::Birthday);
    let actions = c
        .router
        .birthday_bound(job, Err("no fds".into()), &c.view, c.at(11));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ProbeEnd(j) if *j == job))
    );
    // The next tick moves the route to the relay stage (none here: it fails).
    settle(c.router.tick(&c.view, c.at(12)));
    assert!(!c.router.attempts.contains_key(&id));
    // A second route to the same peer within the minute: the limiter refuses.
    let (_, actions, _) = to_birthday(&mut c, &mut s, host);
    assert_eq!(probe_actions(&actions), 0);
}

#[test]
fn an_attempt_we_answer_gives_way_to_a_route_of_ours() {
    let t0 = Instant::now();
    let host = PeerId::random();
    let mut c = preserving(host, t0);
    let mut s = symmetric(host, t0);
    // C's route reaches the birthday stage: S answers its offer with probe sockets.
    let (_, actions, _) = to_birthday(&mut c, &mut s, host);
    let job = probe_bind(&actions).unwrap();
    let offer = c.router.birthday_bound(job, Ok(40000), &c.view, c.at(11));
    let answered = deliver(&mut s, host, offer, 11);
    let s_job = answered
        .iter()
        .find_map(|a| match a {
            Action::ProbeSockets { job, .. } => Some(*job),
            _ => None,
        })
        .expect("S answers with its probe sockets");
    // While it runs, S routes to another port-preserving node: its own attempt takes
    // the place of the answered one (a peer that keeps starting attempts with S
    // cannot keep S's routes from the stage) and asks D for an offer.
    let mut d = preserving(host, t0);
    let (_, actions, _) = to_birthday(&mut s, &mut d, host);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::ProbeEnd(j) if *j == s_job)),
        "the answered attempt ends"
    );
    let ask = step_of(&actions).expect("S asks D for an offer");
    assert!(ask.get("birthday/ask").is_some(), "{ask}");
    // The other way round, an attempt to answer waits for ours: C2's offer is not
    // taken while S's own attempt runs.
    let mut c2 = preserving(host, t0);
    let (_, actions, _) = to_birthday(&mut c2, &mut s, host);
    let job = probe_bind(&actions).unwrap();
    let offer = c2
        .router
        .birthday_bound(job, Ok(40001), &c2.view, c2.at(11));
    assert_eq!(probe_actions(&deliver(&mut s, host, offer, 11)), 0);
}

/// C's offer delivered to S: S's probe-sockets job, if S takes it (ended at once, as a
/// wait without a hit would end it, so that the next can run).
fn answered_offer(c: &mut Bench, s: &mut Bench, host: PeerId, port: u16) -> Option<u64> {
    let (_, actions, _) = to_birthday(c, s, host);
    let job = probe_bind(&actions)?;
    let offer = c.router.birthday_bound(job, Ok(port), &c.view, c.at(11));
    let answered = deliver(s, host, offer, 11);
    let s_job = answered.iter().find_map(|a| match a {
        Action::ProbeSockets { job, .. } => Some(*job),
        _ => None,
    })?;
    let hit = ProbeEvent::Hit {
        job: s_job,
        hit: None,
        sent: 256,
    };
    settle(s.router.probe_event(hit, &s.view, s.at(11)));
    Some(s_job)
}

#[test]
fn fresh_keys_naming_one_host_get_it_probed_for_two_of_them() {
    let t0 = Instant::now();
    let host = PeerId::random();
    let mut s = symmetric(host, t0);
    // Three nodes (fresh keys) behind one NAT, 10.77.0.2: S probes toward it for the
    // first two, not for the third, though its limiters (per node id, node-wide) allow it.
    for n in 0..3u16 {
        let mut c = preserving(host, t0);
        let taken = answered_offer(&mut c, &mut s, host, 40000 + n);
        assert_eq!(taken.is_some(), n < 2, "offer {n}");
    }
    // A node behind another NAT is answered meanwhile.
    let mut other = side(
        "/ip4/192.168.3.2/udp/4001/quic-v1",
        Some("/ip4/10.77.0.9/udp/4001/quic-v1"),
        host,
        t0,
    );
    assert!(answered_offer(&mut other, &mut s, host, 40100).is_some());
}
