//! Discovery-key swarms in the node: the member tables of `mesh_signal::swarm` carried
//! on gossipsub (one topic per swarm, signed `swarm-presence.v1` in CBOR), provider
//! records on the mesh DHT (and Amino when it has peers) so that a newcomer without a
//! common peer finds members, and the join/leave commands.

use std::time::{Duration, Instant};

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{PeerId, gossipsub, kad};
use mesh_advert::AdvertStore;
use mesh_core::{
    Artifact, ErrorCode, MeshError, MeshResult, NodeId, SwarmPresence, Timestamp, TraceEvent,
    TraceEventType,
};
use mesh_signal::swarm::{Change, DiscoveryKey};
use serde::Serialize;

use super::handle::{Command, NodeHandle, Reply};
use super::pending::{ProviderWait, Stage};
use super::{Node, NodeEvent, routing};

/// How often a swarm without known members asks the DHT for providers again.
const PROVIDER_RETRY: Duration = Duration::from_secs(10);
/// Most providers dialed per provider answer.
const PROVIDERS_DIALED: usize = 8;
/// How long a stopping node lets its `leave` presences go out.
pub(super) const LEAVE_FLUSH: Duration = Duration::from_millis(500);
/// gossipsub's `mesh_n_low`, `mesh_n` and `mesh_n_high` (the node keeps the defaults):
/// a swarm whose topic mesh has fewer peers than the first dials known members up to
/// the second, as long as fewer than the third of its connected peers are subscribed.
const MESH_N_LOW: usize = 5;
const MESH_N: usize = 6;
const MESH_N_HIGH: usize = 12;
/// How often a swarm with a thin mesh dials members again.
const MEMBER_DIAL_EVERY: Duration = Duration::from_secs(5);

/// Swarm commands.
#[derive(Debug)]
pub(crate) enum SwarmCommand {
    Join {
        key: DiscoveryKey,
        reply: Reply<bool>,
    },
    Leave {
        key: DiscoveryKey,
        reply: Reply<bool>,
    },
    Members {
        key: DiscoveryKey,
        reply: Reply<Vec<SwarmMember>>,
    },
}

/// A swarm member as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwarmMember {
    /// Its node id.
    pub node: String,
    /// The addresses it announced.
    pub addrs: Vec<String>,
    /// When it counts as gone unless it re-announces.
    pub expires_at: String,
}

impl NodeHandle {
    /// Joins the swarm `key`: subscribes to its topic, announces this node, registers
    /// as a provider and looks for members. `false` when already in it.
    pub async fn join_swarm(&self, key: DiscoveryKey) -> Result<bool, MeshError> {
        self.ask(|reply| Command::Swarm(SwarmCommand::Join { key, reply }))
            .await
    }

    /// Leaves the swarm `key`, announcing the departure. `false` when not in it.
    pub async fn leave_swarm(&self, key: DiscoveryKey) -> Result<bool, MeshError> {
        self.ask(|reply| Command::Swarm(SwarmCommand::Leave { key, reply }))
            .await
    }

    /// The members of the swarm `key` this node knows (not itself); `E_PROTO_INVALID`
    /// when not in it.
    pub async fn swarm_members(&self, key: DiscoveryKey) -> Result<Vec<SwarmMember>, MeshError> {
        self.ask(|reply| Command::Swarm(SwarmCommand::Members { key, reply }))
            .await
    }
}

impl Node {
    pub(super) fn on_swarm_command(&mut self, command: SwarmCommand) {
        match command {
            SwarmCommand::Join { key, reply } => {
                let _ = reply.send(self.join_swarm(key));
            }
            SwarmCommand::Leave { key, reply } => {
                let _ = reply.send(Ok(self.leave_swarm(key)));
            }
            SwarmCommand::Members { key, reply } => {
                let r = self
                    .swarms
                    .members(&key)
                    .map(|ms| {
                        ms.into_iter()
                            .map(|m| SwarmMember {
                                node: m.node.to_string(),
                                addrs: m.addrs,
                                expires_at: m.expires_at.as_str().to_owned(),
                            })
                            .collect()
                    })
                    .ok_or_else(|| MeshError::invalid(format!("not in swarm {key}")));
                let _ = reply.send(r);
            }
        }
    }

    fn join_swarm(&mut self, key: DiscoveryKey) -> MeshResult<bool> {
        if !self.swarms.join(key)? {
            return Ok(false);
        }
        let topic = gossipsub::IdentTopic::new(key.topic());
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.subscribe(&topic) {
            self.swarms.leave(&key);
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
        self.find_swarm_providers(key);
        let now = Timestamp::now();
        self.emit_trace(
            TraceEvent::new(TraceEventType::SwarmJoined, self.node_id, now.clone()).with_detail(
                serde_json::json!({"swarm": key.to_hex(), "cid": key.amino_cid_text()}),
            ),
        );
        self.swarms_tick(&now);
        Ok(true)
    }

    fn find_swarm_providers(&mut self, key: DiscoveryKey) {
        let q = self
            .swarm
            .behaviour_mut()
            .mesh_kad
            .get_providers(kad::RecordKey::new(&key.provider_key()));
        self.pending
            .wait_providers(Stage::MeshDht, q, ProviderWait::Swarm(key));
        self.swarm_queries.insert(key, Instant::now());
    }

    /// Leaves `key`: the `leave` presence first, then the topic and the provider
    /// records.
    pub(super) fn leave_swarm(&mut self, key: DiscoveryKey) -> bool {
        if !self.swarms.is_joined(&key) {
            return false;
        }
        let now = Timestamp::now();
        self.publish_presence(key, "leave", &now);
        self.swarms.leave(&key);
        self.swarm_queries.remove(&key);
        self.swarm_dials.remove(&key);
        let b = self.swarm.behaviour_mut();
        let _ = b
            .gossipsub
            .unsubscribe(&gossipsub::IdentTopic::new(key.topic()));
        b.mesh_kad
            .stop_providing(&kad::RecordKey::new(&key.provider_key()));
        b.amino
            .stop_providing(&kad::RecordKey::new(&key.amino_multihash()));
        self.emit_trace(
            TraceEvent::new(TraceEventType::SwarmLeft, self.node_id, now)
                .with_detail(serde_json::json!({"swarm": key.to_hex()})),
        );
        true
    }

    /// Expiry, due presences, and provider queries for swarms that know no member.
    pub(super) fn swarms_tick(&mut self, now: &Timestamp) {
        let (changes, due) = self.swarms.tick(now);
        self.swarm_changes(changes);
        for d in due {
            self.publish_presence(d.swarm, d.presence, now);
        }
        let lonely: Vec<DiscoveryKey> = self
            .swarms
            .joined()
            .into_iter()
            .filter(|k| self.swarms.member_count(k) == Some(0))
            .filter(|k| {
                self.swarm_queries
                    .get(k)
                    .is_none_or(|t| t.elapsed() >= PROVIDER_RETRY)
            })
            .collect();
        for key in lonely {
            self.find_swarm_providers(key);
        }
        self.feed_thin_meshes();
    }

    /// A swarm whose gossipsub mesh is thin (fewer than `mesh_n_low` peers) dials a few
    /// members it knows and is not connected to, chosen at random, so gossipsub has
    /// peers to graft. Provider records name only the first members of a swarm (every
    /// DHT node keeps 20 per key) and Kademlia connects a client only to servers, so
    /// without this most members would mesh with the same few peers, which refuse
    /// grafts beyond `mesh_n_high`, and hear the rest only through gossip, a heartbeat
    /// later. Random members spread the mesh evenly (the same idea as gossipsub's peer
    /// exchange, with the addresses the signed presences carry).
    fn feed_thin_meshes(&mut self) {
        let now = Timestamp::now();
        for key in self.swarms.joined() {
            if self
                .swarm_dials
                .get(&key)
                .is_some_and(|t| t.elapsed() < MEMBER_DIAL_EVERY)
            {
                continue;
            }
            let topic = gossipsub::IdentTopic::new(key.topic()).hash();
            let gossip = &self.swarm.behaviour().gossipsub;
            let meshed = gossip.mesh_peers(&topic).count();
            if meshed >= MESH_N_LOW {
                continue;
            }
            // Subscribed peers are the candidates gossipsub grafts from; with enough of
            // them a thin mesh is gossipsub's to fill (or they are full), not ours.
            let subscribed = gossip
                .all_peers()
                .filter(|(_, topics)| topics.contains(&&topic))
                .count();
            let wanted = (MESH_N - meshed).min(MESH_N_HIGH.saturating_sub(subscribed));
            if wanted == 0 {
                continue;
            }
            let Some(members) = self.swarms.members(&key) else {
                continue;
            };
            let candidates: Vec<(PeerId, Vec<libp2p::Multiaddr>)> = members
                .into_iter()
                .filter_map(|m| {
                    let peer = m.node.to_peer_id().ok()?;
                    let addrs = m.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                    Some((peer, addrs))
                })
                .filter(|(p, _)| !self.swarm.is_connected(p))
                .collect();
            if candidates.is_empty() {
                continue;
            }
            self.swarm_dials.insert(key, Instant::now());
            let picked = pick(candidates, wanted, |n| {
                (rand_core::RngCore::next_u32(&mut rand_core::OsRng) as usize) % n
            });
            for (peer, addrs) in picked {
                // Fresher addresses than the presence's, when the store has them.
                let addrs = NodeId::from_peer_id(&peer)
                    .ok()
                    .and_then(|n| self.store.get(&n, &now))
                    .map(|held| routing::advert_addrs(&held.advert))
                    .filter(|a| !a.is_empty())
                    .unwrap_or(addrs);
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .extend_addresses_through_behaviour()
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(swarm = %key, %peer, error = %e, "member not dialed");
                }
            }
        }
    }

    /// Signs and publishes our presence; `true` when gossipsub took it.
    fn publish_presence(&mut self, key: DiscoveryKey, presence: &str, now: &Timestamp) -> bool {
        let addrs: Vec<String> =
            routing::own_addrs(self.swarm.external_addresses(), self.swarm.listeners())
                .iter()
                .map(ToString::to_string)
                .collect();
        let doc = self.swarms.presence_doc(&key, presence, &addrs, now);
        let signed = match SwarmPresence::sign(doc, &self.key) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(swarm = %key, error = %e, "presence not signed");
                return false;
            }
        };
        let topic = gossipsub::IdentTopic::new(key.topic());
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, signed.to_cbor())
        {
            Ok(_) => {
                tracing::debug!(node = %self.node_id, swarm = %key, presence, "presence published");
                self.swarms.sent(&key, presence, now);
                true
            }
            Err(e) => {
                tracing::debug!(node = %self.node_id, swarm = %key, presence, error = %e, "presence not published yet");
                false
            }
        }
    }

    fn swarm_changes(&mut self, changes: Vec<Change>) {
        let now = Timestamp::now();
        for c in changes {
            match c {
                Change::Joined { swarm, member } => {
                    self.emit_trace(
                        TraceEvent::new(TraceEventType::SwarmJoined, self.node_id, now.clone())
                            .with_detail(serde_json::json!({
                                "swarm": swarm.to_hex(), "member": member.node.to_string(),
                            })),
                    );
                    self.emit(NodeEvent::SwarmMemberJoined {
                        swarm,
                        node: member.node,
                        addrs: member.addrs,
                    });
                }
                Change::Left {
                    swarm,
                    node,
                    reason,
                } => {
                    self.emit_trace(
                        TraceEvent::new(TraceEventType::SwarmLeft, self.node_id, now.clone())
                            .with_detail(serde_json::json!({
                                "swarm": swarm.to_hex(), "member": node.to_string(),
                                "reason": reason.as_str(),
                            })),
                    );
                    self.emit(NodeEvent::SwarmMemberLeft {
                        swarm,
                        node,
                        reason: reason.as_str(),
                    });
                }
            }
        }
    }

    /// A gossip message on the topic of swarm `key`: a presence signed by the
    /// message's author, or it is refused (see [`refusal`] for how).
    pub(super) fn on_swarm_gossip(
        &mut self,
        key: DiscoveryKey,
        source: Option<PeerId>,
        data: &[u8],
    ) -> gossipsub::MessageAcceptance {
        let now = Timestamp::now();
        let checked = SwarmPresence::verify_cbor(data, &now).and_then(|p| {
            if p.swarm_key() != key.as_bytes() {
                return Err(MeshError::invalid(
                    "swarm-presence.v1: swarm/key differs from the topic's",
                ));
            }
            let author = p.node_id().to_peer_id().ok();
            if author.is_none() || author != source {
                return Err(MeshError::new(
                    ErrorCode::SigUnknownSigner,
                    "swarm-presence.v1: node/id is not the message's author",
                ));
            }
            Ok(p)
        });
        let presence = match checked {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(swarm = %key, code = e.code.as_str(), error = %e, "presence refused");
                self.emit_trace(TraceEvent::error(&e, self.node_id, now));
                return refusal(&e);
            }
        };
        // A valid presence we cannot take (our table is full) is not the sender's
        // fault: ignored, not rejected, so nobody is penalised for it.
        match self.swarms.on_presence(&presence, &now) {
            Ok(changes) => {
                self.swarm_changes(changes);
                gossipsub::MessageAcceptance::Accept
            }
            Err(e) => {
                tracing::debug!(swarm = %key, error = %e, "presence not taken");
                gossipsub::MessageAcceptance::Ignore
            }
        }
    }

    /// A peer subscribed to a topic: if it is one of our swarms whose `join` has not
    /// gone out yet, now someone can receive it.
    pub(super) fn on_swarm_subscribed(&mut self, topic: &str) {
        if let Some(key) = DiscoveryKey::from_topic(topic)
            && self.swarms.is_joined(&key)
        {
            self.swarms_tick(&Timestamp::now());
        }
    }

    /// Providers of a swarm we are in: connect to them, so gossipsub meshes us in.
    pub(super) fn swarm_providers_found(
        &mut self,
        key: DiscoveryKey,
        providers: impl IntoIterator<Item = PeerId>,
    ) {
        if !self.swarms.is_joined(&key) {
            return;
        }
        let me = *self.swarm.local_peer_id();
        let now = Timestamp::now();
        let fresh: Vec<PeerId> = providers
            .into_iter()
            .filter(|p| *p != me && !self.swarm.is_connected(p))
            .take(PROVIDERS_DIALED)
            .collect();
        for p in fresh {
            let addrs = NodeId::from_peer_id(&p)
                .ok()
                .and_then(|n| self.store.get(&n, &now))
                .map(|held| routing::advert_addrs(&held.advert))
                .unwrap_or_default();
            let opts = DialOpts::peer_id(p)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(swarm = %key, peer = %p, error = %e, "provider not dialed");
            }
        }
    }

    /// Clean stop: a `leave` for every swarm.
    pub(super) fn leave_all_swarms(&mut self) -> usize {
        let all = self.swarms.joined();
        for key in &all {
            self.leave_swarm(*key);
        }
        all.len()
    }
}

/// How gossipsub hears of a presence we refuse. A presence that is authentic but has
/// expired (`E_ADV_EXPIRED`: the clock is checked after the signature) is ignored: it is
/// not forwarded, and nobody is penalised, since it usually expired in a queue on its
/// way (a loaded node, a slow link), not by anyone's fault. Anything else (bad CBOR or
/// schema, a wrong or foreign signature, another swarm's key) is rejected, which
/// penalises the peer that propagated it.
fn refusal(e: &MeshError) -> gossipsub::MessageAcceptance {
    match e.code {
        ErrorCode::AdvExpired => gossipsub::MessageAcceptance::Ignore,
        _ => gossipsub::MessageAcceptance::Reject,
    }
}

/// Up to `k` of `items`, chosen at random (`rnd(n)` is a number below `n`).
fn pick<T>(mut items: Vec<T>, k: usize, mut rnd: impl FnMut(usize) -> usize) -> Vec<T> {
    let mut out = Vec::with_capacity(k.min(items.len()));
    while out.len() < k && !items.is_empty() {
        let i = rnd(items.len()).min(items.len() - 1);
        out.push(items.swap_remove(i));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{pick, refusal};
    use libp2p::gossipsub::MessageAcceptance;
    use mesh_core::{Artifact, ErrorCode, MeshError, NodeKeypair, SwarmPresence, Timestamp};

    /// An expired presence is ignored; forged, foreign or malformed ones are rejected.
    #[test]
    fn only_expired_presences_are_ignored() {
        let key = NodeKeypair::generate();
        let now = Timestamp::now();
        let doc = serde_json::json!({
            "schema/v": 1,
            "message/kind": "swarm-presence.v1",
            "swarm/key": "ab".repeat(32),
            "node/id": key.node_id().to_string(),
            "presence": "announce",
            "sequence/no": 1,
            "addrs": [],
            "created-at": now.as_str(),
            "expires-at": now.plus_secs(10).as_str(),
        });
        let serde_json::Value::Object(doc) = doc else {
            unreachable!("a JSON object")
        };
        let wire = SwarmPresence::sign(doc, &key).unwrap().to_cbor();
        let verdict = |at: &Timestamp, bytes: &[u8]| match SwarmPresence::verify_cbor(bytes, at) {
            Ok(_) => None,
            Err(e) => Some((e.code, refusal(&e))),
        };
        assert_eq!(verdict(&now, &wire), None);
        assert_eq!(
            verdict(&now.plus_secs(11), &wire),
            Some((ErrorCode::AdvExpired, MessageAcceptance::Ignore))
        );
        let mut altered = wire.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(matches!(
            verdict(&now, &altered),
            Some((_, MessageAcceptance::Reject))
        ));
        assert!(matches!(
            verdict(&now, b"not cbor"),
            Some((ErrorCode::ProtoInvalid, MessageAcceptance::Reject))
        ));
        assert_eq!(
            refusal(&MeshError::new(ErrorCode::SigUnknownSigner, "foreign")),
            MessageAcceptance::Reject
        );
    }

    #[test]
    fn pick_takes_k_distinct_items_or_all() {
        let mut calls = 0;
        let got = pick((0..10).collect(), 3, |n| {
            calls += 1;
            n - 1
        });
        assert_eq!(got, vec![9, 8, 7]);
        assert_eq!(calls, 3);
        let mut all = pick((0..4).collect::<Vec<u32>>(), 9, |_| 0);
        all.sort();
        assert_eq!(all, vec![0, 1, 2, 3]);
        assert!(pick(Vec::<u8>::new(), 2, |_| 0).is_empty());
        // An out-of-range draw is clamped, never a panic.
        assert_eq!(pick(vec![1, 2], 1, |n| n + 5), vec![2]);
    }
}
