//! Keepalive from libp2p ping results: `failures` consecutive failures mark a peer lost,
//! the next success marks it restored. Pure logic. The behaviour runs its own libp2p
//! ping (`/ipfs/ping/1.0.0`) and feeds every result here, then tells the governor
//! (a lost peer is demoted from hot).

use std::collections::HashMap;
use std::hash::Hash;

use libp2p::PeerId;
use mesh_core::NodeId;

use crate::governor::Governor;

/// A change worth telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The peer stopped answering.
    Lost,
    /// The peer answers again.
    Restored,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    failures: u32,
    lost: bool,
}

/// Per-peer keepalive state.
#[derive(Debug)]
pub struct Keepalive<K> {
    threshold: u32,
    peers: HashMap<K, State>,
}

impl<K: Hash + Eq> Keepalive<K> {
    /// Lost after `threshold` consecutive failures (at least 1).
    pub fn new(threshold: u32) -> Self {
        Keepalive {
            threshold: threshold.max(1),
            peers: HashMap::new(),
        }
    }

    /// Records one ping result.
    pub fn record(&mut self, peer: K, ok: bool) -> Option<Change> {
        let s = self.peers.entry(peer).or_default();
        if ok {
            s.failures = 0;
            if s.lost {
                s.lost = false;
                return Some(Change::Restored);
            }
            return None;
        }
        s.failures = s.failures.saturating_add(1);
        if !s.lost && s.failures >= self.threshold {
            s.lost = true;
            return Some(Change::Lost);
        }
        None
    }

    /// Forgets a peer (its connection is gone).
    pub fn remove(&mut self, peer: &K) {
        self.peers.remove(peer);
    }

    /// Whether `peer` is currently lost.
    pub fn is_lost(&self, peer: &K) -> bool {
        self.peers.get(peer).is_some_and(|s| s.lost)
    }
}

/// Records one ping result of `peer` and tells the governor of a change, which is
/// returned for the behaviour to trace and report.
pub(crate) fn on_ping(
    keepalive: &mut Keepalive<PeerId>,
    governor: &mut Governor,
    peer: PeerId,
    ok: bool,
) -> Option<Change> {
    let change = keepalive.record(peer, ok)?;
    if let Ok(node) = NodeId::from_peer_id(&peer) {
        match change {
            Change::Lost => governor.keepalive_lost(&node),
            Change::Restored => governor.keepalive_restored(&node),
        }
    }
    Some(change)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_after_threshold_restored_on_success() {
        let mut k = Keepalive::new(3);
        assert_eq!(k.record("a", false), None);
        assert_eq!(k.record("a", false), None);
        assert_eq!(k.record("a", true), None, "a success resets the count");
        assert_eq!(k.record("a", false), None);
        assert_eq!(k.record("a", false), None);
        assert_eq!(k.record("a", false), Some(Change::Lost));
        assert_eq!(k.record("a", false), None, "told once");
        assert!(k.is_lost(&"a"));
        assert_eq!(k.record("a", true), Some(Change::Restored));
        assert_eq!(k.record("a", true), None);
        assert!(!k.is_lost(&"a"));
    }

    #[test]
    fn a_lost_peer_is_demoted_and_promoted_again_when_restored() {
        use crate::governor::{GovernorConfig, Temperature};
        let now = mesh_core::Timestamp::now();
        let node = mesh_core::NodeKeypair::generate().node_id();
        let peer = node.to_peer_id().unwrap();
        let mut gov = Governor::new(GovernorConfig::default());
        let _ = gov.session_established(node, &now);
        assert_eq!(gov.temperature(&node), Some(Temperature::Hot));
        let mut k = Keepalive::new(2);
        assert_eq!(on_ping(&mut k, &mut gov, peer, false), None);
        assert_eq!(on_ping(&mut k, &mut gov, peer, false), Some(Change::Lost));
        assert_eq!(gov.temperature(&node), Some(Temperature::Warm));
        assert_eq!(
            on_ping(&mut k, &mut gov, peer, true),
            Some(Change::Restored)
        );
        assert_eq!(gov.temperature(&node), Some(Temperature::Hot));
    }
}
