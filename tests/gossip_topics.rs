//! A peer's gossipsub subscriptions, as the node keeps them: topic names are bounded in
//! length and a peer holds at most `MAX_TOPICS_PER_PEER` topics, however many it
//! announces (libp2p's default filter keeps every topic a connected peer names). The
//! node's gossipsub (`libmesh::node::build::gossipsub`) against a plain libp2p
//! gossipsub peer, over libp2p's memory transport.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use libmesh::node::gossip_filter::{Gossipsub, MAX_TOPIC_BYTES, MAX_TOPICS_PER_PEER};
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p_swarm_test::SwarmExt;
use mesh_core::NodeKeypair;

const WAIT: Duration = Duration::from_secs(30);
/// The network every peer counts under where a test sets a share.
const ONE_NETWORK: u128 = 7;

fn topics_of(node: &Swarm<Gossipsub>, peer: &libp2p::PeerId) -> Vec<String> {
    node.behaviour()
        .all_peers()
        .find(|(p, _)| *p == peer)
        .map(|(_, ts)| ts.iter().map(|t| t.as_str().to_owned()).collect())
        .unwrap_or_default()
}

/// Drives both swarms until the node has received a message on `marker` from the peer
/// (so it has handled every subscription the peer sent before it).
async fn until_marker(node: &mut Swarm<Gossipsub>, peer: &mut Swarm<gossipsub::Behaviour>) {
    let run = async {
        loop {
            tokio::select! {
                ev = node.select_next_some() => {
                    if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) = ev
                        && message.data == b"marker"
                    {
                        return;
                    }
                }
                _ = peer.select_next_some() => {}
            }
        }
    };
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the marker message did not arrive");
}

/// Drives both swarms until `done` holds for them (at most `WAIT`).
async fn drive_until(
    node: &mut Swarm<Gossipsub>,
    peer: &mut Swarm<gossipsub::Behaviour>,
    what: &str,
    done: impl Fn(&Swarm<Gossipsub>, &Swarm<gossipsub::Behaviour>) -> bool,
) {
    let run = async {
        while !done(node, peer) {
            tokio::select! {
                _ = node.select_next_some() => {}
                _ = peer.select_next_some() => {}
            }
        }
    };
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("not {what} within {WAIT:?}"));
}

/// Drives both swarms until the node sees `peer` in `topic`.
async fn until_subscribed(
    node: &mut Swarm<Gossipsub>,
    peer: &mut Swarm<gossipsub::Behaviour>,
    topic: &str,
) {
    drive_until(node, peer, "subscribed", |n, p| {
        topics_of(n, p.local_peer_id()).iter().any(|t| t == topic)
    })
    .await;
}

/// The peer subscribes to `n` made-up topics (`many/0`…) and then to `marker`; driven
/// until the node sees it in `marker`.
async fn subscribe_many(
    node: &mut Swarm<Gossipsub>,
    peer: &mut Swarm<gossipsub::Behaviour>,
    n: usize,
    marker: &IdentTopic,
) {
    for i in 0..n {
        let t = IdentTopic::new(format!("many/{i}"));
        peer.behaviour_mut().subscribe(&t).unwrap();
    }
    peer.behaviour_mut().subscribe(marker).unwrap();
    until_subscribed(node, peer, "marker").await;
}

/// Drops the peer and drives the node until it is gone.
async fn until_gone(node: &mut Swarm<Gossipsub>, peer: Swarm<gossipsub::Behaviour>) {
    let gone = *peer.local_peer_id();
    drop(peer);
    let run = async {
        while node.behaviour().all_peers().any(|(p, _)| *p == gone) {
            node.select_next_some().await;
        }
    };
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the peer left");
}

/// The node's gossipsub (its peers' subscriptions capped at `cap`, if given, and the
/// peers of one network at `share`, every connection from the `from`th on (0 the first)
/// counted as one network, the ones before under none) connected to a plain libp2p
/// gossipsub peer, the node in the topic `marker`.
async fn node_and_peer(
    cap: Option<usize>,
    share: Option<(usize, usize)>,
) -> (Swarm<Gossipsub>, Swarm<gossipsub::Behaviour>, IdentTopic) {
    let node_key = NodeKeypair::generate();
    let mut gs = libmesh::node::build::gossipsub(node_key.to_libp2p(), 64 * 1024).unwrap();
    if let Some(cap) = cap {
        gs.set_max_peer_subscriptions(cap);
    }
    if let Some((share, from)) = share {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        gs.set_max_network_subscriptions(share, move |_, _| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (n >= from).then_some(ONE_NETWORK)
        });
    }
    let mut node = mesh_testkit::swarm_with(&node_key, gs);
    let peer_key = NodeKeypair::generate();
    let plain = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(peer_key.to_libp2p()),
        gossipsub::Config::default(),
    )
    .unwrap();
    let mut peer = mesh_testkit::swarm_with(&peer_key, plain);
    node.listen().with_memory_addr_external().await;
    peer.connect(&mut node).await;
    let marker = IdentTopic::new("marker");
    node.behaviour_mut().subscribe(&marker).unwrap();
    (node, peer, marker)
}

#[tokio::test]
async fn a_peer_holds_a_bounded_number_of_topics_with_bounded_names() {
    let (mut node, mut peer, marker) = node_and_peer(None, None).await;

    // Ten ordinary topics and one name over the bound.
    let long = "x".repeat(MAX_TOPIC_BYTES + 1);
    for i in 0..10 {
        let t = IdentTopic::new(format!("ok/{i}"));
        peer.behaviour_mut().subscribe(&t).unwrap();
    }
    peer.behaviour_mut()
        .subscribe(&IdentTopic::new(long.clone()))
        .unwrap();
    peer.behaviour_mut().subscribe(&marker).unwrap();
    until_subscribed(&mut node, &mut peer, "marker").await;
    let held = topics_of(&node, peer.local_peer_id());
    assert_eq!(held.len(), 11, "{held:?}");
    assert!(
        !held.contains(&long),
        "a name of {} bytes was kept",
        long.len()
    );

    // Then many more, one announcement each: the peer holds MAX_TOPICS_PER_PEER at most.
    let more = MAX_TOPICS_PER_PEER + 100;
    for i in 0..more {
        let t = IdentTopic::new(format!("many/{i}"));
        peer.behaviour_mut().subscribe(&t).unwrap();
    }
    // A message on the marker topic comes after the announcements on the same stream.
    until_marker_published(&mut node, &mut peer, &marker).await;
    let held = topics_of(&node, peer.local_peer_id());
    assert!(
        held.len() <= MAX_TOPICS_PER_PEER,
        "{} topics held for one peer (it announced {})",
        held.len(),
        11 + more
    );
    assert!(held.iter().any(|t| t == "ok/0"), "earlier topics stay");
}

/// Publishes the marker from the peer once it knows the node is in the marker topic,
/// and waits for it at the node.
async fn until_marker_published(
    node: &mut Swarm<Gossipsub>,
    peer: &mut Swarm<gossipsub::Behaviour>,
    marker: &IdentTopic,
) {
    let hash = marker.hash();
    drive_until(node, peer, "seen by the peer", |n, p| {
        let id = n.local_peer_id();
        p.behaviour()
            .all_peers()
            .any(|(q, ts)| q == id && ts.contains(&&hash))
    })
    .await;
    peer.behaviour_mut()
        .publish(marker.clone(), b"marker".to_vec())
        .unwrap();
    until_marker(node, peer).await;
}

/// The peers' subscriptions all together are bounded (set low here), except on a topic
/// the node is in (also one it joins later: the peer's GRAFT shows the subscription);
/// a peer that leaves takes its subscriptions out of the count.
#[tokio::test]
async fn the_peers_subscriptions_together_are_bounded_but_not_on_the_nodes_topics() {
    let (mut node, mut peer, marker) = node_and_peer(Some(20), None).await;
    subscribe_many(&mut node, &mut peer, 30, &marker).await;
    let held = topics_of(&node, peer.local_peer_id());
    assert_eq!(
        held.len(),
        21,
        "20 at the cap, and the node's own topic: {held:?}"
    );
    assert_eq!(node.behaviour().peer_subscriptions(), 21);

    // A topic the node joins after the peer's subscription to it was ignored: the
    // peer's GRAFT, once it sees the node in the topic, shows it subscribed.
    let later = IdentTopic::new("later");
    peer.behaviour_mut().subscribe(&later).unwrap();
    let marker2 = IdentTopic::new("marker2");
    node.behaviour_mut().subscribe(&marker2).unwrap();
    peer.behaviour_mut().subscribe(&marker2).unwrap();
    until_subscribed(&mut node, &mut peer, "marker2").await;
    let held = topics_of(&node, peer.local_peer_id());
    assert!(!held.iter().any(|t| t == "later"), "{held:?}");
    node.behaviour_mut().subscribe(&later).unwrap();
    until_subscribed(&mut node, &mut peer, "later").await;
    assert_eq!(node.behaviour().peer_subscriptions(), 23);

    until_gone(&mut node, peer).await;
    assert_eq!(node.behaviour().peer_subscriptions(), 0);
}

/// The peers of one network hold at most their share of subscriptions together (set
/// low here), except on a topic the node is in; the node's own function
/// (`gossip_filter::network_of`) gives loopback and the memory transport no network, so
/// the test counts every peer as one. A peer that leaves takes its subscriptions out.
#[tokio::test]
async fn one_networks_peers_hold_their_share_of_the_subscriptions() {
    let (mut node, mut peer, marker) = node_and_peer(None, Some((10, 0))).await;
    subscribe_many(&mut node, &mut peer, 30, &marker).await;
    let held = topics_of(&node, peer.local_peer_id());
    assert_eq!(
        held.len(),
        11,
        "10 at the share, and the node's own topic: {held:?}"
    );
    assert_eq!(
        node.behaviour().network_subscriptions().get(&ONE_NETWORK),
        Some(&11)
    );
    until_gone(&mut node, peer).await;
    assert!(node.behaviour().network_subscriptions().is_empty());
}

/// A peer whose first connection gave no network (relayed, say) and a later one does
/// brings the subscriptions it holds into that network's count: its unsubscribing and
/// leaving then take out only what was counted (a count left short would let the
/// network's other peers past their share).
#[tokio::test]
async fn a_peer_that_gets_a_network_later_brings_its_subscriptions_into_the_count() {
    let (mut node, mut peer, marker) = node_and_peer(None, Some((1000, 1))).await;
    subscribe_many(&mut node, &mut peer, 5, &marker).await;
    assert!(node.behaviour().network_subscriptions().is_empty());
    // A second connection, which gives the peer its network.
    peer.connect(&mut node).await;
    assert_eq!(
        node.behaviour().network_subscriptions().get(&ONE_NETWORK),
        Some(&6),
        "the five topics and the marker"
    );
    until_gone(&mut node, peer).await;
    assert!(node.behaviour().network_subscriptions().is_empty());
}
