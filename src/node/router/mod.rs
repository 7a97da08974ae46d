//! The routing policy of `connect(node-id)` as a component: it runs the stages of
//! [`plan`] (direct, signaling then direct, birthday probing, relay), the signaling
//! correlations of `signaling` and the birthday attempts of `birthday`, owns every
//! attempt and correlation, and returns `Action`s (dials, frames, lookups, admission
//! requests, probe sockets) for the node loop to carry out.
//!
//! | state | events in | actions out |
//! |---|---|---|
//! | attempts, outgoing and answered correlations, the budget of responder punches, birthday attempts and their limiter, observed addresses | connect and send-signal commands, lookup results, dial failures, connections, signal events, relay grant answers, probe socket binds and probe task events, ticks | `Dial`, `SendFrame`, `Lookup`, `AskRelay`, `CorrelationDone`, `Continue`, `Emit`, `Trace`, `ProbeBind`, `ProbeSpray`, `ProbeSockets`, `ProbeListen`, `ProbeEnd` |

mod birthday;
pub mod plan;
pub mod policy;
mod punch_budget;
mod scope;
mod signaling;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, MeshError, NodeId, NodeKeypair, Timestamp, TraceEvent, TraceEventType};
use serde_json::json;

use super::action::Action;
use super::addrs::without_peer;
use super::api::{HandleError, Reply, Route};
use super::event::NodeEvent;
use super::observed::ObservedAddrs;
use super::view::View;
use super::waiting::After;
use plan::{Plan, Stage};
use policy::RouteSettings;
use policy::{CandidatePolicy, SignalSettings};
use signaling::{Answering, Intent, Outbound};
pub use signaling::{PURPOSE_CONNECT, PURPOSE_SETUP};

/// Most route attempts at once.
const MAX_ROUTES: usize = 64;

/// Who waits for a route.
#[derive(Debug)]
pub(crate) enum RouteWaiter {
    /// `connect`: the route itself.
    Route(Reply<Route>),
    /// A dial or a marker by node id: what to do once connected.
    Then(After),
}

impl RouteWaiter {
    fn fail(self, e: HandleError) {
        match self {
            RouteWaiter::Route(r) => {
                let _ = r.send(Err(e));
            }
            RouteWaiter::Then(a) => a.fail(e),
        }
    }

    /// The action that fails this waiter (carried out after the actions before it).
    fn failed(self, error: HandleError) -> Action {
        match self {
            RouteWaiter::Route(reply) => Action::AnswerRoute {
                reply,
                result: Err(error),
            },
            RouteWaiter::Then(after) => Action::Fail { after, error },
        }
    }
}

/// One `connect` in progress.
#[derive(Debug)]
struct Attempt {
    node: NodeId,
    peer: PeerId,
    plan: Plan,
    waiters: Vec<RouteWaiter>,
    direct: Vec<Multiaddr>,
    circuits: Vec<Multiaddr>,
    dials: HashSet<ConnectionId>,
    outbound: Option<String>,
    /// The other side's candidates, and whether they were dialed a second time.
    candidates: Vec<Multiaddr>,
    redialed: bool,
    /// Relays asked for a circuit grant before the relay stage dials.
    awaiting_grants: HashSet<PeerId>,
}

/// The routing and signaling component.
#[derive(Debug)]
pub(crate) struct Router {
    key: NodeKeypair,
    node_id: NodeId,
    settings: RouteSettings,
    attempts: HashMap<u64, Attempt>,
    next: u64,
    /// Outgoing correlations by id (routes and setup payloads).
    outbound: HashMap<String, Outbound>,
    answering: HashMap<(NodeId, String), Answering>,
    observed: ObservedAddrs,
    policy: CandidatePolicy,
    /// Addresses dialed as a responder's punches (`punch_budget`).
    punch_budget: punch_budget::PunchBudget,
    birthday: birthday::Birthday,
}

type Actions = Vec<Action>;

impl Router {
    pub(crate) fn new(key: NodeKeypair, settings: RouteSettings, signal: SignalSettings) -> Self {
        Router {
            node_id: key.node_id(),
            key,
            settings,
            attempts: HashMap::new(),
            next: 0,
            outbound: HashMap::new(),
            answering: HashMap::new(),
            observed: ObservedAddrs::default(),
            policy: CandidatePolicy::new(signal),
            punch_budget: punch_budget::PunchBudget::new(),
            birthday: birthday::Birthday::new(std::time::Duration::from_secs(
                signal.birthday_every_secs,
            )),
        }
    }

    /// The peers that route attempts in progress are reaching for.
    pub(crate) fn targets(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.attempts.values().map(|a| a.peer)
    }

    /// Remembers that a peer connected from `remote` observed us at `addr` (identify),
    /// if that is plausible (see [`super::observed`]).
    pub(crate) fn observed(
        &mut self,
        remote: &Multiaddr,
        addr: &Multiaddr,
        view: &dyn View,
        now: Instant,
    ) {
        if !self
            .observed
            .observe(remote, addr, &view.listen_addrs(), now)
        {
            tracing::debug!(%remote, %addr, "observed address not plausible, ignored");
        }
    }

    /// Starts (or joins) a route attempt to `node`.
    pub(crate) fn connect(
        &mut self,
        node: NodeId,
        waiter: RouteWaiter,
        view: &dyn View,
        now: Instant,
    ) -> Actions {
        let fail = |w: RouteWaiter, e: MeshError| {
            w.fail(e.into());
            Vec::new()
        };
        let Ok(peer) = node.to_peer_id() else {
            return fail(waiter, MeshError::invalid("node id has no peer id"));
        };
        if node == self.node_id {
            return fail(waiter, MeshError::invalid("that is this node"));
        }
        if view.is_connected(&peer) {
            let addr = view
                .remote_addrs(&peer)
                .first()
                .cloned()
                .unwrap_or_else(Multiaddr::empty);
            return match waiter {
                RouteWaiter::Route(r) => {
                    let _ = r.send(Ok(Route {
                        node: node.to_string(),
                        peer: peer.to_string(),
                        path: "existing",
                        addr: addr.to_string(),
                        ms: 0,
                        stages: Vec::new(),
                    }));
                    Vec::new()
                }
                RouteWaiter::Then(after) => vec![Action::Continue { peer, after }],
            };
        }
        if let Some(a) = self.attempts.values_mut().find(|a| a.node == node) {
            a.waiters.push(waiter);
            return Vec::new();
        }
        if self.attempts.len() >= MAX_ROUTES {
            return fail(
                waiter,
                MeshError::new(ErrorCode::TransportRejected, "too many connects at once"),
            );
        }
        let id = self.next;
        self.next += 1;
        self.attempts.insert(
            id,
            Attempt {
                node,
                peer,
                plan: Plan::new(self.settings, now),
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
        vec![Action::Lookup {
            node,
            after: After::Route(id),
        }]
    }

    /// The lookup of attempt `id` answered: dial the direct addresses.
    pub(crate) fn found(
        &mut self,
        id: u64,
        addrs: Vec<Multiaddr>,
        view: &dyn View,
        now: Instant,
    ) -> Actions {
        let Some(a) = self.attempts.get_mut(&id) else {
            return Vec::new();
        };
        a.plan.looked_up();
        let (direct, circuits) = plan::split_addrs(&addrs);
        a.direct = direct;
        a.circuits = circuits;
        let mut out = Vec::new();
        self.stage(id, view, now, &mut out);
        out
    }

    /// The lookup of attempt `id` failed: without addresses, go on with signaling.
    pub(crate) fn lookup_failed(
        &mut self,
        id: u64,
        error: &HandleError,
        view: &dyn View,
        now: Instant,
    ) -> Actions {
        let mut out = Vec::new();
        if self.attempts.contains_key(&id) {
            self.next_stage(id, format!("lookup: {error}"), view, now, &mut out);
        }
        out
    }

    /// Runs the current stage of attempt `id`.
    fn stage(&mut self, id: u64, view: &dyn View, now: Instant, out: &mut Actions) {
        let Some(a) = self.attempts.get(&id) else {
            return;
        };
        let (peer, node) = (a.peer, a.node);
        match a.plan.stage() {
            Stage::Lookup => {}
            Stage::Direct => {
                if a.direct.is_empty() {
                    return self.next_stage(id, "no direct addresses".into(), view, now, out);
                }
                let addrs = a.direct.clone();
                self.dial(id, peer, addrs, out);
            }
            Stage::Signaling => {
                let hosts = signaling::hosts(view, peer, &a.circuits);
                if hosts.is_empty() && !view.signal_reaches(&peer) {
                    return self.next_stage(id, "no signaling host".into(), view, now, out);
                }
                if let Err(e) = self.open_outbound(node, hosts, Intent::Route(id), view, now, out) {
                    self.next_stage(id, e.to_string(), view, now, out);
                }
            }
            Stage::Birthday => self.birthday_stage(id, view, now, out),
            Stage::Relay => {
                let mut circuits = a.circuits.clone();
                if circuits.is_empty() {
                    circuits = relay_circuits(view, peer);
                }
                if circuits.is_empty() {
                    return self.next_stage(id, "no relay".into(), view, now, out);
                }
                self.relay_stage(id, node, peer, circuits, view, out);
            }
        }
    }

    /// Asks each relay of `circuits` that has not admitted us for a circuit grant to
    /// `node`; dials the circuits of the relays that have at once, and those of each
    /// other relay as soon as it answers (one that never answers holds up only its
    /// own circuits: waiting for all, a silent relay stalled the stage until its time ran out).
    fn relay_stage(
        &mut self,
        id: u64,
        node: NodeId,
        peer: PeerId,
        circuits: Vec<Multiaddr>,
        view: &dyn View,
        out: &mut Actions,
    ) {
        let mut awaiting = HashSet::new();
        for relay in plan::relays_of(&circuits) {
            if view.may_open_circuit(&relay, node) {
                continue;
            }
            let addrs: Vec<Multiaddr> = circuits
                .iter()
                .filter_map(|c| plan::relay_addr_of(c, &relay))
                .collect();
            out.push(Action::AskRelay {
                relay,
                purpose: mesh_admission::Purpose::Circuit { target: Some(node) },
                addrs,
                keep: false,
            });
            awaiting.insert(relay);
        }
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        a.circuits = circuits.clone();
        let ready: Vec<Multiaddr> = circuits
            .into_iter()
            .filter(|c| !awaiting.iter().any(|r| plan::relay_addr_of(c, r).is_some()))
            .collect();
        a.awaiting_grants = awaiting;
        if !ready.is_empty() {
            self.dial(id, peer, ready, out);
        }
    }

    /// A relay answered a circuit admission request (grant, denial or failure, or the
    /// request could not be sent): the relay stages waiting for it dial its circuits.
    pub(crate) fn grant_answered(&mut self, relay: PeerId) -> Actions {
        let mut ready: Vec<(u64, PeerId, Vec<Multiaddr>)> = Vec::new();
        for (id, a) in self.attempts.iter_mut() {
            if a.plan.stage() == Stage::Relay && a.awaiting_grants.remove(&relay) {
                let through: Vec<Multiaddr> = (a.circuits.iter())
                    .filter(|c| plan::relay_addr_of(c, &relay).is_some())
                    .cloned()
                    .collect();
                ready.push((*id, a.peer, through));
            }
        }
        let mut out = Vec::new();
        for (id, peer, circuits) in ready {
            self.dial(id, peer, circuits, &mut out);
        }
        out
    }

    fn dial(&mut self, id: u64, peer: PeerId, addrs: Vec<Multiaddr>, out: &mut Actions) {
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        let signaling = a.plan.stage() == Stage::Signaling;
        if signaling {
            a.candidates = addrs.clone();
        }
        // Candidates over TCP are dialed from a fresh port: nobody punches TCP toward
        // us (see `signaling::on_candidates`), and a reused listen port could collide
        // with a connection the other side opened to us at the same moment. QUIC keeps
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
            a.dials.insert(opts.connection_id());
            out.push(Action::Dial(opts));
        }
    }

    /// The current stage of attempt `id` failed: the next one, or the end.
    fn next_stage(
        &mut self,
        id: u64,
        error: String,
        view: &dyn View,
        now: Instant,
        out: &mut Actions,
    ) {
        let Some(a) = self.attempts.get_mut(&id) else {
            return;
        };
        a.dials.clear();
        // The correlation carries on into the birthday stage.
        if a.plan.stage() != Stage::Signaling
            && let Some(o) = a.outbound.take()
        {
            self.outbound.remove(&o);
        }
        if a.plan.fail_stage(error.clone(), now).is_some() {
            return self.stage(id, view, now, out);
        }
        let Some(mut a) = self.attempts.remove(&id) else {
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
        out.push(Action::trace(TraceEvent::error(
            &e,
            self.node_id,
            Timestamp::now(),
        )));
        for w in a.waiters {
            out.push(w.failed(e.clone().into()));
        }
    }

    /// A connection to `peer` came up: every attempt for it is done.
    pub(crate) fn connection_up(
        &mut self,
        peer: PeerId,
        addr: &Multiaddr,
        now: Instant,
    ) -> Actions {
        let ids: Vec<u64> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            let Some(mut a) = self.attempts.remove(&id) else {
                continue;
            };
            let route = a.plan.succeed(a.node.to_string(), &peer, addr, now);
            if let Some(corr) = a.outbound.take() {
                self.outbound.remove(&corr);
                out.push(Action::CorrelationDone {
                    node: a.node,
                    correlation: corr,
                });
            }
            out.push(Action::trace(
                TraceEvent::new(
                    TraceEventType::RouteSelected,
                    self.node_id,
                    Timestamp::now(),
                )
                .with_peer(peer)
                .with_detail(json!(route)),
            ));
            out.push(Action::Emit(NodeEvent::RouteSelected {
                route: route.clone(),
            }));
            for w in a.waiters {
                out.push(match w {
                    RouteWaiter::Route(reply) => Action::AnswerRoute {
                        reply,
                        result: Ok(route.clone()),
                    },
                    RouteWaiter::Then(after) => Action::Continue { peer, after },
                });
            }
        }
        out
    }

    /// A dial failed (or the swarm refused it): the attempt that made it moves on once
    /// none of its dials is left.
    pub(crate) fn dial_failed(
        &mut self,
        cid: ConnectionId,
        error: &str,
        view: &dyn View,
        now: Instant,
    ) -> Actions {
        let mut out = Vec::new();
        let Some((&id, a)) = self
            .attempts
            .iter_mut()
            .find(|(_, a)| a.dials.contains(&cid))
        else {
            return out;
        };
        a.dials.remove(&cid);
        // Signaling waits for the other side's dial too, or for its time to run out; the
        // relay stage for the relays it still waits for.
        if a.dials.is_empty()
            && a.plan.stage() != Stage::Signaling
            && (a.plan.stage() != Stage::Relay || a.awaiting_grants.is_empty())
        {
            self.next_stage(id, error.to_owned(), view, now, &mut out);
        }
        out
    }

    /// Stage timeouts, the second dial of signaled candidates, forgotten correlations.
    pub(crate) fn tick(&mut self, view: &dyn View, now: Instant) -> Actions {
        let mut out = Vec::new();
        let late: Vec<(u64, Stage)> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.plan.timed_out(now))
            .map(|(id, a)| (*id, a.plan.stage()))
            .collect();
        for (id, stage) in late {
            let error = format!("{}: no connection in time", stage.as_str());
            self.next_stage(id, error, view, now, &mut out);
        }
        // Candidates are dialed once more halfway through the signaling stage (hole
        // punches often need a second try; DCUtR retries too).
        let retry: Vec<(u64, PeerId, Vec<Multiaddr>)> = self
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
            self.dial(id, peer, addrs, &mut out);
        }
        self.birthday_tick(view, now, &mut out);
        self.answering
            .retain(|_, a| now.duration_since(a.since) < signaling::ANSWERING_FOR);
        self.expire_setups(now);
        out
    }
}

/// Circuits to `target` through the relays we hold sessions with.
fn relay_circuits(view: &dyn View, target: PeerId) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    for p in view.connected_peers() {
        if p == target || !view.offers(&p, "core/relay") {
            continue;
        }
        for a in view.remote_addrs(&p) {
            if !plan::is_circuit(&a) {
                out.push(
                    without_peer(&a)
                        .with(Protocol::P2p(p))
                        .with(Protocol::P2pCircuit),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
