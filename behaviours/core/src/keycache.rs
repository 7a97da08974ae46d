//! A bounded cache of decompressed Ed25519 verifying keys.
//!
//! Decompressing a public key costs about a tenth of a signature verification, and a node
//! verifies the same few signers again and again (its peers' advertisements, handshakes,
//! frames). The cache is two generations of at most [`GENERATION`] keys each: a hit in the
//! old generation is promoted, and when the young one is full the old one is dropped. So
//! memory stays bounded (about 2 x 4096 x 200 bytes) whatever an attacker sends, and a
//! flood of fresh keys costs what it would cost without a cache.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use ed25519_dalek::VerifyingKey;

const GENERATION: usize = 4096;

/// A decompressed key and whether it is weak (of small order), computed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachedKey {
    pub(crate) key: VerifyingKey,
    pub(crate) weak: bool,
}

#[derive(Default)]
struct Generations {
    young: HashMap<[u8; 32], CachedKey>,
    old: HashMap<[u8; 32], CachedKey>,
}

static CACHE: LazyLock<Mutex<Generations>> = LazyLock::new(|| Mutex::new(Generations::default()));

/// The verifying key of `bytes`, decompressed at most once while it stays cached. `None`
/// when the bytes are not a valid point (invalid keys are not cached).
pub(crate) fn verifying_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    lookup(bytes).map(|c| c.key)
}

/// The cached key with its weakness flag.
pub(crate) fn lookup(bytes: &[u8; 32]) -> Option<CachedKey> {
    if let Ok(mut g) = CACHE.lock() {
        if let Some(k) = g.young.get(bytes) {
            return Some(*k);
        }
        if let Some(k) = g.old.remove(bytes) {
            insert(&mut g, *bytes, k);
            return Some(k);
        }
    }
    let key = VerifyingKey::from_bytes(bytes).ok()?;
    let cached = CachedKey {
        key,
        weak: key.is_weak(),
    };
    if let Ok(mut g) = CACHE.lock() {
        insert(&mut g, *bytes, cached);
    }
    Some(cached)
}

fn insert(g: &mut Generations, bytes: [u8; 32], key: CachedKey) {
    if g.young.len() >= GENERATION {
        g.old = std::mem::take(&mut g.young);
    }
    g.young.insert(bytes, key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_keys_equal_fresh_ones_and_memory_is_bounded() {
        let mut first = None;
        for i in 0..(3 * GENERATION as u32) {
            let sk = ed25519_dalek::SigningKey::from_bytes(&{
                let mut s = [0u8; 32];
                s[..4].copy_from_slice(&i.to_le_bytes());
                s
            });
            let vk = sk.verifying_key();
            assert_eq!(verifying_key(vk.as_bytes()), Some(vk));
            first.get_or_insert(vk);
        }
        let g = CACHE.lock().unwrap();
        assert!(g.young.len() + g.old.len() <= 2 * GENERATION);
        drop(g);
        let first = first.unwrap();
        assert_eq!(verifying_key(first.as_bytes()), Some(first));
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(verifying_key(&off_curve), None);
    }
}
