//! Signatures already verified, remembered by the digest of what was verified so that an
//! artifact a peer sends again byte for byte (its capability advertisement and passports,
//! carried by every hello and ack) is not verified again.
//!
//! Strict verification is a pure function of (key, signed bytes, signature), so a
//! remembered success is the verdict a new check would give: the accept set stays
//! exactly `verify_strict`'s. An entry is SHA-256 over the three, under the signer's key,
//! so a hit needs a SHA-256 collision to be wrong. Only successes are remembered.
//!
//! Bounds (the table is keyed by what peers choose): at most [`PER_SIGNER`] digests per
//! signer (the oldest goes first), and two generations of at most [`GENERATION`] signers
//! each (a hit in the old one is promoted; when the young one is full the old one is
//! dropped), so at most 2 x 1024 x 34 digests (about 2.2 MiB) whatever is sent. Entering
//! the table costs a valid signature by the signer, and a flood of signers costs what it
//! would cost without the table.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use sha2::{Digest, Sha256};

/// Signers per generation.
const GENERATION: usize = 1024;
/// Digests kept per signer: a handshake's set of remembered artifacts (a capability
/// advertisement and up to 32 passports, `mesh_session`'s `MAX_CAPABILITIES`) with room
/// for one re-issue. Fewer would not do: a set read in order into a shorter list evicts
/// itself (8 kept every hello of a peer with 32 passports verifying all 34 signatures).
pub(crate) const PER_SIGNER: usize = 34;

type Digests = Vec<[u8; 32]>;

#[derive(Default)]
struct Generations {
    young: HashMap<[u8; 32], Digests>,
    old: HashMap<[u8; 32], Digests>,
}

static TABLE: LazyLock<Mutex<Generations>> = LazyLock::new(|| Mutex::new(Generations::default()));

/// The digest under which a verified signature is remembered.
pub(crate) fn digest(signer: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"libmesh verified signature v1\0");
    h.update(signer);
    h.update(signature);
    h.update(message);
    h.finalize().into()
}

/// Whether `digest` was remembered as verified for `signer`.
pub(crate) fn contains(signer: &[u8; 32], digest: &[u8; 32]) -> bool {
    let Ok(mut g) = TABLE.lock() else {
        return false;
    };
    if let Some(d) = g.young.get(signer) {
        return d.contains(digest);
    }
    let Some(d) = g.old.remove(signer) else {
        return false;
    };
    let hit = d.contains(digest);
    put(&mut g, *signer, d);
    hit
}

/// Remembers that `digest` verified for `signer`.
pub(crate) fn remember(signer: &[u8; 32], digest: [u8; 32]) {
    let Ok(mut g) = TABLE.lock() else {
        return;
    };
    let mut d = match g.young.remove(signer) {
        Some(d) => d,
        None => g.old.remove(signer).unwrap_or_default(),
    };
    if !d.contains(&digest) {
        if d.len() >= PER_SIGNER {
            d.remove(0);
        }
        d.push(digest);
    }
    put(&mut g, *signer, d);
}

fn put(g: &mut Generations, signer: [u8; 32], d: Digests) {
    if g.young.len() >= GENERATION && !g.young.contains_key(&signer) {
        g.old = std::mem::take(&mut g.young);
    }
    g.young.insert(signer, d);
}

/// Signers and digests held (tests).
#[cfg(test)]
fn held() -> (usize, usize) {
    let g = TABLE.lock().unwrap();
    let digests = g.young.values().chain(g.old.values()).map(Vec::len).sum();
    (g.young.len() + g.old.len(), digests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(i: u32) -> [u8; 32] {
        let mut s = [0xa5u8; 32];
        s[..4].copy_from_slice(&i.to_le_bytes());
        s
    }

    #[test]
    fn digests_separate_signer_message_and_signature() {
        let (a, b) = (signer(1), signer(2));
        let sig = [7u8; 64];
        let d = digest(&a, b"msg", &sig);
        assert_ne!(d, digest(&b, b"msg", &sig));
        assert_ne!(d, digest(&a, b"msh", &sig));
        assert_ne!(d, digest(&a, b"msg", &[8u8; 64]));
        assert_eq!(d, digest(&a, b"msg", &sig));
    }

    // One test for the bounds, so that no other test of this module fills the shared
    // table while it counts.
    #[test]
    fn remembered_per_signer_with_a_quota_and_a_global_cap() {
        let a = signer(u32::MAX);
        let first = digest(&a, b"0", &[0; 64]);
        remember(&a, first);
        assert!(contains(&a, &first));
        assert!(!contains(&signer(u32::MAX - 1), &first), "another signer");
        // The per-signer quota: the oldest goes first.
        for i in 1..=PER_SIGNER as u8 {
            remember(&a, digest(&a, &[i], &[0; 64]));
        }
        assert!(
            !contains(&a, &first),
            "pushed out by {PER_SIGNER} newer digests"
        );
        assert!(contains(&a, &digest(&a, &[1], &[0; 64])));
        // A flood of signers, each at its quota: the table stays bounded.
        for i in 0..(3 * GENERATION as u32) {
            for m in 0..=PER_SIGNER as u8 {
                remember(&signer(i), digest(&signer(i), &[m], &[0; 64]));
            }
            let (signers, digests) = held();
            assert!(signers <= 2 * GENERATION, "{signers} signers");
            assert!(digests <= 2 * GENERATION * PER_SIGNER, "{digests} digests");
        }
        // The newest signers are still remembered, the first ones are gone.
        let last = 3 * GENERATION as u32 - 1;
        assert!(contains(
            &signer(last),
            &digest(&signer(last), &[1], &[0; 64])
        ));
        assert!(!contains(&a, &digest(&a, &[1], &[0; 64])));
    }
}
