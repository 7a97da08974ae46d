//! Replay memory for admission requests: a nonce seen from the same node within
//! `memory_secs` is `E_HS_REPLAY`. Older requests are refused by their `ts` anyway
//! (clock skew rule of the family), so nonces can be forgotten after that. Pure logic,
//! bounded: `per_node` nonces per node, `max_nodes` nodes (oldest dropped first).

use std::collections::{HashMap, VecDeque};

use mesh_core::{ErrorCode, MeshError, NodeId, Timestamp};

/// Nonce memory.
#[derive(Debug)]
pub struct Nonces {
    seen: HashMap<NodeId, VecDeque<(String, Timestamp)>>,
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
        if list.iter().any(|(n, _)| n == nonce) {
            return Err(MeshError::new(
                ErrorCode::HsReplay,
                "relay-admission-request.v1: nonce already used",
            ));
        }
        if list.len() >= self.per_node {
            list.pop_front();
        }
        list.push_back((nonce.to_owned(), now.clone()));
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
}
