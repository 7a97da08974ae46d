use libp2p::{Multiaddr, PeerId};
use mesh_advert::own::OwnAdvert;
use mesh_advert::{AdvertStore, StoreLimits};
use mesh_core::{NodeKeypair, Timestamp};

use super::{OwnRecord, Withdrawal};
use crate::advert_store::DurableStore;
use crate::node::action::Action;
use crate::node::event::NodeEvent;
use crate::node::store::SharedAdverts;
use crate::node::view::fake::FakeView;

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn own(dir: &tempfile::TempDir, now: &Timestamp) -> (OwnRecord, SharedAdverts) {
    let (durable, _) = DurableStore::open(dir.path(), StoreLimits::default(), now).unwrap();
    let store = SharedAdverts::new(durable);
    let key = NodeKeypair::generate();
    let node = key.node_id();
    let own = OwnRecord::new(node, OwnAdvert::new(key, 3600, None), store.clone());
    (own, store)
}

/// The advertisement an action list spreads, if any: (put, pushes, presented, seq).
fn spread_of(actions: &[Action]) -> (usize, Vec<PeerId>, usize, Option<u64>) {
    let (mut puts, mut pushes, mut presented, mut seq) = (0, Vec::new(), 0, None);
    for a in actions {
        match a {
            Action::PutOwnRecord(_) => puts += 1,
            Action::PushAdvert { peer, .. } => pushes.push(*peer),
            Action::PresentAdvert(Some(_)) => presented += 1,
            Action::Emit(NodeEvent::OwnAdvertPublished { sequence_no, .. }) => {
                seq = Some(*sequence_no)
            }
            _ => {}
        }
    }
    (puts, pushes, presented, seq)
}

#[test]
fn a_new_advertisement_goes_to_the_dht_every_session_peer_and_the_relays() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let (mut own, store) = own(&dir, &now);
    let mut view = FakeView::default();
    let (a, b, bare) = (PeerId::random(), PeerId::random(), PeerId::random());
    view.session(a, "/ip4/192.0.2.10/tcp/1", &[]);
    view.session(b, "/ip4/192.0.2.11/tcp/1", &[]);
    // Connected without a session: not told.
    view.connected.insert(bare, Vec::new());
    // Nothing to advertise yet.
    assert!(own.tick(Vec::new, &view, &now).is_empty());
    own.addrs_changed();
    let actions = own.tick(|| vec![addr("/ip4/192.0.2.1/tcp/4001")], &view, &now);
    let (puts, mut pushes, presented, seq) = spread_of(&actions);
    pushes.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!((puts, pushes, presented), (1, want, 1));
    let seq = seq.expect("the application is told");
    assert_eq!(own.current().map(|ad| ad.sequence_no()), Some(seq));
    // Stored and persisted.
    let held = store.get(&own.node, &now).expect("stored");
    assert_eq!(held.sequence_no(), seq);
    assert_eq!(store.durable().own_sequence().unwrap(), Some(seq));
}

#[test]
fn the_advertisement_is_rebuilt_on_new_addresses_only() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let (mut own, _store) = own(&dir, &now);
    let view = FakeView::default();
    own.addrs_changed();
    let first = spread_of(&own.tick(|| vec![addr("/ip4/192.0.2.1/tcp/4001")], &view, &now)).3;
    let first = first.expect("a first advertisement");
    // No change: the closure is not even asked.
    let none = own.tick(|| -> Vec<Multiaddr> { panic!("not asked") }, &view, &now);
    assert!(none.is_empty());
    // The same addresses again: nothing new.
    own.addrs_changed();
    assert!(
        own.tick(|| vec![addr("/ip4/192.0.2.1/tcp/4001")], &view, &now)
            .is_empty()
    );
    own.addrs_changed();
    let second = spread_of(&own.tick(|| vec![addr("/ip4/192.0.2.2/tcp/4001")], &view, &now)).3;
    assert!(second.expect("new addresses") > first);
    // Near expiry it is renewed without any change.
    let late = now.plus_secs(3600 - 60);
    let renewed = spread_of(&own.tick(Vec::new, &view, &late)).3;
    assert!(renewed.expect("renewed") > second.unwrap_or_default());
    // publish_now always gives a fresh one.
    let (third, actions) = own
        .publish_now(vec![addr("/ip4/192.0.2.2/tcp/4001")], &view, &late)
        .unwrap();
    assert!(third > renewed.unwrap_or_default());
    assert_eq!(spread_of(&actions).3, Some(third));
}

#[test]
fn a_withdrawal_replaces_the_record_until_the_next_publish() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let (mut own, store) = own(&dir, &now);
    let mut view = FakeView::default();
    let peer = PeerId::random();
    view.session(peer, "/ip4/192.0.2.10/tcp/1", &[]);
    own.addrs_changed();
    let seq = spread_of(&own.tick(|| vec![addr("/ip4/192.0.2.1/tcp/4001")], &view, &now)).3;
    let Withdrawal {
        withdrawal,
        peers,
        actions,
    } = own.withdraw(&view, &now).unwrap();
    assert!(withdrawal.sequence_no() > seq.unwrap_or_default());
    assert_eq!(peers, 1);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::PresentAdvert(None)))
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::PushWithdrawal { peer: p, .. } if *p == peer))
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::PutOwnRecord(_)))
            .count(),
        1
    );
    assert!(own.withdrawal().is_some());
    assert!(
        store.get(&own.node, &now).is_none(),
        "the tombstone is kept"
    );
    assert_eq!(
        store.durable().own_sequence().unwrap(),
        Some(withdrawal.sequence_no())
    );
    // Withdrawn, new addresses rebuild nothing; publish ends the withdrawal.
    own.addrs_changed();
    let later = now.plus_secs(1);
    assert!(
        spread_of(&own.tick(|| vec![addr("/ip4/192.0.2.9/tcp/1")], &view, &later))
            .3
            .is_none()
    );
    let (fresh, _) = own
        .publish_now(vec![addr("/ip4/192.0.2.9/tcp/1")], &view, &later)
        .unwrap();
    assert!(fresh > withdrawal.sequence_no());
    assert!(own.withdrawal().is_none());
}

#[test]
fn a_failed_put_is_retried_when_a_dht_peer_appears_after_its_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let (mut own, _store) = own(&dir, &now);
    let view = FakeView::default();
    // Nothing published: nothing to retry.
    own.put_started(None);
    assert!(own.dht_peer_appeared(&now).is_empty());
    own.addrs_changed();
    let _ = own.tick(|| vec![addr("/ip4/192.0.2.1/tcp/4001")], &view, &now);
    // The swarm refused the put (no peer yet): retried once a peer appears.
    own.put_started(None);
    assert_eq!(own.dht_peer_appeared(&now).len(), 1);
    // A put that started and then failed in the DHT: the same, once its backoff passed
    // (10 s, then 20, 40 ... 600); a success makes the next wait 10 s again.
    own.put_failed(&now, true);
    assert!(own.dht_peer_appeared(&now.plus_secs(9)).is_empty());
    assert_eq!(own.dht_peer_appeared(&now.plus_secs(10)).len(), 1);
    own.put_failed(&now, true);
    assert!(own.dht_peer_appeared(&now.plus_secs(19)).is_empty());
    assert_eq!(own.dht_peer_appeared(&now.plus_secs(20)).len(), 1);
    assert_eq!(super::put_backoff(20), 600);
    own.put_succeeded();
    // A put that asked no peer (an empty table) is retried by the first peer at once.
    own.put_failed(&now, false);
    assert_eq!(own.dht_peer_appeared(&now).len(), 1);
    // After a withdrawal, the retry puts the withdrawal.
    let _ = own.withdraw(&view, &now).unwrap();
    own.put_failed(&now, true);
    let retry = own.dht_peer_appeared(&now.plus_secs(10));
    let [Action::PutOwnRecord(record)] = retry.as_slice() else {
        panic!("one put, got {retry:?}")
    };
    let entry = mesh_advert::kad::validate_record(record, &now).unwrap();
    assert!(matches!(entry, mesh_advert::kad::DhtEntry::Withdrawn(_)));
}
