//! The `/mesh/session/1.0.0` behaviour: on every connection the dialer sends a signed
//! hello with its capability advertisement, the listener answers a signed ack with its
//! own, and both derive the session secret: one request round after the connection.
//! The node's own advertisement (with its signed passports) is built when the behaviour
//! is created and reused, in its wire form, until half its passports' lifetime has passed.
//!
//! The critical path of a handshake is kept short:
//!
//! - each received artifact set (hello or ack, the capability advertisement and its
//!   passports) is verified with one batch verification; only when the batch fails are
//!   the signatures checked one by one, which names the culprit with its code;
//! - the hello to a peer dialed by id is built (and its identity term computed) while
//!   the connection is set up, and sent as soon as it is up if it is at most
//!   `PREBUILT_FRESH_SECS` old;
//! - a spare ephemeral key is kept ready, and the Diffie-Hellman term that needs only
//!   this side's ephemeral key and the peer's identity is computed ahead, while the
//!   network is busy: by the dialer once its hello is on its way, by the listener as soon
//!   as the connection is up;
//! - the responder sends its ack first and derives the secret while the ack travels;
//!   it checks before sending that the hello's `session/pub` is not of small order, so
//!   the derivation afterwards cannot fail. Its `SessionEstablished` still comes only
//!   with the secret.
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
    HandshakeParams, accept, build_ack, build_capabilities, build_hello, verify_set,
};
use crate::governor::{Governor, GovernorConfig};
use crate::keepalive::{Change, Keepalive};
use crate::protocol::{Codec, Frame, Message, PROTOCOL, encode, encode_with_caps};
use crate::replay::{ReplayConfig, ReplayGuard};
use crate::secret::{
    EphemeralKey, IdentityTerm, Role, SessionSecret, Transcript, derive_with, is_small_order,
    parse_session_pub,
};

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
        /// `eph` × the responder's identity, once computed.
        term: Option<IdentityTerm>,
    },
    /// Done.
    Established(Session),
}

/// A responder's session whose ack has been sent; the secret is derived next.
struct Deriving {
    peer: PeerId,
    node: NodeId,
    capabilities: Vec<String>,
    eph: EphemeralKey,
    term: IdentityTerm,
    hello_pub: [u8; 32],
    hello_id: String,
    ack_id: String,
    at: Timestamp,
}

/// A hello built for a peer while the connection to it is being set up.
struct Prebuilt {
    hello: Box<PeerHandshake>,
    /// Its wire form, with the capability advertisement.
    bytes: Vec<u8>,
    eph: EphemeralKey,
    /// `eph` × the peer's identity.
    term: IdentityTerm,
    built: Timestamp,
}

/// Hellos built ahead are used only this fresh (their `ts` must be within the
/// receiver's ±30 s).
const PREBUILT_FRESH_SECS: i64 = 5;
/// At most this many hellos wait for their connections.
const PREBUILT_MAX: usize = 64;

/// Work done when nothing else is ready.
enum Ahead {
    /// A hello for a peer being dialed, built while the connection is set up.
    Hello(PeerId),
    /// The dialer's identity term for the hello it sent to this peer.
    InitiatorTerm(PeerId),
    /// The listener's ephemeral key and identity term for a new inbound connection.
    ResponderTerm(PeerId),
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
    /// An ephemeral key generated ahead for the next handshake.
    spare: Option<EphemeralKey>,
    /// Listener side: the ephemeral key and identity term ready for a peer's hello.
    prepared: HashMap<PeerId, (EphemeralKey, IdentityTerm)>,
    /// Responders whose ack is on its way and whose secret is derived next.
    deriving: VecDeque<Deriving>,
    /// Terms to compute when idle.
    ahead: VecDeque<Ahead>,
    /// Peers with at least one connection.
    connected: std::collections::HashSet<PeerId>,
    /// Hellos built for peers being dialed.
    prebuilt: HashMap<PeerId, Prebuilt>,
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
        let mut b = Behaviour {
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
            spare: Some(EphemeralKey::generate()),
            prepared: HashMap::new(),
            deriving: VecDeque::new(),
            ahead: VecDeque::new(),
            connected: Default::default(),
            prebuilt: HashMap::new(),
        };
        // Built now, not on the first connection's critical path.
        let now = b.now();
        if let Err(e) = b.own_capabilities(&now) {
            tracing::warn!(%e, "cannot build the capability advertisement");
        }
        b
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
        self.prebuilt
            .retain(|_, p| now.secs_since(&p.built) < PREBUILT_FRESH_SECS);
        for action in self.governor.tick(&now) {
            match action {
                crate::governor::Action::Dial(node) => {
                    let Ok(peer) = node.to_peer_id() else {
                        continue;
                    };
                    if self.connected.contains(&peer) {
                        // Connected without a session (one was refused or had no room):
                        // the redial is a new hello on the connection there is.
                        if !self.states.contains_key(&peer) && !self.start(peer) {
                            self.governor.dial_failed(&node, "no handshake", &now);
                        }
                    } else {
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
        if !self.config.trace.enabled() {
            return;
        }
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

    /// The wire form of the node's capability advertisement, built once and reused while
    /// its passports have more than half their lifetime left.
    fn own_capabilities(&mut self, now: &Timestamp) -> Result<&[u8], MeshError> {
        let fresh = self
            .own_caps
            .as_ref()
            .is_some_and(|(_, built)| now.secs_since(built) < self.config.passport_ttl_secs / 2);
        if fresh {
            return Ok(self.own_caps.as_ref().map_or(&[], |(c, _)| c.as_slice()));
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
        Ok(&self.own_caps.insert((ad.to_cbor(), now.clone())).0)
    }

    /// A fresh ephemeral key: the one generated ahead, or a new one.
    fn ephemeral(&mut self) -> EphemeralKey {
        self.spare.take().unwrap_or_else(EphemeralKey::generate)
    }

    /// Runs one piece of work that was put off so as not to delay a message: a responder's
    /// derivation, then terms computed ahead, then the spare key. `false` when none is left.
    fn work_ahead(&mut self) -> bool {
        if let Some(d) = self.deriving.pop_front() {
            self.finish_responder(d);
            return true;
        }
        if let Some(job) = self.ahead.pop_front() {
            match job {
                Ahead::Hello(peer) => self.prebuild(peer),
                Ahead::InitiatorTerm(peer) => {
                    if let Some(State::AwaitingAck { eph, term, .. }) = self.states.get_mut(&peer)
                        && term.is_none()
                        && let Ok(node) = NodeId::from_peer_id(&peer)
                    {
                        *term = Some(IdentityTerm::compute(eph, node));
                    }
                }
                Ahead::ResponderTerm(peer) => {
                    if !self.prepared.contains_key(&peer)
                        && let Ok(node) = NodeId::from_peer_id(&peer)
                    {
                        let eph = self.ephemeral();
                        let term = IdentityTerm::compute(&eph, node);
                        self.prepared.insert(peer, (eph, term));
                    }
                }
            }
            return true;
        }
        // The next handshake's key, once no handshake is under way.
        let idle = self.deriving.is_empty()
            && self
                .states
                .values()
                .all(|s| matches!(s, State::Established(_)));
        if self.spare.is_none() && idle {
            self.spare = Some(EphemeralKey::generate());
            return true;
        }
        false
    }

    /// Handshakes under way: hellos sent and not answered, acks sent and not derived.
    /// Each may end in a session, so each holds a slot.
    fn pending_sessions(&self) -> usize {
        let awaiting = self
            .states
            .values()
            .filter(|s| matches!(s, State::AwaitingAck { .. }))
            .count();
        awaiting + self.deriving.len()
    }

    /// Sends the hello to `peer`; `false` when none was sent (blocked, over the
    /// handshake rate, no room for another session, or it could not be built).
    fn start(&mut self, peer: PeerId) -> bool {
        let now = self.now();
        let Ok(node) = NodeId::from_peer_id(&peer) else {
            return false; // not an Ed25519 peer: not a libmesh node
        };
        if self.governor.allow_handshake(&node, &now).is_err() {
            return false;
        }
        if !self.governor.has_room(self.pending_sessions()) {
            tracing::debug!(%peer, "no room for another session; the connection stays without one");
            return false;
        }
        let ready = self
            .prebuilt
            .remove(&peer)
            .filter(|p| now.secs_since(&p.built) < PREBUILT_FRESH_SECS);
        let (hello, bytes, eph, term) = match ready {
            Some(p) => (p.hello, p.bytes, p.eph, Some(p.term)),
            None => {
                let eph = self.ephemeral();
                match self.build_hello_bytes(&eph, node, &now) {
                    Ok((h, bytes)) => (Box::new(h), bytes, eph, None),
                    Err(e) => {
                        tracing::warn!(%e, "cannot build hello");
                        return false;
                    }
                }
            }
        };
        if let Err(e) = self.replay.hello_sent(hello.handshake_id(), node, &now) {
            tracing::warn!(%e, "hello not sent");
            return false;
        }
        self.inner.send_request(&peer, Frame::Out(bytes));
        if term.is_none() {
            self.ahead.push_back(Ahead::InitiatorTerm(peer));
        }
        self.states
            .insert(peer, State::AwaitingAck { hello, eph, term });
        self.trace(TraceEventType::HandshakeStarted, &peer, None);
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::HandshakeStarted { peer }));
        true
    }

    /// A signed hello to `node` and its wire form (with the capability advertisement).
    fn build_hello_bytes(
        &mut self,
        eph: &EphemeralKey,
        node: NodeId,
        now: &Timestamp,
    ) -> Result<(PeerHandshake, Vec<u8>), MeshError> {
        let hello = build_hello(&self.key, eph, node, &self.params(), now)?;
        let bytes = encode_with_caps(false, &hello, self.own_capabilities(now)?);
        Ok((hello, bytes))
    }

    /// Builds the hello (and its identity term) for `peer`, which is being dialed, so
    /// that it goes out as soon as the connection is up. Nothing is sent or recorded
    /// yet: [`Self::start`] does that, with all its checks.
    fn prebuild(&mut self, peer: PeerId) {
        if self.connected.contains(&peer)
            || self.states.contains_key(&peer)
            || self.prebuilt.contains_key(&peer)
            || self.prebuilt.len() >= PREBUILT_MAX
        {
            return;
        }
        let Ok(node) = NodeId::from_peer_id(&peer) else {
            return;
        };
        let now = self.now();
        let eph = self.ephemeral();
        match self.build_hello_bytes(&eph, node, &now) {
            Ok((hello, bytes)) => {
                let term = IdentityTerm::compute(&eph, node);
                self.prebuilt.insert(
                    peer,
                    Prebuilt {
                        hello: Box::new(hello),
                        bytes,
                        eph,
                        term,
                        built: now,
                    },
                );
            }
            Err(e) => tracing::warn!(%e, "cannot build hello"),
        }
    }

    /// Verifies a handshake artifact from `peer`: signature (unless `verified` by the
    /// batch), clock, signer = peer.
    fn check_handshake(
        &mut self,
        peer: &PeerId,
        hs: &PeerHandshake,
        now: &Timestamp,
        verified: bool,
    ) -> Result<NodeId, MeshError> {
        if !verified {
            hs.verify_signature()?;
        }
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

    /// Verifies the peer's capability advertisement and returns what it proved; with
    /// `verified`, its signatures (advertisement and passports) passed the batch.
    fn check_capabilities(
        &self,
        node: &NodeId,
        ad: &CapabilityAdvertisement,
        now: &Timestamp,
        verified: bool,
    ) -> Result<Vec<String>, MeshError> {
        if !verified {
            ad.verify_signature()?;
        }
        ad.validate(now)?;
        accept(ad, node, now, verified)
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
    ) -> Result<Frame, MeshError> {
        let now = self.now();
        if hello.mode() != HandshakeMode::Hello {
            return Err(MeshError::invalid("expected a hello"));
        }
        let verified = verify_set(hello, caps);
        let node = self.check_handshake(&peer, hello, &now, verified)?;
        self.governor
            .allow_handshake(&node, &now)
            .map_err(|c| MeshError::new(c, "handshake refused: blocked or over the rate limit"))?;
        let renewing = matches!(self.states.get(&peer), Some(State::Established(_)));
        if !renewing && !self.governor.has_room(self.pending_sessions()) {
            // A soft refusal: the connection stays, without a session.
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                "handshake refused: no room for another session",
            ));
        }
        self.replay.check_incoming(hello, &now)?;
        let capabilities = self.check_capabilities(&node, caps, &now, verified)?;
        let (eph, term) = match self.prepared.remove(&peer) {
            Some((eph, term)) if term.is_for(&node) => (eph, term),
            _ => {
                let eph = self.ephemeral();
                let term = IdentityTerm::compute(&eph, node);
                (eph, term)
            }
        };
        let ack = build_ack(&self.key, &eph, hello, &self.params(), &now)?;
        let hello_pub = parse_session_pub(hello.session_pub())?;
        let deriving = Deriving {
            peer,
            node,
            capabilities,
            eph,
            term,
            hello_pub,
            hello_id: hello.handshake_id().to_owned(),
            ack_id: ack.handshake_id().to_owned(),
            at: now.clone(),
        };
        // Derive after the ack is sent, unless the derivation could fail: then now, so
        // that the failure is answered instead of the ack.
        let secret_now = if is_small_order(&hello_pub) || !deriving.term.is_ok() {
            Some(self.derive_responder(&deriving)?)
        } else {
            None
        };
        let bytes = encode_with_caps(true, &ack, self.own_capabilities(&now)?);
        self.trace(TraceEventType::HandshakeAccepted, &peer, None);
        match secret_now {
            Some(secret) => self.establish_responder(deriving, secret),
            None => self.deriving.push_back(deriving),
        }
        Ok(Frame::Out(bytes))
    }

    fn derive_responder(&self, d: &Deriving) -> Result<SessionSecret, MeshError> {
        let t = Transcript {
            hello_id: &d.hello_id,
            ack_id: &d.ack_id,
            initiator: d.node,
            responder: self.key.node_id(),
        };
        derive_with(
            Role::Responder,
            &self.key,
            &d.eph,
            &d.term,
            &d.hello_pub,
            &t,
        )
    }

    fn establish_responder(&mut self, d: Deriving, secret: SessionSecret) {
        let session = Session {
            node: d.node,
            capabilities: d.capabilities,
            secret: Arc::new(secret),
            role: Role::Responder,
            established_at: d.at,
        };
        self.establish(d.peer, session);
    }

    /// Derives the secret of a responder whose ack has been sent, and establishes.
    fn finish_responder(&mut self, d: Deriving) {
        match self.derive_responder(&d) {
            Ok(secret) => self.establish_responder(d, secret),
            // Not expected: the hello's key was checked before the ack went out.
            Err(e) => self.reject(d.peer, e, false, None),
        }
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
        let verified = verify_set(ack, caps);
        let node = self.check_handshake(&peer, ack, &now, verified)?;
        self.replay.check_incoming(ack, &now)?;
        let Some(State::AwaitingAck { hello, eph, term }) = self.states.remove(&peer) else {
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
        let term = term
            .filter(|t| t.is_for(&node))
            .unwrap_or_else(|| IdentityTerm::compute(&eph, node));
        let secret = derive_with(
            Role::Initiator,
            &self.key,
            &eph,
            &term,
            &parse_session_pub(ack.session_pub())?,
            &t,
        )?;
        self.trace(TraceEventType::HandshakeAccepted, &peer, None);
        let capabilities = self.check_capabilities(&node, caps, &now, verified)?;
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
        if by_peer && matches!(self.states.get(&peer), Some(State::AwaitingAck { .. })) {
            // Our hello was refused: no session on this connection; the governor retries
            // (a new hello on it, or a dial) after its backoff.
            self.states.remove(&peer);
            if let Ok(node) = NodeId::from_peer_id(&peer) {
                self.governor.dial_failed(&node, error.code.as_str(), &now);
            }
        }
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

    fn handle(&mut self, event: request_response::Event<Frame, Frame>) {
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
                    Frame::In(Ok(Message::Hello(h, c))) => self.on_hello(peer, &h, &c),
                    Frame::In(Ok(_)) | Frame::Out(_) => {
                        Err(MeshError::invalid("not a request message"))
                    }
                    Frame::In(Err(e)) => Err(e),
                };
                let response = match reply {
                    Ok(m) => m,
                    Err(e) => {
                        self.reject(peer, e.clone(), false, Some(request_id));
                        Frame::Out(encode(&Message::Rejected(e)))
                    }
                };
                let _ = self.inner.send_response(channel, response);
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => {
                let result = match response {
                    Frame::In(Ok(Message::Ack(a, c))) => self.on_ack(peer, &a, &c),
                    Frame::In(Ok(Message::Rejected(e))) => return self.reject(peer, e, true, None),
                    Frame::In(Ok(Message::Hello(..))) | Frame::Out(_) => {
                        Err(MeshError::invalid("a hello is not a response"))
                    }
                    Frame::In(Err(e)) => Err(e),
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
        // The hello to a peer we dial by id is built while the connection is set up.
        if let Some(p) = peer
            && role == Endpoint::Dialer
            && !self.connected.contains(&p)
            && !self.prebuilt.contains_key(&p)
            && self.prebuilt.len() < PREBUILT_MAX
        {
            self.ahead.push_back(Ahead::Hello(p));
        }
        Ok(extra)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ConnectionEstablished(e)
                if e.other_established == 0 && e.endpoint.is_dialer() =>
            {
                self.connected.insert(e.peer_id);
                if !self.start(e.peer_id)
                    && let Ok(node) = NodeId::from_peer_id(&e.peer_id)
                {
                    // A dial of the governor's (or anyone's) without a handshake: the
                    // governor tries again after its backoff.
                    self.governor
                        .dial_failed(&node, "no handshake", &self.now());
                }
            }
            FromSwarm::ConnectionEstablished(e) if e.other_established == 0 => {
                self.connected.insert(e.peer_id);
                self.ahead.push_back(Ahead::ResponderTerm(e.peer_id));
            }
            FromSwarm::DialFailure(e) => {
                if let Some(p) = e.peer_id {
                    self.prebuilt.remove(&p);
                }
                if let Some(node) = e.peer_id.and_then(|p| NodeId::from_peer_id(&p).ok()) {
                    self.governor
                        .dial_failed(&node, &e.error.to_string(), &self.now());
                }
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
                self.keepalive.remove(&e.peer_id);
                self.prepared.remove(&e.peer_id);
                self.ahead.retain(|a| match a {
                    Ahead::InitiatorTerm(p) | Ahead::ResponderTerm(p) => *p != e.peer_id,
                    // A hello for a dial under way is still wanted.
                    Ahead::Hello(_) => true,
                });
                // A session whose connection is gone is not established.
                self.deriving.retain(|d| d.peer != e.peer_id);
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
                Poll::Pending => {
                    // Everything due has been handed to the swarm (an ack goes out before
                    // its sender derives): now the work that was put off.
                    if self.work_ahead() {
                        continue;
                    }
                    return Poll::Pending;
                }
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
