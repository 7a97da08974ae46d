//! What a full store remembers of the records it evicted: for each node, the highest
//! sequence number a replay must not go back to, until any advertisement at or below it
//! has expired.
//!
//! Evicting a withdrawal's tombstone forgot that the node withdrew: its withdrawn
//! advertisement (valid for up to a day) could be handed to the store again and served
//! as current. Evicting an advertisement forgot its sequence number: an older one of
//! the node's could take its place. Floors cost a few dozen bytes each, [`MAX_FLOORS`]
//! at most (the one that lapses first goes when full), and lapse when the records they
//! stand for would have expired. They are not kept across a restart.

use std::collections::{BTreeSet, HashMap};

use mesh_core::{NodeId, Timestamp};

/// Floors kept at most.
pub const MAX_FLOORS: usize = 16_384;

/// The floors of evicted records.
#[derive(Debug, Default)]
pub(super) struct Floors {
    by_node: HashMap<NodeId, (u64, Timestamp)>,
    by_until: BTreeSet<(Timestamp, NodeId)>,
}

impl Floors {
    /// Refuses, until `until`, every record of `node` at or below `floor` (a floor
    /// already held for the node is raised, never lowered).
    pub(super) fn record(&mut self, node: NodeId, floor: u64, until: Timestamp) {
        let (floor, until) = match self.by_node.remove(&node) {
            Some((f, u)) => {
                self.by_until.remove(&(u.clone(), node));
                (f.max(floor), if u > until { u } else { until })
            }
            None => (floor, until),
        };
        while self.by_node.len() >= MAX_FLOORS {
            let Some((u, n)) = self.by_until.pop_first() else {
                break;
            };
            let _ = u;
            self.by_node.remove(&n);
        }
        self.by_until.insert((until.clone(), node));
        self.by_node.insert(node, (floor, until));
    }

    /// The floor of `node` at `now`, if one holds.
    pub(super) fn floor(&self, node: &NodeId, now: &Timestamp) -> Option<u64> {
        self.by_node
            .get(node)
            .filter(|(_, until)| now <= until)
            .map(|(f, _)| *f)
    }

    /// Floors held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_node.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::parse("2026-03-23T18:00:00Z")
            .unwrap()
            .plus_secs(secs)
    }

    #[test]
    fn floors_rise_lapse_and_are_bounded() {
        let mut f = Floors::default();
        let n = mesh_core::NodeKeypair::generate().node_id();
        f.record(n, 5, t(100));
        f.record(n, 3, t(50));
        assert_eq!(f.floor(&n, &t(100)), Some(5));
        assert_eq!(f.floor(&n, &t(101)), None, "lapsed");
        for i in 0..MAX_FLOORS as i64 + 10 {
            f.record(mesh_core::NodeKeypair::generate().node_id(), 1, t(200 + i));
        }
        assert_eq!(f.len(), MAX_FLOORS);
        assert_eq!(f.by_until.len(), MAX_FLOORS);
        assert_eq!(f.floor(&n, &t(0)), None, "the one lapsing first went first");
    }
}
