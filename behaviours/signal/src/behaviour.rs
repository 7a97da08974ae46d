//! `/mesh/signal/1.0.0`: signed frames between nodes, directly or through a signaling
//! host. Every receiver verifies `from`'s signature (a host cannot forge or alter a
//! frame), suppresses duplicates, and a host forwards a frame to `to` only when it is
//! connected to it, counting the hop (at most 2) and rate-limiting each sender.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{FromSwarm, NetworkBehaviour, THandlerInEvent, ToSwarm};
use libp2p::{PeerId, StreamProtocol};
use mesh_core::{
    Artifact, ErrorCode, MeshError, MeshResult, NodeId, RateLimit, RateLimiter, SignalFrame,
    Timestamp,
};
use mesh_session::marker::Codec;

use crate::correlation::{Correlations, Limits, Transition};

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
    /// Frame ids remembered for duplicate suppression.
    pub dedup: usize,
    /// Correlation limits.
    pub limits: Limits,
    /// Response timeout.
    pub request_timeout: Duration,
    /// Forward only to peers marked with [`Behaviour::set_forwardable`] (a node
    /// forwards to its session peers, not to any connection).
    pub forward_marked_only: bool,
    /// The clock.
    pub clock: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

impl Config {
    /// Defaults for `node` (not a host).
    pub fn new(node: NodeId) -> Self {
        Config {
            node,
            host: false,
            per_sender: RateLimit::per_minute(120, 240),
            dedup: 4096,
            limits: Limits::default(),
            request_timeout: Duration::from_secs(10),
            forward_marked_only: false,
            clock: Arc::new(Timestamp::now),
        }
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
    seen: HashSet<(NodeId, String)>,
    seen_order: VecDeque<(NodeId, String)>,
    connected: HashSet<PeerId>,
    marked: HashSet<PeerId>,
    routes: HashMap<NodeId, PeerId>,
    pending: HashMap<OutboundRequestId, String>,
    events: VecDeque<Event>,
}

impl Behaviour {
    /// A behaviour with `config`.
    pub fn new(config: Config) -> Self {
        let rr = request_response::Config::default().with_request_timeout(config.request_timeout);
        Behaviour {
            inner: request_response::Behaviour::with_codec(
                Codec,
                [(PROTOCOL, ProtocolSupport::Full)],
                rr,
            ),
            correlations: Correlations::new(config.limits),
            limiter: RateLimiter::new(config.per_sender, 65_536),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            connected: HashSet::new(),
            marked: HashSet::new(),
            routes: HashMap::new(),
            pending: HashMap::new(),
            events: VecDeque::new(),
            config,
        }
    }

    /// The correlation table (its `done` and `sweep` are the application's to call).
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
        let now = (self.config.clock)();
        self.correlations.on_frame(&self.config.node, frame, &now)?;
        let id = self.inner.send_request(&target, Ok(frame.to_cbor()));
        self.pending.insert(id, frame.frame_id().to_owned());
        Ok(())
    }

    fn remember(&mut self, key: (NodeId, String)) -> bool {
        if self.seen.contains(&key) {
            return false;
        }
        if self.seen_order.len() >= self.config.dedup
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(key.clone());
        self.seen_order.push_back(key);
        true
    }

    fn receive(&mut self, peer: PeerId, bytes: Result<Vec<u8>, MeshError>) -> MeshResult<()> {
        let now = (self.config.clock)();
        let frame = SignalFrame::verify_cbor(&bytes?, &now)?;
        if !self.remember((frame.from(), frame.frame_id().to_owned())) {
            return Err(MeshError::new(
                ErrorCode::HsReplay,
                format!("signal-frame.v1: frame {} seen before", frame.frame_id()),
            ));
        }
        if frame.to() == self.config.node {
            let transition = self
                .correlations
                .on_frame(&self.config.node, &frame, &now)?;
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
        self.limiter.check(&frame.from(), &now).map_err(|s| {
            MeshError::new(
                ErrorCode::TransportRejected,
                format!("too many frames from this sender; retry after {s} s"),
            )
        })?;
        let next = frame.forwarded()?;
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
        let id = self.inner.send_request(&hop, Ok(next.to_cbor()));
        self.pending.insert(id, frame.frame_id().to_owned());
        self.events.push_back(Event::Forwarded {
            from: frame.from(),
            to: frame.to(),
            frame_id: frame.frame_id().to_owned(),
        });
        Ok(())
    }

    fn handle(
        &mut self,
        event: request_response::Event<Result<Vec<u8>, MeshError>, Result<(), MeshError>>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let r = self.receive(peer, request);
                if let Err(e) = &r {
                    self.events.push_back(Event::Refused {
                        peer,
                        frame_id: None,
                        error: e.clone(),
                        by_peer: false,
                    });
                }
                let _ = self.inner.send_response(channel, r);
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
                let frame_id = self.pending.remove(&request_id).unwrap_or_default();
                self.events.push_back(match response {
                    Ok(()) => Event::Delivered { peer, frame_id },
                    Err(error) => Event::Refused {
                        peer,
                        frame_id: Some(frame_id),
                        error,
                        by_peer: true,
                    },
                });
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                let frame_id = self.pending.remove(&request_id);
                self.events.push_back(Event::Refused {
                    peer,
                    frame_id,
                    error: MeshError::new(ErrorCode::TransportUnavailable, error.to_string()),
                    by_peer: true,
                });
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
