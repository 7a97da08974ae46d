//! `/mesh/marker/1.0.0`: participant-signed `signal-marker-envelope.v1` messages, one per
//! stream, answered `{"kind": "accepted"}` or `{"kind": "rejected", "error/code", …}`.
//! The receiver rate-limits each peer and each network (the peers of one IPv4 address
//! or IPv6 /64 together: peer ids cost nothing, and each fresh sender takes a place in
//! the guard's table), verifies the envelope (signature by
//! `sender/participant-id`, schema, not from the future), then checks with its
//! [`guard::Guard`] that it is addressed to this node (`recipient/node-id`, signed),
//! recent (`created-at` at most `max_age_secs` old) and not taken before (the same
//! `message/id` from the same sender within that window), before accepting it.

pub mod guard;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::behaviour::ListenAddresses;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm,
};
use libp2p::{PeerId, StreamProtocol};
use mesh_core::artifact::Artifact;
use mesh_core::cbor::{self, DecodeLimits};
use mesh_core::{
    ErrorCode, MeshError, MeshResult, NodeId, NodeKeypair, RateLimit, RateLimiter,
    SignalMarkerEnvelope, Source, Timestamp, TraceEvent, TraceEventType, TraceSink, take_all,
};
use serde_json::{Map, Value, json};

use guard::{Guard, GuardConfig};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mesh/marker/1.0.0");

/// Builds and signs an envelope for `marker_ref` from the participant of `key`,
/// addressed to node `recipient` (its signed `recipient/node-id`: no other node takes
/// it).
pub fn envelope(
    key: &NodeKeypair,
    recipient: NodeId,
    message_id: &str,
    marker_ref: &str,
    now: &Timestamp,
) -> MeshResult<SignalMarkerEnvelope> {
    envelope_for(key, Some(recipient), message_id, marker_ref, now)
}

/// As [`envelope`], with the recipient optional: an envelope without one is a valid
/// artifact, but receivers with [`GuardConfig::require_recipient`] (the default)
/// refuse it.
pub fn envelope_for(
    key: &NodeKeypair,
    recipient: Option<NodeId>,
    message_id: &str,
    marker_ref: &str,
    now: &Timestamp,
) -> MeshResult<SignalMarkerEnvelope> {
    let mut doc = json!({
        "schema/v": 1,
        "message/id": message_id,
        "protocol/version": mesh_core::PROTOCOL_VERSION,
        "message/kind": "signal-marker-envelope.v1",
        "sender/participant-id": key.participant_id().to_string(),
        "created-at": now.as_str(),
        "marker/ref": marker_ref,
    });
    if let Some(r) = recipient {
        doc["recipient/node-id"] = r.to_string().into();
    }
    let Value::Object(map) = doc else {
        return Err(MeshError::invalid("envelope is not an object"));
    };
    SignalMarkerEnvelope::sign(map, key)
}

/// Configuration.
#[derive(Clone)]
pub struct Config {
    /// Envelopes accepted per peer.
    pub per_peer: RateLimit,
    /// Envelopes accepted from the peers of one network together (IPv4 address, IPv6
    /// /64; relayed peers and those of a node on loopback alone each count apart,
    /// [`Source::for_rates`]).
    pub per_network: RateLimit,
    /// Response timeout.
    pub request_timeout: Duration,
    /// Recipient, age and duplicate checks of received envelopes.
    pub guard: GuardConfig,
    /// Where trace events go (`signal-marker/sent`, `signal-marker/received`).
    pub trace: Arc<dyn TraceSink>,
    /// This node: it emits the traces, and received envelopes must be addressed to it.
    pub node: mesh_core::NodeId,
    /// The clock.
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// The byte budget that requests and answers being read take their buffers from
    /// ([`mesh_core::ReadBudget`]): share one among behaviours to cap them together, as
    /// the node does. Default: one of its own of [`mesh_core::DEFAULT_READ_BUDGET`] bytes.
    pub read_budget: mesh_core::ReadBudget,
}

impl Config {
    /// Defaults for `node`.
    pub fn new(node: mesh_core::NodeId) -> Self {
        Config {
            per_peer: RateLimit::per_minute(100, 600),
            per_network: RateLimit::per_minute(100, 120),
            request_timeout: Duration::from_secs(10),
            guard: GuardConfig::default(),
            trace: Arc::new(mesh_core::NoTrace),
            node,
            clock: Arc::new(Timestamp::now),
            read_budget: mesh_core::ReadBudget::default(),
        }
    }
}

/// Events.
#[derive(Debug)]
pub enum Event {
    /// A verified envelope from `peer`.
    Received {
        /// The peer that delivered it.
        peer: PeerId,
        /// The envelope.
        envelope: Box<SignalMarkerEnvelope>,
    },
    /// `peer` accepted our envelope.
    Sent {
        /// The peer.
        peer: PeerId,
        /// Its `message/id`.
        message_id: String,
    },
    /// Our envelope to `peer` did not get through (`by_peer` true: the peer refused it,
    /// the stream failed, or it was never sent because too many wait for the peer), or
    /// we refused theirs (`by_peer` false).
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: MeshError,
        /// The envelope was ours (refused by the peer, failed, or not sent), not theirs.
        by_peer: bool,
    },
}

/// Codec: envelope bytes one way, a small answer map the other (strict CBOR, capped).
///
/// Its reads take their buffers from the budget it holds.
#[derive(Debug, Clone, Default)]
pub struct Codec(pub mesh_core::ReadBudget);

const MAX: usize = mesh_core::MAX_ARTIFACT_BYTES;

/// Streams of `/mesh/marker/1.0.0` one connection may have open at once, ours and the
/// peer's together (a request is read whole, up to 64 KiB, before it is checked;
/// libp2p's default of 100 let one connection make the node hold 6.4 MiB of them).
pub const MAX_STREAMS: usize = 16;

/// Our envelopes in flight to one peer at once; the others wait in its queue, so that
/// our sends stay within the streams a connection takes.
pub const MAX_IN_FLIGHT: usize = 8;

/// Our envelopes waiting for one peer; a send beyond is refused
/// (`E_TRANSPORT_REJECTED`).
pub const MAX_QUEUED: usize = 256;

/// Our envelopes waiting for all peers together.
pub const MAX_QUEUED_TOTAL: usize = 4096;

async fn read_capped<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &mesh_core::ReadBudget,
) -> io::Result<Result<Vec<u8>, MeshError>> {
    Ok(mesh_core::read_capped(io, MAX, budget)
        .await?
        .ok_or_else(|| MeshError::invalid("envelope over the size cap")))
}

fn answer_bytes(a: &Result<(), MeshError>) -> Vec<u8> {
    let v = match a {
        Ok(()) => json!({"kind": "accepted"}),
        Err(e) => {
            let mut m = Map::new();
            m.insert("kind".into(), "rejected".into());
            if let Value::Object(err) = e.to_json() {
                m.extend(err);
            }
            Value::Object(m)
        }
    };
    cbor::encode(&v)
}

fn parse_answer(b: &[u8]) -> Result<(), MeshError> {
    let limits = DecodeLimits {
        max_bytes: 4096,
        ..DecodeLimits::default()
    };
    let v = cbor::decode_with(b, limits).map_err(MeshError::from)?;
    match v.get("kind").and_then(Value::as_str) {
        Some("accepted") => Ok(()),
        Some("rejected") => {
            let code = v
                .get("error/code")
                .and_then(Value::as_str)
                .and_then(ErrorCode::from_code_str)
                .unwrap_or(ErrorCode::ProtoInvalid);
            Err(MeshError::new(
                code,
                v.get("detail").and_then(Value::as_str).unwrap_or_default(),
            ))
        }
        _ => Err(MeshError::invalid("/mesh/marker: unknown answer")),
    }
}

impl request_response::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Result<Vec<u8>, MeshError>;
    type Response = Result<(), MeshError>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Request> {
        read_capped(io, &self.0).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response> {
        Ok(read_capped(io, &self.0)
            .await?
            .and_then(|b| parse_answer(&b)))
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Self::Request,
    ) -> io::Result<()> {
        let bytes = r.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        io.write_all(&bytes).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Self::Response,
    ) -> io::Result<()> {
        io.write_all(&answer_bytes(&r)).await
    }
}

/// The behaviour.
pub struct Behaviour {
    inner: request_response::Behaviour<Codec>,
    config: Config,
    limiter: RateLimiter<PeerId>,
    networks: RateLimiter<Source>,
    /// The remote addresses of each peer's connections, for its network.
    remotes: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    listening: ListenAddresses,
    guard: Guard,
    /// Our envelopes in flight: to whom, and their `message/id`.
    pending: HashMap<OutboundRequestId, (PeerId, String)>,
    in_flight: HashMap<PeerId, usize>,
    /// Our envelopes waiting for a peer's in-flight ones: bytes and `message/id`.
    queued: HashMap<PeerId, VecDeque<(Vec<u8>, String)>>,
    queued_total: usize,
    events: VecDeque<Event>,
}

impl Behaviour {
    /// A marker behaviour.
    pub fn new(config: Config) -> Self {
        Behaviour {
            inner: request_response::Behaviour::with_codec(
                Codec(config.read_budget.clone()),
                [(PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(config.request_timeout)
                    .with_max_concurrent_streams(MAX_STREAMS),
            ),
            limiter: RateLimiter::new(config.per_peer, 4096),
            networks: RateLimiter::new(config.per_network, 4096),
            remotes: HashMap::new(),
            listening: ListenAddresses::default(),
            guard: Guard::new(config.guard),
            config,
            pending: HashMap::new(),
            in_flight: HashMap::new(),
            queued: HashMap::new(),
            queued_total: 0,
            events: VecDeque::new(),
        }
    }

    /// Sends `envelope` to `peer`: at once while fewer than [`MAX_IN_FLIGHT`] of ours
    /// are in flight to it, else after them; refused ([`Event::Refused`],
    /// `E_TRANSPORT_REJECTED`) when [`MAX_QUEUED`] already wait for it, or
    /// [`MAX_QUEUED_TOTAL`] for all peers.
    pub fn send(&mut self, peer: &PeerId, envelope: &SignalMarkerEnvelope) {
        let (bytes, message_id) = (envelope.to_cbor(), envelope.message_id().to_owned());
        if self.in_flight.get(peer).copied().unwrap_or(0) < MAX_IN_FLIGHT {
            self.dispatch(*peer, bytes, message_id);
            return;
        }
        let queue = self.queued.entry(*peer).or_default();
        if queue.len() >= MAX_QUEUED || self.queued_total >= MAX_QUEUED_TOTAL {
            if queue.is_empty() {
                self.queued.remove(peer);
            }
            self.events.push_back(Event::Refused {
                peer: *peer,
                error: MeshError::new(
                    ErrorCode::TransportRejected,
                    format!("{message_id} not sent: too many envelopes wait for this peer"),
                ),
                by_peer: true,
            });
            return;
        }
        queue.push_back((bytes, message_id));
        self.queued_total += 1;
    }

    fn dispatch(&mut self, peer: PeerId, bytes: Vec<u8>, message_id: String) {
        let id = self.inner.send_request(&peer, Ok(bytes));
        self.pending.insert(id, (peer, message_id));
        *self.in_flight.entry(peer).or_default() += 1;
    }

    /// Our request `id` is over (answered or failed): its peer and `message/id`; the
    /// peer's next waiting envelope goes out.
    fn finished(&mut self, id: &OutboundRequestId) -> Option<(PeerId, String)> {
        let (peer, message_id) = self.pending.remove(id)?;
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&peer);
            }
        }
        let next = self.queued.get_mut(&peer).and_then(VecDeque::pop_front);
        if self.queued.get(&peer).is_some_and(VecDeque::is_empty) {
            self.queued.remove(&peer);
        }
        if let Some((bytes, next_id)) = next {
            self.queued_total = self.queued_total.saturating_sub(1);
            self.dispatch(peer, bytes, next_id);
        }
        Some((peer, message_id))
    }

    fn trace(&self, kind: TraceEventType, peer: &PeerId, detail: Value) {
        if !self.config.trace.enabled() {
            return;
        }
        let e = TraceEvent::new(kind, self.config.node, (self.config.clock)())
            .with_peer(peer)
            .with_detail(detail);
        self.config.trace.emit(&e);
    }

    fn receive(
        &mut self,
        peer: PeerId,
        bytes: Result<Vec<u8>, MeshError>,
    ) -> Result<(), MeshError> {
        let now = (self.config.clock)();
        let remotes = self
            .remotes
            .get(&peer)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let network =
            Source::for_rates_of(peer, remotes.iter().map(|(_, a)| a), self.listening.iter());
        take_all(
            now.instant().timestamp_millis(),
            &mut [
                &mut self.limiter.charge(&peer),
                &mut self.networks.charge(&network),
            ],
        )
        .map_err(|s| {
            MeshError::new(
                ErrorCode::TransportRejected,
                format!("too many envelopes; retry after {s} s"),
            )
        })?;
        let envelope = SignalMarkerEnvelope::verify_cbor(&bytes?, &now)?;
        self.guard.admit(&self.config.node, &envelope, &now)?;
        self.trace(
            TraceEventType::SignalMarkerReceived,
            &peer,
            json!({"message/id": envelope.message_id()}),
        );
        self.events.push_back(Event::Received {
            peer,
            envelope: Box::new(envelope),
        });
        Ok(())
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
        p: Option<PeerId>,
        a: &[Multiaddr],
        e: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(id, p, a, e)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.listening.on_swarm_event(&event);
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                let remote = e.endpoint.get_remote_address().clone();
                self.remotes
                    .entry(e.peer_id)
                    .or_default()
                    .push((e.connection_id, remote));
            }
            FromSwarm::ConnectionClosed(e) => {
                if let Some(list) = self.remotes.get_mut(&e.peer_id) {
                    list.retain(|(c, _)| *c != e.connection_id);
                    if list.is_empty() {
                        self.remotes.remove(&e.peer_id);
                    }
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
        loop {
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(e));
            }
            let event = match self.inner.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(ToSwarm::GenerateEvent(e)) => e,
                Poll::Ready(other) => {
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent handled above")),
                    );
                }
            };
            match event {
                request_response::Event::Message {
                    peer,
                    message:
                        request_response::Message::Request {
                            request, channel, ..
                        },
                    ..
                } => {
                    let answer = self.receive(peer, request);
                    if let Err(e) = &answer {
                        self.events.push_back(Event::Refused {
                            peer,
                            error: e.clone(),
                            by_peer: false,
                        });
                    }
                    let _ = self.inner.send_response(channel, answer);
                }
                request_response::Event::Message {
                    peer,
                    message:
                        request_response::Message::Response {
                            request_id,
                            response,
                        },
                    ..
                } => {
                    let Some((_, message_id)) = self.finished(&request_id) else {
                        continue;
                    };
                    match response {
                        Ok(()) => {
                            self.trace(
                                TraceEventType::SignalMarkerSent,
                                &peer,
                                json!({"message/id": message_id}),
                            );
                            self.events.push_back(Event::Sent { peer, message_id });
                        }
                        Err(error) => self.events.push_back(Event::Refused {
                            peer,
                            error,
                            by_peer: true,
                        }),
                    }
                }
                request_response::Event::OutboundFailure {
                    peer,
                    request_id,
                    error,
                    ..
                } => {
                    if self.finished(&request_id).is_some() {
                        let error =
                            MeshError::new(ErrorCode::TransportUnavailable, error.to_string());
                        self.events.push_back(Event::Refused {
                            peer,
                            error,
                            by_peer: true,
                        });
                    }
                }
                request_response::Event::InboundFailure { .. }
                | request_response::Event::ResponseSent { .. } => {}
            }
        }
    }
}
