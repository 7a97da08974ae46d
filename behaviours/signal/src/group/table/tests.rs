use super::*;
use mesh_core::{Artifact, NodeKeypair};

pub(super) fn t0() -> Timestamp {
    Timestamp::parse("2026-11-21T12:00:00Z").unwrap()
}

pub(super) struct Peer {
    pub(super) key: NodeKeypair,
    pub(super) swarms: Groups,
}

impl Peer {
    pub(super) fn new(ttl: i64) -> Peer {
        let key = NodeKeypair::generate();
        let swarms = Groups::new(
            key.node_id(),
            GroupConfig {
                ttl_secs: ttl,
                ..GroupConfig::default()
            },
        );
        Peer { key, swarms }
    }

    pub(super) fn say(
        &mut self,
        swarm: &DiscoveryKey,
        presence: &str,
        now: &Timestamp,
    ) -> SwarmPresence {
        let doc = self
            .swarms
            .presence_doc(swarm, presence, &["/ip4/192.0.2.1/tcp/1".into()], now);
        let p = SwarmPresence::sign(doc, &self.key).unwrap();
        self.swarms.sent(swarm, presence, now);
        p
    }
}

#[test]
fn members_come_in_node_id_text_order_and_are_counted() {
    let k = DiscoveryKey::from_name("order");
    let mut a = Peer::new(60);
    let now = t0();
    assert_eq!(a.swarms.member_count(&k), None);
    a.swarms.join(k).unwrap();
    assert_eq!(a.swarms.member_count(&k), Some(0));
    for _ in 0..40 {
        let mut other = Peer::new(60);
        other.swarms.join(k).unwrap();
        let p = other.say(&k, "join", &now);
        a.swarms.on_presence(&p, &now).unwrap();
    }
    assert_eq!(a.swarms.member_count(&k), Some(40));
    let text: Vec<String> = a
        .swarms
        .members(&k)
        .unwrap()
        .iter()
        .map(|m| m.node.to_string())
        .collect();
    let mut sorted = text.clone();
    sorted.sort();
    assert_eq!(text, sorted);
    assert!(text.iter().all(|t| t.len() == text[0].len()));
}

#[test]
fn answers_to_joins_are_spaced() {
    let k = DiscoveryKey::from_name("gap");
    let mut b = Peer::new(120);
    let now = t0();
    b.swarms.join(k).unwrap();
    b.say(&k, "join", &now);
    let newcomer = |at: &Timestamp| {
        let mut n = Peer::new(120);
        n.swarms.join(k).unwrap();
        n.say(&k, "join", at)
    };
    let announce = vec![Due {
        swarm: k,
        presence: "announce",
    }];
    // The first join is answered at once.
    b.swarms.on_presence(&newcomer(&now), &now).unwrap();
    assert_eq!(b.swarms.tick(&now).1, announce);
    b.say(&k, "announce", &now);
    // The next ones wait for the gap, then share one answer.
    let t1 = now.plus_secs(1);
    b.swarms.on_presence(&newcomer(&t1), &t1).unwrap();
    b.swarms.on_presence(&newcomer(&t1), &t1).unwrap();
    assert_eq!(b.swarms.tick(&t1).1, vec![]);
    let t2 = now.plus_secs(ANSWER_GAP_SECS);
    assert_eq!(b.swarms.tick(&t2).1, announce);
    b.say(&k, "announce", &t2);
    assert_eq!(b.swarms.tick(&t2.plus_secs(5)).1, vec![], "answered");
}

#[test]
fn the_answer_gap_grows_with_the_swarm() {
    assert_eq!(answer_gap_secs(0), ANSWER_GAP_SECS);
    assert_eq!(answer_gap_secs(20), ANSWER_GAP_SECS);
    assert_eq!(answer_gap_secs(51), 3);
    assert_eq!(answer_gap_secs(200), 8);
    assert_eq!(answer_gap_secs(1024), ANSWER_GAP_MAX_SECS);
}

#[test]
fn join_announce_back_leave_and_expiry() {
    let k = DiscoveryKey::from_name("t");
    let (mut a, mut b) = (Peer::new(10), Peer::new(10));
    let now = t0();
    assert!(a.swarms.join(k).unwrap());
    assert!(!a.swarms.join(k).unwrap());
    b.swarms.join(k).unwrap();
    // The join is due until it went out.
    let (_, due) = a.swarms.tick(&now);
    assert_eq!(
        due,
        vec![Due {
            swarm: k,
            presence: "join"
        }]
    );
    let (_, due) = a.swarms.tick(&now);
    assert_eq!(due.len(), 1);
    let join = a.say(&k, "join", &now);
    b.swarms.sent(&k, "join", &now);
    // B learns A and owes an announcement.
    let ch = b.swarms.on_presence(&join, &now).unwrap();
    assert!(matches!(&ch[..], [Change::Joined { member, .. }] if member.node == a.key.node_id()));
    assert_eq!(
        b.swarms.on_presence(&join, &now).unwrap(),
        vec![],
        "duplicate"
    );
    let (_, due) = b.swarms.tick(&now);
    assert_eq!(
        due,
        vec![Due {
            swarm: k,
            presence: "announce"
        }]
    );
    let ann = b.say(&k, "announce", &now);
    assert_eq!(b.swarms.tick(&now).1, vec![], "answered");
    let ch = a.swarms.on_presence(&ann, &now).unwrap();
    assert_eq!(ch.len(), 1);
    // An announcement does not ask for answers.
    assert_eq!(a.swarms.tick(&now).1, vec![]);
    assert_eq!(a.swarms.members(&k).unwrap().len(), 1);
    // Re-announce at half the TTL; members kept while they re-announce.
    let later = now.plus_secs(5);
    assert_eq!(
        a.swarms.tick(&later).1,
        vec![Due {
            swarm: k,
            presence: "announce"
        }]
    );
    let ann2 = b.say(&k, "announce", &later);
    assert_eq!(a.swarms.on_presence(&ann2, &later).unwrap(), vec![]);
    assert_eq!(a.swarms.on_presence(&ann, &later).unwrap(), vec![], "older");
    let (ch, _) = a.swarms.tick(&now.plus_secs(12));
    assert!(ch.is_empty(), "refreshed until 15 s");
    // Silence: expired after its TTL.
    let (ch, _) = a.swarms.tick(&now.plus_secs(15));
    assert_eq!(
        ch,
        vec![Change::Left {
            swarm: k,
            node: b.key.node_id(),
            reason: LeftReason::Expired
        }]
    );
    assert!(a.swarms.members(&k).unwrap().is_empty());
    // Explicit leave.
    let back = b.say(&k, "announce", &now.plus_secs(16));
    a.swarms.on_presence(&back, &now.plus_secs(16)).unwrap();
    let bye = b.say(&k, "leave", &now.plus_secs(17));
    let ch = a.swarms.on_presence(&bye, &now.plus_secs(17)).unwrap();
    assert_eq!(
        ch,
        vec![Change::Left {
            swarm: k,
            node: b.key.node_id(),
            reason: LeftReason::Leave
        }]
    );
    // Own presences and other swarms.
    let mine = a.say(&k, "announce", &now.plus_secs(18));
    assert_eq!(
        a.swarms.on_presence(&mine, &now.plus_secs(18)).unwrap(),
        vec![]
    );
    assert!(a.swarms.leave(&k));
    assert!(!a.swarms.leave(&k));
    assert_eq!(
        a.swarms
            .on_presence(&back, &now.plus_secs(18))
            .unwrap_err()
            .code,
        ErrorCode::ProtoInvalid
    );
}

/// A presence padded past `MAX_PRESENCE_BYTES` (with an unknown field, which a
/// presence may carry and sign) is refused, not kept.
#[test]
fn an_oversized_presence_is_refused() {
    let k1 = DiscoveryKey::from_name("1");
    let now = t0();
    let (mut a, mut b) = (Peer::new(60), Peer::new(60));
    a.swarms.join(k1).unwrap();
    b.swarms.join(k1).unwrap();
    let mut doc = b
        .swarms
        .presence_doc(&k1, "join", &["/ip4/192.0.2.1/tcp/1".into()], &now);
    doc.insert("x-pad".into(), "p".repeat(MAX_PRESENCE_BYTES).into());
    let big = SwarmPresence::sign(doc, &b.key).unwrap();
    let wire = big.to_cbor();
    assert!(wire.len() > MAX_PRESENCE_BYTES);
    let e = a
        .swarms
        .on_signed_presence(&big, Some(&wire), &now, |_| false)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ProtoInvalid, "{e}");
    assert_eq!(a.swarms.members(&k1).unwrap().len(), 0);
    // The same member's ordinary presence is taken.
    let p = b.say(&k1, "announce", &now);
    a.swarms.on_presence(&p, &now).unwrap();
    assert_eq!(a.swarms.members(&k1).unwrap().len(), 1);
}

#[test]
fn limits_hold() {
    let mut a = Peer::new(60);
    a.swarms.config.max_swarms = 2;
    a.swarms.config.max_members = 1;
    let (k1, k2, k3) = (
        DiscoveryKey::from_name("1"),
        DiscoveryKey::from_name("2"),
        DiscoveryKey::from_name("3"),
    );
    a.swarms.join(k1).unwrap();
    a.swarms.join(k2).unwrap();
    assert_eq!(
        a.swarms.join(k3).unwrap_err().code,
        ErrorCode::TransportRejected
    );
    let now = t0();
    let (mut b, mut c) = (Peer::new(60), Peer::new(60));
    b.swarms.join(k1).unwrap();
    c.swarms.join(k1).unwrap();
    let pb = b.say(&k1, "join", &now);
    let pc = c.say(&k1, "join", &now);
    a.swarms.on_presence(&pb, &now).unwrap();
    // B is seen alive: the full table refuses C rather than evict B.
    let b_id = b.key.node_id();
    assert_eq!(
        a.swarms
            .on_presence_alive(&pc, &now, |n| *n == b_id)
            .unwrap_err()
            .code,
        ErrorCode::TransportRejected
    );
    // Sequence numbers grow even within one millisecond.
    let d1 = a.swarms.presence_doc(&k1, "announce", &[], &now);
    let d2 = a.swarms.presence_doc(&k1, "announce", &[], &now);
    assert!(d2["sequence/no"].as_u64() > d1["sequence/no"].as_u64());
}

#[test]
fn a_presence_replayed_after_a_leave_is_refused_until_it_expires() {
    let k = DiscoveryKey::from_name("replay");
    let (mut a, mut b) = (Peer::new(60), Peer::new(60));
    let now = t0();
    a.swarms.join(k).unwrap();
    b.swarms.join(k).unwrap();
    let join = b.say(&k, "join", &now);
    assert_eq!(a.swarms.on_presence(&join, &now).unwrap().len(), 1);
    let bye = b.say(&k, "leave", &now.plus_secs(5));
    assert_eq!(
        a.swarms.on_presence(&bye, &now.plus_secs(5)).unwrap().len(),
        1
    );
    // Anyone may replay B's join (it is signed and not yet expired): it changes
    // nothing, now or at any time before it expires, ticks or not.
    for at in [6, 30, 59] {
        let t = now.plus_secs(at);
        a.swarms.tick(&t);
        assert_eq!(
            a.swarms.on_presence(&join, &t).unwrap(),
            vec![],
            "at {at} s"
        );
        assert_eq!(a.swarms.member_count(&k), Some(0));
    }
    // B's own later announcement brings it back.
    let back = b.say(&k, "announce", &now.plus_secs(40));
    assert_eq!(
        a.swarms
            .on_presence(&back, &now.plus_secs(40))
            .unwrap()
            .len(),
        1
    );
    // A leave before any presence was seen is remembered too.
    let mut c = Peer::new(60);
    c.swarms.join(k).unwrap();
    let cjoin = c.say(&k, "join", &now);
    let cbye = c.say(&k, "leave", &now.plus_secs(1));
    assert_eq!(
        a.swarms.on_presence(&cbye, &now.plus_secs(1)).unwrap(),
        vec![]
    );
    assert_eq!(
        a.swarms.on_presence(&cjoin, &now.plus_secs(2)).unwrap(),
        vec![]
    );
    assert_eq!(a.swarms.member_count(&k), Some(1));
}

#[test]
fn a_members_leave_is_served_while_its_last_presence_may_be_held() {
    let k = DiscoveryKey::from_name("served leaves");
    let (mut a, mut b, mut c) = (Peer::new(60), Peer::new(60), Peer::new(60));
    let now = t0();
    for p in [&mut a, &mut b, &mut c] {
        p.swarms.join(k).unwrap();
    }
    // B was a member (its join expires at 60 s); C's leave came without a presence.
    let join = b.say(&k, "join", &now);
    a.swarms.on_presence(&join, &now).unwrap();
    let bye = b.say(&k, "leave", &now.plus_secs(5));
    a.swarms.on_presence(&bye, &now.plus_secs(5)).unwrap();
    let cbye = c.say(&k, "leave", &now.plus_secs(5));
    a.swarms.on_presence(&cbye, &now.plus_secs(5)).unwrap();
    let served = a.swarms.signed_leaves(&k, &now.plus_secs(6));
    assert_eq!(served.len(), 1, "B's leave only");
    assert_eq!(served[0].0, b.key.node_id());
    let leave = SwarmPresence::from_cbor(&served[0].1).unwrap();
    assert_eq!(
        (leave.presence(), leave.sequence_no()),
        ("leave", bye.sequence_no())
    );
    // A member that missed it takes it from there: B leaves its table.
    let mut d = Peer::new(60);
    d.swarms.join(k).unwrap();
    d.swarms.on_presence(&join, &now).unwrap();
    assert_eq!(d.swarms.member_count(&k), Some(1));
    let changes = d.swarms.on_presence(&leave, &now.plus_secs(6)).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(d.swarms.member_count(&k), Some(0));
    // Once B's join has expired nobody holds it: the leave is no longer served (it is
    // still remembered against replays), ticks or not.
    assert_eq!(a.swarms.signed_leaves(&k, &now.plus_secs(60)), vec![]);
    a.swarms.tick(&now.plus_secs(61));
    assert_eq!(a.swarms.signed_leaves(&k, &now.plus_secs(61)), vec![]);
    assert_eq!(
        a.swarms.on_presence(&join, &now.plus_secs(59)).unwrap(),
        vec![]
    );
    // Not in the swarm: nothing.
    assert_eq!(
        a.swarms.signed_leaves(&DiscoveryKey::from_name("x"), &now),
        vec![]
    );
}

#[test]
fn a_full_table_evicts_members_not_seen_alive_before_refusing() {
    let k = DiscoveryKey::from_name("full");
    let mut a = Peer::new(60);
    a.swarms.config.max_members = 3;
    a.swarms.join(k).unwrap();
    let now = t0();
    let mut others: Vec<Peer> = (0..5).map(|_| Peer::new(60)).collect();
    let mut say = |i: usize, at: i64| {
        others[i].swarms.join(k).unwrap_or(false);
        others[i].say(&k, "join", &now.plus_secs(at))
    };
    let p: Vec<SwarmPresence> = (0..5).map(|i| say(i, i as i64)).collect();
    let ids: Vec<NodeId> = others.iter().map(|o| o.key.node_id()).collect();
    // Members 0 and 1 are connected (seen alive); 2 is not.
    let alive = |n: &NodeId| *n == ids[0] || *n == ids[1];
    for (i, pi) in p.iter().enumerate().take(3) {
        a.swarms
            .on_presence_alive(pi, &now.plus_secs(i as i64), alive)
            .unwrap();
    }
    // Full: the newcomer takes the place of 2, the one not seen alive.
    let ch = a
        .swarms
        .on_presence_alive(&p[3], &now.plus_secs(3), alive)
        .unwrap();
    assert_eq!(
        ch[0],
        Change::Left {
            swarm: k,
            node: ids[2],
            reason: LeftReason::Evicted
        }
    );
    assert!(matches!(&ch[1], Change::Joined { member, .. } if member.node == ids[3]));
    // Now 3 is the only one not seen alive: the next newcomer evicts it…
    let ch = a
        .swarms
        .on_presence_alive(&p[4], &now.plus_secs(4), alive)
        .unwrap();
    assert!(matches!(&ch[0], Change::Left { node, .. } if *node == ids[3]));
    // …and with every member alive, a newcomer is refused.
    let all = |_: &NodeId| true;
    let e = a
        .swarms
        .on_presence_alive(&p[2], &now.plus_secs(5), all)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::TransportRejected);
    // Expired members go first, alive or not.
    let late = now.plus_secs(61);
    let mut fresh = Peer::new(60);
    fresh.swarms.join(k).unwrap();
    let fp = fresh.say(&k, "join", &late);
    let ch = a.swarms.on_presence_alive(&fp, &late, all).unwrap();
    assert!(ch.iter().any(|c| matches!(
        c,
        Change::Left {
            reason: LeftReason::Expired,
            ..
        }
    )));
    // 0 and 1 expired at 60 and 61 s; 4 (until 64 s) stays beside the newcomer.
    assert_eq!(a.swarms.member_count(&k), Some(2));
}

#[test]
fn a_full_table_takes_a_newcomer_in_place_of_a_member_not_seen_alive() {
    let k = DiscoveryKey::from_name("flood");
    let mut a = Peer::new(60);
    a.swarms.config.max_members = 2;
    a.swarms.join(k).unwrap();
    let now = t0();
    // Two members nobody can see alive (say, presences of throwaway keys)…
    for _ in 0..2 {
        let mut junk = Peer::new(60);
        junk.swarms.join(k).unwrap();
        let p = junk.say(&k, "join", &now);
        a.swarms.on_presence(&p, &now).unwrap();
    }
    // …do not lock the next member out.
    let mut real = Peer::new(60);
    real.swarms.join(k).unwrap();
    let p = real.say(&k, "join", &now.plus_secs(1));
    let changes = a.swarms.on_presence(&p, &now.plus_secs(1)).unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    let members = a.swarms.members(&k).unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().any(|m| m.node == real.key.node_id()));
}

#[test]
fn settled_members_do_not_answer_joins_that_fetch_the_table() {
    let k = DiscoveryKey::from_name("fetching");
    let mut a = Peer::new(120);
    a.swarms.join(k).unwrap();
    let now = t0();
    a.say(&k, "join", &now);
    let join = |table: bool, at: &Timestamp| {
        let mut b = Peer::new(120);
        b.swarms.join(k).unwrap();
        let mut doc = b
            .swarms
            .presence_doc(&k, "join", &["/ip4/192.0.2.1/tcp/1".into()], at);
        if table {
            doc.insert(TABLE_FETCH_FIELD.into(), Value::Bool(true));
        }
        let p = SwarmPresence::sign(doc, &b.key).unwrap();
        assert_eq!(fetches_table(&p), table);
        p
    };
    let due =
        |a: &mut Peer, at: &Timestamp| a.swarms.tick(at).1.iter().any(|d| d.presence == "announce");
    // Not settled yet (joined 1 s ago): answers a fetching join all the same.
    let at = now.plus_secs(1);
    a.swarms.on_presence(&join(true, &at), &at).unwrap();
    assert!(due(&mut a, &at));
    a.swarms.sent(&k, "announce", &at);
    // Settled: a fetching join gets no answer, a plain one does.
    let at = now.plus_secs(SETTLED_SECS + 5);
    a.swarms.on_presence(&join(true, &at), &at).unwrap();
    assert!(!due(&mut a, &at));
    a.swarms.on_presence(&join(false, &at), &at).unwrap();
    assert!(due(&mut a, &at));
    // The table holds the members' signed presences and our own, by node id.
    assert!(a.swarms.signed_table(&k, &at).unwrap().len() == 3);
    let own = a.say(&k, "announce", &at);
    a.swarms
        .set_own(&k, own.to_cbor().into(), own.expires_at().clone());
    let t = a.swarms.signed_table(&k, &at).unwrap();
    assert_eq!(t.len(), 4);
    assert!(t.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(
        t.iter()
            .any(|(n, b)| *n == a.key.node_id() && **b == own.to_cbor()[..])
    );
    // Expired entries are left out.
    assert!(
        a.swarms
            .signed_table(&k, &at.plus_secs(200))
            .unwrap()
            .is_empty()
    );
    assert!(
        a.swarms
            .signed_table(&DiscoveryKey::from_name("x"), &at)
            .is_none()
    );
}

#[test]
fn rejoin_sends_the_join_again() {
    let k = DiscoveryKey::from_name("rejoin");
    let mut a = Peer::new(120);
    a.swarms.join(k).unwrap();
    let now = t0();
    a.say(&k, "join", &now);
    assert!(a.swarms.tick(&now).1.is_empty());
    a.swarms.rejoin(&k);
    let due = a.swarms.tick(&now).1;
    assert_eq!(due[0].presence, "join");
}

#[test]
fn the_presence_ttl_grows_with_the_swarm_up_to_a_cap() {
    assert_eq!(presence_ttl_secs(120, 0), 120);
    assert_eq!(presence_ttl_secs(120, TTL_STEP_MEMBERS), 120);
    assert_eq!(presence_ttl_secs(120, TTL_STEP_MEMBERS + 1), 240);
    assert_eq!(presence_ttl_secs(120, 199), 480);
    assert_eq!(presence_ttl_secs(120, 1024), TTL_GROWN_MAX_SECS);
    // A configured TTL above the cap is kept; the protocol's bounds hold.
    assert_eq!(presence_ttl_secs(1800, 1024), 1800);
    assert_eq!(presence_ttl_secs(5000, 1024), MAX_PRESENCE_TTL_SECS);
    assert_eq!(presence_ttl_secs(1, 0), MIN_PRESENCE_TTL_SECS);
}

#[test]
fn refreshes_come_before_half_the_ttl_spread_over_a_quarter_of_it() {
    let mut seen = std::collections::HashSet::new();
    for seed in 0..1000u64 {
        let r = refresh_after_secs(120, seed);
        assert!((45..=60).contains(&r), "{r}");
        seen.insert(r);
    }
    // The jitter takes every second of the range, not a few values.
    assert_eq!(seen.len(), 16);
    assert_eq!(refresh_after_secs(6, 7), 3);
    assert_eq!(refresh_after_secs(2, 7), 1);
}

#[test]
fn a_large_swarm_refreshes_less_often_and_its_presences_last_longer() {
    let k = DiscoveryKey::from_name("large");
    let now = t0();
    let refreshed_within = |others: usize| {
        let mut a = Peer::new(120);
        a.swarms.join(k).unwrap();
        for _ in 0..others {
            let mut o = Peer::new(120);
            o.swarms.join(k).unwrap();
            let p = o.say(&k, "join", &now);
            a.swarms.on_presence(&p, &now).unwrap();
        }
        let own = a.say(&k, "join", &now);
        let ttl = own.expires_at().secs_since(&now);
        let due = |a: &mut Peer, s: i64| {
            a.swarms
                .tick(&now.plus_secs(s))
                .1
                .iter()
                .any(|d| d.presence == "announce")
        };
        let first = (1..=ttl).find(|s| due(&mut a, *s));
        (ttl, first)
    };
    let (ttl, first) = refreshed_within(10);
    assert_eq!(ttl, 120);
    assert!(first.is_some_and(|s| (45..=60).contains(&s)), "{first:?}");
    let (ttl, first) = refreshed_within(120);
    assert_eq!(ttl, 360);
    assert!(first.is_some_and(|s| (135..=180).contains(&s)), "{first:?}");
}

#[test]
fn one_lost_presence_never_lets_a_member_expire_while_the_ttl_grows() {
    // A member joins knowing nobody (its join lasts the configured TTL), then learns a
    // large swarm: its presences last longer, but the refresh after the join keeps to
    // the join's TTL, so any one presence may be lost without a gap.
    let k = DiscoveryKey::from_name("growing");
    let t = t0();
    let mut a = Peer::new(120);
    a.swarms.join(k).unwrap();
    let mut sent = vec![(t.clone(), a.say(&k, "join", &t))];
    // (The others' presences outlast the test.)
    for _ in 0..120 {
        let mut o = Peer::new(3600);
        o.swarms.join(k).unwrap();
        let p = o.say(&k, "join", &t);
        a.swarms.on_presence(&p, &t).unwrap();
    }
    for s in 1..=1500 {
        let at = t.plus_secs(s);
        if a.swarms
            .tick(&at)
            .1
            .iter()
            .any(|d| d.presence == "announce")
        {
            sent.push((at.clone(), a.say(&k, "announce", &at)));
        }
    }
    assert!(sent.len() >= 6, "{}", sent.len());
    assert_eq!(sent[0].1.expires_at().secs_since(&sent[0].0), 120);
    assert_eq!(sent[1].1.expires_at().secs_since(&sent[1].0), 360);
    // Without presence i, presence i-1 still holds when presence i+1 comes.
    for w in sent.windows(3) {
        assert!(
            w[0].1.expires_at() > &w[2].0,
            "{} then {}",
            w[0].0.as_str(),
            w[2].0.as_str()
        );
    }
    // And the growth pays: after the first refresh they come at most every 180 s.
    let gaps: Vec<i64> = sent
        .windows(2)
        .map(|w| w[1].0.secs_since(&w[0].0))
        .collect();
    assert!(
        gaps[2..].iter().all(|g| (135..=180).contains(g)),
        "{gaps:?}"
    );
}
