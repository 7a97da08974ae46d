//! Shared by the integration tests: a relay swarm (circuit relay v2 server with
//! admission), client swarms (relay client, admission client, libp2p-stream for data),
//! each driven by its own task on loopback, and bounded waits for their events.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, noise, relay, request_response, tcp, yamux,
};
use mesh_admission::{client, server};
use mesh_core::{MeshError, NodeKeypair};
use tokio::sync::watch;

/// The data protocol the tests move bytes with.
pub const DATA: StreamProtocol = StreamProtocol::new("/mesh-admission-test/data/1.0.0");

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The relay: `server::Behaviour` (it owns the relay v2 server) and libp2p ping, which
/// every libp2p relay answers.
#[derive(NetworkBehaviour)]
pub struct RelayNode {
    pub admission: server::Behaviour,
    pub ping: libp2p::ping::Behaviour,
}

/// A client that watches its relay's liveness: relay client, admission client and
/// libp2p ping (with the test's interval).
#[derive(NetworkBehaviour)]
pub struct WatcherNode {
    pub relay: relay::client::Behaviour,
    pub admission: client::Behaviour,
    pub ping: libp2p::ping::Behaviour,
}

#[derive(NetworkBehaviour)]
pub struct ClientNode {
    pub relay: relay::client::Behaviour,
    pub admission: client::Behaviour,
    pub stream: libp2p_stream::Behaviour,
}

/// A client that sends raw bytes on `/mesh/relay-admission/1.0.0` (what no honest client
/// would send), with a relay client to try reservations and circuits.
#[derive(NetworkBehaviour)]
pub struct RawNode {
    pub relay: relay::client::Behaviour,
    pub raw: request_response::Behaviour<mesh_testkit::raw::RawCodec>,
}

/// A relay v2 config without the default rate limiters (every test peer is 127.0.0.1)
/// and with room for many reservations and circuits.
pub fn base_relay_config() -> relay::Config {
    relay::Config {
        reservation_rate_limiters: Vec::new(),
        circuit_src_rate_limiters: Vec::new(),
        max_reservations: 4096,
        max_reservations_per_peer: 16,
        max_circuits: 4096,
        max_circuits_per_peer: 1024,
        ..relay::Config::default()
    }
}

type Cmd<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// A swarm driven by its own task. Commands run on the swarm between events; events come
/// back in order. Dropping the node stops the task and drops the swarm.
pub struct Node<B: NetworkBehaviour> {
    pub name: String,
    pub key: NodeKeypair,
    pub peer: PeerId,
    cmds: mpsc::UnboundedSender<Cmd<B>>,
    /// For a node on its own runtime: stops that runtime without dropping anything.
    freeze: Option<oneshot::Sender<()>>,
    /// Dropped with the node: ends the own runtime's thread (and closes its sockets).
    _runtime: Option<std::sync::mpsc::Sender<()>>,
    events: mpsc::UnboundedReceiver<SwarmEvent<B::ToSwarm>>,
    backlog: VecDeque<SwarmEvent<B::ToSwarm>>,
    log: Vec<String>,
    task: tokio::task::JoinHandle<()>,
}

impl<B: NetworkBehaviour> Drop for Node<B> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<B> Node<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + Debug + 'static,
{
    /// Drives `swarm`; `hook` sees every event first (with the swarm).
    pub fn spawn(
        name: &str,
        key: NodeKeypair,
        swarm: Swarm<B>,
        hook: impl FnMut(&mut Swarm<B>, &SwarmEvent<B::ToSwarm>) + Send + 'static,
    ) -> Self {
        Self::spawn_on(&tokio::runtime::Handle::current(), name, key, swarm, hook)
    }

    /// Drives the swarm `build` makes on a runtime of its own, on its own thread, so that
    /// [`Node::freeze`] can stop everything the node runs (its connection tasks too)
    /// while its sockets stay open: a hung process.
    pub fn spawn_isolated(name: &str, key: NodeKeypair, build: impl FnOnce() -> Swarm<B>) -> Self {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (freeze_tx, freeze_rx) = oneshot::channel::<()>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = handle_tx.send(rt.handle().clone());
            // Runs until frozen (or the node is dropped); then nothing on it runs again.
            let _ = rt.block_on(freeze_rx);
            let _ = stop_rx.recv();
        });
        let handle: tokio::runtime::Handle = handle_rx.recv().unwrap();
        let swarm = {
            let _enter = handle.enter();
            build()
        };
        let mut node = Self::spawn_on(&handle, name, key, swarm, |_, _| {});
        node.freeze = Some(freeze_tx);
        node._runtime = Some(stop_tx);
        node
    }

    fn spawn_on(
        rt: &tokio::runtime::Handle,
        name: &str,
        key: NodeKeypair,
        mut swarm: Swarm<B>,
        mut hook: impl FnMut(&mut Swarm<B>, &SwarmEvent<B::ToSwarm>) + Send + 'static,
    ) -> Self {
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded::<Cmd<B>>();
        let (ev_tx, ev_rx) = mpsc::unbounded();
        let peer = *swarm.local_peer_id();
        let task = rt.spawn(async move {
            loop {
                tokio::select! {
                    cmd = cmd_rx.next() => match cmd {
                        Some(f) => f(&mut swarm),
                        None => return,
                    },
                    ev = swarm.select_next_some() => {
                        hook(&mut swarm, &ev);
                        // The test may have stopped listening; the swarm keeps running.
                        let _ = ev_tx.unbounded_send(ev);
                    }
                }
            }
        });
        Node {
            name: name.to_owned(),
            key,
            peer,
            cmds: cmd_tx,
            freeze: None,
            _runtime: None,
            events: ev_rx,
            backlog: VecDeque::new(),
            log: Vec::new(),
            task,
        }
    }

    /// Stops the runtime of a node made by [`Node::spawn_isolated`] without closing
    /// anything: its connections stay open and the peers' packets are acknowledged by
    /// the kernel, but nothing answers (not even pings, which its connection tasks
    /// would answer without the swarm).
    pub fn freeze(&mut self) {
        let tx = self
            .freeze
            .take()
            .expect("only an isolated node can be frozen");
        let _ = tx.send(());
    }

    /// Runs `f` on the swarm and returns its result.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<B>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .unbounded_send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .unwrap();
        tokio::time::timeout(WAIT, rx)
            .await
            .expect("swarm command timed out")
            .expect("swarm task ended")
    }

    /// Forgets every event received so far (so that later waits see only new ones).
    pub fn clear(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.log.push(format!("{ev:?}"));
        }
        self.backlog.clear();
    }

    /// The first event (earlier unmatched ones included) for which `f` says `Some`,
    /// within `within`; panics naming `what` otherwise.
    pub async fn wait_within<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut f: impl FnMut(&SwarmEvent<B::ToSwarm>) -> Option<T>,
    ) -> T {
        if let Some(i) = self.backlog.iter().position(|e| f(e).is_some()) {
            let ev = self.backlog.remove(i).expect("index from position");
            return f(&ev).expect("matched before");
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some(ev)) => {
                    self.log.push(format!("{ev:?}"));
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                    self.backlog.push_back(ev);
                }
                Ok(None) => panic!("{}: swarm task ended while waiting for {what}", self.name),
                Err(_) => {
                    let tail: Vec<&String> = self.log.iter().rev().take(40).rev().collect();
                    panic!(
                        "{}: no {what} within {within:?}; last events:\n{tail:#?}",
                        self.name
                    )
                }
            }
        }
    }

    /// [`Node::wait_within`] with the default bound.
    pub async fn wait<T>(
        &mut self,
        what: &str,
        f: impl FnMut(&SwarmEvent<B::ToSwarm>) -> Option<T>,
    ) -> T {
        self.wait_within(what, WAIT, f).await
    }

    /// Whether any event received so far (not yet matched) satisfies `f`.
    pub fn seen(&mut self, f: impl FnMut(&SwarmEvent<B::ToSwarm>) -> bool) -> bool {
        while let Ok(ev) = self.events.try_recv() {
            self.log.push(format!("{ev:?}"));
            self.backlog.push_back(ev);
        }
        self.backlog.iter().any(f)
    }
}

/// Transports every test swarm has: TCP (Nagle off) and QUIC on loopback.
macro_rules! transports {
    ($key:expr) => {
        libp2p::SwarmBuilder::with_existing_identity($key.to_libp2p())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_quic()
    };
}

fn swarm_config(c: libp2p::swarm::Config) -> libp2p::swarm::Config {
    c.with_idle_connection_timeout(Duration::from_secs(60))
}

/// A relay listening on loopback TCP and QUIC, with those addresses as its external ones.
pub struct Relay {
    pub node: Node<RelayNode>,
    pub tcp: Multiaddr,
    pub quic: Multiaddr,
}

impl Relay {
    pub async fn start(name: &str, config: server::Config, base: relay::Config) -> Relay {
        let key = NodeKeypair::generate();
        let swarm = relay_swarm(&key, config, base);
        let mut node = Node::spawn(name, key, swarm, |_, _| {});
        let (tcp, quic) = listen_both(&mut node).await;
        Relay { node, tcp, quic }
    }

    /// A relay on a runtime of its own ([`Node::spawn_isolated`]), which the test can
    /// freeze.
    pub async fn start_isolated(name: &str, config: server::Config, base: relay::Config) -> Relay {
        let key = NodeKeypair::generate();
        let k = key.clone();
        let mut node = Node::spawn_isolated(name, key, move || relay_swarm(&k, config, base));
        let (tcp, quic) = listen_both(&mut node).await;
        Relay { node, tcp, quic }
    }

    /// The relay's TCP address with its peer id.
    pub fn addr(&self) -> Multiaddr {
        self.tcp.clone().with(Protocol::P2p(self.node.peer))
    }

    /// The relay's QUIC address with its peer id.
    pub fn quic_addr(&self) -> Multiaddr {
        self.quic.clone().with(Protocol::P2p(self.node.peer))
    }

    /// Where a client reserves: `<relay>/p2p-circuit`.
    pub fn circuit_listen_addr(&self) -> Multiaddr {
        self.addr().with(Protocol::P2pCircuit)
    }

    /// How to reach `dst` through this relay.
    pub fn circuit_to(&self, dst: PeerId) -> Multiaddr {
        self.circuit_listen_addr().with(Protocol::P2p(dst))
    }
}

fn relay_swarm(key: &NodeKeypair, config: server::Config, base: relay::Config) -> Swarm<RelayNode> {
    let admission = server::Behaviour::with_relay_config(key.clone(), config, base);
    transports!(key)
        .with_behaviour(|_| RelayNode {
            admission,
            ping: libp2p::ping::Behaviour::default(),
        })
        .unwrap()
        .with_swarm_config(swarm_config)
        .build()
}

/// Listens on loopback TCP and QUIC, confirms both as external addresses.
async fn listen_both<B>(node: &mut Node<B>) -> (Multiaddr, Multiaddr)
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + Debug + 'static,
{
    node.run(|s| {
        s.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        s.listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .unwrap();
    })
    .await;
    let mut tcp = None;
    let mut quic = None;
    while tcp.is_none() || quic.is_none() {
        let a = node
            .wait("listen address", |e| match e {
                SwarmEvent::NewListenAddr { address, .. } => Some(address.clone()),
                _ => None,
            })
            .await;
        let is_quic = a.iter().any(|p| matches!(p, Protocol::QuicV1));
        let ext = a.clone();
        node.run(move |s| s.add_external_address(ext)).await;
        if is_quic {
            quic = Some(a);
        } else {
            tcp = Some(a);
        }
    }
    (tcp.unwrap(), quic.unwrap())
}

/// A client: relay client, admission client, libp2p-stream.
pub type Client = Node<ClientNode>;

/// A client swarm whose identity is `key`.
pub fn client_with(name: &str, key: NodeKeypair, config: client::Config) -> Client {
    client_negotiating(name, key, config, libp2p::core::upgrade::Version::V1)
}

/// A client whose identity is `key` and whose swarm negotiates substreams with
/// `version` (libp2p's default is `V1`; an application may choose `V1Lazy`).
pub fn client_negotiating(
    name: &str,
    key: NodeKeypair,
    config: client::Config,
    version: libp2p::core::upgrade::Version,
) -> Client {
    let admission = client::Behaviour::new(key.clone(), config);
    let swarm = transports!(key)
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, relay| ClientNode {
            relay,
            admission,
            stream: libp2p_stream::Behaviour::new(),
        })
        .unwrap()
        .with_swarm_config(|c| swarm_config(c).with_substream_upgrade_protocol_override(version))
        .build();
    Node::spawn(name, key, swarm, |_, _| {})
}

/// A watcher whose identity is `key`, pinging every `interval` (timeout `timeout`).
pub fn watcher(
    name: &str,
    key: NodeKeypair,
    interval: Duration,
    timeout: Duration,
) -> Node<WatcherNode> {
    let admission = client::Behaviour::new(key.clone(), client::Config::default());
    let ping = libp2p::ping::Behaviour::new(
        libp2p::ping::Config::new()
            .with_interval(interval)
            .with_timeout(timeout),
    );
    let swarm = transports!(key)
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, relay| WatcherNode {
            relay,
            admission,
            ping,
        })
        .unwrap()
        .with_swarm_config(swarm_config)
        .build();
    Node::spawn(name, key, swarm, |_, _| {})
}

/// A client with a fresh identity and the default admission client config.
pub fn client(name: &str) -> Client {
    client_with(name, NodeKeypair::generate(), client::Config::default())
}

/// A raw-bytes admission sender with a relay client.
pub fn raw_node(name: &str, key: NodeKeypair) -> Node<RawNode> {
    let swarm = transports!(key)
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, relay| RawNode {
            relay,
            raw: request_response::Behaviour::with_codec(
                mesh_testkit::raw::RawCodec,
                [(
                    mesh_admission::PROTOCOL,
                    request_response::ProtocolSupport::Outbound,
                )],
                request_response::Config::default(),
            ),
        })
        .unwrap()
        .with_swarm_config(swarm_config)
        .build();
    Node::spawn(name, key, swarm, |_, _| {})
}

/// The client's admission event, if `e` is one.
pub fn admission(e: &SwarmEvent<ClientNodeEvent>) -> Option<&client::Event> {
    match e {
        SwarmEvent::Behaviour(ClientNodeEvent::Admission(a)) => Some(a),
        _ => None,
    }
}

/// The relay's admission event, if `e` is one.
pub fn relay_admission(e: &SwarmEvent<RelayNodeEvent>) -> Option<&server::Event> {
    match e {
        SwarmEvent::Behaviour(RelayNodeEvent::Admission(a)) => Some(a),
        _ => None,
    }
}

/// The relay v2 server's own event, if `e` is one.
pub fn relay_event(e: &SwarmEvent<RelayNodeEvent>) -> Option<&relay::Event> {
    match e {
        SwarmEvent::Behaviour(RelayNodeEvent::Admission(server::Event::Relay(r))) => Some(r),
        _ => None,
    }
}

/// An error and its sources, one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The `MeshError` a relay's connection denial carries.
pub fn denial(cause: &libp2p::swarm::ConnectionDenied) -> Option<MeshError> {
    cause.downcast_ref::<MeshError>().cloned()
}

impl Client {
    /// Connects to `relay` and asks it for `purpose` once; the verified grant or the
    /// client's event (denial, failure) as an error.
    pub async fn ask(
        &mut self,
        relay: &Relay,
        purpose: mesh_admission::Purpose,
    ) -> Result<mesh_core::RelayAdmissionGrant, client::Event> {
        let (peer, addr) = (relay.node.peer, relay.addr());
        self.run(move |s| {
            s.behaviour_mut()
                .admission
                .request(peer, purpose, vec![addr])
                .unwrap()
        })
        .await;
        self.answer(peer).await
    }

    /// The next answer from `relay`.
    pub async fn answer(
        &mut self,
        relay: PeerId,
    ) -> Result<mesh_core::RelayAdmissionGrant, client::Event> {
        self.wait("admission answer", |e| match admission(e)? {
            client::Event::Granted {
                relay: r, grant, ..
            } if *r == relay => Some(Ok((**grant).clone())),
            ev @ (client::Event::Denied { relay: r, .. }
            | client::Event::Failed { relay: r, .. }
            | client::Event::Unsupported { relay: r })
                if *r == relay =>
            {
                Some(Err(ev.clone()))
            }
            _ => None,
        })
        .await
    }

    /// Reserves on `relay` (`listen_on <relay>/p2p-circuit`): `Ok(listen address)` once
    /// the reservation is accepted, `Err(reason)` when the listener closes.
    pub async fn reserve(&mut self, relay: &Relay) -> Result<Multiaddr, String> {
        reserve(self, relay).await
    }

    /// Dials `dst` through `relay`: `Ok(())` once connected, `Err(reason)` on failure.
    pub async fn dial_via(&mut self, relay: &Relay, dst: PeerId) -> Result<(), String> {
        dial_via(self, relay, dst).await
    }

    /// Opens a data stream to `peer` (over whatever connection there is).
    pub async fn open(&self, peer: PeerId) -> libp2p::Stream {
        let mut control = self.run(|s| s.behaviour().stream.new_control()).await;
        tokio::time::timeout(WAIT, control.open_stream(peer, DATA))
            .await
            .expect("opening a stream timed out")
            .expect("stream opened")
    }

    /// Counts what arrives on inbound data streams.
    pub async fn sink(&self) -> Sink {
        let mut control = self.run(|s| s.behaviour().stream.new_control()).await;
        let mut incoming = control.accept(DATA).unwrap();
        let (tx, rx) = watch::channel(Progress::default());
        tokio::spawn(async move {
            while let Some((_, mut stream)) = incoming.next().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    tx.send_modify(|p| p.streams += 1);
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) => {
                                tx.send_modify(|p| p.ended.push("eof".into()));
                                return;
                            }
                            Ok(n) => tx.send_modify(|p| p.bytes += n as u64),
                            Err(e) => {
                                tx.send_modify(|p| p.ended.push(format!("error: {e}")));
                                return;
                            }
                        }
                    }
                });
            }
        });
        Sink { rx }
    }
}

/// Reserves through any node with a relay client behaviour reachable as `relay`.
pub async fn reserve<B>(node: &mut Node<B>, relay: &Relay) -> Result<Multiaddr, String>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + Debug + 'static,
{
    reserve_at(node, relay.circuit_listen_addr()).await
}

/// Reserves at `addr` (`<relay address>/p2p/<relay>/p2p-circuit`).
pub async fn reserve_at<B>(node: &mut Node<B>, addr: Multiaddr) -> Result<Multiaddr, String>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + Debug + 'static,
{
    let id = node.run(move |s| s.listen_on(addr).unwrap()).await;
    node.wait("reservation outcome", |e| match e {
        SwarmEvent::NewListenAddr {
            listener_id,
            address,
        } if *listener_id == id => Some(Ok(address.clone())),
        SwarmEvent::ListenerClosed {
            listener_id,
            reason,
            ..
        } if *listener_id == id => Some(Err(match reason {
            Ok(()) => "closed".to_owned(),
            Err(e) => chain(e),
        })),
        SwarmEvent::ListenerError { listener_id, error } if *listener_id == id => {
            Some(Err(chain(error)))
        }
        _ => None,
    })
    .await
}

/// Dials `dst` through `relay` from any node with a relay client.
pub async fn dial_via<B>(node: &mut Node<B>, relay: &Relay, dst: PeerId) -> Result<(), String>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + Debug + 'static,
{
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    let opts = DialOpts::peer_id(dst)
        .addresses(vec![relay.circuit_to(dst)])
        .condition(PeerCondition::Always)
        .build();
    let id = opts.connection_id();
    node.run(move |s| s.dial(opts))
        .await
        .map_err(|e| e.to_string())?;
    node.wait("circuit dial outcome", |e| match e {
        SwarmEvent::ConnectionEstablished { connection_id, .. } if *connection_id == id => {
            Some(Ok(()))
        }
        SwarmEvent::OutgoingConnectionError {
            connection_id,
            error,
            ..
        } if *connection_id == id => Some(Err(chain(error))),
        _ => None,
    })
    .await
}

/// What arrived on a node's inbound data streams.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Streams accepted.
    pub streams: usize,
    /// Bytes read, all streams.
    pub bytes: u64,
    /// How streams ended (`eof` or `error: …`), in order.
    pub ended: Vec<String>,
}

/// The receiving end's progress.
pub struct Sink {
    rx: watch::Receiver<Progress>,
}

impl Sink {
    pub fn now(&self) -> Progress {
        self.rx.borrow().clone()
    }

    /// Waits (bounded) until `f` holds for the progress; the progress then.
    pub async fn until(
        &mut self,
        what: &str,
        within: Duration,
        f: impl FnMut(&Progress) -> bool,
    ) -> Progress {
        let got = match tokio::time::timeout(within, self.rx.wait_for(f)).await {
            Ok(Ok(p)) => Some(p.clone()),
            Ok(Err(_)) => panic!("sink gone while waiting for {what}"),
            Err(_) => None,
        };
        got.unwrap_or_else(|| panic!("no {what} within {within:?}: {:?}", self.now()))
    }
}

/// `n` bytes of a repeating pattern.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Writes `bytes` and flushes, bounded.
pub async fn send(stream: &mut libp2p::Stream, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WAIT, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// A plain circuit relay v2 server (no admission), listening on loopback TCP; its
/// address with its peer id.
pub async fn plain_relay(name: &str) -> (Node<relay::Behaviour>, Multiaddr) {
    let key = NodeKeypair::generate();
    let swarm = transports!(key)
        .with_behaviour(|k| relay::Behaviour::new(k.public().to_peer_id(), base_relay_config()))
        .unwrap()
        .with_swarm_config(swarm_config)
        .build();
    let mut node = Node::spawn(name, key, swarm, |_, _| {});
    let (tcp, _) = listen_both(&mut node).await;
    let addr = tcp.with(Protocol::P2p(node.peer));
    (node, addr)
}
