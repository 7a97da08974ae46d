//! The node's dispatch of the events of discovery-key groups that are not presences:
//! the member-table exchange (`/mesh/swarm-table/1.0.0`) and markers on a group's topic.

use std::time::Instant;

use libp2p::{PeerId, gossipsub};
use mesh_core::{Timestamp, TraceEvent, TraceEventType};

use super::super::view::Now;
use super::super::{Node, NodeEvent};

impl Node {
    /// `/mesh/swarm-table/1.0.0`: serve a page of a member table, or take one in.
    pub(super) fn on_swarm_table(
        &mut self,
        e: libp2p::request_response::Event<
            Result<mesh_signal::group::exchange::TableRequest, mesh_core::MeshError>,
            mesh_signal::group::exchange::Answer,
        >,
    ) {
        use libp2p::request_response::{Event, Message};
        match e {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if !crate::node::groups::is_check(&request) {
                    self.idle.conns.touch(&peer, Instant::now());
                }
                let remote = crate::node::view::View::remote_addrs(&view!(self), &peer);
                let network = mesh_advert::Source::of_peer(peer, &remote);
                let answer = self
                    .groups
                    .serve_table(peer, &network, request, &Timestamp::now());
                let b = self.swarm.behaviour_mut();
                if b.swarm_table.send_response(channel, answer).is_err() {
                    tracing::debug!(%peer, "table answer not sent: stream closed");
                }
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if !self.groups.checking(&request_id, &peer) {
                    self.idle.conns.touch(&peer, Instant::now());
                }
                let actions = self.groups.table_answer(
                    request_id,
                    peer,
                    response,
                    &view!(self),
                    &Now::current(),
                );
                self.apply(actions);
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "table request failed");
                let actions =
                    self.groups
                        .table_failed(request_id, peer, &view!(self), &Now::current());
                self.apply(actions);
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => {}
        }
    }

    /// A marker on the topic of swarm `key`: checked, traced, handed to the
    /// application; how gossipsub should treat it.
    pub(super) fn on_swarm_marker(
        &mut self,
        key: mesh_signal::group::DiscoveryKey,
        author: Option<PeerId>,
        via: PeerId,
        data: &[u8],
    ) -> gossipsub::MessageAcceptance {
        let now = Timestamp::now();
        let me = self.node_id;
        use crate::node::view::View as _;
        use mesh_advert::Source;
        let view = view!(self);
        let forwarder = Source::for_rates_of(via, &view.remote_addrs(&via), &view.listen_addrs());
        let member = author
            .and_then(|a| mesh_core::NodeId::from_peer_id(&a).ok())
            .is_some_and(|n| self.groups.is_member(&n));
        let markers = &mut self.swarm_markers;
        match markers.receive(&me, &key, author, member, &forwarder, data, &now) {
            Ok(env) => {
                let peer = author.unwrap_or(*self.swarm.local_peer_id());
                self.emit_trace(
                    TraceEvent::new(TraceEventType::SignalMarkerReceived, me, now)
                        .with_peer(peer)
                        .with_detail(serde_json::json!({
                            "swarm": key.to_hex(), "message/id": env.message_id(),
                        })),
                );
                self.emit(NodeEvent::SwarmMarkerReceived {
                    swarm: key,
                    peer,
                    participant: env.sender().to_string(),
                    message_id: env.message_id().to_owned(),
                    marker_ref: env.marker_ref().to_owned(),
                });
                gossipsub::MessageAcceptance::Accept
            }
            Err(e) => {
                tracing::debug!(swarm = %key, code = e.code.as_str(), error = %e, "swarm marker refused");
                let mut t = TraceEvent::error(&e, me, now.clone());
                if let Some(p) = author {
                    t = t.with_peer(p);
                }
                // Within the trace budget of the neighbour that handed it over (its
                // author may be a fresh key for every marker).
                if self.trace.enabled() && self.trace_budget.admit_peer(&view!(self), via, &now) {
                    self.emit_trace(t);
                }
                super::super::swarm_marker::acceptance(&e)
            }
        }
    }
}
