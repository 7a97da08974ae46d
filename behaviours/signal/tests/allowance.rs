//! The frames a node takes from the peers of one network before it checks a signature:
//! each peer's allowance, and the network's for all of them together. Peer ids cost
//! nothing, so counted per peer alone every fresh key that connected got a fresh
//! allowance of frames to make the node verify. Over TCP on loopback, to a node that
//! listens beyond loopback too (so 127.0.0.1 is one network to it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use mesh_core::{ErrorCode, NodeKeypair, RateLimit};
use mesh_signal::{Behaviour, Config, Event};
use mesh_testkit::hostile::HostilePeer;
use mesh_testkit::{Net, swarm_with};

/// Four fresh keys from one network, ten malformed frames each, against a node whose
/// peers may hand over 8 frames each and whose networks 12: 12 frames are read (and
/// refused as malformed), the other 28 refused "too many" unread. Counted per peer
/// alone, 32 were read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peers_of_one_network_share_its_allowance() {
    let key = NodeKeypair::generate();
    let mut node = swarm_with(
        &key,
        Behaviour::new(Config {
            per_peer: RateLimit::per_minute(8, 0),
            per_network: RateLimit::per_minute(12, 0),
            ..Config::new(key.node_id())
        }),
    );
    let addr = mesh_testkit::listen_beyond_loopback(&mut node).await;
    let wait = Duration::from_secs(10);
    let send = async {
        for _ in 0..4 {
            let t = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
            let peer = t.connect(addr.clone(), wait).await.unwrap();
            for _ in 0..10 {
                // An empty CBOR map: not a `signal-frame.v1`.
                t.send(peer, "/mesh/signal/1.0.0", &[0xa0], wait)
                    .await
                    .unwrap();
            }
        }
    };
    let mut refused = Vec::new();
    let work = async {
        tokio::pin!(send);
        loop {
            tokio::select! {
                () = &mut send => break,
                e = node.select_next_some() => {
                    if let SwarmEvent::Behaviour(Event::Refused { error, by_peer: false, .. }) = e {
                        refused.push(error.code);
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .expect("timed out");
    // The last answers' events may still be queued.
    let _ = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let SwarmEvent::Behaviour(Event::Refused {
                error,
                by_peer: false,
                ..
            }) = node.select_next_some().await
            {
                refused.push(error.code);
            }
        }
    })
    .await;
    let unread = refused
        .iter()
        .filter(|c| **c == ErrorCode::TransportRejected)
        .count();
    assert_eq!(refused.len(), 40, "{refused:?}");
    assert_eq!(40 - unread, 12, "frames read: {refused:?}");
}
