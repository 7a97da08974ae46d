use std::future::poll_fn;

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::identity;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn quic_addr(a: SocketAddr) -> Multiaddr {
    format!("/ip4/{}/udp/{}/quic-v1", a.ip(), a.port())
        .parse()
        .unwrap()
}

fn dialer() -> DialOpts {
    DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::Reuse,
    }
}

/// A free loopback UDP port (bound, then let go).
fn free_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[test]
fn the_table_is_capped_and_only_unconnected_entries_expire() {
    let t0 = Instant::now();
    let mut t = Table::default();
    let (a, b, c) = (
        sa("10.0.0.1:1000"),
        sa("10.0.0.1:1001"),
        sa("10.0.0.1:1002"),
    );
    let peer = sa("203.0.113.9:40000");
    t.open(a, peer, t0).unwrap();
    t.open(b, peer, t0).unwrap();
    assert_eq!(t.open(c, peer, t0), Err(Full::Full));
    // Re-registering a port replaces its entry.
    t.open(a, sa("203.0.113.9:40001"), t0).unwrap();
    assert_eq!(t.len(), MAX_PROBE_LISTENERS);
    assert!(t.has_remote(sa("203.0.113.9:40001")));
    t.connected(a);
    t.expire(t0 + PROBE_LISTEN_FOR);
    assert!(t.has_local(a), "a port with a connection stays");
    assert!(!t.has_local(b), "a port without one expires");
    assert!(!t.has_remote(peer));
    t.open(c, peer, t0 + PROBE_LISTEN_FOR).unwrap();
    // A connection with c's peer connects c (a has one already with another peer);
    // its close releases c, other connections touch nothing.
    let (cid, other) = (
        ConnectionId::new_unchecked(7),
        ConnectionId::new_unchecked(8),
    );
    assert_eq!(t.established(cid, sa("198.51.100.1:1")), None);
    assert_eq!(t.established(cid, peer), Some(c));
    assert_eq!(t.established(other, peer), None, "one connection per port");
    t.expire(t0 + PROBE_LISTEN_FOR * 3);
    assert!(t.has_local(c), "connected: it stays");
    assert_eq!(t.closed(other), None);
    assert_eq!(t.closed(cid), Some(c));
    assert!(!t.has_local(c));
    t.open(c, peer, t0 + PROBE_LISTEN_FOR).unwrap();
    t.release(a);
    t.release(c);
    assert!(t.is_empty());
}

#[tokio::test]
async fn only_registered_ports_listen_unreported_and_the_dial_leaves_from_the_probe_port() {
    let (ka, kb) = (
        identity::Keypair::generate_ed25519(),
        identity::Keypair::generate_ed25519(),
    );
    // The other side: a plain libp2p-quic listener.
    let remote = free_port();
    let mut other = quic::tokio::Transport::new(quic::Config::new(&kb));
    other
        .listen_on(ListenerId::next(), quic_addr(remote))
        .unwrap();
    let ports = ProbePorts::default();
    let mut probe = ProbeQuic::new(quic::Config::new(&ka), ports.clone());
    let local = free_port();
    // Nothing registered: every address is someone else's.
    assert!(matches!(
        probe.listen_on(ListenerId::next(), quic_addr(local)),
        Err(TransportError::MultiaddrNotSupported(_))
    ));
    ports.open(local, remote, Instant::now()).unwrap();
    // Registered but not listening yet: the dial would leave from a fresh port.
    assert!(matches!(
        probe.dial(quic_addr(remote), dialer()),
        Err(TransportError::MultiaddrNotSupported(_))
    ));
    let id = ListenerId::next();
    probe.listen_on(id, quic_addr(local)).unwrap();
    // libp2p-quic reports the address of a listener on a specific IP at its first poll;
    // this transport drops it.
    let first = poll_fn(|cx| Poll::Ready(Pin::new(&mut probe).poll(cx))).await;
    assert!(first.is_pending(), "no event, the address stays unreported");
    // Only the registered peer is dialed from here.
    assert!(matches!(
        probe.dial(quic_addr(sa("127.0.0.1:9")), dialer()),
        Err(TransportError::MultiaddrNotSupported(_))
    ));
    let mut dial = probe.dial(quic_addr(remote), dialer()).unwrap();
    // Drives the dial and both transports until the dial ended and the other side
    // upgraded the incoming connection.
    let (send_back, upgraded, dialed) = tokio::time::timeout(WAIT, async {
        let mut incoming: Option<(Multiaddr, quic::Connecting)> = None;
        let mut dialed: Option<Result<libp2p::PeerId, String>> = None;
        loop {
            if incoming.is_some() && dialed.is_some() {
                let (addr, up) = incoming.take().unwrap();
                return (addr, up.await, dialed.take().unwrap());
            }
            tokio::select! {
                r = &mut dial, if dialed.is_none() => {
                    dialed = Some(r.map(|(peer, _)| peer).map_err(|e| e.to_string()));
                }
                ev = poll_fn(|cx| Pin::new(&mut other).poll(cx)) => {
                    if let TransportEvent::Incoming { send_back_addr, upgrade, .. } = ev {
                        incoming = Some((send_back_addr, upgrade));
                    }
                }
                ev = poll_fn(|cx| Pin::new(&mut probe).poll(cx)) => {
                    assert!(!matches!(ev, TransportEvent::NewAddress { .. }));
                }
            }
        }
    })
    .await
    .expect("the dial and the accept end");
    assert_eq!(
        send_back,
        quic_addr(local),
        "the dial left from the probe port"
    );
    let (peer, _conn) = upgraded.expect("handshake");
    assert_eq!(peer, ka.public().to_peer_id());
    assert_eq!(dialed.expect("dialed"), kb.public().to_peer_id());
    // Released: the listener goes.
    ports.release(local);
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let TransportEvent::ListenerClosed { listener_id, .. } =
                poll_fn(|cx| Pin::new(&mut probe).poll(cx)).await
            {
                return listener_id;
            }
        }
    })
    .await
    .expect("the listener closes");
    assert_eq!(closed, id);
    assert!(matches!(
        probe.dial(quic_addr(remote), dialer()),
        Err(TransportError::MultiaddrNotSupported(_))
    ));
}
