//! Where components' actions meet the swarm: the [`View`] the node gives its
//! components, and the loop that carries out their [`Action`]s (reporting what failed
//! at once back to the component that asked).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use libp2p::gossipsub::TopicHash;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, gossipsub};
use mesh_advert::AdvertStore;
use mesh_core::{ErrorCode, MeshError, NodeId, Timestamp, TraceEvent};
use mesh_session::governor::Temperature;

use super::action::Action;
use super::api::{Dht, HandleError};
use super::relays::Relays;
use super::store::SharedAdverts;
use super::view::View;
use super::waiting::{ProviderWait, Waiting};
use super::{Node, addrs};

/// The node's state as its components may read it.
pub(crate) struct NodeView<'a> {
    pub(crate) swarm: &'a super::NodeSwarm,
    pub(crate) waiting: &'a Waiting,
    pub(crate) relays: &'a Relays,
    pub(crate) store: &'a SharedAdverts,
}

impl View for NodeView<'_> {
    fn local_peer(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn is_connected(&self, peer: &PeerId) -> bool {
        self.swarm.is_connected(peer)
    }

    fn connected_peers(&self) -> Vec<PeerId> {
        self.swarm.connected_peers().copied().collect()
    }

    fn remote_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.waiting.remote_addrs(peer)
    }

    fn has_session(&self, peer: &PeerId) -> bool {
        self.swarm.behaviour().session.session(peer).is_some()
    }

    fn offers(&self, peer: &PeerId, capability: &str) -> bool {
        self.swarm
            .behaviour()
            .session
            .session(peer)
            .is_some_and(|s| s.capabilities.iter().any(|c| c == capability))
    }

    fn signal_reaches(&self, peer: &PeerId) -> bool {
        self.swarm.behaviour().signal.is_connected(peer)
    }

    fn external_addrs(&self) -> Vec<Multiaddr> {
        self.swarm.external_addresses().cloned().collect()
    }

    fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.swarm.listeners().cloned().collect()
    }

    fn stored_addrs(&self, node: &NodeId) -> Vec<Multiaddr> {
        self.store
            .get(node, &Timestamp::now())
            .and_then(|held| held.decoded())
            .map(|ad| addrs::advert_addrs(&ad))
            .unwrap_or_default()
    }

    fn may_open_circuit(&self, relay: &PeerId, target: NodeId) -> bool {
        self.relays
            .may_open_circuit(relay, target, &Timestamp::now())
    }

    fn is_hot(&self, peer: &PeerId) -> bool {
        let gov = self.swarm.behaviour().session.governor();
        NodeId::from_peer_id(peer)
            .ok()
            .and_then(|n| gov.temperature(&n))
            == Some(Temperature::Hot)
    }

    fn topics(&self) -> Vec<TopicHash> {
        self.swarm.behaviour().gossipsub.topics().cloned().collect()
    }

    fn topic_mesh(&self, topic: &TopicHash) -> Vec<PeerId> {
        self.swarm
            .behaviour()
            .gossipsub
            .mesh_peers(topic)
            .copied()
            .collect()
    }

    fn topic_subscribers(&self, topic: &TopicHash) -> Vec<PeerId> {
        self.swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, ts)| ts.contains(&topic))
            .map(|(p, _)| *p)
            .collect()
    }
}

impl Node {
    /// Carries out `actions` in order, and whatever the reports of immediate failures
    /// lead to.
    pub(super) fn apply(&mut self, actions: Vec<Action>) {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let now = Instant::now();
            match action {
                Action::Dial(opts) => {
                    let cid = opts.connection_id();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(error = %e, "dial not started");
                        queue.extend(self.router.dial_failed(
                            cid,
                            &e.to_string(),
                            &view!(self),
                            now,
                        ));
                    }
                }
                Action::Close(id) => {
                    self.swarm.close_connection(id);
                }
                Action::Disconnect(peer) => {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Action::SendFrame { frame, via } => {
                    self.stats.signal_sent(frame.kind());
                    if let Err(e) = self.swarm.behaviour_mut().signal.send(&frame, via) {
                        tracing::debug!(error = %e, "signal frame not sent");
                        let fid = frame.frame_id().to_owned();
                        queue.extend(self.router.frame_refused(&fid, e, &view!(self), now));
                    }
                }
                Action::CorrelationDone { node, correlation } => {
                    let _ = self.swarm.behaviour_mut().signal.correlations_mut().done(
                        &node,
                        &correlation,
                        &Timestamp::now(),
                    );
                }
                Action::Lookup { node, after } => self.lookup(node, after, false),
                Action::Continue { peer, after } => self.connected(peer, after),
                Action::AnswerRoute { reply, result } => {
                    let _ = reply.send(result);
                }
                Action::Fail { after, error } => after.fail(error),
                Action::AskRelay {
                    relay,
                    purpose,
                    addrs,
                    keep,
                } => {
                    let client = &mut self.swarm.behaviour_mut().admission_client;
                    let asked = if keep {
                        client.keep(relay, purpose, addrs)
                    } else {
                        client.request(relay, purpose, addrs).map(|_| ())
                    };
                    if let Err(e) = asked {
                        if keep {
                            tracing::warn!(%relay, error = %e, "cannot ask relay for admission");
                            self.relays.ask_failed(&relay, now);
                        } else {
                            tracing::debug!(%relay, error = %e, "no circuit admission request");
                            queue.extend(self.router.grant_answered(relay));
                        }
                    }
                }
                Action::ForgetRelay(relay) => {
                    self.swarm.behaviour_mut().admission_client.forget(&relay);
                }
                Action::ListenVia { relay, addr } => match self.swarm.listen_on(addr.clone()) {
                    Ok(id) => self.relays.listening(id, relay),
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot reserve on relay");
                        self.relays.listen_failed(&relay, now);
                    }
                },
                Action::StopListening(id) => {
                    self.swarm.remove_listener(id);
                }
                Action::PublishPresence {
                    key,
                    presence,
                    data,
                } => {
                    let topic = gossipsub::IdentTopic::new(key.topic());
                    match self.swarm.behaviour_mut().gossipsub.publish(topic, data) {
                        Ok(_) => {
                            let now = super::view::Now::current();
                            let more =
                                self.groups
                                    .presence_sent(&key, presence, &view!(self), &now);
                            queue.extend(more);
                        }
                        Err(e) => {
                            tracing::debug!(node = %self.node_id, swarm = %key, presence, error = %e, "presence not published yet");
                        }
                    }
                }
                Action::AskTable { peer, request } => {
                    let key = request.key;
                    let b = self.swarm.behaviour_mut();
                    let id = b.swarm_table.send_request(&peer, Ok(request));
                    self.groups.table_asked(id, key);
                }
                Action::FindGroupProviders(key) => {
                    let q = self
                        .swarm
                        .behaviour_mut()
                        .mesh_kad
                        .get_providers(libp2p::kad::RecordKey::new(&key.provider_key()));
                    self.waiting
                        .wait_providers(Dht::Mesh, q, ProviderWait::Group(key));
                }
                Action::PresentAdvert(ad) => {
                    let client = &mut self.swarm.behaviour_mut().admission_client;
                    client.set_advertisement(ad.map(|a| *a));
                }
                Action::PutOwnRecord(record) => {
                    let kad = &mut self.swarm.behaviour_mut().mesh_kad;
                    // Counted for nobody, with room made in a full store.
                    if let Err(e) = self.records.put_own(kad.store_mut(), &record) {
                        tracing::debug!(error = %e, "own record not stored");
                    }
                    let put = kad.put_record(record, libp2p::kad::Quorum::One);
                    if let Err(e) = &put {
                        tracing::debug!(error = ?e, "own record not put");
                    }
                    self.own.put_started(put.ok());
                }
                Action::PushAdvert { peer, advert } => {
                    self.swarm.behaviour_mut().advert.publish(&peer, *advert);
                }
                Action::PushWithdrawal { peer, withdrawal } => {
                    self.swarm
                        .behaviour_mut()
                        .advert
                        .withdraw(&peer, *withdrawal);
                }
                Action::ProbeBind { job, toward } => {
                    let port = self.prober.bind(job, toward).map_err(|e| e.to_string());
                    queue.extend(self.router.birthday_bound(job, port, &view!(self), now));
                }
                Action::ProbeSpray {
                    job,
                    ip,
                    token,
                    count,
                } => {
                    if let Err(e) = self.prober.spray(job, ip, token, count) {
                        queue.extend(self.router.birthday_failed(job, format!("spray: {e}")));
                    }
                }
                Action::ProbeSockets {
                    job,
                    target,
                    token,
                    count,
                } => {
                    if let Err(e) = self.prober.sockets(job, target, token, count) {
                        queue.extend(self.router.birthday_failed(job, format!("sockets: {e}")));
                    }
                }
                Action::ProbeListen { local, remote } => {
                    probe_listen(&mut self.swarm, &self.probe_ports, local, remote, now)
                }
                Action::ProbeEnd(job) => self.prober.end(job),
                Action::Emit(event) => self.emit(event),
                Action::Trace(event) => {
                    // An `error/occurred` about a peer's input: within the trace budget
                    // of the peer's source (`trace_budget`).
                    let admitted = match super::trace_budget::peer_of_error(&event) {
                        _ if !self.trace.enabled() => false,
                        Some(peer) => self.trace_budget.admit_peer(&view!(self), peer, &event.ts),
                        None => true,
                    };
                    if admitted {
                        self.emit_trace(*event);
                    }
                }
            }
        }
    }

    /// An outgoing connection failed, or the swarm refused to start a dial: what
    /// waited for it (answered as connected when another connection to `peer` came up
    /// meanwhile: dials no longer wait on each other).
    pub(super) fn dial_failed(&mut self, cid: ConnectionId, peer: Option<PeerId>, text: &str) {
        let (waiters, relookup) = self.waiting.connection_failed(cid);
        for after in waiters {
            if let Some(p) = peer
                && self.swarm.is_connected(&p)
            {
                self.connected(p, after);
                continue;
            }
            match relookup {
                // The known addresses failed: the peer may have moved, look it up.
                Some(peer) => {
                    tracing::debug!(%peer, error = text, "known addresses failed: looking the peer up");
                    self.find_peer(peer, after, true);
                }
                None => after.fail(HandleError::Refused(MeshError::new(
                    ErrorCode::TransportUnavailable,
                    format!("dial failed: {text}"),
                ))),
            }
        }
        let actions = self
            .router
            .dial_failed(cid, text, &view!(self), Instant::now());
        self.apply(actions);
    }

    pub(super) fn emit_trace(&self, event: TraceEvent) {
        if self.trace.enabled() {
            self.trace.emit(&event);
        }
    }
}

/// Registers birthday probe port `local` for `remote` and listens on it through
/// the probe transport (which reports no address: nothing announces it).
fn probe_listen(
    swarm: &mut super::NodeSwarm,
    probe_ports: &super::birthday::quic::ProbePorts,
    local: SocketAddr,
    remote: SocketAddr,
    now: Instant,
) {
    if let Err(e) = probe_ports.open(local, remote, now) {
        return tracing::debug!(%local, error = %e, "probe port not registered");
    }
    let ip = match local.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    let addr = Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(local.port()))
        .with(Protocol::QuicV1);
    if let Err(e) = swarm.listen_on(addr) {
        tracing::debug!(%local, error = %e, "probe port listener not started");
        probe_ports.release(local);
    }
}
