//! The composed node: one swarm with every component, the glue between them, and a
//! command handle plus one event stream for the application.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use libmesh::node::{Node, NodeConfig};
//! let key = mesh_core::NodeKeypair::generate();
//! let mut config = NodeConfig::default();
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
//! config.bootstrap = libmesh::node::Bootstrap::Named(libmesh::node::BootstrapName::None);
//! let dir = std::env::temp_dir().join("libmesh-demo");
//! let (mut node, handle, mut events) = Node::new(key, config, &dir, std::sync::Arc::new(mesh_core::NoTrace))?;
//! node.listen()?;
//! tokio::spawn(node.run());
//! println!("{:?}", handle.status().await?);
//! # Ok(()) }
//! ```

pub mod admission;
pub mod behaviour;
pub mod config;
pub mod connect;
pub mod event;
pub mod handle;
pub mod identify_observed;
mod idle;
mod pending;
pub mod relay_select;
mod relays;
pub mod route;
pub mod routing;
pub mod signaling;
pub mod status;
pub mod store;
mod swarm_events;
pub mod swarms;
pub mod transport;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::metrics::{Metrics, Registry};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, kad};
use mesh_advert::own::OwnAdvert;
use mesh_advert::{AdvertStore, StoreLimits};
use mesh_core::{
    ErrorCode, MeshError, NodeAdvertisement, NodeId, NodeKeypair, Timestamp, TraceEvent,
    TraceEventType, TraceSink,
};
use tokio::sync::mpsc;

pub use behaviour::MeshBehaviour;
pub use config::{Bootstrap, BootstrapName, KadMode, NodeConfig, SeedPeer};
pub use event::NodeEvent;
pub use handle::{Dht, Found, NodeHandle, Target};
pub use relays::GrantInfo;
pub use status::{PeerInfo, Status};
pub use store::SharedAdverts;

use crate::advert_store::DurableStore;
use handle::Command;
use pending::{After, Pending, ProviderWait, Stage};

/// Capacity of the application's event queue (events beyond it are counted and
/// dropped, never allowed to stall the swarm).
pub const EVENT_QUEUE: usize = 1024;
/// Capacity of the command queue.
pub const COMMAND_QUEUE: usize = 64;
/// How long a command waits for its answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How many stored peers a starting node asks the governor to reconnect to.
pub const STORED_PEERS: usize = 64;
/// Advertisements remembered for event de-duplication (cleared when full).
pub(crate) const ADVERTS_SEEN: usize = 4096;
/// Perf streams served at once.
pub const PERF_STREAMS: usize = 4;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The advertisement store could not be opened.
    #[error("advertisement store in {dir}: {reason}")]
    Store {
        /// The data directory.
        dir: String,
        /// Why.
        reason: String,
    },
    /// The swarm could not be built.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// A listen address could not be used (port in use, unknown interface…).
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

/// The running node. Build it with [`Node::new`], call [`Node::listen`], then drive it
/// with [`Node::run`] (usually in its own task).
pub struct Node {
    swarm: Swarm<MeshBehaviour>,
    key: NodeKeypair,
    node_id: NodeId,
    config: NodeConfig,
    store: SharedAdverts,
    own: OwnAdvert,
    trace: Arc<dyn TraceSink>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NodeEvent>,
    events_dropped: u64,
    /// Sum of gossipsub's `SlowPeer` reports.
    gossip_send_failed: u64,
    metrics: Metrics,
    registry: Arc<Mutex<Registry>>,
    pending: Pending,
    addrs_dirty: bool,
    own_put_pending: bool,
    nat: HashMap<Multiaddr, bool>,
    topics: HashSet<String>,
    started: Instant,
    perf: Option<(libp2p_stream::Control, tokio::task::JoinHandle<()>)>,
    adverts_seen: HashMap<NodeId, u64>,
    swarms: mesh_signal::swarm::Swarms,
    routes: connect::Routes,
    relays: relays::Relays,
    swarm_queries: HashMap<mesh_signal::swarm::DiscoveryKey, Instant>,
    swarm_dials: HashMap<mesh_signal::swarm::DiscoveryKey, Instant>,
    idle: idle::Idle,
}

impl Node {
    /// Builds the node for `key` from `config`, with its stores in `data_dir`. Must be
    /// called inside a tokio runtime.
    pub fn new(
        key: NodeKeypair,
        config: NodeConfig,
        data_dir: &Path,
        trace: Arc<dyn TraceSink>,
    ) -> Result<(Node, NodeHandle, mpsc::Receiver<NodeEvent>), NodeError> {
        config.check()?;
        let now = Timestamp::now();
        let (durable, report) = DurableStore::open(data_dir, StoreLimits::default(), &now)
            .map_err(|e| NodeError::Store {
                dir: data_dir.display().to_string(),
                reason: e.to_string(),
            })?;
        tracing::info!(?report, "advertisement store loaded");
        let last_sequence = durable.own_sequence().map_err(|e| NodeError::Store {
            dir: data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let store = SharedAdverts::new(durable);
        let node_id = key.node_id();

        let mut session = mesh_session::Config {
            trace: trace.clone(),
            ..mesh_session::Config::default()
        };
        session.governor.max_live = config.limits.max_sessions;
        session.governor.target_hot = config.limits.hot_sessions;
        if config.relay_server {
            session.capabilities.push("core/relay".into());
        }
        if config.signaling_host {
            session.capabilities.push("core/signaling".into());
        }
        let mut signal = mesh_signal::Config::new(node_id);
        signal.host = config.signaling_host;
        signal.forward_marked_only = true;
        let mut marker = mesh_session::marker::Config::new(node_id);
        marker.trace = trace.clone();
        let admission = if config.relay_server {
            Some(
                config
                    .admission
                    .server_config(store.clone(), trace.clone())
                    .map_err(|e| NodeError::Config(e.into()))?,
            )
        } else {
            None
        };
        let parts = behaviour::Parts {
            store: store.clone(),
            session,
            marker,
            signal,
            admission,
        };
        let mut registry = Registry::with_prefix("libp2p");
        let swarm = transport::build_swarm(&key, &config, parts, &mut registry)?;
        let metrics = Metrics::new(&mut registry);
        let perf = match swarm.behaviour().perf.as_ref() {
            Some(b) => {
                let control = b.new_control();
                let server = crate::perf::spawn_server(control.clone(), PERF_STREAMS)
                    .map_err(|e| transport::TransportError::Build(format!("perf: {e}")))?;
                Some((control, server))
            }
            None => None,
        };

        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_QUEUE);
        let swarm_config = mesh_signal::swarm::SwarmConfig {
            ttl_secs: config.swarm.ttl_secs,
            max_swarms: config.swarm.max_swarms,
            max_members: config.swarm.max_members,
        };
        let own = OwnAdvert::new(key.clone(), config.advert_ttl_secs, last_sequence);
        let max_relays = config.max_relays;
        let idle = idle::Idle::new(&config);
        let node = Node {
            swarm,
            node_id,
            own,
            key,
            config,
            store,
            trace,
            commands: cmd_rx,
            events: ev_tx,
            events_dropped: 0,
            gossip_send_failed: 0,
            metrics,
            registry: Arc::new(Mutex::new(registry)),
            pending: Pending::default(),
            addrs_dirty: false,
            own_put_pending: false,
            nat: HashMap::new(),
            topics: HashSet::new(),
            started: Instant::now(),
            perf,
            adverts_seen: HashMap::new(),
            swarms: mesh_signal::swarm::Swarms::new(node_id, swarm_config),
            swarm_queries: HashMap::new(),
            swarm_dials: HashMap::new(),
            routes: connect::Routes::default(),
            relays: relays::Relays::new(max_relays, Instant::now()),
            idle,
        };
        let handle = NodeHandle {
            tx: cmd_tx,
            timeout: COMMAND_TIMEOUT,
        };
        Ok((node, handle, ev_rx))
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// The stream control of the perf protocol (when `perf` is configured), for
    /// [`crate::perf::run`] against another node.
    pub fn perf_control(&self) -> Option<libp2p_stream::Control> {
        self.perf.as_ref().map(|(c, _)| c.clone())
    }

    /// The advertisement store (shared with the seed directory).
    pub fn store(&self) -> SharedAdverts {
        self.store.clone()
    }

    /// The Prometheus registry (libp2p metrics and bandwidth).
    pub fn registry(&self) -> Arc<Mutex<Registry>> {
        self.registry.clone()
    }

    /// Starts listening on the configured addresses. A port in use or an unusable
    /// address is an error, except for the IPv6 defaults on a host without IPv6.
    pub fn listen(&mut self) -> Result<(), NodeError> {
        let defaults = self.config.uses_default_listen();
        for addr in self.config.listen_addrs()? {
            if let Err(e) = self.swarm.listen_on(addr.clone()) {
                let ip6 = addr.iter().any(|p| matches!(p, Protocol::Ip6(_)));
                if defaults && ip6 {
                    tracing::warn!(%addr, error = %e, "IPv6 listen address unavailable");
                    continue;
                }
                return Err(NodeError::Listen {
                    addr,
                    reason: transport_error_text(&e),
                });
            }
        }
        for addr in self.config.external.clone() {
            self.swarm.add_external_address(addr);
        }
        Ok(())
    }

    /// Runs the node until a shutdown command (or until every handle is dropped).
    pub async fn run(mut self) {
        self.start();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut bootstrap = tokio::time::interval(Duration::from_secs(300));
        bootstrap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(c) => self.on_command(c),
                },
                _ = tick.tick() => self.on_tick(),
                _ = bootstrap.tick() => self.bootstrap_dhts(),
            }
        }
        self.shutdown().await;
    }

    /// Seeds, Amino bootstrap and the peers remembered in the store.
    fn start(&mut self) {
        for seed in self.config.seeds.clone() {
            let Ok(peer) = seed.node_id.to_peer_id() else {
                continue;
            };
            let addr = routing::without_peer(&seed.addr);
            self.swarm
                .behaviour_mut()
                .mesh_kad
                .add_address(&peer, addr.clone());
            self.swarm
                .behaviour_mut()
                .session
                .add_peer(seed.node_id, vec![addr.clone()]);
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::warn!(seed = ?seed.label, error = %e, "cannot dial seed");
            }
        }
        self.relays_start();
        match self.config.bootstrap.addrs() {
            Ok(addrs) => {
                for addr in addrs {
                    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                        continue;
                    };
                    self.swarm
                        .behaviour_mut()
                        .amino
                        .add_address(&peer, routing::without_peer(&addr));
                }
            }
            Err(e) => tracing::warn!(error = %e, "bootstrap list"),
        }
        self.remember_stored_peers();
        self.bootstrap_dhts();
    }

    /// Hands the peers whose advertisements the store holds to the governor and the
    /// mesh DHT, so a restarted node reconnects without its seeds.
    fn remember_stored_peers(&mut self) {
        let now = Timestamp::now();
        let mut cursor = 0;
        let mut taken = 0;
        loop {
            let page = self.store.since(cursor, 256);
            for item in &page.items {
                let node = item.advert.node_id();
                if node == self.node_id || taken >= STORED_PEERS {
                    continue;
                }
                if item.advert.expires_at() <= &now {
                    continue;
                }
                let addrs = routing::advert_addrs(&item.advert);
                if let Ok(peer) = node.to_peer_id() {
                    for a in &addrs {
                        self.swarm
                            .behaviour_mut()
                            .mesh_kad
                            .add_address(&peer, a.clone());
                    }
                    self.swarm.behaviour_mut().session.add_peer(node, addrs);
                    taken += 1;
                }
            }
            if page.next == cursor || page.items.is_empty() || taken >= STORED_PEERS {
                break;
            }
            cursor = page.next;
        }
        tracing::info!(peers = taken, "stored peers handed to the governor");
    }

    fn bootstrap_dhts(&mut self) {
        let b = self.swarm.behaviour_mut();
        // Both fail harmlessly when the routing table is still empty.
        let _ = b.amino.bootstrap();
        let _ = b.mesh_kad.bootstrap();
    }

    fn on_tick(&mut self) {
        let now = Timestamp::now();
        if self.addrs_dirty {
            self.addrs_dirty = false;
            let addrs = routing::own_addrs(self.swarm.external_addresses(), self.swarm.listeners());
            if !addrs.is_empty() {
                match self.own.set_addresses(addrs, &now) {
                    Ok(Some(ad)) => {
                        let ad = ad.clone();
                        self.publish_own(ad, &now);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "own advertisement"),
                }
            }
        }
        match self.own.tick(&now) {
            Ok(Some(ad)) => {
                let ad = ad.clone();
                self.publish_own(ad, &now);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "own advertisement refresh"),
        }
        for (waiter, error) in self.pending.expire(Instant::now()) {
            match waiter {
                pending::Waiter::After(a) => self.fail_after(a, error),
                w => w.fail(error),
            }
        }
        self.swarms_tick(&now);
        self.routes_tick();
        self.relays_tick();
        self.idle_tick();
    }

    /// Stores, persists and spreads a new advertisement of this node: the mesh DHT and
    /// every session peer.
    fn publish_own(&mut self, ad: NodeAdvertisement, now: &Timestamp) {
        let seq = ad.sequence_no();
        self.swarm
            .behaviour_mut()
            .admission_client
            .set_advertisement(Some(ad.clone()));
        {
            let mut store = self.store.lock();
            if let Err(e) = store.set_own_sequence(seq) {
                tracing::warn!(error = %e, "cannot persist own sequence number");
            }
            if let Err(e) = store.insert(ad.clone(), now) {
                tracing::debug!(error = %e, "own advertisement not stored");
            }
        }
        self.put_own_record(&ad, now);
        let peers: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| self.swarm.behaviour().session.session(p).is_some())
            .copied()
            .collect();
        for peer in peers {
            self.swarm.behaviour_mut().advert.publish(&peer, ad.clone());
        }
        let addrs = routing::advert_addrs(&ad);
        self.emit_trace(
            TraceEvent::new(
                TraceEventType::AdvertisementPublished,
                self.node_id,
                now.clone(),
            )
            .with_detail(serde_json::json!({"sequence/no": seq})),
        );
        self.emit(NodeEvent::OwnAdvertPublished {
            sequence_no: seq,
            addrs,
        });
    }

    fn put_own_record(&mut self, ad: &NodeAdvertisement, now: &Timestamp) {
        let record = mesh_advert::kad::record_for(ad, now);
        match self
            .swarm
            .behaviour_mut()
            .mesh_kad
            .put_record(record, kad::Quorum::One)
        {
            Ok(_) => self.own_put_pending = false,
            Err(e) => {
                tracing::debug!(error = ?e, "own record not put");
                self.own_put_pending = true;
            }
        }
    }

    fn emit(&mut self, event: NodeEvent) {
        if self.events.try_send(event).is_err() {
            self.events_dropped += 1;
        }
    }

    fn emit_trace(&self, event: TraceEvent) {
        if self.trace.enabled() {
            self.trace.emit(&event);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { target, reply } => self.connect(target, After::Dial(reply)),
            Command::Lookup { node, fresh, reply } => {
                self.lookup(node, After::Lookup(reply), fresh)
            }
            Command::Publish { reply } => {
                let now = Timestamp::now();
                self.addrs_dirty = false;
                let addrs =
                    routing::own_addrs(self.swarm.external_addresses(), self.swarm.listeners());
                let result = match self.own.set_addresses(addrs, &now) {
                    Ok(Some(ad)) => Ok(ad.clone()),
                    Ok(None) => self.own.renew(&now).cloned(),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(ad) => {
                        let seq = ad.sequence_no();
                        self.publish_own(ad, &now);
                        let _ = reply.send(Ok(seq));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::SendMarker {
                target,
                text,
                reply,
            } => self.connect(target, After::Marker { text, reply }),
            Command::Subscribe { topic, reply } => {
                let t = gossipsub::IdentTopic::new(topic.clone());
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&t)
                    .map_err(|e| MeshError::invalid(format!("subscribe {topic}: {e}")));
                if r.is_ok() {
                    self.topics.insert(topic);
                }
                let _ = reply.send(r);
            }
            Command::PublishTopic { topic, data, reply } => {
                let t = gossipsub::IdentTopic::new(topic.clone());
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(t, data)
                    .map(|id| id.to_string())
                    .map_err(|e| {
                        MeshError::new(
                            ErrorCode::TransportUnavailable,
                            format!("publish on {topic}: {e}"),
                        )
                    });
                let _ = reply.send(r);
            }
            Command::Provide { dht, key, reply } => {
                let b = self.swarm.behaviour_mut();
                let (kad, stage) = match dht {
                    Dht::Amino => (&mut b.amino, Stage::Amino),
                    Dht::Mesh => (&mut b.mesh_kad, Stage::MeshDht),
                };
                match kad.start_providing(kad::RecordKey::new(&key)) {
                    Ok(q) => self
                        .pending
                        .wait_providers(stage, q, ProviderWait::Provide(reply)),
                    Err(e) => {
                        let _ = reply.send(Err(MeshError::new(
                            ErrorCode::TransportRejected,
                            format!("provider record not stored: {e}"),
                        )));
                    }
                }
            }
            Command::FindProviders { dht, key, reply } => {
                let b = self.swarm.behaviour_mut();
                let (kad, stage) = match dht {
                    Dht::Amino => (&mut b.amino, Stage::Amino),
                    Dht::Mesh => (&mut b.mesh_kad, Stage::MeshDht),
                };
                let q = kad.get_providers(kad::RecordKey::new(&key));
                self.pending.wait_providers(
                    stage,
                    q,
                    ProviderWait::Find(reply, Default::default()),
                );
            }
            Command::Swarm(c) => self.on_swarm_command(c),
            Command::Route(c) => self.on_route_command(c),
            Command::Relay(c) => self.on_relay_command(c),
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peers());
            }
            Command::Shutdown => {}
        }
    }

    /// Connects to `target`, then continues with `after`.
    fn connect(&mut self, target: Target, after: After) {
        let peer = target.peer();
        if let Some(p) = peer
            && self.swarm.is_connected(&p)
        {
            return self.connected(p, after);
        }
        match target {
            Target::Addr(addr) => {
                // The given address is dialed even while another dial to the peer
                // runs (say a DHT query trying its unroutable private addresses):
                // waiting for that one could outlast the command.
                let opts = match peer {
                    Some(p) => DialOpts::peer_id(p)
                        .addresses(vec![routing::without_peer(&addr)])
                        .condition(PeerCondition::Disconnected)
                        .build(),
                    None => DialOpts::unknown_peer_id().address(addr).build(),
                };
                self.dial(opts, peer, after);
            }
            Target::Node(node) => self.route_to(node, connect::RouteWaiter::Then(after)),
            Target::Peer(p) => {
                let opts = DialOpts::peer_id(p)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                self.dial(opts, Some(p), after);
            }
        }
    }

    fn dial(&mut self, opts: DialOpts, peer: Option<PeerId>, after: After) {
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => self.pending.wait_connection(id, after),
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) if peer.is_some() => {
                if let Some(p) = peer {
                    self.pending.wait_peer(p, after);
                }
            }
            Err(e) => after.fail(MeshError::new(
                ErrorCode::TransportUnavailable,
                format!("dial: {e}"),
            )),
        }
    }

    /// A connection to `peer` is up: finish what waited for it.
    fn connected(&mut self, peer: PeerId, after: After) {
        match after {
            After::Dial(reply) => {
                let _ = reply.send(Ok(peer));
            }
            After::Marker { text, reply } => {
                let now = Timestamp::now();
                let id = format!("msg:{}", hex::encode(rand_id()));
                match mesh_session::marker::envelope(&self.key, &id, &text, &now) {
                    Ok(env) => {
                        self.swarm.behaviour_mut().marker.send(&peer, &env);
                        self.pending.wait_marker(peer, id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            After::Lookup(reply) => {
                let _ = reply.send(Err(MeshError::invalid("internal: lookup after connect")));
            }
            After::Route(_) => {}
        }
    }

    /// Fails `after`; a route attempt's lookup goes on to its next stage instead.
    fn fail_after(&mut self, after: After, error: MeshError) {
        match after {
            After::Route(id) => self.route_lookup_failed(id, error),
            other => other.fail(error),
        }
    }

    /// Finds `node`: store (unless `fresh`), then mesh DHT, then Amino peer routing.
    fn lookup(&mut self, node: NodeId, after: After, fresh: bool) {
        let now = Timestamp::now();
        let held = if fresh {
            None
        } else if node == self.node_id {
            self.own.current().cloned()
        } else {
            self.store.get(&node, &now).map(|s| (*s.advert).clone())
        };
        if let Some(ad) = held {
            return self.found(node, Found::from_advert(&ad, "store"), vec![after]);
        }
        if self.pending.add_lookup_waiter(node, after) {
            return;
        }
        let q = self
            .swarm
            .behaviour_mut()
            .mesh_kad
            .get_record(mesh_advert::kad::record_key(&node));
        self.pending.start_lookup(node, q);
    }

    /// A lookup ended well: answer or continue every waiter.
    fn found(&mut self, node: NodeId, found: Found, waiters: Vec<After>) {
        let addrs: Vec<Multiaddr> = found.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let peer = node.to_peer_id().ok();
        for after in waiters {
            match after {
                After::Lookup(reply) => {
                    let _ = reply.send(Ok(found.clone()));
                }
                After::Route(id) => self.route_found(id, addrs.clone()),
                other => match peer {
                    Some(p) if self.swarm.is_connected(&p) => self.connected(p, other),
                    Some(p) => {
                        let opts = DialOpts::peer_id(p)
                            .addresses(addrs.clone())
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        self.dial(opts, Some(p), other);
                    }
                    None => other.fail(MeshError::invalid("node id has no peer id")),
                },
            }
        }
    }

    fn status(&mut self) -> Status {
        let listen_addrs = self.swarm.listeners().map(ToString::to_string).collect();
        let external_addrs = self
            .swarm
            .external_addresses()
            .map(ToString::to_string)
            .collect();
        let reachable: Vec<String> = self
            .nat
            .iter()
            .filter(|(_, ok)| **ok)
            .map(|(a, _)| a.to_string())
            .collect();
        let unreachable: Vec<String> = self
            .nat
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(a, _)| a.to_string())
            .collect();
        let nat_status = if !reachable.is_empty() {
            "public"
        } else if !unreachable.is_empty() {
            "private"
        } else {
            "unknown"
        };
        let b = self.swarm.behaviour_mut();
        use mesh_session::governor::Temperature;
        let gov = b.session.governor();
        let mesh = status::MeshStatus {
            sessions: gov.count(Temperature::Hot) + gov.count(Temperature::Warm),
            hot: gov.count(Temperature::Hot),
            warm: gov.count(Temperature::Warm),
            cold: gov.count(Temperature::Cold),
            blocked: gov.count(Temperature::Blocked),
        };
        let count_peers = |k: &mut kad::Behaviour<kad::store::MemoryStore>| {
            k.kbuckets().map(|b| b.num_entries()).sum::<usize>()
        };
        let amino_peers = count_peers(&mut b.amino);
        let mesh_peers = count_peers(&mut b.mesh_kad);
        let mesh_records = {
            use libp2p::kad::store::RecordStore;
            b.mesh_kad.store_mut().records().count()
        };
        let mode = b.mesh_kad.mode().to_string();
        let gossip_mesh_peers = b.gossipsub.all_mesh_peers().count();
        Status {
            node_id: self.node_id.to_string(),
            peer_id: self.swarm.local_peer_id().to_string(),
            agent: behaviour::AGENT.into(),
            uptime_secs: self.started.elapsed().as_secs(),
            listen_addrs,
            external_addrs,
            nat: status::NatStatus {
                status: nat_status,
                reachable,
                unreachable,
            },
            connected_peers: self.swarm.connected_peers().count(),
            mesh,
            dht: status::DhtStatus {
                amino_peers,
                mesh_peers,
                mesh_records,
                mode,
            },
            adverts_stored: self.store.len(),
            own_advert_sequence: self.own.last_sequence(),
            topics: {
                let mut t: Vec<String> = self.topics.iter().cloned().collect();
                t.sort();
                t
            },
            gossip_mesh_peers,
            events_dropped: self.events_dropped,
            gossip_send_failed: self.gossip_send_failed,
        }
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let b = self.swarm.behaviour();
        let mut out: Vec<PeerInfo> = self
            .swarm
            .connected_peers()
            .map(|p| {
                let node = NodeId::from_peer_id(p).ok();
                let session = b.session.session(p);
                PeerInfo {
                    peer_id: p.to_string(),
                    node_id: node.map(|n| n.to_string()),
                    addrs: self.pending.remote_addrs(p),
                    state: node
                        .and_then(|n| b.session.governor().temperature(&n))
                        .map(|t| t.as_str()),
                    session: session.is_some(),
                    capabilities: session.map(|s| s.capabilities.clone()).unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        out
    }

    /// Clean shutdown: persist the sequence number, close every connection (which ends
    /// the peers' sessions: that is the departure they see), and stop.
    async fn shutdown(&mut self) {
        if let Some(seq) = self.own.last_sequence()
            && let Err(e) = self.store.lock().set_own_sequence(seq)
        {
            tracing::warn!(error = %e, "cannot persist own sequence number");
        }
        if self.leave_all_swarms() > 0 {
            // Let the `leave` presences go out before the connections close (bounded).
            let deadline = tokio::time::Instant::now() + swarms::LEAVE_FLUSH;
            while let Ok(event) =
                tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await
            {
                self.on_swarm_event(event);
            }
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for p in &peers {
            let _ = self.swarm.disconnect_peer_id(*p);
        }
        // Let the closes go out (bounded).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.swarm.connected_peers().next().is_some() {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.on_swarm_event(event),
                Err(_) => break,
            }
        }
        for (reply, error) in self.pending.drain() {
            reply.fail(error);
        }
        if let Some((_, server)) = self.perf.take() {
            server.abort();
        }
        tracing::info!(peers = peers.len(), "node stopped");
    }
}

fn rand_id() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b
}

fn transport_error_text<E: std::error::Error + 'static>(e: &libp2p::TransportError<E>) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
