//! The network-namespace NAT lab (`tests/support/netns.rs`) behaves like NAT: private
//! hosts reach the public host from their router's WAN address, port-preserving NAT maps
//! endpoint-independently while `--random-fully` picks a port per flow, nothing reaches a
//! private host unsolicited, and a simultaneous UDP hole punch works through
//! port-preserving NATs but not through random-fully ones.
//!
//! Needs root, iproute2 and iptables; skipped otherwise unless `MESH_REQUIRE_NETNS=1`.
//! Every wait is bounded (at most a few seconds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/netns.rs"]
mod netns;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use netns::{Host, NatKind, Router, Topology};

/// How long a packet that should arrive may take.
const ARRIVE: Duration = Duration::from_secs(2);
/// How long we listen for a packet that must not arrive.
const QUIET: Duration = Duration::from_millis(400);
/// Bound on a TCP connect that must fail.
const CONNECT: Duration = Duration::from_secs(1);
/// Port of the public host's UDP/TCP listeners.
const PUB_PORT: u16 = 7000;
/// Ports the private hosts bind (different, so a mix-up would show).
const A_PORT: u16 = 40000;
const B_PORT: u16 = 40001;

fn lab(nat: NatKind) -> Topology {
    Topology::new("nh", nat).expect("build the NAT lab")
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// A UDP socket bound to `ip:port` inside `host`'s namespace.
fn udp(topo: &Topology, host: Host, ip: Ipv4Addr, port: u16) -> UdpSocket {
    topo.within(host, || UdpSocket::bind(sa(ip, port)))
        .unwrap_or_else(|e| panic!("bind {ip}:{port} in {host:?}: {e}"))
}

/// The next datagram within `wait`, or `None`.
fn recv(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => return Some((buf[..n].to_vec(), from)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            // An ICMP error reported on the socket: keep listening.
            Err(_) => continue,
        }
    }
}

/// Sends from `from` to `to` (a socket on the public host) and returns the source
/// address the public host sees.
fn observed(from: &UdpSocket, to: &UdpSocket) -> SocketAddr {
    let dest = to.local_addr().unwrap();
    from.send_to(b"who am i", dest).unwrap();
    let (data, src) = recv(to, ARRIVE).unwrap_or_else(|| panic!("nothing arrived at {dest}"));
    assert_eq!(data, b"who am i");
    src
}

#[test]
fn private_hosts_reach_the_public_host_from_their_routers_wan_address() {
    if !netns::available_or_skip(
        "private_hosts_reach_the_public_host_from_their_routers_wan_address",
    ) {
        return;
    }
    let topo = lab(NatKind::PortPreserving);
    let pub_ip = topo.ip(Host::Pub);

    // The namespaces hold what they should (and `cmd` runs inside them).
    let out = topo
        .cmd(Host::A, netns::tool("ip"))
        .args(["-4", "-o", "addr"])
        .output()
        .unwrap();
    let addrs = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && addrs.contains("192.168.1.2/24"),
        "{addrs}"
    );
    assert!(!addrs.contains("10.77.0."), "{addrs}");

    // UDP, both private hosts: the source is the router's WAN address.
    let server = udp(&topo, Host::Pub, pub_ip, PUB_PORT);
    for (host, port, router) in [(Host::A, A_PORT, Router::A), (Host::B, B_PORT, Router::B)] {
        let sock = udp(&topo, host, Ipv4Addr::UNSPECIFIED, port);
        let src = observed(&sock, &server);
        assert_eq!(src.ip(), topo.wan_ip(router), "{host:?} seen as {src}");
        assert_ne!(src.ip(), topo.ip(host));
        // The answer finds its way back through the NAT.
        server.send_to(b"hello back", src).unwrap();
        let (data, from) = recv(&sock, ARRIVE).expect("reply through the NAT");
        assert_eq!(
            (data.as_slice(), from),
            (&b"hello back"[..], sa(pub_ip, PUB_PORT))
        );
    }

    // TCP from A.
    let listener = topo
        .within(Host::Pub, || TcpListener::bind(sa(pub_ip, PUB_PORT)))
        .unwrap();
    let mut client = topo
        .within(Host::A, || {
            TcpStream::connect_timeout(&sa(pub_ip, PUB_PORT), ARRIVE)
        })
        .expect("A connects to the public host");
    let (mut conn, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), topo.wan_ip(Router::A), "A seen as {peer}");
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    conn.set_read_timeout(Some(ARRIVE)).unwrap();
    conn.read_exact(&mut buf).unwrap();
    conn.write_all(b"pong").unwrap();
    client.set_read_timeout(Some(ARRIVE)).unwrap();
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");
}

/// Three destinations on the public host: two ports of one address, and a second
/// address (added here). Returns their sockets.
fn three_destinations(topo: &Topology) -> [UdpSocket; 3] {
    let out = topo
        .cmd(Host::Pub, netns::tool("ip"))
        .args(["addr", "add", "10.77.0.4/24", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pub_ip = topo.ip(Host::Pub);
    [
        udp(topo, Host::Pub, pub_ip, PUB_PORT),
        udp(topo, Host::Pub, pub_ip, PUB_PORT + 1),
        udp(topo, Host::Pub, Ipv4Addr::new(10, 77, 0, 4), PUB_PORT),
    ]
}

#[test]
fn port_preserving_nat_keeps_the_port_for_every_destination() {
    if !netns::available_or_skip("port_preserving_nat_keeps_the_port_for_every_destination") {
        return;
    }
    let topo = lab(NatKind::PortPreserving);
    let dests = three_destinations(&topo);
    let sock = udp(&topo, Host::A, Ipv4Addr::UNSPECIFIED, A_PORT);
    for dest in &dests {
        for _ in 0..2 {
            let src = observed(&sock, dest);
            assert_eq!(src, sa(topo.wan_ip(Router::A), A_PORT), "to {dest:?}");
        }
    }
}

#[test]
fn random_fully_nat_picks_a_port_per_flow() {
    if !netns::available_or_skip("random_fully_nat_picks_a_port_per_flow") {
        return;
    }
    let topo = lab(NatKind::RandomFully);
    let dests = three_destinations(&topo);
    let sock = udp(&topo, Host::A, Ipv4Addr::UNSPECIFIED, A_PORT);
    let mut ports = Vec::new();
    for dest in &dests {
        let first = observed(&sock, dest);
        assert_eq!(first.ip(), topo.wan_ip(Router::A));
        // One flow keeps its mapping (the conntrack entry) while it lives.
        assert_eq!(observed(&sock, dest), first, "to {dest:?}");
        ports.push(first.port());
    }
    // Linux draws each new flow's port at random from 1024-65535, so three flows all
    // keeping A's port, or all sharing one port, would be a 1 in ~4·10⁹ coincidence:
    // the mapping is per flow, not per socket.
    eprintln!("random-fully: A's port {A_PORT} seen as {ports:?}");
    assert!(ports.iter().any(|&p| p != A_PORT), "{ports:?}");
    assert!(ports.iter().any(|&p| p != ports[0]), "{ports:?}");
}

#[test]
fn outsiders_cannot_reach_private_hosts() {
    if !netns::available_or_skip("outsiders_cannot_reach_private_hosts") {
        return;
    }
    let topo = lab(NatKind::PortPreserving);
    let a_ip = topo.ip(Host::A);
    let wan_a = topo.wan_ip(Router::A);
    let sock = udp(&topo, Host::A, Ipv4Addr::UNSPECIFIED, A_PORT);
    let _listener = topo
        .within(Host::A, || {
            TcpListener::bind(sa(Ipv4Addr::UNSPECIFIED, PUB_PORT))
        })
        .unwrap();
    let outsider = udp(&topo, Host::Pub, topo.ip(Host::Pub), PUB_PORT);
    let connect = |to: SocketAddr| {
        let started = Instant::now();
        let r = topo.within(Host::Pub, || TcpStream::connect_timeout(&to, CONNECT));
        assert!(started.elapsed() < CONNECT * 2);
        r
    };

    // No route to the private network, and nothing forwarded to the WAN address.
    assert!(
        connect(sa(a_ip, PUB_PORT)).is_err(),
        "pub reached {a_ip} by TCP"
    );
    assert!(
        connect(sa(wan_a, PUB_PORT)).is_err(),
        "pub reached {wan_a} by TCP"
    );
    let _ = outsider.send_to(b"unsolicited", sa(a_ip, A_PORT));
    outsider.send_to(b"unsolicited", sa(wan_a, A_PORT)).unwrap();
    assert_eq!(recv(&sock, QUIET), None, "unsolicited UDP reached A");

    // Even with a route to 192.168.0.0/16 via router A, the router forwards nothing
    // inbound that A did not start.
    let out = topo
        .cmd(Host::Pub, netns::tool("ip"))
        .args(["route", "add", "192.168.0.0/16", "via"])
        .arg(wan_a.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(connect(sa(a_ip, PUB_PORT)).is_err(), "routed TCP reached A");
    outsider.send_to(b"routed", sa(a_ip, A_PORT)).unwrap();
    assert_eq!(recv(&sock, QUIET), None, "routed UDP reached A");

    // Control: once A has sent to the outsider, the outsider's answers do reach A.
    let src = observed(&sock, &outsider);
    outsider.send_to(b"answer", src).unwrap();
    assert!(matches!(recv(&sock, ARRIVE), Some((d, _)) if d == b"answer"));
}

/// Both sides send to the other's `to` every 50 ms (B starting after `b_delay`) and
/// listen in between, for at most ~1.5 s; each returns where its first packet from the
/// other side came from, if one came.
fn punch(
    a: &UdpSocket,
    a_to: SocketAddr,
    b: &UdpSocket,
    b_to: SocketAddr,
    b_delay: Duration,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    fn side(sock: &UdpSocket, to: SocketAddr, delay: Duration) -> Option<SocketAddr> {
        std::thread::sleep(delay);
        let mut got = None;
        let mut after = 0;
        for _ in 0..30 {
            sock.send_to(b"punch", to).unwrap();
            if let Some((data, from)) = recv(sock, Duration::from_millis(50))
                && data == b"punch"
            {
                got.get_or_insert(from);
            }
            // Keep sending a little after success so the other side gets through too.
            if got.is_some() {
                after += 1;
                if after > 5 {
                    break;
                }
            }
        }
        got
    }
    std::thread::scope(|s| {
        let ha = s.spawn(|| side(a, a_to, Duration::ZERO));
        let hb = s.spawn(|| side(b, b_to, b_delay));
        (ha.join().unwrap(), hb.join().unwrap())
    })
}

/// A and B learn their public addresses from the public host (as from a signaling
/// server), then punch towards each other's observed address.
fn punch_via_observed(
    nat: NatKind,
    b_delay: Duration,
) -> (Topology, [SocketAddr; 2], [Option<SocketAddr>; 2]) {
    let topo = lab(nat);
    let server = udp(&topo, Host::Pub, topo.ip(Host::Pub), PUB_PORT);
    let a = udp(&topo, Host::A, Ipv4Addr::UNSPECIFIED, A_PORT);
    let b = udp(&topo, Host::B, Ipv4Addr::UNSPECIFIED, B_PORT);
    let ext_a = observed(&a, &server);
    let ext_b = observed(&b, &server);
    let (got_a, got_b) = punch(&a, ext_b, &b, ext_a, b_delay);
    (topo, [ext_a, ext_b], [got_a, got_b])
}

#[test]
fn udp_hole_punch_works_through_port_preserving_nats() {
    if !netns::available_or_skip("udp_hole_punch_works_through_port_preserving_nats") {
        return;
    }
    // Simultaneous, and with A's first packets arriving at router B before B has sent
    // anything (they are dropped there, and must not spoil B's later mapping).
    for b_delay in [Duration::ZERO, Duration::from_millis(300)] {
        let (topo, [ext_a, ext_b], [got_a, got_b]) =
            punch_via_observed(NatKind::PortPreserving, b_delay);
        assert_eq!(ext_a, sa(topo.wan_ip(Router::A), A_PORT));
        assert_eq!(ext_b, sa(topo.wan_ip(Router::B), B_PORT));
        assert_eq!(
            got_a,
            Some(ext_b),
            "A heard nothing from B (B delayed {b_delay:?})"
        );
        assert_eq!(
            got_b,
            Some(ext_a),
            "B heard nothing from A (B delayed {b_delay:?})"
        );
    }
}

#[test]
fn udp_hole_punch_fails_through_random_fully_nats() {
    if !netns::available_or_skip("udp_hole_punch_fails_through_random_fully_nats") {
        return;
    }
    // The ports the public host saw belong to the flows towards it; packets towards the
    // peer get new random ports, which the peer's router does not expect.
    let (_topo, _, got) = punch_via_observed(NatKind::RandomFully, Duration::ZERO);
    assert_eq!(
        got,
        [None, None],
        "a hole punch got through random-fully NAT"
    );
}

#[test]
fn drop_deletes_the_namespaces_and_new_removes_leftovers() {
    if !netns::available_or_skip("drop_deletes_the_namespaces_and_new_removes_leftovers") {
        return;
    }
    let exists = |name: &str| Path::new("/run/netns").join(name).exists();
    // A leftover of a crashed run: a process id that cannot be alive (ids are below
    // pid_max).
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let leftover = format!("nhleft-{}-0-net", pid_max.trim());
    let out = std::process::Command::new(netns::tool("ip"))
        .args(["netns", "add", &leftover])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let topo = Topology::new("nhleft", NatKind::PortPreserving).unwrap();
    assert!(!exists(&leftover), "leftover {leftover} not removed");
    let names: Vec<String> = [Host::Pub, Host::A, Host::B]
        .map(|h| topo.ns(h).to_owned())
        .into_iter()
        .chain([Router::A, Router::B].map(|r| topo.router_ns(r).to_owned()))
        .chain([topo.internet_ns().to_owned()])
        .collect();
    assert!(names.iter().all(|n| exists(n)), "{names:?}");
    drop(topo);
    assert!(names.iter().all(|n| !exists(n)), "{names:?} left behind");
}
