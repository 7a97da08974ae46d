use std::time::Duration;

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

fn groups() -> (NodeKeypair, Groups) {
    let key = NodeKeypair::generate();
    (
        key.clone(),
        Groups::new(key, GroupConfig::default(), super::check::CHECK_EVERY),
    )
}

fn at(now: &Now, secs: u64) -> Now {
    Now {
        at: now.at + Duration::from_secs(secs),
        ts: now.ts.plus_secs(secs as i64),
    }
}

/// A presence of `key` in group `g`, as gossipsub would carry it.
fn presence(key: &NodeKeypair, g: &DiscoveryKey, kind: &str, ts: &Timestamp) -> Vec<u8> {
    presence_at(key, g, kind, &["/ip4/192.0.2.8/udp/4001/quic-v1"], ts, 60)
}

/// [`presence`] naming `addrs`, for `ttl` seconds.
fn presence_at(
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
fn leave(key: &NodeKeypair, g: &DiscoveryKey, ts: &Timestamp) -> Vec<u8> {
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

fn published(actions: &[Action]) -> Vec<(&'static str, Vec<u8>)> {
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
    let (verdict, _) = g.on_gossip(k, stranger, &data, &FakeView::default(), &now.ts);
    assert_eq!(verdict, MessageAcceptance::Reject);
    // On another group's topic: rejected.
    let (verdict, _) = g.on_gossip(
        DiscoveryKey::from_name("other"),
        author,
        &data,
        &FakeView::default(),
        &now.ts,
    );
    assert_eq!(verdict, MessageAcceptance::Reject);
    // Expired on its way: ignored, nobody penalised.
    let (verdict, _) = g.on_gossip(
        k,
        author,
        &data,
        &FakeView::default(),
        &now.ts.plus_secs(61),
    );
    assert_eq!(verdict, MessageAcceptance::Ignore);
    // Its own: accepted, and the application hears of the new member.
    let (verdict, actions) = g.on_gossip(k, author, &data, &FakeView::default(), &now.ts);
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
    let (verdict, _) = g.on_gossip(k, author, &data, &FakeView::default(), &now.ts);
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
    let (verdict, actions) = g.on_gossip(k, author, &data, &FakeView::default(), &later);
    assert_eq!(verdict, MessageAcceptance::Ignore);
    assert!(actions.is_empty());
    // A leave (a later sequence number), then the announce replayed: ignored too.
    let bye = leave(&other, &k, &now.ts);
    let (verdict, _) = g.on_gossip(k, author, &bye, &FakeView::default(), &later);
    assert_eq!(verdict, MessageAcceptance::Accept);
    let (verdict, _) = g.on_gossip(k, author, &data, &FakeView::default(), &later);
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
        let (verdict, actions) = g.on_gossip(k, author, &data, &FakeView::default(), &now.ts);
        assert_eq!(verdict, MessageAcceptance::Ignore);
        assert!(actions.is_empty());
    }
    let bye = leave(&other, &k, &now.ts);
    let (verdict, actions) = g.on_gossip(k, author, &bye, &FakeView::default(), &now.ts);
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
    assert!(g.providers_found(k, providers.clone(), &view).is_empty());
    g.join(k).unwrap();
    let actions = g.providers_found(k, providers, &view);
    assert_eq!(actions.len(), PROVIDERS_DIALED);
    for a in &actions {
        let Action::Dial(opts) = a else {
            panic!("{a:?}")
        };
        assert!(opts.get_peer_id() != Some(me) && opts.get_peer_id() != Some(connected));
    }
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
    let actions = g.providers_found(k, [hostile, mixed, unknown], &view);
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
    for _ in 0..10 {
        let m = NodeKeypair::generate();
        let author = m.node_id().to_peer_id().ok();
        let (v, _) = g.on_gossip(
            k,
            author,
            &presence(&m, &k, "announce", &now.ts),
            &FakeView::default(),
            &now.ts,
        );
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

/// A request id, as the behaviour hands them out (no swarm needed to get one).
fn request_id() -> libp2p::request_response::OutboundRequestId {
    use mesh_signal::group::exchange::{Codec, PROTOCOL, TableRequest};
    let mut b = libp2p::request_response::Behaviour::with_codec(
        Codec,
        [(PROTOCOL, libp2p::request_response::ProtocolSupport::Full)],
        libp2p::request_response::Config::default(),
    );
    let key = DiscoveryKey::from_name("id");
    b.send_request(&libp2p::PeerId::random(), Ok(TableRequest::first(key)))
}

fn asked(actions: &[Action]) -> Vec<(libp2p::PeerId, mesh_signal::group::exchange::TableRequest)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AskTable { peer, request } => Some((*peer, request.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_newcomer_asks_a_subscribed_peer_for_the_table_and_takes_the_valid_presences() {
    use mesh_signal::group::exchange::{Answer, check_page, page_of};
    let (_, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("table");
    g.join(k).unwrap();
    let mut view = FakeView::default();
    let topic = libp2p::gossipsub::IdentTopic::new(k.topic()).hash();
    let (plain, member) = (libp2p::PeerId::random(), libp2p::PeerId::random());
    view.session(member, "/ip4/127.0.0.1/tcp/1", &[]);
    view.connected.insert(plain, vec![]);
    view.subscribers.insert(topic, vec![plain, member]);
    // The join says it fetches the table.
    let sent = published(&g.joined_topic(k, &view, &now));
    let join = SwarmPresence::verify_cbor(&sent[0].1, &now.ts).unwrap();
    assert!(mesh_signal::group::fetches_table(&join));
    // Once it went out, the session peer is asked first.
    let ask = asked(&g.presence_sent(&k, "join", &view, &now));
    assert_eq!(ask.len(), 1);
    assert_eq!(ask[0].0, member);
    assert_eq!(ask[0].1.after, None);
    let id = request_id();
    g.table_asked(id, k);
    // While our own table is coming we do not hand one out.
    let Answer::Refused(e) = g.serve_table(
        plain,
        &mesh_advert::Source::Local,
        Ok(ask[0].1.clone()),
        &now.ts,
    ) else {
        panic!("served while fetching")
    };
    assert_eq!(e.code, mesh_core::ErrorCode::TransportUnavailable);
    // The member's page: three valid presences and a forged one.
    let keys: Vec<NodeKeypair> = (0..4).map(|_| NodeKeypair::generate()).collect();
    let mut table: Vec<(mesh_core::NodeId, Vec<u8>)> = keys
        .iter()
        .map(|kp| (kp.node_id(), presence(kp, &k, "announce", &now.ts)))
        .collect();
    table.sort_by_key(|(n, _)| *n);
    let forged = {
        let mut doc = SwarmPresence::from_cbor(&table[1].1).unwrap().into_map();
        doc.insert("sequence/no".into(), 9.into());
        mesh_core::cbor::encode(&serde_json::Value::Object(doc))
    };
    table[1].1 = forged;
    let page = page_of(table.iter().map(|(n, b)| (*n, b.as_slice())), None);
    let checked = check_page(page, &now.ts);
    let actions = g.table_answer(id, member, Answer::Checked(checked), &view, &now);
    let joined: Vec<mesh_core::NodeId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(NodeEvent::SwarmMemberJoined { node, .. }) => Some(*node),
            _ => None,
        })
        .collect();
    assert_eq!(joined, vec![table[0].0, table[2].0, table[3].0]);
    let codes: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Trace(t) => t.detail.as_ref()?["error/code"].as_str().map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(codes, vec!["E_SIG_INVALID".to_owned()]);
    assert!(asked(&actions).is_empty(), "one page, no more");
    // Done: the table is now served, our own join first among equals, by node id.
    let Answer::Page(p) = g.serve_table(
        plain,
        &mesh_advert::Source::Local,
        Ok(ask[0].1.clone()),
        &now.ts,
    ) else {
        panic!("not served")
    };
    assert_eq!(p.items.len(), 4, "three members and our own join");
    assert!(!p.more);
}

#[test]
fn serving_refuses_unknown_swarms_and_peers_asking_too_often() {
    use mesh_signal::group::exchange::{Answer, TableRequest};
    let (_, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("served");
    let peer = libp2p::PeerId::random();
    let req = TableRequest::first(k);
    let other = libp2p::PeerId::random();
    let Answer::Refused(e) =
        g.serve_table(other, &mesh_advert::Source::Local, Ok(req.clone()), &now.ts)
    else {
        panic!("served a swarm we are not in")
    };
    assert_eq!(e.code, mesh_core::ErrorCode::ProtoInvalid);
    g.join(k).unwrap();
    let mut served = 0;
    for _ in 0..100 {
        match g.serve_table(peer, &mesh_advert::Source::Local, Ok(req.clone()), &now.ts) {
            Answer::Page(_) => served += 1,
            Answer::Refused(e) => {
                assert_eq!(e.code, mesh_core::ErrorCode::TransportRejected);
                break;
            }
            Answer::Checked(_) => unreachable!(),
        }
    }
    assert_eq!(served, 8, "the burst, then refused");
    // Another peer still gets its pages.
    assert!(matches!(
        g.serve_table(
            libp2p::PeerId::random(),
            &mesh_advert::Source::Local,
            Ok(req),
            &now.ts
        ),
        Answer::Page(_)
    ));
}

#[test]
fn a_fetch_nobody_answers_ends_in_a_plain_join() {
    let (_, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("alone");
    g.join(k).unwrap();
    let mut view = FakeView::default();
    let topic = libp2p::gossipsub::IdentTopic::new(k.topic()).hash();
    let old = libp2p::PeerId::random();
    view.connected.insert(old, vec![]);
    view.subscribers.insert(topic, vec![old]);
    g.joined_topic(k, &view, &now);
    let ask = asked(&g.presence_sent(&k, "join", &view, &now));
    assert_eq!(ask.len(), 1);
    let id = request_id();
    g.table_asked(id, k);
    // An older node without the protocol: the request fails; nobody else to ask.
    assert!(g.table_failed(id, old, &view, &now).is_empty());
    let later = at(&now, 6);
    let sent = published(&g.tick(&view, &later));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "join");
    let join = SwarmPresence::verify_cbor(&sent[0].1, &later.ts).unwrap();
    assert!(!mesh_signal::group::fetches_table(&join), "answerable");
    // That join does not start another fetch.
    assert!(g.presence_sent(&k, "join", &view, &later).is_empty());
}

/// A table server that answers an empty table (audit finding 6): a connected member
/// subscribed to the topic is missing from it, so that member is asked for its table
/// too, and the newcomer sees the swarm at once rather than by the members' refreshes.
#[test]
fn an_empty_table_from_one_server_is_checked_with_a_subscriber_left_out() {
    use mesh_signal::group::exchange::{Answer, check_page, page_of};
    let (_, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("hidden");
    g.join(k).unwrap();
    let mut view = FakeView::default();
    let topic = libp2p::gossipsub::IdentTopic::new(k.topic()).hash();
    let (hostile, member) = (NodeKeypair::generate(), NodeKeypair::generate());
    let h = hostile.node_id().to_peer_id().unwrap();
    let m = member.node_id().to_peer_id().unwrap();
    view.session(h, "/ip4/127.0.0.1/tcp/1", &[]);
    view.connected.insert(m, vec![]);
    view.subscribers.insert(topic, vec![h, m]);
    g.joined_topic(k, &view, &now);
    let ask = asked(&g.presence_sent(&k, "join", &view, &now));
    assert_eq!(ask[0].0, h, "the session peer first");
    let id = request_id();
    g.table_asked(id, k);
    let empty = check_page(page_of(std::iter::empty(), None), &now.ts);
    let ask = asked(&g.table_answer(id, h, Answer::Checked(empty), &view, &now));
    assert_eq!(ask.len(), 1, "the empty table is not taken as the swarm");
    assert_eq!(ask[0].0, m);
    assert_eq!(ask[0].1.after, None);
    // The member's table holds it and two more: taken, and the fetch is done.
    let id = request_id();
    g.table_asked(id, k);
    let mut table: Vec<(mesh_core::NodeId, Vec<u8>)> =
        [&member, &NodeKeypair::generate(), &NodeKeypair::generate()]
            .iter()
            .map(|kp| (kp.node_id(), presence(kp, &k, "announce", &now.ts)))
            .collect();
    table.sort_by_key(|(n, _)| *n);
    let page = check_page(
        page_of(table.iter().map(|(n, b)| (*n, b.as_slice())), None),
        &now.ts,
    );
    let actions = g.table_answer(id, m, Answer::Checked(page), &view, &now);
    assert!(asked(&actions).is_empty(), "complete now");
    assert_eq!(g.members(&k).map(|m| m.len()), Some(3));
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
        let (v, _) = g.on_gossip(k, author, &data, &FakeView::default(), &now.ts);
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

/// A member compares its table with a subscriber's once a period (a quarter either way)
/// and takes what it lacked, traced as come by `check`; a server whose table has the
/// asker's members answers an empty page.
#[test]
fn a_member_checks_its_table_against_a_subscriber_s_and_takes_what_it_lacked() {
    use mesh_signal::group::exchange::{Answer, MemberDigest, TableRequest, check_page, page_of};
    let (me, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("checked");
    g.join(k).unwrap();
    let mut view = FakeView::default();
    let topic = libp2p::gossipsub::IdentTopic::new(k.topic()).hash();
    let member = libp2p::PeerId::random();
    view.connected.insert(member, vec![]);
    view.subscribers.insert(topic, vec![member]);
    g.joined_topic(k, &view, &now);
    let ask = asked(&g.presence_sent(&k, "join", &view, &now));
    assert_eq!(ask.len(), 1);
    let id = request_id();
    g.table_asked(id, k);
    let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
    let entry = |kp: &NodeKeypair| {
        (
            kp.node_id(),
            presence_at(kp, &k, "announce", &[], &now.ts, 600),
        )
    };
    let page = |entries: &[(mesh_core::NodeId, Vec<u8>)]| {
        let mut e = entries.to_vec();
        e.sort_by_key(|(n, _)| *n);
        check_page(
            page_of(e.iter().map(|(n, b)| (*n, b.as_slice())), None),
            &now.ts,
        )
    };
    // The fetch brings A only (B's join was lost on its way, say).
    g.table_answer(id, member, Answer::Checked(page(&[entry(&a)])), &view, &now);
    assert!(!g.tables.has_member(&k, &b.node_id()));
    // No check before three quarters of a period.
    assert!(asked(&g.tick(&view, &at(&now, 22))).is_empty());
    // By a period and a quarter, one, with the digest of our members (us and A).
    let ask = asked(&g.tick(&view, &at(&now, 38)));
    let mut ours = vec![me.node_id(), a.node_id()];
    ours.sort();
    assert_eq!(ask.len(), 1);
    assert_eq!(ask[0].0, member);
    assert_eq!(
        ask[0].1,
        TableRequest::unless(k, MemberDigest::of(&k, &ours))
    );
    let id = request_id();
    g.table_asked(id, k);
    let later = at(&now, 38);
    let actions = g.table_answer(
        id,
        member,
        Answer::Checked(page(&[entry(&a), entry(&b)])),
        &view,
        &later,
    );
    let joined: Vec<(mesh_core::NodeId, String)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Trace(t) => {
                let d = t.detail.as_ref()?;
                Some((
                    d["member"].as_str()?.parse().ok()?,
                    d["via"].as_str()?.to_owned(),
                ))
            }
            _ => None,
        })
        .collect();
    assert_eq!(joined, vec![(b.node_id(), "check".to_owned())]);
    assert!(g.tables.has_member(&k, &b.node_id()));
    let came = g.arrivals();
    assert_eq!((came.gossip, came.table, came.check), (0, 1, 1));
    assert!(asked(&actions).is_empty(), "one page, no more");
    // The next check is a period on, not before.
    assert!(asked(&g.tick(&view, &at(&now, 38 + 22))).is_empty());
    assert_eq!(asked(&g.tick(&view, &at(&now, 38 + 38))).len(), 1);
    // Served: a table with the asker's members is an empty page, another the whole.
    let mut all = vec![me.node_id(), a.node_id(), b.node_id()];
    all.sort();
    let served = |g: &mut Groups, have: &[mesh_core::NodeId]| {
        let req = TableRequest::unless(k, MemberDigest::of(&k, have));
        match g.serve_table(
            libp2p::PeerId::random(),
            &mesh_advert::Source::Local,
            Ok(req),
            &later.ts,
        ) {
            Answer::Page(p) => p.items.len(),
            other => panic!("not served: {other:?}"),
        }
    };
    assert_eq!(served(&mut g, &all), 0);
    assert_eq!(served(&mut g, &ours), 3);
}
