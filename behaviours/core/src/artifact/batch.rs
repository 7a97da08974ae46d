//! Batch verification: many artifacts checked with one multi-scalar multiplication.

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
            Ok((key, sig)) if !key.is_weak() && r_is_batchable(&sig) => {
                inputs.push(artifact.signing_input());
                sigs.push(sig);
                keys.push(key);
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
        results[i] = keys[j].verify_strict(messages[j], &sigs[j]).map_err(|_| {
            MeshError::new(
                ErrorCode::SigInvalid,
                format!("{}: signature does not verify", A::FAMILY),
            )
        });
    }
    results
}

/// Encodings of the eight small-order points (the torsion subgroup), with the sign-bit
/// variants of those whose x is 0 (which decode to the same point, non-canonically).
const SMALL_ORDER_R: [[u8; 32]; 10] = {
    const fn with(y: [u8; 32], sign: bool) -> [u8; 32] {
        let mut b = y;
        if sign {
            b[31] |= 0x80;
        }
        b
    }
    let mut one = [0u8; 32];
    one[0] = 1;
    let zero = [0u8; 32];
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    let order8_a = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ];
    let order8_b = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ];
    [
        with(one, false),
        with(one, true),
        with(minus_one, false),
        with(minus_one, true),
        with(zero, false),
        with(zero, true),
        with(order8_a, false),
        with(order8_a, true),
        with(order8_b, false),
        with(order8_b, true),
    ]
};

/// `R` is canonically encoded (y < p) and not one of the small-order points. These are
/// byte comparisons: no curve arithmetic is spent on the fast path.
fn r_is_batchable(sig: &ed25519_dalek::Signature) -> bool {
    let r = sig.r_bytes();
    let mut y = *r;
    y[31] &= 0x7f;
    // p = 2^255 - 19: y >= p iff y[31] == 0x7f, y[1..31] all 0xff and y[0] >= 0xed.
    let non_canonical = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    !non_canonical && !SMALL_ORDER_R.contains(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::edwards::CompressedEdwardsY;

    #[test]
    fn small_order_table_is_exactly_the_torsion_points() {
        for enc in SMALL_ORDER_R {
            let p = CompressedEdwardsY(enc).decompress().expect("decodes");
            assert!(p.is_small_order(), "{}", hex::encode(enc));
        }
        // Every torsion point's canonical encoding is in the table.
        let t = curve25519_dalek::constants::EIGHT_TORSION;
        for p in t {
            assert!(SMALL_ORDER_R.contains(&p.compress().0));
        }
    }

    #[test]
    fn non_canonical_and_small_order_r_are_not_batched() {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&SMALL_ORDER_R[6]);
        assert!(!r_is_batchable(&ed25519_dalek::Signature::from_bytes(&sig)));
        let mut p_plus_3 = [0xffu8; 32];
        p_plus_3[0] = 0xf0;
        p_plus_3[31] = 0x7f;
        sig[..32].copy_from_slice(&p_plus_3);
        assert!(!r_is_batchable(&ed25519_dalek::Signature::from_bytes(&sig)));
        use ed25519_dalek::Signer;
        let honest = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]).sign(b"m");
        assert!(r_is_batchable(&honest));
    }
}
