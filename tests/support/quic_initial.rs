//! A libp2p-quic dial's first datagram, for tests that play a client that never goes on.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::time::Duration;

use libp2p::core::Endpoint;
use libp2p::core::transport::{DialOpts, PortUse, Transport};
use libp2p::quic;
use mesh_core::NodeKeypair;

/// The first datagram of a libp2p-quic dial (its Initial, with the whole ClientHello),
/// caught by a socket that never answers.
pub(crate) async fn initial() -> Vec<u8> {
    let catcher = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let port = catcher.local_addr().unwrap().port();
    let key = NodeKeypair::generate().to_libp2p();
    let mut transport = quic::tokio::Transport::new(quic::Config::new(&key));
    let dial = transport
        .dial(
            format!("/ip4/127.0.0.1/udp/{port}/quic-v1")
                .parse()
                .unwrap(),
            DialOpts {
                role: Endpoint::Dialer,
                port_use: PortUse::New,
            },
        )
        .unwrap();
    let dialing = tokio::spawn(dial);
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(30), catcher.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    dialing.abort();
    buf.truncate(n);
    buf
}
