//! What gossipsub keeps of a peer that connected once and left: its score entry, for
//! `GOSSIP_RETAIN_SCORE` (30 s), not libp2p's default hour. Every connection, from any
//! peer, adds one, and fresh keys cost nothing, so with the default a few hundred
//! handshakes a second held a million entries. One test alone in this binary: the
//! allocator's count is process-wide.
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::build::{GOSSIP_RETAIN_SCORE, gossipsub};
use libp2p::swarm::{Swarm, SwarmEvent, dummy};
use libp2p_swarm_test::SwarmExt;
use mesh_testkit::heap::live;

/// jemalloc, as `meshd` runs it; its statistics give the bytes the program holds.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CHURN: usize = 1_000;

/// Drives `g` for `d`.
async fn drive<B: libp2p::swarm::NetworkBehaviour>(g: &mut Swarm<B>, d: Duration) {
    let _ = tokio::time::timeout(d, async {
        loop {
            g.select_next_some().await;
        }
    })
    .await;
}

/// One peer with a fresh key connects to `g` and goes away.
async fn churn_one<B: libp2p::swarm::NetworkBehaviour>(g: &mut Swarm<B>, addr: &libp2p::Multiaddr) {
    let mut c = Swarm::new_ephemeral_tokio(|_| dummy::Behaviour);
    let peer = *c.local_peer_id();
    c.dial(addr.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Both sides up.
    let mut up = (false, false);
    while !(up.0 && up.1) {
        assert!(Instant::now() < deadline, "no connection");
        tokio::select! {
            e = g.select_next_some() => if let SwarmEvent::ConnectionEstablished { peer_id, .. } = e {
                up.0 |= peer_id == peer;
            },
            e = c.select_next_some() => if let SwarmEvent::ConnectionEstablished { .. } = e {
                up.1 = true;
            },
        }
    }
    drop(c);
    while g.is_connected(&peer) {
        assert!(Instant::now() < deadline, "the connection never closed");
        g.select_next_some().await;
    }
}

/// Two rounds of 1,000 peers that connect once and leave, the retention between them:
/// the second round takes no memory the first did not (its entries take the places the
/// first's left). With libp2p's hour both rounds' entries were held, and the table
/// grew again.
#[tokio::test]
async fn a_peer_that_left_costs_nothing_after_the_retention() {
    let mut g = Swarm::new_ephemeral_tokio(|k| gossipsub(k, 64 * 1024).unwrap());
    let (addr, _) = g.listen().with_memory_addr_external().await;
    // Warm up (tables, the allocator's caches).
    for _ in 0..50 {
        churn_one(&mut g, &addr).await;
    }
    let start = live();
    for _ in 0..CHURN {
        churn_one(&mut g, &addr).await;
    }
    let first = (live() - start) / CHURN as isize;
    // Past the retention (scores are refreshed once a second).
    drive(&mut g, GOSSIP_RETAIN_SCORE + Duration::from_secs(3)).await;
    let before = live();
    for _ in 0..CHURN {
        churn_one(&mut g, &addr).await;
    }
    // Time for the last connections' tasks to end and free what they held (on a
    // loaded machine 500 ms left some 50 bytes a peer still live).
    drive(&mut g, Duration::from_secs(3)).await;
    let second = (live() - before) / CHURN as isize;
    eprintln!("bytes per peer gone: first round {first}, second round {second}");
    assert!(
        first > 150,
        "the first round's entries take memory ({first} B per peer)"
    );
    assert!(
        second < 60,
        "the second round took {second} B per peer: the first's entries were still held"
    );
}
