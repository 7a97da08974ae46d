//! The source addresses the UDP muxer reported as new and that have no connection yet:
//! bounded and expiring (patched for libmesh, see `PATCHED.md`).
//!
//! Upstream kept them in a `HashSet` that only a connection set up for the address, or
//! the listener closing, emptied. An attempt that failed (a source that sent one STUN
//! packet and nothing more, spoofed or not) stayed for the life of the listener: some
//! 50 bytes per source address, for ever, and that address never got another attempt.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Addresses followed at most; beyond, the oldest is forgotten (a repeated request from
/// it starts another attempt, which the swarm's pending-connection caps bound).
pub(crate) const MAX_NEW_ADDRS: usize = 256;

/// How long an address without a connection is remembered: longer than an attempt
/// lives (the data channel wait is 10 s), so one attempt per address at a time.
pub(crate) const NEW_ADDR_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(crate) struct NewAddrs {
    /// Each address with the sequence number of its entry in `order` and its ufrag.
    seen: HashMap<SocketAddr, (u64, String)>,
    /// The ufrags of the addresses followed, with their entries' sequence numbers: one
    /// attempt per ufrag at a time (a browser checks from each of its local candidates
    /// with one ufrag; two attempts for it would share its muxer connection, and closing
    /// the one that lost would close the other's).
    ufrags: HashMap<String, u64>,
    /// Entries oldest first; those whose address was removed or re-added are stale and
    /// dropped when they reach the front. At most [`MAX_NEW_ADDRS`].
    order: VecDeque<(SocketAddr, u64, Instant)>,
    next: u64,
}

impl NewAddrs {
    pub(crate) fn contains(&mut self, addr: &SocketAddr, now: Instant) -> bool {
        self.expire(now);
        self.seen.contains_key(addr)
    }

    /// Whether an attempt for `ufrag` (from any address) is followed.
    pub(crate) fn has_ufrag(&mut self, ufrag: &str, now: Instant) -> bool {
        self.expire(now);
        self.ufrags.contains_key(ufrag)
    }

    pub(crate) fn insert(&mut self, addr: SocketAddr, ufrag: String, now: Instant) {
        self.expire(now);
        while self.order.len() >= MAX_NEW_ADDRS {
            self.pop_front();
        }
        let seq = self.next;
        self.next += 1;
        self.ufrags.insert(ufrag.clone(), seq);
        if let Some((old, old_ufrag)) = self.seen.insert(addr, (seq, ufrag)) {
            self.forget_ufrag(&old_ufrag, old);
        }
        self.order.push_back((addr, seq, now));
    }

    pub(crate) fn remove(&mut self, addr: &SocketAddr) {
        if let Some((seq, ufrag)) = self.seen.remove(addr) {
            self.forget_ufrag(&ufrag, seq);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.seen.clear();
        self.ufrags.clear();
        self.order.clear();
    }

    fn forget_ufrag(&mut self, ufrag: &str, seq: u64) {
        if self.ufrags.get(ufrag) == Some(&seq) {
            self.ufrags.remove(ufrag);
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, _, at)| now.saturating_duration_since(*at) >= NEW_ADDR_TTL)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((addr, seq, _)) = self.order.pop_front()
            && self.seen.get(&addr).is_some_and(|(s, _)| *s == seq)
        {
            self.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], n))
    }

    #[test]
    fn bounded_and_expiring() {
        let mut t = NewAddrs::default();
        let t0 = Instant::now();
        for n in 0..(MAX_NEW_ADDRS as u16 + 10) {
            t.insert(addr(n), n.to_string(), t0);
        }
        assert!(!t.contains(&addr(0), t0), "the oldest is forgotten");
        assert!(t.contains(&addr(MAX_NEW_ADDRS as u16 + 9), t0));
        assert!(t.seen.len() <= MAX_NEW_ADDRS && t.order.len() <= MAX_NEW_ADDRS);
        let later = t0 + NEW_ADDR_TTL;
        assert!(!t.contains(&addr(MAX_NEW_ADDRS as u16 + 9), later));
        assert!(t.seen.is_empty() && t.order.is_empty());
        // Removed then added again: one live entry, the stale one dropped in turn.
        t.insert(addr(1), "u".into(), later);
        t.remove(&addr(1));
        t.insert(addr(1), "u".into(), later);
        assert!(t.contains(&addr(1), later));
        assert!(t.has_ufrag("u", later));
        assert_eq!(t.order.len(), 2);
        t.remove(&addr(1));
        assert!(!t.has_ufrag("u", later));
        assert!(t.ufrags.is_empty());
    }
}
