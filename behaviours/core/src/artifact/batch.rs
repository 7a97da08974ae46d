//! Verifying many signatures: one verdict per artifact, or one for a set, with exactly
//! the accept set of `VerifyingKey::verify_strict`.
//!
//! Each signature is checked on its own (`strict::verify_strict_fast`: cached key, `R`
//! screened by bytes, the cofactorless equation). A random-weight batch equation
//! (`ed25519_dalek::verify_batch`'s, which libmesh used before) does not have that accept
//! set: for `R = R₀ + T` or a key `A = A₀ + T` with `T` in the torsion subgroup, the
//! batch sees `Σ zᵢ·Dᵢ` where the defect `Dᵢ = Rᵢ - [sᵢ]B + [hᵢ]Aᵢ` has a torsion part,
//! and that part vanishes whenever the weights (reduced mod ℓ) happen to kill it —
//! half the time for order 2 — while `verify_strict` refuses the signature every time
//! (or, with torsion in the key, accepts some that the batch then refuses at random).
//! No choice of random weights fixes this: the torsion subgroup has exponent 8, so any
//! random linear test misses a torsion defect with probability at least 1/2. Knowing
//! that each `Rᵢ` and `Aᵢ` is torsion-free would fix it, but that costs a scalar
//! multiplication per `R` (`[ℓ]R`, about 0.8 of a verification's curve arithmetic) on
//! top of the batch, which then costs more than verifying one by one (a batch of 64
//! took 0.44 of the one-by-one time in BENCHMARKS.md). See the README's "Batch
//! verification" decision.

use super::Artifact;
use super::strict::verify_strict_fast;
use super::verified;
use crate::error::MeshResult;
use crate::id::KeyFingerprint;

/// Verifies the signatures of many artifacts and returns one result per input, in
/// order: exactly [`Artifact::verify_signature`]'s result for each (the accept set of
/// `verify_strict`, and the same error codes).
pub fn verify_batch<A: Artifact>(artifacts: &[A]) -> Vec<MeshResult<()>> {
    artifacts.iter().map(Artifact::verify_signature).collect()
}

/// One signature of a mixed batch: who must have signed, the signed bytes, the signature.
#[derive(Debug, Clone)]
pub struct SignedBytes<'a> {
    /// The signer's public key.
    pub signer: KeyFingerprint,
    /// The exact signed bytes (a signing input).
    pub message: &'a [u8],
    /// The signature.
    pub signature: ed25519_dalek::Signature,
    /// Whether a success is remembered (see `verified`): for an artifact that comes again
    /// unchanged (an advertisement, a passport), not for a fresh one (a handshake).
    pub remember: bool,
}

/// Whether every item's signature verifies, with the accept set of
/// [`Artifact::verify_signature`] (`verify_strict`), for items of any families and
/// signers; it stops at the first that does not.
///
/// `false` says only that at least one item does not verify (or names a signer that is
/// not a valid key); callers then verify one by one to report which and why.
///
/// An item with `remember` whose exact bytes, signature and signer verified before is
/// not verified again (see `verified`); its success is remembered otherwise.
pub fn verify_all_strict(items: &[SignedBytes<'_>]) -> bool {
    items.iter().all(|item| {
        let signer = item.signer.as_bytes();
        let digest = item
            .remember
            .then(|| verified::digest(signer, item.message, &item.signature.to_bytes()));
        if digest.is_some_and(|d| verified::contains(signer, &d)) {
            return true;
        }
        let ok = crate::keycache::lookup(signer).is_some_and(|key| {
            verify_strict_fast(&key.key, key.weak, item.message, &item.signature).is_ok()
        });
        if let (true, Some(d)) = (ok, digest) {
            verified::remember(signer, d);
        }
        ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeKeypair;

    fn item<'a>(key: &NodeKeypair, message: &'a [u8]) -> SignedBytes<'a> {
        SignedBytes {
            signer: key.fingerprint(),
            message,
            signature: ed25519_dalek::Signature::from_bytes(&key.sign(message)),
            remember: false,
        }
    }

    fn equations() -> u64 {
        super::super::strict::equations_on_this_thread()
    }

    #[test]
    fn a_remembered_set_is_verified_once_and_changed_bytes_are_verified_again() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let msgs: Vec<Vec<u8>> = (0u8..4).map(|i| vec![i; 300]).collect();
        let mut items: Vec<SignedBytes<'_>> = msgs.iter().map(|m| item(&a, m)).collect();
        for i in &mut items[1..] {
            i.remember = true;
        }
        let start = equations();
        assert!(verify_all_strict(&items));
        assert_eq!(equations() - start, 4, "first time: every signature");
        assert!(verify_all_strict(&items));
        assert_eq!(equations() - start, 5, "again: only the one not remembered");
        // Other bytes under the same signature, another signer, a flipped signature:
        // each is checked again, and fails.
        let other = vec![9u8; 300];
        let mut forged = items[1].clone();
        forged.message = &other;
        assert!(!verify_all_strict(&[forged]));
        let mut wrong_signer = items[1].clone();
        wrong_signer.signer = b.fingerprint();
        assert!(!verify_all_strict(&[wrong_signer]));
        let mut flipped = items[2].clone();
        let mut bytes = flipped.signature.to_bytes();
        bytes[40] ^= 1;
        flipped.signature = ed25519_dalek::Signature::from_bytes(&bytes);
        assert!(!verify_all_strict(&[flipped.clone()]));
        // A failure is not remembered: the same item fails again, through the equation.
        let before = equations();
        assert!(!verify_all_strict(&[flipped]));
        assert_eq!(equations() - before, 1);
    }

    #[test]
    fn mixed_batches_accept_exactly_the_all_valid_sets() {
        let (a, b) = (NodeKeypair::generate(), NodeKeypair::generate());
        let msgs: Vec<Vec<u8>> = (0u8..5).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let mut items: Vec<SignedBytes<'_>> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| item(if i % 2 == 0 { &a } else { &b }, m))
            .collect();
        assert!(verify_all_strict(&items));
        assert!(verify_all_strict(&items[..1]));
        assert!(verify_all_strict(&[]));
        // A wrong signer, a flipped bit, a small-order R: each makes the set fail.
        let good = items.clone();
        items[3].signer = a.fingerprint();
        assert!(!verify_all_strict(&items));
        assert!(!verify_all_strict(&items[3..4]));
        items = good.clone();
        let mut bytes = items[1].signature.to_bytes();
        bytes[40] ^= 1;
        items[1].signature = ed25519_dalek::Signature::from_bytes(&bytes);
        assert!(!verify_all_strict(&items));
        items = good.clone();
        let mut bytes = items[2].signature.to_bytes();
        bytes[..32].copy_from_slice(&curve25519_dalek::constants::EIGHT_TORSION[2].compress().0);
        items[2].signature = ed25519_dalek::Signature::from_bytes(&bytes);
        assert!(!verify_all_strict(&items));
        // A signer that is not a point.
        items = good;
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        items[0].signer = KeyFingerprint::from_bytes(off_curve);
        assert!(!verify_all_strict(&items));
    }
}
