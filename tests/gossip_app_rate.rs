//! What the node takes on the application's gossipsub topics (`node::app_topics`): the
//! messages one network's peers hand over within `limits.app_gossip_per_network` a
//! second (bursts of ten seconds' worth), the rest ignored (neither delivered to the
//! application nor forwarded). A composed node and a plain libp2p gossipsub peer that
//! publishes as fast as it can, over loopback TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::config::Limits;
use libmesh::node::{Bootstrap, BootstrapName, NodeConfig, NodeEvent};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity};
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::node::start_node;
use mesh_testkit::{Net, net_swarm};

const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "app/rate";
/// Messages the peer publishes.
const SENT: usize = 60;
/// The node's rate for one network, a second (a burst of ten times as many).
const RATE: u32 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_network_gets_its_rate_of_application_messages_taken() {
    let mut node = start_node(
        NodeKeypair::generate(),
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            bootstrap: Bootstrap::Named(BootstrapName::None),
            limits: Limits {
                app_gossip_per_network: RATE,
                ..Limits::default()
            },
            ..NodeConfig::default()
        },
        Arc::new(NoTrace),
        WAIT,
    )
    .await;
    assert!(node.handle.subscribe(TOPIC.into()).await.unwrap());

    // A plain gossipsub peer: once the node's subscription reached it, it publishes
    // SENT messages at once.
    let key = Keypair::generate_ed25519();
    let behaviour: gossipsub::Behaviour = gossipsub::Behaviour::new(
        MessageAuthenticity::Signed(key.clone()),
        gossipsub::Config::default(),
    )
    .unwrap();
    let mut peer = net_swarm(&key, Net::Tcp, WAIT, behaviour);
    let topic = IdentTopic::new(TOPIC);
    peer.behaviour_mut().subscribe(&topic).unwrap();
    peer.dial(node.addr.clone()).unwrap();
    let node_peer = node.peer;
    let (published_tx, published_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut published = Some(published_tx);
        loop {
            if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. }) =
                peer.select_next_some().await
                && peer_id == node_peer
                && let Some(done) = published.take()
            {
                for i in 0..SENT {
                    peer.behaviour_mut()
                        .publish(topic.clone(), format!("message {i}"))
                        .unwrap();
                }
                let _ = done.send(Instant::now());
            }
        }
    });
    let start = tokio::time::timeout(WAIT, published_rx)
        .await
        .expect("the peer never saw the node's subscription")
        .unwrap();

    // What the node delivers within a few seconds.
    let end = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut delivered = 0usize;
    while let Ok(Some(e)) = tokio::time::timeout_at(end, node.events.recv()).await {
        if matches!(&e, NodeEvent::GossipMessage { topic, .. } if topic == TOPIC) {
            delivered += 1;
        }
    }
    let burst = (RATE * 10) as usize;
    let refilled = (start.elapsed().as_secs_f64() * f64::from(RATE)).ceil() as usize;
    assert!(
        delivered >= burst && delivered <= burst + refilled,
        "{delivered} of {SENT} delivered (burst {burst}, {refilled} refilled since)"
    );
}
