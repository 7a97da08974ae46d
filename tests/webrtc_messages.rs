//! Over WebRTC, libp2p's messages of up to 16 KiB pass both ways, whatever the writes
//! that make them. Each libp2p WebRTC message is one data channel message, and a frame
//! may carry 16 KiB; webrtc-rs and libp2p-webrtc failed the stream:
//! - at the reader, on any message over 8 KiB: libp2p-webrtc reads from a clone of the
//!   channel whose read buffer it set to 16 KiB, and the clone went back to 8 KiB
//!   ("Short buffer (size: 8192)"; rust-libp2p#4049);
//! - at the writer, when a small write went unflushed before a large one (a length
//!   prefix, perf's request): libp2p-webrtc-utils joined the frames into one message over
//!   the channel's 16 KiB ("outbound packet larger than maximum message size").
//!
//! So a browser, js-libp2p or rust-libp2p peer that uploaded a few KiB at a time lost
//! its stream. Here a perf run moves 4 MiB each way between a bare rust-libp2p WebRTC
//! peer and a node (`vendor/webrtc-data/PATCHED.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use libmesh::node::NodeConfig;
use libmesh::perf::RunParams;
use mesh_testkit::node::loopback_config;

#[path = "support/listen.rs"]
mod listen;
#[path = "support/webrtc_streams.rs"]
mod webrtc_streams;
use webrtc_streams::{connect, webrtc_node_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_moves_16_kib_messages_both_ways_over_webrtc() {
    let config = NodeConfig {
        perf: true,
        ..loopback_config()
    };
    let (node, target) = webrtc_node_with(config).await;
    let mut client = connect(&target).await;
    let mut control = client.behaviour().new_control();
    let driving = tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });
    let params = RunParams {
        upload_bytes: 4 << 20,
        download_bytes: 4 << 20,
    };
    let run = tokio::time::timeout(
        Duration::from_secs(120),
        libmesh::perf::run(&mut control, node.peer, params),
    )
    .await
    .expect("the perf run did not end in 120 s");
    driving.abort();
    let stats = run.expect("the perf run failed");
    assert_eq!((stats.uploaded, stats.downloaded), (4 << 20, 4 << 20));
}
