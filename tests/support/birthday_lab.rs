//! One birthday-probing attempt (issue 20, `libmesh::node::birthday`) across the NAT lab
//! of `netns.rs`, ending in a QUIC connection made by libp2p-quic: C (host A, behind
//! router A) sends probes from its probe socket, S (host B, behind router B) opens the
//! probe sockets toward C's public probe address; after a hit each side closes its
//! probe socket and a libp2p-quic transport listens on the same local port (S accepts,
//! C dials S's public IP at the hit port from its only listener). Shared by
//! `tests/node_birthday.rs` and `benches/nat_matrix.rs` (`--birthday N`).
//!
//! Use with `#[path = "support/netns.rs"] mod netns;` beside it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::future::poll_fn;
use libmesh::node::birthday::{Budget, choose_ports, probe};
use libp2p::core::Endpoint;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, Transport, TransportEvent};
use libp2p::{Multiaddr, PeerId, identity, quic};

use crate::netns::{Host, Router, Topology};

/// How long S's sockets wait for C's probes.
const WAIT_HIT: Duration = Duration::from_secs(5);
/// How long C waits for S's confirmation, and the QUIC handshake may take.
const WAIT_CONFIRM: Duration = Duration::from_secs(3);
const WAIT_QUIC: Duration = Duration::from_secs(10);
/// C's probes go out this many at a time, with this pause between.
const CHUNK: usize = 32;
const PAUSE: Duration = Duration::from_millis(20);

/// What one attempt gave.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    /// S's hit: (local port, external port).
    pub(crate) hit: Option<(u16, u16)>,
    /// C saw S's confirmation from S's public IP at this port.
    pub(crate) confirmed: Option<u16>,
    /// The QUIC connection came up: the peer id each side saw is the other's.
    pub(crate) quic: bool,
    /// Datagrams S and C sent (probes and the confirmation; not QUIC).
    pub(crate) s_sent: usize,
    pub(crate) c_sent: usize,
    /// From S's first probe to the hit, and to the QUIC connection.
    pub(crate) hit_ms: Option<u64>,
    pub(crate) quic_ms: Option<u64>,
    /// Why the QUIC step failed, if it did.
    pub(crate) error: Option<String>,
}

fn quic_addr(ip: IpAddr, port: u16) -> Multiaddr {
    format!("/ip4/{ip}/udp/{port}/quic-v1").parse().unwrap()
}

type Quic = quic::tokio::Transport;

/// A libp2p-quic transport listening on `ip:port` inside `host`'s namespace.
fn listen_in(topo: &Topology, host: Host, key: &identity::Keypair, ip: IpAddr, port: u16) -> Quic {
    let handle = tokio::runtime::Handle::current();
    let key = key.clone();
    topo.within(host, move || {
        let _rt = handle.enter();
        let mut t = Quic::new(quic::Config::new(&key));
        t.listen_on(ListenerId::next(), quic_addr(ip, port))
            .map(|()| t)
            .map_err(|e| e.to_string())
    })
    .expect("QUIC listener on the probe port")
}

/// Polls `t` until an inbound connection is upgraded (or forever: the caller bounds it);
/// the connection and transport are handed back so that they stay open.
async fn accept(mut t: Quic) -> Result<(PeerId, quic::Connection, Quic), String> {
    loop {
        let ev = poll_fn(|cx| Pin::new(&mut t).poll(cx)).await;
        if let TransportEvent::Incoming { upgrade, .. } = ev {
            let (peer, conn) = upgrade.await.map_err(|e| e.to_string())?;
            return Ok((peer, conn, t));
        }
    }
}

/// One attempt: S = host B, C = host A, with `budget`.
pub(crate) async fn attempt(topo: &Topology, budget: Budget) -> Outcome {
    let mut out = Outcome::default();
    let token = probe::random_token();
    let c_lan = IpAddr::V4(topo.ip(Host::A));
    let s_lan = IpAddr::V4(topo.ip(Host::B));
    let c_pub = IpAddr::V4(topo.wan_ip(Router::A));
    let s_pub = IpAddr::V4(topo.wan_ip(Router::B));
    // C's probe socket; router A keeps its port (port-preserving), so C's public probe
    // address is router A's IP and this port (in the node: C's signaled candidate).
    let c_sock = topo
        .within(Host::A, || std::net::UdpSocket::bind((c_lan, 0)))
        .expect("C's probe socket");
    c_sock.set_nonblocking(true).unwrap();
    let c_port = c_sock.local_addr().unwrap().port();
    let c_sock = tokio::net::UdpSocket::from_std(c_sock).unwrap();
    let target = SocketAddr::new(c_pub, c_port);
    let socks = topo
        .within(Host::B, || probe::bind(budget.sockets, c_pub))
        .expect("S's probe sockets");
    let mut s = probe::Sockets::new(socks, target, token).unwrap();
    let t0 = Instant::now();
    s.probe().await;
    let wait = tokio::spawn(s.wait_hit(WAIT_HIT));
    let ports = choose_ports(budget.probes, probe::random_u16);
    out.c_sent = probe::spray(&c_sock, s_pub, &ports, token, CHUNK, PAUSE).await;
    let (hit, s_sent) = wait.await.unwrap();
    out.s_sent = s_sent;
    let Some(hit) = hit else {
        return out;
    };
    out.hit = Some((hit.local_port, hit.external_port));
    out.hit_ms = Some(t0.elapsed().as_millis() as u64);
    // S swaps its probe socket (closed by now) for a QUIC listener on the same port.
    let s_key = identity::Keypair::generate_ed25519();
    let c_key = identity::Keypair::generate_ed25519();
    let s_quic = listen_in(topo, Host::B, &s_key, s_lan, hit.local_port);
    let accepting = tokio::spawn(tokio::time::timeout(WAIT_QUIC, accept(s_quic)));
    let confirmed = probe::wait_confirm(&c_sock, s_pub, token, WAIT_CONFIRM).await;
    out.confirmed = confirmed.map(|a| a.port());
    let Some(s_addr) = confirmed else {
        out.error = Some("no confirmation".into());
        accepting.abort();
        return out;
    };
    // C swaps its probe socket for a QUIC listener and dials from it (its only one).
    drop(c_sock);
    let mut c_quic = listen_in(topo, Host::A, &c_key, c_lan, c_port);
    let dial = c_quic.dial(
        quic_addr(s_addr.ip(), s_addr.port()),
        DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        },
    );
    let dial = match dial {
        Ok(d) => d,
        Err(e) => {
            out.error = Some(e.to_string());
            accepting.abort();
            return out;
        }
    };
    let driving = tokio::spawn(async move {
        // Keeps C's listener polled while the dial runs.
        loop {
            let _ = poll_fn(|cx| Pin::new(&mut c_quic).poll(cx)).await;
        }
    });
    let dialed = tokio::time::timeout(WAIT_QUIC, dial).await;
    let accepted = accepting.await.unwrap();
    driving.abort();
    match (dialed, accepted) {
        (Ok(Ok((s_peer, _conn))), Ok(Ok((c_peer, _c, _t)))) => {
            out.quic =
                s_peer == s_key.public().to_peer_id() && c_peer == c_key.public().to_peer_id();
            out.quic_ms = Some(t0.elapsed().as_millis() as u64);
        }
        (d, a) => {
            out.error = Some(format!(
                "dial: {:?}; accept: {:?}",
                d.map(|r| r.map(|(p, _)| p).map_err(|e| e.to_string())),
                a.map(|r| r.map(|(p, _, _)| p))
            ));
        }
    }
    out
}
