//! A WebRTC-direct peer that leaves the node's stream resets unanswered loses its
//! connection. Each libp2p stream over WebRTC is a data channel, which ends when both
//! ends have reset its SCTP stream; until the peer answers the node's reset, the stream
//! stays at the node (its SCTP stream, its reset request resent on every retransmission
//! timeout, its data channel: some 3 KiB, up to 11 KiB with a peer's 8 KiB opening
//! message), so a peer whose SCTP stack answers none grew the node with every stream it
//! opened, up to the 65,535 ids of a connection (`vendor/libp2p-webrtc/PATCHED.md`).
//!
//! The hostile peer runs as a process of its own: the patched `webrtc-sctp` makes every
//! association of a process ignore its peer's resets when a test asks it to
//! (`ignore_peer_resets_for_tests`), and the node, in this process, must not. It opens
//! identify streams on one connection and reads each answer without ever answering the
//! node's reset of the stream; the node closes the connection once 512 resets wait.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use futures::{AsyncReadExt, StreamExt};
use libmesh::node::NodeEvent;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use mesh_testkit::log_capture::Captured;

#[path = "support/listen.rs"]
mod listen;
#[path = "support/webrtc_streams.rs"]
mod webrtc_streams;
use webrtc_streams::{connect, webrtc_node};

/// Where the hostile peer (a process of its own) dials: the node's address.
const TARGET_ENV: &str = "MESH_TEST_UNANSWERED_TARGET";
/// A protocol the node answers and then closes.
const IDENTIFY: StreamProtocol = StreamProtocol::new("/ipfs/id/1.0.0");
/// How many streams the hostile peer opens at most (the node allows 512 unanswered).
const STREAMS: usize = 2000;

/// The node's peer id in `addr`'s `/p2p` part.
fn peer_of(addr: &Multiaddr) -> PeerId {
    addr.iter()
        .find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        })
        .unwrap()
}

/// Opens an identify stream to `peer` and reads its answer to the end.
async fn identify(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
) -> Result<libp2p::Stream, String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(10), control.open_stream(peer, IDENTIFY))
            .await
            .map_err(|_| "not opened in 10 s".to_string())?
            .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| "not answered in 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    if answer.is_empty() {
        return Err("an empty answer".into());
    }
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_leaves_the_node_s_resets_unanswered_loses_its_connection() {
    // libp2p-swarm logs why a connection closed at `debug`.
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("libp2p_swarm=debug")
        .with_ansi(false)
        .with_writer(log.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let (mut node, target) = webrtc_node().await;
    let mut hostile = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["hostile_peer", "--exact", "--ignored", "--nocapture"])
        .env(TARGET_ENV, target.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let disconnected = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match node.events.recv().await {
                Some(NodeEvent::PeerDisconnected { peer }) => return Some(peer),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await;
    // What the peer had opened by then is on its way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    hostile.start_kill().unwrap();
    let out = hostile.wait_with_output().await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(disconnected, Ok(Some(_))),
        "the node kept the hostile peer's connection ({disconnected:?}); it said:\n{said}"
    );
    let text = log.text();
    assert!(
        text.contains("UnansweredResets(512)"),
        "the connection closed for another cause:\n{}\nthe peer said:\n{said}",
        text.lines()
            .filter(|l| l.contains("closed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let opened = said
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("opened ")?.parse::<usize>().ok());
    eprintln!("the hostile peer had opened {opened:?} streams");
    // The node counts only resets left unanswered: not one before 512 of them.
    assert!(
        opened.is_some_and(|n| n > 512),
        "the connection closed after {opened:?} streams"
    );

    // The node serves an honest peer as before.
    let mut honest = connect(&target).await;
    let mut control = honest.behaviour().new_control();
    let driving = tokio::spawn(async move {
        loop {
            honest.select_next_some().await;
        }
    });
    identify(&mut control, peer_of(&target)).await.unwrap();
    driving.abort();
}

/// The hostile peer of the test above, run by it as a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_peer_that_leaves_the_node_s_resets_unanswered_loses_its_connection"]
async fn hostile_peer() {
    let target: Multiaddr = std::env::var(TARGET_ENV)
        .expect("run by a_peer_that_leaves_the_node_s_resets_unanswered_loses_its_connection")
        .parse()
        .unwrap();
    webrtc_sctp::association::ignore_peer_resets_for_tests(true);
    // DTLS's rustls needs a process-wide provider, which the node installs in the other
    // process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client = connect(&target).await;
    let mut control = client.behaviour().new_control();
    tokio::spawn(async move {
        loop {
            if let libp2p::swarm::SwarmEvent::ConnectionClosed { cause, .. } =
                client.select_next_some().await
            {
                println!("closed: {cause:?}");
            }
        }
    });
    let peer = peer_of(&target);
    // Streams held, so that it is the node that resets them.
    let mut held = Vec::new();
    let mut ended = None;
    for _ in 0..STREAMS {
        match identify(&mut control, peer).await {
            Ok(stream) => held.push(stream),
            Err(e) => {
                ended = Some(e);
                break;
            }
        }
        println!("opened {}", held.len());
    }
    println!("stopped opening: {ended:?}");
    // Held until the test ends this process.
    tokio::time::sleep(Duration::from_secs(300)).await;
}
