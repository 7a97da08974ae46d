//! The member table's defences against what anyone may sign: which presences change
//! nothing ([`stale`]), which leave is forgotten when too many are remembered
//! ([`remember_leave`]), and which member a full table evicts ([`make_room`]). Pure.

use std::collections::HashMap;

use mesh_core::{NodeId, SwarmPresence, Timestamp};

use super::{Change, DiscoveryKey, Joined, LeftReason, Member};

/// See [`Groups::is_stale`].
pub(super) fn stale(s: &Joined, me: &NodeId, p: &SwarmPresence, now: &Timestamp) -> bool {
    let node = p.node_id();
    node == *me
        || p.expires_at() <= now
        || s.members
            .get(&node)
            .is_some_and(|m| m.sequence_no >= p.sequence_no())
        || s.left
            .get(&node)
            .is_some_and(|l| l.sequence_no >= p.sequence_no() && &l.until > now)
}

/// A `leave` remembered, so that the presences its sender signed before it cannot
/// bring it back.
#[derive(Debug, Clone)]
pub(super) struct Leave {
    /// The leave's sequence number.
    pub(super) sequence_no: u64,
    /// Until when (every earlier presence has expired by then).
    pub(super) until: Timestamp,
    /// When its sender had come into the table ([`Member::arrival`]); `None`: it was
    /// not a member when its leave came.
    pub(super) arrival: Option<u64>,
    /// The leave's wire form and until when a member's table may still hold the
    /// presence it replaced (that presence's expiry): till then the leave goes with
    /// our answers to table checks (`Groups::signed_leaves`). `None`: its sender was
    /// not a member here.
    pub(super) served: Option<(std::sync::Arc<[u8]>, Timestamp)>,
}

/// Remembers `node`'s leave; at most `max` are kept. Beyond, expired ones go first,
/// then the leaves of nodes that were not members, then the leave of the member that
/// had come in last; a stranger's leave is not kept in place of a member's. Anyone can
/// sign a leave for a fresh key (and a join before it): a flood of them must not push
/// out the leaves of members known longer, whose old presences could then be replayed
/// back in.
pub(super) fn remember_leave(
    left: &mut HashMap<NodeId, Leave>,
    node: NodeId,
    leave: Leave,
    max: usize,
    now: &Timestamp,
) {
    if !left.contains_key(&node) && left.len() >= max {
        left.retain(|_, l| &l.until > now);
        if left.len() >= max {
            // The first to go: strangers' leaves, then the latest arrival's. The one
            // coming in is not kept in place of one that would stay longer.
            let rank = |l: &Leave| (l.arrival.is_none(), l.arrival);
            let victim = left
                .iter()
                .max_by_key(|(n, l)| (rank(l), **n))
                .map(|(n, l)| (*n, rank(l)));
            match victim {
                Some((_, r)) if rank(&leave) >= r => return,
                Some((n, _)) => {
                    left.remove(&n);
                }
                None => {}
            }
        }
    }
    left.insert(node, leave);
}

/// Frees places in a full member table: expired members, else a member not seen
/// alive drawn at random from the later half of arrivals. Returns what left. (Not the
/// one whose presence expires first: a presence's TTL is its signer's choice, up to an
/// hour, so a flood of fresh keys with long TTLs made every honest member, refreshed
/// at 15 minutes at most, the first to go. The members a node has known longest stay;
/// drawn at random among the later half, a newcomer is not simply pushed out by the
/// next fresh key, as it would be if the latest arrival always went.)
pub(super) fn make_room(
    members: &mut HashMap<NodeId, Member>,
    swarm: DiscoveryKey,
    max: usize,
    now: &Timestamp,
    alive: &impl Fn(&NodeId) -> bool,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut gone: Vec<NodeId> = members
        .values()
        .filter(|m| &m.expires_at <= now)
        .map(|m| m.node)
        .collect();
    gone.sort_unstable();
    for node in gone {
        members.remove(&node);
        changes.push(Change::Left {
            swarm,
            node,
            reason: LeftReason::Expired,
        });
    }
    if members.len() < max {
        return changes;
    }
    let mut candidates: Vec<(u64, NodeId)> = members
        .values()
        .filter(|m| !alive(&m.node))
        .map(|m| (m.arrival, m.node))
        .collect();
    let half = candidates.len() / 2;
    if half < candidates.len() {
        candidates.select_nth_unstable(half);
    }
    let later = &candidates[half..];
    let draw = match u64::try_from(later.len()) {
        Ok(n) if n > 0 => rand_core::RngCore::next_u64(&mut rand_core::OsRng) % n,
        _ => 0,
    };
    if let Some(&(_, victim)) = usize::try_from(draw).ok().and_then(|i| later.get(i)) {
        members.remove(&victim);
        changes.push(Change::Left {
            swarm,
            node: victim,
            reason: LeftReason::Evicted,
        });
    }
    changes
}
