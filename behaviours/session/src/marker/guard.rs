//! What a receiver checks about a verified `signal-marker-envelope.v1` before taking it:
//! that it is addressed to this node, that it is recent, and that it was not taken
//! before. Pure logic: `now` comes in, nothing is sent.
//!
//! - **Recipient.** The signed `recipient/node-id` must name this node, so a marker
//!   cannot be handed on to another node; an envelope without one is refused unless
//!   [`GuardConfig::require_recipient`] is off. Both refusals are `E_PROTO_INVALID`.
//! - **Length.** A `message/id` over [`MAX_MESSAGE_ID`] bytes is `E_PROTO_INVALID` (the
//!   schema sets no maximum; the node's own are 36 bytes).
//! - **Age.** `created-at` more than [`GuardConfig::max_age_secs`] in the past is
//!   `E_HS_REPLAY` (the family's own rule already refuses more than 30 s ahead).
//! - **Duplicates.** A `message/id` taken from the same sender within the window is
//!   `E_HS_REPLAY`. The guard keeps a 32-byte digest of (sender, `message/id`) per
//!   taken envelope until the envelope is too old to pass the age check
//!   (`created-at` + `max_age_secs`), so the memory spans exactly the window in which a
//!   replay could pass. Each sender holds at most [`GuardConfig::per_sender`] entries:
//!   one more is refused with `E_TRANSPORT_REJECTED` and a retry time (nothing is
//!   recorded, so the retry works); the whole table holds at most
//!   [`GuardConfig::capacity`] and, when full, drops the oldest entry of the sender
//!   holding the most (a flood from one sender costs its own entries first; fresh
//!   senders holding one entry each take those of senders holding more, so the
//!   behaviour also rate-limits each network's peers together).

use std::collections::{BTreeSet, HashMap};

use mesh_core::{ErrorCode, MeshError, NodeId, ParticipantId, SignalMarkerEnvelope, Timestamp};
use sha2::{Digest, Sha256};

/// The longest `message/id` taken, in bytes.
pub const MAX_MESSAGE_ID: usize = 128;

/// The guard's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Oldest `created-at` accepted, seconds before now (default 300).
    pub max_age_secs: i64,
    /// Refuse envelopes without `recipient/node-id` (default true).
    pub require_recipient: bool,
    /// Envelopes remembered per sender within the window (default 1,024).
    pub per_sender: usize,
    /// Envelopes remembered in all (default 16,384, about 2 MB).
    pub capacity: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_age_secs: 300,
            require_recipient: true,
            per_sender: 1024,
            capacity: 16_384,
        }
    }
}

type Digest32 = [u8; 32];

/// The receiver's replay guard.
#[derive(Debug)]
pub struct Guard {
    config: GuardConfig,
    /// Digest → (until when it is kept, sender).
    seen: HashMap<Digest32, (Timestamp, ParticipantId)>,
    /// Every entry by expiry, for time eviction.
    by_expiry: BTreeSet<(Timestamp, Digest32)>,
    /// Each sender's entries by expiry.
    by_sender: HashMap<ParticipantId, BTreeSet<(Timestamp, Digest32)>>,
    /// Senders by how many entries they hold, for eviction when full.
    holders: BTreeSet<(usize, ParticipantId)>,
}

impl Guard {
    /// A guard with `config`.
    pub fn new(config: GuardConfig) -> Self {
        Guard {
            config,
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
            by_sender: HashMap::new(),
            holders: BTreeSet::new(),
        }
    }

    /// How many envelopes are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks `env` (already verified: signature, schema, not in the future) for
    /// delivery to node `me` at `now`, and remembers it when it passes.
    pub fn admit(
        &mut self,
        me: &NodeId,
        env: &SignalMarkerEnvelope,
        now: &Timestamp,
    ) -> Result<(), MeshError> {
        match env.recipient() {
            Some(r) if r == *me => {}
            Some(r) => {
                return Err(MeshError::invalid(format!(
                    "signal-marker-envelope.v1: addressed to {r}, not to this node"
                )));
            }
            None if self.config.require_recipient => {
                return Err(MeshError::invalid(
                    "signal-marker-envelope.v1: no recipient/node-id",
                ));
            }
            None => {}
        }
        if env.message_id().len() > MAX_MESSAGE_ID {
            return Err(MeshError::invalid(format!(
                "signal-marker-envelope.v1: message/id of {} bytes, more than {MAX_MESSAGE_ID}",
                env.message_id().len()
            )));
        }
        let age = now.secs_since(env.created_at());
        if age > self.config.max_age_secs {
            return Err(MeshError::new(
                ErrorCode::HsReplay,
                format!(
                    "signal-marker-envelope.v1: created {age} s ago, more than {} s",
                    self.config.max_age_secs
                ),
            ));
        }
        self.expire(now);
        let sender = env.sender();
        let digest = digest(&sender, env.message_id());
        if self.seen.contains_key(&digest) {
            return Err(MeshError::new(
                ErrorCode::HsReplay,
                format!(
                    "signal-marker-envelope.v1: message/id {:?} already received from {sender}",
                    env.message_id()
                ),
            ));
        }
        let held = self.by_sender.get(&sender);
        if held.map_or(0, BTreeSet::len) >= self.config.per_sender {
            let retry = held
                .and_then(|s| s.first())
                .map_or(1, |(until, _)| until.secs_since(now).max(0) + 1);
            return Err(MeshError::new(
                ErrorCode::TransportRejected,
                format!("too many markers from {sender}; retry after {retry} s"),
            ));
        }
        while self.seen.len() >= self.config.capacity.max(1) {
            self.evict_from_biggest();
        }
        let until = env.created_at().plus_secs(self.config.max_age_secs.max(0));
        self.insert(digest, sender, until);
        Ok(())
    }

    fn insert(&mut self, digest: Digest32, sender: ParticipantId, until: Timestamp) {
        self.seen.insert(digest, (until.clone(), sender));
        self.by_expiry.insert((until.clone(), digest));
        let set = self.by_sender.entry(sender).or_default();
        let before = set.len();
        set.insert((until, digest));
        self.holders.remove(&(before, sender));
        self.holders.insert((before + 1, sender));
    }

    fn remove(&mut self, digest: &Digest32) {
        let Some((until, sender)) = self.seen.remove(digest) else {
            return;
        };
        self.by_expiry.remove(&(until.clone(), *digest));
        if let Some(set) = self.by_sender.get_mut(&sender) {
            let before = set.len();
            set.remove(&(until, *digest));
            self.holders.remove(&(before, sender));
            if set.is_empty() {
                self.by_sender.remove(&sender);
            } else {
                self.holders.insert((set.len(), sender));
            }
        }
    }

    /// Forgets the entries whose envelopes are too old to pass the age check.
    fn expire(&mut self, now: &Timestamp) {
        while let Some((until, digest)) = self.by_expiry.first().cloned() {
            if until >= *now {
                break;
            }
            self.remove(&digest);
        }
    }

    /// Drops the oldest entry of the sender holding the most.
    fn evict_from_biggest(&mut self) {
        let Some(&(_, sender)) = self.holders.last() else {
            return;
        };
        let oldest = self
            .by_sender
            .get(&sender)
            .and_then(|s| s.first())
            .map(|(_, d)| *d);
        match oldest {
            Some(d) => self.remove(&d),
            // Not expected: a holder without entries. Drop it so the loop ends.
            None => {
                self.holders.retain(|(_, s)| *s != sender);
            }
        }
    }
}

/// SHA-256 over a domain separator, the sender's key and the `message/id`.
fn digest(sender: &ParticipantId, message_id: &str) -> Digest32 {
    Sha256::new()
        .chain_update(b"libmesh/marker-seen/v1\0")
        .chain_update(sender.fingerprint().as_bytes())
        .chain_update(message_id.as_bytes())
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::NodeKeypair;

    fn t(s: i64) -> Timestamp {
        Timestamp::parse("2026-03-23T18:00:00Z")
            .unwrap()
            .plus_secs(s)
    }

    fn env(
        key: &NodeKeypair,
        to: Option<NodeId>,
        id: &str,
        at: &Timestamp,
    ) -> SignalMarkerEnvelope {
        crate::marker::envelope_for(key, to, id, "signal-marker:x", at).unwrap()
    }

    #[test]
    fn recipient_age_and_duplicates() {
        let (me, other) = (
            NodeKeypair::generate().node_id(),
            NodeKeypair::generate().node_id(),
        );
        let s = NodeKeypair::generate();
        let mut g = Guard::new(GuardConfig::default());
        g.admit(&me, &env(&s, Some(me), "m1", &t(0)), &t(0))
            .unwrap();
        let code = |r: Result<(), MeshError>| r.unwrap_err().code;
        // The same message/id again, even re-signed with another created-at: a replay.
        assert_eq!(
            code(g.admit(&me, &env(&s, Some(me), "m1", &t(0)), &t(5))),
            ErrorCode::HsReplay
        );
        assert_eq!(
            code(g.admit(&me, &env(&s, Some(me), "m1", &t(3)), &t(5))),
            ErrorCode::HsReplay
        );
        // Another sender may use the same message/id.
        let s2 = NodeKeypair::generate();
        g.admit(&me, &env(&s2, Some(me), "m1", &t(0)), &t(5))
            .unwrap();
        // Addressed elsewhere, or to nobody.
        assert_eq!(
            code(g.admit(&me, &env(&s, Some(other), "m2", &t(0)), &t(5))),
            ErrorCode::ProtoInvalid
        );
        assert_eq!(
            code(g.admit(&me, &env(&s, None, "m3", &t(0)), &t(5))),
            ErrorCode::ProtoInvalid
        );
        // Refusals record nothing.
        assert_eq!(g.len(), 2);
        // An overlong message/id.
        let long = "m".repeat(MAX_MESSAGE_ID + 1);
        assert_eq!(
            code(g.admit(&me, &env(&s, Some(me), &long, &t(0)), &t(5))),
            ErrorCode::ProtoInvalid
        );
        g.admit(&me, &env(&s, Some(me), &long[1..], &t(0)), &t(5))
            .unwrap();
        assert_eq!(g.len(), 3);
        // Too old: 301 s.
        assert_eq!(
            code(g.admit(&me, &env(&s, Some(me), "m4", &t(0)), &t(301))),
            ErrorCode::HsReplay
        );
        g.admit(&me, &env(&s, Some(me), "m5", &t(1)), &t(301))
            .unwrap();
        // The two m1 entries expired with their window (created at 0, kept until 300).
        assert_eq!(g.len(), 1);
        // Without the recipient requirement an unaddressed envelope passes, once.
        let mut open = Guard::new(GuardConfig {
            require_recipient: false,
            ..GuardConfig::default()
        });
        open.admit(&me, &env(&s, None, "m3", &t(0)), &t(0)).unwrap();
        assert_eq!(
            code(open.admit(&me, &env(&s, None, "m3", &t(0)), &t(0))),
            ErrorCode::HsReplay
        );
        assert_eq!(
            code(open.admit(&me, &env(&s, Some(other), "m6", &t(0)), &t(0))),
            ErrorCode::ProtoInvalid
        );
    }

    #[test]
    fn entries_expire_with_the_window() {
        let me = NodeKeypair::generate().node_id();
        let s = NodeKeypair::generate();
        let mut g = Guard::new(GuardConfig {
            max_age_secs: 60,
            ..GuardConfig::default()
        });
        for i in 0..10 {
            g.admit(&me, &env(&s, Some(me), &format!("m{i}"), &t(i)), &t(i))
                .unwrap();
        }
        assert_eq!(g.len(), 10);
        // At 65 s the first five are too old to be replayed: forgotten at the next check.
        g.admit(&me, &env(&s, Some(me), "late", &t(65)), &t(65))
            .unwrap();
        assert_eq!(g.len(), 6);
        // And a replay of one of them is refused by its age.
        assert_eq!(
            g.admit(&me, &env(&s, Some(me), "m0", &t(0)), &t(65))
                .unwrap_err()
                .code,
            ErrorCode::HsReplay
        );
    }

    #[test]
    fn per_sender_quota_refuses_and_the_retry_works() {
        let me = NodeKeypair::generate().node_id();
        let flooder = NodeKeypair::generate();
        let mut g = Guard::new(GuardConfig {
            per_sender: 4,
            ..GuardConfig::default()
        });
        for i in 0..4 {
            g.admit(
                &me,
                &env(&flooder, Some(me), &format!("f{i}"), &t(i)),
                &t(i),
            )
            .unwrap();
        }
        let e = g
            .admit(&me, &env(&flooder, Some(me), "f4", &t(4)), &t(4))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::TransportRejected);
        assert!(e.detail.contains("retry after 297 s"), "{}", e.detail);
        assert_eq!(g.len(), 4, "a refusal records nothing");
        // Another sender is not affected.
        let other = NodeKeypair::generate();
        g.admit(&me, &env(&other, Some(me), "f4", &t(4)), &t(4))
            .unwrap();
        // When the flooder's oldest entry has expired, the retry is taken.
        g.admit(&me, &env(&flooder, Some(me), "f4", &t(4)), &t(301))
            .unwrap();
    }

    #[test]
    fn a_full_table_evicts_from_the_biggest_holder() {
        let me = NodeKeypair::generate().node_id();
        let (flooder, honest) = (NodeKeypair::generate(), NodeKeypair::generate());
        let mut g = Guard::new(GuardConfig {
            max_age_secs: 10_000,
            capacity: 6,
            ..GuardConfig::default()
        });
        g.admit(&me, &env(&honest, Some(me), "h0", &t(0)), &t(0))
            .unwrap();
        for i in 0..4 {
            g.admit(
                &me,
                &env(&flooder, Some(me), &format!("f{i}"), &t(i)),
                &t(i),
            )
            .unwrap();
        }
        for _ in 0..3 {
            let k = NodeKeypair::generate();
            g.admit(&me, &env(&k, Some(me), "x", &t(5)), &t(5)).unwrap();
            assert!(g.len() <= 6);
        }
        assert_eq!(g.len(), 6);
        // The honest sender's entry survived: its replay is still refused.
        assert_eq!(
            g.admit(&me, &env(&honest, Some(me), "h0", &t(0)), &t(10))
                .unwrap_err()
                .code,
            ErrorCode::HsReplay
        );
        // The flooder paid: its two oldest entries went (the trade-off of a full table).
        g.admit(&me, &env(&flooder, Some(me), "f0", &t(0)), &t(10))
            .unwrap();
        assert_eq!(
            g.admit(&me, &env(&flooder, Some(me), "f3", &t(3)), &t(10))
                .unwrap_err()
                .code,
            ErrorCode::HsReplay
        );
    }
}
