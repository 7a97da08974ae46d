//! A gap in a WebRTC-direct peer's SCTP data heals once the missing chunk comes, however
//! many small chunks wait behind it. The node bounds what it keeps for a peer past a gap
//! (the chunks held cost at most twice the receive window, each counted as its data and
//! 256 bytes; `vendor/webrtc-sctp/PATCHED.md`), and drops what comes beyond: the chunk
//! that fills the gap must still get in, and the sender's resends of what was dropped
//! after it, so that the association goes on (a peer sending small messages on a lossy
//! link meets this).
//!
//! The peer runs as a process of its own: the patched `webrtc-sctp` makes every
//! association of a process send as a test asks (`set_outbound_for_tests`), and the
//! node, in this process, must not. It leaves out one chunk of a perf upload (a hole
//! in stream order too, so the reader waits), sends 12,000 one-byte messages behind it,
//! then sends the missing chunk and ends the upload, which the node must then answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libmesh::node::NodeConfig;
use libp2p::StreamProtocol;
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

/// The node's address, for the peer.
const TARGET_ENV: &str = "MESH_TEST_HEAL_TARGET";
/// The one-byte messages sent behind the hole.
const MESSAGES: usize = 12_000;
/// A protocol whose server reads all it gets, and answers at the end.
const PERF: StreamProtocol = StreamProtocol::new("/perf/1.0.0");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_heals_behind_many_small_chunks() {
    let config = NodeConfig {
        perf: true,
        ..loopback_config()
    };
    let (_node, target) = webrtc_node_with(config).await;
    let peer = ChildPeer::spawn("healing_peer", &[(TARGET_ENV, target.to_string())]);
    let result = peer.line("result: ", Duration::from_secs(240)).await;
    let result = result.unwrap_or_else(|| panic!("no result:\n{}", peer.said()));
    assert_eq!(
        result,
        "answered",
        "the upload did not end once its gap was filled; the peer said:\n{}",
        peer.said()
    );
}

/// The peer of the test above, run by it as a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the peer of the test above, run by it as a process of its own"]
async fn healing_peer() {
    let Some(target) = hostile_target(TARGET_ENV) else {
        return;
    };
    let mut control = hostile_client(&target).await;
    let wait = Duration::from_secs(10);
    let mut stream = tokio::time::timeout(wait, control.open_stream(peer_of(&target), PERF))
        .await
        .expect("not opened in 10 s")
        .expect("not opened");
    // Perf's request: nothing back.
    stream.write_all(&0u64.to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    // The next chunk, the first of the messages, is left out.
    webrtc_sctp::association::set_outbound_for_tests(OutboundForTests::Hole);
    for _ in 0..MESSAGES {
        let write = async {
            stream.write_all(&[0]).await?;
            stream.flush().await
        };
        if let Err(e) = tokio::time::timeout(wait, write).await {
            println!("stalled: {e}");
            break;
        }
    }
    // The missing chunk goes out with the next resends.
    webrtc_sctp::association::set_outbound_for_tests(OutboundForTests::Normal);
    println!("healing");
    let ending = async {
        stream.close().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.map(|_| ())
    };
    match tokio::time::timeout(Duration::from_secs(120), ending).await {
        Ok(Ok(())) => println!("result: answered"),
        Ok(Err(e)) => println!("result: failed: {e}"),
        Err(_) => println!("result: not answered in 120 s"),
    }
    // Held until the test ends this process.
    tokio::time::sleep(Duration::from_secs(300)).await;
}
