//! Replay memory for admission requests: a nonce seen from the same node within
//! `memory_secs` is `E_HS_REPLAY`. Older requests are refused by their `ts` anyway
//! (clock skew rule of the family), so nonces can be forgotten after that. Pure logic,
//! bounded: `per_node` nonces per node, `max_nodes` nodes (oldest dropped first).
//!
//! A nonce is kept as a 64-bit digest (SipHash with fixed keys), not as its text (up to
//! 128 characters): at the relay's bounds ([`PER_NODE`] × 16,384 nodes) that is about
//! 17 MiB at most rather than 200. A collision can only make a node's own request look
//! like a replay of its own (nonces are remembered per node), never admit anything.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use mesh_core::{ErrorCode, MeshError, NodeId, Timestamp};

/// Nonces remembered per node by the relay's gate: a node makes a few admission
/// requests a minute (the IP key's limit is 60), and the memory spans two minutes.
pub(crate) const PER_NODE: usize = 16;

fn digest(nonce: &str) -> u64 {
    let mut h = DefaultHasher::new();
    nonce.hash(&mut h);
    h.finish()
}

/// One remembered nonce: its digest and when it was seen.
type Remembered = (u64, Timestamp);

/// Nonce memory.
#[derive(Debug)]
pub struct Nonces {
    seen: HashMap<NodeId, VecDeque<Remembered>>,
    order: VecDeque<NodeId>,
    memory_secs: i64,
    per_node: usize,
    max_nodes: usize,
}

impl Nonces {
    /// Memory for `memory_secs` (at least twice the clock skew).
    pub fn new(memory_secs: i64, per_node: usize, max_nodes: usize) -> Self {
        Nonces {
            seen: HashMap::new(),
            order: VecDeque::new(),
            memory_secs,
            per_node: per_node.max(1),
            max_nodes: max_nodes.max(1),
        }
    }

    /// Refuses a nonce seen before from `node`; otherwise remembers it.
    pub fn check(&mut self, node: NodeId, nonce: &str, now: &Timestamp) -> Result<(), MeshError> {
        let memory = self.memory_secs;
        if !self.seen.contains_key(&node) {
            while self.seen.len() >= self.max_nodes {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.seen.remove(&old);
            }
            self.order.push_back(node);
        }
        let list = self.seen.entry(node).or_default();
        list.retain(|(_, at)| now.secs_since(at) <= memory);
        let nonce = digest(nonce);
        if list.iter().any(|(n, _)| *n == nonce) {
            return Err(MeshError::new(
                ErrorCode::HsReplay,
                "relay-admission-request.v1: nonce already used",
            ));
        }
        if list.len() >= self.per_node {
            list.pop_front();
        }
        list.push_back((nonce, now.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::NodeKeypair;

    #[test]
    fn replays_are_refused_within_memory_and_memory_is_bounded() {
        let t = Timestamp::parse("2026-11-22T12:00:00Z").unwrap();
        let (a, b) = (
            NodeKeypair::generate().node_id(),
            NodeKeypair::generate().node_id(),
        );
        let mut n = Nonces::new(120, 2, 1);
        n.check(a, "n1", &t).unwrap();
        assert_eq!(n.check(a, "n1", &t).unwrap_err().code, ErrorCode::HsReplay);
        n.check(b, "n1", &t).unwrap();
        // `a` was dropped to make room for `b` (max_nodes 1).
        n.check(a, "n1", &t).unwrap();
        n.check(a, "n2", &t).unwrap();
        n.check(a, "n3", &t).unwrap();
        // per_node 2: n1 fell out.
        n.check(a, "n1", &t).unwrap();
        assert!(n.check(a, "n3", &t.plus_secs(120)).is_err());
        n.check(a, "n3", &t.plus_secs(121)).unwrap();
    }

    /// What one remembered nonce costs, whatever its length: a digest and a time.
    #[test]
    fn a_nonce_is_remembered_as_a_digest() {
        assert!(
            std::mem::size_of::<Remembered>() <= 64,
            "{}",
            std::mem::size_of::<Remembered>()
        );
        let t = Timestamp::parse("2026-11-22T12:00:00Z").unwrap();
        let a = NodeKeypair::generate().node_id();
        let mut n = Nonces::new(120, PER_NODE, 4);
        let long = "n".repeat(128);
        n.check(a, &long, &t).unwrap();
        assert_eq!(n.check(a, &long, &t).unwrap_err().code, ErrorCode::HsReplay);
        let other = format!("{}m", "n".repeat(127));
        n.check(a, &other, &t).unwrap();
    }
}
