//! One network cannot take every inbound slot of `meshd`: connections from one IP
//! (an IPv4 address, an IPv6 /64) get a share of the pending ones (silent sockets that
//! never start Noise) and of the established ones (peers with fresh keys). The real
//! binary, raw TCP sockets and hostile libp2p peers over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/meshd.rs"]
mod meshd;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_core::NodeKeypair;
use mesh_testkit::Net;
use mesh_testkit::hostile::HostilePeer;
use meshd::Meshd;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const PENDING_SHARE: usize = 4;
const ESTABLISHED_SHARE: usize = 2;

fn tcp_port(addr: &str) -> u16 {
    let parts: Vec<&str> = addr.split('/').collect();
    let i = parts.iter().position(|p| *p == "tcp").unwrap();
    parts[i + 1].parse().unwrap()
}

/// Whether the node has closed `s` (EOF or reset), waiting at most `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let end = Instant::now() + within;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // multistream-select's header from the listener: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// The number of connected peers meshd lists.
fn peers(node: &Meshd) -> usize {
    node.cli_ok(&["peers"]).as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_network_gets_a_share_of_the_inbound_slots() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("meshd.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_pending_incoming_per_ip = {PENDING_SHARE}\n\
             max_established_incoming_per_ip = {ESTABLISHED_SHARE}\n"
        ),
    )
    .unwrap();
    let node = Meshd::start(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            "none",
        ],
    );
    let target: SocketAddr = ([127, 0, 0, 1], tcp_port(&node.addr())).into();

    // Twelve silent sockets from 127.0.0.2: the share stays open (until the upgrade
    // timeout), the rest is closed at once.
    let mut silent = Vec::new();
    for _ in 0..12 {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(([127, 0, 0, 2], 0).into()).unwrap();
        silent.push(s.connect(target).await.unwrap());
    }
    let held = futures::future::join_all(
        silent
            .iter_mut()
            .map(|s| closed(s, Duration::from_millis(2000))),
    )
    .await;
    let open = held.iter().filter(|c| !**c).count();
    assert_eq!(open, PENDING_SHARE, "silent connections held from one IP");

    // Meanwhile peers from another network (127.0.0.1) get in, up to their own share of
    // established connections.
    let mut connected = Vec::new();
    for _ in 0..ESTABLISHED_SHARE + 2 {
        let p = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let _ = p
            .connect(node.addr().parse().unwrap(), Duration::from_secs(20))
            .await;
        connected.push(p);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listed = peers(&node);
    while listed != ESTABLISHED_SHARE && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        listed = peers(&node);
    }
    // Held a little longer: the refused ones do not come back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(peers(&node), ESTABLISHED_SHARE, "peers from one IP");

    // One of them leaves: another may come in.
    drop(connected.remove(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    while peers(&node) >= ESTABLISHED_SHARE && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let late = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
    late.connect(node.addr().parse().unwrap(), Duration::from_secs(20))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node
        .cli_ok(&["peers"])
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["peer_id"] == late.peer_id().to_string())
    {
        assert!(Instant::now() < deadline, "the late peer never got in");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether meshd lists `peer` among its connected peers.
fn lists(node: &Meshd, peer: &libp2p::PeerId) -> bool {
    node.cli_ok(&["peers"])
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["peer_id"] == peer.to_string())
}

/// Waits (at most 20 s) until meshd lists `n` peers.
async fn wait_peers(node: &Meshd, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while peers(node) != n {
        assert!(Instant::now() < deadline, "meshd never listed {n} peers");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node's inbound cap (`max_established_incoming`) full of one network group's
/// peers (127.0.0.0/16): more of them are refused, while peers of another group (over
/// `::1`) get in, each in the place of one of the full group's, down to an equal share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_makes_room_for_another_network_group() {
    const INBOUND: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("meshd.toml");
    std::fs::write(
        &config,
        format!("[limits]\nmax_established_incoming = {INBOUND}\n"),
    )
    .unwrap();
    let node = Meshd::start(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip6/::1/tcp/0",
            "--bootstrap",
            "none",
        ],
    );
    let listen: Vec<String> = node.ready["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let v4: libp2p::Multiaddr = listen
        .iter()
        .find(|a| a.starts_with("/ip4/"))
        .unwrap()
        .parse()
        .unwrap();
    let v6: libp2p::Multiaddr = listen
        .iter()
        .find(|a| a.starts_with("/ip6/"))
        .unwrap()
        .parse()
        .unwrap();
    let join = |addr: &libp2p::Multiaddr| {
        let p = HostilePeer::spawn(NodeKeypair::generate(), Net::Tcp);
        let addr = addr.clone();
        let q = p.clone();
        async move {
            let _ = q.connect(addr, Duration::from_secs(20)).await;
            p
        }
    };

    // The IPv4 group fills the cap, one at a time (each listed before the next).
    let mut group_a = Vec::new();
    for n in 1..=INBOUND {
        group_a.push(join(&v4).await);
        wait_peers(&node, n).await;
    }
    // One more of theirs is refused.
    let refused = join(&v4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !lists(&node, &refused.peer_id()),
        "a fifth peer of the full group got in"
    );
    assert_eq!(peers(&node), INBOUND);

    // Peers over ::1 (another group) get in, each closing one of the full group's,
    // until both hold two.
    let mut group_b = Vec::new();
    for _ in 0..INBOUND / 2 {
        let p = join(&v6).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !lists(&node, &p.peer_id()) {
            assert!(
                Instant::now() < deadline,
                "a peer of another group never got in"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        group_b.push(p);
    }
    wait_peers(&node, INBOUND).await;
    let held_a = group_a
        .iter()
        .filter(|p| lists(&node, &p.peer_id()))
        .count();
    assert_eq!(
        held_a,
        INBOUND / 2,
        "the full group gave way down to an equal share"
    );
    // A third of group B would make it the larger: refused.
    let third = join(&v6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !lists(&node, &third.peer_id()),
        "a group took more than an equal share"
    );
    assert_eq!(peers(&node), INBOUND);
}
