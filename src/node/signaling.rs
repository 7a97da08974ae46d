//! Signaling in the node: outgoing correlations (a route's `connect_request` or a
//! setup payload) through signaling hosts with fallback to the next host, and the
//! answers to incoming requests (accept, our candidates, a QUIC hole punch toward the
//! requester's). Frames are built and verified by `mesh_signal`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use mesh_core::{ErrorCode, MeshError, NodeId, SignalFrame, Timestamp, TraceEvent, TraceEventType};
use serde_json::{Map, Value, json};

use super::connect::MAX_SETUP_BYTES;
use super::handle::Reply;
use super::route;
use super::{Node, NodeEvent};

/// Incoming correlations remembered (to dial back on their candidates).
const MAX_ANSWERING: usize = 256;
/// How long an incoming correlation is remembered.
pub(super) const ANSWERING_FOR: Duration = Duration::from_secs(120);
/// The `purpose` of the requests the routing policy sends.
pub const PURPOSE_CONNECT: &str = "connect";
/// The `purpose` of [`super::NodeHandle::send_signal`]'s requests.
pub const PURPOSE_SETUP: &str = "setup";

/// Why we opened an outgoing correlation.
#[derive(Debug)]
pub(super) enum Purpose {
    Route(u64),
    Setup {
        data: Map<String, Value>,
        reply: Option<Reply<String>>,
    },
}

/// An outgoing correlation: the request, and the hosts still to try.
#[derive(Debug)]
pub(crate) struct Outbound {
    node: NodeId,
    correlation: String,
    request_frame: String,
    payload_frame: Option<String>,
    via: Option<PeerId>,
    hosts: VecDeque<PeerId>,
    pub(super) purpose: Purpose,
}

/// An incoming correlation we answered.
#[derive(Debug)]
pub(crate) struct Answering {
    connect: bool,
    pub(super) since: Instant,
}
impl Node {
    /// Session peers that offer `core/signaling`, the target's relays first.
    pub(super) fn signaling_hosts(&self, target: PeerId, circuits: &[Multiaddr]) -> Vec<PeerId> {
        let b = self.swarm.behaviour();
        let mut hosts: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| **p != target)
            .filter(|p| {
                b.session
                    .session(p)
                    .is_some_and(|s| s.capabilities.iter().any(|c| c == "core/signaling"))
            })
            .copied()
            .collect();
        hosts.sort();
        route::order_hosts(hosts, &route::relays_of(circuits))
    }

    fn our_candidates(&self) -> Vec<Multiaddr> {
        let external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let listen: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
        let observed: Vec<Multiaddr> = self.routes.observed.iter().cloned().collect();
        route::candidates(
            &external,
            &observed,
            &listen,
            mesh_core::families::MAX_CANDIDATES,
        )
    }

    fn signed_frame(
        &self,
        to: NodeId,
        kind: &str,
        correlation: &str,
        payload: Map<String, Value>,
    ) -> Result<SignalFrame, MeshError> {
        mesh_signal::frame(&self.key, to, kind, correlation, payload, &Timestamp::now())
    }

    /// Sends our frame to `to`: directly when connected, else through `via`.
    fn send_frame(&mut self, frame: &SignalFrame, via: Option<PeerId>) -> Result<(), MeshError> {
        self.swarm.behaviour_mut().signal.send(frame, via)
    }

    /// Opens a correlation with `node` through the first of `hosts` (or directly).
    pub(super) fn open_outbound(
        &mut self,
        node: NodeId,
        hosts: Vec<PeerId>,
        purpose: Purpose,
    ) -> Result<(), MeshError> {
        let mut out = Outbound {
            node,
            correlation: String::new(),
            request_frame: String::new(),
            payload_frame: None,
            via: None,
            hosts: hosts.into(),
            purpose,
        };
        self.send_request(&mut out)?;
        if let Purpose::Route(id) = out.purpose
            && let Some(a) = self.routes.attempts.get_mut(&id)
        {
            a.outbound = Some(out.correlation.clone());
        }
        self.routes.outbound.insert(out.correlation.clone(), out);
        Ok(())
    }

    /// A fresh correlation and request, through the next host.
    fn send_request(&mut self, out: &mut Outbound) -> Result<(), MeshError> {
        let peer = out
            .node
            .to_peer_id()
            .map_err(|e| MeshError::invalid(e.to_string()))?;
        let direct = self.swarm.behaviour().signal.is_connected(&peer);
        out.via = if direct { None } else { out.hosts.pop_front() };
        if !direct && out.via.is_none() {
            return Err(MeshError::new(
                ErrorCode::TransportUnavailable,
                "no signaling host could reach the node",
            ));
        }
        out.correlation = mesh_signal::random_id("corr:");
        let purpose = match out.purpose {
            Purpose::Route(_) => PURPOSE_CONNECT,
            Purpose::Setup { .. } => PURPOSE_SETUP,
        };
        let mut p = Map::new();
        p.insert("purpose".into(), json!(purpose));
        let frame = self.signed_frame(out.node, "connect_request", &out.correlation, p)?;
        out.request_frame = frame.frame_id().to_owned();
        self.send_frame(&frame, out.via)
    }

    pub(super) fn send_setup(
        &mut self,
        node: NodeId,
        data: Vec<u8>,
        content_type: Option<String>,
        reply: Reply<String>,
    ) {
        if data.len() > MAX_SETUP_BYTES {
            let _ = reply.send(Err(MeshError::invalid(format!(
                "setup payload of {} bytes exceeds {MAX_SETUP_BYTES}",
                data.len()
            ))));
            return;
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
            Ok(peer) => self.signaling_hosts(peer, &[]),
            Err(e) => {
                let _ = reply.send(Err(MeshError::invalid(e.to_string())));
                return;
            }
        };
        let purpose = Purpose::Setup {
            data: p,
            reply: Some(reply),
        };
        let mut out = Outbound {
            node,
            correlation: String::new(),
            request_frame: String::new(),
            payload_frame: None,
            via: None,
            hosts: hosts.into(),
            purpose,
        };
        match self.send_request(&mut out) {
            Ok(()) => {
                self.routes.outbound.insert(out.correlation.clone(), out);
            }
            Err(e) => {
                if let Purpose::Setup {
                    reply: Some(reply), ..
                } = out.purpose
                {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    pub(super) fn on_signal(&mut self, event: mesh_signal::Event) {
        match event {
            mesh_signal::Event::Received { via, frame, .. } => self.on_frame(via, *frame),
            mesh_signal::Event::Delivered { frame_id, .. } => self.on_delivered(&frame_id),
            mesh_signal::Event::Refused {
                peer,
                frame_id,
                error,
                by_peer,
            } => {
                if !by_peer {
                    tracing::debug!(%peer, code = error.code.as_str(), %error, "signal frame refused");
                    self.emit_trace(
                        TraceEvent::error(&error, self.node_id, Timestamp::now()).with_peer(peer),
                    );
                    return;
                }
                if let Some(fid) = frame_id {
                    self.on_frame_refused(&fid, error);
                }
            }
            mesh_signal::Event::Forwarded { from, to, frame_id } => {
                tracing::debug!(%from, %to, frame_id, "signal frame forwarded");
            }
        }
    }

    /// Our request was refused by a host (or the node): the next host, or give up.
    fn on_frame_refused(&mut self, frame_id: &str, error: MeshError) {
        let Some(corr) = self
            .routes
            .outbound
            .iter()
            .find(|(_, o)| {
                o.request_frame == frame_id || o.payload_frame.as_deref() == Some(frame_id)
            })
            .map(|(c, _)| c.clone())
        else {
            return;
        };
        let Some(mut out) = self.routes.outbound.remove(&corr) else {
            return;
        };
        let retry = out.request_frame == frame_id && !out.hosts.is_empty();
        let result = if retry {
            self.send_request(&mut out)
        } else {
            Err(error)
        };
        match result {
            Ok(()) => {
                if let Purpose::Route(id) = out.purpose
                    && let Some(a) = self.routes.attempts.get_mut(&id)
                {
                    a.outbound = Some(out.correlation.clone());
                }
                self.routes.outbound.insert(out.correlation.clone(), out);
            }
            Err(e) => match out.purpose {
                Purpose::Route(id) => self.route_next(id, format!("signaling: {e}")),
                Purpose::Setup { reply, .. } => {
                    if let Some(r) = reply {
                        let _ = r.send(Err(e));
                    }
                }
            },
        }
    }

    fn on_delivered(&mut self, frame_id: &str) {
        let Some((corr, out)) = self
            .routes
            .outbound
            .iter_mut()
            .find(|(_, o)| o.payload_frame.as_deref() == Some(frame_id))
        else {
            return;
        };
        let corr = corr.clone();
        if let Purpose::Setup { reply, .. } = &mut out.purpose
            && let Some(r) = reply.take()
        {
            let _ = r.send(Ok(corr.clone()));
        }
        self.routes.outbound.remove(&corr);
    }

    /// A verified frame for us.
    fn on_frame(&mut self, via: PeerId, frame: SignalFrame) {
        let from = frame.from();
        let corr = frame.correlation().to_owned();
        let kind = frame.kind().to_owned();
        self.emit_trace(
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
        );
        self.emit(NodeEvent::SignalReceived {
            from,
            via,
            kind: kind.clone(),
            correlation: corr.clone(),
            payload: Value::Object(frame.payload().clone()),
        });
        let from_peer = from.to_peer_id().ok();
        let relayed_via = (Some(via) != from_peer).then_some(via);
        match kind.as_str() {
            "connect_request" => self.answer_request(&frame, relayed_via),
            "candidate" => self.on_candidates(&frame),
            "connect_accept" => self.on_accept(&frame),
            "connect_reject" => {
                if let Some(Outbound {
                    purpose: Purpose::Route(id),
                    ..
                }) = self.routes.outbound.get(&corr)
                {
                    let id = *id;
                    let code = frame.payload()["reason/code"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    self.route_next(id, format!("signaling: rejected ({code})"));
                }
            }
            _ => {}
        }
    }

    /// Every request is accepted (the application sees the frames); a `connect`
    /// request also gets our candidates, and we dial the requester's once they come.
    fn answer_request(&mut self, frame: &SignalFrame, via: Option<PeerId>) {
        let from = frame.from();
        let corr = frame.correlation().to_owned();
        let connect =
            frame.payload().get("purpose").and_then(Value::as_str) == Some(PURPOSE_CONNECT);
        if self.routes.answering.len() >= MAX_ANSWERING {
            let oldest = self
                .routes
                .answering
                .iter()
                .min_by_key(|(_, a)| a.since)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.routes.answering.remove(&k);
            }
        }
        self.routes.answering.insert(
            (from, corr.clone()),
            Answering {
                connect,
                since: Instant::now(),
            },
        );
        let mut frames = Vec::new();
        match self.signed_frame(from, "connect_accept", &corr, Map::new()) {
            Ok(f) => frames.push(f),
            Err(e) => return tracing::warn!(error = %e, "connect_accept not signed"),
        }
        if connect {
            let addrs: Vec<String> = self
                .our_candidates()
                .iter()
                .map(ToString::to_string)
                .collect();
            if !addrs.is_empty() {
                let mut p = Map::new();
                p.insert("addrs".into(), json!(addrs));
                match self.signed_frame(from, "candidate", &corr, p) {
                    Ok(f) => frames.push(f),
                    Err(e) => tracing::warn!(error = %e, "candidate frame not signed"),
                }
            }
        }
        for f in frames {
            if let Err(e) = self.send_frame(&f, via) {
                tracing::debug!(error = %e, "signal answer not sent");
            }
        }
    }

    /// The other side accepted: a route sends its candidates, a setup its payload.
    fn on_accept(&mut self, frame: &SignalFrame) {
        let corr = frame.correlation().to_owned();
        let Some(out) = self.routes.outbound.get(&corr) else {
            return;
        };
        let (node, via, request) = (out.node, out.via, out.request_frame.clone());
        let (kind, payload) = match &out.purpose {
            Purpose::Route(_) => {
                let addrs: Vec<String> = self
                    .our_candidates()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                if addrs.is_empty() {
                    return;
                }
                let mut p = Map::new();
                p.insert("addrs".into(), json!(addrs));
                ("candidate", p)
            }
            Purpose::Setup { data, .. } => ("setup_payload", data.clone()),
        };
        let sent = self
            .signed_frame(node, kind, &corr, payload)
            .and_then(|f| self.send_frame(&f, via).map(|()| f.frame_id().to_owned()));
        match sent {
            Ok(fid) => {
                if let Some(out) = self.routes.outbound.get_mut(&corr) {
                    out.payload_frame = Some(fid);
                }
            }
            Err(e) => self.on_frame_refused(&request, e),
        }
    }

    /// Candidates from the other side: the initiator dials them, the responder dials
    /// them in the listener role (a QUIC hole punch), so both dial at once.
    fn on_candidates(&mut self, frame: &SignalFrame) {
        let addrs: Vec<Multiaddr> = frame.payload()["addrs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        let Ok(peer) = frame.from().to_peer_id() else {
            return;
        };
        tracing::debug!(%peer, ?addrs, connected = self.swarm.is_connected(&peer), "candidates");
        if addrs.is_empty() || self.swarm.is_connected(&peer) {
            return;
        }
        let corr = frame.correlation().to_owned();
        if let Some(Outbound {
            purpose: Purpose::Route(id),
            ..
        }) = self.routes.outbound.get(&corr)
        {
            let id = *id;
            return self.route_dial(id, peer, addrs);
        }
        let connect = self
            .routes
            .answering
            .get(&(frame.from(), corr))
            .is_some_and(|a| a.connect);
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
        if connect && !quic.is_empty() {
            let opts = DialOpts::peer_id(peer)
                .addresses(quic)
                .condition(PeerCondition::Always)
                .override_role()
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(%peer, error = %e, "hole punch dial not started");
            }
        }
    }
}
