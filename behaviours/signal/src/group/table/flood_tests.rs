//! The table against floods of what anyone may sign: long-lived presences of fresh keys,
//! leaves of strangers, and a presence that came in a table page.

use super::tests::{Peer, t0};
use super::*;

#[test]
fn a_flood_of_long_lived_presences_does_not_push_out_members_known_before() {
    let k = DiscoveryKey::from_name("long-lived flood");
    let mut a = Peer::new(120);
    a.swarms.config.max_members = 4;
    a.swarms.join(k).unwrap();
    let now = t0();
    // Two honest members (TTL 120 s), neither connected to A.
    let mut honest: Vec<Peer> = (0..2).map(|_| Peer::new(120)).collect();
    for h in &mut honest {
        h.swarms.join(k).unwrap();
        let p = h.say(&k, "join", &now);
        a.swarms.on_presence(&p, &now).unwrap();
    }
    // Twenty fresh keys announce themselves for an hour each (the longest TTL).
    let mut evicted = Vec::new();
    for i in 0..20 {
        let t = now.plus_secs(1 + i);
        let mut junk = Peer::new(3600);
        junk.swarms.join(k).unwrap();
        let p = junk.say(&k, "join", &t);
        for c in a.swarms.on_presence(&p, &t).unwrap() {
            if let Change::Left { node, .. } = c {
                evicted.push(node);
            }
        }
    }
    let members = a.swarms.members(&k).unwrap();
    assert_eq!(members.len(), 4);
    for h in &honest {
        let id = h.key.node_id();
        assert!(
            members.iter().any(|m| m.node == id),
            "an honest member was pushed out"
        );
        assert!(!evicted.contains(&id));
    }
    // A refresh keeps a member's place: it is not a new arrival.
    let t = now.plus_secs(30);
    let p = honest[0].say(&k, "announce", &t);
    a.swarms.on_presence(&p, &t).unwrap();
    let mut junk = Peer::new(3600);
    junk.swarms.join(k).unwrap();
    let p = junk.say(&k, "join", &t);
    a.swarms.on_presence(&p, &t).unwrap();
    let members = a.swarms.members(&k).unwrap();
    assert!(members.iter().any(|m| m.node == honest[0].key.node_id()));
}

#[test]
fn a_flood_of_leaves_from_strangers_keeps_the_leaves_of_members() {
    let k = DiscoveryKey::from_name("leave flood");
    let mut a = Peer::new(60);
    a.swarms.config.max_members = 8;
    a.swarms.join(k).unwrap();
    let now = t0();
    let mut b = Peer::new(60);
    b.swarms.join(k).unwrap();
    let join = b.say(&k, "join", &now);
    a.swarms.on_presence(&join, &now).unwrap();
    let bye = b.say(&k, "leave", &now.plus_secs(1));
    a.swarms.on_presence(&bye, &now.plus_secs(1)).unwrap();
    // 20 fresh keys that were never members sign a leave each, and 20 more a join and
    // then a leave (members, when their leave comes, but later than B).
    for i in 0..40 {
        let t = now.plus_secs(2 + i);
        let mut s = Peer::new(60);
        s.swarms.join(k).unwrap();
        if i >= 20 {
            let p = s.say(&k, "join", &t);
            a.swarms.on_presence(&p, &t).unwrap();
        }
        let p = s.say(&k, "leave", &t);
        a.swarms.on_presence(&p, &t).unwrap();
    }
    // B's join, replayed while it is still valid, does not bring B back.
    let t = now.plus_secs(50);
    assert_eq!(a.swarms.on_presence(&join, &t).unwrap(), vec![]);
    assert_eq!(a.swarms.member_count(&k), Some(0));
}

#[test]
fn a_newcomer_is_not_simply_pushed_out_by_the_next_fresh_key() {
    let k = DiscoveryKey::from_name("newcomer");
    let now = t0();
    let mut stayed = 0;
    for _ in 0..200 {
        let mut a = Peer::new(120);
        a.swarms.config.max_members = 4;
        a.swarms.join(k).unwrap();
        let arrive = |a: &mut Peer| {
            let mut p = Peer::new(3600);
            p.swarms.join(k).unwrap();
            let presence = p.say(&k, "join", &now);
            a.swarms.on_presence(&presence, &now).unwrap();
            p.key.node_id()
        };
        for _ in 0..4 {
            arrive(&mut a);
        }
        let newcomer = arrive(&mut a);
        arrive(&mut a);
        let members = a.swarms.members(&k).unwrap();
        stayed += usize::from(members.iter().any(|m| m.node == newcomer));
    }
    // Drawn among the later half (two of four), the newcomer stays about half the
    // time; when the latest arrival always went, never.
    assert!(
        (50..=150).contains(&stayed),
        "the newcomer stayed {stayed} times of 200"
    );
}

#[test]
fn a_presence_from_a_table_page_is_forwarded_once_when_it_comes_by_gossip() {
    let k = DiscoveryKey::from_name("handover");
    let (mut a, mut b) = (Peer::new(60), Peer::new(60));
    let now = t0();
    a.swarms.join(k).unwrap();
    b.swarms.join(k).unwrap();
    let p = b.say(&k, "join", &now);
    assert_eq!(a.swarms.on_presence(&p, &now).unwrap().len(), 1);
    a.swarms.came_in_table(&p);
    // It changes nothing now, but its first gossip copy is still passed on…
    assert!(a.swarms.is_stale(&p, &now));
    assert!(a.swarms.first_gossip_of_table_entry(&p));
    // …and only the first.
    assert!(!a.swarms.first_gossip_of_table_entry(&p));
    // A presence that came by gossip first is not.
    let q = b.say(&k, "announce", &now.plus_secs(1));
    a.swarms.on_presence(&q, &now.plus_secs(1)).unwrap();
    assert!(!a.swarms.first_gossip_of_table_entry(&q));
}

#[test]
fn a_settled_member_answers_plain_joins_at_most_once_per_their_gap() {
    let k = DiscoveryKey::from_name("plain joins");
    let mut a = Peer::new(120);
    a.swarms.join(k).unwrap();
    let now = t0();
    a.say(&k, "join", &now);
    for _ in 0..40 {
        let mut m = Peer::new(120);
        m.swarms.join(k).unwrap();
        let p = m.say(&k, "announce", &now);
        a.swarms.on_presence(&p, &now).unwrap();
    }
    let announce =
        |a: &mut Peer, at: &Timestamp| a.swarms.tick(at).1.iter().any(|d| d.presence == "announce");
    let plain_join = |a: &mut Peer, at: &Timestamp| {
        let mut x = Peer::new(120);
        x.swarms.join(k).unwrap();
        let p = x.say(&k, "join", at);
        a.swarms.on_presence(&p, at).unwrap();
    };
    // Settled: a plain join is answered at once…
    let t = now.plus_secs(20);
    plain_join(&mut a, &t);
    assert!(announce(&mut a, &t));
    a.say(&k, "announce", &t);
    // …and the next one not before the gap (41 members: 11 s; 2 s before).
    assert_eq!(plain_answer_gap_secs(41), 11);
    plain_join(&mut a, &now.plus_secs(23));
    for at in 23..31 {
        assert!(!announce(&mut a, &now.plus_secs(at)), "answered at {at} s");
    }
    assert!(announce(&mut a, &now.plus_secs(31)));
}
