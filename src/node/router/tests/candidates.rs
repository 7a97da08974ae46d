//! Candidates and setup payloads: what a route sends, what it dials, what is capped.

use super::*;

/// The candidates we send in a route's signaling, in order.
fn our_candidates_sent(b: &mut Bench) -> Vec<String> {
    let target_key = NodeKeypair::generate();
    let target = target_key.node_id();
    let host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    b.view
        .session(host, "/ip4/192.0.2.1/tcp/1", &["core/signaling"]);
    let (id, _rx) = b.connect(target);
    let actions = b
        .router
        .found(id, vec![ma("/ip4/192.0.2.7/tcp/4001")], &b.view, b.at(0));
    let cid = dials(&actions)[0].connection_id();
    let actions = b.router.dial_failed(cid, "refused", &b.view, b.at(1));
    let corr = frames(&actions)[0].1.to_owned();
    let accept = b.frame_from(&target_key, host, "connect_accept", &corr, json!({}));
    let actions = b.router.on_signal(accept, &b.view, &|_| false, b.at(2));
    let frame = actions
        .iter()
        .find_map(|a| match a {
            Action::SendFrame { frame, .. } if frame.kind() == "candidate" => Some(frame),
            _ => None,
        })
        .expect("a candidate frame");
    frame.payload()["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn one_observer_cannot_rank_its_claim_above_our_listen_addresses() {
    let mut b = Bench::new();
    b.view.listen = vec![ma("/ip4/192.0.2.50/udp/4001/quic-v1")];
    let claim = ma("/ip4/198.51.100.66/udp/4001/quic-v1");
    // One host, many keys and connections, all claiming the same address.
    for port in 0..20 {
        let remote = ma(&format!("/ip4/203.0.113.9/udp/{}/quic-v1", 1000 + port));
        b.router.observed(&remote, &claim, &b.view, b.at(0));
    }
    // Implausible claims (a LAN address from an Internet observer, a transport we do
    // not listen on, a relayed observer) are not offered at all.
    b.router.observed(
        &ma("/ip4/203.0.113.10/tcp/5"),
        &ma("/ip4/10.0.0.5/udp/4001/quic-v1"),
        &b.view,
        b.at(0),
    );
    b.router.observed(
        &ma("/ip4/203.0.113.11/tcp/5"),
        &ma("/ip4/198.51.100.67/udp/53/quic"),
        &b.view,
        b.at(0),
    );
    assert_eq!(
        our_candidates_sent(&mut b),
        vec![
            "/ip4/192.0.2.50/udp/4001/quic-v1".to_owned(),
            claim.to_string()
        ],
        "the listen address first, the lone claim after it"
    );
    // A second, unrelated observer agrees: the address is confirmed and ranks first.
    b.router.observed(
        &ma("/ip4/192.0.2.200/udp/9/quic-v1"),
        &claim,
        &b.view,
        b.at(1),
    );
    assert_eq!(
        our_candidates_sent(&mut b),
        vec![
            claim.to_string(),
            "/ip4/192.0.2.50/udp/4001/quic-v1".to_owned()
        ]
    );
}

#[test]
fn waiting_setup_payloads_are_capped_and_expire() {
    use super::super::signaling::{MAX_SETUPS, SETUP_FOR};
    let mut b = Bench::new();
    // A session peer that accepts nothing: every payload waits for its accept.
    let target = NodeKeypair::generate().node_id();
    let peer = target.to_peer_id().unwrap();
    b.view.session(peer, "/ip4/192.0.2.3/tcp/1", &[]);
    let mut waiting = Vec::new();
    for _ in 0..MAX_SETUPS {
        let (tx, rx) = oneshot::channel();
        let actions = b
            .router
            .send_setup(target, b"x".to_vec(), None, tx, &b.view, b.at(0));
        assert_eq!(frames(&actions).len(), 1);
        waiting.push(rx);
    }
    // One more is refused at once, with a code, and sends nothing.
    let (tx, mut rx) = oneshot::channel();
    let actions = b
        .router
        .send_setup(target, b"x".to_vec(), None, tx, &b.view, b.at(0));
    assert!(actions.is_empty());
    assert_eq!(
        rx.try_recv().unwrap().unwrap_err().code(),
        ErrorCode::TransportRejected
    );
    // Before their time they wait; after it they are answered with a timeout and
    // forgotten, which makes room again.
    b.router.tick(&b.view, b.at(SETUP_FOR.as_secs() - 1));
    assert!(waiting[0].try_recv().is_err());
    b.router.tick(&b.view, b.at(SETUP_FOR.as_secs()));
    for mut rx in waiting {
        assert!(matches!(
            rx.try_recv().unwrap().unwrap_err(),
            HandleError::TimedOut { .. }
        ));
    }
    let (tx, _rx) = oneshot::channel();
    let actions = b.router.send_setup(
        target,
        b"x".to_vec(),
        None,
        tx,
        &b.view,
        b.at(SETUP_FOR.as_secs()),
    );
    assert_eq!(frames(&actions).len(), 1);
}

/// The candidates a stranger sends with its `connect_request` (any key can sign one)
/// make no dial, however many frames it sends; the request is still answered.
#[test]
fn a_strangers_candidates_are_never_dialed() {
    let mut b = Bench::new();
    let stranger = NodeKeypair::generate();
    let host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    b.view.listen = vec![ma("/ip4/192.0.2.50/udp/4001/quic-v1")];
    let req = b.frame_from(
        &stranger,
        host,
        "connect_request",
        "corr:s",
        json!({"purpose": "connect"}),
    );
    let actions = b.router.on_signal(req, &b.view, &|_| false, b.at(0));
    assert_eq!(frames(&actions)[0].0, "connect_accept");
    // Its correlation ends once answered: it holds no place of its host's quota.
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::CorrelationDone { correlation, .. } if correlation == "corr:s")
        ),
        "{actions:?}"
    );
    for i in 0..60 {
        let cands = b.frame_from(
            &stranger,
            host,
            "candidate",
            "corr:s",
            json!({"addrs": [format!("/ip4/198.51.100.{i}/udp/53/quic-v1")]}),
        );
        let actions = b.router.on_signal(cands, &b.view, &|_| false, b.at(1));
        assert!(dials(&actions).is_empty(), "frame {i}: {actions:?}");
    }
}

/// Even for a known requester, and in our own routes: at most two candidate frames
/// per correlation are dialed, and addresses outside the other side's plausible scope
/// (another LAN, loopback) are dropped.
#[test]
fn candidates_are_bounded_per_correlation_and_kept_in_scope() {
    use super::super::policy::MAX_CANDIDATE_FRAMES;
    let mut b = Bench::new();
    let requester = NodeKeypair::generate();
    let known = requester.node_id();
    let member = move |n: &NodeId| *n == known;
    let host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    b.view
        .session(host, "/ip4/203.0.113.1/tcp/4001", &["core/signaling"]);
    b.view.listen = vec![
        ma("/ip4/192.168.1.4/udp/4001/quic-v1"),
        ma("/ip4/127.0.0.1/udp/4001/quic-v1"),
    ];
    let req = b.frame_from(
        &requester,
        host,
        "connect_request",
        "corr:k",
        json!({"purpose": "connect"}),
    );
    b.router.on_signal(req, &b.view, &member, b.at(0));
    // Whether one frame of `addr` in a fresh correlation is dialed.
    let mut n = 0;
    let mut dials_to = |b: &mut Bench, addr: &str| {
        n += 1;
        let corr = format!("corr:scope{n}");
        let req = b.frame_from(
            &requester,
            host,
            "connect_request",
            &corr,
            json!({"purpose": "connect"}),
        );
        b.router.on_signal(req, &b.view, &member, b.at(0));
        let f = b.frame_from(
            &requester,
            host,
            "candidate",
            &corr,
            json!({"addrs": [addr]}),
        );
        !dials(&b.router.on_signal(f, &b.view, &member, b.at(1))).is_empty()
    };
    // Out of scope: another private network, loopback (the host is not on loopback).
    assert!(!dials_to(&mut b, "/ip4/10.0.0.5/udp/53/quic-v1"));
    assert!(!dials_to(&mut b, "/ip4/127.0.0.1/udp/53/quic-v1"));
    // Our own LAN, and public addresses.
    assert!(dials_to(&mut b, "/ip4/192.168.1.77/udp/4001/quic-v1"));
    assert!(dials_to(&mut b, "/ip4/198.51.100.3/udp/4001/quic-v1"));
    // One correlation: at most two frames dialed.
    let first = b.frame_from(
        &requester,
        host,
        "candidate",
        "corr:k",
        json!({"addrs": ["/ip4/198.51.100.9/udp/4001/quic-v1"]}),
    );
    assert_eq!(
        dials(&b.router.on_signal(first, &b.view, &member, b.at(1))).len(),
        1
    );
    let mut dialed = 1;
    for i in 0..10 {
        let f = b.frame_from(
            &requester,
            host,
            "candidate",
            "corr:k",
            json!({"addrs": [format!("/ip4/198.51.100.{}/udp/4001/quic-v1", 10 + i)]}),
        );
        if !dials(&b.router.on_signal(f, &b.view, &member, b.at(2))).is_empty() {
            dialed += 1;
        }
    }
    assert_eq!(dialed, MAX_CANDIDATE_FRAMES);

    // Our own route: the target's out-of-scope candidates are dropped too, and its
    // frames beyond the bound are not dialed.
    let target_key = NodeKeypair::generate();
    let target = target_key.node_id();
    let (id, _rx) = b.connect(target);
    let actions = b.router.found(id, Vec::new(), &b.view, b.at(0));
    let corr = frames(&actions)[0].1.to_owned();
    let accept = b.frame_from(&target_key, host, "connect_accept", &corr, json!({}));
    b.router.on_signal(accept, &b.view, &|_| false, b.at(1));
    let bad = b.frame_from(
        &target_key,
        host,
        "candidate",
        &corr,
        json!({"addrs": ["/ip4/10.0.0.5/udp/53/quic-v1", "/ip4/127.0.0.1/tcp/22"]}),
    );
    assert!(dials(&b.router.on_signal(bad, &b.view, &|_| false, b.at(2))).is_empty());
    let mut dialed = 0;
    for i in 0..10 {
        let f = b.frame_from(
            &target_key,
            host,
            "candidate",
            &corr,
            json!({"addrs": [format!("/ip4/198.51.100.{}/udp/4001/quic-v1", 50 + i)]}),
        );
        if !dials(&b.router.on_signal(f, &b.view, &|_| false, b.at(3))).is_empty() {
            dialed += 1;
        }
    }
    // The out-of-scope frame counted as one of the two.
    assert_eq!(dialed, MAX_CANDIDATE_FRAMES - 1);
}

/// A signaling host on this machine forwards for signers anywhere: a stranger's
/// loopback candidates through it are not dialed by a node with an address beyond
/// loopback (they named the node's own local services), and are for a node on loopback
/// alone (several nodes on one host).
#[test]
fn loopback_candidates_through_a_local_host_only_on_loopback_alone() {
    let dialed = |listen: &[&str]| {
        let mut b = Bench::new();
        let requester = NodeKeypair::generate();
        let known = requester.node_id();
        let member = move |n: &NodeId| *n == known;
        let host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
        b.view
            .session(host, "/ip4/127.0.0.1/tcp/4001", &["core/signaling"]);
        b.view.listen = listen.iter().map(|a| ma(a)).collect();
        let req = b.frame_from(
            &requester,
            host,
            "connect_request",
            "corr:local",
            json!({"purpose": "connect"}),
        );
        b.router.on_signal(req, &b.view, &member, b.at(0));
        let f = b.frame_from(
            &requester,
            host,
            "candidate",
            "corr:local",
            json!({"addrs": ["/ip4/127.0.0.1/udp/8500/quic-v1"]}),
        );
        !dials(&b.router.on_signal(f, &b.view, &member, b.at(1))).is_empty()
    };
    assert!(!dialed(&[
        "/ip4/198.51.100.4/udp/4001/quic-v1",
        "/ip4/127.0.0.1/udp/4001/quic-v1"
    ]));
    assert!(dialed(&["/ip4/127.0.0.1/udp/4001/quic-v1"]));
}

/// Requests from fresh keys (members, as one presence makes any key) through one host
/// fill the table of requests answered; an honest requester's, through another, stays
/// until its candidates come and are dialed.
#[test]
fn a_flood_through_one_link_does_not_push_out_an_honest_request() {
    let mut b = Bench::new();
    let anyone = |_: &NodeId| true;
    let host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    let flood_host = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    b.view
        .session(host, "/ip4/203.0.113.1/tcp/4001", &["core/signaling"]);
    b.view
        .session(flood_host, "/ip4/203.0.113.2/tcp/4001", &["core/signaling"]);
    let honest = NodeKeypair::generate();
    let req = b.frame_from(
        &honest,
        host,
        "connect_request",
        "corr:honest",
        json!({"purpose": "connect"}),
    );
    b.router.on_signal(req, &b.view, &anyone, b.at(0));
    for i in 0..300 {
        let key = NodeKeypair::generate();
        let req = b.frame_from(
            &key,
            flood_host,
            "connect_request",
            &format!("corr:flood{i}"),
            json!({"purpose": "connect"}),
        );
        b.router.on_signal(req, &b.view, &anyone, b.at(1));
    }
    let candidates = b.frame_from(
        &honest,
        host,
        "candidate",
        "corr:honest",
        json!({"addrs": ["/ip4/198.51.100.3/udp/4001/quic-v1"]}),
    );
    let actions = b.router.on_signal(candidates, &b.view, &anyone, b.at(2));
    assert_eq!(dials(&actions).len(), 1, "{actions:?}");
}
