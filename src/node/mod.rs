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

/// The read-only view of a node's state that its components get.
macro_rules! view {
    ($node:expr) => {
        $crate::node::apply::NodeView {
            swarm: &$node.swarm,
            waiting: &$node.waiting,
            relays: &$node.relays,
            store: &$node.store,
        }
    };
}

mod action;
pub mod addrs;
pub mod admission;
pub mod api;
mod app_topics;
mod apply;
pub mod autonat_gate;
pub mod behaviour;
pub mod birthday;
pub mod boxed;
pub mod build;
mod circuit_addrs;
mod commands;
pub mod config;
pub mod dcutr_scope;
pub(crate) mod destination_budget;
mod dht;
pub mod dial_back;
pub mod dial_budget;
mod dial_error;
pub mod discovery_trace;
pub mod event;
mod events;
mod find_peer;
pub mod gossip_filter;
mod groups;
pub mod handle;
mod identify_metrics;
pub mod identify_observed;
mod idle;
mod ip_scope;
pub mod ip_shares;
pub mod kad_inbound;
pub mod kad_scope;
pub mod limits;
mod lookups;
pub mod muxer;
mod nat_verdicts;
pub mod observed;
mod own;
pub mod relay_select;
mod relays;
mod report;
pub mod router;
pub mod stats;
pub mod status;
pub mod store;
mod swarm_marker;
mod trace_budget;
pub mod transport;
mod view;
mod waiting;
pub mod webrtc_cert;
pub mod wss;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::metrics::{Metrics, Registry};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, Swarm, multiaddr::Protocol};
use mesh_advert::own::OwnAdvert;
use mesh_core::{NodeId, NodeKeypair, Timestamp, TraceSink};
use tokio::sync::mpsc;

pub use api::{
    Dht, Found, GrantInfo, GroupMember, HandleError, MAX_SETUP_BYTES, Route, StageReport, Target,
    Withdrawn,
};
pub use behaviour::MeshBehaviour;
pub use config::{Bootstrap, BootstrapName, KadMode, NodeConfig, SeedPeer, StoreSettings};
pub use event::NodeEvent;
pub use handle::NodeHandle;
pub use status::{PeerInfo, RoutingEntry, Status, SwarmArrivals};
pub use store::SharedAdverts;

/// The node's swarm: [`MeshBehaviour`] inside [`dial_budget`] and [`boxed::Boxed`].
pub type NodeSwarm = Swarm<boxed::Boxed<dial_budget::DialBudget<MeshBehaviour>>>;

use crate::advert_store::DurableStore;
use api::Command;
use groups::Groups;
use idle::Idle;
use relays::Relays;
use router::Router;
use view::Now;
use waiting::Waiting;

/// Capacity of the application's event queue (more are counted and dropped).
pub const EVENT_QUEUE: usize = 1024;
/// Capacity of the command queue.
pub const COMMAND_QUEUE: usize = 64;
/// How long a command waits for its answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// With `withdraw_on_stop`, the longest a stop waits for the withdrawal's DHT put.
pub const WITHDRAW_FLUSH: Duration = Duration::from_secs(5);
/// How many stored peers a starting node asks the governor to reconnect to.
pub const STORED_PEERS: usize = 64;

/// How long after its start the node takes its stored peers (its addresses are known).
const STORED_SETTLE: Duration = Duration::from_secs(2);
/// How long the node waits for its listeners' addresses before it takes its stored
/// peers anyway (their scope is then judged by what it has).
const STORED_WAIT: Duration = Duration::from_secs(5);
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
///
/// The node keeps the swarm, the channels and the dispatch; each feature is a
/// component that owns its state and returns actions (see `action.rs`): the router
/// (routes and signaling), the discovery-key groups, the relays, the idle rule, the
/// waiting room and the node's own advertisement.
pub struct Node {
    swarm: NodeSwarm,
    key: NodeKeypair,
    node_id: NodeId,
    config: NodeConfig,
    store: SharedAdverts,
    trace: Arc<dyn TraceSink>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NodeEvent>,
    events_dropped: u64,
    /// Sum of gossipsub's `SlowPeer` reports.
    gossip_send_failed: u64,
    /// libp2p's metrics (swarm, identify, gossipsub, ping, relay, dcutr).
    metrics: Metrics,
    /// libmesh's own metrics, each DHT's included.
    stats: stats::Stats,
    registry: Arc<Mutex<Registry>>,
    /// AutoNAT's verdict per tested address.
    nat: nat_verdicts::NatVerdicts,
    /// Plain gossipsub topics the application subscribed to.
    topics: app_topics::AppTopics,
    started: Instant,
    perf: Option<(libp2p_stream::Control, tokio::task::JoinHandle<()>)>,
    own: own::OwnRecord,
    seen: lookups::AdvertsSeen,
    waiting: Waiting,
    router: Router,
    groups: Groups,
    /// The duplicate, age and rate checks of markers to swarms.
    swarm_markers: swarm_marker::SwarmMarkers,
    relays: Relays,
    idle: Idle,
    /// Other peers' provider records held in the mesh DHT.
    providers: mesh_advert::providers::ProviderBook,
    /// Other peers' provider records held in Amino (the same bounds).
    amino_providers: mesh_advert::providers::ProviderBook,
    /// Who put the records of the mesh DHT's store (per-source shares).
    records: mesh_advert::RecordBook,
    /// Trace events of refused input written per source.
    trace_budget: trace_budget::TraceBudget,
    /// The peers stored when the node started, still to be handed to the governor
    /// (once it knows its own addresses).
    stored_pending: Option<Vec<(NodeId, Vec<Multiaddr>)>>,
    sweeper: store::Sweeper,
    /// The public name of the WSS listener, for the advertised `wss://` URL.
    wss_public: Option<wss::WssPublic>,
    /// The birthday probe ports, shared with the probe transport.
    probe_ports: birthday::quic::ProbePorts,
    /// The birthday probe sockets and their tasks.
    prober: birthday::run::Prober,
}

/// The node's advertised addresses and the `wss://` URL of its WSS listener.
fn own_endpoints(swarm: &NodeSwarm, wss: Option<&wss::WssPublic>) -> own::OwnEndpoints {
    own::OwnEndpoints {
        addrs: addrs::own_addrs(swarm.external_addresses(), swarm.listeners()),
        wss_url: wss.and_then(|w| wss::wss_url(w, swarm.listeners())),
    }
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
        let (durable, report) =
            DurableStore::open(data_dir, config.store.limits(), &now).map_err(|e| {
                NodeError::Store {
                    dir: data_dir.display().to_string(),
                    reason: e.to_string(),
                }
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
        session.ping = libp2p::ping::Config::new()
            .with_interval(Duration::from_secs(config.ping_interval_secs));
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
        signal.per_network = config.signal.network_frames();
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
        let parts = build::Parts {
            store: store.clone(),
            session,
            marker,
            signal,
            admission,
        };
        let endorsements =
            admission::load_endorsements(&config.relay_endorsements, &node_id, &Timestamp::now())
                .map_err(|e| NodeError::Config(e.into()))?;
        // No prefix here: libp2p-metrics names its families `libp2p_…` itself, libmesh's
        // are `libmesh_…`.
        let mut registry = Registry::default();
        let (webrtc, _, _) = webrtc_cert::load_or_create(data_dir, now.instant().timestamp())
            .map_err(|e| transport::TransportError::Build(format!("webrtc-direct: {e}")))?;
        let probe_ports = birthday::quic::ProbePorts::default();
        let mut swarm = transport::build_swarm(
            &key,
            &config,
            webrtc,
            probe_ports.clone(),
            parts,
            &mut registry,
        )?;
        let wss_public = match &config.wss {
            Some(w) => w.public().map_err(transport::TransportError::Tls)?,
            None => None,
        };
        if let Some(w) = &wss_public {
            tracing::info!(hostname = %w.hostname, "advertising a wss:// endpoint URL");
        }
        swarm
            .behaviour_mut()
            .admission_client
            .set_endorsements(endorsements);
        let metrics = Metrics::new(&mut registry);
        let stats = stats::Stats::new(&mut registry);
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
        let group_config = mesh_signal::group::GroupConfig {
            ttl_secs: config.swarm.ttl_secs,
            max_swarms: config.swarm.max_swarms,
            max_members: config.swarm.max_members,
        };
        let now = Instant::now();
        let relays = config.relays.iter().map(|addr| {
            let tier = match addr.iter().last() {
                Some(Protocol::P2p(p)) => config.relay_tiers.get(&p.to_string()).copied(),
                _ => None,
            };
            (addr.clone(), tier.unwrap_or(0))
        });
        let relays = Relays::new(
            node_id,
            config.max_relays,
            relays,
            Duration::from_secs(config.relay_liveness_secs),
            now,
        );
        let node = Node {
            swarm,
            node_id,
            own: own::OwnRecord::new(
                node_id,
                OwnAdvert::new(key.clone(), config.advert_ttl_secs, last_sequence),
                store.clone(),
            ),
            seen: lookups::AdvertsSeen::default(),
            waiting: Waiting::default(),
            router: Router::new(key.clone(), config.route, config.signal),
            groups: Groups::new(
                key.clone(),
                group_config,
                Duration::from_secs(config.swarm.check_secs),
            ),
            swarm_markers: swarm_marker::SwarmMarkers::new(),
            key,
            relays,
            idle: Idle::new(&config),
            providers: mesh_advert::providers::ProviderBook::default(),
            amino_providers: mesh_advert::providers::ProviderBook::default(),
            records: mesh_advert::RecordBook::default(),
            trace_budget: trace_budget::TraceBudget::new(stats.traces_suppressed_counter()),
            stored_pending: None,
            sweeper: store::Sweeper::new(config.store.sweep_every(), now),
            wss_public,
            probe_ports,
            prober: birthday::run::Prober::default(),
            topics: app_topics::AppTopics::new(&config.limits),
            config,
            store,
            trace,
            commands: cmd_rx,
            events: ev_tx,
            events_dropped: 0,
            gossip_send_failed: 0,
            metrics,
            stats,
            registry: Arc::new(Mutex::new(registry)),
            nat: nat_verdicts::NatVerdicts::default(),
            started: now,
            perf,
        };
        Ok((node, NodeHandle::new(cmd_tx, COMMAND_TIMEOUT), ev_rx))
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

    /// The Prometheus registry: libp2p's families (`libp2p_…`, bandwidth included) and
    /// libmesh's (`libmesh_…`, see [`stats`]). Serve it with [`stats::encode`].
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
        let next_gap = || dht::bootstrap_gap(rand_core::RngCore::next_u32(&mut rand_core::OsRng));
        let bootstrap = tokio::time::sleep(next_gap());
        tokio::pin!(bootstrap);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown) | None => break,
                    Some(c) => self.on_command(c),
                },
                _ = tick.tick() => self.on_tick(),
                Some(e) = self.prober.recv() => {
                    let actions = self.router.probe_event(e, &view!(self), Instant::now());
                    self.apply(actions);
                }
                () = &mut bootstrap => {
                    dht::bootstrap(self.swarm.behaviour_mut());
                    bootstrap.as_mut().reset(tokio::time::Instant::now() + next_gap());
                }
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
            let addr = addrs::without_peer(&seed.addr);
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
        let actions = self.relays.tick(false, false, Instant::now());
        self.apply(actions);
        match self.config.bootstrap.addrs() {
            Ok(addrs) => {
                for addr in addrs {
                    let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                        continue;
                    };
                    self.swarm
                        .behaviour_mut()
                        .amino
                        .add_address(&peer, addrs::without_peer(&addr));
                }
            }
            Err(e) => tracing::warn!(error = %e, "bootstrap list"),
        }
        // The peers stored from earlier runs, taken now (not those learned meanwhile),
        // handed over once the node knows its own addresses (`on_tick`).
        self.stored_pending = Some(dht::stored_peers(&self.store, self.node_id, STORED_PEERS));
        dht::bootstrap(self.swarm.behaviour_mut());
    }

    fn on_tick(&mut self) {
        let now = Now::current();
        // The stored peers once the listeners have reported the node's own addresses
        // (which decide the scope of theirs; the first ticks can come before them, and
        // a wildcard listener reports its interfaces one by one), or after a while
        // without any.
        let up = self.started.elapsed();
        let due =
            || up >= STORED_WAIT || up >= STORED_SETTLE && self.swarm.listeners().next().is_some();
        if self.stored_pending.is_some() && due() {
            let peers = self.stored_pending.take().unwrap_or_default();
            let own: Vec<Multiaddr> = (self.swarm.listeners())
                .chain(self.swarm.external_addresses())
                .cloned()
                .collect();
            let b = self.swarm.behaviour_mut();
            let taken = dht::remember_stored(b, peers, &own);
            tracing::info!(peers = taken, "stored peers handed to the governor");
        }
        let (swarm, wss) = (&self.swarm, self.wss_public.as_ref());
        let actions = self
            .own
            .tick(|| own_endpoints(swarm, wss), &view!(self), &now.ts);
        self.apply(actions);
        for (waiter, error) in self.waiting.expire(now.at) {
            match waiter {
                waiting::Waiter::After(a) => self.fail_after(a, error),
                w => w.fail(error),
            }
        }
        let actions = self.groups.tick(&view!(self), &now);
        self.apply(actions);
        report::sample_stats(self);
        let actions = self.router.tick(&view!(self), now.at);
        self.apply(actions);
        let reachable = self.config.autonat && relays::publicly_reachable(&self.nat);
        let advertised = self.own.current().is_some();
        let actions = self.relays.tick(reachable, advertised, now.at);
        self.apply(actions);
        // Peers' changes are committed without an fsync; one fsync a second makes them
        // durable, off the loop (see `advert_store`).
        let sweep = self.sweeper.due(now.at);
        if sweep || (self.sweeper.idle() && self.store.durable().unflushed()) {
            self.sweeper
                .start(self.store.clone(), now.ts.clone(), sweep);
        }
        // The idle rule runs only while some peer is idle (outside swarms the usual
        // case is none), at most every `idle::SWEEP_EVERY`.
        if self.idle.sweep_due(now.at) {
            // Peers other components need kept besides what the idle rule knows: route
            // targets, peers commands wait on, the relay server's clients, and the DHT
            // servers while a query that someone waits for may be talking to them.
            // (Background queries, bootstrap and republishing, do not count: with them a
            // client would keep every server it knows. A request on a connection idle for
            // the whole grace period can meet the close; Kademlia then counts that peer as
            // failed for the query and goes on.)
            let mut keep: HashSet<PeerId> = self.router.targets().collect();
            keep.extend(self.waiting.peers().copied());
            // Our relay server's reservations and both ends of its circuits, as its
            // admission side counts them.
            if let Some(relay) = self.swarm.behaviour().admission.as_ref() {
                keep.extend(relay.served_peers());
            }
            let busy = [
                self.waiting.waits_on(Dht::Amino),
                self.waiting.waits_on(Dht::Mesh),
            ];
            let b: &mut MeshBehaviour = &mut self.swarm.behaviour_mut().0;
            for (kad, busy) in [&mut b.amino, &mut b.mesh_kad].into_iter().zip(busy) {
                if busy {
                    for bucket in kad.kbuckets() {
                        keep.extend(bucket.iter().map(|e| *e.node.key.preimage()));
                    }
                }
            }
            let actions = self.idle.tick(&view!(self), keep, now.at);
            self.apply(actions);
        }
    }

    fn emit(&mut self, event: NodeEvent) {
        if self.events.try_send(event).is_err() {
            self.events_dropped += 1;
            self.stats.event_dropped();
        }
    }

    /// Clean shutdown: persist the sequence number, close every connection (which ends
    /// the peers' sessions: that is the departure they see), and stop.
    async fn shutdown(&mut self) {
        if self.config.withdraw_on_stop && self.own.withdrawal().is_none() {
            // Withdraws, then lets the withdrawal reach the session peers and the mesh
            // DHT before the connections close (until the DHT put ends, at most
            // [`WITHDRAW_FLUSH`]).
            // Bound first: a temporary view in the scrutinee would live across the
            // awaits below and make the future not `Send`.
            let withdrawn = self.own.withdraw(&view!(self), &Timestamp::now());
            match withdrawn {
                Ok(w) => {
                    self.apply(w.actions);
                    let put = self.own.last_put();
                    let deadline = tokio::time::Instant::now() + WITHDRAW_FLUSH;
                    // At least a moment for the `/mesh/advert` withdraw requests to go out.
                    let floor = tokio::time::Instant::now() + Duration::from_millis(300);
                    loop {
                        let kad = &mut self.swarm.behaviour_mut().mesh_kad;
                        let put_done = put.is_none_or(|id| kad.query(&id).is_none());
                        if put_done && tokio::time::Instant::now() >= floor {
                            break;
                        }
                        let until = if put_done { floor } else { deadline };
                        match tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
                            Ok(event) => self.on_swarm_event(event),
                            Err(_) if until == deadline => break,
                            Err(_) => {}
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "withdrawal on stop failed"),
            }
        }
        if let Some(seq) = self.own.last_sequence() {
            self.own.persist(seq);
        }
        let groups = self.groups.joined();
        for key in &groups {
            self.leave_group(*key);
        }
        if !groups.is_empty() {
            // Let the `leave` presences go out before the connections close (bounded).
            let deadline = tokio::time::Instant::now() + groups::LEAVE_FLUSH;
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
        for (reply, error) in self.waiting.drain() {
            reply.fail(error);
        }
        if let Some((_, server)) = self.perf.take() {
            server.abort();
        }
        tracing::info!(peers = peers.len(), "node stopped");
    }
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
