//! A WebRTC-direct peer that leaves the node's stream resets unanswered loses its
//! connection. Each libp2p stream over WebRTC is a data channel, which ends when both
//! ends have reset its SCTP stream and each has responded to the other's request; until
//! then the stream stays at the node (its SCTP stream, its reset request resent on every
//! retransmission timeout, its data channel: some 3 KiB, up to 11 KiB with a peer's
//! 8 KiB opening message), so a peer whose SCTP stack answered none grew the node with
//! every stream it opened, up to the 65,535 ids of a connection
//! (`vendor/libp2p-webrtc/PATCHED.md`).
//!
//! The hostile peer runs as a process of its own: the patched `webrtc-sctp` makes every
//! association of a process take its peer's resets as a test asks
//! (`set_peer_resets_for_tests`), and the node, in this process, must not. It opens
//! identify streams on one connection and reads each answer, holding the streams so that
//! the node is the one that resets them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use libmesh::node::NodeEvent;
use libp2p::{Multiaddr, PeerId};
use mesh_testkit::log_capture::Captured;
use mesh_testkit::node::TestNode;
use webrtc_sctp::association::PeerResetsForTests;

#[path = "support/child_peer.rs"]
mod child_peer;
#[path = "support/listen.rs"]
mod listen;
#[path = "support/webrtc_streams.rs"]
mod webrtc_streams;
use child_peer::ChildPeer;
use webrtc_streams::{connect, hostile_client, hostile_target, identify, peer_of, webrtc_node};

/// What the hostile peer (a process of its own) is told: the node's address, how it
/// takes resets, how many streams it opens, in batches of how many, with what pause.
const TARGET_ENV: &str = "MESH_TEST_UNANSWERED_TARGET";
const MODE_ENV: &str = "MESH_TEST_UNANSWERED_MODE";
const STREAMS_ENV: &str = "MESH_TEST_UNANSWERED_STREAMS";
const BATCH_ENV: &str = "MESH_TEST_UNANSWERED_BATCH";
const PAUSE_ENV: &str = "MESH_TEST_UNANSWERED_PAUSE_SECS";
/// Whether it then goes on opening one stream every 3 s (its connection never idles).
const TRICKLE_ENV: &str = "MESH_TEST_UNANSWERED_TRICKLE";

/// libp2p-swarm's `debug` log (it logs why a connection closed), for the whole process.
fn swarm_log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("libp2p_swarm=debug")
            .with_ansi(false)
            .with_writer(log.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
}

/// The hostile peer's process.
struct Hostile(ChildPeer);

impl Hostile {
    /// Starts the hostile peer against `target`, taking resets as `mode` says and
    /// opening `streams` streams in batches of `batch` with `pause` between them, then
    /// one every 3 s if `trickle`.
    fn spawn(
        target: &Multiaddr,
        mode: PeerResetsForTests,
        (streams, batch, pause): (usize, usize, Duration),
        trickle: bool,
    ) -> Self {
        Self(ChildPeer::spawn(
            "hostile_peer",
            &[
                (TARGET_ENV, target.to_string()),
                (MODE_ENV, (mode as u8).to_string()),
                (STREAMS_ENV, streams.to_string()),
                (BATCH_ENV, batch.to_string()),
                (PAUSE_ENV, pause.as_secs().to_string()),
                (TRICKLE_ENV, u8::from(trickle).to_string()),
            ],
        ))
    }

    /// What it printed.
    fn said(&self) -> String {
        self.0.said()
    }

    /// The first line it printed that starts with `prefix` (without it), waiting up to
    /// `wait` for it.
    async fn line(&self, prefix: &str, wait: Duration) -> Option<String> {
        self.0.line(prefix, wait).await
    }

    /// Its peer id, once connected.
    async fn peer(&self) -> PeerId {
        let peer = self.line("peer ", Duration::from_secs(90)).await;
        peer.unwrap_or_else(|| panic!("the hostile peer did not connect:\n{}", self.said()))
            .parse()
            .unwrap()
    }

    /// How many streams it had opened (and read the answer of).
    fn opened(&self) -> Option<usize> {
        self.0.last("opened ")?.parse().ok()
    }
}

/// Whether the node's last connection to `peer` closed within `wait`.
async fn disconnected(node: &mut TestNode, peer: PeerId, wait: Duration) -> bool {
    tokio::time::timeout(wait, async {
        loop {
            match node.events.recv().await {
                Some(NodeEvent::PeerDisconnected { peer: p }) if p == peer => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// The reason libp2p-swarm logged for closing its connection to `peer`.
fn close_reason(peer: PeerId) -> String {
    let peer = peer.to_string();
    swarm_log()
        .text()
        .lines()
        .filter(|l| l.contains("Connection closed") && l.contains(&peer))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a hostile peer that takes resets as `mode` says against a fresh node, and
/// returns the reason the node's connection to it closed, with what it had opened.
async fn closed_by_node(
    mode: PeerResetsForTests,
    streams: usize,
    trickle: bool,
    wait: Duration,
) -> (String, Option<usize>, TestNode, Multiaddr) {
    swarm_log();
    let (mut node, target) = webrtc_node().await;
    let hostile = Hostile::spawn(&target, mode, (streams, streams, Duration::ZERO), trickle);
    let peer = hostile.peer().await;
    let closed = disconnected(&mut node, peer, wait).await;
    // What the peer had opened by then is on its way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        closed,
        "the node kept the hostile peer's connection ({mode:?}); it said:\n{}",
        hostile.said()
    );
    (close_reason(peer), hostile.opened(), node, target)
}

/// A peer whose SCTP stack takes no reset (neither performed nor responded to) loses its
/// connection once more than 512 of the node's resets wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_takes_no_reset_loses_its_connection() {
    let (reason, opened, _node, target) = closed_by_node(
        PeerResetsForTests::Ignore,
        2000,
        false,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        reason.contains("TooManyResetsUnanswered(512)"),
        "the connection closed for another cause: {reason}"
    );
    eprintln!("the hostile peer had opened {opened:?} streams");
    // Only resets left unanswered count: not one before 512 of them.
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

/// A peer that resets its side of each stream the node resets but never responds to the
/// node's requests (which webrtc-rs kept, and resent, for good) loses its connection too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_responds_to_resets_loses_its_connection() {
    let (reason, opened, _node, _) = closed_by_node(
        PeerResetsForTests::NoResponse,
        2000,
        false,
        Duration::from_secs(120),
    )
    .await;
    eprintln!("the hostile peer had opened {opened:?} streams");
    assert!(
        reason.contains("TooManyResetsUnanswered(512)"),
        "the connection closed for another cause: {reason}"
    );
}

/// A peer that stops short of the cap and keeps its unanswered resets (and its
/// connection busy, one stream every 3 s) loses its connection once one request has
/// waited three minutes for its response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sits_on_unanswered_resets_loses_its_connection() {
    let (reason, opened, _node, _) = closed_by_node(
        PeerResetsForTests::Ignore,
        50,
        true,
        Duration::from_secs(240),
    )
    .await;
    eprintln!("the hostile peer had opened {opened:?} streams");
    assert!(
        opened.is_some_and(|n| (50..200).contains(&n)),
        "the connection closed after {opened:?} streams"
    );
    assert!(
        reason.contains("ResetUnanswered(180s)"),
        "the connection closed for another cause: {reason}"
    );
}

/// A peer that responds to the node's resets but never resets its side of the stream
/// (as an unpatched webrtc-rs peer does with every reset it defers) keeps its
/// connection: the node forgets such a stream 10 s after the response. Its 800 streams
/// come in four batches of 200, 15 s apart: without the forgetting, the third batch
/// would take the node's unsettled resets past 512.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_only_responds_to_resets_keeps_its_connection() {
    swarm_log();
    let (mut node, target) = webrtc_node().await;
    let hostile = Hostile::spawn(
        &target,
        PeerResetsForTests::ResponseOnly,
        (800, 200, Duration::from_secs(15)),
        false,
    );
    let peer = hostile.peer().await;
    let done = hostile
        .line("stopped opening: ", Duration::from_secs(120))
        .await;
    let opened = hostile.opened();
    eprintln!("the peer had opened {opened:?} streams ({done:?})");
    assert_eq!(
        opened,
        Some(800),
        "the peer stopped early ({done:?}); the node closed: {}\nit said:\n{}",
        close_reason(peer),
        hostile.said()
    );
    assert!(
        !disconnected(&mut node, peer, Duration::from_millis(100)).await,
        "the node closed the connection: {}",
        close_reason(peer)
    );
}

/// The hostile peer of the tests above, run by them as a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the hostile peer of the tests above, run by them as a process of its own"]
async fn hostile_peer() {
    let Some(target) = hostile_target(TARGET_ENV) else {
        return;
    };
    let number = |name: &str| -> usize { std::env::var(name).unwrap().parse().unwrap() };
    let mode = match number(MODE_ENV) {
        1 => PeerResetsForTests::Ignore,
        2 => PeerResetsForTests::NoResponse,
        3 => PeerResetsForTests::ResponseOnly,
        other => panic!("mode {other}"),
    };
    let (streams, batch) = (number(STREAMS_ENV), number(BATCH_ENV));
    let pause = Duration::from_secs(number(PAUSE_ENV) as u64);
    let trickle = number(TRICKLE_ENV) == 1;
    webrtc_sctp::association::set_peer_resets_for_tests(mode);
    let mut control = hostile_client(&target).await;
    let peer = peer_of(&target);
    // Streams held, so that it is the node that resets them.
    let mut held = Vec::new();
    let mut ended = None;
    while held.len() < streams || (trickle && ended.is_none()) {
        if held.len() >= streams {
            tokio::time::sleep(Duration::from_secs(3)).await;
        } else if !held.is_empty() && held.len() % batch == 0 {
            tokio::time::sleep(pause).await;
        }
        match identify(&mut control, peer).await {
            Ok(stream) => held.push(stream),
            // A trickle's stream only keeps the connection busy: one answered late on a
            // loaded machine does not end it (the connection's close does).
            Err(e) if held.len() >= streams && !e.contains("closed") => {
                println!("trickle: {e}");
                continue;
            }
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
