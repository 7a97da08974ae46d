//! The duplicate filter of received frames, as pure logic (every call takes `now`).
//!
//! It holds a 16-byte digest of (signer, `frame/id`) per frame, never the id itself, so
//! what a peer chooses cannot grow it (ids are capped at
//! [`mesh_core::families::MAX_FRAME_ID`] bytes anyway). An entry lasts until the frame
//! expires: after that the frame is refused as expired, so nothing is lost by
//! forgetting it. At most `capacity` entries are held; beyond, the oldest goes first.
//! The behaviour records a frame only once it was taken (delivered or forwarded), so a
//! frame refused for a reason that passes (a full queue, a rate limit) may come again.

use std::collections::{HashMap, VecDeque};

use mesh_core::{NodeId, Timestamp};
use sha2::{Digest, Sha256};

/// The digest of one frame's identity.
pub type FrameDigest = [u8; 16];

/// The digest of (`from`, `frame_id`).
pub fn digest(from: &NodeId, frame_id: &str) -> FrameDigest {
    let mut h = Sha256::new();
    h.update(from.fingerprint().as_bytes());
    h.update((frame_id.len() as u64).to_be_bytes());
    h.update(frame_id.as_bytes());
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Digests of the frames taken recently, each until its frame expires.
#[derive(Debug)]
pub struct Seen {
    capacity: usize,
    until: HashMap<FrameDigest, Timestamp>,
    order: VecDeque<FrameDigest>,
    /// When a full filter last looked for expired entries: at most once a second (a
    /// look walks every entry, and a filter full of live ones was walked at every
    /// insert).
    purged_at: Option<Timestamp>,
    /// Looks for expired entries made (tests count them).
    #[cfg(test)]
    purges: u64,
}

impl Seen {
    /// An empty filter holding at most `capacity` digests.
    pub fn new(capacity: usize) -> Self {
        Seen {
            capacity: capacity.max(1),
            until: HashMap::new(),
            order: VecDeque::new(),
            purged_at: None,
            #[cfg(test)]
            purges: 0,
        }
    }

    /// Whether `d` was recorded and its frame has not expired at `now`.
    pub fn contains(&self, d: &FrameDigest, now: &Timestamp) -> bool {
        self.until.get(d).is_some_and(|t| t > now)
    }

    /// Records `d` until `until` (the frame's `expires-at`). The oldest entry makes room
    /// when the filter is full; expired ones are dropped first.
    pub fn insert(&mut self, d: FrameDigest, until: Timestamp, now: &Timestamp) {
        if let Some(t) = self.until.get_mut(&d) {
            *t = until;
            return;
        }
        let due = self
            .purged_at
            .as_ref()
            .is_none_or(|t| now.secs_since(t) >= 1);
        if self.order.len() >= self.capacity && due {
            self.purged_at = Some(now.clone());
            self.purge(now);
        }
        while self.order.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.until.remove(&old);
        }
        self.until.insert(d, until);
        self.order.push_back(d);
    }

    /// Forgets the digests of frames expired at `now`.
    pub fn purge(&mut self, now: &Timestamp) {
        #[cfg(test)]
        {
            self.purges += 1;
        }
        self.until.retain(|_, t| &*t > now);
        let until = &self.until;
        self.order.retain(|d| until.contains_key(d));
    }

    /// Number of digests held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_core::NodeKeypair;

    fn t(s: i64) -> Timestamp {
        Timestamp::parse("2026-11-21T12:00:00Z")
            .unwrap()
            .plus_secs(s)
    }

    #[test]
    fn entries_last_until_their_frame_expires_and_the_filter_is_bounded() {
        let a = NodeKeypair::generate().node_id();
        let b = NodeKeypair::generate().node_id();
        assert_ne!(digest(&a, "f1"), digest(&b, "f1"), "per signer");
        assert_ne!(digest(&a, "f1"), digest(&a, "f2"));
        let mut seen = Seen::new(3);
        seen.insert(digest(&a, "f1"), t(60), &t(0));
        assert!(seen.contains(&digest(&a, "f1"), &t(59)));
        // Once the frame expired, it is forgotten (it would be refused as expired).
        assert!(!seen.contains(&digest(&a, "f1"), &t(60)));
        seen.purge(&t(60));
        assert!(seen.is_empty());

        // At most `capacity`: the oldest live entry makes room…
        for i in 0..4 {
            seen.insert(digest(&a, &format!("g{i}")), t(100), &t(0));
        }
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains(&digest(&a, "g0"), &t(1)));
        assert!(seen.contains(&digest(&a, "g3"), &t(1)));
        // …but expired entries go before live ones.
        let mut seen = Seen::new(2);
        seen.insert(digest(&a, "old"), t(10), &t(0));
        seen.insert(digest(&a, "live"), t(100), &t(0));
        seen.insert(digest(&a, "new"), t(100), &t(20));
        assert!(seen.contains(&digest(&a, "live"), &t(20)));
        assert!(seen.contains(&digest(&a, "new"), &t(20)));
        // A full filter of live entries is walked for expired ones at most once a
        // second, not at every insert.
        let mut seen = Seen::new(100);
        for i in 0..1_000 {
            seen.insert(digest(&a, &format!("h{i}")), t(100), &t(i / 500));
        }
        assert_eq!(seen.len(), 100);
        assert_eq!(seen.purges, 2, "one look in each of the two seconds");
        // A long id costs no more than a short one.
        let long = "x".repeat(10_000);
        assert_eq!(digest(&a, &long).len(), 16);
    }
}
