//! The node's answers to the application's commands: each goes to the component
//! that owns what it asks about, or to the swarm.

use std::time::Instant;

use libp2p::swarm::DialError;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{PeerId, gossipsub, kad};
use mesh_core::{
    Artifact, ErrorCode, MeshError, MeshResult, Timestamp, TraceEvent, TraceEventType,
};
use mesh_signal::group::DiscoveryKey;

use super::api::{Command, Dht, HandleError, Target, Withdrawn, answer};
use super::gossip_filter::MAX_LOCAL_TOPICS;
use super::router::RouteWaiter;
use super::view::Now;
use super::waiting::{After, ProviderWait};
use super::{Node, addrs, relays, report};

fn not_a_relay() -> MeshError {
    MeshError::invalid("this node is not a relay server (run with --relay-server)")
}

impl Node {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { target, reply } => self.connect(target, After::Dial(reply)),
            Command::Lookup { node, fresh, reply } => {
                self.lookup(node, After::Lookup(reply), fresh)
            }
            Command::Publish { reply } => {
                let now = Timestamp::now();
                let endpoints = super::own_endpoints(&self.swarm, self.wss_public.as_ref());
                let r = self.own.publish_now(endpoints, &view!(self), &now);
                let r = r.map(|(seq, actions)| {
                    self.apply(actions);
                    seq
                });
                answer(reply, r);
            }
            Command::Withdraw { reply } => {
                let r = self.own.withdraw(&view!(self), &Timestamp::now());
                let r = r.map(|w| {
                    self.apply(w.actions);
                    Withdrawn {
                        sequence_no: w.withdrawal.sequence_no(),
                        withdrawal: w.withdrawal.to_json(),
                        sent_to_peers: w.peers,
                        dht_put: self.own.last_put().is_some(),
                    }
                });
                answer(reply, r);
            }
            Command::SendMarker {
                target,
                text,
                reply,
            } => self.connect(target, After::Marker { text, reply }),
            Command::Subscribe { topic, reply } => {
                let t = gossipsub::IdentTopic::new(topic.clone());
                let r = if self.topics.len() >= MAX_LOCAL_TOPICS && !self.topics.contains(&topic) {
                    Err(MeshError::new(
                        ErrorCode::TransportRejected,
                        format!("subscribe {topic}: the node holds {MAX_LOCAL_TOPICS} topics"),
                    ))
                } else {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .subscribe(&t)
                        .map_err(|e| MeshError::invalid(format!("subscribe {topic}: {e}")))
                };
                if r.is_ok() {
                    self.topics.insert(topic);
                }
                answer(reply, r);
            }
            Command::PublishTopic { topic, data, reply } => {
                let t = gossipsub::IdentTopic::new(topic.clone());
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(t, data)
                    .map(|id| id.to_string())
                    .map_err(|e| {
                        MeshError::new(
                            ErrorCode::TransportUnavailable,
                            format!("publish on {topic}: {e}"),
                        )
                    });
                answer(reply, r);
            }
            Command::Provide { dht, key, reply } => {
                let b = self.swarm.behaviour_mut();
                let kad = match dht {
                    Dht::Amino => &mut b.amino,
                    Dht::Mesh => &mut b.mesh_kad,
                };
                match kad.start_providing(kad::RecordKey::new(&key)) {
                    Ok(q) => self
                        .waiting
                        .wait_providers(dht, q, ProviderWait::Provide(reply)),
                    Err(e) => answer(
                        reply,
                        Err(MeshError::new(
                            ErrorCode::TransportRejected,
                            format!("provider record not stored: {e}"),
                        )),
                    ),
                }
            }
            Command::FindProviders { dht, key, reply } => {
                let b = self.swarm.behaviour_mut();
                let kad = match dht {
                    Dht::Amino => &mut b.amino,
                    Dht::Mesh => &mut b.mesh_kad,
                };
                let q = kad.get_providers(kad::RecordKey::new(&key));
                self.waiting
                    .wait_providers(dht, q, ProviderWait::Find(reply, Default::default()));
            }
            Command::Connect { node, reply } => {
                let now = Instant::now();
                let actions =
                    self.router
                        .connect(node, RouteWaiter::Route(reply), &view!(self), now);
                self.apply(actions);
            }
            Command::SendSignal {
                node,
                data,
                content_type,
                reply,
            } => {
                let actions = self.router.send_setup(
                    node,
                    data,
                    content_type,
                    reply,
                    &view!(self),
                    Instant::now(),
                );
                self.apply(actions);
            }
            Command::JoinGroup { key, reply } => {
                let r = self.join_group(key);
                answer(reply, r);
            }
            Command::LeaveGroup { key, reply } => {
                let _ = reply.send(Ok(self.leave_group(key)));
            }
            Command::GroupMembers { key, reply } => {
                let r = self
                    .groups
                    .members(&key)
                    .ok_or_else(|| MeshError::invalid(format!("not in swarm {key}")));
                answer(reply, r);
            }
            Command::RelayGrants { reply } => {
                let r = match self.swarm.behaviour().admission.as_ref() {
                    Some(a) => Ok(relays::grant_infos(a)),
                    None => Err(not_a_relay()),
                };
                answer(reply, r);
            }
            Command::RelayRevoke { node, reply } => {
                let r = match self.swarm.behaviour_mut().admission.as_mut() {
                    Some(a) => Ok(a.revoke(node)),
                    None => Err(not_a_relay()),
                };
                answer(reply, r);
            }
            Command::Status { reply } => {
                let _ = reply.send(Ok(report::of(self)));
            }
            Command::Peers { reply } => {
                let _ = reply.send(Ok(report::peers(self)));
            }
            Command::RoutingTable { dht, reply } => {
                let _ = reply.send(Ok(report::routing_table(self, dht)));
            }
            Command::SendSwarmMarker { key, text, reply } => {
                answer(reply, self.send_swarm_marker(key, &text));
            }
            Command::Shutdown => {}
        }
    }

    /// Connects to `target`, then continues with `after`.
    fn connect(&mut self, target: Target, after: After) {
        let peer = target.peer();
        if let Some(p) = peer
            && self.swarm.is_connected(&p)
        {
            return self.connected(p, after);
        }
        match target {
            // The given address is dialed even while another dial to the peer runs
            // (say a DHT query trying its unroutable private addresses): waiting for
            // that one could outlast the command. A command's dial to the same address
            // that runs is shared (`Node::connect_found`).
            Target::Addr(addr) => match peer {
                Some(p) => self.connect_found(p, vec![addrs::without_peer(&addr)], vec![after]),
                None => {
                    let opts = DialOpts::unknown_peer_id().address(addr).build();
                    dial_for(&mut self.swarm, &mut self.waiting, opts, None, vec![after]);
                }
            },
            Target::Node(node) => {
                let now = Instant::now();
                let actions =
                    self.router
                        .connect(node, RouteWaiter::Then(after), &view!(self), now);
                self.apply(actions);
            }
            // With the addresses the swarm knows, or, when it knows none, after
            // looking the peer up (see `find_peer`). Dialed even while another dial to
            // the peer runs (a reconnection to an address the peer left, say): this
            // dial's own failure is what starts the lookup. But not beside a lookup of
            // the peer: that is joined (see `Waiting::looking_up`).
            Target::Peer(p) => {
                if self.waiting.looking_up(&p) {
                    return self.find_peer(p, after, true);
                }
                let opts = DialOpts::peer_id(p)
                    .condition(PeerCondition::Disconnected)
                    .build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => self.waiting.wait_connection_or_relookup(id, p, after),
                    Err(DialError::DialPeerConditionFalse(_)) => self.waiting.wait_peer(p, after),
                    Err(DialError::NoAddresses) => self.find_peer(p, after, false),
                    Err(e) => after.fail(HandleError::Refused(MeshError::new(
                        ErrorCode::TransportUnavailable,
                        format!("dial: {e}"),
                    ))),
                }
            }
        }
    }

    /// A connection to `peer` is up: finish what waited for it.
    pub(super) fn connected(&mut self, peer: PeerId, after: After) {
        match after {
            After::Dial(reply) => {
                let _ = reply.send(Ok(peer));
            }
            After::Marker { text, reply } => {
                let now = Timestamp::now();
                let id = format!("msg:{}", hex::encode(rand_id()));
                // Addressed to the peer it goes to (signed): no other node takes it.
                let envelope = mesh_core::NodeId::from_peer_id(&peer)
                    .map_err(MeshError::from)
                    .and_then(|to| mesh_session::marker::envelope(&self.key, to, &id, &text, &now));
                match envelope {
                    Ok(env) => {
                        self.swarm.behaviour_mut().marker.send(&peer, &env);
                        self.waiting.wait_marker(peer, id, reply);
                    }
                    Err(e) => answer(reply, Err(e)),
                }
            }
            After::Lookup(reply) => answer(
                reply,
                Err(MeshError::invalid("internal: lookup after connect")),
            ),
            After::Route(_) => {}
        }
    }

    /// Sends a marker to swarm `key` on its topic (see `swarm_marker`); its `message/id`.
    fn send_swarm_marker(&mut self, key: DiscoveryKey, text: &str) -> MeshResult<String> {
        if !self.groups.is_joined(&key) {
            return Err(MeshError::invalid(format!(
                "not in swarm {key}: join it first (`meshd swarm join`)"
            )));
        }
        let now = Timestamp::now();
        let id = format!("msg:{}", hex::encode(rand_id()));
        let env = super::swarm_marker::envelope(&self.key, &key, &id, text, &now)?;
        let topic = gossipsub::IdentTopic::new(key.topic());
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, env.to_cbor())
            .map_err(|e| {
                MeshError::new(
                    ErrorCode::TransportUnavailable,
                    format!("marker to swarm {key}: {e}"),
                )
            })?;
        self.emit_trace(
            TraceEvent::new(TraceEventType::SignalMarkerSent, self.node_id, now)
                .with_detail(serde_json::json!({"swarm": key.to_hex(), "message/id": id})),
        );
        Ok(id)
    }

    /// Joins group `key`: the table, the topic, the provider records, the first
    /// presence.
    fn join_group(&mut self, key: DiscoveryKey) -> MeshResult<bool> {
        if !self.groups.join(key)? {
            return Ok(false);
        }
        let topic = gossipsub::IdentTopic::new(key.topic());
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
            self.groups.abandon(&key);
            return Err(MeshError::invalid(format!("swarm {key}: subscribe: {e}")));
        }
        let b = self.swarm.behaviour_mut();
        if let Err(e) = b
            .mesh_kad
            .start_providing(kad::RecordKey::new(&key.provider_key()))
        {
            tracing::warn!(swarm = %key, error = %e, "mesh provider record not stored");
        }
        if b.amino.kbuckets().next().is_some()
            && let Err(e) = b
                .amino
                .start_providing(kad::RecordKey::new(&key.amino_multihash()))
        {
            tracing::debug!(swarm = %key, error = %e, "Amino provider record not stored");
        }
        let actions = self.groups.joined_topic(key, &view!(self), &Now::current());
        self.apply(actions);
        Ok(true)
    }

    /// Leaves group `key`: the `leave` presence first, then the topic and the provider
    /// records.
    pub(super) fn leave_group(&mut self, key: DiscoveryKey) -> bool {
        let (left, actions) = self.groups.leave(key, &view!(self), &Now::current());
        self.apply(actions);
        if left {
            let b = self.swarm.behaviour_mut();
            let _ = b
                .gossipsub
                .unsubscribe(&gossipsub::IdentTopic::new(key.topic()));
            b.mesh_kad
                .stop_providing(&kad::RecordKey::new(&key.provider_key()));
            b.amino
                .stop_providing(&kad::RecordKey::new(&key.amino_multihash()));
        }
        left
    }
}

/// One dial for a command that every one of `waiters` waits for (the commands a lookup
/// of one peer answers: one connection serves them all); whether the dial started.
pub(super) fn dial_for(
    swarm: &mut super::NodeSwarm,
    waiting: &mut super::waiting::Waiting,
    opts: DialOpts,
    peer: Option<PeerId>,
    waiters: Vec<After>,
) -> bool {
    if waiters.is_empty() {
        return false;
    }
    let id = opts.connection_id();
    match swarm.dial(opts) {
        Ok(()) => {
            for after in waiters {
                waiting.wait_connection(id, after);
            }
            return true;
        }
        Err(DialError::DialPeerConditionFalse(_)) if peer.is_some() => {
            if let Some(p) = peer {
                for after in waiters {
                    waiting.wait_peer(p, after);
                }
            }
        }
        Err(e) => {
            for after in waiters {
                after.fail(HandleError::Refused(MeshError::new(
                    ErrorCode::TransportUnavailable,
                    format!("dial: {e}"),
                )));
            }
        }
    }
    false
}

fn rand_id() -> [u8; 16] {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b
}
