//! A WebRTC-direct peer's stream resets that wait for data it never sends (RFC 6525's
//! deferred resets) cannot pile up at the node or make it answer one packet many times.
//! webrtc-sctp kept every such request for good and, each time a DATA chunk moved its
//! cumulative TSN, ran them all again, answering each one still deferred with another
//! "in progress" response: one small chunk of the peer's drew a packet per request it
//! had left. Now a deferred request gets one "in progress", at most 128 of them (4,096
//! stream ids) are kept, and one beyond is dropped as if lost, unanswered (its sender
//! sends it again later) (`vendor/webrtc-sctp/PATCHED.md`).
//!
//! The hostile peer runs as a process of its own: the patched `webrtc-sctp` makes every
//! association of a process send as a test asks (`set_outbound_for_tests`: each of its
//! reset requests names a last TSN 30,000 ahead of what it sent), and counts the
//! responses it gets. It opens identify streams and drops each after the answer, each
//! drop or answer to the node's reset being one request.
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
const TARGET_ENV: &str = "MESH_TEST_DEFERRED_TARGET";
/// How many streams the peer opens and drops.
const STREAMS: usize = 300;
/// The deferred requests the node keeps at most.
const KEPT: u64 = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_resets_are_answered_once_and_bounded() {
    let (_node, target) = webrtc_node().await;
    let hostile = ChildPeer::spawn("deferring_peer", &[(TARGET_ENV, target.to_string())]);
    let counts = hostile.line("counts: ", Duration::from_secs(240)).await;
    let counts = counts.unwrap_or_else(|| panic!("no counts:\n{}", hostile.said()));
    let [requests, performed, denied, in_progress]: [u64; 4] = counts
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    eprintln!(
        "{requests} requests: {performed} performed, {denied} denied, {in_progress} in progress"
    );
    assert!(
        hostile.said().contains(&format!("opened {STREAMS}")),
        "the peer's streams failed:\n{}",
        hostile.said()
    );
    // More requests than the node keeps, and none of them performed.
    assert!(requests > 2 * KEPT, "{requests} requests");
    assert_eq!(performed, 0, "requests performed: the data did reach them");
    // One "in progress" for each request kept, at most 128 of them; nothing for the rest.
    assert!(
        (1..=KEPT).contains(&in_progress),
        "{in_progress} \"in progress\" responses to {requests} requests (the node keeps \
         {KEPT} at most, each answered once)"
    );
    assert_eq!(denied, 0, "requests denied");
}

/// The hostile peer of the test above, run by it as a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the hostile peer of the test above, run by it as a process of its own"]
async fn deferring_peer() {
    let Some(target) = hostile_target(TARGET_ENV) else {
        return;
    };
    let mut control = hostile_client(&target).await;
    webrtc_sctp::association::set_outbound_for_tests(OutboundForTests::ResetsAhead);
    let peer = peer_of(&target);
    let mut opened = 0;
    while opened < STREAMS {
        match identify(&mut control, peer).await {
            Ok(stream) => drop(stream),
            Err(e) => {
                println!("failed: {e}");
                break;
            }
        }
        opened += 1;
    }
    println!("opened {opened}");
    // The last requests' responses are on their way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = webrtc_sctp::association::reset_responses_for_tests();
    println!("counts: {}", counts.map(|c| c.to_string()).join(" "));
    // Held until the test ends this process.
    tokio::time::sleep(Duration::from_secs(300)).await;
}
