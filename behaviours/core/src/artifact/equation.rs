//! The batch equation with one term per distinct signer.
//!
//! `ed25519_dalek::verify_batch` checks
//! `[-Σ zᵢsᵢ]B + Σ [zᵢ]Rᵢ + Σ [zᵢhᵢ]Aᵢ = 0` with one multiscalar term per signature for
//! the key. A session handshake verifies five signatures by one node (the handshake, its
//! capability advertisement and three passports), so the key terms of one signer are
//! summed first: `Σ [zᵢhᵢ]A = [Σ zᵢhᵢ]A`. Five signatures then need 7 points (B, five
//! `R`, one `A`) instead of 11. Everything else is as in `verify_batch`: `hᵢ =
//! SHA-512(Rᵢ ‖ Aᵢ ‖ Mᵢ)`, canonical `s` required, `R` decompressed, random 128-bit
//! `zᵢ`, no cofactor multiplication, so the accept set is the same.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha512};

/// Whether the batch equation holds for all `(messages[i], sigs[i], keys[i])`; the three
/// slices have the same length (otherwise `false`).
pub(crate) fn verify_batch_merged(
    messages: &[&[u8]],
    sigs: &[Signature],
    keys: &[VerifyingKey],
) -> bool {
    let n = sigs.len();
    if messages.len() != n || keys.len() != n {
        return false;
    }
    let mut random = vec![0u8; 16 * n];
    // Without randomness no batch: `false` sends the callers to one-by-one checks.
    if OsRng.try_fill_bytes(&mut random).is_err() {
        return false;
    }
    let mut b_coefficient = Scalar::ZERO;
    let mut scalars: Vec<Scalar> = Vec::with_capacity(2 * n + 1);
    let mut points: Vec<EdwardsPoint> = Vec::with_capacity(2 * n + 1);
    // Distinct keys (by encoding) and their summed coefficients.
    let mut signers: Vec<(&VerifyingKey, Scalar)> = Vec::with_capacity(n);
    for (i, ((message, sig), key)) in messages.iter().zip(sigs).zip(keys).enumerate() {
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes())) else {
            return false;
        };
        let Some(r) = CompressedEdwardsY(*sig.r_bytes()).decompress() else {
            return false;
        };
        let mut z_bytes = [0u8; 16];
        z_bytes.copy_from_slice(&random[16 * i..16 * (i + 1)]);
        let z = Scalar::from(u128::from_le_bytes(z_bytes));
        let h = Scalar::from_hash(
            Sha512::new()
                .chain_update(sig.r_bytes())
                .chain_update(key.as_bytes())
                .chain_update(message),
        );
        b_coefficient += z * s;
        scalars.push(z);
        points.push(r);
        let zh = z * h;
        match signers
            .iter_mut()
            .find(|(k, _)| k.as_bytes() == key.as_bytes())
        {
            Some((_, c)) => *c += zh,
            None => signers.push((key, zh)),
        }
    }
    for (key, c) in signers {
        scalars.push(c);
        points.push(key.to_edwards());
    }
    scalars.push(-b_coefficient);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(key: &SigningKey, n: u8) -> (Vec<Vec<u8>>, Vec<Signature>, Vec<VerifyingKey>) {
        let msgs: Vec<Vec<u8>> = (0..n).map(|i| vec![i; 20 + usize::from(i)]).collect();
        let sigs = msgs.iter().map(|m| key.sign(m)).collect();
        (msgs, sigs, vec![key.verifying_key(); usize::from(n)])
    }

    #[test]
    fn agrees_with_dalek_on_one_signer_and_on_many() {
        let a = SigningKey::from_bytes(&[7; 32]);
        let b = SigningKey::from_bytes(&[9; 32]);
        let (mut msgs, mut sigs, mut keys) = signed(&a, 5);
        let (m2, s2, k2) = signed(&b, 3);
        msgs.extend(m2);
        sigs.extend(s2);
        keys.extend(k2);
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert!(verify_batch_merged(&refs, &sigs, &keys));
        assert!(ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok());
        assert!(verify_batch_merged(&refs[..1], &sigs[..1], &keys[..1]));
        assert!(verify_batch_merged(&[], &[], &[]));

        // One signature moved to another message, one to another signer, one bit
        // flipped in s, a non-canonical s: each fails the whole batch.
        let mut moved = refs.clone();
        moved.swap(0, 1);
        assert!(!verify_batch_merged(&moved, &sigs, &keys));
        let mut wrong_key = keys.clone();
        wrong_key[2] = b.verifying_key();
        assert!(!verify_batch_merged(&refs, &sigs, &wrong_key));
        let mut flipped = sigs.clone();
        let mut bytes = flipped[4].to_bytes();
        bytes[40] ^= 1;
        flipped[4] = Signature::from_bytes(&bytes);
        assert!(!verify_batch_merged(&refs, &flipped, &keys));
        let mut unreduced = sigs.clone();
        let mut bytes = unreduced[0].to_bytes();
        // s + l: the same value mod l, not canonical.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(bytes[32 + i]) + u16::from(l[i]) + carry;
            bytes[32 + i] = (v & 0xff) as u8;
            carry = v >> 8;
        }
        unreduced[0] = Signature::from_bytes(&bytes);
        assert!(!verify_batch_merged(&refs, &unreduced, &keys));
        // Slices of different lengths.
        assert!(!verify_batch_merged(&refs[..2], &sigs, &keys));
    }
}
