//! Batch verification: many artifacts checked with one multi-scalar multiplication.

use super::strict::r_is_batchable;
use super::{Artifact, prepare};
use crate::error::{ErrorCode, MeshError, MeshResult};

/// Verifies the signatures of many artifacts at once and returns one result per input,
/// in order.
///
/// The fast path runs `ed25519_dalek::verify_batch` over every artifact whose signature
/// and key parse; when the batch fails, each of those is verified on its own with
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
    if ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
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
