//! The node's reaction to every swarm event: the glue between the components.

use std::time::Instant;

use libp2p::kad::{self, GetRecordOk, QueryResult};
use libp2p::metrics::Recorder;
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, gossipsub, identify, ping};
use mesh_advert::AdvertStore;
use mesh_core::{MeshError, NodeId, Timestamp, TraceEvent, TraceEventType};

use super::behaviour::{MeshBehaviourEvent, speaks};
use super::handle::Found;
use super::pending::{ProviderWait, Stage};
use super::{ADVERTS_SEEN, Node, NodeEvent, routing};

impl Node {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<MeshBehaviourEvent>) {
        self.metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(e) => self.on_behaviour_event(e),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.addrs_dirty = true;
                self.emit(NodeEvent::Listening { addr: address });
            }
            SwarmEvent::ExpiredListenAddr { .. }
            | SwarmEvent::ExternalAddrConfirmed { .. }
            | SwarmEvent::ExternalAddrExpired { .. } => self.addrs_dirty = true,
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                self.idle.conns.established(
                    connection_id,
                    peer_id,
                    endpoint.is_dialer(),
                    super::route::is_circuit(&addr),
                    Instant::now(),
                );
                if num_established.get() == 1 {
                    self.emit_trace(
                        TraceEvent::new(
                            TraceEventType::PeerConnected,
                            self.node_id,
                            Timestamp::now(),
                        )
                        .with_peer(peer_id)
                        .with_detail(serde_json::json!({"addr": addr.to_string()})),
                    );
                    self.emit(NodeEvent::PeerConnected {
                        peer: peer_id,
                        addr: addr.clone(),
                    });
                }
                for after in self
                    .pending
                    .connection_up(connection_id, peer_id, addr.clone())
                {
                    self.connected(peer_id, after);
                }
                self.route_connection(peer_id, &addr);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.idle.conns.closed(connection_id, peer_id);
                self.pending.connection_down(connection_id, peer_id);
                if num_established == 0 {
                    self.emit_trace(
                        TraceEvent::new(
                            TraceEventType::PeerDisconnected,
                            self.node_id,
                            Timestamp::now(),
                        )
                        .with_peer(peer_id),
                    );
                    self.emit(NodeEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                let text = error.to_string();
                tracing::debug!(?peer_id, error = %text, "dial failed");
                for after in self.pending.connection_failed(connection_id) {
                    after.fail(MeshError::new(
                        mesh_core::ErrorCode::TransportUnavailable,
                        format!("dial failed: {text}"),
                    ));
                }
                self.route_dial_failed(connection_id, &text);
            }
            SwarmEvent::NewExternalAddrCandidate { address } => {
                self.routes.observed(address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let reason = match &reason {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                };
                self.relay_listener_closed(listener_id, &reason);
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: MeshBehaviourEvent) {
        match event {
            MeshBehaviourEvent::Identify(e) => {
                self.metrics.record(&e);
                if let identify::Event::Received { peer_id, info, .. } = e {
                    self.on_identify(peer_id, &info);
                    self.emit(NodeEvent::Identified {
                        peer: peer_id,
                        agent: info.agent_version,
                        protocol_version: info.protocol_version,
                        protocols: info.protocols.iter().map(ToString::to_string).collect(),
                        listen_addrs: info.listen_addrs,
                    });
                }
            }
            MeshBehaviourEvent::Amino(e) => {
                self.metrics.record(&e);
                self.on_amino(e);
            }
            MeshBehaviourEvent::MeshKad(e) => {
                self.metrics.record(&e);
                self.on_mesh_kad(e);
            }
            MeshBehaviourEvent::Gossipsub(e) => {
                self.metrics.record(&e);
                self.on_gossip(e);
            }
            MeshBehaviourEvent::AutonatClient(e) => {
                let reachable = e.result.is_ok();
                tracing::debug!(addr = %e.tested_addr, reachable, "autonat test");
                self.nat.insert(e.tested_addr.clone(), reachable);
                self.emit(NodeEvent::Reachability {
                    addr: e.tested_addr,
                    reachable,
                });
            }
            MeshBehaviourEvent::RelayServer(e) => {
                self.metrics.record(&e);
                self.idle_relay_event(&e);
                self.on_relay_server(&e);
            }
            MeshBehaviourEvent::Admission(e) => {
                tracing::debug!(?e, "relay admission");
            }
            MeshBehaviourEvent::AdmissionClient(e) => self.on_admission_client(e),
            MeshBehaviourEvent::Dcutr(e) => {
                self.metrics.record(&e);
                tracing::debug!(?e, "dcutr");
            }
            MeshBehaviourEvent::Advert(e) => {
                if let Some(peer) = advert_peer(&e) {
                    self.idle.conns.touch(&peer, Instant::now());
                }
                self.on_advert(e)
            }
            // The session behaviour's own ping (keepalive already counted it); not
            // activity for the idle rule.
            MeshBehaviourEvent::Session(mesh_session::Event::Pinged {
                peer,
                connection,
                result,
            }) => {
                let e = ping::Event {
                    peer,
                    connection,
                    result,
                };
                self.metrics.record(&e);
                if let Ok(rtt) = e.result {
                    self.relay_rtt(&e.peer, rtt);
                    self.emit(NodeEvent::Pinged { peer: e.peer, rtt });
                }
            }
            MeshBehaviourEvent::Session(e) => {
                self.idle.conns.touch(&session_peer(&e), Instant::now());
                self.on_session(e)
            }
            MeshBehaviourEvent::Marker(e) => {
                self.idle.conns.touch(&marker_peer(&e), Instant::now());
                self.on_marker(e)
            }
            MeshBehaviourEvent::Signal(e) => {
                if let Some(peer) = signal_peer(&e) {
                    self.idle.conns.touch(&peer, Instant::now());
                }
                self.on_signal(e)
            }
            MeshBehaviourEvent::AutonatServer(_)
            | MeshBehaviourEvent::RelayClient(_)
            | MeshBehaviourEvent::Limits(_)
            | MeshBehaviourEvent::Memory(_)
            | MeshBehaviourEvent::Perf(_) => {}
        }
    }

    /// identify told us a peer's protocols and listen addresses: feed both DHTs. A peer
    /// that does not serve a DHT (a Kademlia client) leaves that DHT's routing table:
    /// queries would dial it for nothing, and it would be handed to others as a peer to
    /// ask.
    fn on_identify(&mut self, peer: PeerId, info: &identify::Info) {
        let amino = speaks(&info.protocols, &kad::PROTOCOL_NAME);
        let mesh = speaks(&info.protocols, &mesh_advert::kad::KAD_PROTOCOL);
        let b = self.swarm.behaviour_mut();
        if !amino {
            b.amino.remove_peer(&peer);
        }
        if !mesh {
            b.mesh_kad.remove_peer(&peer);
        }
        let direct = info
            .listen_addrs
            .iter()
            .filter(|a| !super::route::is_circuit(a));
        for addr in direct.map(routing::without_peer) {
            if amino {
                b.amino.add_address(&peer, addr.clone());
            }
            if mesh {
                b.mesh_kad.add_address(&peer, addr);
            }
        }
        if mesh && self.own_put_pending {
            let now = Timestamp::now();
            if let Some(ad) = self.own.current().cloned() {
                self.put_own_record(&ad, &now);
            }
        }
    }

    fn on_amino(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        let result = match self.on_provider_query(Stage::Amino, id, result, step.last) {
            Some(r) => r,
            None => return,
        };
        let Some(node) = self.pending.query(Stage::Amino, id) else {
            return;
        };
        if let QueryResult::GetClosestPeers(r) = result {
            let target = node.to_peer_id().ok();
            let peers = match r {
                Ok(ok) => ok.peers,
                Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
            };
            let hit = peers
                .into_iter()
                .find(|p| Some(p.peer_id) == target && !p.addrs.is_empty());
            if let Some(p) = hit {
                let found = Found {
                    node: node.to_string(),
                    addrs: p.addrs.iter().map(ToString::to_string).collect(),
                    advert: None,
                    source: "amino",
                };
                let waiters = self.pending.finish_lookup(&node);
                self.found(node, found, waiters);
            } else if step.last {
                self.lookup_failed(&node);
            }
        }
        if step.last {
            self.pending.end_query(Stage::Amino, id);
        }
    }

    fn on_mesh_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                self.idle.conns.touch(&source, Instant::now());
                let now = Timestamp::now();
                let store = self.swarm.behaviour_mut().mesh_kad.store_mut();
                match mesh_advert::kad::accept_put(store, record, &now) {
                    Ok(ad) => {
                        let node = ad.node_id();
                        let seq = ad.sequence_no();
                        if let Err(e) = self.store.insert(ad, &now) {
                            tracing::debug!(error = %e, "dht advert not stored");
                        }
                        self.advert_stored(node, seq);
                    }
                    Err(e) => {
                        tracing::debug!(%source, code = e.code.as_str(), error = %e, "dht put refused");
                        self.emit_trace(TraceEvent::error(&e, self.node_id, now).with_peer(source));
                    }
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_mesh_query(id, result, step.last),
            kad::Event::ModeChanged { new_mode } => {
                tracing::info!(mode = %new_mode, "mesh DHT mode");
            }
            _ => {}
        }
    }

    /// Provider queries of either DHT; gives back every other result.
    fn on_provider_query(
        &mut self,
        stage: Stage,
        id: kad::QueryId,
        result: QueryResult,
        last: bool,
    ) -> Option<QueryResult> {
        match result {
            QueryResult::StartProviding(r) => {
                if let Some(ProviderWait::Provide(reply)) = self.pending.providers_done(stage, id) {
                    let _ = reply.send(r.map(|_| ()).map_err(|e| {
                        MeshError::new(
                            mesh_core::ErrorCode::TransportUnavailable,
                            format!("provider record: {e}"),
                        )
                    }));
                }
                None
            }
            QueryResult::GetProviders(r) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                    match self.pending.swarm_query(stage, id) {
                        Some(key) => self.swarm_providers_found(key, providers),
                        None => self.pending.providers_found(stage, id, providers),
                    }
                }
                if last
                    && let Some(ProviderWait::Find(reply, set)) =
                        self.pending.providers_done(stage, id)
                {
                    let _ = reply.send(Ok(set.into_iter().collect()));
                }
                None
            }
            other => Some(other),
        }
    }

    fn on_mesh_query(&mut self, id: kad::QueryId, result: QueryResult, last: bool) {
        let Some(result) = self.on_provider_query(Stage::MeshDht, id, result, last) else {
            return;
        };
        match result {
            QueryResult::GetRecord(r) => {
                let Some(node) = self.pending.query(Stage::MeshDht, id) else {
                    return;
                };
                let now = Timestamp::now();
                let valid = match r {
                    Ok(GetRecordOk::FoundRecord(found)) => {
                        match mesh_advert::kad::validate_record(&found.record, &now) {
                            Ok(ad) if ad.node_id() == node => Some(ad),
                            Ok(_) => None,
                            Err(e) => {
                                tracing::debug!(error = %e, "invalid DHT record ignored");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                if let Some(ad) = valid {
                    if let Some(mut q) = self.swarm.behaviour_mut().mesh_kad.query_mut(&id) {
                        q.finish();
                    }
                    self.pending.end_query(Stage::MeshDht, id);
                    if let Err(e) = self.store.insert(ad.clone(), &now) {
                        tracing::debug!(error = %e, "looked-up advert not stored");
                    }
                    let waiters = self.pending.finish_lookup(&node);
                    self.found(node, Found::from_advert(&ad, "mesh-dht"), waiters);
                } else if last {
                    self.pending.end_query(Stage::MeshDht, id);
                    self.lookup_on_amino(node);
                }
            }
            QueryResult::PutRecord(Err(e)) => {
                tracing::debug!(error = %e, "own record put failed");
                self.own_put_pending = true;
            }
            _ => {}
        }
    }

    /// The mesh DHT had nothing: ask Amino's peer routing for the peer's addresses.
    fn lookup_on_amino(&mut self, node: NodeId) {
        let Ok(peer) = node.to_peer_id() else {
            return self.lookup_failed(&node);
        };
        if self.swarm.behaviour_mut().amino.kbuckets().next().is_none() {
            return self.lookup_failed(&node);
        }
        let q = self.swarm.behaviour_mut().amino.get_closest_peers(peer);
        self.pending.next_stage(node, q, Stage::Amino);
    }

    fn lookup_failed(&mut self, node: &NodeId) {
        for after in self.pending.finish_lookup(node) {
            self.fail_after(
                after,
                MeshError::new(
                    mesh_core::ErrorCode::TransportUnavailable,
                    format!("{node}: not in the store, the mesh DHT or Amino"),
                ),
            );
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let (propagation_source, message_id, message) = match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => (propagation_source, message_id, message),
            gossipsub::Event::Subscribed { topic, .. } => {
                return self.on_swarm_subscribed(topic.as_str());
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                let n = failed_messages.priority + failed_messages.non_priority;
                self.gossip_send_failed = self.gossip_send_failed.saturating_add(n as u64);
                tracing::debug!(peer = %peer_id, ?failed_messages, "gossipsub: slow peer");
                return;
            }
            _ => return,
        };
        let topic = message.topic.to_string();
        if let Some(key) = mesh_signal::swarm::DiscoveryKey::from_topic(&topic)
            && self.swarms.is_joined(&key)
        {
            let acceptance = self.on_swarm_gossip(key, message.source, &message.data);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, acceptance);
            return;
        }
        let acceptance = if message.data.is_empty() || !self.topics.contains(&topic) {
            gossipsub::MessageAcceptance::Reject
        } else {
            gossipsub::MessageAcceptance::Accept
        };
        let accepted = matches!(acceptance, gossipsub::MessageAcceptance::Accept);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, acceptance);
        if accepted {
            self.emit(NodeEvent::GossipMessage {
                topic,
                source: message.source,
                data: message.data,
            });
        }
    }

    fn on_advert(&mut self, event: mesh_advert::Event) {
        match event {
            mesh_advert::Event::Stored {
                node, sequence_no, ..
            } => {
                self.learn_addresses(&node);
                self.advert_stored(node, sequence_no);
            }
            mesh_advert::Event::Response {
                result: Ok(mesh_advert::Answer::Found(ad)),
                ..
            } => {
                let node = ad.node_id();
                self.learn_addresses(&node);
                self.advert_stored(node, ad.sequence_no());
            }
            mesh_advert::Event::Rejected { peer, error } => {
                tracing::debug!(%peer, code = error.code.as_str(), %error, "advert refused");
            }
            _ => {}
        }
    }

    /// One `AdvertStored` per node and sequence number, however the advertisement came
    /// (pushed by a peer, fetched by our lookup, put through the DHT).
    fn advert_stored(&mut self, node: NodeId, sequence_no: u64) {
        if self.adverts_seen.get(&node) == Some(&sequence_no) {
            return;
        }
        if self.adverts_seen.len() >= ADVERTS_SEEN {
            self.adverts_seen.clear();
        }
        self.adverts_seen.insert(node, sequence_no);
        self.emit(NodeEvent::AdvertStored { node, sequence_no });
    }

    /// A node's verified advertisement is in the store: its addresses go to the mesh
    /// DHT's routing table, if the node is in it already (Kademlia put it there after
    /// the node answered on `/mesh/kad`, or identify said it serves the DHT). An
    /// advertisement does not say whether its node serves the DHT, and a client in the
    /// routing table is dialed by every query and handed to every asker.
    fn learn_addresses(&mut self, node: &NodeId) {
        let now = Timestamp::now();
        let (Some(held), Ok(peer)) = (self.store.get(node, &now), node.to_peer_id()) else {
            return;
        };
        if !self.in_mesh_dht(&peer) {
            return;
        }
        // Relay circuits stay out: a DHT query should not open circuits.
        for addr in routing::advert_addrs(&held.advert) {
            if !super::route::is_circuit(&addr) {
                self.swarm.behaviour_mut().mesh_kad.add_address(&peer, addr);
            }
        }
    }

    /// Whether `peer` is in the mesh DHT's routing table.
    fn in_mesh_dht(&mut self, peer: &PeerId) -> bool {
        let kad = &mut self.swarm.behaviour_mut().mesh_kad;
        kad.kbucket(*peer)
            .is_some_and(|b| b.iter().any(|e| e.node.key.preimage() == peer))
    }

    fn on_session(&mut self, event: mesh_session::Event) {
        match event {
            mesh_session::Event::SessionEstablished {
                peer,
                node,
                capabilities,
            } => {
                self.swarm
                    .behaviour_mut()
                    .signal
                    .set_forwardable(peer, true);
                // The advertisement exchange: ours to the peer, theirs from the peer.
                if let Some(ad) = self.own.current().cloned() {
                    self.swarm.behaviour_mut().advert.publish(&peer, ad);
                }
                self.swarm.behaviour_mut().advert.lookup(&peer, node);
                self.emit(NodeEvent::SessionEstablished {
                    peer,
                    node,
                    capabilities,
                });
            }
            mesh_session::Event::SessionClosed { peer, node } => {
                self.swarm
                    .behaviour_mut()
                    .signal
                    .set_forwardable(peer, false);
                self.emit(NodeEvent::SessionClosed { peer, node });
            }
            mesh_session::Event::Rejected {
                peer,
                error,
                by_peer,
                ..
            } => self.emit(NodeEvent::SessionRejected {
                peer,
                code: error.code.as_str().into(),
                message: error.detail.clone(),
                by_peer,
            }),
            mesh_session::Event::KeepaliveLost { peer } => {
                self.emit(NodeEvent::KeepaliveLost { peer });
            }
            mesh_session::Event::KeepaliveRestored { peer } => {
                self.emit(NodeEvent::KeepaliveRestored { peer });
            }
            mesh_session::Event::HandshakeStarted { .. } | mesh_session::Event::Pinged { .. } => {}
        }
    }

    fn on_marker(&mut self, event: mesh_session::marker::Event) {
        match event {
            mesh_session::marker::Event::Received { peer, envelope } => {
                self.emit(NodeEvent::MarkerReceived {
                    peer,
                    participant: envelope.sender().to_string(),
                    message_id: envelope.message_id().to_owned(),
                    marker_ref: envelope.marker_ref().to_owned(),
                });
            }
            mesh_session::marker::Event::Sent { peer, message_id } => {
                if let Some(reply) = self.pending.marker_sent(&peer, &message_id) {
                    let _ = reply.send(Ok(message_id));
                }
            }
            mesh_session::marker::Event::Refused {
                peer,
                error,
                by_peer: true,
            } => {
                if let Some(reply) = self.pending.marker_refused(&peer) {
                    let _ = reply.send(Err(error));
                }
            }
            mesh_session::marker::Event::Refused { .. } => {}
        }
    }
}

/// The peer an advertisement event is about, if any.
fn advert_peer(e: &mesh_advert::Event) -> Option<PeerId> {
    match e {
        mesh_advert::Event::Stored { peer, .. }
        | mesh_advert::Event::Withdrawn { peer, .. }
        | mesh_advert::Event::Rejected { peer, .. }
        | mesh_advert::Event::Response { peer, .. } => Some(*peer),
        _ => None,
    }
}

fn session_peer(e: &mesh_session::Event) -> PeerId {
    match e {
        mesh_session::Event::HandshakeStarted { peer }
        | mesh_session::Event::SessionEstablished { peer, .. }
        | mesh_session::Event::Rejected { peer, .. }
        | mesh_session::Event::KeepaliveLost { peer }
        | mesh_session::Event::KeepaliveRestored { peer }
        | mesh_session::Event::SessionClosed { peer, .. }
        | mesh_session::Event::Pinged { peer, .. } => *peer,
    }
}

fn marker_peer(e: &mesh_session::marker::Event) -> PeerId {
    match e {
        mesh_session::marker::Event::Received { peer, .. }
        | mesh_session::marker::Event::Sent { peer, .. }
        | mesh_session::marker::Event::Refused { peer, .. } => *peer,
    }
}

/// The peer that carried a signaling frame, if the event names one.
fn signal_peer(e: &mesh_signal::Event) -> Option<PeerId> {
    match e {
        mesh_signal::Event::Received { via, .. } => Some(*via),
        mesh_signal::Event::Delivered { peer, .. } | mesh_signal::Event::Refused { peer, .. } => {
            Some(*peer)
        }
        mesh_signal::Event::Forwarded { to, .. } => to.to_peer_id().ok(),
    }
}
