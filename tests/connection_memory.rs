//! What an open connection costs the node in memory: a running node and 48 stock
//! libp2p peers (TCP, Noise, yamux, nothing else) that connect to it over loopback. The
//! heap the process holds grows by each connection's share on both sides; the node's
//! share is its connection task (with the node's connection handler, `node::boxed`), its
//! Noise and yamux state and what its components keep per connection. One test alone
//! in this binary: the allocator's count is process-wide.
#![cfg(all(unix, not(target_arch = "wasm32")))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::swarm::dummy;
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::heap::live;
use mesh_testkit::node::{loopback_config, start_node};
use mesh_testkit::{Net, net_swarm};

/// jemalloc, as `meshd` runs it; its statistics give the bytes the program holds.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PEERS: usize = 48;
const WAIT: Duration = Duration::from_secs(30);
/// The most a connection may add to the heap, both ends together (this test's debug
/// build). Measured: 104-113 KB with the node's handler boxed, 132-139 KB before, when
/// the connection task held the node's 10 KB handler in several places of its state
/// (release builds: about 28 KB less per connection at the node; BENCHMARKS, *Swarms*,
/// thirtieth session).
const MOST_PER_CONNECTION: isize = 120 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_connection_costs_the_node_its_state_once() {
    let mut config = loopback_config();
    // All 48 come from 127.0.0.1 at once (16 pending from one address by default).
    config.limits.max_pending_incoming_per_ip = PEERS as u32;
    let node = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    let addr = node.p2p_addr();
    let mut peers: Vec<_> = (0..PEERS)
        .map(|_| {
            let key = NodeKeypair::generate().to_libp2p();
            net_swarm(&key, Net::Tcp, Duration::from_secs(300), dummy::Behaviour)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = live();
    for p in &mut peers {
        p.dial(addr.clone()).unwrap();
    }
    let mut tasks = Vec::new();
    for mut p in peers {
        tasks.push(tokio::spawn(async move {
            loop {
                p.select_next_some().await;
            }
        }));
    }
    let deadline = Instant::now() + WAIT;
    let mut connected = 0;
    while Instant::now() < deadline {
        connected = node.handle.status().await.unwrap().connected_peers;
        if connected >= PEERS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(connected, PEERS, "peers connected within {WAIT:?}");
    // Let identify and the other first exchanges end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per = (live() - before) / PEERS as isize;
    assert_eq!(
        node.handle.status().await.unwrap().connected_peers,
        PEERS,
        "the connections stayed open"
    );
    println!("{per} bytes per connection, both ends");
    assert!(
        per <= MOST_PER_CONNECTION,
        "a connection costs {per} bytes (at most {MOST_PER_CONNECTION})"
    );
    for t in tasks {
        t.abort();
    }
}
