//! A WebRTC-direct peer's FORWARD TSN chunks (RFC 3758) cannot stall the node or cut its
//! own streams off. webrtc-sctp moved the cumulative TSN to a FORWARD TSN's new value one
//! TSN at a time: a chunk 2^31 - 1 ahead kept the association's task (and the runtime
//! worker under it) busy for seconds each, and once the cumulative TSN stood ahead of
//! what the peer sent, the peer's data was taken as old. Now a new cumulative TSN more
//! than 65,535 ahead is ignored, and one within reach is taken in one step
//! (`vendor/webrtc-sctp/PATCHED.md`).
//!
//! The hostile peer runs as a process of its own: the patched `webrtc-sctp` makes every
//! association of a process send as a test asks (`set_outbound_for_tests`), and the
//! node, in this process, must not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use webrtc_sctp::association::OutboundForTests;

#[path = "support/child_peer.rs"]
mod child_peer;
#[path = "support/listen.rs"]
mod listen;
#[path = "support/webrtc_streams.rs"]
mod webrtc_streams;
use child_peer::ChildPeer;
use webrtc_streams::{hostile_client, hostile_target, identify, peer_of, webrtc_node};

/// The node's address, for the hostile peer.
const TARGET_ENV: &str = "MESH_TEST_FORWARD_TSN_TARGET";
/// How many identify streams the peer opens after its FORWARD TSN chunks.
const AFTER: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_tsn_jumps_neither_stall_the_node_nor_cut_the_peer_off() {
    let (_node, target) = webrtc_node().await;
    let hostile = ChildPeer::spawn("jump_peer", &[(TARGET_ENV, target.to_string())]);
    let result = hostile.line("result: ", Duration::from_secs(120)).await;
    let result = result.unwrap_or_else(|| panic!("no result:\n{}", hostile.said()));
    assert_eq!(
        result,
        format!("{AFTER} answered"),
        "the node stopped answering after the jumps; the peer said:\n{}",
        hostile.said()
    );
}

/// The hostile peer of the test above, run by it as a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the hostile peer of the test above, run by it as a process of its own"]
async fn jump_peer() {
    let Some(target) = hostile_target(TARGET_ENV) else {
        return;
    };
    let mut control = hostile_client(&target).await;
    let peer = peer_of(&target);
    identify(&mut control, peer)
        .await
        .expect("no answer before the jumps");
    // The jumps go out behind the next stream's opening.
    webrtc_sctp::association::set_outbound_for_tests(OutboundForTests::ForwardTsnJumps);
    let trigger = identify(&mut control, peer).await.map(drop);
    println!("the stream the jumps went out with: {trigger:?}");
    let mut answered = 0;
    for _ in 0..AFTER {
        match identify(&mut control, peer).await {
            Ok(_) => answered += 1,
            Err(e) => println!("not answered: {e}"),
        }
    }
    println!("result: {answered} answered");
    // Held until the test ends this process.
    tokio::time::sleep(Duration::from_secs(300)).await;
}
