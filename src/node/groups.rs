//! Discovery-key groups (the "swarms" of the specifications and the CLI) as a
//! component: the member tables of `mesh_signal::group` carried on gossipsub (one
//! topic per group, signed `swarm-presence.v1` in CBOR), the provider-record queries
//! that let a newcomer without a common peer find members, and the dials that feed a
//! thin gossipsub mesh.
//!
//! | state | events in | actions out |
//! |---|---|---|
//! | member tables, our presence schedule, provider-query and member-dial timers, member-table fetches | join/leave, presences from gossipsub, topic subscriptions, providers found, table requests and answers, ticks | `PublishPresence`, `FindGroupProviders`, `AskTable`, `Dial`, `Emit`, `Trace` |
//!
//! A newcomer gets the member table in one exchange (`/mesh/swarm-table/1.0.0`, see
//! [`fetch`]) from a subscribed peer once its `join` went out; the join says so
//! (`table/fetch`), and members settled in the swarm then leave it unanswered. Every
//! member then compares its table with a random subscriber's once a period and takes
//! what it missed ([`check`]).

mod check;
mod feed;
mod fetch;
mod peers;
mod presence_rate;
mod serve_limit;
mod table_exchange;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{PeerId, gossipsub};
use mesh_core::{
    Artifact, ErrorCode, MeshError, MeshResult, NodeId, NodeKeypair, SwarmPresence, Timestamp,
    TraceEvent, TraceEventType,
};
use mesh_signal::group::exchange::TableRequest;
use mesh_signal::group::{
    Change, DiscoveryKey, GroupConfig as TableConfig, Groups as Tables, TABLE_FETCH_FIELD,
};

pub(crate) use check::CHECK_EVERY;
use feed::{Fed, feed_addrs};
use fetch::{Fetches, Step};
use peers::{pick, table_peers};

use super::action::Action;
use super::addrs;
use super::api::GroupMember;
use super::event::NodeEvent;
use super::status::SwarmArrivals;
use super::view::{Now, View};

/// How often a group without known members asks the DHT for providers again.
const PROVIDER_RETRY: Duration = Duration::from_secs(10);
/// Most providers dialed per provider answer.
const PROVIDERS_DIALED: usize = 8;
/// How long a stopping node lets its `leave` presences go out.
pub(crate) const LEAVE_FLUSH: Duration = Duration::from_millis(500);
/// gossipsub's `mesh_n_low`, `mesh_n` and `mesh_n_high` (the node keeps the defaults):
/// a group whose topic mesh has fewer peers than the first dials known members up to
/// the second, as long as fewer than the third of its connected peers are subscribed.
/// Not fewer than the idle rule keeps per topic (`idle::TOPIC_POOL`, 6): subscribed
/// peers with full meshes refuse grafts, and at 200 members a feeder that stopped at 6
/// subscribed left members with no mesh at all (a join missed by 3 of 200 for 50 s).
const MESH_N_LOW: usize = 5;
const MESH_N: usize = 6;
pub(super) const MESH_N_HIGH: usize = 12;
/// How often a group with a thin mesh dials members again.
const MEMBER_DIAL_EVERY: Duration = Duration::from_secs(5);

type Actions = Vec<Action>;

/// The groups this node is in.
#[derive(Debug)]
pub(crate) struct Groups {
    key: NodeKeypair,
    node_id: NodeId,
    tables: Tables,
    /// When each group last asked the DHT for providers.
    queried: HashMap<DiscoveryKey, Instant>,
    /// Providers dialed since each group's last provider query (Kademlia reports the
    /// providers of every peer that answers it, each naming whom it likes).
    provider_dials: HashMap<DiscoveryKey, usize>,
    /// When each group last dialed members for its mesh.
    dialed: HashMap<DiscoveryKey, Instant>,
    /// The members dialed for thin meshes lately (see [`feed`]).
    fed: Fed,
    /// Member-table fetches in progress.
    fetches: Fetches,
    /// The periodic checks of our tables against a subscriber's.
    checks: check::Checks,
    /// Our table requests in flight (one per group at most).
    asked: HashMap<OutboundRequestId, DiscoveryKey>,
    /// Groups whose table fetch failed: their `join` went out again without
    /// `table/fetch`, and is not fetched again.
    plain_join: HashSet<DiscoveryKey>,
    /// Table pages served, per peer and per network.
    serve_limit: serve_limit::ServeLimits,
    /// Presences taken per author and swarm.
    presence_rate: presence_rate::PresenceRate,
    /// Members that came into our tables, by how.
    arrivals: SwarmArrivals,
}

impl Groups {
    /// `check_every`: the period of the member-table checks ([`check`]).
    pub(crate) fn new(key: NodeKeypair, config: TableConfig, check_every: Duration) -> Self {
        let node_id = key.node_id();
        Groups {
            key,
            node_id,
            tables: Tables::new(node_id, config),
            queried: HashMap::new(),
            provider_dials: HashMap::new(),
            dialed: HashMap::new(),
            fed: Fed::default(),
            fetches: Fetches::default(),
            checks: check::Checks::new(check_every),
            asked: HashMap::new(),
            plain_join: HashSet::new(),
            serve_limit: serve_limit::ServeLimits::default(),
            presence_rate: presence_rate::PresenceRate::default(),
            arrivals: SwarmArrivals::default(),
        }
    }

    /// Whether this node is in group `key`.
    pub(crate) fn is_joined(&self, key: &DiscoveryKey) -> bool {
        self.tables.is_joined(key)
    }

    /// The groups this node is in.
    pub(crate) fn joined(&self) -> Vec<DiscoveryKey> {
        self.tables.joined()
    }

    /// Whether `node` is a member of a group this node is in.
    pub(crate) fn is_member(&self, node: &NodeId) -> bool {
        self.tables.is_member(node)
    }

    /// Members that came into our tables since start, by how they came.
    pub(crate) fn arrivals(&self) -> SwarmArrivals {
        self.arrivals
    }

    /// How many members this node knows in all its groups (itself not counted).
    pub(crate) fn member_total(&self) -> usize {
        self.joined()
            .iter()
            .filter_map(|k| self.tables.member_count(k))
            .sum()
    }

    /// The members of `key` this node knows (`None`: not in it).
    pub(crate) fn members(&self, key: &DiscoveryKey) -> Option<Vec<GroupMember>> {
        self.tables.members(key).map(|ms| {
            ms.into_iter()
                .map(|m| GroupMember {
                    node: m.node.to_string(),
                    addrs: m.addrs,
                    expires_at: m.expires_at.as_str().to_owned(),
                })
                .collect()
        })
    }

    /// Enters group `key` (`false`: already in it). The node subscribes to the topic
    /// and registers the provider records; [`Groups::joined_topic`] finishes the join.
    pub(crate) fn join(&mut self, key: DiscoveryKey) -> MeshResult<bool> {
        self.tables.join(key)
    }

    /// The topic of a new group is subscribed: trace, look for members, announce.
    pub(crate) fn joined_topic(
        &mut self,
        key: DiscoveryKey,
        view: &dyn View,
        now: &Now,
    ) -> Actions {
        let mut out = vec![
            Action::trace(
                TraceEvent::new(TraceEventType::SwarmJoined, self.node_id, now.ts.clone())
                    .with_detail(serde_json::json!({
                        "swarm": key.to_hex(), "cid": key.amino_cid_text(),
                    })),
            ),
            Action::FindGroupProviders(key),
        ];
        self.queried.insert(key, now.at);
        self.provider_dials.remove(&key);
        self.checks.joined(key, now.at, rnd());
        out.extend(self.tick(view, now));
        out
    }

    /// Takes back a [`Groups::join`] whose topic could not be subscribed (nothing was
    /// announced, so nothing is said).
    pub(crate) fn abandon(&mut self, key: &DiscoveryKey) {
        self.tables.leave(key);
        self.forget(key);
    }

    fn forget(&mut self, key: &DiscoveryKey) {
        self.queried.remove(key);
        self.provider_dials.remove(key);
        self.dialed.remove(key);
        self.fetches.forget(key);
        self.checks.forget(key);
        self.plain_join.remove(key);
        self.asked.retain(|_, k| k != key);
    }

    /// Leaves `key` (`false`: not in it): the `leave` presence, to go out before the
    /// node unsubscribes.
    pub(crate) fn leave(
        &mut self,
        key: DiscoveryKey,
        view: &dyn View,
        now: &Now,
    ) -> (bool, Actions) {
        if !self.tables.is_joined(&key) {
            return (false, Vec::new());
        }
        let mut out = Vec::new();
        out.extend(self.presence(key, "leave", view, &now.ts));
        self.tables.leave(&key);
        self.forget(&key);
        out.push(Action::trace(
            TraceEvent::new(TraceEventType::SwarmLeft, self.node_id, now.ts.clone())
                .with_detail(serde_json::json!({"swarm": key.to_hex()})),
        ));
        (true, out)
    }

    /// Gossipsub took our presence. Our first `join` starts the table fetch.
    pub(crate) fn presence_sent(
        &mut self,
        key: &DiscoveryKey,
        presence: &str,
        view: &dyn View,
        now: &Now,
    ) -> Actions {
        tracing::debug!(node = %self.node_id, swarm = %key, presence, "presence published");
        self.tables.sent(key, presence, &now.ts);
        if presence != "join" || self.plain_join.contains(key) || self.fetches.pending(key) {
            return Vec::new();
        }
        let step = self.fetches.start(*key, &table_peers(key, view), now.at);
        self.step(*key, step)
    }

    /// Carries out a step of `key`'s table fetch.
    fn step(&mut self, key: DiscoveryKey, step: Step) -> Actions {
        match step {
            Step::Ask(peer, request) => vec![Action::AskTable { peer, request }],
            Step::GiveUp => {
                tracing::debug!(node = %self.node_id, swarm = %key, "no member table: joining again, answerable");
                self.plain_join.insert(key);
                self.tables.rejoin(&key);
                Vec::new()
            }
            Step::Done => {
                tracing::debug!(node = %self.node_id, swarm = %key, members = ?self.tables.member_count(&key), "member table fetched");
                Vec::new()
            }
            Step::Wait => Vec::new(),
        }
    }

    /// Expiry, due presences, provider queries for groups that know no member, and
    /// dials for thin meshes.
    pub(crate) fn tick(&mut self, view: &dyn View, now: &Now) -> Actions {
        // Fetch steps first: a fetch that gives up makes our `join` due again.
        let mut out = Vec::new();
        for key in self.fetches.waiting() {
            let step = self.fetches.next(key, &table_peers(&key, view), now.at);
            out.extend(self.step(key, step));
        }
        let (changes, due) = self.tables.tick(&now.ts);
        out.extend(self.changes(changes, &now.ts, Via::Gossip));
        for d in due {
            out.extend(self.presence(d.swarm, d.presence, view, &now.ts));
        }
        self.start_checks(view, now, &mut out);
        let lonely: Vec<DiscoveryKey> = self
            .tables
            .joined()
            .into_iter()
            .filter(|k| self.tables.member_count(k) == Some(0))
            .filter(|k| {
                self.queried
                    .get(k)
                    .is_none_or(|t| now.at.saturating_duration_since(*t) >= PROVIDER_RETRY)
            })
            .collect();
        for key in lonely {
            self.queried.insert(key, now.at);
            self.provider_dials.remove(&key);
            out.push(Action::FindGroupProviders(key));
        }
        self.feed_thin_meshes(view, now, &mut out);
        out
    }

    /// A group whose gossipsub mesh is thin (fewer than `mesh_n_low` peers) dials a few
    /// members it knows and is not connected to, chosen at random, so gossipsub has
    /// peers to graft. Provider records name only the first members of a group (every
    /// DHT node keeps 20 per key) and Kademlia connects a client only to servers, so
    /// without this most members would mesh with the same few peers, which refuse
    /// grafts beyond `mesh_n_high`, and hear the rest only through gossip, a heartbeat
    /// later. Random members spread the mesh evenly (the same idea as gossipsub's peer
    /// exchange, with the addresses the signed presences carry).
    fn feed_thin_meshes(&mut self, view: &dyn View, now: &Now, out: &mut Actions) {
        for key in self.tables.joined() {
            if self
                .dialed
                .get(&key)
                .is_some_and(|t| now.at.saturating_duration_since(*t) < MEMBER_DIAL_EVERY)
            {
                continue;
            }
            let topic = gossipsub::IdentTopic::new(key.topic()).hash();
            let meshed = view.topic_mesh(&topic).len();
            if meshed >= MESH_N_LOW {
                continue;
            }
            // Subscribed peers are the candidates gossipsub grafts from; with enough of
            // them a thin mesh is gossipsub's to fill (or they are full), not ours.
            let subscribed = view.topic_subscribers(&topic).len();
            let wanted = (MESH_N - meshed).min(MESH_N_HIGH.saturating_sub(subscribed));
            if wanted == 0 {
                continue;
            }
            let Some(members) = self.tables.members(&key) else {
                continue;
            };
            let fed = &mut self.fed;
            let candidates: Vec<(PeerId, NodeId, Vec<libp2p::Multiaddr>)> = members
                .into_iter()
                .filter_map(|m| {
                    let peer = m.node.to_peer_id().ok()?;
                    if view.is_connected(&peer) {
                        // A member that is reached may be dialed again once it is not.
                        fed.forget(&m.node);
                        return None;
                    }
                    if fed.recently(&m.node, now.at) {
                        return None;
                    }
                    let addrs = m.addrs.iter().filter_map(|a| a.parse().ok()).collect();
                    Some((peer, m.node, addrs))
                })
                .collect();
            if candidates.is_empty() {
                continue;
            }
            self.dialed.insert(key, now.at);
            let picked = pick(candidates, wanted, |n| {
                (rand_core::RngCore::next_u32(&mut rand_core::OsRng) as usize) % n
            });
            let mut own = view.listen_addrs();
            own.extend(view.external_addrs());
            for (peer, node, addrs) in picked {
                self.fed.dialed(node, now.at);
                // Fresher addresses than the presence's, when the store has them; only
                // those in the node's scope (see [`feed`]).
                let stored = view.stored_addrs(&node);
                let addrs = feed_addrs(if stored.is_empty() { &addrs } else { &stored }, &own);
                let addrs = self.fed.targets.admit(addrs, now.at);
                if addrs.is_empty() {
                    continue;
                }
                out.push(Action::Dial(
                    DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .extend_addresses_through_behaviour()
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build(),
                ));
            }
        }
    }

    /// Our presence, signed, for gossipsub.
    fn presence(
        &mut self,
        key: DiscoveryKey,
        presence: &'static str,
        view: &dyn View,
        ts: &Timestamp,
    ) -> Option<Action> {
        let addrs: Vec<String> = addrs::own_addrs(&view.external_addrs(), &view.listen_addrs())
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut doc = self.tables.presence_doc(&key, presence, &addrs, ts);
        if presence == "join" && !self.plain_join.contains(&key) {
            doc.insert(TABLE_FETCH_FIELD.into(), serde_json::Value::Bool(true));
        }
        match SwarmPresence::sign(doc, &self.key) {
            Ok(p) => {
                let data = p.to_cbor();
                if presence != "leave" {
                    let until = p.expires_at().clone();
                    self.tables.set_own(&key, data.as_slice().into(), until);
                }
                Some(Action::PublishPresence {
                    key,
                    presence,
                    data,
                })
            }
            Err(e) => {
                tracing::warn!(swarm = %key, error = %e, "presence not signed");
                None
            }
        }
    }

    /// Traces and events for `changes`, and the arrivals counted; `via` says how an
    /// arrival was learnt (in the `swarm/joined` trace's detail).
    fn changes(&mut self, changes: Vec<Change>, ts: &Timestamp, via: Via) -> Actions {
        let mut out = Vec::new();
        for c in changes {
            match c {
                Change::Joined { swarm, member } => {
                    let count = match via {
                        Via::Gossip => &mut self.arrivals.gossip,
                        Via::Table => &mut self.arrivals.table,
                        Via::Check => &mut self.arrivals.check,
                    };
                    *count = count.saturating_add(1);
                    out.push(Action::trace(
                        TraceEvent::new(TraceEventType::SwarmJoined, self.node_id, ts.clone())
                            .with_detail(serde_json::json!({
                                "swarm": swarm.to_hex(), "member": member.node.to_string(),
                                "via": via.as_str(),
                            })),
                    ));
                    out.push(Action::Emit(NodeEvent::SwarmMemberJoined {
                        swarm,
                        node: member.node,
                        addrs: member.addrs,
                    }));
                }
                Change::Left {
                    swarm,
                    node,
                    reason,
                } => {
                    out.push(Action::trace(
                        TraceEvent::new(TraceEventType::SwarmLeft, self.node_id, ts.clone())
                            .with_detail(serde_json::json!({
                                "swarm": swarm.to_hex(), "member": node.to_string(),
                                "reason": reason.as_str(),
                            })),
                    ));
                    out.push(Action::Emit(NodeEvent::SwarmMemberLeft {
                        swarm,
                        node,
                        reason: reason.as_str(),
                    }));
                }
            }
        }
        out
    }

    /// A gossip message on the topic of group `key`, handed over by `via`: a presence
    /// signed by the message's author, or it is refused (see [`refusal`] for how). A
    /// full member table evicts members this node is not connected to before it refuses
    /// one. A presence is taken within the budgets of its kind (a stranger's, its author
    /// not in the table, or a member's) of `via`'s network and in all (`presence_rate`),
    /// checked before its signature, else ignored.
    pub(crate) fn on_gossip(
        &mut self,
        key: DiscoveryKey,
        source: Option<PeerId>,
        via: PeerId,
        data: &[u8],
        view: &dyn View,
        ts: &Timestamp,
    ) -> (gossipsub::MessageAcceptance, Actions) {
        // Decoded once, unverified, for the checks before the signature (the bytes
        // verified below are the same).
        let claimed = SwarmPresence::from_cbor(data).ok();
        if presence_rate::replayed(&self.tables, key, source, claimed.as_ref(), ts) {
            return (gossipsub::MessageAcceptance::Ignore, Vec::new());
        }
        if let Some(author) = source
            && !self.presence_rate.admit(author, key, ts)
        {
            tracing::debug!(swarm = %key, %author, "presence over its author's rate: ignored");
            return (gossipsub::MessageAcceptance::Ignore, Vec::new());
        }
        // The budget of its kind (member or stranger) at the peer that handed it over.
        let member = claimed
            .as_ref()
            .is_some_and(|p| self.tables.has_member(&key, &p.node_id()));
        let forwarder =
            mesh_advert::Source::for_rates_of(via, &view.remote_addrs(&via), &view.listen_addrs());
        if !self.presence_rate.has_room(member, &forwarder, ts) {
            tracing::debug!(swarm = %key, %via, member, "presence over its forwarder's or the total budget: ignored");
            return (gossipsub::MessageAcceptance::Ignore, Vec::new());
        }
        let checked = SwarmPresence::verify_cbor(data, ts).and_then(|p| {
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
                let trace = Action::trace(TraceEvent::error(&e, self.node_id, ts.clone()));
                return (refusal(&e), vec![trace]);
            }
        };
        // Changes nothing (a replay, or older): not forwarded, nobody penalised; but the
        // first gossip copy of one from a table page is (neighbours may wait for it).
        let first_from_table = self.tables.first_gossip_of_table_entry(&presence);
        if self.tables.is_stale(&presence, ts) && !first_from_table {
            return (gossipsub::MessageAcceptance::Ignore, Vec::new());
        }
        // A full table's refusal is nobody's fault: ignored, not rejected.
        let alive = super::view::alive_in(view);
        match self
            .tables
            .on_signed_presence(&presence, Some(data), ts, &alive)
        {
            Ok(changes) => {
                self.presence_rate.charge(member, &forwarder, ts);
                (
                    gossipsub::MessageAcceptance::Accept,
                    self.changes(changes, ts, Via::Gossip),
                )
            }
            Err(e) => {
                tracing::debug!(swarm = %key, error = %e, "presence not taken");
                (gossipsub::MessageAcceptance::Ignore, Vec::new())
            }
        }
    }

    /// A peer subscribed to a topic: if it is one of our groups whose `join` has not
    /// gone out yet, now someone can receive it; if its table fetch waits for a peer,
    /// now there is one to ask. Nothing else: a peer may send the same subscription
    /// again and again (gossipsub reports each), and a whole tick for each was a walk
    /// of every member of every group.
    pub(crate) fn subscribed(&mut self, topic: &str, view: &dyn View, now: &Now) -> Actions {
        match DiscoveryKey::from_topic(topic) {
            Some(key) if self.tables.join_pending(&key) => self.tick(view, now),
            Some(key) if self.fetches.is_waiting(&key) => {
                let step = self.fetches.next(key, &table_peers(&key, view), now.at);
                self.step(key, step)
            }
            _ => Vec::new(),
        }
    }

    /// Providers of a group we are in: connect to them, so gossipsub meshes us in.
    pub(crate) fn providers_found(
        &mut self,
        key: DiscoveryKey,
        providers: impl IntoIterator<Item = PeerId>,
        view: &dyn View,
        now: Instant,
    ) -> Actions {
        if !self.tables.is_joined(&key) {
            return Vec::new();
        }
        let me = view.local_peer();
        let mut own = view.listen_addrs();
        own.extend(view.external_addrs());
        let dialed = self.provider_dials.entry(key).or_default();
        let left = PROVIDERS_DIALED.saturating_sub(*dialed);
        let targets = &mut self.fed.targets;
        let actions: Actions = providers
            .into_iter()
            .filter(|p| *p != me && !view.is_connected(p))
            .filter_map(|p| {
                // A provider record is anyone's to write, and the advertisement behind
                // it names whatever its signer likes: only addresses in the node's
                // scope (see [`feed`]), each taking a token of its destination from
                // the feed's budget; a provider whose stored addresses are all out of
                // it or over budget is not dialed. Without a stored advertisement the
                // dial uses what the behaviours know of the peer (`dial_budget`).
                let stored = NodeId::from_peer_id(&p)
                    .map(|n| view.stored_addrs(&n))
                    .unwrap_or_default();
                let addrs = targets.admit(feed_addrs(&stored, &own), now);
                if addrs.is_empty() && !stored.is_empty() {
                    return None;
                }
                Some(Action::Dial(
                    DialOpts::peer_id(p)
                        .addresses(addrs)
                        .extend_addresses_through_behaviour()
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build(),
                ))
            })
            .take(left)
            .collect();
        *dialed += actions.len();
        actions
    }
}

/// Whether a table request a peer sent us is a member's check (it names its digest):
/// upkeep, which does not count as use of the connection for the idle rule (see
/// [`Groups::checking`]).
pub(crate) fn is_check(request: &Result<TableRequest, MeshError>) -> bool {
    matches!(request, Ok(r) if r.have.is_some())
}

/// How a member's presence came: by gossip, in the table a newcomer fetched, or in a
/// check of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Gossip,
    Table,
    Check,
}

impl Via {
    /// As the `swarm/joined` trace's `detail.via` names it.
    fn as_str(self) -> &'static str {
        match self {
            Via::Gossip => "gossip",
            Via::Table => "table",
            Via::Check => "check",
        }
    }
}

/// A random number (for the checks' spread and pick).
fn rnd() -> u32 {
    rand_core::RngCore::next_u32(&mut rand_core::OsRng)
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

#[cfg(test)]
mod component_tests;
#[cfg(test)]
mod presence_rate_tests;
#[cfg(test)]
mod table_tests;

#[cfg(test)]
mod tests;
