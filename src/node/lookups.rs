//! Finding nodes and spreading our own advertisement: the two small components
//! [`OwnRecord`] (the node's advertisement and its mesh-DHT record) and
//! [`AdvertsSeen`] (one `AdvertStored` event per node and sequence number), and the
//! node's lookups (store, then mesh DHT, then Amino peer routing) with the DHT query
//! results that answer them.

use std::collections::HashMap;

use libp2p::kad::{self, GetRecordOk, QueryResult};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use mesh_advert::kad::DhtEntry;
use mesh_advert::own::OwnAdvert;
use mesh_advert::{AdvertStore, NodeWithdrawal};
use mesh_core::{
    Artifact, ErrorCode, MeshError, MeshResult, NodeAdvertisement, NodeId, Timestamp, TraceEvent,
    TraceEventType,
};

use super::api::{Dht, Found, HandleError, Withdrawn};
use super::waiting::{After, ProviderWait};
use super::{Node, NodeEvent, addrs};

/// Advertisements remembered for event de-duplication (cleared when full).
pub(crate) const ADVERTS_SEEN: usize = 4096;

/// What the node advertises: its addresses and, with a public WSS name, the
/// `wss://` URL of its WSS listener (see [`super::wss::wss_url`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OwnEndpoints {
    pub(crate) addrs: Vec<Multiaddr>,
    pub(crate) wss_url: Option<String>,
}

impl From<Vec<Multiaddr>> for OwnEndpoints {
    fn from(addrs: Vec<Multiaddr>) -> Self {
        OwnEndpoints {
            addrs,
            wss_url: None,
        }
    }
}

/// The node's own advertisement: rebuilt when its addresses change or it nears
/// expiry, and put into the mesh DHT (again, once a DHT peer appears, when a put
/// failed). After a withdrawal it holds the withdrawal instead, and nothing is rebuilt
/// until an explicit publish.
#[derive(Debug)]
pub(crate) struct OwnRecord {
    advert: OwnAdvert,
    addrs_dirty: bool,
    put_pending: bool,
    withdrawal: Option<NodeWithdrawal>,
}

impl OwnRecord {
    pub(crate) fn new(advert: OwnAdvert) -> Self {
        OwnRecord {
            advert,
            addrs_dirty: false,
            put_pending: false,
            withdrawal: None,
        }
    }

    /// Withdraws: a signed withdrawal above every advertisement issued so far; no
    /// advertisement until [`OwnRecord::publish_now`].
    pub(crate) fn withdraw(&mut self, now: &Timestamp) -> MeshResult<NodeWithdrawal> {
        let w = self.advert.withdraw(now)?;
        self.withdrawal = Some(w.clone());
        Ok(w)
    }

    /// The withdrawal in force, if the node withdrew.
    pub(crate) fn withdrawal(&self) -> Option<&NodeWithdrawal> {
        self.withdrawal.as_ref()
    }

    /// The current advertisement.
    pub(crate) fn current(&self) -> Option<&NodeAdvertisement> {
        self.advert.current()
    }

    /// The last sequence number used.
    pub(crate) fn last_sequence(&self) -> Option<u64> {
        self.advert.last_sequence()
    }

    /// Our addresses changed (a listener, an external address).
    pub(crate) fn addrs_changed(&mut self) {
        self.addrs_dirty = true;
    }

    /// A new advertisement to spread, if one is due: the addresses changed (`addrs`
    /// is asked only then) or the current one nears expiry.
    pub(crate) fn tick<E: Into<OwnEndpoints>>(
        &mut self,
        endpoints: impl FnOnce() -> E,
        now: &Timestamp,
    ) -> Option<NodeAdvertisement> {
        let mut new = None;
        if std::mem::take(&mut self.addrs_dirty) {
            let OwnEndpoints { addrs, wss_url } = endpoints().into();
            if !addrs.is_empty() {
                match self.advert.set_endpoints(addrs, wss_url, now) {
                    Ok(Some(ad)) => new = Some(ad.clone()),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "own advertisement"),
                }
            }
        }
        match self.advert.tick(now) {
            Ok(Some(ad)) => new = Some(ad.clone()),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "own advertisement refresh"),
        }
        new
    }

    /// A fresh advertisement now (`meshd advert publish`), with `endpoints`.
    pub(crate) fn publish_now(
        &mut self,
        endpoints: impl Into<OwnEndpoints>,
        now: &Timestamp,
    ) -> MeshResult<NodeAdvertisement> {
        self.addrs_dirty = false;
        let OwnEndpoints { addrs, wss_url } = endpoints.into();
        if self.withdrawal.take().is_some() {
            // Ends the withdrawal with the current addresses.
            let _ = self.advert.set_endpoints(addrs, wss_url, now);
            return self.advert.renew(now).cloned();
        }
        match self.advert.set_endpoints(addrs, wss_url, now) {
            Ok(Some(ad)) => Ok(ad.clone()),
            Ok(None) => self.advert.renew(now).cloned(),
            Err(e) => Err(e),
        }
    }

    /// Whether the last put failed (retried when a mesh-DHT peer appears).
    pub(crate) fn put_pending(&self) -> bool {
        self.put_pending
    }

    /// The outcome of a put of our record.
    pub(crate) fn put_result(&mut self, ok: bool) {
        self.put_pending = !ok;
    }
}

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
            self.store.get(&node, &now).map(|s| (*s.advert).clone())
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
        let addrs: Vec<Multiaddr> = found.addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let peer = node.to_peer_id().ok();
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
                other => match peer {
                    Some(p) if self.swarm.is_connected(&p) => self.connected(p, other),
                    Some(p) => {
                        let opts = DialOpts::peer_id(p)
                            .addresses(addrs.clone())
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        self.dial(opts, Some(p), other);
                    }
                    None => other.fail(MeshError::invalid("node id has no peer id").into()),
                },
            }
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

    fn lookup_failed(&mut self, node: &NodeId) {
        for after in self.waiting.finish_lookup(node) {
            let e = MeshError::new(
                ErrorCode::TransportUnavailable,
                format!("{node}: not in the store, the mesh DHT or Amino"),
            );
            self.fail_after(after, e.into());
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
            let hit = peers
                .into_iter()
                .find(|p| Some(p.peer_id) == target && !p.addrs.is_empty());
            if let Some(p) = hit {
                let found = Found {
                    node: node.to_string(),
                    addrs: p.addrs.iter().map(ToString::to_string).collect(),
                    advert: None,
                    source: "amino",
                    withdrawn: None,
                };
                let waiters = self.waiting.finish_lookup(&node);
                self.found(node, found, waiters);
            } else if step.last {
                self.lookup_failed(&node);
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
                            let actions = self.groups.providers_found(key, providers, &view!(self));
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
    pub(super) fn on_mesh_query(&mut self, id: kad::QueryId, result: QueryResult, last: bool) {
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
                        let checked = mesh_advert::kad::validate_record(&found.record, &now)
                            .and_then(|entry| {
                                if entry.node_id() == node {
                                    Ok(entry)
                                } else {
                                    Err(MeshError::new(
                                        ErrorCode::SigUnknownSigner,
                                        format!("the record of {node} is signed by another node"),
                                    ))
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
                            if let Err(e) = self.store.insert(ad.clone(), &now) {
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
                        _ => self.lookup_failed(&node),
                    }
                }
            }
            QueryResult::PutRecord(Err(e)) => {
                tracing::debug!(error = %e, "own record put failed");
                self.own.put_result(false);
            }
            _ => {}
        }
    }

    /// Stores, persists and spreads a new advertisement of this node: the mesh DHT and
    /// every session peer.
    pub(super) fn publish_own(&mut self, ad: NodeAdvertisement, now: &Timestamp) {
        let seq = ad.sequence_no();
        self.swarm
            .behaviour_mut()
            .admission_client
            .set_advertisement(Some(ad.clone()));
        let store = self.store.durable();
        if let Err(e) = store.set_own_sequence(seq) {
            tracing::warn!(error = %e, "cannot persist own sequence number");
        }
        if let Err(e) = store.insert(ad.clone(), now) {
            tracing::debug!(error = %e, "own advertisement not stored");
        }
        self.put_own_record(&ad, now);
        let peers: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| self.swarm.behaviour().session.session(p).is_some())
            .copied()
            .collect();
        for peer in peers {
            self.swarm.behaviour_mut().advert.publish(&peer, ad.clone());
        }
        let addrs = addrs::advert_addrs(&ad);
        self.emit_trace(
            TraceEvent::new(
                TraceEventType::AdvertisementPublished,
                self.node_id,
                now.clone(),
            )
            .with_detail(serde_json::json!({"sequence/no": seq})),
        );
        self.emit(NodeEvent::OwnAdvertPublished {
            sequence_no: seq,
            addrs,
        });
    }

    /// A lookup met `w` in the mesh DHT: the node withdrew. The tombstone goes into the
    /// store; lookups answer with no advertisement (`withdrawn`), and whatever wanted to
    /// reach the node fails.
    fn found_withdrawn(&mut self, w: &NodeWithdrawal, now: &Timestamp) {
        let node = w.node_id();
        if let Err(e) = self.store.durable().withdraw(w, now) {
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

    /// Withdraws this node's advertisement (see `NodeHandle::withdraw`): signs the
    /// withdrawal, persists its sequence number, keeps the tombstone, replaces the
    /// mesh-DHT record and sends it to every session peer.
    pub(super) fn withdraw_own(&mut self, now: &Timestamp) -> MeshResult<Withdrawn> {
        let w = self.own.withdraw(now)?;
        let seq = w.sequence_no();
        self.swarm
            .behaviour_mut()
            .admission_client
            .set_advertisement(None);
        let store = self.store.durable();
        if let Err(e) = store.set_own_sequence(seq) {
            tracing::warn!(error = %e, "cannot persist own sequence number");
        }
        if let Err(e) = store.withdraw(&w, now) {
            tracing::debug!(error = %e, "own withdrawal not stored");
        }
        let put = self.put_own_withdrawal(&w, now);
        let peers: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|p| self.swarm.behaviour().session.session(p).is_some())
            .copied()
            .collect();
        for peer in &peers {
            self.swarm.behaviour_mut().advert.withdraw(peer, w.clone());
        }
        tracing::info!(
            sequence = seq,
            peers = peers.len(),
            "own advertisement withdrawn"
        );
        Ok(Withdrawn {
            sequence_no: seq,
            withdrawal: w.to_json(),
            sent_to_peers: peers.len(),
            dht_put: put.is_some(),
            put_query: put,
        })
    }

    /// Puts our withdrawal into the mesh DHT in place of our advertisement (locally
    /// first: `put_record` stores it in our own record store too).
    fn put_own_withdrawal(&mut self, w: &NodeWithdrawal, now: &Timestamp) -> Option<kad::QueryId> {
        self.put_own(mesh_advert::kad::record_for_withdrawal(w, now))
    }

    /// Puts our record (advertisement or withdrawal) into the mesh DHT.
    fn put_own(&mut self, record: kad::Record) -> Option<kad::QueryId> {
        let put = self
            .swarm
            .behaviour_mut()
            .mesh_kad
            .put_record(record, kad::Quorum::One);
        if let Err(e) = &put {
            tracing::debug!(error = ?e, "own record not put");
        }
        self.own.put_result(put.is_ok());
        put.ok()
    }

    /// Retries a failed put of our record (advertisement or withdrawal).
    pub(super) fn retry_own_put(&mut self, now: &Timestamp) {
        if let Some(w) = self.own.withdrawal().cloned() {
            let _ = self.put_own_withdrawal(&w, now);
        } else if let Some(ad) = self.own.current().cloned() {
            self.put_own_record(&ad, now);
        }
    }

    /// A peer sent us a verified withdrawal over `/mesh/advert`: our mesh-DHT record
    /// store takes it in place of an older advertisement, so that our DHT answers no
    /// longer serve what was withdrawn.
    pub(super) fn withdrawal_received(&mut self, w: &NodeWithdrawal, now: &Timestamp) {
        let record = mesh_advert::kad::record_for_withdrawal(w, now);
        let store = self.swarm.behaviour_mut().mesh_kad.store_mut();
        if let Err(e) = mesh_advert::kad::accept_put(store, record, now) {
            tracing::debug!(error = %e, "withdrawal not taken into the DHT store");
        }
    }

    /// Puts our record into the mesh DHT.
    pub(super) fn put_own_record(&mut self, ad: &NodeAdvertisement, now: &Timestamp) {
        let _ = self.put_own(mesh_advert::kad::record_for(ad, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::NodeKeypair;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_record_rebuilds_on_new_addresses_only() {
        let key = NodeKeypair::generate();
        let mut own = OwnRecord::new(OwnAdvert::new(key, 3600, None));
        let now = Timestamp::now();
        // Nothing to advertise yet.
        assert!(own.tick(Vec::new, &now).is_none());
        own.addrs_changed();
        let first = own
            .tick(|| vec![addr("/ip4/192.0.2.1/tcp/4001")], &now)
            .expect("a first advertisement");
        assert_eq!(
            own.current().map(|a| a.sequence_no()),
            Some(first.sequence_no())
        );
        // The same addresses again: nothing new; the closure is not even asked
        // without a change.
        assert!(
            own.tick(|| -> Vec<Multiaddr> { panic!("not asked") }, &now)
                .is_none()
        );
        own.addrs_changed();
        assert!(
            own.tick(|| vec![addr("/ip4/192.0.2.1/tcp/4001")], &now)
                .is_none()
        );
        own.addrs_changed();
        let second = own
            .tick(|| vec![addr("/ip4/192.0.2.2/tcp/4001")], &now)
            .expect("new addresses, new advertisement");
        assert!(second.sequence_no() > first.sequence_no());
        // Near expiry it is renewed without any change.
        let late = now.plus_secs(3600 - 60);
        let renewed = own.tick(Vec::new, &late).expect("renewed");
        assert!(renewed.sequence_no() > second.sequence_no());
        // publish_now always gives a fresh one.
        let third = own
            .publish_now(vec![addr("/ip4/192.0.2.2/tcp/4001")], &late)
            .unwrap();
        assert!(third.sequence_no() > renewed.sequence_no());
    }

    #[test]
    fn own_record_remembers_a_failed_put() {
        let mut own = OwnRecord::new(OwnAdvert::new(NodeKeypair::generate(), 3600, None));
        assert!(!own.put_pending());
        own.put_result(false);
        assert!(own.put_pending());
        own.put_result(true);
        assert!(!own.put_pending());
    }

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
