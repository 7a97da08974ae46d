//! The relay's side: a circuit relay v2 server with admission, in one behaviour. It
//! answers `/mesh/relay-admission/1.0.0` requests and enforces the grants on the
//! [`libp2p::relay::Behaviour`] it owns, so that no embedder can run the relay without
//! the enforcement (or forget half of it).
//!
//! Enforcement has three hooks, all inside [`Behaviour`]:
//! 1. the relay is built (in [`Behaviour::new`] and [`Behaviour::with_relay_config`])
//!    with the admission check first among its reservation and circuit rate limiters, so
//!    a peer without a live grant is refused (`RESOURCE_LIMIT_EXCEEDED` on the wire)
//!    before any other limiter counts it, unless the policy admits it implicitly
//!    ([`crate::implicit`], [`Config::implicit_grants`]), and with its per-circuit byte
//!    and duration caps set to [`Config::caps`];
//! 2. connections of revoked (blocked) peers are denied, and a revocation closes the
//!    peer's connections, which closes its circuits;
//! 3. every event of the relay passes through this behaviour's `poll`, which counts
//!    reservations and circuits per node id (across all of the node's connections) and
//!    closes circuits that no grant covers or that outlive a grant shorter than the
//!    relay's cap, before handing the event on as [`Event::Relay`]. There is no path
//!    from the relay to the swarm around that accounting.
//!
//! The clock is [`Config::clock`] (the system clock by default).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionHandlerSelect, ConnectionId, FromSwarm,
    NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, relay, request_response};
use mesh_core::{
    Artifact, ErrorCode, MeshError, NodeId, NodeKeypair, RateLimiter, Timestamp, TraceEvent,
    TraceEventType,
};

use crate::codec::{Codec, PROTOCOL};
use crate::gate::{Gate, issue};
use crate::grants::{Grant, Grants, Opened, Rules};
use crate::implicit::Implicit;
use mesh_core::IpKey;

mod config;
mod event;
mod limiter;

use config::MAX_TRACKED_IPS;
pub use config::{Config, DEFAULT_CAPS, DEFAULT_REQUESTS_PER_IP};
pub use event::{Event, Requested};

use limiter::{Handle, Shared};

/// The two protocols of the relay: the admission requests and circuit relay v2 (hop and
/// stop), in the order a swarm with both side by side consulted them. Private: the relay
/// is reachable only through [`Behaviour`].
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct Inner {
    admission: request_response::Behaviour<Codec>,
    relay: relay::Behaviour,
}

/// Admission requests one connection may have open at once. Each is read whole (up to
/// 64 KiB) before it is checked; libp2p's default of 100 let one connection hold 100
/// half-sent requests (12.5 MiB) for the request timeout, again and again. A client
/// sends one per reservation or circuit at a time.
pub const MAX_STREAMS: usize = 8;

/// The relay: circuit relay v2 with admission. Put it in your swarm's behaviour as is;
/// it needs no other behaviour and no calls to enforce the grants.
pub struct Behaviour {
    inner: Inner,
    key: NodeKeypair,
    config: Config,
    gate: Gate,
    shared: Handle,
    /// Reservations per peer, as counted from the relay's events.
    reservations: HashMap<PeerId, usize>,
    /// The remote IP key of every connection (`None`: no IP in its address).
    remote_ips: HashMap<ConnectionId, Option<IpKey>>,
    events: VecDeque<ToSwarm<Event, THandlerInEvent<Self>>>,
    tick: futures_timer::Delay,
}

const TICK: Duration = Duration::from_secs(1);

impl Behaviour {
    /// The relay whose identity is `key`, with relay v2's default settings (rate
    /// limiters included) besides the admission check and [`Config::caps`].
    pub fn new(key: NodeKeypair, config: Config) -> Self {
        Self::with_relay_config(key, config, relay::Config::default())
    }

    /// The relay whose identity is `key`, built from `relay`: its limits (reservations,
    /// circuits, per peer), durations and rate limiters, with the admission check
    /// installed first among the rate limiters and the per-circuit caps
    /// (`max_circuit_bytes`, `max_circuit_duration`) replaced by [`Config::caps`].
    pub fn with_relay_config(key: NodeKeypair, config: Config, relay: relay::Config) -> Self {
        let gate = Gate::new(
            key.node_id(),
            config.policy.clone(),
            config.adverts.clone(),
            config.caps,
        );
        let shared = Handle {
            shared: Arc::new(Mutex::new(Shared {
                grants: Grants::with_rules(Rules {
                    max_nodes: config.max_nodes,
                    max_per_ip: config.max_nodes_per_ip,
                    max_circuits_per_ip: config.max_circuits_per_ip,
                    unused_secs: secs(config.unused_grant),
                }),
                requests: RateLimiter::new(config.requests_per_ip, MAX_TRACKED_IPS),
                requests_by_peer: RateLimiter::new(config.requests_per_ip, MAX_TRACKED_IPS),
                refused: VecDeque::new(),
                admitted: VecDeque::new(),
                waker: None,
            })),
            clock: config.clock.clone(),
            implicit: config.implicit_grants.then(|| {
                Arc::new(Implicit {
                    policy: config.policy.clone(),
                    adverts: config.adverts.clone(),
                    caps: config.caps,
                    ttl_secs: secs(config.grant_ttl),
                })
            }),
        };
        let peer_id = key.to_libp2p().public().to_peer_id();
        let relay = relay::Behaviour::new(peer_id, shared.enforcing(config.caps, relay));
        Behaviour {
            inner: Inner {
                admission: request_response::Behaviour::with_codec(
                    Codec(config.read_budget.clone()),
                    [(PROTOCOL, request_response::ProtocolSupport::Inbound)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10))
                        .with_max_concurrent_streams(MAX_STREAMS),
                ),
                relay,
            },
            shared,
            key,
            gate,
            config,
            reservations: HashMap::new(),
            remote_ips: HashMap::new(),
            events: VecDeque::new(),
            tick: futures_timer::Delay::new(TICK),
        }
    }

    fn now(&self) -> Timestamp {
        (self.config.clock)()
    }

    /// Counts one event of the relay (reservations, circuits per node id) and closes
    /// circuits outside their grant. Every relay event goes through here, in `poll`,
    /// before the application sees it.
    fn account(&mut self, event: &relay::Event) {
        let now = self.now();
        match event {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                let n = self.reservations.entry(*src_peer_id).or_default();
                // A renewal proves a reservation even if a close of another connection
                // of the peer was counted against it.
                *n = if *renewed { (*n).max(1) } else { *n + 1 };
                self.set_reserved(src_peer_id, true);
            }
            // The relay reports `ReservationClosed` for every closed connection of a peer,
            // with a reservation or not: only peers counted here are affected.
            relay::Event::ReservationClosed { src_peer_id }
            | relay::Event::ReservationTimedOut { src_peer_id } => {
                if let Some(n) = self.reservations.get_mut(src_peer_id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.reservations.remove(src_peer_id);
                        self.set_reserved(src_peer_id, false);
                    }
                }
            }
            // An allowed circuit request that will not open. A `ResourceLimitExceeded`
            // denial comes from the relay's limits and limiters, before anything was
            // counted (or, rarely, from the destination: then the count lapses after
            // `grants::PENDING_SECS`).
            relay::Event::CircuitReqDenied {
                src_peer_id,
                status,
                ..
            } if !matches!(status, relay::StatusCode::ResourceLimitExceeded) => {
                if let Ok(src) = NodeId::from_peer_id(src_peer_id) {
                    self.shared.lock().grants.circuit_abandoned(&src);
                }
            }
            #[allow(deprecated)]
            relay::Event::CircuitReqAcceptFailed { src_peer_id, .. } => {
                if let Ok(src) = NodeId::from_peer_id(src_peer_id) {
                    self.shared.lock().grants.circuit_abandoned(&src);
                }
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                let (Ok(src), Ok(dst)) = (
                    NodeId::from_peer_id(src_peer_id),
                    NodeId::from_peer_id(dst_peer_id),
                ) else {
                    return;
                };
                let opened = self.shared.lock().grants.circuit_opened(src, dst, &now);
                if let Opened::Violation(error) = opened {
                    tracing::info!(%src, %dst, %error, "circuit outside its grant; closing");
                    self.refuse(*src_peer_id, Requested::Circuit, error);
                    self.close(*src_peer_id);
                }
            }
            relay::Event::CircuitClosed {
                src_peer_id,
                dst_peer_id,
                ..
            } => {
                if let (Ok(src), Ok(dst)) = (
                    NodeId::from_peer_id(src_peer_id),
                    NodeId::from_peer_id(dst_peer_id),
                ) {
                    self.shared.lock().grants.circuit_closed(&src, &dst);
                }
            }
            _ => {}
        }
    }

    /// Tells the grant table whether `peer` holds a reservation (idle nodes are evicted
    /// first when the table is full).
    fn set_reserved(&self, peer: &PeerId, reserved: bool) {
        if let Ok(node) = NodeId::from_peer_id(peer) {
            self.shared.lock().grants.set_reserved(&node, reserved);
        }
    }

    /// Revokes every grant of `node`, blocks it for [`Config::block`] and closes its
    /// connections (and so its circuits and reservation). Whether it held a grant.
    pub fn revoke(&mut self, node: NodeId) -> bool {
        let until = self.now().plus_secs(secs(self.config.block));
        let had = self.shared.lock().grants.revoke(&node, until);
        if let Ok(peer) = node.to_peer_id() {
            self.close(peer);
        }
        self.trace(
            TraceEventType::RelayDenied,
            &node,
            serde_json::json!({"revoked": true, "had-grant": had}),
        );
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::Revoked { node }));
        had
    }

    /// The live grants, newest first.
    pub fn grants(&self) -> Vec<Grant> {
        let now = self.now();
        self.shared.lock().grants.live(&now)
    }

    /// Blocked nodes and until when.
    pub fn blocked(&self) -> Vec<(NodeId, Timestamp)> {
        let now = self.now();
        self.shared.lock().grants.blocked(&now)
    }

    /// Open circuits whose source is `node`.
    pub fn open_circuits(&self, node: &NodeId) -> usize {
        self.shared.lock().grants.open_circuits(node)
    }

    /// Peers the relay serves now: those holding a reservation and both ends of every
    /// open circuit (as counted from the relay's events).
    pub fn served_peers(&self) -> HashSet<PeerId> {
        let mut peers: HashSet<PeerId> = self.reservations.keys().copied().collect();
        let s = self.shared.lock();
        for (src, dst) in s.grants.circuits() {
            peers.extend([src, dst].into_iter().filter_map(|n| n.to_peer_id().ok()));
        }
        peers
    }

    /// Reservations held (as counted from the relay's events) over the configured
    /// maximum, in permille.
    pub fn load_permille(&self) -> u64 {
        let max = self.config.max_reservations.max(1) as u64;
        let held: usize = self.reservations.values().sum();
        (held as u64 * 1000 / max).min(1000)
    }

    fn close(&mut self, peer: PeerId) {
        self.events.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: CloseConnection::All,
        });
    }

    fn refuse(&mut self, peer: PeerId, what: Requested, error: MeshError) {
        if let Ok(node) = NodeId::from_peer_id(&peer) {
            self.trace(
                TraceEventType::RelayDenied,
                &node,
                serde_json::json!({"what": what.as_str(), "code": error.code.as_str(), "detail": error.detail}),
            );
        }
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::Refused { peer, what, error }));
    }

    fn admitted(&mut self, peer: PeerId, what: Requested, grant: Grant) {
        tracing::debug!(%peer, %what, ticket = %grant.ticket, "relay admission: implicit grant");
        self.trace(
            TraceEventType::RelayAdmitted,
            &grant.node,
            serde_json::json!({
                "ticket/id": grant.ticket,
                "purpose": grant.purpose.as_str(),
                "expires-at": grant.expires_at.as_str(),
                "reason": "implicit",
            }),
        );
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::Admitted {
                peer,
                what,
                grant,
            }));
    }

    fn trace(&self, kind: TraceEventType, node: &NodeId, detail: serde_json::Value) {
        if self.config.trace.enabled() {
            let e = TraceEvent::new(kind, self.key.node_id(), self.now())
                .with_peer(node)
                .with_detail(detail);
            self.config.trace.emit(&e);
        }
    }

    /// Answers one request, which came on `connection`.
    fn answer(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: crate::codec::Request,
    ) -> crate::codec::Answer {
        let now = self.now();
        let ip = self.remote_ips.get(&connection).copied().flatten();
        let limited = self.shared.lock().check_request(ip, &peer, &now);
        let result = limited.and(request).and_then(|bytes| {
            let node = NodeId::from_peer_id(&peer).map_err(MeshError::from)?;
            let admitted = {
                let s = self.shared.lock();
                self.gate.check(&bytes, &node, &s.grants, &now)?
            };
            let (grant, entry) = issue(
                &self.key,
                &admitted,
                secs(self.config.grant_ttl),
                self.load_permille(),
                &now,
            )?;
            self.shared.lock().grants.admit(entry, ip, &now)?;
            Ok(grant)
        });
        match result {
            Ok(grant) => {
                self.trace(
                    TraceEventType::RelayAdmitted,
                    &grant.node_id(),
                    serde_json::json!({
                        "ticket/id": grant.ticket_id(),
                        "purpose": grant.purpose(),
                        "expires-at": grant.expires_at().as_str(),
                        "reason": "request",
                    }),
                );
                let bytes = grant.to_cbor();
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::Granted {
                        peer,
                        grant: Box::new(grant),
                    }));
                Ok(bytes)
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "relay admission denied");
                if let Ok(node) = NodeId::from_peer_id(&peer) {
                    self.trace(
                        TraceEventType::RelayDenied,
                        &node,
                        serde_json::json!({"code": error.code.as_str(), "detail": error.detail}),
                    );
                }
                self.events.push_back(ToSwarm::GenerateEvent(Event::Denied {
                    peer,
                    error: error.clone(),
                }));
                Err(error)
            }
        }
    }

    fn on_tick(&mut self) {
        let now = self.now();
        let (lapsed, overdue) = {
            let mut s = self.shared.lock();
            let mut lapsed = s.grants.sweep(&now);
            // A node still holding something at the relay whose grant lapsed is admitted
            // again implicitly if the policy still allows it (a standard client cannot
            // renew otherwise); else its reservation and circuits end below.
            if let Some(implicit) = self.shared.implicit.clone() {
                for node in &lapsed {
                    let Ok(peer) = node.to_peer_id() else {
                        continue;
                    };
                    let what = if s.grants.is_reserved(node) {
                        Requested::Reservation
                    } else if s.grants.is_active(node) {
                        Requested::Circuit
                    } else {
                        continue;
                    };
                    if let Err(error) = s.admit_implicitly(&implicit, peer, *node, what, None, &now)
                    {
                        tracing::debug!(%node, %error, "implicit grant not renewed");
                    }
                }
            }
            // Renewed since (a lapse found while making room is reported late).
            lapsed.retain(|n| s.grants.check_reservation(n, &now).is_err());
            (lapsed, s.grants.overdue(&now))
        };
        // A reservation whose grant lapsed without renewal ends now (relay v2 would keep
        // it until its own renewal, up to an hour): the node's connections close.
        for node in lapsed {
            let Ok(peer) = node.to_peer_id() else {
                continue;
            };
            if self.reservations.contains_key(&peer) {
                let error = MeshError::new(
                    ErrorCode::TransportRejected,
                    "reservation grant lapsed without renewal",
                );
                tracing::info!(%node, "reservation grant lapsed; ending the reservation");
                self.refuse(peer, Requested::Reservation, error);
                self.close(peer);
            }
        }
        for (src, dst) in overdue {
            let error = MeshError::new(
                ErrorCode::TransportRejected,
                format!("circuit to {dst} outlived its grant"),
            );
            if let Ok(peer) = src.to_peer_id() {
                self.refuse(peer, Requested::Circuit, error);
                self.close(peer);
            }
            self.shared.lock().grants.circuit_closed(&src, &dst);
        }
    }

    fn denied_if_blocked(&self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        let Ok(node) = NodeId::from_peer_id(peer) else {
            return Ok(());
        };
        let now = self.now();
        let s = self.shared.lock();
        match s.grants.blocked_until(&node, &now) {
            Some(until) => Err(ConnectionDenied::new(MeshError::new(
                ErrorCode::TransportRejected,
                format!("{node} is revoked at this relay until {}", until.as_str()),
            ))),
            None => Ok(()),
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl NetworkBehaviour for Behaviour {
    // `Inner`'s handler, spelled out (`Inner` is private).
    type ConnectionHandler = ConnectionHandlerSelect<
        THandler<request_response::Behaviour<Codec>>,
        THandler<relay::Behaviour>,
    >;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.denied_if_blocked(&peer)?;
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.denied_if_blocked(&peer)?;
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(c) => {
                let addr = c.endpoint.get_remote_address();
                self.remote_ips
                    .insert(c.connection_id, IpKey::of_multiaddr(addr));
            }
            FromSwarm::ConnectionClosed(c) => {
                self.remote_ips.remove(&c.connection_id);
                if c.remaining_established == 0 {
                    self.reservations.remove(&c.peer_id);
                    self.set_reserved(&c.peer_id, false);
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            {
                let mut s = self.shared.lock();
                s.waker = Some(cx.waker().clone());
                let refused: Vec<_> = s.refused.drain(..).collect();
                let admitted: Vec<_> = s.admitted.drain(..).collect();
                drop(s);
                for (peer, what, grant) in admitted {
                    self.admitted(peer, what, grant);
                }
                for (peer, what, error) in refused {
                    self.refuse(peer, what, error);
                }
            }
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(e);
            }
            if self.tick.poll_unpin(cx).is_ready() {
                self.tick.reset(TICK);
                self.on_tick();
                continue;
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(InnerEvent::Relay(e))) => {
                    self.account(&e);
                    return Poll::Ready(ToSwarm::GenerateEvent(Event::Relay(e)));
                }
                Poll::Ready(ToSwarm::GenerateEvent(InnerEvent::Admission(e))) => {
                    if let request_response::Event::Message {
                        peer,
                        connection_id,
                        message:
                            request_response::Message::Request {
                                request, channel, ..
                            },
                    } = e
                    {
                        let answer = self.answer(peer, connection_id, request);
                        if self.inner.admission.send_response(channel, answer).is_err() {
                            tracing::debug!(%peer, "admission answer not sent: stream gone");
                        }
                    }
                }
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent handled above")),
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
