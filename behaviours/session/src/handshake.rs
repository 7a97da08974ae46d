//! The session handshake as a state machine: connections and messages in, [`Output`]s
//! out. It holds no swarm: every input names the peer and carries `now`, and the
//! caller (the [`crate::Behaviour`], or a test) carries out what comes out — sends a
//! hello, answers a request with the returned [`Reply`], closes connections, hands
//! events to the application. The peer [`Governor`] is passed in where it decides
//! (blocking, rate limits, room for another session) or is told (sessions up and down,
//! hard failures).
//!
//! The dialer sends a signed hello with its capability advertisement, the listener
//! answers a signed ack with its own, and both derive the session secret: one request
//! round after the connection. The node's own advertisement (with its signed passports)
//! is built when the machine is created and reused, in its wire form, until half its
//! passports' lifetime has passed.
//!
//! The critical path of a handshake is kept short: each received artifact set (hello
//! or ack, the capability advertisement and its passports) is verified in one pass
//! (`verify_all_strict`; item by item with codes only when it fails, to name the
//! culprit); the hello to a peer dialed by id, the spare ephemeral key and the Diffie-Hellman term
//! that needs only this side's ephemeral key and the peer's identity are computed
//! ahead, in [`Handshakes::work`], while the network is busy; the responder answers its
//! ack first and derives the secret in a later [`Handshakes::work`], while the ack
//! travels (it checks before answering that the hello's `session/pub` is not of small
//! order, so the derivation cannot fail). Its `SessionEstablished` still comes only
//! with the secret.
//!
//! Hard rejections (a bad signature, a signer other than the connection's peer, a
//! replay) close the connection and count towards blocking the peer; other bad input is
//! answered with its code and leaves the connection (and any session on it) alone.
//!
//! Every hello and ack carries the `transport/profile` of the connection it runs on
//! (framing, outside the signing input, so a hello built ahead over a guessed transport
//! is re-framed, not re-signed, when the guess was wrong).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use libp2p::PeerId;
use mesh_core::{
    CapabilityAdvertisement, ErrorCode, HandshakeMode, MeshError, NodeId, NodeKeypair,
    PeerHandshake, Timestamp, TraceEvent, TraceEventType, TraceSink,
};
use serde_json::{Value, json};

use crate::ahead::{Ahead, Job};
use crate::artifacts::{unproven, verify_set};
use crate::config::Config;
use crate::event::{Event, Session};
use crate::governor::{Action, Governor};
use crate::own::Own;
use crate::protocol::{Inbound, Message, encode};
use crate::replay::ReplayGuard;
use crate::room;
use crate::secret::{
    IdentityTerm, Role, SessionSecret, Transcript, derive_with, is_small_order, parse_session_pub,
};
use crate::transport::TransportProfile;

mod output;
use mesh_core::families::CORE_MESSAGING;
pub use output::{Output, Reply};
mod state;
use state::{Deriving, State, is_hard};

/// The handshakes of one node with all its peers.
pub struct Handshakes {
    /// The node's key and its own artifacts.
    own: Own,
    trace: Arc<dyn TraceSink>,
    replay: ReplayGuard,
    states: HashMap<PeerId, State>,
    /// Responders whose ack is on its way and whose secret is derived next.
    deriving: VecDeque<Deriving>,
    ahead: Ahead,
    /// Peers with at least one connection, and the transport of the first.
    connected: HashMap<PeerId, TransportProfile>,
    /// The networks of peers that dialed us (see [`room`]).
    networks: room::Networks,
    out: VecDeque<Output>,
}

impl Handshakes {
    /// The handshakes of the node `key`, with `config`'s capabilities, transports,
    /// passport lifetime, replay settings and trace sink. The node's capability
    /// advertisement is built now, not on the first connection's critical path.
    pub fn new(key: NodeKeypair, config: &Config, now: &Timestamp) -> Self {
        let mut h = Handshakes {
            replay: ReplayGuard::new(config.replay, mesh_core::PROTOCOL_VERSION),
            own: Own::new(key, config),
            trace: config.trace.clone(),
            states: HashMap::new(),
            deriving: VecDeque::new(),
            ahead: Ahead::new(),
            connected: HashMap::new(),
            networks: room::Networks::default(),
            out: VecDeque::new(),
        };
        if let Err(e) = h.own.capabilities(now) {
            tracing::warn!(%e, "cannot build the capability advertisement");
        }
        h
    }

    /// The next thing to carry out.
    pub fn next_output(&mut self) -> Option<Output> {
        self.out.pop_front()
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

    /// Whether `peer` has a connection.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains_key(peer)
    }

    /// Whether a hello to `peer` is unanswered or a session with it is established.
    pub fn is_engaged(&self, peer: &PeerId) -> bool {
        self.states.contains_key(peer)
    }

    /// `peer` is being dialed over (probably) `transport`: its hello is built ahead, in
    /// a later [`Self::work`], unless it is connected already.
    pub fn dialing(&mut self, peer: PeerId, transport: TransportProfile) {
        if !self.connected.contains_key(&peer) {
            self.ahead.dialing(peer, transport);
        }
    }

    /// The dial of `peer` failed: the hello built for it is dropped.
    pub fn dial_failed(&mut self, peer: &PeerId) {
        self.ahead.dial_failed(peer);
    }

    /// The first connection to `peer` is up, over `transport`. The dialer sends its hello
    /// (when it cannot, the governor counts a failed dial); the listener computes its
    /// key and term ahead, in a later [`Self::work`].
    pub fn connected(
        &mut self,
        peer: PeerId,
        dialer: bool,
        transport: TransportProfile,
        gov: &mut Governor,
        now: &Timestamp,
    ) {
        self.connected.insert(peer, transport);
        if !dialer {
            self.ahead.responder_term(peer);
        } else if !self.start(peer, gov, now)
            && let Ok(node) = NodeId::from_peer_id(&peer)
        {
            // A dial of the governor's (or anyone's) without a handshake: the governor
            // tries again after its backoff.
            gov.dial_failed(&node, "no handshake", now);
        }
    }

    /// The last connection to `peer` closed: a session on it ends (`SessionClosed`),
    /// a handshake under way counts as a failed attempt.
    pub fn disconnected(&mut self, peer: &PeerId, gov: &mut Governor, now: &Timestamp) {
        self.connected.remove(peer);
        self.networks.forget(peer);
        self.ahead.disconnected(peer);
        // A session whose connection is gone is not established.
        self.deriving.retain(|d| d.peer != *peer);
        match self.states.remove(peer) {
            Some(State::Established(s)) => {
                gov.session_closed(&s.node, now);
                self.out.push_back(Output::Event(Event::SessionClosed {
                    peer: *peer,
                    node: s.node,
                }));
            }
            // Closed before a session came up: a failed attempt.
            _ => {
                if let Ok(node) = NodeId::from_peer_id(peer) {
                    gov.session_closed(&node, now);
                }
            }
        }
    }

    /// Sends a hello to `peer` over its connection; `false` when none was sent (not a
    /// libmesh peer, blocked, over the handshake rate, no room for another session, or
    /// it could not be built).
    pub fn start(&mut self, peer: PeerId, gov: &mut Governor, now: &Timestamp) -> bool {
        let Ok(node) = NodeId::from_peer_id(&peer) else {
            return false; // not an Ed25519 peer: not a libmesh node
        };
        if gov.allow_handshake(&node, now).is_err() {
            return false;
        }
        if !room::may_start(gov, &node, self.pending_sessions()) {
            tracing::debug!(%peer, "no room for another session; the connection stays without one");
            return false;
        }
        let transport = self
            .connected
            .get(&peer)
            .copied()
            .unwrap_or(TransportProfile::Tcp);
        let ready = self
            .ahead
            .take_prebuilt(&peer, now)
            .and_then(|p| self.own.reframe(p, transport, now));
        let (hello, bytes, eph, term) = match ready {
            Some(p) => (p.hello, p.bytes, p.eph, Some(p.term)),
            None => {
                let eph = self.ahead.ephemeral();
                match self.own.hello(&eph, node, transport, now) {
                    Ok((h, bytes)) => (Box::new(h), bytes, eph, None),
                    Err(e) => {
                        tracing::warn!(%e, "cannot build hello");
                        return false;
                    }
                }
            }
        };
        if let Err(e) = self.replay.hello_sent(hello.handshake_id(), node, now) {
            tracing::warn!(%e, "hello not sent");
            return false;
        }
        self.out.push_back(Output::Send { peer, bytes });
        if term.is_none() {
            self.ahead.initiator_term(peer);
        }
        self.states.insert(
            peer,
            State::AwaitingAck {
                hello,
                eph,
                term,
                transport,
            },
        );
        self.trace(TraceEventType::HandshakeStarted, &peer, None, now);
        self.out
            .push_back(Output::Event(Event::HandshakeStarted { peer }));
        true
    }

    /// A request from `peer` over a connection on `transport`: a hello is answered with
    /// an ack, anything else with a refusal.
    pub fn on_request(
        &mut self,
        peer: PeerId,
        transport: TransportProfile,
        request: Inbound,
        gov: &mut Governor,
        now: &Timestamp,
    ) -> Reply {
        let answer = match request {
            Ok(Message::Hello(h, c)) => self.on_hello(peer, transport, &h, &c, gov, now),
            Ok(_) => Err(MeshError::invalid("not a request message")),
            Err(e) => Err(e),
        };
        match answer {
            Ok(bytes) => Reply {
                bytes,
                close_after: false,
            },
            Err(e) => {
                let bytes = encode(&Message::Rejected(e.clone()));
                let close_after = self.reject(peer, e, false, true, gov, now);
                Reply { bytes, close_after }
            }
        }
    }

    /// The response of `peer` to our hello.
    pub fn on_response(
        &mut self,
        peer: PeerId,
        response: Inbound,
        gov: &mut Governor,
        now: &Timestamp,
    ) {
        let pending = matches!(self.states.get(&peer), Some(State::AwaitingAck { .. }));
        let result = match response {
            Ok(Message::Ack(a, c)) => self.on_ack(peer, &a, &c, gov, now),
            Ok(Message::Rejected(e)) => {
                self.reject(peer, e, true, false, gov, now);
                return;
            }
            Ok(Message::Hello(..)) => Err(MeshError::invalid("a hello is not a response")),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let code = e.code;
            self.reject(peer, e, false, false, gov, now);
            // Whatever came back, our attempt is over: left pending, it held a session
            // slot and the governor's dial for as long as the connection lasted.
            // (A hard refusal closes the connection, which ends the attempt.)
            if pending && !is_hard(code) {
                self.attempt_failed(&peer, code.as_str(), gov, now);
            }
        }
    }

    /// Our hello to `peer` got no response (timeout, closed stream, protocol not
    /// supported): the handshake is over, without a session; the governor retries
    /// after its backoff.
    pub fn on_request_failed(&mut self, peer: &PeerId, gov: &mut Governor, now: &Timestamp) {
        if matches!(self.states.get(peer), Some(State::AwaitingAck { .. })) {
            self.attempt_failed(peer, "no answer", gov, now);
        }
    }

    /// Our pending hello to `peer` ended without a session.
    fn attempt_failed(&mut self, peer: &PeerId, why: &str, gov: &mut Governor, now: &Timestamp) {
        if matches!(self.states.get(peer), Some(State::AwaitingAck { .. })) {
            self.states.remove(peer);
        }
        if let Ok(node) = NodeId::from_peer_id(peer) {
            gov.dial_failed(&node, why, now);
        }
    }

    /// Runs one piece of work that was put off so as not to delay a message: a
    /// responder's derivation, then a job done ahead (a hello for a peer being dialed, an
    /// identity term), then the spare key.
    /// `false` when none is left.
    pub fn work(&mut self, gov: &mut Governor, now: &Timestamp) -> bool {
        if let Some(d) = self.deriving.pop_front() {
            match self.derive_responder(&d) {
                Ok(secret) => self.establish_responder(d, secret, gov, now),
                // Not expected: the hello's key was checked before the ack went out.
                Err(e) => {
                    self.reject(d.peer, e, false, false, gov, now);
                }
            }
            return true;
        }
        if let Some(job) = self.ahead.next_job() {
            match job {
                Job::Hello(peer, transport) => self.prebuild(peer, transport, now),
                Job::InitiatorTerm(peer) => {
                    if let Some(State::AwaitingAck { eph, term, .. }) = self.states.get_mut(&peer)
                        && term.is_none()
                        && let Ok(node) = NodeId::from_peer_id(&peer)
                    {
                        *term = Some(IdentityTerm::compute(eph, node));
                    }
                }
                Job::ResponderTerm(peer) => {
                    if !self.ahead.is_prepared(&peer)
                        && let Ok(node) = NodeId::from_peer_id(&peer)
                    {
                        let eph = self.ahead.ephemeral();
                        let term = IdentityTerm::compute(&eph, node);
                        self.ahead.store_prepared(peer, eph, term);
                    }
                }
            }
            return true;
        }
        // The next handshake's key, once no handshake is under way (spare first: cheap).
        let idle = self.ahead.wants_spare()
            && self.deriving.is_empty()
            && self
                .states
                .values()
                .all(|s| matches!(s, State::Established(_)));
        idle && self.ahead.refill_spare()
    }

    /// The work put off (for tests).
    #[cfg(test)]
    pub(crate) fn ahead(&self) -> &Ahead {
        &self.ahead
    }

    /// Drops the hellos built ahead that are no longer fresh.
    pub fn expire(&mut self, now: &Timestamp) {
        self.ahead.expire(now);
    }

    /// `peer`'s first connection came from `net` (it dialed us).
    pub fn inbound_from(&mut self, peer: PeerId, net: mesh_core::IpKey) {
        self.networks.inbound(peer, net);
    }

    /// See [`room::Networks::inbound_relayed`] and [`room::Networks::direct`].
    pub fn networks_mut(&mut self) -> &mut room::Networks {
        &mut self.networks
    }

    /// The peers other than `peer` with a session or a handshake under way, and how many
    /// of those handshakes are pending ([`Self::pending_sessions`] without `peer`'s own:
    /// a crossed hello does not count against its sender).
    fn others_than(&self, peer: &PeerId) -> (HashSet<PeerId>, usize) {
        let awaiting = |s: &State| matches!(s, State::AwaitingAck { .. });
        let states = self.states.iter().filter(|(p, _)| *p != peer);
        let deriving = self.deriving.iter().filter(|d| d.peer != *peer);
        let pending =
            states.clone().filter(|(_, s)| awaiting(s)).count() + deriving.clone().count();
        let others = states
            .map(|(p, _)| *p)
            .chain(deriving.map(|d| d.peer))
            .collect();
        (others, pending)
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

    fn trace(&self, kind: TraceEventType, peer: &PeerId, detail: Option<Value>, now: &Timestamp) {
        crate::event::trace(&*self.trace, kind, self.own.node_id(), peer, detail, now);
    }

    /// Builds the hello (and its identity term) for `peer`, which is being dialed, so
    /// that it goes out as soon as the connection is up. Nothing is sent or recorded
    /// yet: [`Self::start`] does that, with all its checks.
    fn prebuild(&mut self, peer: PeerId, transport: TransportProfile, now: &Timestamp) {
        if self.connected.contains_key(&peer)
            || self.states.contains_key(&peer)
            || !self.ahead.may_prebuild(&peer)
        {
            return;
        }
        let Ok(node) = NodeId::from_peer_id(&peer) else {
            return;
        };
        let eph = self.ahead.ephemeral();
        match self.own.prebuild(eph, node, transport, now) {
            Ok(p) => self.ahead.store_prebuilt(peer, p),
            Err(e) => tracing::warn!(%e, "cannot build hello"),
        }
    }

    fn establish(&mut self, peer: PeerId, session: Session, gov: &mut Governor, now: &Timestamp) {
        let (node, capabilities) = (session.node, session.capabilities.clone());
        self.trace(
            TraceEventType::CapabilityExchanged,
            &peer,
            Some(json!({"capabilities": capabilities})),
            now,
        );
        self.states.insert(peer, State::Established(session));
        let network = self.networks.network(&peer);
        for action in gov.session_established_from(node, network, now) {
            if let Action::Disconnect(_) = action {
                self.out.push_back(Output::Close(peer));
            }
        }
        self.trace(TraceEventType::SessionEstablished, &peer, None, now);
        self.out.push_back(Output::Event(Event::SessionEstablished {
            peer,
            node,
            capabilities,
        }));
    }

    fn on_hello(
        &mut self,
        peer: PeerId,
        transport: TransportProfile,
        hello: &PeerHandshake,
        caps: &CapabilityAdvertisement,
        gov: &mut Governor,
        now: &Timestamp,
    ) -> Result<Vec<u8>, MeshError> {
        if hello.mode() != HandshakeMode::Hello {
            return Err(MeshError::invalid("expected a hello"));
        }
        // All that needs no signature first (a hello carries up to 34; ids are free):
        // addressing and the advertisement's node, the peer's rate (Noise proved the
        // peer), room, replay, the network's rate.
        let node = self.own.check_addressing(&peer, hello, Some(caps), now)?;
        let refused = |c| MeshError::new(c, "handshake refused: blocked or over the rate limit");
        gov.allow_handshake(&node, now).map_err(refused)?;
        let renewing = matches!(self.states.get(&peer), Some(State::Established(_)));
        if !renewing {
            // A soft refusal: the connection stays, without a session.
            let (others, pending) = self.others_than(&peer);
            room::admit(gov, &self.networks, (&peer, &node), pending, &others)?;
        }
        self.replay.screen(hello, now)?;
        gov.allow_network_hello(&node, self.networks.network(&peer), now)
            .map_err(refused)?;
        let verified = verify_set(hello, caps);
        self.own.check_handshake(&peer, hello, now, verified)?;
        self.replay.check_incoming(hello, now)?;
        let capabilities = self.own.check_capabilities(&node, caps, now, verified)?;
        let unproven = unproven(caps, &capabilities);
        let (eph, term) = match self.ahead.take_prepared(&peer, &node) {
            Some(ready) => ready,
            None => {
                let eph = self.ahead.ephemeral();
                let term = IdentityTerm::compute(&eph, node);
                (eph, term)
            }
        };
        let ack = self.own.ack(&eph, hello, transport, now)?;
        let hello_pub = parse_session_pub(hello.session_pub())?;
        let deriving = Deriving {
            peer,
            node,
            capabilities,
            unproven,
            eph,
            term,
            hello_pub,
            hello_id: hello.handshake_id().to_owned(),
            ack_id: ack.handshake_id().to_owned(),
            at: now.clone(),
            transport,
            peer_transport: TransportProfile::of_handshake(hello),
        };
        // Derive after the ack is sent, unless the derivation could fail: then now, so
        // that the failure is answered instead of the ack.
        let secret_now = if is_small_order(&hello_pub) || !deriving.term.is_ok() {
            Some(self.derive_responder(&deriving)?)
        } else {
            None
        };
        let bytes = self.own.ack_bytes(&ack, now)?;
        self.trace(TraceEventType::HandshakeAccepted, &peer, None, now);
        match secret_now {
            Some(secret) => self.establish_responder(deriving, secret, gov, now),
            None => self.deriving.push_back(deriving),
        }
        Ok(bytes)
    }

    fn derive_responder(&self, d: &Deriving) -> Result<SessionSecret, MeshError> {
        let t = Transcript {
            hello_id: &d.hello_id,
            ack_id: &d.ack_id,
            initiator: d.node,
            responder: self.own.node_id(),
        };
        derive_with(
            Role::Responder,
            self.own.key(),
            &d.eph,
            &d.term,
            &d.hello_pub,
            &t,
        )
    }

    fn establish_responder(
        &mut self,
        d: Deriving,
        secret: SessionSecret,
        gov: &mut Governor,
        now: &Timestamp,
    ) {
        let session = Session {
            node: d.node,
            capabilities: d.capabilities,
            unproven_capabilities: d.unproven,
            secret: Arc::new(secret),
            role: Role::Responder,
            established_at: d.at,
            transport: d.transport,
            peer_transport: d.peer_transport,
        };
        self.establish(d.peer, session, gov, now);
    }

    fn on_ack(
        &mut self,
        peer: PeerId,
        ack: &PeerHandshake,
        caps: &CapabilityAdvertisement,
        gov: &mut Governor,
        now: &Timestamp,
    ) -> Result<(), MeshError> {
        if ack.mode() != HandshakeMode::Ack {
            return Err(MeshError::invalid("expected an ack"));
        }
        let verified = verify_set(ack, caps);
        let node = self.own.check_handshake(&peer, ack, now, verified)?;
        self.replay.check_incoming(ack, now)?;
        // Only our pending hello is taken out (a session of the peer's own hello stays).
        let pending = matches!(self.states.get(&peer), Some(State::AwaitingAck { .. }));
        let Some(State::AwaitingAck {
            hello,
            eph,
            term,
            transport,
        }) = pending.then(|| self.states.remove(&peer)).flatten()
        else {
            return Err(MeshError::new(
                ErrorCode::HsUnknownRef,
                "no hello pending for this peer",
            ));
        };
        let t = Transcript {
            hello_id: hello.handshake_id(),
            ack_id: ack.handshake_id(),
            initiator: self.own.node_id(),
            responder: node,
        };
        let term = term
            .filter(|t| t.is_for(&node))
            .unwrap_or_else(|| IdentityTerm::compute(&eph, node));
        let secret = derive_with(
            Role::Initiator,
            self.own.key(),
            &eph,
            &term,
            &parse_session_pub(ack.session_pub())?,
            &t,
        )?;
        self.trace(TraceEventType::HandshakeAccepted, &peer, None, now);
        let capabilities = self.own.check_capabilities(&node, caps, now, verified)?;
        let session = Session {
            node,
            unproven_capabilities: unproven(caps, &capabilities),
            capabilities,
            secret: Arc::new(secret),
            role: Role::Initiator,
            established_at: now.clone(),
            transport,
            peer_transport: TransportProfile::of_handshake(ack),
        };
        self.establish(peer, session, gov, now);
        Ok(())
    }

    /// Records a refusal; returns whether it is hard (ours, closing the connection). A
    /// hard one closes the connection at once, or, when it is `answering` a request,
    /// leaves the close to the caller, after the coded answer has been sent.
    fn reject(
        &mut self,
        peer: PeerId,
        error: MeshError,
        by_peer: bool,
        answering: bool,
        gov: &mut Governor,
        now: &Timestamp,
    ) -> bool {
        let hard = !by_peer && is_hard(error.code);
        self.trace(
            TraceEventType::HandshakeRejected,
            &peer,
            Some(error.to_json()),
            now,
        );
        self.trace
            .emit(&TraceEvent::error(&error, self.own.node_id(), now.clone()).with_peer(peer));
        if by_peer && matches!(self.states.get(&peer), Some(State::AwaitingAck { .. })) {
            // Our hello was refused: no session on this connection; the governor retries
            // (a new hello on it, or a dial) after its backoff.
            self.states.remove(&peer);
            if let Ok(node) = NodeId::from_peer_id(&peer) {
                gov.dial_failed(&node, error.code.as_str(), now);
            }
        }
        if error.code == ErrorCode::ProtoCapMissing
            && !by_peer
            && let Ok(node) = NodeId::from_peer_id(&peer)
        {
            // The peer proved no `core/messaging`: its peer-status record says so.
            gov.capabilities_missing(&node, &[CORE_MESSAGING.to_owned()]);
        }
        if hard {
            if let Ok(node) = NodeId::from_peer_id(&peer) {
                gov.hard_failure(node, error.code, now);
            }
            self.states.remove(&peer);
            if !answering {
                self.out.push_back(Output::Close(peer));
            }
        }
        self.out.push_back(Output::Event(Event::Rejected {
            peer,
            error,
            hard,
            by_peer,
        }));
        hard
    }
}

#[cfg(test)]
mod tests; // with real signed artifacts
