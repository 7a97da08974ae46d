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
