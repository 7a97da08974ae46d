//! The `/mesh/session/1.0.0` behaviour: on every connection the dialer sends a signed
//! hello with its capability advertisement, the listener answers a signed ack with its
//! own, and both derive the session secret: one request round after the connection.
//! The node's own advertisement (with its signed passports) is built once and reused
//! until half its passports' lifetime has passed.
//!
//! Hard rejections (a bad signature, a signer other than the connection's peer, a
//! replay) close the connection and count towards blocking the peer; other bad input is
//! answered with its code and leaves the connection (and any session on it) alone.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandlerInEvent,
    ToSwarm,
};
use mesh_core::artifact::Artifact;
use mesh_core::{
    CapabilityAdvertisement, ErrorCode, HandshakeMode, MeshError, NodeId, NodeKeypair,
    PeerHandshake, Timestamp, TraceEvent, TraceEventType, TraceSink,
};
use serde_json::json;

use crate::artifacts::{
    HandshakeParams, accept_capabilities, build_ack, build_capabilities, build_hello,
};
use crate::governor::{Governor, GovernorConfig};
use crate::keepalive::{Change, Keepalive};
use crate::protocol::{Codec, Inbound, Message, PROTOCOL};
use crate::replay::{ReplayConfig, ReplayGuard};
use crate::secret::{EphemeralKey, Role, SessionSecret, Transcript, derive, parse_session_pub};

/// The clock (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Configuration.
#[derive(Clone)]
pub struct Config {
    /// Capabilities offered besides `core/messaging`.
    pub capabilities: Vec<String>,
    /// Transport profiles advertised.
    pub transports: Vec<String>,
    /// Lifetime of the self-issued passports, seconds.
    pub passport_ttl_secs: i64,
    /// Replay-guard settings.
    pub replay: ReplayConfig,
    /// Governor settings.
    pub governor: GovernorConfig,
    /// How long each request waits for its response.
    pub request_timeout: Duration,
    /// How often the governor runs (dials, unblocks, promotions).
    pub tick_interval: Duration,
    /// Consecutive ping failures that make a peer lost.
    pub keepalive_failures: u32,
    /// Where trace events go.
    pub trace: Arc<dyn TraceSink>,
    /// The clock.
    pub clock: Clock,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capabilities: vec!["core/discovery".into(), "core/keepalive".into()],
            transports: vec!["tcp".into(), "quic".into()],
            passport_ttl_secs: 3600,
            replay: ReplayConfig::default(),
            governor: GovernorConfig::default(),
            request_timeout: Duration::from_secs(30),
            keepalive_failures: 3,
            tick_interval: Duration::from_secs(1),
            trace: Arc::new(mesh_core::NoTrace),
            clock: Arc::new(Timestamp::now),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("capabilities", &self.capabilities)
            .field("transports", &self.transports)
            .finish_non_exhaustive()
    }
}

/// An established session.
#[derive(Debug)]
pub struct Session {
    /// The peer's node id.
    pub node: NodeId,
    /// The capabilities the peer proved with valid passports.
    pub capabilities: Vec<String>,
    /// The secret both ends derived (the session binding).
    pub secret: Arc<SessionSecret>,
    /// Whether this side sent the hello.
    pub role: Role,
    /// When the session was established.
    pub established_at: Timestamp,
}

/// Events for the application.
#[derive(Debug)]
pub enum Event {
    /// This side sent a hello to `peer`.
    HandshakeStarted {
        /// The peer.
        peer: PeerId,
    },
    /// Hello/ack and capability exchange are done.
    SessionEstablished {
        /// The peer.
        peer: PeerId,
        /// Its node id.
        node: NodeId,
        /// Its proven capabilities.
        capabilities: Vec<String>,
    },
    /// Something failed; `by_peer` when the peer refused us, otherwise we refused it
    /// (`hard` refusals close the connection).
    Rejected {
        /// The peer.
        peer: PeerId,
        /// Why, with its code.
        error: MeshError,
        /// We refused a hard failure (connection closed).
        hard: bool,
        /// The peer refused us.
        by_peer: bool,
    },
    /// Pings to a peer with a session failed `keepalive_failures` times in a row.
    KeepaliveLost {
        /// The peer.
        peer: PeerId,
    },
    /// Pings to that peer succeed again.
    KeepaliveRestored {
        /// The peer.
        peer: PeerId,
    },
    /// The last connection to a peer with a session closed.
    SessionClosed {
        /// The peer.
        peer: PeerId,
        /// Its node id.
        node: NodeId,
    },
}

enum State {
    /// We sent a hello and wait for the ack.
    AwaitingAck {
        hello: Box<PeerHandshake>,
        eph: EphemeralKey,
    },
    /// Done.
    Established(Session),
}

/// The behaviour.
pub struct Behaviour {
    inner: request_response::Behaviour<Codec>,
    key: NodeKeypair,
    config: Config,
    replay: ReplayGuard,
    governor: Governor,
    states: HashMap<PeerId, State>,
    events: VecDeque<ToSwarm<Event, THandlerInEvent<Self>>>,
    keepalive: Keepalive<PeerId>,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    tick: futures_timer::Delay,
    /// Connections to close once the coded refusal to this request has been sent.
    close_after: HashMap<request_response::InboundRequestId, PeerId>,
    /// The node's own capability advertisement (its CBOR, compact) and when it was
    /// built; reused until half its passports' lifetime has passed.
    own_caps: Option<(Vec<u8>, Timestamp)>,
}

fn is_hard(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::SigInvalid | ErrorCode::SigUnknownSigner | ErrorCode::HsReplay
    )
}

impl Behaviour {
    /// A behaviour for the node `key` (the swarm must use the same key).
    pub fn new(key: NodeKeypair, config: Config) -> Self {
        let rr = request_response::Config::default().with_request_timeout(config.request_timeout);
        Behaviour {
            inner: request_response::Behaviour::with_codec(
                Codec,
                [(PROTOCOL, ProtocolSupport::Full)],
                rr,
            ),
            replay: ReplayGuard::new(config.replay, mesh_core::PROTOCOL_VERSION),
            keepalive: Keepalive::new(config.keepalive_failures),
            addresses: HashMap::new(),
            tick: futures_timer::Delay::new(Duration::ZERO),
            governor: Governor::new(config.governor),
            key,
            config,
            states: HashMap::new(),
            events: VecDeque::new(),
            close_after: HashMap::new(),
            own_caps: None,
        }
    }

    /// The established session with `peer`.
    pub fn session(&self, peer: &PeerId) -> Option<&Session> {
        match self.states.get(peer) {
            Some(State::Established(s)) => Some(s),
            _ => None,
        }
    }

    /// The capabilities `node` proved, if a session with it is established.
    pub fn capabilities_of(&self, node: &NodeId) -> Option<&[String]> {
        self.states.values().find_map(|s| match s {
            State::Established(s) if s.node == *node => Some(s.capabilities.as_slice()),
            _ => None,
        })
    }

    /// Makes `node` a peer the governor keeps connected (dialed at `addrs`, redialed with
    /// backoff after a disconnect).
    pub fn add_peer(&mut self, node: NodeId, addrs: Vec<Multiaddr>) {
        if let Ok(peer) = node.to_peer_id() {
            self.addresses.entry(peer).or_default().extend(addrs);
            self.governor.add_known(node);
        }
    }

    fn run_governor(&mut self) {
        let now = self.now();
        for action in self.governor.tick(&now) {
            match action {
                crate::governor::Action::Dial(node) => {
                    if let Ok(peer) = node.to_peer_id() {
                        let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                            .condition(
                                libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing,
                            )
                            .build();
                        self.events.push_back(ToSwarm::Dial { opts });
                    }
                }
                crate::governor::Action::Disconnect(node) => {
                    if let Ok(peer) = node.to_peer_id() {
                        self.close(peer);
                    }
                }
            }
        }
    }

    /// Feeds one result of libp2p ping (compose `libp2p::ping::Behaviour` beside this
    /// one and hand it every `ping::Event`). Emits `KeepaliveLost`/`KeepaliveRestored`
    /// with their traces and tells the governor.
    pub fn on_ping(&mut self, event: &libp2p::ping::Event) {
        let peer = event.peer;
        let Some(change) = self.keepalive.record(peer, event.result.is_ok()) else {
            return;
        };
        let node = NodeId::from_peer_id(&peer).ok();
        match change {
            Change::Lost => {
                if let Some(n) = node {
                    self.governor.keepalive_lost(&n);
                }
                self.trace(TraceEventType::KeepaliveLost, &peer, None);
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::KeepaliveLost { peer }));
            }
            Change::Restored => {
                if let Some(n) = node {
                    self.governor.keepalive_restored(&n);
                }
                self.trace(TraceEventType::KeepaliveRestored, &peer, None);
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::KeepaliveRestored { peer }));
            }
        }
    }

    /// The governor.
    pub fn governor(&self) -> &Governor {
        &self.governor
    }

    fn now(&self) -> Timestamp {
        (self.config.clock)()
    }

    fn trace(&self, kind: TraceEventType, peer: &PeerId, detail: Option<serde_json::Value>) {
        let mut e = TraceEvent::new(kind, self.key.node_id(), self.now()).with_peer(peer);
        if let Some(d) = detail {
            e = e.with_detail(d);
        }
        self.config.trace.emit(&e);
    }

    fn params(&self) -> HandshakeParams<'_> {
        HandshakeParams {
            offered: &[],
            transport: "tcp",
            intent: "peer-connect",
        }
    }

    /// The node's capability advertisement, built once and reused while its passports
    /// have more than half their lifetime left.
    fn own_capabilities(&mut self, now: &Timestamp) -> Result<CapabilityAdvertisement, MeshError> {
        if let Some((cbor, built)) = &self.own_caps
            && now.secs_since(built) < self.config.passport_ttl_secs / 2
        {
            return CapabilityAdvertisement::from_cbor(cbor);
        }
        let caps: Vec<&str> = self
            .config
            .capabilities
            .iter()
            .map(String::as_str)
            .collect();
        let transports: Vec<&str> = self.config.transports.iter().map(String::as_str).collect();
        let ad = build_capabilities(
            &self.key,
            &caps,
            &transports,
            now,
            self.config.passport_ttl_secs,
        )?;
        self.own_caps = Some((ad.to_cbor(), now.clone()));
        Ok(ad)
    }

    fn start(&mut self, peer: PeerId) {
        let now = self.now();
        let Ok(node) = NodeId::from_peer_id(&peer) else {
            return; // not an Ed25519 peer: not a libmesh node
        };
        if self.governor.allow_handshake(&node, &now).is_err() {
            return;
        }
        let eph = EphemeralKey::generate();
        let built = build_hello(&self.key, &eph, node, &self.params(), &now)
            .and_then(|h| Ok((h, self.own_capabilities(&now)?)));
        let (hello, caps) = match built {
            Ok(x) => x,
            Err(e) => return tracing::warn!(%e, "cannot build hello"),
        };
        if let Err(e) = self.replay.hello_sent(hello.handshake_id(), node, &now) {
            return tracing::warn!(%e, "hello not sent");
        }
        self.inner.send_request(
            &peer,
            Ok(Message::Hello(Box::new(hello.clone()), Box::new(caps))),
        );
        self.states.insert(
            peer,
            State::AwaitingAck {
                hello: Box::new(hello),
                eph,
            },
        );
        self.trace(TraceEventType::HandshakeStarted, &peer, None);
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::HandshakeStarted { peer }));
    }

    /// Verifies a handshake artifact from `peer`: signature, clock, signer = peer.
    fn check_handshake(
        &mut self,
        peer: &PeerId,
        hs: &PeerHandshake,
        now: &Timestamp,
    ) -> Result<NodeId, MeshError> {
        hs.verify_signature()?;
        hs.validate(now)?;
        let node = NodeId::from_peer_id(peer)
            .map_err(|e| MeshError::new(ErrorCode::SigUnknownSigner, e.to_string()))?;
        if hs.sender() != node {
            return Err(MeshError::new(
                ErrorCode::SigUnknownSigner,
                "sender/node-id is not the connection's peer",
            ));
        }
        if hs.recipient().is_some_and(|r| r != self.key.node_id()) {
            return Err(MeshError::invalid("recipient/node-id is another node"));
        }
        Ok(node)
    }

    /// Verifies the peer's capability advertisement and returns what it proved.
    fn check_capabilities(
        &self,
        node: &NodeId,
        ad: &CapabilityAdvertisement,
        now: &Timestamp,
    ) -> Result<Vec<String>, MeshError> {
        ad.verify_signature()?;
        ad.validate(now)?;
        accept_capabilities(ad, node, now)
    }

    fn establish(&mut self, peer: PeerId, session: Session) {
        let now = self.now();
        let (node, capabilities) = (session.node, session.capabilities.clone());
        self.trace(
            TraceEventType::CapabilityExchanged,
            &peer,
            Some(json!({"capabilities": capabilities})),
        );
        self.states.insert(peer, State::Established(session));
        for action in self.governor.session_established(node, &now) {
            if let crate::governor::Action::Disconnect(_) = action {
                self.close(peer);
            }
        }
        self.trace(TraceEventType::SessionEstablished, &peer, None);
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::SessionEstablished {
                peer,
                node,
                capabilities,
            }));
    }

    fn on_hello(
        &mut self,
        peer: PeerId,
        hello: &PeerHandshake,
        caps: &CapabilityAdvertisement,
    ) -> Result<Message, MeshError> {
        let now = self.now();
        if hello.mode() != HandshakeMode::Hello {
            return Err(MeshError::invalid("expected a hello"));
        }
        let node = self.check_handshake(&peer, hello, &now)?;
        self.governor
            .allow_handshake(&node, &now)
            .map_err(|c| MeshError::new(c, "handshake refused: blocked or over the rate limit"))?;
        self.replay.check_incoming(hello, &now)?;
        let capabilities = self.check_capabilities(&node, caps, &now)?;
        let eph = EphemeralKey::generate();
        let ack = build_ack(&self.key, &eph, hello, &self.params(), &now)?;
        let t = Transcript {
            hello_id: hello.handshake_id(),
            ack_id: ack.handshake_id(),
            initiator: node,
            responder: self.key.node_id(),
        };
        let secret = derive(
            Role::Responder,
            &self.key,
            &eph,
            &parse_session_pub(hello.session_pub())?,
            &t,
        )?;
        let own = self.own_capabilities(&now)?;
        self.trace(TraceEventType::HandshakeAccepted, &peer, None);
        let session = Session {
            node,
            capabilities,
            secret: Arc::new(secret),
            role: Role::Responder,
            established_at: now,
        };
        self.establish(peer, session);
        Ok(Message::Ack(Box::new(ack), Box::new(own)))
    }

    fn on_ack(
        &mut self,
        peer: PeerId,
        ack: &PeerHandshake,
        caps: &CapabilityAdvertisement,
    ) -> Result<(), MeshError> {
        let now = self.now();
        if ack.mode() != HandshakeMode::Ack {
            return Err(MeshError::invalid("expected an ack"));
        }
        let node = self.check_handshake(&peer, ack, &now)?;
        self.replay.check_incoming(ack, &now)?;
        let Some(State::AwaitingAck { hello, eph }) = self.states.remove(&peer) else {
            return Err(MeshError::new(
                ErrorCode::HsUnknownRef,
                "no hello pending for this peer",
            ));
        };
        let t = Transcript {
            hello_id: hello.handshake_id(),
            ack_id: ack.handshake_id(),
            initiator: self.key.node_id(),
            responder: node,
        };
        let secret = derive(
            Role::Initiator,
            &self.key,
            &eph,
            &parse_session_pub(ack.session_pub())?,
            &t,
        )?;
        self.trace(TraceEventType::HandshakeAccepted, &peer, None);
        let capabilities = self.check_capabilities(&node, caps, &now)?;
        let session = Session {
            node,
            capabilities,
            secret: Arc::new(secret),
            role: Role::Initiator,
            established_at: now,
        };
        self.establish(peer, session);
        Ok(())
    }

    /// Records a refusal. A hard one (ours) closes the connection: at once, or, when it
    /// answers `request`, right after the coded answer has been sent.
    fn reject(
        &mut self,
        peer: PeerId,
        error: MeshError,
        by_peer: bool,
        request: Option<request_response::InboundRequestId>,
    ) {
        let hard = !by_peer && is_hard(error.code);
        let now = self.now();
        self.trace(
            TraceEventType::HandshakeRejected,
            &peer,
            Some(error.to_json()),
        );
        self.config
            .trace
            .emit(&TraceEvent::error(&error, self.key.node_id(), now.clone()).with_peer(peer));
        if hard {
            if let Ok(node) = NodeId::from_peer_id(&peer) {
                self.governor.hard_failure(node, error.code, &now);
            }
            self.states.remove(&peer);
            match request {
                Some(id) => {
                    self.close_after.insert(id, peer);
                }
                None => self.close(peer),
            }
        }
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::Rejected {
                peer,
                error,
                hard,
                by_peer,
            }));
    }

    fn close(&mut self, peer: PeerId) {
        self.events.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: CloseConnection::All,
        });
    }

    fn handle(&mut self, event: request_response::Event<Inbound, Inbound>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                let reply = match request {
                    Ok(Message::Hello(h, c)) => self.on_hello(peer, &h, &c),
                    Ok(_) => Err(MeshError::invalid("not a request message")),
                    Err(e) => Err(e),
                };
                let response = match reply {
                    Ok(m) => m,
                    Err(e) => {
                        self.reject(peer, e.clone(), false, Some(request_id));
                        Message::Rejected(e)
                    }
                };
                let _ = self.inner.send_response(channel, Ok(response));
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                let result = match response {
                    Ok(Message::Ack(a, c)) => self.on_ack(peer, &a, &c),
                    Ok(Message::Rejected(e)) => return self.reject(peer, e, true, None),
                    Ok(Message::Hello(..)) => Err(MeshError::invalid("a hello is not a response")),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    self.reject(peer, e, false, None);
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "session request failed");
                self.states.remove(&peer);
            }
            request_response::Event::ResponseSent { request_id, .. }
            | request_response::Event::InboundFailure { request_id, .. } => {
                if let Some(peer) = self.close_after.remove(&request_id) {
                    self.close(peer);
                }
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler =
        <request_response::Behaviour<Codec> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = Event;

    mesh_core::delegate_to_inner!(inner);

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addrs: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut extra = self
            .inner
            .handle_pending_outbound_connection(id, peer, addrs, role)?;
        if let Some(known) = peer.and_then(|p| self.addresses.get(&p)) {
            extra.extend(known.iter().cloned());
        }
        Ok(extra)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(e)
                if e.other_established == 0 && e.endpoint.is_dialer() =>
            {
                self.start(e.peer_id);
            }
            FromSwarm::DialFailure(e) => {
                if let Some(node) = e.peer_id.and_then(|p| NodeId::from_peer_id(&p).ok()) {
                    self.governor
                        .dial_failed(&node, &e.error.to_string(), &self.now());
                }
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.keepalive.remove(&e.peer_id);
                if !matches!(self.states.get(&e.peer_id), Some(State::Established(_)))
                    && let Ok(node) = NodeId::from_peer_id(&e.peer_id)
                {
                    // Closed before a session came up: a failed attempt.
                    self.states.remove(&e.peer_id);
                    self.governor.session_closed(&node, &self.now());
                }
                if let Some(State::Established(s)) = self.states.remove(&e.peer_id) {
                    self.governor.session_closed(&s.node, &self.now());
                    self.events
                        .push_back(ToSwarm::GenerateEvent(Event::SessionClosed {
                            peer: e.peer_id,
                            node: s.node,
                        }));
                }
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if std::pin::Pin::new(&mut self.tick).poll(cx).is_ready() {
            self.tick.reset(self.config.tick_interval);
            // Poll again so the new deadline is registered with the waker.
            let _ = std::pin::Pin::new(&mut self.tick).poll(cx);
            self.run_governor();
        }
        loop {
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(e);
            }
            match self.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ToSwarm::GenerateEvent(e)) => self.handle(e),
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent handled above")),
                    );
                }
            }
        }
    }
}
