//! The node's dispatch of every swarm event: each goes to the component that owns
//! what it is about, and the actions that component returns are carried out.

use std::time::Instant;

use libp2p::kad;
use libp2p::metrics::Recorder;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{PeerId, gossipsub, identify, ping};
use mesh_advert::AdvertStore;
use mesh_advert::kad::DhtEntry;
use mesh_core::{Timestamp, TraceEvent, TraceEventType};

use super::behaviour::MeshBehaviourEvent;
use super::discovery_trace::routing_updated as discovered;
use super::view::Now;
use super::{Node, NodeEvent, addrs, dht, router};

mod groups;

impl Node {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<MeshBehaviourEvent>) {
        self.metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(e) => self.on_behaviour_event(e),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.own.addrs_changed();
                self.emit(NodeEvent::Listening { addr: address });
            }
            SwarmEvent::ExpiredListenAddr { .. }
            | SwarmEvent::ExternalAddrConfirmed { .. }
            | SwarmEvent::ExternalAddrExpired { .. } => self.own.addrs_changed(),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                if let Some(local) = self.probe_ports.established(connection_id, &addr) {
                    tracing::debug!(%peer_id, %local, "connection on a birthday probe port");
                }
                self.idle.conns.established(
                    connection_id,
                    peer_id,
                    endpoint.is_dialer(),
                    router::plan::is_circuit(&addr),
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
                // Per-network limits (DHT records, table pages, punches) read the
                // connections' remotes from here: a circuit through our reservation
                // counts under its relay.
                let local = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } => Some(local_addr),
                    libp2p::core::ConnectedPoint::Dialer { .. } => None,
                };
                let counted = mesh_core::ipkey::counted_remote(&addr, local).clone();
                for after in self.waiting.connection_up(connection_id, peer_id, counted) {
                    self.connected(peer_id, after);
                }
                let actions = self.router.connection_up(peer_id, &addr, Instant::now());
                self.apply(actions);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.idle.conns.closed(connection_id, peer_id);
                self.waiting.connection_down(connection_id, peer_id);
                // A probe port's listener goes with its connection.
                if let Some(local) = self.probe_ports.closed(connection_id) {
                    tracing::debug!(%peer_id, %local, "birthday probe port released");
                }
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
                let text = super::dial_error::describe(&error);
                tracing::debug!(?peer_id, error = %text, "dial failed");
                self.dial_failed(connection_id, peer_id, &text);
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
                if self
                    .relays
                    .listener_closed(listener_id, &reason, Instant::now())
                {
                    self.own.addrs_changed();
                }
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
                super::identify_metrics::record(&self.metrics, &e);
                if let identify::Event::Received {
                    peer_id,
                    info,
                    connection_id,
                } = e
                {
                    self.on_identify(peer_id, connection_id, &info);
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
                self.stats.kad(super::Dht::Amino, &e);
                if let kad::Event::RoutingUpdated {
                    peer, addresses, ..
                } = &e
                {
                    let bootstrap = &self.config.bootstrap;
                    let addrs: Vec<libp2p::Multiaddr> = addresses.iter().cloned().collect();
                    dht::scope_amino_entry(
                        self.swarm.behaviour_mut(),
                        peer,
                        &addrs,
                        || bootstrap.addrs().unwrap_or_default(),
                        self.config.amino_private_addrs,
                    );
                }
                let (keep, bootstrap) = (self.config.amino_private_addrs, &self.config.bootstrap);
                // The configured bootstrap addresses are parsed once per event, and only
                // when an address is not Amino-worthy by itself.
                let configured = std::cell::OnceCell::new();
                let scoped = |a: &libp2p::Multiaddr| {
                    dht::amino_worthy(a, keep)
                        || (configured.get_or_init(|| bootstrap.addrs().unwrap_or_default()))
                            .iter()
                            .any(|c| addrs::without_peer(c) == addrs::without_peer(a))
                };
                let now = Timestamp::now();
                if let Some(t) = discovered(self.node_id, "amino", &e, scoped, &now) {
                    self.emit_trace(t);
                }
                if let kad::Event::InboundRequest {
                    request:
                        kad::InboundRequest::AddProvider {
                            record: Some(record),
                        },
                } = e
                {
                    // Refusals are not traced: Amino is anyone's.
                    let provider = record.provider;
                    self.idle.conns.touch(&provider, Instant::now());
                    let remote = super::view::View::remote_addrs(&view!(self), &provider);
                    let (b, book) = (self.swarm.behaviour_mut(), &mut self.amino_providers);
                    let _ = dht::take_provider(b, book, super::Dht::Amino, record, &remote);
                    return;
                }
                self.on_amino(e);
            }
            MeshBehaviourEvent::MeshKad(e) => {
                self.stats.kad(super::Dht::Mesh, &e);
                let now = Timestamp::now();
                if let Some(t) = discovered(self.node_id, "mesh-dht", &e, |_| true, &now) {
                    self.emit_trace(t);
                }
                self.on_mesh_kad(e);
            }
            MeshBehaviourEvent::Gossipsub(e) => {
                self.metrics.record(&e);
                self.on_gossip(e);
            }
            MeshBehaviourEvent::AutonatClient(e) => {
                let reachable = e.result.is_ok();
                tracing::debug!(addr = %e.tested_addr, reachable, "autonat test");
                self.nat
                    .insert(e.tested_addr.clone(), reachable, Instant::now());
                self.emit(NodeEvent::Reachability {
                    addr: e.tested_addr,
                    reachable,
                });
            }
            MeshBehaviourEvent::Admission(mesh_admission::server::Event::Relay(e)) => {
                self.metrics.record(&e);
                tracing::debug!(?e, "relay server");
                self.idle.relay_event(&e, Instant::now());
            }
            MeshBehaviourEvent::Admission(e) => {
                self.stats.relay(&e);
                tracing::debug!(?e, "relay admission");
            }
            MeshBehaviourEvent::AdmissionClient(e) => {
                self.stats.relay_answer(&e);
                let relay = super::relays::event_relay(&e);
                let mut actions = self.relays.on_admission(e, Instant::now());
                actions.extend(self.router.grant_answered(relay));
                self.apply(actions);
            }
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
                if matches!(e.result, Err(ping::Failure::Unsupported)) {
                    self.relays.unpingable(&e.peer);
                }
                if let Ok(rtt) = e.result {
                    self.relays.rtt(&e.peer, rtt, Instant::now());
                    self.emit(NodeEvent::Pinged { peer: e.peer, rtt });
                }
            }
            MeshBehaviourEvent::Session(e) => {
                self.stats.session(&e);
                self.idle.conns.touch(&session_peer(&e), Instant::now());
                self.on_session(e)
            }
            MeshBehaviourEvent::Marker(e) => {
                self.idle.conns.touch(&marker_peer(&e), Instant::now());
                if let Some(event) = self.waiting.on_marker(e) {
                    self.emit(event);
                }
            }
            MeshBehaviourEvent::Signal(e) => {
                self.stats.signal(&e);
                if let Some(peer) = signal_peer(&e) {
                    self.idle.conns.touch(&peer, Instant::now());
                }
                let now = Instant::now();
                let groups = &self.groups;
                let member = |n: &mesh_core::NodeId| groups.is_member(n);
                let actions = self.router.on_signal(e, &view!(self), &member, now);
                self.apply(actions);
            }
            MeshBehaviourEvent::SwarmTable(e) => self.on_swarm_table(e),
            MeshBehaviourEvent::AutonatServer(_)
            | MeshBehaviourEvent::RelayClient(_)
            | MeshBehaviourEvent::Limits(_)
            | MeshBehaviourEvent::Memory(_)
            | MeshBehaviourEvent::Perf(_) => {}
        }
    }

    /// identify told us a peer's protocols and listen addresses: feed both DHTs, and
    /// put our record again if a mesh-DHT peer appeared after a failed put.
    fn on_identify(&mut self, peer: PeerId, connection: ConnectionId, info: &identify::Info) {
        if let Some(remote) = self
            .swarm
            .behaviour()
            .identify
            .remote_addr(connection)
            .cloned()
        {
            self.router
                .observed(&remote, &info.observed_addr, &view!(self), Instant::now());
        }
        let keep = self.config.amino_private_addrs;
        // The listen addresses the identify wrapper kept (plausible from the peer's
        // connection, `identify_observed::worth_dialing`), not all it listed: the
        // routing tables dial them and hand them to every querier.
        let kept = self.swarm.behaviour().identify.kept_addrs(&peer).to_vec();
        let mesh = dht::learn_from_identify(self.swarm.behaviour_mut(), peer, info, &kept, keep);
        if mesh {
            let actions = self.own.dht_peer_appeared(&Timestamp::now());
            self.apply(actions);
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
                // Counted under the putter's network in the advertisement store.
                let remote = super::view::View::remote_addrs(&view!(self), &source);
                let from = mesh_advert::Source::of_peer(source, &remote);
                // Not older than what the advertisement store holds (a replay of what
                // the node signed before its latest, or before it withdrew).
                let held = mesh_advert::kad::node_of_key(&record.key)
                    .and_then(|node| self.store.durable().held_sequence(&node));
                let store = self.swarm.behaviour_mut().mesh_kad.store_mut();
                match self.records.accept_above(store, record, from, held, &now) {
                    Ok(DhtEntry::Advert(ad)) => {
                        let node = ad.node_id();
                        let seq = ad.sequence_no();
                        if let Err(e) = self.store.insert_from(ad, from, &now) {
                            tracing::debug!(error = %e, "dht advert not stored");
                            return;
                        }
                        self.stats.advert_stored("dht");
                        self.emit_trace(super::discovery_trace::fetched(
                            self.node_id,
                            Some(source),
                            &node,
                            seq,
                            super::discovery_trace::Source::DhtPut,
                            &now,
                        ));
                        if let Some(e) = self.seen.stored(node, seq) {
                            self.emit(e);
                        }
                    }
                    Ok(DhtEntry::Withdrawn(w)) => {
                        // The tombstone refuses replays of older advertisements.
                        if let Err(e) = self.store.withdraw_from(&w, from, &now) {
                            tracing::debug!(error = %e, "dht withdrawal not applied");
                        }
                    }
                    Err(e) => {
                        self.stats.dht_record_refused(super::Dht::Mesh, &e);
                        tracing::debug!(%source, code = e.code.as_str(), error = %e, "dht put refused");
                        if self.trace.enabled() && self.trace_budget.admit(&from, &now) {
                            if super::discovery_trace::is_about_advert(&e) {
                                self.emit_trace(super::discovery_trace::rejected(
                                    self.node_id,
                                    Some(source),
                                    &e,
                                    super::discovery_trace::Source::DhtPut,
                                    &now,
                                ));
                            }
                            let error = TraceEvent::error(&e, self.node_id, now);
                            self.emit_trace(error.with_peer(source));
                        }
                    }
                }
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => {
                let provider = record.provider;
                self.idle.conns.touch(&provider, Instant::now());
                let remote = super::view::View::remote_addrs(&view!(self), &provider);
                let b = self.swarm.behaviour_mut();
                let r =
                    dht::take_provider(b, &mut self.providers, super::Dht::Mesh, record, &remote);
                let now = Timestamp::now();
                if let Err(e) = r
                    && self
                        .trace_budget
                        .admit(&mesh_advert::Source::of_peer(provider, &remote), &now)
                {
                    self.emit_trace(TraceEvent::error(&e, self.node_id, now).with_peer(provider));
                }
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => self.on_mesh_query(id, result, step.last, stats.num_requests() > 0),
            kad::Event::ModeChanged { new_mode } => {
                tracing::info!(mode = %new_mode, "mesh DHT mode");
            }
            _ => {}
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
                let actions = self
                    .groups
                    .subscribed(topic.as_str(), &view!(self), &Now::current());
                return self.apply(actions);
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
        if let Some(key) = mesh_signal::group::DiscoveryKey::from_topic(&topic)
            && self.groups.is_joined(&key)
            && super::swarm_marker::is_marker(&message.data)
        {
            let acceptance =
                self.on_swarm_marker(key, message.source, propagation_source, &message.data);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, acceptance);
            return;
        }
        if let Some(key) = mesh_signal::group::DiscoveryKey::from_topic(&topic)
            && self.groups.is_joined(&key)
        {
            let (acceptance, actions) = self.groups.on_gossip(
                key,
                message.source,
                propagation_source,
                &message.data,
                &view!(self),
                &Timestamp::now(),
            );
            // Refused presences are traced within the budget of the neighbour that
            // handed them over (their authors may be fresh keys, one a message).
            let (view, budget) = (view!(self), &mut self.trace_budget);
            let (now, on) = (Timestamp::now(), self.trace.enabled());
            let actions = super::trace_budget::errors_within(actions, || {
                on && budget.admit_peer(&view, propagation_source, &now)
            });
            self.apply(actions);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, acceptance);
            return;
        }
        // The application's topics: within the forwarder network's rate and the node's
        // (`app_topics`).
        let forwarder = {
            use super::view::View as _;
            let (view, via) = (view!(self), propagation_source);
            mesh_advert::Source::for_rates_of(via, &view.remote_addrs(&via), &view.listen_addrs())
        };
        let now = Timestamp::now();
        let acceptance = self.topics.accept(&topic, &message.data, &forwarder, &now);
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
        use super::discovery_trace::{Source, fetched, is_about_advert, rejected};
        let now = Timestamp::now();
        match event {
            mesh_advert::Event::Stored {
                peer,
                node,
                sequence_no,
                ..
            } => {
                if let Some(held) = self.store.get(&node, &now) {
                    let own: Vec<libp2p::Multiaddr> = (self.swarm.listeners())
                        .chain(self.swarm.external_addresses())
                        .cloned()
                        .collect();
                    dht::learn_advert(self.swarm.behaviour_mut(), &held, &own);
                }
                self.stats.advert_stored("push");
                let me = self.node_id;
                self.emit_trace(fetched(
                    me,
                    Some(peer),
                    &node,
                    sequence_no,
                    Source::Peer,
                    &now,
                ));
                if let Some(e) = self.seen.stored(node, sequence_no) {
                    self.emit(e);
                }
            }
            mesh_advert::Event::Response {
                peer,
                result: Ok(mesh_advert::Answer::Found(ad)),
                ..
            } => {
                let node = ad.node_id();
                if let Some(held) = self.store.get(&node, &now) {
                    let own: Vec<libp2p::Multiaddr> = (self.swarm.listeners())
                        .chain(self.swarm.external_addresses())
                        .cloned()
                        .collect();
                    dht::learn_advert(self.swarm.behaviour_mut(), &held, &own);
                }
                self.stats.advert_stored("lookup");
                let (me, seq) = (self.node_id, ad.sequence_no());
                self.emit_trace(fetched(me, Some(peer), &node, seq, Source::Peer, &now));
                if let Some(e) = self.seen.stored(node, seq) {
                    self.emit(e);
                }
            }
            mesh_advert::Event::Withdrawn {
                peer, withdrawal, ..
            } => {
                // Our mesh-DHT record store takes the verified withdrawal in place of
                // the record it holds for that node, so our DHT answers no longer serve
                // the advertisement; counted under the sender's network like a PUT. A
                // withdrawal of a node we hold nothing of takes no room (fresh keys
                // cost nothing, and the request is forwarded to other nodes).
                let record = mesh_advert::kad::record_for_withdrawal(&withdrawal, &now);
                let held = kad::store::RecordStore::get(
                    self.swarm.behaviour_mut().mesh_kad.store_mut(),
                    &record.key,
                )
                .is_some();
                if !held {
                    return;
                }
                let remote = super::view::View::remote_addrs(&view!(self), &peer);
                let from = mesh_advert::Source::of_peer(peer, &remote);
                let store = self.swarm.behaviour_mut().mesh_kad.store_mut();
                if let Err(e) = self.records.accept(store, record, from, &now) {
                    tracing::debug!(error = %e, "withdrawal not taken into the DHT store");
                }
            }
            mesh_advert::Event::Rejected { peer, error } => {
                self.stats.advert_refused(&error);
                tracing::debug!(%peer, code = error.code.as_str(), %error, "advert refused");
                if !is_about_advert(&error) || !self.trace.enabled() {
                    return;
                }
                let remote = super::view::View::remote_addrs(&view!(self), &peer);
                let from = mesh_advert::Source::of_peer(peer, &remote);
                if self.trace_budget.admit(&from, &now) {
                    let me = self.node_id;
                    self.emit_trace(rejected(me, Some(peer), &error, Source::Peer, &now));
                }
            }
            _ => {}
        }
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
