//! A test node's listen addresses, a WebRTC certificate and a bare WebRTC-direct swarm,
//! for the transport tests (`webrtc_pending`, `webrtc_close`, `webrtc_channels*`,
//! `quic_pending`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use mesh_testkit::node::TestNode;

/// The node's first listen address with (`has`) or without a `protocol` part (its
/// multiaddr name: `webrtc-direct`, `quic-v1`), waiting up to 5 s for it (the node's
/// listeners report one by one).
pub(crate) async fn listen_addr(node: &TestNode, protocol: &str, has: bool) -> Multiaddr {
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen = node.handle.status().await.unwrap().listen_addrs;
        let found = seen
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .find(|a| a.iter().any(|p| p.tag() == protocol) == has);
        if let Some(addr) = found {
            return addr;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no such listen address: {seen:?}")
}

/// The UDP port of `addr`.
pub(crate) fn udp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Udp(port) => Some(port),
            _ => None,
        })
        .unwrap()
}

/// A fresh WebRTC certificate, as the node makes its own.
pub(crate) fn webrtc_cert() -> libp2p_webrtc::tokio::Certificate {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (pem, _) = libmesh::node::webrtc_cert::generate_pem(now).unwrap();
    libp2p_webrtc::tokio::Certificate::from_pem(&pem).unwrap()
}

/// A bare swarm on WebRTC-direct (a fresh identity and certificate) running `behaviour`,
/// closing a connection once it has been idle for `idle`.
pub(crate) fn webrtc_swarm<B: libp2p::swarm::NetworkBehaviour>(
    behaviour: B,
    idle: std::time::Duration,
) -> libp2p::Swarm<B> {
    use libp2p::Transport;
    let cert = webrtc_cert();
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            libp2p_webrtc::tokio::Transport::new(key.clone(), cert)
                .map(|(peer, conn), _| (peer, libp2p::core::muxing::StreamMuxerBox::new(conn)))
        })
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}
