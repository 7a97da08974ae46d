//! A WebRTC-direct stream that was closed ends too, and what it sent arrives whole. The
//! node resets a closed stream's data channel only once what it wrote was acknowledged
//! and a grace has passed (an unpatched webrtc-rs peer drops what it has not read when
//! the reset comes; `vendor/libp2p-webrtc/PATCHED.md`). A client opens identify streams
//! one after another, reads each answer to its end, checks it whole and closes; once the
//! grace is over, the process's heap (node and client, on jemalloc as `meshd` runs) is
//! back where it was. Streams dropped unclosed: `webrtc_channels.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use mesh_testkit::heap::live;

#[path = "support/listen.rs"]
mod listen;
#[path = "support/webrtc_streams.rs"]
mod webrtc_streams;
use webrtc_streams::{WAIT, growth_per_stream, node_and_client};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An unsigned varint at the start of `buf`, and what follows it.
fn varint(buf: &[u8]) -> Option<(usize, &[u8])> {
    let mut value = 0usize;
    for (i, byte) in buf.iter().enumerate().take(9) {
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
}

/// Streams the node answers and closes (identify), each read to its end and closed by
/// the client: every answer arrives whole, and both ends reset the channels of closed
/// streams once their grace is over (5 s after what they wrote was acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_and_closed_streams_arrive_whole_and_end() {
    let (node, mut control, driving) = node_and_client().await;
    let identify = StreamProtocol::new("/ipfs/id/1.0.0");
    // `strict`: the close must succeed (fewer streams in grace than the node's 256).
    let mut answer = async |i: usize, strict: bool| {
        let mut stream =
            tokio::time::timeout(WAIT, control.open_stream(node.peer, identify.clone()))
                .await
                .unwrap_or_else(|_| panic!("stream {i} not answered in {WAIT:?}"))
                .unwrap_or_else(|e| panic!("stream {i}: {e}"));
        let mut buf = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stream {i}'s answer not read in {WAIT:?}"))
            .unwrap_or_else(|e| panic!("stream {i}'s answer: {e}"));
        // One length-prefixed message: the prefix says how much follows.
        let (len, rest) = varint(&buf)
            .unwrap_or_else(|| panic!("stream {i}'s answer ({} bytes): no length", buf.len()));
        assert_eq!(rest.len(), len, "stream {i}'s answer cut short");
        // Otherwise the close may find the channel reset already: the node resets at
        // once the channels of closed streams beyond the 256 of a connection in grace.
        let closed = stream.close().await;
        assert!(!strict || closed.is_ok(), "stream {i}'s close: {closed:?}");
    };
    for i in 0..50 {
        answer(i, true).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    let before = live();
    const STREAMS: usize = 1500;
    for i in 0..STREAMS {
        answer(i, false).await;
    }
    // Spent channels leave webrtc-rs's list when the next channel joins it: one more
    // stream once the grace of the others is over.
    tokio::time::sleep(Duration::from_secs(8)).await;
    answer(STREAMS, true).await;
    let per_stream = growth_per_stream(before, STREAMS, Duration::from_secs(1), driving).await;
    assert!(
        per_stream < 1024,
        "the heap grew by {per_stream} bytes a stream over {STREAMS} streams answered and \
         closed"
    );
}
