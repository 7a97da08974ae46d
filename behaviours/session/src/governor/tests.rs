//! The governor driven by hand with a fake clock.
use super::*;
use mesh_core::artifact::Artifact;
use mesh_core::{NodeKeypair, PeerStatus, RateLimit};

fn t(s: i64) -> Timestamp {
    Timestamp::parse("2026-03-23T18:00:00Z")
        .unwrap()
        .plus_secs(s)
}

fn nodes(n: usize) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = (0..n).map(|_| NodeKeypair::generate().node_id()).collect();
    v.sort();
    v
}

#[test]
fn promotion_demotion_and_live_limit() {
    let mut g = Governor::new(GovernorConfig::default());
    let n = nodes(6);
    for x in &n {
        g.add_known(*x);
    }
    // Two dials wanted (target 2 hot), no more while they are in flight.
    let dials = g.tick(&t(0));
    assert_eq!(dials.len(), 2);
    assert!(g.tick(&t(0)).is_empty());
    for x in &n[..4] {
        assert!(g.session_established(*x, &t(1)).is_empty());
    }
    assert_eq!(
        (g.count(Temperature::Hot), g.count(Temperature::Warm)),
        (2, 2)
    );
    // A fifth live session is refused.
    assert_eq!(
        g.session_established(n[4], &t(1)),
        vec![Action::Disconnect(n[4])]
    );
    assert_eq!(g.temperature(&n[4]), Some(Temperature::Cold));
    // Keepalive lost demotes a hot peer; a healthy warm one takes its place.
    let hot: Vec<NodeId> = n[..4]
        .iter()
        .copied()
        .filter(|x| g.temperature(x) == Some(Temperature::Hot))
        .collect();
    g.keepalive_lost(&hot[0]);
    assert_eq!(g.temperature(&hot[0]), Some(Temperature::Warm));
    assert_eq!(g.count(Temperature::Hot), 2);
    g.keepalive_restored(&hot[0]);
    // Closing a hot session promotes a warm one.
    g.session_closed(&hot[1], &t(2));
    assert_eq!(g.count(Temperature::Hot), 2);
    assert_eq!(g.temperature(&hot[1]), Some(Temperature::Cold));
}

#[test]
fn room_counts_live_sessions_and_pending_handshakes() {
    let mut g = Governor::new(GovernorConfig {
        max_live: 3,
        ..GovernorConfig::default()
    });
    let n = nodes(4);
    assert!(g.has_room(0));
    assert!(g.has_room(2));
    assert!(
        !g.has_room(3),
        "three handshakes under way fill three slots"
    );
    g.session_established(n[0], &t(0));
    g.session_established(n[1], &t(0));
    assert!(g.has_room(0));
    assert!(!g.has_room(1));
    g.session_established(n[2], &t(0));
    assert!(!g.has_room(0));
    // Cold and blocked peers take no slot.
    g.session_closed(&n[0], &t(1));
    assert!(g.has_room(0));
    g.add_known(n[3]);
    assert!(g.has_room(0));
}

#[test]
fn redials_back_off_exponentially_with_jitter() {
    let c = GovernorConfig::default();
    let n = nodes(2);
    let mut last = 0;
    for attempt in 0..12 {
        let d = backoff(&c, &n[0], attempt);
        let exp = (1i64 << attempt).min(300);
        assert!(
            d >= exp / 2 && d <= exp,
            "attempt {attempt}: {d} not in [{}, {exp}]",
            exp / 2
        );
        if attempt < 8 {
            assert!(d >= last / 2);
        }
        last = d;
    }
    // Jitter differs between nodes for the same attempt (most of the time).
    let differs = (3..10).any(|a| backoff(&c, &n[0], a) != backoff(&c, &n[1], a));
    assert!(differs);

    let mut g = Governor::new(c);
    g.add_known(n[0]);
    assert_eq!(g.tick(&t(0)), vec![Action::Dial(n[0])]);
    g.dial_failed(&n[0], "connection refused", &t(0));
    let first = backoff(&c, &n[0], 0);
    assert!(g.tick(&t(first - 1)).is_empty(), "not before the backoff");
    assert_eq!(g.tick(&t(first)), vec![Action::Dial(n[0])]);
    g.dial_failed(&n[0], "connection refused", &t(first));
    let second = backoff(&c, &n[0], 1);
    assert!(g.tick(&t(first + second - 1)).is_empty());
    assert_eq!(g.tick(&t(first + second)), vec![Action::Dial(n[0])]);
    // Success resets the backoff.
    g.session_established(n[0], &t(first + second));
    g.session_closed(&n[0], &t(100));
    assert_eq!(
        g.tick(&t(100 + backoff(&c, &n[0], 0))),
        vec![Action::Dial(n[0])]
    );
}

#[test]
fn repeated_hard_failures_block_then_unblock() {
    let mut g = Governor::new(GovernorConfig::default());
    let n = nodes(1)[0];
    g.add_known(n);
    g.session_established(n, &t(0));
    assert!(g.hard_failure(n, ErrorCode::SigInvalid, &t(1)).is_empty());
    assert!(g.hard_failure(n, ErrorCode::HsReplay, &t(2)).is_empty());
    assert_eq!(
        g.hard_failure(n, ErrorCode::HsReplay, &t(3)),
        vec![Action::Disconnect(n)]
    );
    assert_eq!(g.temperature(&n), Some(Temperature::Blocked));
    assert_eq!(
        g.allow_handshake(&n, &t(4)),
        Err(ErrorCode::TransportRejected)
    );
    assert_eq!(g.session_established(n, &t(5)), vec![Action::Disconnect(n)]);
    assert!(g.tick(&t(500)).is_empty(), "blocked peers are not dialed");
    let status = g.peer_status(&n, &t(500)).unwrap();
    assert_eq!(status["temperature"], "blocked");
    assert_eq!(status["replay_incidents"], 2);
    assert_eq!(status["blocked_remaining_ms"], 103_000);
    PeerStatus::from_json(status).unwrap();
    // Cooldown over: cold again and dialed.
    assert_eq!(g.tick(&t(603)), vec![Action::Dial(n)]);
    assert_eq!(g.temperature(&n), Some(Temperature::Cold));
    g.allow_handshake(&n, &t(604)).unwrap();
    // Failures outside the window do not add up.
    let mut g = Governor::new(GovernorConfig::default());
    for i in 0..5 {
        assert!(
            g.hard_failure(n, ErrorCode::SigInvalid, &t(i * 700))
                .is_empty()
        );
    }
}

#[test]
fn rate_limits_per_node_id() {
    let mut g = Governor::new(GovernorConfig {
        handshakes: RateLimit::per_minute(2, 1),
        messages: RateLimit::per_minute(3, 1),
        ..GovernorConfig::default()
    });
    let n = nodes(2);
    g.allow_handshake(&n[0], &t(0)).unwrap();
    g.allow_handshake(&n[0], &t(0)).unwrap();
    assert!(g.allow_handshake(&n[0], &t(0)).is_err());
    g.allow_handshake(&n[1], &t(0)).unwrap();
    for _ in 0..3 {
        g.allow_message(&n[0], &t(0)).unwrap();
    }
    assert!(g.allow_message(&n[0], &t(0)).is_err());
    g.allow_message(&n[0], &t(60)).unwrap();
}

#[test]
fn peer_status_records_are_schema_valid() {
    let mut g = Governor::new(GovernorConfig::default());
    let n = nodes(3);
    for x in &n {
        g.add_known(*x);
    }
    g.session_established(n[0], &t(0));
    g.dial_failed(&n[1], "timeout", &t(0));
    for x in &n {
        let s = g.peer_status(x, &t(0)).unwrap();
        PeerStatus::from_json(s.clone()).unwrap_or_else(|e| panic!("{e}: {s}"));
    }
    assert_eq!(
        g.peer_status(&n[0], &t(0)).unwrap()["lifecycle"],
        "connected"
    );
    assert_eq!(
        g.peer_status(&n[1], &t(0)).unwrap()["lifecycle"],
        "cooldown"
    );
    assert_eq!(g.peer_status(&n[2], &t(0)).unwrap()["lifecycle"], "idle");
}

fn junk(g: &mut Governor, n: usize, at: &Timestamp) -> Vec<NodeId> {
    let ids = nodes(n);
    for x in &ids {
        assert!(
            g.hard_failure(*x, ErrorCode::SigUnknownSigner, at)
                .is_empty()
        );
    }
    ids
}

#[test]
fn unknown_peers_are_never_dialed_and_leave_with_their_failures() {
    let mut g = Governor::new(GovernorConfig::default());
    let seed = nodes(1)[0];
    g.add_known(seed);
    let ids = junk(&mut g, 5, &t(0));
    assert_eq!(g.len(), 6);
    // Only the named peer is dialed, whatever the junk entries' timers say.
    assert_eq!(g.tick(&t(0)), vec![Action::Dial(seed)]);
    for x in &ids {
        g.session_closed(x, &t(1));
    }
    assert!(g.tick(&t(400)).is_empty());
    assert!(ids.iter().all(|x| !g.is_kept(x)));
    // Their failures leave the 600 s window: so do they. The seed stays.
    assert_eq!(g.len(), 6);
    g.tick(&t(601));
    assert_eq!(g.len(), 1);
    assert!(g.is_kept(&seed));
    // A blocked unknown peer stays while blocked, then goes.
    let x = nodes(1)[0];
    for i in 0..3 {
        g.hard_failure(x, ErrorCode::HsReplay, &t(700 + i));
    }
    assert_eq!(g.temperature(&x), Some(Temperature::Blocked));
    g.tick(&t(1000));
    assert_eq!(g.temperature(&x), Some(Temperature::Blocked));
    assert!(g.tick(&t(1303)).iter().all(|a| *a != Action::Dial(x)));
    assert_eq!(
        g.temperature(&x),
        None,
        "unblocked, no failures left: forgotten"
    );
}

#[test]
fn the_table_is_capped_and_cold_unknowns_go_first() {
    let mut g = Governor::new(GovernorConfig {
        max_peers: 8,
        ..GovernorConfig::default()
    });
    let named = nodes(2);
    for x in &named {
        g.add_known(*x);
    }
    // Two peers that held a session and left: kept, redialed.
    let past = nodes(2);
    for x in &past {
        g.session_established(*x, &t(0));
        g.session_closed(x, &t(1));
    }
    assert!(past.iter().all(|x| g.is_kept(x)));
    let ids = junk(&mut g, 200, &t(2));
    assert_eq!(g.len(), 8, "held at the cap");
    for x in named.iter().chain(&past) {
        assert!(g.is_kept(x), "a kept peer was evicted by junk");
    }
    // The newest junk entries are the ones held (least recently touched went first).
    assert_eq!(g.temperature(&ids[199]), Some(Temperature::Cold));
    assert_eq!(g.temperature(&ids[0]), None);
    // Dials go to kept peers only (two wanted: target_hot).
    let dials = g.tick(&t(10));
    assert_eq!(dials.len(), 2);
    for a in &dials {
        let Action::Dial(n) = a else { panic!("{a:?}") };
        assert!(g.is_kept(n));
    }
}

#[test]
fn eviction_order_unknown_then_blocked_unknown_then_past_peer() {
    let mut g = Governor::new(GovernorConfig {
        max_peers: 3,
        ..GovernorConfig::default()
    });
    let n = nodes(6);
    let (past, blocked, cold) = (n[0], n[1], n[2]);
    g.session_established(past, &t(0));
    g.session_closed(&past, &t(1));
    for i in 0..3 {
        g.hard_failure(blocked, ErrorCode::SigInvalid, &t(2 + i));
    }
    g.hard_failure(cold, ErrorCode::SigInvalid, &t(5));
    assert_eq!(g.temperature(&blocked), Some(Temperature::Blocked));
    // Full: the cold unknown goes first, although it was touched last.
    g.hard_failure(n[3], ErrorCode::SigInvalid, &t(6));
    assert_eq!(g.temperature(&cold), None);
    assert!(g.temperature(&blocked).is_some() && g.is_kept(&past));
    // Then the unknown newcomer, itself cold and unknown.
    g.hard_failure(n[4], ErrorCode::SigInvalid, &t(7));
    assert_eq!(g.temperature(&n[3]), None);
    assert!(g.temperature(&blocked).is_some() && g.is_kept(&past));
    // A live session needs room: the cold unknown, then the blocked one, then the
    // past peer make way; live peers and named peers never do.
    g.session_established(n[5], &t(8));
    assert_eq!(g.temperature(&n[4]), None);
    assert_eq!(g.len(), 3);
    g.add_known(n[4]);
    assert_eq!(g.temperature(&blocked), None);
    assert!(g.is_kept(&past));
    let more = nodes(1)[0];
    g.add_known(more);
    assert!(!g.is_kept(&past), "the past peer went last");
    assert_eq!(g.len(), 3);
    // Nothing evictable left (two named, one live): a hard failure is not recorded,
    // a named peer still gets in.
    let x = nodes(1)[0];
    g.hard_failure(x, ErrorCode::SigInvalid, &t(9));
    assert_eq!(g.temperature(&x), None);
    g.add_known(x);
    assert!(g.is_kept(&x));
    assert_eq!(g.len(), 4);
}

#[test]
fn past_peers_are_forgotten_after_vain_redials_named_ones_never() {
    let c = GovernorConfig {
        forget_after: 3,
        ..GovernorConfig::default()
    };
    let mut g = Governor::new(c);
    let n = nodes(2);
    let (past, named) = (n[0], n[1]);
    g.add_known(named);
    for x in &n {
        g.session_established(*x, &t(0));
        g.session_closed(x, &t(1));
    }
    let mut now = 1;
    for _ in 0..40 {
        now += 301;
        for a in g.tick(&t(now)) {
            let Action::Dial(x) = a else { continue };
            g.dial_failed(&x, "unreachable", &t(now));
        }
    }
    assert_eq!(g.temperature(&past), None, "forgotten");
    assert!(g.is_kept(&named));
    // A session in time resets the count.
    let mut g = Governor::new(c);
    g.session_established(past, &t(0));
    g.session_closed(&past, &t(1));
    g.dial_failed(&past, "unreachable", &t(2));
    g.session_established(past, &t(3));
    g.session_closed(&past, &t(4));
    g.tick(&t(5));
    assert!(g.is_kept(&past));
}

#[test]
fn named_peers_are_dialed_before_past_ones() {
    let mut g = Governor::new(GovernorConfig {
        target_hot: 1,
        ..GovernorConfig::default()
    });
    let n = nodes(4);
    // Three past peers, due long before the named one is even known.
    for x in &n[..3] {
        g.session_established(*x, &t(0));
        g.session_closed(x, &t(0));
    }
    g.add_known(n[3]);
    assert_eq!(g.tick(&t(100)), vec![Action::Dial(n[3])]);
    g.dial_failed(&n[3], "unreachable", &t(100));
    // While the named one backs off, a past peer is tried.
    let next = g.tick(&t(100));
    assert_eq!(next.len(), 1);
    assert_ne!(next[0], Action::Dial(n[3]));
}

#[test]
fn peer_status_carries_what_the_session_learned() {
    let mut g = Governor::new(GovernorConfig::default());
    let n = nodes(2);
    for x in &n {
        g.add_known(*x);
    }
    g.session_established(n[0], &t(0));
    let facts = PeerFacts {
        display_name: Some("seed-alpha".into()),
        endpoint_url: Some("multiaddr:/ip4/192.0.2.1/tcp/4001/p2p/12D3KooW".into()),
        supported: vec![
            "core/messaging".into(),
            "core/discovery".into(),
            String::new(),
        ],
        missing: vec!["core/relay".into()],
    };
    let s = g.peer_status_with(&n[0], &facts, &t(0)).unwrap();
    PeerStatus::from_json(s.clone()).unwrap_or_else(|e| panic!("{e}: {s}"));
    assert_eq!(s["display_name"], "seed-alpha");
    assert_eq!(
        s["selected_endpoint_url"],
        "multiaddr:/ip4/192.0.2.1/tcp/4001/p2p/12D3KooW"
    );
    // The empty name is left out (the schema wants 1 to 256 characters).
    assert_eq!(
        s["supported_capabilities"],
        json!(["core/messaging", "core/discovery"])
    );
    assert_eq!(s["missing_capabilities"], json!(["core/relay"]));
    assert_eq!(s["capability_missing_count"], 1);
    assert_eq!(s["quality_status"], "capability_limited");
    let plain = g.peer_status(&n[0], &t(0)).unwrap();
    assert_eq!(plain["quality_status"], "healthy");
    assert_eq!(
        s["score"].as_u64().unwrap() + 10,
        plain["score"].as_u64().unwrap()
    );
    // A handshake refused for want of core/messaging: shown until a session.
    g.capabilities_missing(&n[1], &["core/messaging".into()]);
    let s = g.peer_status(&n[1], &t(0)).unwrap();
    PeerStatus::from_json(s.clone()).unwrap_or_else(|e| panic!("{e}: {s}"));
    assert_eq!(s["missing_capabilities"], json!(["core/messaging"]));
    assert_eq!(s["last_failure_reason"], "E_PROTO_CAP_MISSING");
    g.session_established(n[1], &t(1));
    let s = g.peer_status(&n[1], &t(1)).unwrap();
    assert_eq!(s["capability_missing_count"], 0);
    assert_eq!(s["quality_status"], "healthy");
    // Overlong texts are cut to the schema's lengths.
    let long = PeerFacts {
        display_name: Some("x".repeat(1000)),
        ..PeerFacts::default()
    };
    let s = g.peer_status_with(&n[1], &long, &t(1)).unwrap();
    PeerStatus::from_json(s.clone()).unwrap_or_else(|e| panic!("{e}: {s}"));
    assert_eq!(s["display_name"].as_str().unwrap().len(), 256);
}

/// One network churning short sessions under fresh keys makes past peers of a quarter
/// of the table at most: an honest past peer from elsewhere stays kept. Before, the
/// churn evicted it (past peers went least recently touched first, whatever their
/// network).
#[test]
fn one_network_s_past_peers_hold_a_quarter_of_the_table() {
    let mut g = Governor::new(GovernorConfig {
        max_peers: 16,
        ..GovernorConfig::default()
    });
    let honest = nodes(1)[0];
    assert!(g.session_established(honest, &t(0)).is_empty());
    g.session_closed(&honest, &t(1));
    let net = IpKey::of("198.51.100.7".parse().unwrap());
    for (i, stranger) in nodes(40).into_iter().enumerate() {
        let at = t(2 + i as i64);
        assert!(
            g.session_established_from(stranger, Some(net), &at)
                .is_empty()
        );
        g.session_closed(&stranger, &at);
    }
    assert!(g.is_kept(&honest), "the honest past peer was evicted");
    assert!(g.len() <= 1 + 4, "{} entries", g.len());
    // Another network has its own share.
    let other = IpKey::of("203.0.113.9".parse().unwrap());
    for stranger in nodes(3) {
        g.session_established_from(stranger, Some(other), &t(100));
        g.session_closed(&stranger, &t(100));
    }
    assert!(g.is_kept(&honest));
    assert_eq!(g.len(), 1 + 4 + 3);
}
