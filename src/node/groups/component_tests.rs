use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::gossipsub::{self, MessageAcceptance};
use mesh_core::{Artifact, NodeKeypair, SwarmPresence, Timestamp};
use mesh_signal::group::{DiscoveryKey, GroupConfig};

use super::feed::FEED_REDIAL;
use super::{Groups, MEMBER_DIAL_EVERY, MESH_N, MESH_N_HIGH, PROVIDER_RETRY, PROVIDERS_DIALED};
use crate::node::action::Action;
use crate::node::event::NodeEvent;
use crate::node::idle::TOPIC_POOL;
use crate::node::view::Now;
use crate::node::view::fake::FakeView;

/// The neighbour that hands gossip over, in these tests.
pub(super) fn via() -> PeerId {
    static VIA: std::sync::OnceLock<PeerId> = std::sync::OnceLock::new();
    *VIA.get_or_init(PeerId::random)
}

pub(super) fn groups() -> (NodeKeypair, Groups) {
    let key = NodeKeypair::generate();
    (
        key.clone(),
        Groups::new(key, GroupConfig::default(), super::check::CHECK_EVERY),
    )
}

pub(super) fn at(now: &Now, secs: u64) -> Now {
    Now {
        at: now.at + Duration::from_secs(secs),
        ts: now.ts.plus_secs(secs as i64),
    }
}

/// A presence of `key` in group `g`, as gossipsub would carry it.
pub(super) fn presence(key: &NodeKeypair, g: &DiscoveryKey, kind: &str, ts: &Timestamp) -> Vec<u8> {
    presence_at(key, g, kind, &["/ip4/192.0.2.8/udp/4001/quic-v1"], ts, 60)
}

/// [`presence`] naming `addrs`, for `ttl` seconds.
pub(super) fn presence_at(
    key: &NodeKeypair,
    g: &DiscoveryKey,
    kind: &str,
    addrs: &[&str],
    ts: &Timestamp,
    ttl: i64,
) -> Vec<u8> {
    let doc = serde_json::json!({
        "schema/v": 1,
        "message/kind": "swarm-presence.v1",
        "swarm/key": g.to_hex(),
        "node/id": key.node_id().to_string(),
        "presence": kind,
        "sequence/no": 1,
        "addrs": addrs,
        "created-at": ts.as_str(),
        "expires-at": ts.plus_secs(ttl).as_str(),
    });
    let serde_json::Value::Object(doc) = doc else {
        unreachable!("an object")
    };
    SwarmPresence::sign(doc, key).unwrap().to_cbor()
}

/// `key`'s `leave` of group `g` (sequence number 2, after [`presence`]'s 1).
pub(super) fn leave(key: &NodeKeypair, g: &DiscoveryKey, ts: &Timestamp) -> Vec<u8> {
    let doc = serde_json::json!({
        "schema/v": 1,
        "message/kind": "swarm-presence.v1",
        "swarm/key": g.to_hex(),
        "node/id": key.node_id().to_string(),
        "presence": "leave",
        "sequence/no": 2,
        "addrs": [],
        "created-at": ts.as_str(),
        "expires-at": ts.plus_secs(60).as_str(),
    });
    let serde_json::Value::Object(doc) = doc else {
        unreachable!("an object")
    };
    SwarmPresence::sign(doc, key).unwrap().to_cbor()
}

pub(super) fn published(actions: &[Action]) -> Vec<(&'static str, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::PublishPresence { presence, data, .. } => Some((*presence, data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn joining_announces_a_signed_join_and_looks_for_members() {
    let (key, mut g) = groups();
    let view = FakeView::default();
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    assert!(g.join(k).unwrap());
    assert!(!g.join(k).unwrap(), "already in it");
    let actions = g.joined_topic(k, &view, &now);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::FindGroupProviders(x) if *x == k))
    );
    let sent = published(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "join");
    let p = SwarmPresence::verify_cbor(&sent[0].1, &now.ts).unwrap();
    assert_eq!(p.node_id(), key.node_id());
    assert_eq!(p.swarm_key(), k.as_bytes());
    // Until gossipsub takes it the join stays due; once sent, it is not repeated.
    assert_eq!(published(&g.tick(&view, &at(&now, 1)))[0].0, "join");
    g.presence_sent(&k, "join", &view, &now);
    assert!(published(&g.tick(&view, &at(&now, 2))).is_empty());
}

#[test]
fn a_subscription_brings_a_pending_join_and_nothing_else() {
    let (_, mut g) = groups();
    let mut view = FakeView::default();
    let now = Now::current();
    let k = DiscoveryKey::from_name("subscribed");
    g.join(k).unwrap();
    g.joined_topic(k, &view, &now);
    // Until gossipsub takes the join, a peer's subscription brings it again.
    let first = g.subscribed(&k.topic(), &view, &at(&now, 1));
    assert_eq!(published(&first)[0].0, "join");
    // The join went out with no subscriber to ask for the table: the one that
    // subscribes is asked at once.
    g.presence_sent(&k, "join", &view, &at(&now, 1));
    let p = PeerId::random();
    let topic = gossipsub::IdentTopic::new(k.topic()).hash();
    view.subscribers.insert(topic, vec![p]);
    let ask = g.subscribed(&k.topic(), &view, &at(&now, 2));
    assert!(matches!(ask.as_slice(), [Action::AskTable { peer, .. }] if *peer == p));
    // Then the same subscription, again and again, does nothing; a tick would have
    // asked for providers again (the group knows no member).
    let later = at(&now, PROVIDER_RETRY.as_secs() + 1);
    for _ in 0..100 {
        let actions = g.subscribed(&k.topic(), &view, &later);
        assert_eq!(actions.len(), 0, "actions for a repeated subscription");
    }
    let tick = g.tick(&view, &later);
    assert!(
        tick.iter()
            .any(|a| matches!(a, Action::FindGroupProviders(_)))
    );
}

#[test]
fn presences_are_taken_only_from_their_author_and_for_their_group() {
    let (_, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let other = NodeKeypair::generate();
    let author = other.node_id().to_peer_id().ok();
    let data = presence(&other, &k, "announce", &now.ts);
    // Forwarded under another author's name: rejected.
    let stranger = NodeKeypair::generate().node_id().to_peer_id().ok();
    let (verdict, _) = g.on_gossip(k, stranger, via(), &data, &FakeView::default(), &now.ts);
    assert_eq!(verdict, MessageAcceptance::Reject);
    // On another group's topic: rejected.
    let (verdict, _) = g.on_gossip(
        DiscoveryKey::from_name("other"),
        author,
        via(),
        &data,
        &FakeView::default(),
        &now.ts,
    );
    assert_eq!(verdict, MessageAcceptance::Reject);
    // Expired on its way: ignored, nobody penalised.
    let (verdict, _) = g.on_gossip(
        k,
        author,
        via(),
        &data,
        &FakeView::default(),
        &now.ts.plus_secs(61),
    );
    assert_eq!(verdict, MessageAcceptance::Ignore);
    // Its own: accepted, and the application hears of the new member.
    let (verdict, actions) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
    assert_eq!(verdict, MessageAcceptance::Accept);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Emit(NodeEvent::SwarmMemberJoined { node, .. }) if *node == other.node_id()
    )));
    let members = g.members(&k).unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].node, other.node_id().to_string());
    assert!(g.members(&DiscoveryKey::from_name("other")).is_none());
}

/// A node in group "party" that took `other`'s announce (as gossipsub from `author`,
/// its bytes `data`) at `now`.
struct Taken {
    g: Groups,
    k: DiscoveryKey,
    other: NodeKeypair,
    author: Option<PeerId>,
    data: Vec<u8>,
    now: Now,
}

fn one_member_taken() -> Taken {
    let (_, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let other = NodeKeypair::generate();
    let author = other.node_id().to_peer_id().ok();
    let data = presence(&other, &k, "announce", &now.ts);
    let (verdict, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
    assert_eq!(verdict, MessageAcceptance::Accept);
    Taken {
        g,
        k,
        other,
        author,
        data,
        now,
    }
}

#[test]
fn a_presence_that_changes_nothing_is_not_forwarded() {
    let Taken {
        mut g,
        k,
        other,
        author,
        data,
        now,
    } = one_member_taken();
    // The same signed presence put on the topic again (a capture replayed once
    // gossipsub forgot its id): ignored, so not forwarded to the swarm again.
    let later = now.ts.plus_secs(30);
    let (verdict, actions) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &later);
    assert_eq!(verdict, MessageAcceptance::Ignore);
    assert!(actions.is_empty());
    // A leave (a later sequence number), then the announce replayed: ignored too.
    let bye = leave(&other, &k, &now.ts);
    let (verdict, _) = g.on_gossip(k, author, via(), &bye, &FakeView::default(), &later);
    assert_eq!(verdict, MessageAcceptance::Accept);
    let (verdict, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &later);
    assert_eq!(verdict, MessageAcceptance::Ignore);
}

/// Copies of a member's presence put on the topic again (by anyone, once gossipsub
/// forgot their ids) change nothing, so they do not use up the member's rate: its next
/// presence is taken. They were charged before, and the member's `leave` was ignored.
#[test]
fn replays_of_a_member_s_presence_do_not_use_up_its_rate() {
    let Taken {
        mut g,
        k,
        other,
        author,
        data,
        now,
    } = one_member_taken();
    for _ in 0..3 * super::presence_rate::PER_AUTHOR.burst {
        let (verdict, actions) =
            g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
        assert_eq!(verdict, MessageAcceptance::Ignore);
        assert!(actions.is_empty());
    }
    let bye = leave(&other, &k, &now.ts);
    let (verdict, actions) = g.on_gossip(k, author, via(), &bye, &FakeView::default(), &now.ts);
    assert_eq!(verdict, MessageAcceptance::Accept);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Emit(NodeEvent::SwarmMemberLeft { node, .. }) if *node == other.node_id()
    )));
    assert!(g.members(&k).unwrap().is_empty());
}

#[test]
fn providers_are_dialed_a_bounded_few_and_never_ourselves() {
    let (key, mut g) = groups();
    let me = key.node_id().to_peer_id().unwrap();
    let mut view = FakeView {
        me: Some(me),
        ..FakeView::default()
    };
    let k = DiscoveryKey::from_name("party");
    let connected = NodeKeypair::generate().node_id().to_peer_id().unwrap();
    view.session(connected, "/ip4/192.0.2.1/tcp/1", &[]);
    let mut providers = vec![me, connected];
    providers.extend((0..20).map(|_| NodeKeypair::generate().node_id().to_peer_id().unwrap()));
    // Not in the group: nothing.
    assert!(
        g.providers_found(k, providers.clone(), &view, Instant::now())
            .is_empty()
    );
    g.join(k).unwrap();
    let actions = g.providers_found(k, providers, &view, Instant::now());
    assert_eq!(actions.len(), PROVIDERS_DIALED);
    for a in &actions {
        let Action::Dial(opts) = a else {
            panic!("{a:?}")
        };
        assert!(opts.get_peer_id() != Some(me) && opts.get_peer_id() != Some(connected));
    }
    // Kademlia reports each answering peer's providers apart: the bound is the query's
    // (another peer's answer, with providers of its own choosing, dials nobody more).
    let more: Vec<PeerId> = (0..20)
        .map(|_| NodeKeypair::generate().node_id().to_peer_id().unwrap())
        .collect();
    assert!(
        g.providers_found(k, more.clone(), &view, Instant::now())
            .is_empty()
    );
    // The next query (the group still knows no member) may dial again.
    let later = at(&Now::current(), PROVIDER_RETRY.as_secs() + 1);
    let asked = g.tick(&view, &later);
    assert!(
        asked
            .iter()
            .any(|a| matches!(a, Action::FindGroupProviders(_)))
    );
    assert_eq!(
        g.providers_found(k, more, &view, Instant::now()).len(),
        PROVIDERS_DIALED
    );
}

#[test]
fn providers_are_dialed_only_at_addresses_in_scope() {
    let (_, mut g) = groups();
    let mut view = FakeView {
        listen: vec!["/ip4/203.0.113.5/tcp/4001".parse().unwrap()],
        ..FakeView::default()
    };
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let node = |addrs: &[&str], view: &mut FakeView| {
        let n = NodeKeypair::generate().node_id();
        if !addrs.is_empty() {
            let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
            view.stored.insert(n, addrs);
        }
        n.to_peer_id().unwrap()
    };
    // Advertised addresses on the node's host, a LAN it is not on, behind a name.
    let hostile = node(
        &[
            "/ip4/127.0.0.1/tcp/22",
            "/ip4/10.1.2.3/tcp/80",
            "/dns4/intranet.example/tcp/80",
        ],
        &mut view,
    );
    let mixed = node(
        &[
            "/ip4/192.168.7.7/tcp/25",
            "/ip4/198.51.100.7/udp/4001/quic-v1",
        ],
        &mut view,
    );
    let unknown = node(&[], &mut view);
    let actions = g.providers_found(k, [hostile, mixed, unknown], &view, Instant::now());
    let dials: Vec<(PeerId, String)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Dial(o) => Some((o.get_peer_id()?, format!("{o:?}"))),
            _ => None,
        })
        .collect();
    let peers: Vec<PeerId> = dials.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        peers,
        [mixed, unknown],
        "not the one with only foreign addresses"
    );
    assert!(dials[0].1.contains("198.51.100.7"), "{}", dials[0].1);
    assert!(!dials[0].1.contains("192.168.7.7"), "{}", dials[0].1);
}

/// Provider records and the advertisements behind them are anyone's to write: made-up
/// providers whose advertisements all name one host get it the feed's budget of
/// dials (`FEED_PER_TARGET`: 8), not 8 providers × 4 addresses at each query (a group
/// without members asks every `PROVIDER_RETRY`).
#[test]
fn providers_naming_one_host_get_it_only_the_feed_s_budget() {
    let (_, mut g) = groups();
    let mut view = FakeView {
        listen: vec!["/ip4/203.0.113.5/tcp/4001".parse().unwrap()],
        ..FakeView::default()
    };
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let t0 = Instant::now();
    let mut dialed = 0;
    for round in 0..3u64 {
        let providers: Vec<PeerId> = (0..PROVIDERS_DIALED)
            .map(|_| {
                let n = NodeKeypair::generate().node_id();
                let addrs = (1..=4)
                    .map(|p| format!("/ip4/198.51.100.9/tcp/{p}").parse().unwrap())
                    .collect();
                view.stored.insert(n, addrs);
                n.to_peer_id().unwrap()
            })
            .collect();
        let later = at(&Now::current(), round * (PROVIDER_RETRY.as_secs() + 1));
        g.tick(&view, &later);
        for a in g.providers_found(k, providers, &view, t0) {
            let Action::Dial(opts) = a else {
                panic!("{a:?}")
            };
            dialed += format!("{opts:?}").matches("198.51.100.9").count();
        }
    }
    assert_eq!(dialed, 8, "three queries' providers, one host");
}

#[test]
fn a_group_without_members_asks_for_providers_again_after_a_while() {
    let (_, mut g) = groups();
    let view = FakeView::default();
    let now = Now::current();
    let k = DiscoveryKey::from_name("lonely");
    g.join(k).unwrap();
    g.joined_topic(k, &view, &now);
    let asks = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::FindGroupProviders(_)))
            .count()
    };
    assert_eq!(asks(&g.tick(&view, &at(&now, 1))), 0);
    let later = at(&now, PROVIDER_RETRY.as_secs());
    assert_eq!(asks(&g.tick(&view, &later)), 1);
}

#[test]
fn a_thin_mesh_dials_known_members() {
    let (_, mut g) = groups();
    let view = FakeView::default();
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    for i in 0..10 {
        let m = NodeKeypair::generate();
        let author = m.node_id().to_peer_id().ok();
        // Each on a host of its own (a host's addresses have a dial budget).
        let addr = format!("/ip4/192.0.2.{}/udp/4001/quic-v1", 10 + i);
        let data = presence_at(&m, &k, "announce", &[&addr], &now.ts, 60);
        let (v, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
        assert_eq!(v, MessageAcceptance::Accept);
    }
    let dials = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Dial(_)))
            .count()
    };
    // No mesh at all: up to mesh_n members, then a pause.
    assert_eq!(dials(&g.tick(&view, &now)), MESH_N);
    assert_eq!(dials(&g.tick(&view, &at(&now, 1))), 0);

    // A thin mesh with as many subscribed peers as the idle rule keeps per topic
    // still dials: they may all have full meshes and refuse grafts.
    let topic = gossipsub::IdentTopic::new(k.topic()).hash();
    let mut view = FakeView::default();
    let subscribed: Vec<PeerId> = (0..TOPIC_POOL).map(|_| PeerId::random()).collect();
    view.mesh.insert(topic.clone(), subscribed[..3].to_vec());
    view.subscribers.insert(topic.clone(), subscribed.clone());
    let later = at(&now, MEMBER_DIAL_EVERY.as_secs());
    assert_eq!(dials(&g.tick(&view, &later)), MESH_N - 3);
    // With mesh_n_high subscribed it is gossipsub's to fill: no dials.
    let mut full = subscribed;
    full.extend((TOPIC_POOL..MESH_N_HIGH).map(|_| PeerId::random()));
    view.subscribers.insert(topic, full);
    let later = at(&now, 2 * MEMBER_DIAL_EVERY.as_secs());
    assert_eq!(dials(&g.tick(&view, &later)), 0);
}

#[test]
fn leaving_says_goodbye_once() {
    let (_, mut g) = groups();
    let view = FakeView::default();
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let (left, actions) = g.leave(k, &view, &now);
    assert!(left);
    assert_eq!(published(&actions)[0].0, "leave");
    assert!(!g.is_joined(&k));
    let (left, actions) = g.leave(k, &view, &now);
    assert!(!left && actions.is_empty());
    // A join taken back (the topic could not be subscribed) says nothing and can be
    // tried again.
    assert!(g.join(k).unwrap());
    g.abandon(&k);
    assert!(!g.is_joined(&k));
    assert!(g.join(k).unwrap());
}

/// A presence is signed by whoever made it, so the addresses it names are dialed only
/// within the node's scope: a public node does not dial a member at loopback, private or
/// named addresses; and a member that was not reached is dialed once per `FEED_REDIAL`,
/// so a made-up member is not dialed every few seconds.
#[test]
fn thin_mesh_dials_stay_in_scope_and_do_not_repeat() {
    let (_, mut g) = groups();
    let view = FakeView {
        listen: vec![
            "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            "/ip4/203.0.113.5/tcp/4001".parse().unwrap(),
        ],
        ..FakeView::default()
    };
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let named: [&[&str]; 3] = [
        &["/ip4/127.0.0.1/tcp/22"],
        &["/ip4/10.1.2.3/tcp/80", "/dns4/intranet.example/tcp/80"],
        &["/ip4/198.51.100.7/udp/4001/quic-v1"],
    ];
    let mut members = Vec::new();
    for addrs in named {
        let m = NodeKeypair::generate();
        let author = m.node_id().to_peer_id().ok();
        let data = presence_at(&m, &k, "announce", addrs, &now.ts, 900);
        let (v, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
        assert_eq!(v, MessageAcceptance::Accept);
        members.push(m.node_id().to_peer_id().unwrap());
    }
    let dialed = |actions: &[Action]| -> Vec<PeerId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Dial(o) => o.get_peer_id(),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        dialed(&g.tick(&view, &now)),
        [members[2]],
        "the public one only"
    );
    let later = at(&now, MEMBER_DIAL_EVERY.as_secs());
    assert!(
        dialed(&g.tick(&view, &later)).is_empty(),
        "not again so soon"
    );
    let much_later = at(&now, FEED_REDIAL.as_secs());
    assert_eq!(dialed(&g.tick(&view, &much_later)), [members[2]]);
    // Reached this time: once it is gone it may be dialed again at the next round.
    let mut reached = FakeView {
        listen: view.listen.clone(),
        ..FakeView::default()
    };
    reached.connected.insert(members[2], Vec::new());
    let next = at(&much_later, MEMBER_DIAL_EVERY.as_secs());
    assert!(dialed(&g.tick(&reached, &next)).is_empty());
    let after = at(&next, MEMBER_DIAL_EVERY.as_secs());
    assert_eq!(dialed(&g.tick(&view, &after)), [members[2]]);
}

/// Made-up members (one presence each) naming four addresses on one host: a member
/// with a thin mesh dials that host 8 addresses, then 8 a minute, not 4 per member.
#[test]
fn made_up_members_on_one_host_get_it_dialed_within_its_budget() {
    use super::feed::FEED_PER_TARGET;
    let (_, mut g) = groups();
    let view = FakeView {
        listen: vec!["/ip4/203.0.113.5/tcp/4001".parse().unwrap()],
        ..FakeView::default()
    };
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let victim = "/ip4/198.51.100.7";
    let addrs: Vec<String> = ["tcp/80", "tcp/443", "udp/443/quic-v1", "tcp/22"]
        .iter()
        .map(|p| format!("{victim}/{p}"))
        .collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    for _ in 0..100 {
        let m = NodeKeypair::generate();
        let author = m.node_id().to_peer_id().ok();
        let data = presence_at(&m, &k, "announce", &addrs, &now.ts, 900);
        let (v, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
        assert_eq!(v, MessageAcceptance::Accept);
    }
    // Ten minutes of ticks, every 5 s; each dial's addresses counted (from its Debug).
    let (mut dials, mut to_victim) = (0, 0);
    for i in 0..=120 {
        for a in g.tick(&view, &at(&now, i * MEMBER_DIAL_EVERY.as_secs())) {
            if let Action::Dial(o) = a {
                dials += 1;
                to_victim += format!("{o:?}").matches(victim).count();
            }
        }
    }
    let most = FEED_PER_TARGET.burst as f64 + FEED_PER_TARGET.per_second * 600.0;
    assert!(dials > 0, "the thin mesh is still fed");
    assert!(
        to_victim as f64 <= most,
        "{to_victim} addresses of one host dialed in {dials} dials (at most {most})"
    );
}
