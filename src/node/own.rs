//! The node's own advertisement as a component: [`OwnRecord`] holds the advertisement
//! (or the withdrawal that replaced it) and the state of its mesh-DHT put, persists the
//! sequence number, and returns the [`Action`]s that spread it — the put into the mesh
//! DHT, one `/mesh/advert` push per session peer, the advertisement the admission
//! client presents to relays, the trace and the application's event.

use libp2p::kad;
use libp2p::{Multiaddr, PeerId};
use mesh_advert::own::OwnAdvert;
use mesh_advert::{AdvertStore, NodeWithdrawal};
use mesh_core::{MeshResult, NodeAdvertisement, NodeId, Timestamp, TraceEvent, TraceEventType};

use super::action::Action;
use super::addrs;
use super::event::NodeEvent;
use super::store::SharedAdverts;
use super::view::View;

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

/// A withdrawal, signed and spread (see [`OwnRecord::withdraw`]).
#[derive(Debug)]
pub(crate) struct Withdrawal {
    /// The signed withdrawal.
    pub(crate) withdrawal: NodeWithdrawal,
    /// The session peers it goes to.
    pub(crate) peers: usize,
    /// What spreads it.
    pub(crate) actions: Vec<Action>,
}

/// The node's own advertisement: rebuilt when its addresses change or it nears
/// expiry, and put into the mesh DHT (again, once a DHT peer appears, when a put
/// failed). After a withdrawal it holds the withdrawal instead, and nothing is rebuilt
/// until an explicit publish.
#[derive(Debug)]
pub(crate) struct OwnRecord {
    node: NodeId,
    advert: OwnAdvert,
    store: SharedAdverts,
    addrs_dirty: bool,
    put_pending: bool,
    last_put: Option<kad::QueryId>,
    /// Puts that failed in a row, and when the next may go (see [`put_backoff`]).
    put_failures: u32,
    put_retry_at: Option<Timestamp>,
    withdrawal: Option<NodeWithdrawal>,
}

impl OwnRecord {
    /// The component over `advert`, persisting into `store`.
    pub(crate) fn new(node: NodeId, advert: OwnAdvert, store: SharedAdverts) -> Self {
        OwnRecord {
            node,
            advert,
            store,
            addrs_dirty: false,
            put_pending: false,
            last_put: None,
            put_failures: 0,
            put_retry_at: None,
            withdrawal: None,
        }
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

    /// Spreads a new advertisement if one is due: the addresses changed (`endpoints`
    /// is asked only then) or the current one nears expiry.
    pub(crate) fn tick<E: Into<OwnEndpoints>>(
        &mut self,
        endpoints: impl FnOnce() -> E,
        view: &impl View,
        now: &Timestamp,
    ) -> Vec<Action> {
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
        match new {
            Some(ad) => self.spread(ad, view, now),
            None => Vec::new(),
        }
    }

    /// A fresh advertisement now (`meshd advert publish`), with `endpoints`: its
    /// sequence number and what spreads it.
    pub(crate) fn publish_now(
        &mut self,
        endpoints: impl Into<OwnEndpoints>,
        view: &impl View,
        now: &Timestamp,
    ) -> MeshResult<(u64, Vec<Action>)> {
        self.addrs_dirty = false;
        let OwnEndpoints { addrs, wss_url } = endpoints.into();
        let ad = if self.withdrawal.take().is_some() {
            // Ends the withdrawal with the current addresses.
            let _ = self.advert.set_endpoints(addrs, wss_url, now);
            self.advert.renew(now)?.clone()
        } else {
            match self.advert.set_endpoints(addrs, wss_url, now)? {
                Some(ad) => ad.clone(),
                None => self.advert.renew(now)?.clone(),
            }
        };
        let seq = ad.sequence_no();
        Ok((seq, self.spread(ad, view, now)))
    }

    /// Stores and persists a new advertisement of this node, and what spreads it: the
    /// mesh DHT, every session peer, the admission client.
    fn spread(&mut self, ad: NodeAdvertisement, view: &impl View, now: &Timestamp) -> Vec<Action> {
        let seq = ad.sequence_no();
        self.persist(seq);
        if let Err(e) = self.store.insert(ad.clone(), now) {
            tracing::debug!(error = %e, "own advertisement not stored");
        }
        let mut actions = vec![
            Action::PresentAdvert(Some(Box::new(ad.clone()))),
            Action::PutOwnRecord(mesh_advert::kad::record_for(&ad, now)),
        ];
        for peer in session_peers(view) {
            actions.push(Action::PushAdvert {
                peer,
                advert: Box::new(ad.clone()),
            });
        }
        actions.push(Action::trace(
            TraceEvent::new(
                TraceEventType::AdvertisementPublished,
                self.node,
                now.clone(),
            )
            .with_detail(serde_json::json!({"sequence/no": seq})),
        ));
        actions.push(Action::Emit(NodeEvent::OwnAdvertPublished {
            sequence_no: seq,
            addrs: addrs::advert_addrs(&ad),
        }));
        actions
    }

    /// Withdraws (see `NodeHandle::withdraw`): signs a withdrawal above every
    /// advertisement issued so far, persists its sequence number, keeps the tombstone,
    /// and returns what replaces the mesh-DHT record and tells every session peer. No
    /// advertisement until [`OwnRecord::publish_now`].
    pub(crate) fn withdraw(&mut self, view: &impl View, now: &Timestamp) -> MeshResult<Withdrawal> {
        let w = self.advert.withdraw(now)?;
        self.withdrawal = Some(w.clone());
        self.persist(w.sequence_no());
        if let Err(e) = self.store.withdraw(&w, now) {
            tracing::debug!(error = %e, "own withdrawal not stored");
        }
        let mut actions = vec![
            Action::PresentAdvert(None),
            Action::PutOwnRecord(mesh_advert::kad::record_for_withdrawal(&w, now)),
        ];
        let peers = session_peers(view);
        for &peer in &peers {
            actions.push(Action::PushWithdrawal {
                peer,
                withdrawal: Box::new(w.clone()),
            });
        }
        tracing::info!(
            sequence = w.sequence_no(),
            peers = peers.len(),
            "own advertisement withdrawn"
        );
        Ok(Withdrawal {
            withdrawal: w,
            peers: peers.len(),
            actions,
        })
    }

    /// Persists the last sequence number used (also at a clean stop).
    pub(crate) fn persist(&self, seq: u64) {
        if let Err(e) = self.store.durable().set_own_sequence(seq) {
            tracing::warn!(error = %e, "cannot persist own sequence number");
        }
    }

    /// A mesh-DHT peer appeared: the put of our record again, if the last one failed
    /// and its backoff has passed.
    pub(crate) fn dht_peer_appeared(&self, now: &Timestamp) -> Vec<Action> {
        if !self.put_pending || self.put_retry_at.as_ref().is_some_and(|at| now < at) {
            return Vec::new();
        }
        let record = match (&self.withdrawal, self.advert.current()) {
            (Some(w), _) => mesh_advert::kad::record_for_withdrawal(w, now),
            (None, Some(ad)) => mesh_advert::kad::record_for(ad, now),
            (None, None) => return Vec::new(),
        };
        vec![Action::PutOwnRecord(record)]
    }

    /// The loop started the put of our record (`Some(query)`) or could not (`None`).
    pub(crate) fn put_started(&mut self, query: Option<kad::QueryId>) {
        self.put_pending = query.is_none();
        self.last_put = query;
    }

    /// The put of our record failed in the DHT at `now` (retried when a mesh-DHT peer
    /// appears, once its backoff has passed). A put that asked no peer (the table was
    /// empty: a node without seeds before its first peer) takes no backoff: the first
    /// peer's identify retries it at once.
    pub(crate) fn put_failed(&mut self, now: &Timestamp, contacted: bool) {
        self.put_pending = true;
        if !contacted {
            return;
        }
        self.put_failures = self.put_failures.saturating_add(1);
        self.put_retry_at = Some(now.plus_secs(put_backoff(self.put_failures)));
    }

    /// The put of our record went through: the next failure waits the shortest backoff.
    pub(crate) fn put_succeeded(&mut self) {
        self.put_failures = 0;
        self.put_retry_at = None;
    }

    /// The query of the last put started, if it started.
    pub(crate) fn last_put(&self) -> Option<kad::QueryId> {
        self.last_put
    }
}

/// Seconds before the put of our record is tried again after `failures` failures in a
/// row: 10, doubling, at most 10 minutes. A retry was started by every identify of a
/// mesh-DHT peer while the last put had failed, and peers that refuse puts (or push
/// identify at will) made each one a new query and up to 20 puts to third parties.
pub(crate) fn put_backoff(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(6);
    (10i64 << doublings).min(600)
}

fn session_peers(view: &impl View) -> Vec<PeerId> {
    view.connected_peers()
        .into_iter()
        .filter(|p| view.has_session(p))
        .collect()
}

#[cfg(test)]
#[path = "own_tests.rs"]
mod tests;
