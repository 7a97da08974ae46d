use std::time::Duration;

use libp2p::gossipsub::MessageAcceptance;
use mesh_core::{Artifact, NodeKeypair, SwarmPresence, Timestamp};
use mesh_signal::group::{DiscoveryKey, GroupConfig};

use super::{Groups, MESH_N, PROVIDER_RETRY, PROVIDERS_DIALED};
use crate::node::action::Action;
use crate::node::event::NodeEvent;
use crate::node::view::Now;
use crate::node::view::fake::FakeView;

fn groups() -> (NodeKeypair, Groups) {
    let key = NodeKeypair::generate();
    (key.clone(), Groups::new(key, GroupConfig::default()))
}

fn at(now: &Now, secs: u64) -> Now {
    Now {
        at: now.at + Duration::from_secs(secs),
        ts: now.ts.plus_secs(secs as i64),
    }
}

/// A presence of `key` in group `g`, as gossipsub would carry it.
fn presence(key: &NodeKeypair, g: &DiscoveryKey, kind: &str, ts: &Timestamp) -> Vec<u8> {
    let doc = serde_json::json!({
        "schema/v": 1,
        "message/kind": "swarm-presence.v1",
        "swarm/key": g.to_hex(),
        "node/id": key.node_id().to_string(),
        "presence": kind,
        "sequence/no": 1,
        "addrs": ["/ip4/192.0.2.8/udp/4001/quic-v1"],
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
    g.presence_sent(&k, "join", &now.ts);
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
