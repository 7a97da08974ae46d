//! WebRTC-direct attempts that do not finish free what they started
//! (`vendor/libp2p-webrtc/PATCHED.md`, `vendor/dtls/PATCHED.md`). One STUN request from a
//! new source address starts an inbound attempt, with a peer connection, its ICE agent,
//! DTLS and SCTP transports and some five tasks; webrtc-rs frees them only on `close()`,
//! and an attempt that failed or timed out was dropped without it, so every attempt
//! stayed in memory for the life of the process, from one packet from any address,
//! spoofed or not. And a close did not always end: upstream's UDP muxer lost a wake
//! between its own connections' close futures and the ICE agents' `close()` (some closes
//! then hung for good), and a DTLS handshake whose first message never came waited for
//! ever, holding the whole peer connection, closed or not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use libmesh::node::NodeConfig;
use libmesh::node::config::Limits;
use mesh_core::{NoTrace, NodeKeypair};
use mesh_testkit::node::{TestNode, loopback_config, start_node};
use stun::agent::TransactionId;
use stun::attributes::{ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USE_CANDIDATE, ATTR_USERNAME};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
use stun::textattrs::Username;
use stun::xoraddr::XorMappedAddress;

#[path = "support/listen.rs"]
mod listen;
use listen::{listen_addr, udp_port};

const WAIT: Duration = Duration::from_secs(30);

/// A node listening on WebRTC-direct only, whose pending cap (256) leaves WebRTC-direct
/// attempts 64 at a time.
async fn start() -> (TestNode, SocketAddr) {
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/webrtc-direct".parse().unwrap()],
        limits: Limits {
            max_pending_incoming: 256,
            ..Limits::default()
        },
        ..loopback_config()
    };
    let node = start_node(NodeKeypair::generate(), config, Arc::new(NoTrace), WAIT).await;
    let addr = listen_addr(&node, "webrtc-direct", true).await;
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port(&addr)));
    (node, target)
}

/// The ICE user name fragment (and password: libp2p's WebRTC-direct uses one for both)
/// of attempt `n`.
fn ufrag(n: u8) -> String {
    format!("libp2p+webrtc+v1/{n:08x}")
}

/// An ICE connectivity check from a controlling agent whose credentials are `ufrag`'s,
/// as the node's answer for `ufrag` expects it; `nominate` adds USE-CANDIDATE.
fn check(ufrag: &str, nominate: bool) -> Vec<u8> {
    let mut m = Message::new();
    m.build(&[
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(ATTR_USERNAME, format!("{ufrag}:{ufrag}"))),
    ])
    .unwrap();
    if nominate {
        m.add(ATTR_USE_CANDIDATE, &[]);
    }
    m.add(ATTR_PRIORITY, &2_130_706_431u32.to_be_bytes());
    m.add(ATTR_ICE_CONTROLLING, &7u64.to_be_bytes());
    MessageIntegrity::new_short_term_integrity(ufrag.to_owned())
        .add_to(&mut m)
        .unwrap();
    FINGERPRINT.add_to(&mut m).unwrap();
    m.raw
}

/// The answer to `request` (a check from the node) that makes its candidate pair
/// succeed, or `None` when `request` is not a check.
fn answer(request: &[u8], ufrag: &str, from: SocketAddr) -> Option<Vec<u8>> {
    let mut req = Message::new();
    req.raw = request.to_vec();
    req.decode().ok()?;
    if req.typ != BINDING_REQUEST {
        return None;
    }
    let mut out = Message::new();
    out.build(&[
        Box::new(req),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        }),
        Box::new(MessageIntegrity::new_short_term_integrity(ufrag.to_owned())),
        Box::new(FINGERPRINT),
    ])
    .ok()?;
    Some(out.raw)
}

/// One UDP socket per attempt, each on a loopback address of its own (`127.0.{net}.x`).
fn sources(net: u8, n: u8) -> Vec<UdpSocket> {
    (0..n)
        .map(|i| UdpSocket::bind((Ipv4Addr::new(127, 0, net, 10 + i), 0)).unwrap())
        .collect()
}

/// The runtime's tasks, once they came down to `before + 2` or after `wait`.
async fn tasks_after(before: usize, wait: Duration) -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let alive = metrics.num_alive_tasks();
        if alive <= before + 2 || tokio::time::Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Forty attempts that stop after their first packet (from forty sources): once they
/// failed (10 s), the node's runtime is back to the tasks it had. Before, each left some
/// five tasks; with a close on failure but upstream's UDP muxer, some closes hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_attempts_after_one_packet_leave_no_tasks_behind() {
    let (_node, target) = start().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = metrics.num_alive_tasks();
    let sockets = sources(5, 40);
    for (n, s) in (0u8..).zip(&sockets) {
        s.send_to(&check(&ufrag(n), false), target).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = metrics.num_alive_tasks();
    assert!(
        during >= before + 40,
        "the attempts did not start: {before} tasks before, {during} during"
    );
    // Each attempt fails after the transport's 10 s; its close follows.
    let after = tasks_after(before, WAIT).await;
    drop(sockets);
    assert!(
        after <= before + 2,
        "{before} tasks before 40 unfinished attempts, {during} during, {after} 30 s after"
    );
}

/// Twenty attempts whose ICE checks succeed and whose DTLS handshake never begins (the
/// node, DTLS server, waits for a ClientHello that never comes): once they failed
/// (10 s) and their handshakes timed out (15 s from their start), the node's runtime is
/// back to the tasks it had. Before, every such attempt kept its handshake's tasks and
/// its peer connection's operations task, with the whole peer connection, closed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_attempts_without_a_dtls_handshake_leave_no_tasks_behind() {
    let (_node, target) = start().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = metrics.num_alive_tasks();
    let sockets = sources(6, 20);
    for (n, s) in (0u8..).zip(&sockets) {
        s.send_to(&check(&ufrag(n), false), target).unwrap();
    }
    // The attempts start (their answers, their agents), then each source nominates its
    // pair and answers the node's checks: ICE connects, and DTLS starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (n, s) in (0u8..).zip(&sockets) {
        s.send_to(&check(&ufrag(n), true), target).unwrap();
        s.set_nonblocking(true).unwrap();
    }
    let mut answered = [false; 20];
    let mut checked = [false; 20];
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (n, s) in (0u8..).zip(&sockets) {
            let mut buf = [0u8; 1500];
            while let Ok((len, from)) = s.recv_from(&mut buf) {
                match answer(&buf[..len], &ufrag(n), from) {
                    Some(reply) => {
                        s.send_to(&reply, from).unwrap();
                        checked[usize::from(n)] = true;
                    }
                    // A binding success response (type 0x0101).
                    None if buf[..2] == [0x01, 0x01] => answered[usize::from(n)] = true,
                    None => {}
                }
            }
            // The nominating check again until it is answered: on a loaded machine the
            // attempt's muxer connection may not have existed when it came.
            if !answered[usize::from(n)] {
                s.send_to(&check(&ufrag(n), true), target).unwrap();
            }
        }
        if answered.iter().chain(&checked).all(|&seen| seen) {
            break;
        }
    }
    assert!(
        answered.iter().chain(&checked).all(|&seen| seen),
        "every attempt answered a check and sent its own: {answered:?}, {checked:?}"
    );
    let during = metrics.num_alive_tasks();
    // Each attempt fails after the transport's 10 s; its handshake ends 15 s after it
    // began (some 2 s in).
    let after = tasks_after(before, WAIT).await;
    drop(sockets);
    assert!(
        after <= before + 2,
        "{before} tasks before 20 attempts without DTLS, {during} during, {after} 30 s after"
    );
}
