//! What a peer that reaches the node through a relay can make it dial by DCUtR: the
//! addresses of its `CONNECT`, in the node's scope and at most
//! `mesh_core::families::MAX_CANDIDATES` (16) of them (`libp2p-dcutr` alone dials them
//! all). Real swarms over loopback TCP: a libp2p relay, the node's side with
//! `libmesh::node::dcutr_scope::Dcutr`, and a stock rust-libp2p peer whose DCUtR offers
//! 20 addresses, each a loopback socket that counts who connects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libmesh::node::dcutr_scope::{Dcutr, PER_PEER, PER_TARGET};
use libmesh::node::router::policy::{CandidatePolicy, SignalSettings};
use libp2p::core::Multiaddr;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Swarm, SwarmBuilder, dcutr, noise, relay, tcp, yamux};
use mesh_testkit::candidates::Candidates;

const LIMIT: Duration = Duration::from_secs(60);
const OFFERED: usize = 20;

#[derive(NetworkBehaviour)]
struct Node {
    relay: relay::client::Behaviour,
    dcutr: Dcutr,
    candidates: Candidates,
}

#[derive(NetworkBehaviour)]
struct Stock {
    relay: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    candidates: Candidates,
}

fn relay_server() -> Swarm<relay::Behaviour> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|k| relay::Behaviour::new(k.public().to_peer_id(), Default::default()))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(LIMIT))
        .build()
}

/// Drives `s` until one of its events passes `done` ([`LIMIT`] at most: a reservation,
/// say).
async fn until<B: NetworkBehaviour>(
    s: &mut Swarm<B>,
    done: impl Fn(&SwarmEvent<B::ToSwarm>) -> bool,
) {
    tokio::time::timeout(LIMIT, async { while !done(&s.select_next_some().await) {} })
        .await
        .expect("the awaited event never came");
}

/// A relay listening on loopback and running on its own task; its address with
/// `/p2p/<relay>`.
async fn running_relay() -> Multiaddr {
    let mut r = relay_server();
    r.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let r_addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = r.select_next_some().await {
            break address;
        }
    };
    // A relay serves once it has an external address.
    r.add_external_address(r_addr.clone());
    let r_addr = r_addr.with(Protocol::P2p(*r.local_peer_id()));
    tokio::spawn(async move {
        loop {
            r.select_next_some().await;
        }
    });
    r_addr
}

/// A swarm over loopback TCP with a relay client, its behaviour made by `make` from its
/// key and that client.
fn relay_client_swarm<B: NetworkBehaviour>(
    make: impl FnOnce(&libp2p::identity::Keypair, relay::client::Behaviour) -> B,
) -> Swarm<B> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(make)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(LIMIT))
        .build()
}

/// The node's side: DCUtR through the wrapper; it offers one address nobody listens at.
fn node() -> Swarm<Node> {
    relay_client_swarm(|k, relay| Node {
        relay,
        dcutr: Dcutr::new(
            dcutr::Behaviour::new(k.public().to_peer_id()),
            CandidatePolicy::new(SignalSettings::default()),
            mesh_core::families::MAX_CANDIDATES,
        ),
        candidates: Candidates(VecDeque::from(["/ip4/127.0.0.1/tcp/1".parse().unwrap()])),
    })
}

fn stock(offered: Vec<Multiaddr>) -> Swarm<Stock> {
    relay_client_swarm(|k, relay| Stock {
        relay,
        dcutr: dcutr::Behaviour::new(k.public().to_peer_id()),
        candidates: Candidates(offered.into()),
    })
}

/// A loopback socket that records its port for every connection and closes it at once.
async fn counting(seen: Arc<Mutex<HashSet<u16>>>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            seen.lock().unwrap().insert(port);
            drop(s);
        }
    });
    port
}

/// How many of the addresses offered are contacted when each list of `offers` is a
/// stock peer's DCUtR offer (one peer per list, each with its own counting sockets on
/// 127.0.0.1), every peer reaching the node through one relay.
async fn contacted(offers: &[usize]) -> usize {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let r_addr = running_relay().await;

    // The node reserves a circuit at the relay.
    let mut a = node();
    a.listen_on(r_addr.clone().with(Protocol::P2pCircuit))
        .unwrap();
    let a_id = *a.local_peer_id();
    until(&mut a, |e| {
        matches!(
            e,
            SwarmEvent::Behaviour(NodeEvent::Relay(
                relay::client::Event::ReservationReqAccepted { .. }
            ))
        )
    })
    .await;

    // The stock peers dial it through the relay; the node starts DCUtR and dials back.
    let mut peers = HashSet::new();
    for n in offers {
        let mut offered = Vec::new();
        for _ in 0..*n {
            let port = counting(seen.clone()).await;
            offered.push(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
        }
        let mut b = stock(offered);
        peers.insert(*b.local_peer_id());
        b.dial(
            r_addr
                .clone()
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(a_id)),
        )
        .unwrap();
        tokio::spawn(async move {
            loop {
                b.select_next_some().await;
            }
        });
    }
    let deadline = Instant::now() + LIMIT;
    let mut outcomes = Vec::new();
    while !peers.is_empty() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(SwarmEvent::Behaviour(NodeEvent::Dcutr(e))) =
            tokio::time::timeout(left, a.select_next_some()).await
        {
            peers.remove(&e.remote_peer_id);
            outcomes.push(e);
        }
    }
    assert!(peers.is_empty(), "DCUtR never ended with {peers:?}");
    // Let the last dials reach the sockets.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        let _ = tokio::time::timeout(Duration::from_millis(100), a.select_next_some()).await;
    }
    let n = seen.lock().unwrap().len();
    println!("{n} contacted; DCUtR outcomes: {outcomes:?}");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dcutr_peer_gets_at_most_sixteen_of_its_addresses_dialed() {
    assert_eq!(
        contacted(&[OFFERED]).await,
        mesh_core::families::MAX_CANDIDATES,
        "addresses of {OFFERED} contacted"
    );
}

/// Fresh keys reaching the node through a relay, each naming 16 addresses on one host:
/// the host is dialed one `CONNECT`'s worth (`PER_TARGET`), not 16 per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_naming_one_host_get_it_dialed_one_connect_s_worth() {
    let n = mesh_core::families::MAX_CANDIDATES;
    assert_eq!(PER_TARGET.burst as usize, n);
    assert_eq!(
        contacted(&[n, n, n]).await,
        n,
        "addresses of {} contacted",
        3 * n
    );
}

#[derive(NetworkBehaviour)]
struct Puncher {
    relay: relay::client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

fn puncher() -> Swarm<Puncher> {
    relay_client_swarm(|_, relay| Puncher {
        relay,
        stream: libp2p_stream::Behaviour::new(),
    })
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A DCUtR `HolePunch` message (protobuf, length-prefixed): `kind` 100 (CONNECT) or
/// 300 (SYNC), with `addrs`.
fn hole_punch(kind: usize, addrs: &[Multiaddr]) -> Vec<u8> {
    let mut msg = vec![0x08];
    varint(kind, &mut msg);
    for a in addrs {
        msg.push(0x12);
        varint(a.as_ref().len(), &mut msg);
        msg.extend_from_slice(a.as_ref());
    }
    let mut framed = Vec::new();
    varint(msg.len(), &mut framed);
    framed.extend(msg);
    framed
}

/// Reads one length-prefixed message.
async fn read_message(s: &mut libp2p::Stream) -> Vec<u8> {
    use futures::AsyncReadExt;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        len |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.unwrap();
    buf
}

/// A puncher holding a reservation at a fresh relay, driven by its own task, and the
/// node having dialed the puncher's circuit: the puncher's stream control and the node
/// (not yet driven).
async fn node_dialing_a_puncher() -> (libp2p_stream::Control, Swarm<Node>) {
    let r_addr = running_relay().await;
    let mut p = puncher();
    let control = p.behaviour().stream.new_control();
    p.listen_on(r_addr.clone().with(Protocol::P2pCircuit))
        .unwrap();
    let p_id = *p.local_peer_id();
    until(&mut p, |e| {
        matches!(
            e,
            SwarmEvent::Behaviour(PuncherEvent::Relay(
                relay::client::Event::ReservationReqAccepted { .. }
            ))
        )
    })
    .await;
    tokio::spawn(async move {
        loop {
            p.select_next_some().await;
        }
    });
    let mut a = node();
    a.dial(r_addr.with(Protocol::P2pCircuit).with(Protocol::P2p(p_id)))
        .unwrap();
    (control, a)
}

/// One DCUtR round from the puncher to `a_id` over the relayed connection: `CONNECT`
/// with `addrs`, the node's `CONNECT` read, `SYNC`; the node dials once it has the
/// `SYNC` (`settle` later the stream is closed).
async fn dcutr_round(
    control: &mut libp2p_stream::Control,
    a_id: libp2p::PeerId,
    addrs: &[Multiaddr],
    settle: Duration,
) {
    use futures::AsyncWriteExt;
    let protocol = libp2p::StreamProtocol::new("/libp2p/dcutr");
    let mut s = None;
    for _ in 0..50 {
        match control.open_stream(a_id, protocol.clone()).await {
            Ok(stream) => {
                s = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut s = s.expect("no DCUtR stream within 5 s");
    s.write_all(&hole_punch(100, addrs)).await.unwrap();
    let _their_connect = read_message(&mut s).await;
    s.write_all(&hole_punch(300, &[])).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(settle).await;
    let _ = s.close().await;
}

/// A peer at the other end of a relayed connection the node dialed sends DCUtR
/// `CONNECT`s over and over, 16 fresh addresses each: the node dials the first three
/// rounds' (one relayed connection's attempts, the peer's budget) and no more.
/// `libp2p-dcutr` dials every round on such a connection (160 sockets here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_repeating_dcutr_gets_its_rounds_counted() {
    const ROUNDS: usize = 10;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let (mut control, mut a) = node_dialing_a_puncher().await;
    let a_id = *a.local_peer_id();
    tokio::spawn(async move {
        loop {
            a.select_next_some().await;
        }
    });

    for _ in 0..ROUNDS {
        let mut addrs = Vec::new();
        for _ in 0..16 {
            let port = counting(seen.clone()).await;
            addrs.push(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
        }
        dcutr_round(&mut control, a_id, &addrs, Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let contacted = seen.lock().unwrap().len();
    let allowed = PER_PEER.burst as usize * mesh_core::families::MAX_CANDIDATES;
    assert!(
        contacted >= 16,
        "the first round was not dialed: {contacted}"
    );
    assert!(
        contacted <= allowed,
        "{contacted} addresses contacted over {ROUNDS} rounds (at most {allowed})"
    );
}

/// The same peer sends 30 rounds, each with addresses where nothing listens: once the
/// node's dials settled (failed, or refused over the peer's budget), DCUtR's tables
/// hold nothing (the patched copy, `vendor/libp2p-dcutr`). Upstream kept one entry per
/// round for as long as the node ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_repeating_dcutr_leaves_nothing_behind() {
    const ROUNDS: usize = 30;
    let (mut control, mut a) = node_dialing_a_puncher().await;
    let a_id = *a.local_peer_id();
    // The node's task publishes what DCUtR tracks, and the peak, after each event and
    // every 10 ms (a dial refused over the budget makes no swarm event).
    let (tracked_tx, tracked) = tokio::sync::watch::channel((0usize, 0usize));
    tokio::spawn(async move {
        let mut peak = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                _ = tick.tick() => {}
            }
            let now = a.behaviour().dcutr.inner().tracked();
            peak = peak.max(now);
            let _ = tracked_tx.send((now, peak));
        }
    });

    // Ports where nothing listens: bound, then closed.
    let addrs: Vec<Multiaddr> = (0..4)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
        })
        .collect();
    for _ in 0..ROUNDS {
        dcutr_round(&mut control, a_id, &addrs, Duration::from_millis(50)).await;
    }
    // Every dial settles within a few seconds (closed loopback ports, or refused at once).
    let deadline = Instant::now() + Duration::from_secs(20);
    while tracked.borrow().0 > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (left, peak) = *tracked.borrow();
    assert!(
        peak >= 1,
        "the rounds were not dialed (DCUtR tracked nothing)"
    );
    assert_eq!(
        left, 0,
        "DCUtR still tracks {left} entries after {ROUNDS} rounds (peak {peak})"
    );
}
