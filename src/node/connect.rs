//! The routing policy in the node: `connect(node-id)` runs the stages of
//! [`super::route`] (direct, signaling then direct, relay) over real dials; the
//! signaling stage's frames are [`super::signaling`]'s. Also the handle's `connect` and
//! `send_signal` (an opaque setup payload for an outside orchestrator).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, MeshError, NodeId, Timestamp, TraceEvent, TraceEventType};
use serde_json::json;

use super::handle::{Command, NodeHandle, Reply};
use super::pending::After;
use super::route::{self, Plan, Route, Stage};
use super::signaling::{Answering, Outbound, Purpose};
use super::{Node, NodeEvent, routing};

/// Most route attempts at once.
const MAX_ROUTES: usize = 64;
/// Observed addresses kept as candidates.
const MAX_OBSERVED: usize = 8;
/// Largest setup payload, bytes (before base64).
pub const MAX_SETUP_BYTES: usize = mesh_core::families::MAX_SETUP_B64 / 4 * 3;

/// Routing and signaling commands.
#[derive(Debug)]
pub(crate) enum RouteCommand {
    Connect {
        node: NodeId,
        reply: Reply<Route>,
    },
    SendSignal {
        node: NodeId,
        data: Vec<u8>,
        content_type: Option<String>,
        reply: Reply<String>,
    },
}

impl NodeHandle {
    /// Connects to `node` by the routing policy and says which path won, with timings.
    pub async fn connect(&self, node: NodeId) -> Result<Route, MeshError> {
        self.ask(|reply| Command::Route(RouteCommand::Connect { node, reply }))
            .await
    }

    /// Sends `data` (at most [`MAX_SETUP_BYTES`]) to `node` as a `setup_payload` in a
    /// new correlation (a `connect_request` with purpose `setup`, answered by the
    /// other node), directly or through a signaling host. Answers the correlation id
    /// once the payload went out.
    pub async fn send_signal(
        &self,
        node: NodeId,
        data: Vec<u8>,
        content_type: Option<String>,
    ) -> Result<String, MeshError> {
        self.ask(|reply| {
            Command::Route(RouteCommand::SendSignal {
                node,
                data,
                content_type,
                reply,
            })
        })
        .await
    }
}

/// Who waits for a route.
#[derive(Debug)]
pub(crate) enum RouteWaiter {
    Route(Reply<Route>),
    Then(After),
}

impl RouteWaiter {
    fn fail(self, e: MeshError) {
        match self {
            RouteWaiter::Route(r) => {
                let _ = r.send(Err(e));
            }
            RouteWaiter::Then(a) => a.fail(e),
        }
    }
}

/// One `connect` in progress.
#[derive(Debug)]
pub(crate) struct Attempt {
    node: NodeId,
    peer: PeerId,
    pub(super) plan: Plan,
    waiters: Vec<RouteWaiter>,
    direct: Vec<Multiaddr>,
    circuits: Vec<Multiaddr>,
    dials: HashSet<ConnectionId>,
    pub(super) outbound: Option<String>,
    /// The other side's candidates, and whether they were dialed a second time.
    candidates: Vec<Multiaddr>,
    redialed: bool,
    /// Relays asked for a circuit grant before the relay stage dials.
    awaiting_grants: HashSet<PeerId>,
}

/// The routing and signaling state of the node.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    pub(super) attempts: HashMap<u64, Attempt>,
    next: u64,
    /// Outgoing correlations by id (routes and setup payloads).
    pub(super) outbound: HashMap<String, Outbound>,
    pub(super) answering: HashMap<(NodeId, String), Answering>,
    pub(super) observed: VecDeque<Multiaddr>,
}

impl Routes {
    /// The peers that route attempts in progress are reaching for.
    pub(crate) fn targets(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.attempts.values().map(|a| a.peer)
    }

    /// Remembers an address a peer observed for us.
    pub(crate) fn observed(&mut self, addr: Multiaddr) {
        if self.observed.contains(&addr) {
            return;
        }
        if self.observed.len() >= MAX_OBSERVED {
            self.observed.pop_front();
        }
        self.observed.push_back(addr);
    }
}

impl Node {
    pub(super) fn on_route_command(&mut self, command: RouteCommand) {
        match command {
            RouteCommand::Connect { node, reply } => {
                self.route_to(node, RouteWaiter::Route(reply));
            }
            RouteCommand::SendSignal {
                node,
                data,
                content_type,
                reply,
            } => self.send_setup(node, data, content_type, reply),
        }
    }

    /// Starts (or joins) a route attempt to `node`.
    pub(super) fn route_to(&mut self, node: NodeId, waiter: RouteWaiter) {
        let fail = RouteWaiter::fail;
        let Ok(peer) = node.to_peer_id() else {
            return fail(waiter, MeshError::invalid("node id has no peer id"));
        };
        if node == self.node_id {
            return fail(waiter, MeshError::invalid("that is this node"));
        }
        if self.swarm.is_connected(&peer) {
            let addr = self
                .pending
                .remote_addrs(&peer)
                .first()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(Multiaddr::empty);
            return self.route_done_now(node, peer, addr, waiter);
        }
        if let Some(a) = self.routes.attempts.values_mut().find(|a| a.node == node) {
            a.waiters.push(waiter);
            return;
        }
        if self.routes.attempts.len() >= MAX_ROUTES {
            return fail(
                waiter,
                MeshError::new(ErrorCode::TransportRejected, "too many connects at once"),
            );
        }
        let id = self.routes.next;
        self.routes.next += 1;
        self.routes.attempts.insert(
            id,
            Attempt {
                node,
                peer,
                plan: Plan::new(self.config.route, Instant::now()),
                waiters: vec![waiter],
                direct: Vec::new(),
                circuits: Vec::new(),
                dials: HashSet::new(),
                outbound: None,
                candidates: Vec::new(),
                redialed: false,
                awaiting_grants: HashSet::new(),
            },
        );
        self.lookup(node, After::Route(id), false);
    }

    fn route_done_now(&mut self, node: NodeId, peer: PeerId, addr: Multiaddr, w: RouteWaiter) {
        match w {
            RouteWaiter::Route(r) => {
                let _ = r.send(Ok(Route {
                    node: node.to_string(),
                    peer: peer.to_string(),
                    path: "existing",
                    addr: addr.to_string(),
                    ms: 0,
                    stages: Vec::new(),
                }));
            }
            RouteWaiter::Then(a) => self.connected(peer, a),
        }
    }

    /// The lookup of attempt `id` answered: dial the direct addresses.
    pub(super) fn route_found(&mut self, id: u64, addrs: Vec<Multiaddr>) {
        let Some(a) = self.routes.attempts.get_mut(&id) else {
            return;
        };
        a.plan.looked_up();
        let (direct, circuits) = route::split_addrs(&addrs);
        a.direct = direct;
        a.circuits = circuits;
        self.route_stage(id);
    }

    /// The lookup of attempt `id` failed: without addresses, go on with signaling.
    pub(super) fn route_lookup_failed(&mut self, id: u64, error: MeshError) {
        if self.routes.attempts.contains_key(&id) {
            self.route_next(id, format!("lookup: {error}"));
        }
    }

    /// Runs the current stage of attempt `id`.
    fn route_stage(&mut self, id: u64) {
        let Some(a) = self.routes.attempts.get(&id) else {
            return;
        };
        let (peer, node) = (a.peer, a.node);
        match a.plan.stage() {
            Stage::Lookup => {}
            Stage::Direct => {
                if a.direct.is_empty() {
                    return self.route_next(id, "no direct addresses".into());
                }
                let addrs = a.direct.clone();
                self.route_dial(id, peer, addrs);
            }
            Stage::Signaling => {
                let hosts = self.signaling_hosts(peer, &a.circuits);
                let direct = self.swarm.behaviour().signal.is_connected(&peer);
                if hosts.is_empty() && !direct {
                    return self.route_next(id, "no signaling host".into());
                }
                let out = self.open_outbound(node, hosts, Purpose::Route(id));
                if let Err(e) = out {
                    self.route_next(id, e.to_string());
                }
            }
            Stage::Relay => {
                let mut circuits = a.circuits.clone();
                if circuits.is_empty() {
                    circuits = self.relay_circuits(peer);
                }
                if circuits.is_empty() {
                    return self.route_next(id, "no relay".into());
                }
                self.route_relay_stage(id, node, peer, circuits);
            }
        }
    }

    /// Asks each relay of `circuits` that has not admitted us for a circuit grant to
    /// `node`, then dials (at once when every relay already has).
    fn route_relay_stage(&mut self, id: u64, node: NodeId, peer: PeerId, circuits: Vec<Multiaddr>) {
        let mut awaiting = HashSet::new();
        for relay in route::relays_of(&circuits) {
            if self.relays.may_open_circuit(&relay, node) {
                continue;
            }
            let addrs: Vec<Multiaddr> = circuits
                .iter()
                .filter_map(|c| route::relay_addr_of(c, &relay))
                .collect();
            let asked = self.swarm.behaviour_mut().admission_client.request(
                relay,
                mesh_admission::Purpose::Circuit { target: Some(node) },
                addrs,
            );
            match asked {
                Ok(_) => {
                    awaiting.insert(relay);
                }
                Err(e) => tracing::debug!(%relay, error = %e, "no circuit admission request"),
            }
        }
        let Some(a) = self.routes.attempts.get_mut(&id) else {
            return;
        };
        a.circuits = circuits.clone();
        if awaiting.is_empty() {
            self.route_dial(id, peer, circuits);
        } else {
            a.awaiting_grants = awaiting;
        }
    }

    /// A relay answered a circuit admission request (grant, denial or failure): the
    /// relay stages waiting for it dial once every relay they asked has answered.
    pub(super) fn route_grant_answered(&mut self, relay: PeerId) {
        let mut ready: Vec<(u64, PeerId, Vec<Multiaddr>)> = Vec::new();
        for (id, a) in self.routes.attempts.iter_mut() {
            if a.plan.stage() == Stage::Relay
                && a.awaiting_grants.remove(&relay)
                && a.awaiting_grants.is_empty()
            {
                ready.push((*id, a.peer, a.circuits.clone()));
            }
        }
        for (id, peer, circuits) in ready {
            self.route_dial(id, peer, circuits);
        }
    }

    pub(super) fn route_dial(&mut self, id: u64, peer: PeerId, addrs: Vec<Multiaddr>) {
        let signaling = self
            .routes
            .attempts
            .get(&id)
            .is_some_and(|a| a.plan.stage() == Stage::Signaling);
        if signaling && let Some(a) = self.routes.attempts.get_mut(&id) {
            a.candidates = addrs.clone();
        }
        // Candidates over TCP are dialed from a fresh port: nobody punches TCP toward
        // us (see `on_candidates`), and a reused listen port could collide with a
        // connection the other side opened to us at the same moment. QUIC keeps
        // dialing from its listening socket, which is what a hole punch needs.
        let groups: Vec<(Vec<Multiaddr>, bool)> = if signaling {
            let (quic, tcp): (Vec<Multiaddr>, Vec<Multiaddr>) = addrs
                .into_iter()
                .partition(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)));
            vec![(quic, false), (tcp, true)]
        } else {
            vec![(addrs, false)]
        };
        for (addrs, new_port) in groups {
            if addrs.is_empty() {
                continue;
            }
            let mut b = DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::Always);
            if new_port {
                b = b.allocate_new_port();
            }
            let opts = b.build();
            let cid = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    if let Some(a) = self.routes.attempts.get_mut(&id) {
                        a.dials.insert(cid);
                    }
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "route dial not started");
                    if !signaling {
                        return self.route_next(id, format!("dial: {e}"));
                    }
                }
            }
        }
    }

    /// The current stage of attempt `id` failed: the next one, or the end.
    pub(super) fn route_next(&mut self, id: u64, error: String) {
        let now = Instant::now();
        let Some(a) = self.routes.attempts.get_mut(&id) else {
            return;
        };
        a.dials.clear();
        if let Some(o) = a.outbound.take() {
            self.routes.outbound.remove(&o);
        }
        match a.plan.fail_stage(error.clone(), now) {
            Some(_) => self.route_stage(id),
            None => {
                let Some(mut a) = self.routes.attempts.remove(&id) else {
                    return;
                };
                let stages = a.plan.fail_all(error, now);
                let detail: Vec<String> = stages
                    .iter()
                    .map(|s| format!("{}: {}", s.stage, s.error.clone().unwrap_or_default()))
                    .collect();
                let e = MeshError::new(
                    ErrorCode::TransportUnavailable,
                    format!("{}: no path ({})", a.node, detail.join("; ")),
                );
                self.emit_trace(TraceEvent::error(&e, self.node_id, Timestamp::now()));
                for w in a.waiters {
                    w.fail(e.clone());
                }
            }
        }
    }

    /// A connection to `peer` came up: every attempt for it is done.
    pub(super) fn route_connection(&mut self, peer: PeerId, addr: &Multiaddr) {
        let ids: Vec<u64> = self
            .routes
            .attempts
            .iter()
            .filter(|(_, a)| a.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(mut a) = self.routes.attempts.remove(&id) else {
                continue;
            };
            let now = Instant::now();
            let route = a.plan.succeed(a.node.to_string(), &peer, addr, now);
            if let Some(corr) = a.outbound.take() {
                self.routes.outbound.remove(&corr);
                let _ = self.swarm.behaviour_mut().signal.correlations_mut().done(
                    &a.node,
                    &corr,
                    &Timestamp::now(),
                );
            }
            self.emit_trace(
                TraceEvent::new(
                    TraceEventType::RouteSelected,
                    self.node_id,
                    Timestamp::now(),
                )
                .with_peer(peer)
                .with_detail(json!(route)),
            );
            self.emit(NodeEvent::RouteSelected {
                route: route.clone(),
            });
            for w in a.waiters {
                match w {
                    RouteWaiter::Route(r) => {
                        let _ = r.send(Ok(route.clone()));
                    }
                    RouteWaiter::Then(after) => self.connected(peer, after),
                }
            }
        }
    }

    /// A dial failed: the attempt that made it moves on once none of its dials is left.
    pub(super) fn route_dial_failed(&mut self, cid: ConnectionId, error: &str) {
        let Some((&id, a)) = self
            .routes
            .attempts
            .iter_mut()
            .find(|(_, a)| a.dials.contains(&cid))
        else {
            return;
        };
        a.dials.remove(&cid);
        // Signaling waits for the other side's dial too, or for its time to run out.
        if a.dials.is_empty() && a.plan.stage() != Stage::Signaling {
            self.route_next(id, error.to_owned());
        }
    }

    /// Stage timeouts and forgotten correlations.
    pub(super) fn routes_tick(&mut self) {
        let now = Instant::now();
        let late: Vec<(u64, Stage)> = self
            .routes
            .attempts
            .iter()
            .filter(|(_, a)| a.plan.timed_out(now))
            .map(|(id, a)| (*id, a.plan.stage()))
            .collect();
        for (id, stage) in late {
            self.route_next(id, format!("{}: no connection in time", stage.as_str()));
        }
        // Candidates are dialed once more halfway through the signaling stage (hole
        // punches often need a second try; DCUtR retries too).
        let retry: Vec<(u64, PeerId, Vec<Multiaddr>)> = self
            .routes
            .attempts
            .iter_mut()
            .filter(|(_, a)| {
                a.plan.stage() == Stage::Signaling
                    && !a.redialed
                    && !a.candidates.is_empty()
                    && a.plan.stage_elapsed(now) * 2 >= a.plan.budget()
            })
            .map(|(id, a)| {
                a.redialed = true;
                (*id, a.peer, a.candidates.clone())
            })
            .collect();
        for (id, peer, addrs) in retry {
            tracing::debug!(%peer, "dialing the candidates again");
            self.route_dial(id, peer, addrs);
        }
        self.routes
            .answering
            .retain(|_, a| now.duration_since(a.since) < super::signaling::ANSWERING_FOR);
        let ts = Timestamp::now();
        self.swarm
            .behaviour_mut()
            .signal
            .correlations_mut()
            .sweep(&ts);
    }

    /// Circuits to `target` through the relays we hold sessions with.
    fn relay_circuits(&self, target: PeerId) -> Vec<Multiaddr> {
        let b = self.swarm.behaviour();
        let mut out = Vec::new();
        for p in self.swarm.connected_peers() {
            let relay = b
                .session
                .session(p)
                .is_some_and(|s| s.capabilities.iter().any(|c| c == "core/relay"));
            if !relay || *p == target {
                continue;
            }
            for a in self.pending.remote_addrs(p) {
                if let Ok(a) = a.parse::<Multiaddr>()
                    && !route::is_circuit(&a)
                {
                    out.push(
                        routing::without_peer(&a)
                            .with(Protocol::P2p(*p))
                            .with(Protocol::P2pCircuit),
                    );
                }
            }
        }
        out
    }
}
