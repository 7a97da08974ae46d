//! The duplicate filter of received frames, as pure logic (every call takes `now`).
//!
//! It holds a 16-byte digest of (signer, `frame/id`) per frame, never the id itself, so
//! what a peer chooses cannot grow it (ids are capped at
//! [`mesh_core::families::MAX_FRAME_ID`] bytes anyway). An entry lasts until the frame
//! expires: after that the frame is refused as expired, so nothing is lost by
//! forgetting it. The behaviour records a frame only once it was taken (delivered or
//! forwarded), so a frame refused for a reason that passes (a full queue, a rate limit)
//! may come again.
//!
//! At most `capacity` entries are held. Each is held for the network that handed the
//! frame over (its IPv4 /16 or IPv6 /32, [`IpGroup`]; a peer without an IP counts for
//! itself), and a full filter forgets the oldest entry of the network holding the most
//! (of those holding as many, the one that added last). Before, the oldest entry went,
//! whoever brought it: three networks' allowances (20 frames a second each) took 8,192
//! frames within a frame's two minutes, pushed out the digest of a frame another
//! network had handed over, and that frame, replayed, was taken a second time.

use std::collections::{BTreeSet, HashMap, VecDeque};

use libp2p::PeerId;
use mesh_core::{IpGroup, NodeId, Source, Timestamp};
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

/// Whom an entry is held for: the network that handed the frame over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Holder {
    Network(IpGroup),
    Peer(PeerId),
    Local,
    Restored,
}

impl From<Source> for Holder {
    fn from(s: Source) -> Self {
        match s {
            Source::Network(k) => Holder::Network(k.group()),
            Source::Peer(p) => Holder::Peer(p),
            Source::Local => Holder::Local,
            Source::Restored => Holder::Restored,
        }
    }
}

/// One holder's entries, oldest first, and when it last added one.
#[derive(Debug, Default)]
struct Held {
    digests: VecDeque<FrameDigest>,
    last: u64,
}

/// Digests of the frames taken recently, each until its frame expires.
#[derive(Debug)]
pub struct Seen {
    capacity: usize,
    until: HashMap<FrameDigest, (Timestamp, Holder)>,
    by_holder: HashMap<Holder, Held>,
    /// (entries, last addition, holder) of every holder with entries: the one a full
    /// filter takes from is the last.
    ranked: BTreeSet<(usize, u64, Holder)>,
    /// Additions so far (the order of holders' last additions).
    added: u64,
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
            by_holder: HashMap::new(),
            ranked: BTreeSet::new(),
            added: 0,
            purged_at: None,
            #[cfg(test)]
            purges: 0,
        }
    }

    /// Whether `d` was recorded and its frame has not expired at `now`.
    pub fn contains(&self, d: &FrameDigest, now: &Timestamp) -> bool {
        self.until.get(d).is_some_and(|(t, _)| t > now)
    }

    /// Records `d`, handed over by `source`, until `until` (the frame's `expires-at`).
    /// When the filter is full, expired entries go first, then the oldest entry of
    /// the network holding the most.
    pub fn insert(&mut self, d: FrameDigest, until: Timestamp, source: Source, now: &Timestamp) {
        if let Some((t, _)) = self.until.get_mut(&d) {
            *t = until;
            return;
        }
        let due = self
            .purged_at
            .as_ref()
            .is_none_or(|t| now.secs_since(t) >= 1);
        if self.until.len() >= self.capacity && due {
            self.purged_at = Some(now.clone());
            self.purge(now);
        }
        while self.until.len() >= self.capacity {
            if !self.evict_one() {
                break;
            }
        }
        let holder = Holder::from(source);
        self.added += 1;
        let held = self.by_holder.entry(holder).or_default();
        self.ranked.remove(&(held.digests.len(), held.last, holder));
        held.digests.push_back(d);
        held.last = self.added;
        self.ranked.insert((held.digests.len(), held.last, holder));
        self.until.insert(d, (until, holder));
    }

    /// Forgets the oldest entry of the holder ranked last; whether there was one.
    fn evict_one(&mut self) -> bool {
        let Some((n, last, holder)) = self.ranked.pop_last() else {
            return false;
        };
        let Some(held) = self.by_holder.get_mut(&holder) else {
            return false;
        };
        if let Some(old) = held.digests.pop_front() {
            self.until.remove(&old);
        }
        if held.digests.is_empty() {
            self.by_holder.remove(&holder);
        } else {
            self.ranked.insert((n - 1, last, holder));
        }
        true
    }

    /// Forgets the digests of frames expired at `now`.
    pub fn purge(&mut self, now: &Timestamp) {
        #[cfg(test)]
        {
            self.purges += 1;
        }
        self.until.retain(|_, (t, _)| &*t > now);
        let until = &self.until;
        self.ranked.clear();
        self.by_holder.retain(|holder, held| {
            held.digests.retain(|d| until.contains_key(d));
            if held.digests.is_empty() {
                return false;
            }
            self.ranked.insert((held.digests.len(), held.last, *holder));
            true
        });
    }

    /// Number of digests held.
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use mesh_core::{IpKey, NodeKeypair};

    fn one() -> Source {
        Source::Network(IpKey::of("192.0.2.1".parse().unwrap()))
    }

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
        seen.insert(digest(&a, "f1"), t(60), one(), &t(0));
        assert!(seen.contains(&digest(&a, "f1"), &t(59)));
        // Once the frame expired, it is forgotten (it would be refused as expired).
        assert!(!seen.contains(&digest(&a, "f1"), &t(60)));
        seen.purge(&t(60));
        assert!(seen.is_empty());

        // At most `capacity`: the oldest live entry makes room…
        for i in 0..4 {
            seen.insert(digest(&a, &format!("g{i}")), t(100), one(), &t(0));
        }
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains(&digest(&a, "g0"), &t(1)));
        assert!(seen.contains(&digest(&a, "g3"), &t(1)));
        // …but expired entries go before live ones.
        let mut seen = Seen::new(2);
        seen.insert(digest(&a, "old"), t(10), one(), &t(0));
        seen.insert(digest(&a, "live"), t(100), one(), &t(0));
        seen.insert(digest(&a, "new"), t(100), one(), &t(20));
        assert!(seen.contains(&digest(&a, "live"), &t(20)));
        assert!(seen.contains(&digest(&a, "new"), &t(20)));
        // A full filter of live entries is walked for expired ones at most once a
        // second, not at every insert.
        let mut seen = Seen::new(100);
        for i in 0..1_000 {
            seen.insert(digest(&a, &format!("h{i}")), t(100), one(), &t(i / 500));
        }
        assert_eq!(seen.len(), 100);
        assert_eq!(seen.purges, 2, "one look in each of the two seconds");
        // A long id costs no more than a short one.
        let long = "x".repeat(10_000);
        assert_eq!(digest(&a, &long).len(), 16);
    }

    fn net(a: &str) -> Source {
        Source::Network(IpKey::of(a.parse().unwrap()))
    }

    #[test]
    fn a_flood_from_other_networks_does_not_push_out_a_frame_one_network_handed_over() {
        let a = NodeKeypair::generate().node_id();
        let mut seen = Seen::new(64);
        // An honest frame from one network, then another of its.
        seen.insert(digest(&a, "honest"), t(100), net("198.51.100.7"), &t(0));
        seen.insert(digest(&a, "honest2"), t(100), net("198.51.100.7"), &t(0));
        // Three other networks take frames as fast as their allowance lets them, many
        // times what the filter holds, within the honest frames' lifetime.
        for i in 0..3_000 {
            let from = ["203.0.113.1", "192.0.2.1", "100.64.9.1"][i % 3];
            seen.insert(digest(&a, &format!("flood{i}")), t(100), net(from), &t(1));
        }
        assert_eq!(seen.len(), 64);
        // The honest frames are still known: a replay of them is refused (the oldest
        // entry went, whoever brought it, before: both were forgotten).
        assert!(seen.contains(&digest(&a, "honest"), &t(2)));
        assert!(seen.contains(&digest(&a, "honest2"), &t(2)));
        // The flooders keep their newest; the oldest of theirs went.
        assert!(seen.contains(&digest(&a, "flood2999"), &t(2)));
        assert!(!seen.contains(&digest(&a, "flood0"), &t(2)));
        // Addresses of one /16 count as one network.
        let mut seen = Seen::new(4);
        seen.insert(digest(&a, "x"), t(100), net("198.51.100.7"), &t(0));
        for i in 0..10 {
            let from = format!("203.0.{i}.1");
            seen.insert(digest(&a, &format!("y{i}")), t(100), net(&from), &t(1));
        }
        assert!(seen.contains(&digest(&a, "x"), &t(2)));
    }

    #[test]
    fn among_networks_holding_as_many_the_one_that_added_last_gives_way() {
        let a = NodeKeypair::generate().node_id();
        let mut seen = Seen::new(3);
        seen.insert(digest(&a, "first"), t(100), net("198.51.100.7"), &t(0));
        seen.insert(digest(&a, "second"), t(100), net("203.0.113.1"), &t(0));
        seen.insert(digest(&a, "third"), t(100), net("192.0.2.1"), &t(0));
        // Full, one each: the network that added last gives way.
        seen.insert(digest(&a, "fourth"), t(100), net("100.64.9.1"), &t(0));
        assert!(!seen.contains(&digest(&a, "third"), &t(1)));
        for d in ["first", "second", "fourth"] {
            assert!(seen.contains(&digest(&a, d), &t(1)), "{d}");
        }
        // A purge leaves the ranks as they were.
        seen.purge(&t(1));
        seen.insert(digest(&a, "fifth"), t(100), net("198.51.100.7"), &t(1));
        assert!(!seen.contains(&digest(&a, "fourth"), &t(1)));
        assert_eq!(seen.len(), 3);
    }
}
