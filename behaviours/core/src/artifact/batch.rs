//! Batch verification: many artifacts checked with one multi-scalar multiplication.

use super::strict::r_is_batchable;
use super::{Artifact, prepare};
use crate::error::{ErrorCode, MeshError, MeshResult};
use crate::id::KeyFingerprint;

/// Verifies the signatures of many artifacts at once and returns one result per input,
/// in order.
///
/// The fast path runs the batch equation (`ed25519_dalek::verify_batch`'s, with one term
/// per distinct signer: see `equation.rs`) over every artifact whose signature and key
/// parse; when the batch fails, each of those is verified on its own with
/// `verify_strict`, so the per-item results (and error codes) are exactly those of
/// [`Artifact::verify_signature`]. Signatures on which the batch equation and
/// `verify_strict` could disagree (a weak key, an `R` that is of small order or not
/// canonically encoded) never enter the batch: they take the one-by-one path, so the set
/// of accepted artifacts is exactly the one `verify_strict` accepts.
pub fn verify_batch<A: Artifact>(artifacts: &[A]) -> Vec<MeshResult<()>> {
    let mut results: Vec<MeshResult<()>> = Vec::with_capacity(artifacts.len());
    let mut inputs = Vec::with_capacity(artifacts.len());
    let mut sigs = Vec::with_capacity(artifacts.len());
    let mut keys = Vec::with_capacity(artifacts.len());
    let mut index = Vec::with_capacity(artifacts.len());
    for (i, artifact) in artifacts.iter().enumerate() {
        match prepare(artifact) {
            Ok((key, sig)) if !key.weak && r_is_batchable(&sig) => {
                inputs.push(artifact.signing_input());
                sigs.push(sig);
                keys.push(key.key);
                index.push(i);
                results.push(Ok(()));
            }
            Ok(_) => results.push(artifact.verify_signature()),
            Err(e) => results.push(Err(e)),
        }
    }
    if index.is_empty() {
        return results;
    }
    let messages: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    if super::equation::verify_batch_merged(&messages, &sigs, &keys) {
        return results;
    }
    for (j, &i) in index.iter().enumerate() {
        results[i] = super::strict::verify_strict_fast(&keys[j], false, messages[j], &sigs[j])
            .map_err(|_| {
                MeshError::new(
                    ErrorCode::SigInvalid,
                    format!("{}: signature does not verify", A::FAMILY),
                )
            });
    }
    results
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
}

/// Whether every item's signature verifies, with the accept set of
/// [`Artifact::verify_signature`] (`verify_strict`), checked with one batch equation for
/// items of any families and signers (one term per distinct signer).
///
/// `false` says only that at least one item does not verify (or names a signer that is
/// not a valid key); callers then verify one by one to report which and why. As in
/// [`verify_batch`], signatures whose `R` is of small order or not canonically encoded,
/// and weak (small-order) keys, never enter the batch equation: they are checked on their
/// own, and rejected.
pub fn verify_all_strict(items: &[SignedBytes<'_>]) -> bool {
    let mut messages = Vec::with_capacity(items.len());
    let mut sigs = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    for item in items {
        let Some(key) = crate::keycache::lookup(item.signer.as_bytes()) else {
            return false;
        };
        if key.weak || !r_is_batchable(&item.signature) {
            // verify_strict rejects these; no curve arithmetic needed.
            return false;
        }
        messages.push(item.message);
        sigs.push(item.signature);
        keys.push(key.key);
    }
    match items.len() {
        0 => true,
        1 => super::strict::verify_strict_fast(&keys[0], false, messages[0], &sigs[0]).is_ok(),
        _ => super::equation::verify_batch_merged(&messages, &sigs, &keys),
    }
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
        }
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
