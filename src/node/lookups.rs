//! Finding nodes: the node's lookups (store, then mesh DHT, then Amino peer routing)
//! with the DHT query results that answer them, and [`AdvertsSeen`] (one
//! `AdvertStored` event per node and sequence number). The node's own advertisement
//! is the component in [`super::own`].

use std::collections::HashMap;
use std::time::Instant;

use libp2p::kad::{self, GetRecordOk, QueryResult};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use mesh_advert::kad::DhtEntry;
use mesh_advert::{AdvertStore, NodeWithdrawal};
use mesh_core::{Artifact, ErrorCode, MeshError, NodeAdvertisement, NodeId, Timestamp};

use super::api::{Dht, Found, HandleError};
use super::kad_scope::MAX_DIAL_ADDRS;
use super::waiting::{After, ProviderWait};
use super::{Node, NodeEvent, addrs};

/// Advertisements remembered for event de-duplication (cleared when full).
pub(crate) const ADVERTS_SEEN: usize = 4096;

/// Which advertisement (node, sequence number) the application was told of.
#[derive(Debug, Default)]
pub(crate) struct AdvertsSeen(HashMap<NodeId, u64>);

impl AdvertsSeen {
    /// Whether `(node, sequence_no)` is news (and remembers it).
    pub(crate) fn is_new(&mut self, node: NodeId, sequence_no: u64) -> bool {
        if self.0.get(&node) == Some(&sequence_no) {
            return false;
        }
        if self.0.len() >= ADVERTS_SEEN {
            self.0.clear();
        }
        self.0.insert(node, sequence_no);
        true
    }

    /// An advertisement was stored, however it came (pushed by a peer, fetched by our
    /// lookup, put through the DHT): the application's `AdvertStored`, once per node
    /// and sequence number.
    pub(crate) fn stored(&mut self, node: NodeId, sequence_no: u64) -> Option<NodeEvent> {
        self.is_new(node, sequence_no)
            .then_some(NodeEvent::AdvertStored { node, sequence_no })
    }
}

/// Why a lookup found nothing.
fn not_found(node: &NodeId) -> HandleError {
    MeshError::new(
        ErrorCode::TransportUnavailable,
        format!("{node}: not in the store, the mesh DHT or Amino"),
    )
    .into()
}

/// The answer for a held advertisement.
pub(crate) fn found_from(ad: &NodeAdvertisement, source: &'static str) -> Found {
    Found {
        node: ad.node_id().to_string(),
        addrs: addrs::advert_addrs(ad)
            .iter()
            .map(ToString::to_string)
            .collect(),
        advert: Some(ad.to_json()),
        source,
        withdrawn: None,
    }
}

impl Node {
    /// Finds `node`: store (unless `fresh`), then mesh DHT, then Amino peer routing.
    pub(super) fn lookup(&mut self, node: NodeId, after: After, fresh: bool) {
        let now = Timestamp::now();
        let held = if fresh {
            None
        } else if node == self.node_id {
            self.own.current().cloned()
        } else {
            self.store.get(&node, &now).and_then(|s| s.decoded())
        };
        if let Some(ad) = held {
            return self.found(node, found_from(&ad, "store"), vec![after]);
        }
        if self.waiting.add_lookup_waiter(node, after) {
            return;
        }
        let q = self
            .swarm
            .behaviour_mut()
            .mesh_kad
            .get_record(mesh_advert::kad::record_key(&node));
        self.waiting.start_lookup(node, q);
    }

    /// A lookup ended well: answer or continue every waiter.
    fn found(&mut self, node: NodeId, found: Found, waiters: Vec<After>) {
        // In the node's own order of preference, but no more direct addresses and no
        // more circuits than one dial takes: an advertisement may name hundreds of
        // endpoints, anyone's.
        let parsed: Vec<Multiaddr> = found.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let (mut addrs, mut circuits) = super::router::plan::split_addrs(&parsed);
        addrs.truncate(MAX_DIAL_ADDRS);
        circuits.truncate(MAX_DIAL_ADDRS);
        addrs.extend(circuits);
        let peer = node.to_peer_id().ok();
        let mut to_connect = Vec::new();
        for after in waiters {
            match after {
                After::Lookup(reply) => {
                    let _ = reply.send(Ok(found.clone()));
                }
                After::Route(id) => {
                    let now = std::time::Instant::now();
                    let actions = self.router.found(id, addrs.clone(), &view!(self), now);
                    self.apply(actions);
                }
                other => to_connect.push(other),
            }
        }
        match peer {
            Some(p) => self.connect_found(p, addrs, to_connect),
            None => {
                for after in to_connect {
                    after.fail(MeshError::invalid("node id has no peer id").into());
                }
            }
        }
    }

    /// Connects commands to `peer` at `addrs` (what a lookup found, or the address a
    /// command names): at once when connected, else over one dial for them all, which
    /// later commands for the same addresses wait on too (a lookup answered from the
    /// store answers each command on its own). The addresses are dialed even while
    /// another dial to the peer runs: that one may be to the addresses it left, and
    /// waiting for it would outlast the commands.
    pub(super) fn connect_found(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        waiters: Vec<After>,
    ) {
        if self.swarm.is_connected(&peer) {
            for after in waiters {
                self.connected(peer, after);
            }
            return;
        }
        if let Some(id) = self.waiting.found_dial(&peer, &addrs) {
            for after in waiters {
                self.waiting.wait_connection(id, after);
            }
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs.clone())
            .condition(PeerCondition::Disconnected)
            .build();
        let id = opts.connection_id();
        if super::commands::dial_for(
            &mut self.swarm,
            &mut self.waiting,
            opts,
            Some(peer),
            waiters,
        ) {
            self.waiting.found_dial_started(peer, id, addrs);
        }
    }

    /// Fails `after`; a route attempt's lookup goes on to its next stage instead.
    pub(super) fn fail_after(&mut self, after: After, error: HandleError) {
        match after {
            After::Route(id) => {
                let now = std::time::Instant::now();
                let actions = self.router.lookup_failed(id, &error, &view!(self), now);
                self.apply(actions);
            }
            other => other.fail(error),
        }
    }

    /// A query of the Amino DHT progressed: providers, a peer lookup of a dial (see
    /// `find_peer`), or the peer routing stage of a lookup.
    pub(super) fn on_amino(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed {
            id, result, step, ..
        } = event
        else {
            return;
        };
        let Some(result) = self.on_provider_query(Dht::Amino, id, result, step.last) else {
            return;
        };
        if self.on_peer_lookup(id, &result, step.last) {
            return;
        }
        let Some(node) = self.waiting.query(Dht::Amino, id) else {
            return;
        };
        if let QueryResult::GetClosestPeers(r) = result {
            let target = node.to_peer_id().ok();
            let peers = match r {
                Ok(ok) => ok.peers,
                Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
            };
            // Only the addresses Amino's own dials would take: whoever answered last
            // named them, loopback and LAN services included.
            let keep = self.config.amino_private_addrs;
            let hit = target.and_then(|t| super::find_peer::amino_hit(&peers, t, keep));
            if let Some(addrs) = hit {
                let found = Found {
                    node: node.to_string(),
                    addrs: addrs.iter().map(ToString::to_string).collect(),
                    advert: None,
                    source: "amino",
                    withdrawn: None,
                };
                let waiters = self.waiting.finish_lookup(&node);
                self.found(node, found, waiters);
            } else if step.last {
                for after in self.waiting.finish_lookup(&node) {
                    self.fail_after(after, not_found(&node));
                }
            }
        }
        if step.last {
            self.waiting.end_query(Dht::Amino, id);
        }
    }

    /// Provider queries of either DHT; gives back every other result.
    fn on_provider_query(
        &mut self,
        dht: Dht,
        id: kad::QueryId,
        result: QueryResult,
        last: bool,
    ) -> Option<QueryResult> {
        match result {
            QueryResult::StartProviding(r) => {
                if let Some(ProviderWait::Provide(reply)) = self.waiting.providers_done(dht, id) {
                    let r = r.map(|_| ()).map_err(|e| {
                        MeshError::new(
                            ErrorCode::TransportUnavailable,
                            format!("provider record: {e}"),
                        )
                    });
                    super::api::answer(reply, r);
                }
                None
            }
            QueryResult::GetProviders(r) => {
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r {
                    match self.waiting.group_query(dht, id) {
                        Some(key) => {
                            let me = *self.swarm.local_peer_id();
                            let now = Timestamp::now();
                            for p in providers.iter().filter(|p| **p != me).take(20) {
                                if !self.swarm.is_connected(p) {
                                    let e = super::discovery_trace::discovered(
                                        self.node_id,
                                        *p,
                                        "provider",
                                        &[],
                                        &now,
                                    );
                                    self.emit_trace(e);
                                }
                            }
                            let actions = self.groups.providers_found(
                                key,
                                providers,
                                &view!(self),
                                Instant::now(),
                            );
                            self.apply(actions);
                        }
                        None => self.waiting.providers_found(dht, id, providers),
                    }
                }
                if last
                    && let Some(ProviderWait::Find(reply, set)) =
                        self.waiting.providers_done(dht, id)
                {
                    let _ = reply.send(Ok(set.into_iter().collect()));
                }
                None
            }
            other => Some(other),
        }
    }

    /// A query of the mesh DHT progressed: providers, a lookup's record, our put.
    /// `contacted`: whether the query sent any request (a put with no peer to ask fails
    /// at once, and that is no peer's refusal).
    pub(super) fn on_mesh_query(
        &mut self,
        id: kad::QueryId,
        result: QueryResult,
        last: bool,
        contacted: bool,
    ) {
        let Some(result) = self.on_provider_query(Dht::Mesh, id, result, last) else {
            return;
        };
        match result {
            QueryResult::GetRecord(r) => {
                let Some(node) = self.waiting.query(Dht::Mesh, id) else {
                    return;
                };
                let now = Timestamp::now();
                let mut from = None;
                let valid = match r {
                    Ok(GetRecordOk::FoundRecord(found)) => {
                        from = found.peer;
                        let held = self.store.durable().held_sequence(&node);
                        let checked = mesh_advert::kad::validate_record(&found.record, &now)
                            .and_then(|entry| {
                                if entry.node_id() != node {
                                    return Err(MeshError::new(
                                        ErrorCode::SigUnknownSigner,
                                        format!("the record of {node} is signed by another node"),
                                    ));
                                }
                                // Older than what the store holds (a DHT node still
                                // serving what the node signed before it withdrew):
                                // not an answer; the query goes on.
                                match mesh_advert::kad::superseded(&entry, held) {
                                    Some(current) => Err(MeshError::new(
                                        ErrorCode::AdvStaleSeq,
                                        format!(
                                            "the record of {node} has sequence {}, the store holds {current}",
                                            entry.sequence_no()
                                        ),
                                    )),
                                    None => Ok(entry),
                                }
                            });
                        match checked {
                            Ok(entry) => Some(entry),
                            Err(e) => {
                                tracing::debug!(error = %e, "invalid DHT record ignored");
                                self.emit_trace(super::discovery_trace::rejected(
                                    self.node_id,
                                    found.peer,
                                    &e,
                                    super::discovery_trace::Source::MeshDht,
                                    &now,
                                ));
                                None
                            }
                        }
                    }
                    _ => None,
                };
                if let Some(entry) = valid {
                    if let Some(mut q) = self.swarm.behaviour_mut().mesh_kad.query_mut(&id) {
                        q.finish();
                    }
                    self.waiting.end_query(Dht::Mesh, id);
                    match entry {
                        DhtEntry::Advert(ad) => {
                            // What a lookup found is found again after a crash: not
                            // worth an fsync on the loop (see `advert_store`).
                            let stored = self.store.durable().insert_unsynced_from(
                                ad.clone(),
                                mesh_advert::Source::Local,
                                &now,
                            );
                            if let Err(e) = stored {
                                tracing::debug!(error = %e, "looked-up advert not stored");
                            }
                            self.emit_trace(super::discovery_trace::fetched(
                                self.node_id,
                                from,
                                &node,
                                ad.sequence_no(),
                                super::discovery_trace::Source::MeshDht,
                                &now,
                            ));
                            let waiters = self.waiting.finish_lookup(&node);
                            self.found(node, found_from(&ad, "mesh-dht"), waiters);
                        }
                        DhtEntry::Withdrawn(w) => self.found_withdrawn(&w, &now),
                    }
                } else if last {
                    self.waiting.end_query(Dht::Mesh, id);
                    // The mesh DHT had nothing: Amino's peer routing, if it has peers.
                    let amino = &mut self.swarm.behaviour_mut().amino;
                    match node.to_peer_id() {
                        Ok(peer) if amino.kbuckets().next().is_some() => {
                            let q = amino.get_closest_peers(peer);
                            self.waiting.next_dht(node, q, Dht::Amino);
                        }
                        _ => {
                            for after in self.waiting.finish_lookup(&node) {
                                self.fail_after(after, not_found(&node));
                            }
                        }
                    }
                }
            }
            // The latest put of our record only (an earlier one still running when a
            // newer started has no say).
            QueryResult::PutRecord(r) if self.own.last_put() == Some(id) => match r {
                Err(e) => {
                    tracing::debug!(error = %e, "own record put failed");
                    self.own.put_failed(&Timestamp::now(), contacted);
                }
                Ok(_) => self.own.put_succeeded(),
            },
            _ => {}
        }
    }

    /// A lookup met `w` in the mesh DHT: the node withdrew. The tombstone goes into the
    /// store; lookups answer with no advertisement (`withdrawn`), and whatever wanted to
    /// reach the node fails.
    fn found_withdrawn(&mut self, w: &NodeWithdrawal, now: &Timestamp) {
        let node = w.node_id();
        let applied =
            self.store
                .durable()
                .withdraw_unsynced_from(w, mesh_advert::Source::Local, now);
        if let Err(e) = applied {
            tracing::debug!(error = %e, "looked-up withdrawal not applied");
        }
        let found = Found {
            node: node.to_string(),
            addrs: Vec::new(),
            advert: None,
            source: "mesh-dht",
            withdrawn: Some(w.sequence_no()),
        };
        for after in self.waiting.finish_lookup(&node) {
            match after {
                After::Lookup(reply) => {
                    let _ = reply.send(Ok(found.clone()));
                }
                other => {
                    let e = MeshError::new(
                        ErrorCode::TransportUnavailable,
                        format!(
                            "{node} withdrew its advertisement (sequence {})",
                            w.sequence_no()
                        ),
                    );
                    self.fail_after(other, e.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::NodeKeypair;

    #[test]
    fn each_advertisement_is_news_once() {
        let mut seen = AdvertsSeen::default();
        let n = NodeKeypair::generate().node_id();
        assert!(seen.is_new(n, 1));
        assert!(!seen.is_new(n, 1));
        assert!(seen.is_new(n, 2));
        assert!(!seen.is_new(n, 2));
        // Bounded: full, it starts over rather than growing.
        for _ in 0..ADVERTS_SEEN {
            seen.is_new(NodeKeypair::generate().node_id(), 1);
        }
        assert!(seen.0.len() <= ADVERTS_SEEN);
    }
}
