//! A WebRTC-direct peer's SCTP data cannot grow the node beyond its receive window, gaps
//! or no gaps. Each libp2p stream over WebRTC is an SCTP stream, and webrtc-sctp held:
//! - **every chunk that came after a gap** until the gap filled: the receive window
//!   counts only what the application has not read, and a stream's application reads
//!   in stream order, past the gap. A peer that never sent one TSN had the node keep all
//!   it sent afterwards for as long as the association lived;
//! - **every chunk below the highest TSN received, beyond the receive window**, as a
//!   "missing" chunk: one chunk of the peer's far ahead made all the rest of its data
//!   come in while the application read nothing.
//!
//! Now held chunks cost at most twice the receive window (1 MiB), and missing chunks are
//! taken up to twice the window (`vendor/webrtc-sctp/PATCHED.md`).
//!
//! The hostile peer runs as a process of its own: the patched `webrtc-sctp` makes every
//! association of a process send as a test asks (`set_outbound_for_tests`), and the
//! node, in this process, must not. It ignores the node's windows and writes 48 MiB on
//! one stream; the node's heap (jemalloc's count of this process, so one test in this
//! file) is measured around it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::AsyncWriteExt;
use libmesh::node::NodeConfig;
use libp2p::StreamProtocol;
use mesh_testkit::heap::live;
use mesh_testkit::node::loopback_config;
use webrtc_sctp::association::OutboundForTests;

#[path = "support/child_peer.rs"]
mod child_peer;
#[path = "support/listen.rs"]
mod listen;
#[path = "support/webrtc_streams.rs"]
mod webrtc_streams;
use child_peer::ChildPeer;
use webrtc_streams::{hostile_client, hostile_target, peer_of, webrtc_node_with};

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the hostile peer is told: the node's address, how it sends, on which protocol.
const TARGET_ENV: &str = "MESH_TEST_GAPS_TARGET";
const MODE_ENV: &str = "MESH_TEST_GAPS_MODE";
const PROTOCOL_ENV: &str = "MESH_TEST_GAPS_PROTOCOL";

/// What the hostile peer writes on its stream.
const UPLOAD: usize = 48 << 20;

/// What the hostile peer writes in one-byte messages, each in a padded packet.
const SMALL_UPLOAD: usize = 40_000;

/// How long the peer resends padded after its writes ([`OutboundForTests::GapPadded`]).
const PADDED_RESENDS: Duration = Duration::from_secs(6);

/// The most the node may have grown by once the peer stopped writing it one-byte
/// messages.
const SMALL_GROWTH_LIMIT: isize = 8 << 20;

/// The most the node may grow by at any time while the peer writes it.
const GROWTH_LIMIT: isize = 16 << 20;

/// A protocol whose server reads all it gets (and answers only at the end).
const PERF: StreamProtocol = StreamProtocol::new("/perf/1.0.0");
/// A protocol whose server stops reading when its answers are not read.
const PING: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");

/// How much the node's heap grew while a hostile peer wrote it, and what the peer said
/// of its writing.
struct Growth {
    /// The most it grew at any time (sampled every 20 ms).
    peak: isize,
    /// What it had grown by 5 s after the peer went quiet.
    settled: isize,
    wrote: String,
}

/// Runs the hostile peer, sending as `mode` says on a `protocol` stream, against a fresh
/// node serving perf.
async fn growth(mode: OutboundForTests, protocol: &StreamProtocol) -> Growth {
    let config = NodeConfig {
        perf: true,
        ..loopback_config()
    };
    let (node, target) = webrtc_node_with(config).await;
    // What the phase before freed is gone by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = live();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let sampling = Arc::clone(&sampling);
        async move {
            let mut peak = before;
            while sampling.load(Ordering::SeqCst) {
                peak = peak.max(live());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        }
    });
    let hostile = ChildPeer::spawn(
        "gap_peer",
        &[
            (TARGET_ENV, target.to_string()),
            (MODE_ENV, (mode as u8).to_string()),
            (PROTOCOL_ENV, protocol.to_string()),
        ],
    );
    let wrote = hostile.line("done ", Duration::from_secs(240)).await;
    let wrote = wrote.unwrap_or_else(|| panic!("the peer did not finish:\n{}", hostile.said()));
    let quiet = hostile.line("quiet", PADDED_RESENDS * 2).await;
    assert!(
        quiet.is_some(),
        "the peer did not quieten:\n{}",
        hostile.said()
    );
    // What it sent last is on its way, and the node's replies drain.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let settled = live() - before;
    sampling.store(false, Ordering::SeqCst);
    let peak = sampler.await.unwrap().max(before + settled) - before;
    eprintln!(
        "{mode:?} on {protocol}: the peer wrote {wrote}; the node grew by {peak} bytes at \
         most, {settled} in the end"
    );
    drop(hostile);
    drop(node);
    Growth {
        peak,
        settled,
        wrote,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_leaves_gaps_cannot_grow_the_node() {
    // A gap that never fills, while the server reads all that comes past it.
    let g = growth(OutboundForTests::Gap, &PERF).await;
    assert!(
        g.peak < GROWTH_LIMIT,
        "the node held the data behind a gap: it grew by {} bytes ({})",
        g.peak,
        g.wrote
    );
    // A gap, and one-byte chunks each in a packet of 1.4 KB (padded with a heartbeat).
    let g = growth(OutboundForTests::GapPadded, &PERF).await;
    assert!(
        g.peak < GROWTH_LIMIT,
        "the node queued its replies to the heartbeats: it grew by {} bytes ({})",
        g.peak,
        g.wrote
    );
    assert!(
        g.settled < SMALL_GROWTH_LIMIT,
        "the node held the packets of the chunks behind a gap: it grew by {} bytes ({})",
        g.settled,
        g.wrote
    );
    // One chunk far ahead, while the server reads nothing.
    let g = growth(OutboundForTests::AheadCopy, &PING).await;
    assert!(
        g.peak < GROWTH_LIMIT,
        "the node took missing chunks beyond its window: it grew by {} bytes ({})",
        g.peak,
        g.wrote
    );
}

/// The hostile peer of the test above, run by it as a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the hostile peer of the test above, run by it as a process of its own"]
async fn gap_peer() {
    let Some(target) = hostile_target(TARGET_ENV) else {
        return;
    };
    let mode = match std::env::var(MODE_ENV).unwrap().as_str() {
        "1" => OutboundForTests::Gap,
        "2" => OutboundForTests::AheadCopy,
        "5" => OutboundForTests::GapPadded,
        other => panic!("mode {other}"),
    };
    let protocol = StreamProtocol::try_from_owned(std::env::var(PROTOCOL_ENV).unwrap()).unwrap();
    let mut control = hostile_client(&target).await;
    // From here on, this process's SCTP sends as a hostile peer: the stream's opening
    // comes first.
    webrtc_sctp::association::set_outbound_for_tests(mode);
    let wait = Duration::from_secs(10);
    // The stream's opening may be the chunk left out, or wait behind it on a loaded
    // machine: a second or third stream opens behind the same gap.
    let mut opened = None;
    for attempt in 0..3 {
        match tokio::time::timeout(
            Duration::from_secs(30),
            control.open_stream(peer_of(&target), protocol.clone()),
        )
        .await
        {
            Ok(Ok(stream)) => {
                opened = Some(stream);
                break;
            }
            other => println!("open {attempt} failed: {other:?}"),
        }
    }
    let mut stream = opened.expect("no stream opened in 3 attempts");
    // Perf's request: nothing back.
    stream.write_all(&0u64.to_be_bytes()).await.unwrap();
    // Padded, small messages, one a chunk (a flush each): the packet is what they hold.
    let padded = mode == OutboundForTests::GapPadded;
    let (buffer, upload) = if padded {
        (vec![0u8; 1], SMALL_UPLOAD)
    } else {
        (vec![0u8; 64 * 1024], UPLOAD)
    };
    let mut wrote = 0;
    let mut stopped = None;
    while wrote < upload {
        let write = async {
            stream.write_all(&buffer).await?;
            if padded {
                stream.flush().await?;
            }
            std::io::Result::Ok(())
        };
        match tokio::time::timeout(wait, write).await {
            Ok(Ok(())) => wrote += buffer.len(),
            Ok(Err(e)) => {
                stopped = Some(e.to_string());
                break;
            }
            Err(_) => {
                stopped = Some("no progress in 10 s".into());
                break;
            }
        }
    }
    let _ = tokio::time::timeout(wait, stream.flush()).await;
    println!("done {wrote} bytes (stopped: {stopped:?})");
    if padded {
        // Its resends (the chunks the node dropped) go padded for a while, a heartbeat
        // each, in bursts; then unpadded (the gap stays), so that the node's replies drain
        // before its heap is measured.
        tokio::time::sleep(PADDED_RESENDS).await;
        webrtc_sctp::association::set_outbound_for_tests(OutboundForTests::Gap);
    }
    println!("quiet");
    // Held until the test ends this process.
    tokio::time::sleep(Duration::from_secs(300)).await;
}
