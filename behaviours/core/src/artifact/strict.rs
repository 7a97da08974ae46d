//! Strict Ed25519 verification with the accept set of `VerifyingKey::verify_strict`, at
//! lower cost.
//!
//! `verify_strict` accepts iff `s` is canonical, `R` decompresses, neither `R` nor `A` is
//! of small order, and `R`'s bytes equal the compression of `[s]B - [k]A`. When the last
//! check holds, `R` is the canonical encoding of a point, so it decompresses, and it is of
//! small order iff its bytes are one of the canonical encodings of the eight torsion
//! points. So checking `R`'s bytes against that table (no curve arithmetic) and then the
//! cofactorless equation (`Verifier::verify`) accepts exactly the same signatures while
//! saving the decompression of `R`. `A`'s weakness is computed once per cached key.

use ed25519_dalek::{Signature, SignatureError, Verifier, VerifyingKey};

/// Verifies like `verify_strict`; `weak` is `key.is_weak()`, precomputed.
pub(crate) fn verify_strict_fast(
    key: &VerifyingKey,
    weak: bool,
    message: &[u8],
    sig: &Signature,
) -> Result<(), SignatureError> {
    if weak || SMALL_ORDER_R.contains(sig.r_bytes()) {
        return Err(SignatureError::new());
    }
    #[cfg(any(test, feature = "verify-counter"))]
    EQUATIONS.with(|n| n.set(n.get() + 1));
    key.verify(message, sig)
}

#[cfg(any(test, feature = "verify-counter"))]
thread_local! {
    /// Verification equations checked on this thread (tests count the work saved).
    pub(crate) static EQUATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many signature equations this thread has checked (every strict verification
/// that got past the small-order checks). Only with the `verify-counter` feature, for
/// tests that count the work a cache or a shortcut saves.
#[cfg(any(test, feature = "verify-counter"))]
pub fn equations_on_this_thread() -> u64 {
    EQUATIONS.with(std::cell::Cell::get)
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

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use ed25519_dalek::{Signer, SigningKey};

    /// Every (key, R, s) combination built from honest signatures, torsion points and
    /// weak keys gets the same verdict as `verify_strict`.
    #[test]
    fn same_verdicts_as_verify_strict() {
        let torsion: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|p| p.compress().0)
            .chain(SMALL_ORDER_R)
            .collect();
        let mut keys: Vec<VerifyingKey> = (0u8..8)
            .map(|i| SigningKey::from_bytes(&[i; 32]).verifying_key())
            .collect();
        keys.extend(
            torsion
                .iter()
                .filter_map(|t| VerifyingKey::from_bytes(t).ok()),
        );
        let mut checked = 0;
        for (ki, key) in keys.iter().enumerate() {
            let signer = SigningKey::from_bytes(&[(ki % 8) as u8; 32]);
            for m in 0u8..4 {
                let msg = [m; 40];
                let honest = signer.sign(&msg).to_bytes();
                let mut candidates = vec![honest];
                for t in &torsion {
                    let mut c = honest;
                    c[..32].copy_from_slice(t);
                    candidates.push(c);
                    let mut z = [0u8; 64];
                    z[..32].copy_from_slice(t);
                    candidates.push(z);
                }
                let mut flipped = honest;
                flipped[40] ^= 1;
                candidates.push(flipped);
                let mut big_s = honest;
                big_s[63] |= 0xf0;
                candidates.push(big_s);
                for c in candidates {
                    let sig = Signature::from_bytes(&c);
                    assert_eq!(
                        verify_strict_fast(key, key.is_weak(), &msg, &sig).is_ok(),
                        key.verify_strict(&msg, &sig).is_ok(),
                        "key {ki} msg {m} sig {}",
                        hex::encode(c)
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000);
    }

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
}
