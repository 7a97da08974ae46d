//! Signaling in the router: outgoing correlations (a route's `connect_request` or a
//! setup payload) through signaling hosts with fallback to the next host, and the
//! answers to incoming requests (accept, our candidates, a QUIC hole punch toward the
//! requester's, for the requesters [`super::policy`] accepts). Frames are built and
//! verified by `mesh_signal`; which candidates are dialed is [`super::policy`]'s.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, MeshError, NodeId, SignalFrame, Timestamp, TraceEvent, TraceEventType};
use serde_json::{Map, Value, json};

use super::birthday::Seen;
use super::policy::{MAX_CANDIDATE_FRAMES, Requester};
use super::{Actions, Router, plan};
use crate::node::action::Action;
use crate::node::api::{HandleError, MAX_SETUP_BYTES, Reply, answer};
use crate::node::birthday::signal::{Step, put_mapping};
use crate::node::event::NodeEvent;
use crate::node::view::View;

/// Incoming correlations remembered (to dial back on their candidates).
const MAX_ANSWERING: usize = 256;
/// Setup payloads (`send_signal`) waiting for their delivery at once.
pub(super) const MAX_SETUPS: usize = 64;
/// How long a setup payload may wait for the other side's accept and the delivery.
pub(super) const SETUP_FOR: Duration = Duration::from_secs(35);
/// How long an incoming correlation is remembered.
pub(super) const ANSWERING_FOR: Duration = Duration::from_secs(120);
/// The `purpose` of the requests the routing policy sends.
pub const PURPOSE_CONNECT: &str = "connect";
/// The `purpose` of [`crate::node::NodeHandle::send_signal`]'s requests.
pub const PURPOSE_SETUP: &str = "setup";

/// Why we opened an outgoing correlation.
#[derive(Debug)]
pub(super) enum Intent {
    Route(u64),
    Setup {
        data: Map<String, Value>,
        reply: Option<Reply<String>>,
    },
}

/// An outgoing correlation: the request, and the hosts still to try.
#[derive(Debug)]
pub(super) struct Outbound {
    pub(super) node: NodeId,
    pub(super) correlation: String,
    request_frame: String,
    payload_frame: Option<String>,
    pub(super) via: Option<PeerId>,
    hosts: VecDeque<PeerId>,
    pub(super) intent: Intent,
    since: Instant,
    /// Candidate frames from the other side dialed so far.
    candidate_frames: u32,
    /// What they told of the other side (for the birthday stage).
    pub(super) seen: Seen,
}

impl Outbound {
    /// A correlation with `node` to open through the first of `hosts` (or directly);
    /// [`Router::request`] fills in its id and request.
    fn new(node: NodeId, hosts: Vec<PeerId>, intent: Intent, now: Instant) -> Self {
        Outbound {
            node,
            correlation: String::new(),
            request_frame: String::new(),
            payload_frame: None,
            via: None,
            hosts: hosts.into(),
            intent,
            since: now,
            candidate_frames: 0,
            seen: Seen::default(),
        }
    }
}

/// An incoming correlation we answered.
#[derive(Debug)]
pub(super) struct Answering {
    /// A `connect` request from a requester the policy punches back for.
    pub(super) punch: bool,
    /// A `setup` request: it ends when its payload arrives.
    setup: bool,
    /// The peer that handed the request over (a host, or the requester itself).
    link: Option<PeerId>,
    pub(super) since: Instant,
    /// Candidate frames dialed so far.
    candidate_frames: u32,
    pub(super) seen: Seen,
}

/// Session peers that offer `core/signaling`, the target's relays first.
pub(super) fn hosts(view: &dyn View, target: PeerId, circuits: &[Multiaddr]) -> Vec<PeerId> {
    let mut hosts: Vec<PeerId> = view
        .connected_peers()
        .into_iter()
        .filter(|p| *p != target)
        .filter(|p| view.offers(p, "core/signaling"))
        .collect();
    hosts.sort();
    plan::order_hosts(hosts, &plan::relays_of(circuits))
}

impl Router {
    /// Setup payloads that waited longer than [`SETUP_FOR`] (no accept, or no
    /// delivery): answered with a timeout and forgotten.
    pub(super) fn expire_setups(&mut self, now: Instant) {
        let late: Vec<String> = self
            .outbound
            .iter()
            .filter(|(_, o)| {
                matches!(o.intent, Intent::Setup { .. })
                    && now.saturating_duration_since(o.since) >= SETUP_FOR
            })
            .map(|(c, _)| c.clone())
            .collect();
        for corr in late {
            if let Some(Outbound {
                intent: Intent::Setup {
                    reply: Some(reply), ..
                },
                ..
            }) = self.outbound.remove(&corr)
            {
                let _ = reply.send(Err(HandleError::timed_out("setup payload", SETUP_FOR)));
            }
        }
    }

    pub(super) fn our_candidates(&self, view: &dyn View, now: Instant) -> Vec<Multiaddr> {
        let observed = self.observed.ranked(now);
        plan::candidates(
            &view.external_addrs(),
            &observed.confirmed,
            &view.listen_addrs(),
            &observed.unconfirmed,
            mesh_core::families::MAX_CANDIDATES,
        )
    }

    pub(super) fn signed_frame(
        &self,
        to: NodeId,
        kind: &str,
        correlation: &str,
        payload: Map<String, Value>,
    ) -> Result<SignalFrame, MeshError> {
        mesh_signal::frame(&self.key, to, kind, correlation, payload, &Timestamp::now())
    }

    /// Opens a correlation with `node` through the first of `hosts` (or directly).
    pub(super) fn open_outbound(
        &mut self,
        node: NodeId,
        hosts: Vec<PeerId>,
        intent: Intent,
        view: &dyn View,
        now: Instant,
        out: &mut Actions,
    ) -> Result<(), MeshError> {
        let mut o = Outbound::new(node, hosts, intent, now);
        out.push(self.request(&mut o, view)?);
        if let Intent::Route(id) = o.intent
            && let Some(a) = self.attempts.get_mut(&id)
        {
            a.outbound = Some(o.correlation.clone());
        }
        self.outbound.insert(o.correlation.clone(), o);
        Ok(())
    }

    /// A fresh correlation and request, through the next host.
    fn request(&self, o: &mut Outbound, view: &dyn View) -> Result<Action, MeshError> {
        let peer = o
            .node
            .to_peer_id()
            .map_err(|e| MeshError::invalid(e.to_string()))?;
        let direct = view.signal_reaches(&peer);
        o.via = if direct { None } else { o.hosts.pop_front() };
        if !direct && o.via.is_none() {
            return Err(MeshError::new(
                ErrorCode::TransportUnavailable,
                "no signaling host could reach the node",
            ));
        }
        o.correlation = mesh_signal::random_id("corr:");
        let purpose = match o.intent {
            Intent::Route(_) => PURPOSE_CONNECT,
            Intent::Setup { .. } => PURPOSE_SETUP,
        };
        let mut p = Map::new();
        p.insert("purpose".into(), json!(purpose));
        let frame = self.signed_frame(o.node, "connect_request", &o.correlation, p)?;
        o.request_frame = frame.frame_id().to_owned();
        Ok(Action::SendFrame {
            frame: Box::new(frame),
            via: o.via,
        })
    }

    /// `send_signal`: a setup payload in a new correlation.
    pub(crate) fn send_setup(
        &mut self,
        node: NodeId,
        data: Vec<u8>,
        content_type: Option<String>,
        reply: Reply<String>,
        view: &dyn View,
        now: Instant,
    ) -> Actions {
        let mut out = Vec::new();
        let setups = self
            .outbound
            .values()
            .filter(|o| matches!(o.intent, Intent::Setup { .. }))
            .count();
        if setups >= MAX_SETUPS {
            let e = MeshError::new(
                ErrorCode::TransportRejected,
                format!("{setups} setup payloads are waiting already"),
            );
            answer(reply, Err(e));
            return out;
        }
        if data.len() > MAX_SETUP_BYTES {
            let e = MeshError::invalid(format!(
                "setup payload of {} bytes exceeds {MAX_SETUP_BYTES}",
                data.len()
            ));
            answer(reply, Err(e));
            return out;
        }
        use base64::Engine as _;
        let mut p = Map::new();
        p.insert(
            "data/b64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&data)),
        );
        if let Some(ct) = content_type {
            p.insert("content-type".into(), json!(ct));
        }
        let hosts = match node.to_peer_id() {
            Ok(peer) => hosts(view, peer, &[]),
            Err(e) => {
                answer(reply, Err(MeshError::invalid(e.to_string())));
                return out;
            }
        };
        let intent = Intent::Setup {
            data: p,
            reply: Some(reply),
        };
        let mut o = Outbound::new(node, hosts, intent, now);
        match self.request(&mut o, view) {
            Ok(send) => {
                out.push(send);
                self.outbound.insert(o.correlation.clone(), o);
            }
            Err(e) => {
                if let Intent::Setup {
                    reply: Some(reply), ..
                } = o.intent
                {
                    answer(reply, Err(e));
                }
            }
        }
        out
    }

    /// An event of the signal behaviour; `member` says whether a node is a member of
    /// a swarm this node is in (the default [`super::policy::PunchFor`] trusts those).
    pub(crate) fn on_signal(
        &mut self,
        event: mesh_signal::Event,
        view: &dyn View,
        member: &dyn Fn(&NodeId) -> bool,
        now: Instant,
    ) -> Actions {
        match event {
            mesh_signal::Event::Received { via, frame, .. } => {
                self.on_frame(via, *frame, view, member, now)
            }
            mesh_signal::Event::Delivered { frame_id, .. } => {
                self.on_delivered(&frame_id);
                Vec::new()
            }
            mesh_signal::Event::Refused {
                peer,
                frame_id,
                error,
                by_peer,
            } => {
                if !by_peer {
                    tracing::debug!(%peer, code = error.code.as_str(), %error, "signal frame refused");
                    return vec![Action::trace(
                        TraceEvent::error(&error, self.node_id, Timestamp::now()).with_peer(peer),
                    )];
                }
                match frame_id {
                    Some(fid) => self.frame_refused(&fid, error, view, now),
                    None => Vec::new(),
                }
            }
            mesh_signal::Event::Forwarded { from, to, frame_id } => {
                tracing::debug!(%from, %to, frame_id, "signal frame forwarded");
                Vec::new()
            }
        }
    }

    /// Our frame was refused by a host or the node, or could not be sent: the next
    /// host, or give up.
    pub(crate) fn frame_refused(
        &mut self,
        frame_id: &str,
        error: MeshError,
        view: &dyn View,
        now: Instant,
    ) -> Actions {
        let mut out = Vec::new();
        let Some(corr) = self
            .outbound
            .iter()
            .find(|(_, o)| {
                o.request_frame == frame_id || o.payload_frame.as_deref() == Some(frame_id)
            })
            .map(|(c, _)| c.clone())
        else {
            return out;
        };
        let Some(mut o) = self.outbound.remove(&corr) else {
            return out;
        };
        let retry = o.request_frame == frame_id && !o.hosts.is_empty();
        let result = if retry {
            self.request(&mut o, view)
        } else {
            Err(error)
        };
        match result {
            Ok(send) => {
                out.push(send);
                if let Intent::Route(id) = o.intent
                    && let Some(a) = self.attempts.get_mut(&id)
                {
                    a.outbound = Some(o.correlation.clone());
                }
                self.outbound.insert(o.correlation.clone(), o);
            }
            Err(e) => match o.intent {
                Intent::Route(id) => {
                    if let Some(a) = self.attempts.get_mut(&id) {
                        a.outbound = None;
                    }
                    self.next_stage(id, format!("signaling: {e}"), view, now, &mut out)
                }
                Intent::Setup { reply, .. } => {
                    if let Some(r) = reply {
                        answer(r, Err(e));
                    }
                }
            },
        }
        out
    }

    fn on_delivered(&mut self, frame_id: &str) {
        let Some((corr, o)) = self
            .outbound
            .iter_mut()
            .find(|(_, o)| o.payload_frame.as_deref() == Some(frame_id))
        else {
            return;
        };
        // A route's correlation goes on (more candidates, the birthday stage) until the
        // route ends.
        let Intent::Setup { reply, .. } = &mut o.intent else {
            return;
        };
        let corr = corr.clone();
        if let Some(r) = reply.take() {
            let _ = r.send(Ok(corr.clone()));
        }
        self.outbound.remove(&corr);
    }

    /// A verified frame for us.
    fn on_frame(
        &mut self,
        via: PeerId,
        frame: SignalFrame,
        view: &dyn View,
        member: &dyn Fn(&NodeId) -> bool,
        now: Instant,
    ) -> Actions {
        let from = frame.from();
        let corr = frame.correlation().to_owned();
        let kind = frame.kind().to_owned();
        let mut out = vec![
            Action::trace(
                TraceEvent::new(
                    TraceEventType::SignalReceived,
                    self.node_id,
                    Timestamp::now(),
                )
                .with_peer(via)
                .with_detail(json!({
                    "from": from.to_string(), "kind": kind, "correlation/id": corr,
                    "hops": frame.hops(),
                })),
            ),
            Action::Emit(NodeEvent::SignalReceived {
                from,
                via,
                kind: kind.clone(),
                correlation: corr.clone(),
                payload: Value::Object(frame.payload().clone()),
            }),
        ];
        let from_peer = from.to_peer_id().ok();
        let relayed_via = (Some(via) != from_peer).then_some(via);
        match kind.as_str() {
            "connect_request" => {
                let requester = Requester {
                    session: from_peer.is_some_and(|p| view.has_session(&p)),
                    member: member(&from),
                };
                self.answer_request(&frame, relayed_via, requester, view, now, &mut out)
            }
            "candidate" => self.on_candidates(&frame, via, view, now, &mut out),
            "connect_accept" => self.on_accept(&frame, view, now, &mut out),
            "connect_reject" => {
                if let Some(Outbound {
                    intent: Intent::Route(id),
                    ..
                }) = self.outbound.get(&corr)
                {
                    let id = *id;
                    let code = frame.payload()["reason/code"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    let error = format!("signaling: rejected ({code})");
                    self.next_stage(id, error, view, now, &mut out);
                }
            }
            // A setup correlation has done its work once its payload is here: it ends
            // now rather than lingering until it expires (a node sending payloads in a
            // row would otherwise run into the per-signer quota of open correlations).
            "setup_payload"
                if self
                    .answering
                    .get(&(from, corr.clone()))
                    .is_some_and(|a| a.setup) =>
            {
                self.answering.remove(&(from, corr.clone()));
                out.push(Action::CorrelationDone {
                    node: from,
                    correlation: corr,
                });
            }
            _ => {}
        }
        out
    }

    /// The incoming correlation a full table forgets: the oldest of the link that handed
    /// over the most (requests we do not punch for are not kept: they end once
    /// answered). Oldest of all let fresh keys through one link (a presence makes any
    /// key a member we punch for) push an honest requester's entry out before its
    /// candidates came, and its punch never happened.
    fn answering_to_drop(&self) -> Option<(NodeId, String)> {
        let mut per_link: HashMap<Option<PeerId>, usize> = HashMap::new();
        for a in self.answering.values() {
            *per_link.entry(a.link).or_default() += 1;
        }
        let busiest = per_link.into_iter().max_by_key(|(_, n)| *n)?.0;
        self.answering
            .iter()
            .filter(|(_, a)| a.link == busiest)
            .min_by_key(|(_, a)| a.since)
            .map(|(k, _)| k.clone())
    }

    /// Every request is accepted (the application sees the frames); a `connect`
    /// request also gets our candidates, and we dial the requester's once they come
    /// when the policy punches for `requester`.
    fn answer_request(
        &mut self,
        frame: &SignalFrame,
        via: Option<PeerId>,
        requester: Requester,
        view: &dyn View,
        now: Instant,
        out: &mut Actions,
    ) {
        let from = frame.from();
        let corr = frame.correlation().to_owned();
        let connect =
            frame.payload().get("purpose").and_then(Value::as_str) == Some(PURPOSE_CONNECT);
        if self.answering.len() >= MAX_ANSWERING
            && let Some(k) = self.answering_to_drop()
        {
            self.answering.remove(&k);
        }
        let punch = connect && self.policy.punches_for(requester);
        if connect && !punch {
            tracing::debug!(%from, "connect request from a node we do not punch for");
        }
        self.answering.insert(
            (from, corr.clone()),
            Answering {
                punch,
                setup: !connect,
                link: via.or_else(|| from.to_peer_id().ok()),
                since: now,
                candidate_frames: 0,
                seen: Seen::default(),
            },
        );
        let mut frames = Vec::new();
        match self.signed_frame(from, "connect_accept", &corr, Map::new()) {
            Ok(f) => frames.push(f),
            Err(e) => return tracing::warn!(error = %e, "connect_accept not signed"),
        }
        if connect {
            let addrs: Vec<String> = self
                .our_candidates(view, now)
                .iter()
                .map(ToString::to_string)
                .collect();
            if !addrs.is_empty() {
                let mut p = Map::new();
                p.insert("addrs".into(), json!(addrs));
                put_mapping(&mut p, self.our_mapping(view, now));
                match self.signed_frame(from, "candidate", &corr, p) {
                    Ok(f) => frames.push(f),
                    Err(e) => tracing::warn!(error = %e, "candidate frame not signed"),
                }
            }
        }
        for f in frames {
            out.push(Action::SendFrame {
                frame: Box::new(f),
                via,
            });
        }
        // Nothing more to do for a requester we do not punch for: its correlation ends
        // once answered, rather than holding a place of its host's quota (128 per
        // delivering peer) for two minutes; strangers through an honest host held
        // them all, and every other request through it was refused.
        if connect && !punch {
            self.answering.remove(&(from, corr.clone()));
            out.push(Action::CorrelationDone {
                node: from,
                correlation: corr,
            });
        }
    }

    /// The other side accepted: a route sends its candidates, a setup its payload.
    fn on_accept(&mut self, frame: &SignalFrame, view: &dyn View, now: Instant, out: &mut Actions) {
        let corr = frame.correlation().to_owned();
        let Some(o) = self.outbound.get(&corr) else {
            return;
        };
        let (node, via, request) = (o.node, o.via, o.request_frame.clone());
        let (kind, payload) = match &o.intent {
            Intent::Route(_) => {
                let addrs: Vec<String> = self
                    .our_candidates(view, now)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                if addrs.is_empty() {
                    return;
                }
                let mut p = Map::new();
                p.insert("addrs".into(), json!(addrs));
                put_mapping(&mut p, self.our_mapping(view, now));
                ("candidate", p)
            }
            Intent::Setup { data, .. } => ("setup_payload", data.clone()),
        };
        match self.signed_frame(node, kind, &corr, payload) {
            Ok(f) => {
                if let Some(o) = self.outbound.get_mut(&corr) {
                    o.payload_frame = Some(f.frame_id().to_owned());
                }
                out.push(Action::SendFrame {
                    frame: Box::new(f),
                    via,
                });
            }
            Err(e) => out.extend(self.frame_refused(&request, e, view, now)),
        }
    }

    /// Candidates from the other side: the initiator dials them, the responder dials
    /// them in the listener role (a QUIC hole punch), so both dial at once. Only in
    /// correlations we started, or answered for a requester the policy punches for; at
    /// most [`MAX_CANDIDATE_FRAMES`] frames each; only addresses in the other side's
    /// plausible scope (`via` is the peer that handed the frame over); the responder's
    /// punches within the punch budget (`punch_budget`). A frame with a birthday step
    /// goes to the birthday stage before the count (and is not dialed).
    fn on_candidates(
        &mut self,
        frame: &SignalFrame,
        via: PeerId,
        view: &dyn View,
        now: Instant,
        out: &mut Actions,
    ) {
        let Ok(peer) = frame.from().to_peer_id() else {
            return;
        };
        let connected = view.is_connected(&peer);
        if connected {
            return;
        }
        match Step::read(frame.payload()) {
            Ok(None) => {}
            Ok(Some(step)) => return self.step_frame(step, frame, via, view, now, out),
            Err(e) => return tracing::debug!(%peer, error = %e, "candidate frame refused"),
        }
        let corr = frame.correlation().to_owned();
        // Which correlation, and whether it may dial one more frame's candidates.
        let route = match self.outbound.get_mut(&corr) {
            Some(o) if o.node == frame.from() => match o.intent {
                Intent::Route(id) if o.candidate_frames < MAX_CANDIDATE_FRAMES => {
                    o.candidate_frames += 1;
                    Some(id)
                }
                _ => return,
            },
            _ => None,
        };
        if route.is_none() {
            match self.answering.get_mut(&(frame.from(), corr)) {
                Some(a) if a.punch && a.candidate_frames < MAX_CANDIDATE_FRAMES => {
                    a.candidate_frames += 1;
                }
                _ => return,
            }
        }
        let addrs = self.scoped_addrs(frame, via, peer, view);
        self.learn(frame, &addrs);
        tracing::debug!(%peer, ?addrs, "candidates in scope");
        if addrs.is_empty() {
            return;
        }
        if let Some(id) = route {
            return self.dial(id, peer, addrs, out);
        }
        // Only QUIC candidates: a QUIC "listener role" dial sends packets and waits for
        // the initiator's connection, which is what opens our NAT. A TCP dial in the
        // listener role needs a timed simultaneous open (DCUtR measures the RTT for
        // that); untimed, it lands on the initiator's listening socket, where both
        // sides then wait as responders, and it takes the 4-tuple the initiator's own
        // dial needs.
        let quic: Vec<Multiaddr> = addrs
            .into_iter()
            .filter(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1)))
            .collect();
        let wanted = quic.len();
        let quic = self
            .punch_budget
            .admit(quic, via, &view.remote_addrs(&via), now);
        if quic.len() < wanted {
            tracing::debug!(%peer, %via, wanted, dialed = quic.len(), "punch budget spent");
        }
        if !quic.is_empty() {
            let opts = DialOpts::peer_id(peer)
                .addresses(quic)
                .condition(PeerCondition::Always)
                .override_role()
                .build();
            out.push(Action::Dial(opts));
        }
    }
}
