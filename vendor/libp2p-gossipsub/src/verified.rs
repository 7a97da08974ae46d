// Patched for libmesh (see PATCHED.md): the signatures of messages already verified.

//! Every copy of a message that gossipsub receives carries the same signature, and
//! upstream verified each copy in the codec, before the behaviour's duplicate check:
//! with a mesh degree of six a node checked each message some six times, and a peer
//! replaying one valid message made the node verify it again for every copy. A
//! [`Verified`] set, shared by the codecs of one behaviour, remembers the messages whose
//! signature verified by the SHA-256 digest of their encoding (source, data, sequence
//! number, topic: what the signature covers; and the signature), for messages without
//! a `key` field, so a copy with the same bytes is taken as verified, and any other
//! (one bit changed anywhere) is verified in full, as before. A message with a `key`
//! (which the signature does not cover, and a sender may vary at will) is verified in
//! full and not remembered.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::rpc_proto::proto;

/// How many verified messages a behaviour remembers, oldest forgotten first. Copies of
/// one message come within the time it takes to cross the mesh (well under a second),
/// so this covers a burst of 512 distinct messages in that time; the set takes about
/// 40 KiB when full.
pub(crate) const CAPACITY: usize = 512;

/// Signatures verified in full by every codec of this process (a copy found in a
/// [`Verified`] set is not counted).
static CHECKED: AtomicU64 = AtomicU64::new(0);

/// How many message signatures gossipsub has verified in full in this process: for
/// tests and benchmarks that check copies are not verified again.
#[doc(hidden)]
pub fn signatures_checked() -> u64 {
    CHECKED.load(Ordering::Relaxed)
}

/// The SHA-256 digest of a message's encoding (one without a `key`), whole: a sender
/// chooses both messages of a collision it looks for (its own, signed, and a forgery
/// under someone else's name), so 128 bits would leave a birthday search at 2^64.
type Key = [u8; 32];

/// The messages whose signature verified, by the digest of their encoding.
#[derive(Debug, Default)]
pub(crate) struct Verified {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashSet<Key>,
    order: VecDeque<Key>,
}

impl Verified {
    /// Whether `message`'s signature is valid: from the set if these very bytes (and
    /// no `key`) verified before, otherwise by `verify` (remembered if it succeeds and
    /// the message has no `key`).
    pub(crate) fn check(
        &self,
        message: &proto::Message,
        verify: impl Fn(&proto::Message) -> bool,
    ) -> bool {
        if message.key.is_some() {
            // Verified in full and not remembered: upstream takes the key from the
            // message when the source's peer id does not hold it (RSA), so a copy
            // without it may be one upstream rejects.
            CHECKED.fetch_add(1, Ordering::Relaxed);
            return verify(message);
        }
        let key: Key = Sha256::digest(message.encode_to_vec()).into();
        if self.lock().keys.contains(&key) {
            return true;
        }
        CHECKED.fetch_add(1, Ordering::Relaxed);
        if !verify(message) {
            return false;
        }
        let mut inner = self.lock();
        if inner.keys.insert(key) {
            inner.order.push_back(key);
            if inner.order.len() > CAPACITY {
                if let Some(old) = inner.order.pop_front() {
                    inner.keys.remove(&old);
                }
            }
        }
        true
    }

    /// The set, even if a thread panicked while holding it (it holds no invariant a
    /// panic could break beyond one missing entry).
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &[u8]) -> proto::Message {
        proto::Message {
            from: None,
            data: Some(data.to_vec()),
            seqno: None,
            topic: "t".into(),
            signature: Some(vec![1; 64]),
            key: None,
        }
    }

    #[test]
    fn a_copy_is_not_verified_again_and_a_changed_one_is() {
        let v = Verified::default();
        let calls = std::cell::Cell::new(0);
        let ok = |_: &proto::Message| {
            calls.set(calls.get() + 1);
            true
        };
        assert!(v.check(&message(b"a"), ok));
        assert!(v.check(&message(b"a"), ok));
        assert_eq!(calls.get(), 1);
        assert!(v.check(&message(b"b"), ok));
        assert_eq!(calls.get(), 2);
        assert!(!v.check(&message(b"c"), |_| false));
        assert!(
            !v.check(&message(b"c"), |_| false),
            "a failure is not remembered"
        );
    }

    #[test]
    fn a_copy_with_a_key_is_verified_in_full_and_does_not_grow_the_set() {
        let v = Verified::default();
        let calls = std::cell::Cell::new(0);
        let ok = |_: &proto::Message| {
            calls.set(calls.get() + 1);
            true
        };
        assert!(v.check(&message(b"a"), ok));
        for k in 0..3u8 {
            let keyed = proto::Message {
                key: Some(vec![k; 8]),
                ..message(b"a")
            };
            assert!(v.check(&keyed, ok));
        }
        assert_eq!(
            calls.get(),
            4,
            "a `key` is not signed: every keyed copy is verified"
        );
        assert_eq!(v.lock().keys.len(), 1);
        assert!(v.check(&message(b"a"), ok));
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn the_set_keeps_its_capacity() {
        let v = Verified::default();
        for i in 0..(CAPACITY as u32 + 100) {
            v.check(&message(&i.to_be_bytes()), |_| true);
        }
        let inner = v.lock();
        assert_eq!(inner.keys.len(), CAPACITY);
        assert_eq!(inner.order.len(), CAPACITY);
    }
}
