//! A WebRTC-direct connection does not grow with the streams it has opened. Each libp2p
//! stream over WebRTC is a data channel, and webrtc-rs kept every data channel a peer
//! connection ever had (its `RTCDataChannel`, the SCTP stream under it, its label and
//! protocol) until the peer connection closed: a peer that opened and dropped streams
//! on one long-lived connection grew the node's memory without bound, at link speed
//! (`vendor/webrtc/PATCHED.md`). A client opens streams one after another for a
//! protocol the node does not speak (each a data channel opened, negotiated, refused
//! and dropped); the process's heap (node and client, on jemalloc as `meshd` runs) is
//! measured before and after. Streams answered and closed: `webrtc_channels_closed.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use libp2p::{PeerId, StreamProtocol};
use mesh_testkit::heap::live;

#[path = "support/listen.rs"]
mod listen;
#[path = "support/webrtc_streams.rs"]
mod webrtc_streams;
use webrtc_streams::{WAIT, growth_per_stream, node_and_client};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A protocol the node does not speak.
const UNSPOKEN: StreamProtocol = StreamProtocol::new("/libmesh-test/unspoken/1");

/// Opens `n` streams to `peer`, one after another; each is refused by the node.
async fn open_streams(control: &mut libp2p_stream::Control, peer: PeerId, n: usize) {
    for i in 0..n {
        let opened = tokio::time::timeout(WAIT, control.open_stream(peer, UNSPOKEN))
            .await
            .unwrap_or_else(|_| panic!("stream {i} not answered in {WAIT:?}"));
        match opened {
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => {}
            other => panic!("stream {i}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_opened_and_dropped_do_not_grow_a_webrtc_connection() {
    let (node, mut control, driving) = node_and_client().await;
    // Warm up (the SCTP association's and the swarm's first allocations), then measure.
    // What the heap holds moves by some 0.4 MB between runs whatever the streams (as
    // much with 6,000 streams as with 2,000): the bound is per stream, well under the
    // 3,390 bytes a stream kept before the fix.
    open_streams(&mut control, node.peer, 200).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = live();
    const STREAMS: usize = 2000;
    open_streams(&mut control, node.peer, STREAMS).await;
    let per_stream = growth_per_stream(before, STREAMS, Duration::from_secs(1), driving).await;
    assert!(
        per_stream < 1024,
        "the heap grew by {per_stream} bytes a stream over {STREAMS} streams opened and \
         dropped (3,390 before the fix)"
    );
}
