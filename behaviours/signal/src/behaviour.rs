//! `/mesh/signal/1.0.0`: signed frames between nodes, directly or through a signaling
//! host. Every receiver limits the frames each peer hands it ([`Config::per_peer`]),
//! verifies `from`'s signature (a host cannot forge or alter a frame), suppresses
//! duplicates (digests, until the frame expires, recorded only once a frame was taken),
//! and a host forwards a frame to `to` only when it is
//! connected to it, counting the hop (at most 2) and rate-limiting each sender. It
//! sweeps its correlation table itself, every [`Config::sweep_interval`] on its
//! [`Config::clock`]: requests and accepted correlations that took too long expire, and
//! finished ones are forgotten after their linger time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm};
use libp2p::{PeerId, StreamProtocol};
use mesh_core::{
    Artifact, ErrorCode, MeshError, MeshResult, NodeId, RateLimit, RateLimiter, SignalFrame,
    Source, Timestamp, take_all,
};

use crate::allowance::Allowance;
use crate::codec::{self, Answer, Codec, MAX_BATCH, MAX_REQUEST};
use crate::correlation::{Correlations, Limits, Transition};
use crate::dedup::{self, Seen};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mesh/signal/1.0.0");

/// Configuration.
#[derive(Clone)]
pub struct Config {
    /// This node.
    pub node: NodeId,
    /// Forward frames for others (the node offers `core/signaling`).
    pub host: bool,
    /// Frames a host forwards per sender (`from`).
    pub per_sender: RateLimit,
    /// `connect_request`s a host forwards to one recipient (`to`) from what one
    /// network's peers hand over (as [`Config::per_network`] counts them): each opens a
    /// correlation at the recipient, which keeps at most
    /// [`Limits::max_per_link`](crate::Limits) per delivering peer, this host included,
    /// so fresh signers of one network could take all of the host's places there. The
    /// default (64, then 16 a minute) lets one network hold at most 96 of the 128 within
    /// the two minutes a correlation lasts.
    pub requests_per_network: RateLimit,
    /// Frames taken from one connected peer (the signer or a host handing frames
    /// over), whoever signed them: beyond, `E_TRANSPORT_REJECTED` with the seconds to
    /// wait, before any signature is checked.
    pub per_peer: RateLimit,
    /// Frames taken from all the peers of one network together (an IPv4 address or
    /// IPv6 /64; a node listening on loopback alone counts its loopback peers each for
    /// itself), as for [`Config::per_peer`]: peer ids cost nothing, and each fresh one
    /// had a fresh allowance of frames to make the node verify.
    pub per_network: RateLimit,
    /// Frames remembered for duplicate suppression (a 16-byte digest each, kept until
    /// the frame expires; a full filter forgets the oldest of the network holding the
    /// most, see [`crate::dedup`]).
    pub dedup: usize,
    /// Correlation limits.
    pub limits: Limits,
    /// Response timeout.
    pub request_timeout: Duration,
    /// Forward only to peers marked with [`Behaviour::set_forwardable`] (a node
    /// forwards to its session peers, not to any connection).
    pub forward_marked_only: bool,
    /// Requests in flight to one peer at a time; frames sent or forwarded meanwhile wait
    /// and leave together as one batch (up to 64 frames) when an answer comes back.
    pub max_in_flight: usize,
    /// Frames waiting for one peer; beyond, `send` fails and a host refuses the frames
    /// it would forward there (`E_TRANSPORT_REJECTED`).
    pub max_queued: usize,
    /// Bytes of frames waiting for one peer, at most (frames are up to 64 KiB each, so
    /// `max_queued` alone would let one stalled hop hold 64 MiB); beyond, as for
    /// `max_queued`.
    pub max_queued_bytes: usize,
    /// The clock.
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// How often the correlation table is swept (expired steps, finished correlations
    /// past their linger time); at least [`MIN_SWEEP_INTERVAL`].
    pub sweep_interval: Duration,
    /// The byte budget that requests and answers being read take their buffers from
    /// ([`mesh_core::ReadBudget`]): share one among behaviours to cap them together, as
    /// the node does. Default: one of its own of [`mesh_core::DEFAULT_READ_BUDGET`] bytes.
    pub read_budget: mesh_core::ReadBudget,
}

/// The shortest [`Config::sweep_interval`] (a shorter one is taken as this).
pub const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(10);

impl Config {
    /// Defaults for `node` (not a host).
    pub fn new(node: NodeId) -> Self {
        Config {
            node,
            host: false,
            per_sender: RateLimit::per_minute(120, 240),
            requests_per_network: RateLimit::per_minute(64, 16),
            per_peer: RateLimit::per_minute(256, 600),
            per_network: RateLimit::per_minute(512, 1200),
            dedup: 8192,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(10),
            forward_marked_only: false,
            max_in_flight: 4,
            max_queued: 1024,
            max_queued_bytes: 1024 * 1024,
            clock: Arc::new(Timestamp::now),
            sweep_interval: Duration::from_secs(1),
            read_budget: mesh_core::ReadBudget::default(),
        }
    }

    fn sweep_every(&self) -> Duration {
        self.sweep_interval.max(MIN_SWEEP_INTERVAL)
    }
}

/// Events.
#[derive(Debug)]
pub enum Event {
    /// A verified frame for this node.
    Received {
        /// The peer that delivered it (`from` itself, or a host).
        via: PeerId,
        /// The frame.
        frame: Box<SignalFrame>,
        /// What it did to its correlation.
        transition: Transition,
    },
    /// This node, as a host, passed a frame on.
    Forwarded {
        /// The signer.
        from: NodeId,
        /// The recipient.
        to: NodeId,
        /// The frame's id.
        frame_id: String,
    },
    /// The next hop accepted one of our frames.
    Delivered {
        /// The peer it was sent to.
        peer: PeerId,
        /// The frame's id.
        frame_id: String,
    },
    /// A frame was refused: by the peer (`by_peer`) or by us.
    Refused {
        /// The peer.
        peer: PeerId,
        /// Our frame's id, when the peer refused one of ours.
        frame_id: Option<String>,
        /// Why.
        error: MeshError,
        /// The peer refused ours.
        by_peer: bool,
    },
}

/// The behaviour.
pub struct Behaviour {
    inner: request_response::Behaviour<Codec>,
    config: Config,
    correlations: Correlations,
    limiter: RateLimiter<NodeId>,
    /// Requests forwarded per (delivering network, recipient).
    requests: RateLimiter<(Source, NodeId)>,
    allowance: Allowance,
    seen: Seen,
    connected: HashSet<PeerId>,
    marked: HashSet<PeerId>,
    routes: HashMap<NodeId, PeerId>,
    out: HashMap<PeerId, Outgoing>,
    pending: HashMap<OutboundRequestId, (PeerId, Vec<String>)>,
    events: VecDeque<Event>,
    sweep: futures_timer::Delay,
}

/// Streams of `/mesh/signal/1.0.0` open at once on one connection, both ways (beyond,
/// request-response drops a new inbound stream at once). A request is read whole (up
/// to [`crate::codec::MAX_REQUEST`], 1 MiB) before it is checked, and libp2p's default of
/// 100 let one connection make the node hold 100 MiB of half-sent requests; a sender
/// keeps at most 4 requests in flight to a peer, so 16 leave room for both directions.
pub const MAX_STREAMS: usize = 16;

/// Frames waiting for one peer (wire bytes, frame id) and the requests in flight to it.
#[derive(Default)]
struct Outgoing {
    queue: VecDeque<(Vec<u8>, String)>,
    /// Bytes in `queue`.
    bytes: usize,
    in_flight: usize,
}

impl Behaviour {
    /// A behaviour with `config`.
    pub fn new(config: Config) -> Self {
        let rr = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(MAX_STREAMS);
        Behaviour {
            inner: request_response::Behaviour::with_codec(
                Codec(config.read_budget.clone()),
                [(PROTOCOL, ProtocolSupport::Full)],
                rr,
            ),
            correlations: Correlations::new(config.limits),
            limiter: RateLimiter::new(config.per_sender, 65_536),
            requests: RateLimiter::new(config.requests_per_network, 4096),
            allowance: Allowance::new(config.per_peer, config.per_network),
            seen: Seen::new(config.dedup),
            connected: HashSet::new(),
            marked: HashSet::new(),
            routes: HashMap::new(),
            out: HashMap::new(),
            pending: HashMap::new(),
            events: VecDeque::new(),
            sweep: futures_timer::Delay::new(config.sweep_every()),
            config,
        }
    }

    /// The correlation table.
    pub fn correlations(&self) -> &Correlations {
        &self.correlations
    }

    /// The correlation table, for the application's `done` when a correlation's
    /// connection is up. Sweeping is not the application's: the behaviour sweeps the
    /// table itself every [`Config::sweep_interval`].
    pub fn correlations_mut(&mut self) -> &mut Correlations {
        &mut self.correlations
    }

    /// Marks `peer` as one this host forwards to (with `forward_marked_only`), or
    /// unmarks it.
    pub fn set_forwardable(&mut self, peer: PeerId, yes: bool) {
        if yes {
            self.marked.insert(peer);
        } else {
            self.marked.remove(&peer);
        }
    }

    /// Whether this node is connected to `peer` (frames to it go directly).
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.contains(peer)
    }

    fn forwardable(&self, peer: &PeerId) -> bool {
        self.connected.contains(peer)
            && (!self.config.forward_marked_only || self.marked.contains(peer))
    }

    /// Tells a host that frames for `to` go on through the host `via` when this node
    /// is not connected to `to` itself (the second of at most two hosts).
    pub fn add_route(&mut self, to: NodeId, via: PeerId) {
        self.routes.insert(to, via);
    }

    /// Sends a frame this node signed: to `to` when connected to it, else through the
    /// host `via`.
    pub fn send(&mut self, frame: &SignalFrame, via: Option<PeerId>) -> MeshResult<()> {
        if frame.from() != self.config.node {
            return Err(MeshError::invalid(
                "signal-frame.v1: not signed by this node",
            ));
        }
        let to = frame
            .to()
            .to_peer_id()
            .map_err(|e| MeshError::invalid(e.to_string()))?;
        let target = if self.connected.contains(&to) {
            to
        } else {
            via.ok_or_else(|| {
                MeshError::new(
                    ErrorCode::TransportUnavailable,
                    "not connected to the recipient and no signaling host given",
                )
            })?
        };
        let bytes = frame.to_cbor();
        self.check_room(&target, bytes.len())?;
        let now = (self.config.clock)();
        self.correlations.on_frame(&self.config.node, frame, &now)?;
        self.enqueue(target, bytes, frame.frame_id().to_owned());
        Ok(())
    }

    /// `E_TRANSPORT_REJECTED` when `max_queued` frames already wait for `peer`, or a
    /// frame of `adding` bytes would take the queue past `max_queued_bytes`.
    fn check_room(&self, peer: &PeerId, adding: usize) -> MeshResult<()> {
        let Some(o) = self.out.get(peer) else {
            return Ok(());
        };
        if o.queue.len() >= self.config.max_queued {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!(
                    "{} frames already wait for the next hop",
                    self.config.max_queued
                ),
            ));
        }
        if o.bytes + adding > self.config.max_queued_bytes {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!(
                    "{} bytes already wait for the next hop (at most {})",
                    o.bytes, self.config.max_queued_bytes
                ),
            ));
        }
        Ok(())
    }

    fn enqueue(&mut self, peer: PeerId, bytes: Vec<u8>, frame_id: String) {
        let o = self.out.entry(peer).or_default();
        o.bytes += bytes.len();
        o.queue.push_back((bytes, frame_id));
        self.flush(peer);
    }

    /// Sends what waits for `peer` while fewer than `max_in_flight` requests are out:
    /// one frame as is, more as one batch.
    fn flush(&mut self, peer: PeerId) {
        let Some(o) = self.out.get_mut(&peer) else {
            return;
        };
        while o.in_flight < self.config.max_in_flight.max(1) && !o.queue.is_empty() {
            let mut size = 0;
            let mut take = 0;
            for (bytes, _) in o.queue.iter().take(MAX_BATCH) {
                if take > 0 && size + bytes.len() + 8 > MAX_REQUEST {
                    break;
                }
                size += bytes.len() + 8;
                take += 1;
            }
            let batch: Vec<(Vec<u8>, String)> = o.queue.drain(..take).collect();
            o.bytes = o.bytes.saturating_sub(size - 8 * take);
            let parts: Vec<&[u8]> = batch.iter().map(|(b, _)| b.as_slice()).collect();
            let id = self.inner.send_request(&peer, Ok(codec::join(&parts)));
            o.in_flight += 1;
            self.pending
                .insert(id, (peer, batch.into_iter().map(|(_, id)| id).collect()));
        }
        if o.queue.is_empty() && o.in_flight == 0 {
            self.out.remove(&peer);
        }
    }

    /// An answer (or a failure) came back for one of our requests.
    fn answered(&mut self, request_id: OutboundRequestId) -> Option<(PeerId, Vec<String>)> {
        let (peer, ids) = self.pending.remove(&request_id)?;
        if let Some(o) = self.out.get_mut(&peer) {
            o.in_flight = o.in_flight.saturating_sub(1);
        }
        self.flush(peer);
        Some((peer, ids))
    }

    fn receive(&mut self, peer: PeerId, bytes: Result<Vec<u8>, MeshError>) -> Answer {
        let now = (self.config.clock)();
        let items = match bytes
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|b| codec::split(b))
        {
            Ok(items) => items,
            Err(e) => return Answer::One(Err(e)),
        };
        let batch = items.len() > 1;
        // The peer's allowance first: frames beyond it are refused unread.
        let mut allowed: Vec<&[u8]> = Vec::with_capacity(items.len());
        let mut limited: Vec<Option<MeshError>> = Vec::with_capacity(items.len());
        for item in &items {
            match self.allowance.take(peer, &now) {
                Ok(()) => {
                    allowed.push(item);
                    limited.push(None);
                }
                Err(secs) => limited.push(Some(MeshError::new(
                    ErrorCode::TransportRejected,
                    format!("too many frames from this peer or its network; retry after {secs} s"),
                ))),
            }
        }
        let mut verified = crate::verify::verify(&allowed, &self.seen, &now).into_iter();
        let results: Vec<MeshResult<()>> = limited
            .into_iter()
            .map(|refused| match refused {
                Some(e) => Err(e),
                None => verified
                    .next()
                    .unwrap_or_else(|| Err(MeshError::invalid("signal-frame.v1: not verified")))
                    .and_then(|f| self.accept(peer, f, &now)),
            })
            .collect();
        if batch {
            Answer::Batch(results)
        } else {
            Answer::One(results.into_iter().next().unwrap_or(Ok(())))
        }
    }

    /// What happens to a verified frame: delivered here, or forwarded.
    fn accept(&mut self, peer: PeerId, frame: SignalFrame, now: &Timestamp) -> MeshResult<()> {
        if frame.to() == self.config.node {
            let digest = self.not_seen(&frame, now)?;
            let transition =
                self.correlations
                    .on_frame_via(&self.config.node, &frame, Some(peer), now)?;
            let source = self.allowance.source_of(peer);
            self.seen
                .insert(digest, frame.expires_at().clone(), source, now);
            self.events.push_back(Event::Received {
                via: peer,
                frame: Box::new(frame),
                transition,
            });
            return Ok(());
        }
        if !self.config.host {
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                "this node is not a signaling host",
            ));
        }
        let to = frame
            .to()
            .to_peer_id()
            .map_err(|e| MeshError::invalid(e.to_string()))?;
        let hop = if self.forwardable(&to) {
            to
        } else {
            match self.routes.get(&frame.to()) {
                Some(via) if self.forwardable(via) && *via != peer => *via,
                _ => {
                    return Err(MeshError::new(
                        ErrorCode::TransportUnavailable,
                        "the signaling host is not connected to the recipient",
                    ));
                }
            }
        };
        // A frame is remembered only once it is forwarded: refused for a full queue or
        // the sender's rate, it may come again (and "retry after" means it).
        // The sender's token is taken last, once nothing else refuses the frame: its
        // `hops` is not signed, so a replay of one of the sender's frames at the hop
        // limit, refused after the token was taken and never remembered, drained the
        // sender's allowance at this host copy after copy.
        self.check_room(&hop, 0)?;
        let digest = self.not_seen(&frame, now)?;
        let next = frame.forwarded()?.to_cbor();
        self.check_room(&hop, next.len())?;
        let ms = now.instant().timestamp_millis();
        let from = frame.from();
        let taken = if frame.kind() == "connect_request" {
            let key = (self.allowance.source_of(peer), frame.to());
            take_all(
                ms,
                &mut [
                    &mut self.limiter.charge(&from),
                    &mut self.requests.charge(&key),
                ],
            )
        } else {
            take_all(ms, &mut [&mut self.limiter.charge(&from)])
        };
        taken.map_err(|s| {
            MeshError::new(
                ErrorCode::TransportRejected,
                format!(
                    "too many frames from this sender, or requests from its network to \
                     this recipient; retry after {s} s"
                ),
            )
        })?;
        let source = self.allowance.source_of(peer);
        self.seen
            .insert(digest, frame.expires_at().clone(), source, now);
        let frame_id = frame.frame_id().to_owned();
        self.enqueue(hop, next, frame_id.clone());
        self.events.push_back(Event::Forwarded {
            from: frame.from(),
            to: frame.to(),
            frame_id,
        });
        Ok(())
    }

    /// `E_HS_REPLAY` for a frame taken before; its digest otherwise (recorded by the
    /// caller once the frame is taken).
    fn not_seen(&self, frame: &SignalFrame, now: &Timestamp) -> MeshResult<dedup::FrameDigest> {
        let digest = dedup::digest(&frame.from(), frame.frame_id());
        if !self.seen.contains(&digest, now) {
            Ok(digest)
        } else {
            Err(crate::verify::replayed(frame.frame_id()))
        }
    }

    fn refusals(&mut self, peer: PeerId, answer: &Answer) {
        let errors: Vec<&MeshError> = match answer {
            Answer::One(r) => r.as_ref().err().into_iter().collect(),
            Answer::Batch(rs) => rs.iter().filter_map(|r| r.as_ref().err()).collect(),
        };
        for e in errors {
            self.events.push_back(Event::Refused {
                peer,
                frame_id: None,
                error: e.clone(),
                by_peer: false,
            });
        }
    }

    fn respond(&mut self, channel: ResponseChannel<Answer>, answer: Answer) {
        let _ = self.inner.send_response(channel, answer);
    }

    fn handle(&mut self, event: request_response::Event<Result<Vec<u8>, MeshError>, Answer>) {
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
                self.refusals(peer, &answer);
                self.respond(channel, answer);
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
                let ids = self
                    .answered(request_id)
                    .map(|(_, ids)| ids)
                    .unwrap_or_default();
                let results = match response {
                    Answer::Batch(rs) if rs.len() == ids.len() => rs,
                    Answer::Batch(_) => vec![
                        Err(MeshError::invalid(
                            "/mesh/signal: answer does not match the batch"
                        ));
                        ids.len()
                    ],
                    Answer::One(r) => vec![r; ids.len().max(1)],
                };
                let ids = ids.into_iter().chain(std::iter::repeat(String::new()));
                for (r, frame_id) in results.into_iter().zip(ids) {
                    self.events.push_back(match r {
                        Ok(()) => Event::Delivered { peer, frame_id },
                        Err(error) => Event::Refused {
                            peer,
                            frame_id: (!frame_id.is_empty()).then_some(frame_id),
                            error,
                            by_peer: true,
                        },
                    });
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let ids = self
                    .answered(request_id)
                    .map(|(_, ids)| ids)
                    .unwrap_or_default();
                let error = MeshError::new(ErrorCode::TransportUnavailable, error.to_string());
                let ids: Vec<Option<String>> = if ids.is_empty() {
                    vec![None]
                } else {
                    ids.into_iter().map(Some).collect()
                };
                for frame_id in ids {
                    self.events.push_back(Event::Refused {
                        peer,
                        frame_id,
                        error: error.clone(),
                        by_peer: true,
                    });
                }
            }
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler =
        <request_response::Behaviour<Codec> as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = Event;

    mesh_core::delegate_to_inner!(inner);

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.allowance.on_swarm_event(&event);
        match &event {
            FromSwarm::ConnectionEstablished(e) => {
                self.connected.insert(e.peer_id);
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connected.remove(&e.peer_id);
                self.marked.remove(&e.peer_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(e));
            }
            if self.sweep.poll_unpin(cx).is_ready() {
                // Polled again on the next turn, which registers the reset timer.
                self.sweep.reset(self.config.sweep_every());
                let now = (self.config.clock)();
                self.correlations.sweep(&now);
                self.seen.purge(&now);
                continue;
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(e)) => self.handle(e),
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
