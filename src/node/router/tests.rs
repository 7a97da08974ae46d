//! The router without a swarm: commands and events in, actions out.

use std::time::{Duration, Instant};

use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, NodeId, NodeKeypair, Timestamp};
use serde_json::{Map, json};
use tokio::sync::oneshot;

use super::policy::{RouteSettings, SignalSettings};
use super::{RouteWaiter, Router, punch_budget};
use crate::node::action::Action;
use crate::node::api::{HandleError, MAX_SETUP_BYTES, Route};
use crate::node::view::fake::FakeView;
use crate::node::waiting::After;

mod birthday;
mod candidates;

fn ma(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

struct Bench {
    me: NodeKeypair,
    router: Router,
    view: FakeView,
    t0: Instant,
}

impl Bench {
    fn new() -> Self {
        let me = NodeKeypair::generate();
        Bench {
            router: Router::new(
                me.clone(),
                RouteSettings::default(),
                SignalSettings::default(),
            ),
            me,
            view: FakeView::default(),
            t0: Instant::now(),
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    /// `connect(node)`: the lookup it asks for, and where the route is answered.
    fn connect(&mut self, node: NodeId) -> (u64, oneshot::Receiver<Result<Route, HandleError>>) {
        let (tx, rx) = oneshot::channel();
        let t = self.at(0);
        let actions = self
            .router
            .connect(node, RouteWaiter::Route(tx), &self.view, t);
        let [
            Action::Lookup {
                node: n,
                after: After::Route(id),
            },
        ] = actions.as_slice()
        else {
            panic!("a lookup first: {actions:?}");
        };
        assert_eq!(*n, node);
        (*id, rx)
    }

    /// A frame from `key` to us, as the signal behaviour hands it over.
    fn frame_from(
        &self,
        key: &NodeKeypair,
        via: PeerId,
        kind: &str,
        corr: &str,
        payload: serde_json::Value,
    ) -> mesh_signal::Event {
        let serde_json::Value::Object(payload) = payload else {
            panic!("an object")
        };
        let frame = mesh_signal::frame(
            key,
            self.me.node_id(),
            kind,
            corr,
            payload,
            &Timestamp::now(),
        )
        .unwrap();
        mesh_signal::Event::Received {
            via,
            frame: Box::new(frame),
            transition: mesh_signal::Transition::Carried,
        }
    }
}

/// Carries out the answers among `actions` (as the node loop does), returns the rest.
fn settle(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::AnswerRoute { reply, result } => {
                let _ = reply.send(result);
                None
            }
            Action::Fail { after, error } => {
                after.fail(error);
                None
            }
            other => Some(other),
        })
        .collect()
}

fn dials(actions: &[Action]) -> Vec<&DialOpts> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dial(o) => Some(o),
            _ => None,
        })
        .collect()
}

/// How many addresses a dial names (`DialOpts` shows them only in its `Debug`).
fn addresses_in(d: &DialOpts) -> usize {
    format!("{d:?}").matches("/quic-v1").count()
}

fn frames(actions: &[Action]) -> Vec<(&str, &str, Option<PeerId>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendFrame { frame, via } => Some((frame.kind(), frame.correlation(), *via)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_direct_route_dials_the_looked_up_addresses_and_reports_the_path() {
    let mut b = Bench::new();
    let target = NodeKeypair::generate().node_id();
    let peer = target.to_peer_id().unwrap();
    let (id, mut rx) = b.connect(target);
    let addr = ma("/ip4/192.0.2.7/tcp/4001");
    let actions = b.router.found(id, vec![addr.clone()], &b.view, b.at(1));
    let d = dials(&actions);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].get_peer_id(), Some(peer));
    assert_eq!(b.router.targets().collect::<Vec<_>>(), vec![peer]);

    let actions = b.router.connection_up(peer, &addr, b.at(2));
    // Traced and told before the answer (whoever waits reads the trace next).
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            Action::Trace(_) => "trace",
            Action::Emit(_) => "emit",
            Action::AnswerRoute { .. } => "answer",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["trace", "emit", "answer"]);
    let actions = settle(actions);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Emit(crate::node::NodeEvent::RouteSelected { .. })
    )));
    let route = rx.try_recv().unwrap().unwrap();
    assert_eq!(route.path, "direct");
    assert_eq!(route.ms, 2000);
    assert_eq!(route.addr, addr.to_string());
    assert_eq!(b.router.targets().count(), 0, "the attempt is over");
}

#[test]
fn without_any_path_the_route_fails_with_every_stage_named() {
    let mut b = Bench::new();
    let target = NodeKeypair::generate().node_id();
    let (id, mut rx) = b.connect(target);
    let actions = b.router.found(id, Vec::new(), &b.view, b.at(0));
    // The error is traced before the answer goes out.
    assert!(
        matches!(
            actions.as_slice(),
            [Action::Trace(_), Action::AnswerRoute { .. }]
        ),
        "{actions:?}"
    );
    settle(actions);
    let e = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::TransportUnavailable);
    let text = e.to_string();
    for part in ["no direct addresses", "no signaling host", "no relay"] {
        assert!(text.contains(part), "{text}");
    }
}

#[test]
fn a_connected_node_is_an_existing_route_and_this_node_is_refused() {
    let mut b = Bench::new();
    let target = NodeKeypair::generate().node_id();
    let peer = target.to_peer_id().unwrap();
    b.view.session(peer, "/ip4/192.0.2.9/udp/1/quic-v1", &[]);
    let (tx, mut rx) = oneshot::channel();
    let actions = settle(
        b.router
            .connect(target, RouteWaiter::Route(tx), &b.view, b.at(0)),
    );
    assert!(actions.is_empty());
    assert_eq!(rx.try_recv().unwrap().unwrap().path, "existing");

    let (tx, mut rx) = oneshot::channel();
    let me = b.me.node_id();
    b.router
        .connect(me, RouteWaiter::Route(tx), &b.view, b.at(0));
    let e = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(e.code(), ErrorCode::ProtoInvalid);
}

#[test]
fn a_failed_dial_moves_to_signaling_through_a_host_and_candidates_are_dialed() {
    let mut b = Bench::new();
    let target_key = NodeKeypair::generate();
    let target = target_key.node_id();
    let peer = target.to_peer_id().unwrap();
    let host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    b.view
        .session(host, "/ip4/192.0.2.1/tcp/1", &["core/signaling"]);
    b.view.listen = vec![ma("/ip4/192.0.2.50/udp/4001/quic-v1")];
    let (id, mut rx) = b.connect(target);
    let actions = b
        .router
        .found(id, vec![ma("/ip4/192.0.2.7/tcp/4001")], &b.view, b.at(0));
    let cid = dials(&actions)[0].connection_id();
    // The dial fails: the signaling stage sends a request through the host.
    let actions = b.router.dial_failed(cid, "refused", &b.view, b.at(1));
    let sent = frames(&actions);
    assert_eq!(sent.len(), 1, "{actions:?}");
    let (kind, corr, via) = sent[0];
    assert_eq!((kind, via), ("connect_request", Some(host)));
    let corr = corr.to_owned();

    // Accepted: we send our candidates.
    let accept = b.frame_from(&target_key, host, "connect_accept", &corr, json!({}));
    let actions = b.router.on_signal(accept, &b.view, &|_| false, b.at(2));
    assert!(
        frames(&actions)
            .iter()
            .any(|(k, c, _)| *k == "candidate" && *c == corr)
    );
    // Their candidates: dialed, QUIC from the listen port and TCP from a new one.
    let cands = b.frame_from(
        &target_key,
        host,
        "candidate",
        &corr,
        json!({"addrs": ["/ip4/198.51.100.3/udp/4001/quic-v1", "/ip4/198.51.100.3/tcp/4001"]}),
    );
    let actions = b.router.on_signal(cands, &b.view, &|_| false, b.at(3));
    assert_eq!(dials(&actions).len(), 2, "{actions:?}");
    // Halfway through the stage they are dialed once more, then no more.
    assert_eq!(dials(&b.router.tick(&b.view, b.at(7))).len(), 2);
    assert!(dials(&b.router.tick(&b.view, b.at(8))).is_empty());
    // The connection comes up: a signaled route.
    let actions = settle(b.router.connection_up(
        peer,
        &ma("/ip4/198.51.100.3/udp/4001/quic-v1"),
        b.at(9),
    ));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::CorrelationDone { .. }))
    );
    assert_eq!(rx.try_recv().unwrap().unwrap().path, "signaling");
}

#[test]
fn a_refused_request_goes_to_the_next_host_then_to_the_next_stage() {
    let mut b = Bench::new();
    let target = NodeKeypair::generate().node_id();
    let h1 = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let h2 = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    b.view
        .session(h1, "/ip4/192.0.2.1/tcp/1", &["core/signaling"]);
    b.view
        .session(h2, "/ip4/192.0.2.2/tcp/1", &["core/signaling"]);
    let (id, mut rx) = b.connect(target);
    let actions = b.router.found(id, Vec::new(), &b.view, b.at(0));
    let Some(Action::SendFrame { frame, via: first }) = actions.first() else {
        panic!("{actions:?}")
    };
    let (fid, first) = (frame.frame_id().to_owned(), *first);
    let refusal = mesh_core::MeshError::new(ErrorCode::TransportRejected, "no");
    let actions = b
        .router
        .frame_refused(&fid, refusal.clone(), &b.view, b.at(1));
    let Some(Action::SendFrame { frame, via: second }) = actions.first() else {
        panic!("{actions:?}")
    };
    assert_ne!(first, *second, "the other host");
    let fid = frame.frame_id().to_owned();
    // The second host refuses too: no relay either, so the route fails.
    settle(b.router.frame_refused(&fid, refusal, &b.view, b.at(2)));
    let text = rx.try_recv().unwrap().unwrap_err().to_string();
    assert!(text.contains("signaling: "), "{text}");
}

#[test]
fn the_relay_stage_asks_for_a_circuit_grant_before_dialing() {
    let mut b = Bench::new();
    let target = NodeKeypair::generate().node_id();
    let relay = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let circuit = ma(&format!("/ip4/192.0.2.5/tcp/4001/p2p/{relay}/p2p-circuit"));
    let (id, _rx) = b.connect(target);
    let actions = b.router.found(id, vec![circuit.clone()], &b.view, b.at(0));
    let asked: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::AskRelay {
                relay, keep, addrs, ..
            } => Some((*relay, *keep, addrs.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        asked,
        vec![(relay, false, vec![ma("/ip4/192.0.2.5/tcp/4001")])]
    );
    assert!(dials(&actions).is_empty(), "no dial before the answer");
    let actions = b.router.grant_answered(relay);
    assert_eq!(dials(&actions).len(), 1);

    // With a grant in hand the relay stage dials at once.
    let mut b = Bench::new();
    b.view.circuit_grants.insert((relay, target));
    let (id, _rx) = b.connect(target);
    let actions = b.router.found(id, vec![circuit], &b.view, b.at(0));
    assert_eq!(dials(&actions).len(), 1);
}

/// Two relays asked for a grant, one never answers: the circuit through the one that
/// answered is dialed at once, and its failure does not end the stage while the other
/// may still answer. Waiting for every relay, a silent one (any session peer offering
/// `core/relay`) stalled the stage until its time ran out.
#[test]
fn a_silent_relay_holds_up_only_its_own_circuits() {
    let mut b = Bench::new();
    let target = NodeKeypair::generate().node_id();
    let good = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let silent = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let via = |r: PeerId, ip: &str| ma(&format!("/ip4/{ip}/tcp/4001/p2p/{r}/p2p-circuit"));
    let (id, mut rx) = b.connect(target);
    let circuits = vec![via(silent, "192.0.2.6"), via(good, "192.0.2.5")];
    let actions = b.router.found(id, circuits, &b.view, b.at(0));
    assert!(dials(&actions).is_empty(), "no dial before an answer");
    let actions = b.router.grant_answered(good);
    let d = dials(&actions);
    assert_eq!(d.len(), 1, "{actions:?}");
    let cid = d[0].connection_id();
    assert!(settle(b.router.dial_failed(cid, "refused", &b.view, b.at(1))).is_empty());
    assert!(
        rx.try_recv().is_err(),
        "the stage ended while a relay may answer"
    );
}

#[test]
fn a_stage_that_runs_out_of_time_gives_way_to_the_next() {
    let mut b = Bench::new();
    let target = NodeKeypair::generate().node_id();
    let (id, mut rx) = b.connect(target);
    b.router
        .found(id, vec![ma("/ip4/192.0.2.7/tcp/4001")], &b.view, b.at(0));
    assert!(b.router.tick(&b.view, b.at(4)).is_empty());
    // Past the direct budget (5 s): no host, no relay: the end.
    settle(b.router.tick(&b.view, b.at(5)));
    let text = rx.try_recv().unwrap().unwrap_err().to_string();
    assert!(text.contains("direct: no connection in time"), "{text}");
}

#[test]
fn an_incoming_connect_request_is_answered_and_its_quic_candidates_punched() {
    let mut b = Bench::new();
    let requester = NodeKeypair::generate();
    let rpeer = requester.node_id().to_peer_id().unwrap();
    let host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    b.view.listen = vec![ma("/ip4/192.0.2.50/udp/4001/quic-v1")];
    let req = b.frame_from(
        &requester,
        host,
        "connect_request",
        "corr:1",
        json!({"purpose": "connect"}),
    );
    // The requester is a member of a swarm we are in: we punch for it.
    let known = requester.node_id();
    let member = move |n: &NodeId| *n == known;
    let actions = b.router.on_signal(req, &b.view, &member, b.at(0));
    let kinds: Vec<_> = frames(&actions)
        .iter()
        .map(|(k, _, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("connect_accept".into(), Some(host)),
            ("candidate".into(), Some(host))
        ]
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Emit(crate::node::NodeEvent::SignalReceived { .. })
    )));
    // TCP candidates are not dialed in the listener role; QUIC ones are.
    let cands = b.frame_from(
        &requester,
        host,
        "candidate",
        "corr:1",
        json!({"addrs": ["/ip4/198.51.100.3/tcp/4001", "/ip4/198.51.100.3/udp/4001/quic-v1"]}),
    );
    let actions = b.router.on_signal(cands, &b.view, &member, b.at(1));
    let d = dials(&actions);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].get_peer_id(), Some(rpeer));
    // A candidate frame with a newer node's `birthday/mapping` is dialed the same way
    // (an old node also ignores the field).
    let newer = b.frame_from(
        &requester,
        host,
        "candidate",
        "corr:1",
        json!({
            "addrs": ["/ip4/198.51.100.4/udp/4001/quic-v1"],
            "birthday/mapping": "preserving",
        }),
    );
    let actions = b.router.on_signal(newer, &b.view, &member, b.at(1));
    let d = dials(&actions);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].get_peer_id(), Some(rpeer));
    // A birthday step goes to the birthday stage, not to the dialer; with our own
    // mapping unknown it starts nothing.
    let offer = b.frame_from(
        &requester,
        host,
        "candidate",
        "corr:1",
        json!({
            "addrs": ["/ip4/198.51.100.4/udp/4001/quic-v1"],
            "birthday/mapping": "preserving",
            "birthday/token": "0102030405060708",
            "birthday/probe": "198.51.100.4:40001",
        }),
    );
    let actions = b.router.on_signal(offer, &b.view, &member, b.at(1));
    assert!(dials(&actions).is_empty());
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ProbeSockets { .. }))
    );
    // Candidates of a correlation nobody opened are not dialed.
    let stray = b.frame_from(
        &requester,
        host,
        "candidate",
        "corr:other",
        json!({"addrs": ["/ip4/198.51.100.3/udp/4001/quic-v1"]}),
    );
    assert!(dials(&b.router.on_signal(stray, &b.view, &member, b.at(2))).is_empty());
}

#[test]
fn setup_payloads_are_capped_and_need_a_way_to_the_node() {
    let mut b = Bench::new();
    let target = NodeKeypair::generate().node_id();
    let (tx, mut rx) = oneshot::channel();
    let actions = b.router.send_setup(
        target,
        vec![0; MAX_SETUP_BYTES + 1],
        None,
        tx,
        &b.view,
        b.at(0),
    );
    assert!(actions.is_empty());
    assert_eq!(
        rx.try_recv().unwrap().unwrap_err().code(),
        ErrorCode::ProtoInvalid
    );
    let (tx, mut rx) = oneshot::channel();
    b.router
        .send_setup(target, b"x".to_vec(), None, tx, &b.view, b.at(0));
    assert_eq!(
        rx.try_recv().unwrap().unwrap_err().code(),
        ErrorCode::TransportUnavailable
    );
    // Through a session: the request goes out; the payload follows the accept and the
    // answer is the correlation id once it is delivered.
    let target_key = NodeKeypair::generate();
    let target = target_key.node_id();
    let peer = target.to_peer_id().unwrap();
    b.view.session(peer, "/ip4/192.0.2.3/tcp/1", &[]);
    let (tx, mut rx) = oneshot::channel();
    let actions = b.router.send_setup(
        target,
        b"sdp".to_vec(),
        Some("application/sdp".into()),
        tx,
        &b.view,
        b.at(0),
    );
    let (_, corr, via) = frames(&actions)[0];
    assert_eq!(via, None, "direct to a session peer");
    let corr = corr.to_owned();
    let accept = b.frame_from(&target_key, peer, "connect_accept", &corr, json!({}));
    let actions = b.router.on_signal(accept, &b.view, &|_| false, b.at(1));
    let Some(Action::SendFrame { frame, .. }) = actions
        .iter()
        .find(|a| matches!(a, Action::SendFrame { .. }))
    else {
        panic!("{actions:?}")
    };
    assert_eq!(frame.kind(), "setup_payload");
    let fid = frame.frame_id().to_owned();
    let delivered = mesh_signal::Event::Delivered {
        peer,
        frame_id: fid,
    };
    b.router.on_signal(delivered, &b.view, &|_| false, b.at(2));
    assert_eq!(rx.try_recv().unwrap().unwrap(), corr);
    let _ = Map::<String, serde_json::Value>::new();
}

#[test]
fn responder_punches_are_held_to_the_punch_budget() {
    let mut b = Bench::new();
    b.view.listen = vec![ma("/ip4/192.0.2.50/udp/4001/quic-v1")];
    let host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    b.view
        .connected
        .insert(host, vec![ma("/ip4/203.0.113.9/tcp/4001")]);
    // Forty fresh keys, each a "member" (one presence makes one), each asks for a
    // connect through the same host and names 16 QUIC addresses of one victim twice.
    let keys: Vec<NodeKeypair> = (0..40).map(|_| NodeKeypair::generate()).collect();
    let ids: std::collections::HashSet<NodeId> = keys.iter().map(|k| k.node_id()).collect();
    let member = move |n: &NodeId| ids.contains(n);
    let victim: Vec<String> = (0..16)
        .map(|i| format!("/ip4/198.51.100.7/udp/{}/quic-v1", 5000 + i))
        .collect();
    // Each key asks through `host` (`corr` its correlation) and sends `frames` candidate
    // frames naming `addrs`: the addresses dialed in all.
    let mut punch = |prefix: &str, addrs: &[String], frames: usize| {
        let mut dialed = 0;
        for (i, key) in keys.iter().enumerate() {
            let corr = format!("{prefix}:{i}");
            let ask = json!({"purpose": "connect"});
            let req = b.frame_from(key, host, "connect_request", &corr, ask);
            b.router.on_signal(req, &b.view, &member, b.at(0));
            for _ in 0..frames {
                let c = b.frame_from(key, host, "candidate", &corr, json!({ "addrs": addrs }));
                let actions = b.router.on_signal(c, &b.view, &member, b.at(0));
                dialed += dials(&actions)
                    .iter()
                    .map(|d| addresses_in(d))
                    .sum::<usize>();
            }
        }
        dialed
    };
    // 1,280 addresses asked for; one destination network gets its burst.
    let dialed = punch("corr", &victim, 2);
    assert_eq!(dialed, punch_budget::PER_TARGET.burst as usize);
    // Spread over many networks, the host's network gets its own burst and no more.
    let spread: Vec<String> = (0..16)
        .map(|i| format!("/ip4/198.51.{i}.1/udp/443/quic-v1"))
        .collect();
    let spread_dialed = punch("spread", &spread, 1);
    let host_share = punch_budget::PER_DELIVERER.burst as usize;
    assert_eq!(dialed + spread_dialed, host_share);
}
