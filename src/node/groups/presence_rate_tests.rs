//! The budgets of presences handed over by gossip (`presence_rate`), strangers' and
//! members', per forwarding network.

use libp2p::PeerId;
use libp2p::gossipsub::MessageAcceptance;
use mesh_core::NodeKeypair;
use mesh_signal::group::{DiscoveryKey, GroupConfig};

use super::Groups;
use super::component_tests::{groups, leave, presence, via};
use crate::node::view::Now;
use crate::node::view::fake::FakeView;

/// Presences of strangers (fresh keys, each within its own author's rate) handed over by
/// one neighbour are taken within that neighbour's budget, then ignored (neither taken
/// nor forwarded); another neighbour's are taken; members' presences are not counted.
#[test]
fn strangers_presences_from_one_neighbour_are_taken_within_its_budget() {
    let (_, mut g) = groups();
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let burst = super::presence_rate::STRANGERS_PER_FORWARDER.burst as usize;
    let mut taken = 0;
    for _ in 0..burst + 20 {
        let stranger = NodeKeypair::generate();
        let author = stranger.node_id().to_peer_id().ok();
        let data = presence(&stranger, &k, "announce", &now.ts);
        let (v, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
        taken += usize::from(v == MessageAcceptance::Accept);
    }
    assert_eq!(taken, burst, "one neighbour's strangers beyond its budget");
    let other = NodeKeypair::generate();
    let data = presence(&other, &k, "announce", &now.ts);
    let author = other.node_id().to_peer_id().ok();
    let elsewhere = PeerId::random();
    let (v, _) = g.on_gossip(k, author, elsewhere, &data, &FakeView::default(), &now.ts);
    assert_eq!(v, MessageAcceptance::Accept, "another neighbour's stranger");
    // A member's next presence (its `leave`) through the spent neighbour is taken.
    let later = now.ts.plus_secs(5);
    let bye = leave(&other, &k, &later);
    let (v, _) = g.on_gossip(k, author, via(), &bye, &FakeView::default(), &later);
    assert_eq!(v, MessageAcceptance::Accept, "a member's presence");
}

/// A stranger's presence the table refuses (full of members this node is connected to)
/// costs its neighbour's budget nothing: once there is room, the neighbour's next
/// stranger is taken.
#[test]
fn strangers_presences_the_table_refuses_cost_no_budget() {
    let key = NodeKeypair::generate();
    let config = GroupConfig {
        max_members: 2,
        ..GroupConfig::default()
    };
    let mut g = Groups::new(key, config, super::check::CHECK_EVERY);
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let mut full = FakeView::default();
    for _ in 0..2 {
        let member = NodeKeypair::generate();
        let author = member.node_id().to_peer_id().ok();
        let data = presence(&member, &k, "announce", &now.ts);
        let (v, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
        assert_eq!(v, MessageAcceptance::Accept);
        full.connected.insert(author.unwrap(), Vec::new());
    }
    let burst = super::presence_rate::STRANGERS_PER_FORWARDER.burst as usize;
    for _ in 0..burst {
        let stranger = NodeKeypair::generate();
        let author = stranger.node_id().to_peer_id().ok();
        let data = presence(&stranger, &k, "announce", &now.ts);
        let (v, _) = g.on_gossip(k, author, via(), &data, &full, &now.ts);
        assert_eq!(v, MessageAcceptance::Ignore, "refused by the full table");
    }
    // Room again (the members no longer connected): the neighbour's stranger is taken.
    let stranger = NodeKeypair::generate();
    let author = stranger.node_id().to_peer_id().ok();
    let data = presence(&stranger, &k, "announce", &now.ts);
    let (v, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &now.ts);
    assert_eq!(
        v,
        MessageAcceptance::Accept,
        "the refused ones took its budget"
    );
}

/// Members' presences handed over by one neighbour are taken within that neighbour's
/// budget of members' presences: its fresh keys, once members (here by another
/// neighbour), each within its own author's rate, used to be taken and forwarded without
/// end (1,024 keys at once through the strangers' budget, then each at its own rate).
#[test]
fn members_presences_from_one_neighbour_are_taken_within_its_budget() {
    let config = GroupConfig {
        max_members: 4096,
        ..GroupConfig::default()
    };
    let mut g = Groups::new(NodeKeypair::generate(), config, super::check::CHECK_EVERY);
    let now = Now::current();
    let k = DiscoveryKey::from_name("party");
    g.join(k).unwrap();
    let burst = super::presence_rate::MEMBERS_PER_FORWARDER.burst as usize;
    let keys: Vec<NodeKeypair> = (0..burst + 20).map(|_| NodeKeypair::generate()).collect();
    // Members first, each handed over by a neighbour of its own network.
    for key in &keys {
        let data = presence(key, &k, "announce", &now.ts);
        let author = key.node_id().to_peer_id().ok();
        let (v, _) = g.on_gossip(
            k,
            author,
            PeerId::random(),
            &data,
            &FakeView::default(),
            &now.ts,
        );
        assert_eq!(v, MessageAcceptance::Accept);
    }
    // Then each member's next presence (its `leave`), all through one neighbour.
    let later = now.ts.plus_secs(5);
    let taken = keys
        .iter()
        .filter(|key| {
            let data = leave(key, &k, &later);
            let author = key.node_id().to_peer_id().ok();
            let (v, _) = g.on_gossip(k, author, via(), &data, &FakeView::default(), &later);
            v == MessageAcceptance::Accept
        })
        .count();
    assert_eq!(
        taken, burst,
        "one neighbour's members' presences beyond its budget"
    );
}
