//! Who holds the advertisement store's slots: per-source shares and the eviction rule.
//!
//! Every advertisement or tombstone a peer or a client brought in is attributed to its
//! [`Source`]: the network it came from (an IPv4 address or an IPv6 /64, [`mesh_core::IpKey`]),
//! or, for a connection without one (relayed, memory transport), the peer. Node ids and
//! peer ids cost nothing to make, networks do, so the store counts by network where it
//! can. A source holds at most its quota of entries and bytes; when the store is full,
//! the source holding the most (entries, or bytes when bytes are short) gives up its
//! oldest slot to a source holding fewer, so one source cannot keep others out. The
//! node's own changes and answers to its own lookups are [`Source::Local`]: counted for
//! nobody, never evicted (they go when they expire). Rows read back from disk (and
//! changes put back after a failed commit) are [`Source::Restored`]: one share like any
//! other, so a store that was full when the node stopped makes room again.
//!
//! Pure bookkeeping beside the store.

use std::collections::{BTreeSet, HashMap};

use mesh_core::NodeId;
pub use mesh_core::Source;

/// What one source holds.
#[derive(Debug)]
struct Held {
    source: Source,
    /// Its slots, oldest first: (attribution order, node).
    slots: BTreeSet<(u64, NodeId)>,
    bytes: usize,
}

/// A source as the tables below name it (a `Source` is about 90 bytes, with a peer id
/// in it; this is 8, and there is one per slot).
type Sid = u64;

/// One attributed slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    sid: Sid,
    order: u64,
    bytes: u32,
}

/// The attribution of the store's slots (one per node id: its advertisement or its
/// tombstone) to sources other than [`Source::Local`].
#[derive(Debug, Default)]
pub(crate) struct Shares {
    by_node: HashMap<NodeId, Slot>,
    sids: HashMap<Source, Sid>,
    by_sid: HashMap<Sid, Held>,
    /// (slots held, source), to find the source holding the most.
    by_count: BTreeSet<(usize, Sid)>,
    /// (bytes held, source).
    by_bytes: BTreeSet<(usize, Sid)>,
    next_order: u64,
    next_sid: Sid,
}

/// Which cap a change would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pressure {
    /// The number of entries and tombstones.
    Entries,
    /// The bytes of advertisements.
    Bytes,
}

impl Shares {
    /// The source a node's slot is attributed to (`Local` when none).
    pub(crate) fn holder(&self, node: &NodeId) -> Source {
        self.by_node
            .get(node)
            .and_then(|s| self.by_sid.get(&s.sid))
            .map_or(Source::Local, |h| h.source)
    }

    /// Slots and bytes `source` holds.
    pub(crate) fn held(&self, source: &Source) -> (usize, usize) {
        self.sids
            .get(source)
            .and_then(|sid| self.by_sid.get(sid))
            .map_or((0, 0), |h| (h.slots.len(), h.bytes))
    }

    /// Sources holding at least one slot.
    pub(crate) fn sources(&self) -> usize {
        self.by_sid.len()
    }

    fn unindex(&mut self, sid: Sid) {
        if let Some(h) = self.by_sid.get(&sid) {
            self.by_count.remove(&(h.slots.len(), sid));
            self.by_bytes.remove(&(h.bytes, sid));
        }
    }

    fn reindex(&mut self, sid: Sid) {
        match self.by_sid.get(&sid) {
            Some(h) if h.slots.is_empty() => {
                self.sids.remove(&h.source);
                self.by_sid.remove(&sid);
            }
            Some(h) => {
                self.by_count.insert((h.slots.len(), sid));
                self.by_bytes.insert((h.bytes, sid));
            }
            None => {}
        }
    }

    /// Drops the attribution of `node`'s slot (it went, or became local).
    pub(crate) fn forget(&mut self, node: &NodeId) {
        let Some(slot) = self.by_node.remove(node) else {
            return;
        };
        self.unindex(slot.sid);
        if let Some(h) = self.by_sid.get_mut(&slot.sid) {
            h.slots.remove(&(slot.order, *node));
            h.bytes -= slot.bytes as usize;
        }
        self.reindex(slot.sid);
    }

    /// Attributes `node`'s slot, now of `bytes` bytes, to `source` (the source of its
    /// latest change).
    pub(crate) fn attribute(&mut self, node: NodeId, source: Source, bytes: usize) {
        self.forget(&node);
        if source == Source::Local {
            return;
        }
        let sid = match self.sids.get(&source) {
            Some(sid) => *sid,
            None => {
                self.next_sid += 1;
                self.sids.insert(source, self.next_sid);
                self.by_sid.insert(
                    self.next_sid,
                    Held {
                        source,
                        slots: BTreeSet::new(),
                        bytes: 0,
                    },
                );
                self.next_sid
            }
        };
        self.unindex(sid);
        self.next_order += 1;
        // A record is at most a store's `max_record_bytes` (16 KiB by default).
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        if let Some(h) = self.by_sid.get_mut(&sid) {
            h.slots.insert((self.next_order, node));
            h.bytes += bytes as usize;
        }
        let order = self.next_order;
        self.by_node.insert(node, Slot { sid, order, bytes });
        self.reindex(sid);
    }

    /// What `source` would hold after a change of `node` to a slot of `bytes` bytes.
    pub(crate) fn after(&self, node: &NodeId, source: &Source, bytes: usize) -> (usize, usize) {
        let (mut slots, mut held) = self.held(source);
        let sid = self.sids.get(source);
        match self.by_node.get(node) {
            Some(s) if Some(&s.sid) == sid => held -= s.bytes as usize,
            _ => slots += 1,
        }
        (slots, held + bytes)
    }

    /// The slot to evict so that `source` can make a change of `node` to `bytes` bytes
    /// when the store is short of what `pressure` names: the oldest slot of the source
    /// holding the most, if that source would still hold more than `source` after
    /// giving it up. `None` when `source` itself holds the most (or is local and no
    /// other source holds anything), or when nobody else holds anything.
    pub(crate) fn victim(
        &self,
        node: &NodeId,
        source: &Source,
        bytes: usize,
        pressure: Pressure,
    ) -> Option<NodeId> {
        let (slots, held) = self.after(node, source, bytes);
        let mut order = match pressure {
            Pressure::Entries => self.by_count.iter(),
            Pressure::Bytes => self.by_bytes.iter(),
        };
        let (theirs, top) = order.next_back()?;
        if self.sids.get(source) == Some(top) {
            // The requester already holds the most: nobody holds more to give way.
            return None;
        }
        let mine = match pressure {
            Pressure::Entries => slots,
            Pressure::Bytes => held,
        };
        // A local change takes from whoever holds the most; a source's change only from
        // one that holds more than it would (so two sources never trade slots forever).
        if *source != Source::Local && *theirs <= mine {
            return None;
        }
        let h = self.by_sid.get(top)?;
        // For bytes, a tombstone (no bytes) would free nothing.
        let frees = |n: &NodeId| {
            pressure == Pressure::Entries || self.by_node.get(n).is_some_and(|s| s.bytes > 0)
        };
        h.slots
            .iter()
            .map(|(_, n)| *n)
            .find(|n| n != node && frees(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::{Multiaddr, PeerId};
    use mesh_core::{IpKey, NodeKeypair};
    use std::net::Ipv4Addr;

    fn node() -> NodeId {
        NodeKeypair::generate().node_id()
    }

    fn net(last: u8) -> Source {
        Source::Network(IpKey::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn a_peer_counts_by_its_network_unless_it_has_none() {
        let peer = PeerId::random();
        let direct: Multiaddr = "/ip4/192.0.2.7/tcp/4001".parse().unwrap();
        let relayed: Multiaddr = "/ip4/198.51.100.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .unwrap();
        let memory: Multiaddr = "/memory/5".parse().unwrap();
        assert_eq!(Source::of_peer(peer, [&relayed, &direct]), net(7));
        assert_eq!(Source::of_peer(peer, [&relayed]), Source::Peer(peer));
        assert_eq!(Source::of_peer(peer, [&memory]), Source::Peer(peer));
        assert_eq!(Source::of_peer(peer, []), Source::Peer(peer));
    }

    #[test]
    fn the_source_holding_the_most_gives_way_oldest_first() {
        let mut s = Shares::default();
        let big: Vec<NodeId> = (0..5).map(|_| node()).collect();
        for n in &big {
            s.attribute(*n, net(1), 100);
        }
        let small = node();
        s.attribute(small, net(2), 100);
        assert_eq!(s.held(&net(1)), (5, 500));
        // Another network's new node: the oldest of the five goes.
        let fresh = node();
        assert_eq!(
            s.victim(&fresh, &net(2), 100, Pressure::Entries),
            Some(big[0])
        );
        assert_eq!(
            s.victim(&fresh, &net(3), 100, Pressure::Bytes),
            Some(big[0])
        );
        // The network holding the most gets nothing from the others.
        assert_eq!(s.victim(&fresh, &net(1), 100, Pressure::Entries), None);
        // Nor does a network that would hold as many as the largest.
        for _ in 0..3 {
            s.attribute(node(), net(2), 100);
        }
        assert_eq!(s.victim(&fresh, &net(2), 100, Pressure::Entries), None);
        // The node's own changes take from the largest.
        assert_eq!(
            s.victim(&fresh, &Source::Local, 100, Pressure::Entries),
            Some(big[0])
        );
    }

    #[test]
    fn bytes_pressure_takes_from_the_source_with_the_most_bytes() {
        let mut s = Shares::default();
        let heavy = node();
        s.attribute(heavy, net(1), 16_000);
        let light: Vec<NodeId> = (0..3).map(|_| node()).collect();
        for n in &light {
            s.attribute(*n, net(2), 700);
        }
        let fresh = node();
        assert_eq!(s.victim(&fresh, &net(3), 700, Pressure::Bytes), Some(heavy));
        assert_eq!(
            s.victim(&fresh, &net(3), 700, Pressure::Entries),
            Some(light[0])
        );
        // A tombstone frees no bytes: bytes pressure passes over it.
        let tomb = node();
        let mut s = Shares::default();
        s.attribute(tomb, net(1), 0);
        s.attribute(heavy, net(1), 16_000);
        assert_eq!(s.victim(&fresh, &net(3), 700, Pressure::Bytes), Some(heavy));
        assert_eq!(
            s.victim(&fresh, &net(3), 700, Pressure::Entries),
            Some(tomb)
        );
    }

    #[test]
    fn attribution_follows_the_latest_change_and_goes_with_the_slot() {
        let mut s = Shares::default();
        let n = node();
        s.attribute(n, net(1), 100);
        s.attribute(n, net(2), 300);
        assert_eq!((s.held(&net(1)), s.held(&net(2))), ((0, 0), (1, 300)));
        assert_eq!(s.holder(&n), net(2));
        assert_eq!(s.after(&n, &net(2), 50), (1, 50));
        assert_eq!(s.after(&n, &net(1), 50), (1, 50));
        s.attribute(n, Source::Local, 300);
        assert_eq!((s.held(&net(2)), s.sources()), ((0, 0), 0));
        s.attribute(n, net(3), 10);
        s.forget(&n);
        assert_eq!((s.holder(&n), s.sources()), (Source::Local, 0));
        assert!(s.by_count.is_empty() && s.by_bytes.is_empty() && s.sids.is_empty());
        // What one slot costs beside the store's own entry.
        assert!(std::mem::size_of::<Slot>() <= 24);
    }
}
