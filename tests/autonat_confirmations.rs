//! The node's AutoNAT client (libp2p-autonat as patched in `vendor/`) believes no single
//! server: an address is confirmed once servers of two networks dialed it back, found
//! unreachable once two did not reach it, and a dial-back counts only when it came in
//! over the tested address's transport. Real swarms over loopback TCP (each server on
//! its own loopback address, its own network); the hostile server answers the dial
//! requests itself, dialing back from a second identity as go-libp2p's servers do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, autonat, identify};
use mesh_testkit::candidates::Candidates;
use mesh_testkit::{Net, net_swarm};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};

/// What the node's client is built with (`src/node/nat_verdicts.rs`).
const CONFIRMATIONS: usize = 2;
const PROBE: Duration = Duration::from_millis(200);
const IDLE: Duration = Duration::from_secs(300);
const WITHIN: Duration = Duration::from_secs(30);
const DIAL_REQUEST: StreamProtocol = StreamProtocol::new("/libp2p/autonat/2/dial-request");
const DIAL_BACK: StreamProtocol = StreamProtocol::new("/libp2p/autonat/2/dial-back");

#[derive(NetworkBehaviour)]
struct Client {
    identify: identify::Behaviour,
    autonat: autonat::v2::client::Behaviour,
    feed: Candidates,
}

#[derive(NetworkBehaviour)]
struct Server {
    identify: identify::Behaviour,
    autonat: autonat::v2::server::Behaviour,
}

#[derive(NetworkBehaviour)]
struct Raw {
    identify: identify::Behaviour,
    stream: libp2p_stream::Behaviour,
}

fn identify_of(key: &libp2p::identity::Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new(
        "/libmesh/test/1.0.0".into(),
        key.public(),
    ))
}

/// What the client did about an address.
#[derive(Debug, PartialEq)]
enum Seen {
    /// The swarm was told the address is an external address.
    Confirmed(Multiaddr),
    /// The swarm was told the address is no longer one.
    Expired(Multiaddr),
    /// The address was handed to the swarm as a candidate.
    Candidate(Multiaddr),
    /// The client's verdict: the address, the server of the last test, reachable.
    Verdict(Multiaddr, PeerId, bool),
}

/// A server's test of a client's address: the address, and for an honest server
/// whether the test ran to its answer (libp2p's server says no more: "unreachable" is
/// an answer too), for the hostile one whether the client took its dial-back.
type Tested = (Multiaddr, bool);

/// Something to do with a running swarm.
type Command<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// Has the swarm that `commands` runs dial `addr`.
async fn dial<B: NetworkBehaviour>(commands: &mpsc::Sender<Command<B>>, addr: Multiaddr) {
    let dial: Command<B> = Box::new(move |s| s.dial(addr).expect("dial"));
    assert!(commands.send(dial).await.is_ok(), "swarm task running");
}

/// Runs `swarm` on its own task: does what comes on the returned sender, hands what
/// `pick` keeps of its events to the returned receiver.
fn run<B, E>(
    mut swarm: Swarm<B>,
    pick: fn(SwarmEvent<B::ToSwarm>) -> Option<E>,
) -> (mpsc::Sender<Command<B>>, mpsc::Receiver<E>)
where
    B: NetworkBehaviour + Send + 'static,
    E: Send + 'static,
{
    let (command_tx, mut command_rx) = mpsc::channel::<Command<B>>(8);
    let (event_tx, event_rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                e = swarm.select_next_some() => {
                    if let Some(e) = pick(e)
                        && event_tx.send(e).await.is_err()
                    {
                        return;
                    }
                }
                Some(command) = command_rx.recv() => command(&mut swarm),
            }
        }
    });
    (command_tx, event_rx)
}

/// A swarm of `B` listening on TCP at `ip`, with its listen address, peer id and
/// listener.
async fn listening<B: NetworkBehaviour>(
    ip: &str,
    make: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> (Swarm<B>, Multiaddr, PeerId, ListenerId) {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = net_swarm(&key, Net::Tcp, IDLE, make(&key));
    let listener = swarm
        .listen_on(format!("/ip4/{ip}/tcp/0").parse().unwrap())
        .unwrap();
    let addr = timeout(WITHIN, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("listening");
    let id = *swarm.local_peer_id();
    (swarm, addr, id, listener)
}

/// The client under test, as it runs.
struct UnderTest {
    commands: mpsc::Sender<Command<Client>>,
    seen: mpsc::Receiver<Seen>,
    addr: Multiaddr,
    id: PeerId,
    listener: ListenerId,
}

/// The client under test (`config` on top of the node's), handed `candidates` to test.
async fn client_with(
    config: impl FnOnce(autonat::v2::client::Config) -> autonat::v2::client::Config,
    candidates: impl FnOnce(&Multiaddr) -> Vec<Multiaddr>,
) -> UnderTest {
    let config = config(
        autonat::v2::client::Config::default()
            .with_probe_interval(PROBE)
            .with_confirmations(CONFIRMATIONS),
    );
    let (mut swarm, addr, id, listener) = listening("127.0.0.1", |k| Client {
        identify: identify_of(k),
        autonat: autonat::v2::client::Behaviour::with_config(config),
        feed: Candidates::default(),
    })
    .await;
    swarm.behaviour_mut().feed = Candidates::new(candidates(&addr));
    let (commands, seen) = run(swarm, |e| match e {
        SwarmEvent::ExternalAddrConfirmed { address } => Some(Seen::Confirmed(address)),
        SwarmEvent::ExternalAddrExpired { address } => Some(Seen::Expired(address)),
        SwarmEvent::NewExternalAddrCandidate { address } => Some(Seen::Candidate(address)),
        SwarmEvent::Behaviour(ClientEvent::Autonat(e)) => {
            Some(Seen::Verdict(e.tested_addr, e.server, e.result.is_ok()))
        }
        _ => None,
    });
    UnderTest {
        commands,
        seen,
        addr,
        id,
        listener,
    }
}

/// [`client_with`] the node's configuration: its commands, what it reports, its
/// listen address and peer id.
async fn client(
    candidates: impl FnOnce(&Multiaddr) -> Vec<Multiaddr>,
) -> (
    mpsc::Sender<Command<Client>>,
    mpsc::Receiver<Seen>,
    Multiaddr,
    PeerId,
) {
    let c = client_with(|c| c, candidates).await;
    (c.commands, c.seen, c.addr, c.id)
}

/// An honest server on `ip`: its address, and its tests as they end.
async fn server(ip: &str) -> (Multiaddr, mpsc::Receiver<Tested>) {
    let (swarm, addr, _, _) = listening(ip, |k| Server {
        identify: identify_of(k),
        autonat: autonat::v2::server::Behaviour::default(),
    })
    .await;
    let (_, tests) = run(swarm, |e| match e {
        SwarmEvent::Behaviour(ServerEvent::Autonat(e)) => Some((e.tested_addr, e.result.is_ok())),
        _ => None,
    });
    (addr, tests)
}

/// The next event from `rx` within [`WITHIN`].
async fn next<E>(rx: &mut mpsc::Receiver<E>, what: &str) -> E {
    timeout(WITHIN, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WITHIN:?}"))
        .expect("swarm task running")
}

/// The next test of `addr` that `rx` reports (tests of the client's other addresses,
/// such as the ones identify's observations add, passed over): see [`Tested`].
async fn next_test(rx: &mut mpsc::Receiver<Tested>, addr: &Multiaddr, what: &str) -> bool {
    loop {
        let (tested, ok) = next(rx, what).await;
        if &tested == addr {
            return ok;
        }
    }
}

/// The next thing the client reports about `addr`, its being a candidate apart.
async fn next_seen(seen: &mut mpsc::Receiver<Seen>, addr: &Multiaddr, what: &str) -> Seen {
    loop {
        let s = next(seen, what).await;
        if let Seen::Confirmed(a) | Seen::Expired(a) | Seen::Verdict(a, _, _) = &s
            && a == addr
        {
            return s;
        }
    }
}

/// Until `addr` was handed to the swarm as a candidate.
async fn candidate(seen: &mut mpsc::Receiver<Seen>, addr: &Multiaddr) {
    while next(seen, "the candidate").await != Seen::Candidate(addr.clone()) {}
}

/// What the client reports about `addr` within `window` (nothing, for a window it
/// should stay quiet in).
async fn within(seen: &mut mpsc::Receiver<Seen>, addr: &Multiaddr, window: Duration) -> Vec<Seen> {
    let end = Instant::now() + window;
    let mut got = Vec::new();
    while let Ok(Some(s)) = tokio::time::timeout_at(end, seen.recv()).await {
        let about = match &s {
            Seen::Confirmed(a) | Seen::Expired(a) | Seen::Verdict(a, _, _) => a,
            Seen::Candidate(_) => continue,
        };
        if about == addr {
            got.push(s);
        }
    }
    got
}

#[tokio::test]
async fn one_network_s_server_does_not_confirm_an_address_a_second_one_does() {
    let (commands, mut seen, addr, _) = client(|own| vec![own.clone()]).await;
    let (s1, mut s1_tests) = server("127.0.0.2").await;
    let (s2, mut s2_tests) = server("127.0.0.3").await;

    // The first server dials the client back at its address: reachable.
    dial(&commands, s1).await;
    assert!(next_test(&mut s1_tests, &addr, "the first server's test").await);
    // That one server's word confirms nothing (upstream confirmed here).
    let quiet = within(&mut seen, &addr, 10 * PROBE).await;
    assert_eq!(quiet, vec![], "one server's test decided");

    // A server of another network finds it reachable too: confirmed.
    dial(&commands, s2).await;
    assert!(next_test(&mut s2_tests, &addr, "the second server's test").await);
    let first = next_seen(&mut seen, &addr, "the confirmation").await;
    assert_eq!(first, Seen::Confirmed(addr.clone()));
    let Seen::Verdict(a, _, reachable) = next_seen(&mut seen, &addr, "the verdict").await else {
        panic!("a verdict after the confirmation");
    };
    assert_eq!((a, reachable), (addr, true));
}

/// A hostile AutoNAT server: says every address it is asked about is reachable, after
/// a dial-back from its second identity over the connection that identity holds to the
/// client (to the client's real address, not the tested one). Reports, for each test,
/// whether the client took the dial-back.
async fn hostile_server(
    ip: &str,
    client_addr: Multiaddr,
    client: PeerId,
) -> (Multiaddr, mpsc::Receiver<Tested>) {
    hostile(ip, client_addr, client, false).await
}

/// A server that hangs up on every dial request it gets (closes its connection to the
/// client); reports each request.
async fn hanging_up_server(
    ip: &str,
    client_addr: Multiaddr,
    client: PeerId,
) -> (Multiaddr, mpsc::Receiver<Tested>) {
    hostile(ip, client_addr, client, true).await
}

async fn hostile(
    ip: &str,
    client_addr: Multiaddr,
    client: PeerId,
    hang_up: bool,
) -> (Multiaddr, mpsc::Receiver<Tested>) {
    // The identity that dials back, connected to the client from the start.
    let (back, _, _, _) = listening(ip, |k| Raw {
        identify: identify_of(k),
        stream: libp2p_stream::Behaviour::new(),
    })
    .await;
    let mut back_control = back.behaviour().stream.new_control();
    let (back_commands, mut back_up) = run(back, |e: SwarmEvent<RawEvent>| {
        matches!(e, SwarmEvent::ConnectionEstablished { .. }).then_some(())
    });
    dial(&back_commands, client_addr).await;
    next(&mut back_up, "the dial-back identity's connection").await;

    let (front, addr, _, _) = listening(ip, |k| Raw {
        identify: identify_of(k),
        stream: libp2p_stream::Behaviour::new(),
    })
    .await;
    let mut requests = front
        .behaviour()
        .stream
        .new_control()
        .accept(DIAL_REQUEST)
        .unwrap();
    let (front_commands, _) = run(front, |_: SwarmEvent<RawEvent>| None::<()>);
    let (taken_tx, taken_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some((_, mut stream)) = requests.next().await {
            let Some((tested, nonce)) = read_frame(&mut stream)
                .await
                .as_deref()
                .and_then(dial_request)
            else {
                continue;
            };
            if hang_up {
                let close: Command<Raw> = Box::new(move |s| {
                    let _ = s.disconnect_peer_id(client);
                });
                let _ = front_commands.send(close).await;
                let _ = taken_tx.send((tested, false)).await;
                continue;
            }
            let taken = match timeout(WITHIN, back_control.open_stream(client, DIAL_BACK)).await {
                Ok(Ok(mut s)) => {
                    // DialBack { nonce }: 9 bytes, field 1 as fixed64.
                    let mut frame = vec![9u8, 0x09];
                    frame.extend(nonce.to_le_bytes());
                    let _ = s.write_all(&frame).await;
                    let _ = s.flush().await;
                    // The client answers a dial-back it takes with an empty
                    // DialBackResponse (status OK): one zero byte.
                    let mut answer = [0xffu8; 1];
                    matches!(
                        timeout(Duration::from_secs(5), s.read_exact(&mut answer)).await,
                        Ok(Ok(()))
                    ) && answer == [0]
                }
                _ => false,
            };
            let _ = taken_tx.send((tested, taken)).await;
            // "Dialed back: OK" (status OK, the first address, dial status OK), whatever
            // happened.
            let ok = [0x08, 0x12, 0x06, 0x08, 0xc8, 0x01, 0x18, 0xc8, 0x01];
            let _ = stream.write_all(&ok).await;
            let _ = stream.close().await;
        }
    });
    (addr, taken_rx)
}

/// One length-prefixed frame (a varint, then the bytes), at most 4 KiB.
async fn read_frame(s: &mut libp2p::Stream) -> Option<Vec<u8>> {
    let mut len = 0usize;
    for shift in (0..28).step_by(7) {
        let mut b = [0u8; 1];
        timeout(WITHIN, s.read_exact(&mut b)).await.ok()?.ok()?;
        len |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    if len > 4096 {
        return None;
    }
    let mut body = vec![0u8; len];
    timeout(WITHIN, s.read_exact(&mut body)).await.ok()?.ok()?;
    Some(body)
}

/// The first address and the nonce of a `Message { dialRequest { addrs, nonce } }`:
/// the message's field 1 (length-delimited), in it the addresses (field 1, each shorter
/// than 128 bytes) and the nonce (field 2, fixed64).
fn dial_request(msg: &[u8]) -> Option<(Multiaddr, u64)> {
    let (&key, rest) = msg.split_first()?;
    if key != 0x0a {
        return None;
    }
    let mut len = 0usize;
    let mut at = 0;
    for shift in (0..28).step_by(7) {
        let b = *rest.get(at)?;
        at += 1;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    let inner = rest.get(at..at + len)?;
    let (mut first, mut at) = (None, 0);
    while at < inner.len() {
        match inner[at] {
            0x0a => {
                let len = usize::from(*inner.get(at + 1)?);
                let bytes = inner.get(at + 2..at + 2 + len)?;
                first = first.or_else(|| Multiaddr::try_from(bytes.to_vec()).ok());
                at += 2 + len;
            }
            0x11 => {
                let nonce = u64::from_le_bytes(inner.get(at + 1..at + 9)?.try_into().ok()?);
                return Some((first?, nonce));
            }
            _ => return None,
        }
    }
    None
}

#[tokio::test]
async fn a_hostile_server_alone_confirms_nothing_and_two_honest_ones_outvote_it() {
    // An address of the client's host where nothing listens (a port just freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let wanted = nowhere.clone();
    let (commands, mut seen, addr, id) = client(move |_| vec![wanted]).await;
    let (h, mut taken) = hostile_server("127.0.0.4", addr, id).await;
    let (s1, mut s1_tests) = server("127.0.0.2").await;
    let (s2, mut s2_tests) = server("127.0.0.3").await;

    // The hostile server "tests" the address: its dial-back (over the client's real
    // address, TCP as the tested one) is taken, and it says "reachable".
    dial(&commands, h).await;
    assert!(next_test(&mut taken, &nowhere, "the hostile dial-back").await);
    let quiet = within(&mut seen, &nowhere, 10 * PROBE).await;
    assert_eq!(quiet, vec![], "the hostile server's word decided");

    // An honest server of another network cannot reach it: still no verdict (one each).
    dial(&commands, s1).await;
    assert!(next_test(&mut s1_tests, &nowhere, "the first honest test").await);
    let quiet = within(&mut seen, &nowhere, 10 * PROBE).await;
    assert_eq!(quiet, vec![], "one against one decided");

    // A second honest one: unreachable, the verdict; never an external address.
    dial(&commands, s2).await;
    assert!(next_test(&mut s2_tests, &nowhere, "the second honest test").await);
    let Seen::Verdict(a, _, reachable) = next_seen(&mut seen, &nowhere, "the verdict").await else {
        panic!("a verdict, not a confirmation");
    };
    assert_eq!((a, reachable), (nowhere, false));
}

#[tokio::test]
async fn a_dial_back_over_another_transport_than_the_tested_address_is_refused() {
    // A QUIC address: the hostile server's dial-back comes over TCP.
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap();
    let wanted = quic.clone();
    let (commands, mut seen, addr, id) = client(move |_| vec![wanted]).await;
    let (h, mut taken) = hostile_server("127.0.0.4", addr, id).await;

    dial(&commands, h).await;
    assert!(
        !next_test(&mut taken, &quic, "the hostile dial-back").await,
        "the client took a dial-back over TCP for a QUIC address"
    );
    let quiet = within(&mut seen, &quic, 10 * PROBE).await;
    assert_eq!(quiet, vec![]);
}

/// A client whose confirmations are tested again after 3 s, confirmed at its
/// address by two servers, that then stops listening there: what it reports about the
/// address until the new test's unreachable verdict. `pinned`: the application
/// confirmed the address itself first.
async fn confirmed_then_gone(pinned: bool) -> Vec<Seen> {
    let UnderTest {
        commands,
        mut seen,
        addr,
        listener,
        ..
    } = client_with(
        |c| c.with_retest_after(Duration::from_secs(3)),
        |own| vec![own.clone()],
    )
    .await;
    if pinned {
        // Once AutoNAT has the candidate (the swarm hands none over that is an
        // external address already). The swarm reports no event for an address its
        // application adds.
        candidate(&mut seen, &addr).await;
        let own = addr.clone();
        let pin: Command<Client> = Box::new(move |s| s.add_external_address(own));
        assert!(commands.send(pin).await.is_ok());
    }
    let (s1, _s1_tests) = server("127.0.0.2").await;
    let (s2, _s2_tests) = server("127.0.0.3").await;
    dial(&commands, s1).await;
    dial(&commands, s2).await;
    // AutoNAT's confirmation (a swarm event when AutoNAT's), then its verdict.
    while !matches!(
        next_seen(&mut seen, &addr, "the verdict").await,
        Seen::Verdict(_, _, true)
    ) {}

    // The client stops listening there (its host moved, say); 3 s after the
    // confirmation the address is tested again, and nothing answers there.
    let stop: Command<Client> = Box::new(move |s| assert!(s.remove_listener(listener)));
    assert!(commands.send(stop).await.is_ok());
    let mut got = Vec::new();
    loop {
        let s = next_seen(&mut seen, &addr, "the new verdict").await;
        let done = matches!(s, Seen::Verdict(_, _, false));
        got.push(s);
        if done {
            return got;
        }
    }
}

#[tokio::test]
async fn a_confirmed_address_that_stops_answering_is_tested_again_and_expires() {
    let got = confirmed_then_gone(false).await;
    // Confirmed again (the first retest may come before the listener goes), then
    // expired with the unreachable verdict.
    let n = got.len();
    assert!(n >= 2, "{got:?}");
    assert!(matches!(got[n - 2], Seen::Expired(_)), "{got:?}");
    assert!(
        got[..n - 2]
            .iter()
            .all(|s| matches!(s, Seen::Confirmed(_) | Seen::Verdict(_, _, true))),
        "{got:?}"
    );
}

#[tokio::test]
async fn an_address_the_application_confirmed_is_not_expired_by_autonat() {
    let got = confirmed_then_gone(true).await;
    assert!(
        !got.iter().any(|s| matches!(s, Seen::Expired(_))),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_server_that_hangs_up_during_a_test_leaves_the_address_to_others() {
    let (commands, mut seen, addr, id) = client(|own| vec![own.clone()]).await;
    let (h, mut asked) = hanging_up_server("127.0.0.4", addr.clone(), id).await;
    let (s1, _s1_tests) = server("127.0.0.2").await;
    let (s2, _s2_tests) = server("127.0.0.3").await;

    // The only server at first: it takes the request and closes the connection.
    dial(&commands, h).await;
    next_test(
        &mut asked,
        &addr,
        "the request the hostile server hangs up on",
    )
    .await;
    // Two honest servers then confirm the address (upstream left it pending for
    // good: never tested again).
    dial(&commands, s1).await;
    dial(&commands, s2).await;
    assert_eq!(
        next_seen(&mut seen, &addr, "the confirmation").await,
        Seen::Confirmed(addr.clone())
    );
}
