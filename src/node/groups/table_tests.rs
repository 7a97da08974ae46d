//! Component tests of the member-table requests: a newcomer's fetch, the pages served,
//! the periodic checks (`table_exchange.rs`, `fetch.rs`, `check.rs`).

use mesh_core::{Artifact, NodeKeypair, SwarmPresence};
use mesh_signal::group::DiscoveryKey;

use super::Groups;
use super::component_tests::{at, groups, presence, presence_at, published};
use crate::node::action::Action;
use crate::node::event::NodeEvent;
use crate::node::view::Now;
use crate::node::view::fake::FakeView;

/// A request id, as the behaviour hands them out (no swarm needed to get one).
fn request_id() -> libp2p::request_response::OutboundRequestId {
    use mesh_signal::group::exchange::{Codec, PROTOCOL, TableRequest};
    let mut b = libp2p::request_response::Behaviour::with_codec(
        Codec::default(),
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

/// Checks of tables that agree take no pages: one peer's 40 checks with our digest
/// (a node in 40 swarms whose checks all picked us) are all answered; a check whose
/// tables differ takes pages, 8 at once as a fetch does.
#[test]
fn checks_of_tables_that_agree_take_no_pages() {
    use mesh_signal::group::exchange::{Answer, MemberDigest, TableRequest};
    let (me, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("agreed");
    g.join(k).unwrap();
    let peer = libp2p::PeerId::random();
    let ask = |g: &mut Groups, have: MemberDigest| {
        g.serve_table(
            peer,
            &mesh_advert::Source::Local,
            Ok(TableRequest::unless(k, have)),
            &now.ts,
        )
    };
    let table = g.tables.signed_table(&k, &now.ts).unwrap();
    let agreed = MemberDigest::of(&k, table.iter().map(|(n, _)| n));
    for i in 0..40 {
        match ask(&mut g, agreed) {
            Answer::Page(p) => assert!(p.items.is_empty(), "check {i}"),
            other => panic!("check {i} refused: {other:?}"),
        }
    }
    let differs = MemberDigest::of(&k, &[me.node_id(), NodeKeypair::generate().node_id()]);
    assert_ne!(differs, agreed);
    let pages = (0..20)
        .take_while(|_| matches!(ask(&mut g, differs), Answer::Page(_)))
        .count();
    assert_eq!(pages, 8, "the page burst");
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
    // A newcomer's fetch is use of the connection (for the idle rule); a check is not.
    assert!(!g.checking(&id, &member));
    assert!(!super::is_check(&Ok(ask[0].1.clone())));
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
    assert!(g.checking(&id, &member) && super::is_check(&Ok(ask[0].1.clone())));
    assert!(!super::is_check(&Err(mesh_core::MeshError::invalid("x"))));
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

/// A check's pages of strangers' presences (fresh keys cost nothing, and a page holds
/// 256) take the check server's budget: a subscriber picked for a check answered 1,280
/// made-up members in five pages, at a table with room for 4,096, and all were taken;
/// now one page's worth (256). A newcomer's fetch, all strangers by nature, is not
/// charged: its 300 are all taken.
#[test]
fn a_check_server_s_strangers_take_its_budget() {
    use mesh_signal::group::GroupConfig;
    use mesh_signal::group::exchange::{Answer, check_page, page_of};
    let config = GroupConfig {
        max_members: 4096,
        ..GroupConfig::default()
    };
    let mut g = Groups::new(NodeKeypair::generate(), config, super::check::CHECK_EVERY);
    let now = Now::current();
    let k = DiscoveryKey::from_name("table");
    g.join(k).unwrap();
    let mut view = FakeView::default();
    let topic = libp2p::gossipsub::IdentTopic::new(k.topic()).hash();
    let server = libp2p::PeerId::random();
    view.session(server, "/ip4/198.51.100.7/tcp/1", &[]);
    view.subscribers.insert(topic, vec![server]);
    g.joined_topic(k, &view, &now);
    let made_up = |n: usize| {
        let mut t: Vec<(mesh_core::NodeId, Vec<u8>)> = (0..n)
            .map(|_| {
                let kp = NodeKeypair::generate();
                (kp.node_id(), presence(&kp, &k, "announce", &now.ts))
            })
            .collect();
        t.sort_by_key(|(n, _)| *n);
        t
    };
    // Answers each ask with the pages of `table` until no more is asked; the members
    // that joined.
    let answer =
        |g: &mut Groups, mut ask: Vec<_>, table: &[(mesh_core::NodeId, Vec<u8>)], at: &Now| {
            let mut joined = 0;
            for _ in 0..10 {
                let Some((peer, request)) = ask.pop() else {
                    break;
                };
                let request: mesh_signal::group::exchange::TableRequest = request;
                let id = request_id();
                g.table_asked(id, k);
                let page = page_of(
                    table.iter().map(|(n, b)| (*n, b.as_slice())),
                    request.after.as_ref(),
                );
                let actions = g.table_answer(
                    id,
                    peer,
                    Answer::Checked(check_page(page, &at.ts)),
                    &view,
                    at,
                );
                joined += actions
                    .iter()
                    .filter(|a| matches!(a, Action::Emit(NodeEvent::SwarmMemberJoined { .. })))
                    .count();
                ask = asked(&actions);
            }
            joined
        };
    let fetch = asked(&g.presence_sent(&k, "join", &view, &now));
    assert_eq!(answer(&mut g, fetch, &made_up(300), &now), 300, "the fetch");
    let later = at(&now, 38);
    let check = asked(&g.tick(&view, &later));
    assert_eq!(check.len(), 1, "a check");
    let burst = super::presence_rate::STRANGERS_PER_CHECK_SERVER.burst as usize;
    assert_eq!(
        answer(&mut g, check, &made_up(1280), &later),
        burst,
        "made-up members taken from one check server's pages"
    );
}
