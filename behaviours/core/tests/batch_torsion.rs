//! Batch verification has exactly the accept set of `verify_strict`, also for signatures
//! built with a torsion component: `R = [r]B + T` and keys `A = [a]B + T` for `T` of
//! order 2, 4 and 8. The random weights of a batch equation are multiples of `T`'s order
//! with probability 1/order, so an equation that lets such a term through accepts some of
//! these batches and refuses others; every verdict here must equal `verify_strict`'s, for
//! every trial.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, VerifyingKey};
use mesh_core::artifact::{SignedBytes, signature_value, signing_input, verify_all_strict};
use mesh_core::{
    Artifact, KeyFingerprint, NodeKeypair, ParticipantId, SignalMarkerEnvelope, verify_batch,
};
use rand_core::{OsRng, RngCore};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

/// Trials per (order, case): on a batch equation that lets a torsion term through, an
/// order-2 term is accepted about half the time, so 40 trials all agreeing by chance has
/// probability 2^-40.
const TRIALS: usize = 40;

fn random_scalar() -> Scalar {
    let mut b = [0u8; 64];
    OsRng.fill_bytes(&mut b);
    Scalar::from_bytes_mod_order_wide(&b)
}

/// A torsion point of exactly `order` (2, 4 or 8).
fn torsion(order: usize) -> EdwardsPoint {
    let t = match order {
        2 => EIGHT_TORSION[4],
        4 => EIGHT_TORSION[2],
        _ => EIGHT_TORSION[1],
    };
    assert_eq!(
        (1..=8).find(|k| (t * Scalar::from(*k as u64)) == EdwardsPoint::default()),
        Some(order),
        "order of the chosen torsion point"
    );
    t
}

/// `s = r + h·a` for `R` (bytes) and key `A` (bytes): the signature a signer holding `a`
/// and `r` makes for whatever `R` and `A` it publishes.
fn sign_raw(a: &Scalar, r: &Scalar, big_r: [u8; 32], big_a: [u8; 32], msg: &[u8]) -> Signature {
    let h = Scalar::from_hash(
        Sha512::new()
            .chain_update(big_r)
            .chain_update(big_a)
            .chain_update(msg),
    );
    let s = r + h * a;
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&big_r);
    bytes[32..].copy_from_slice(s.as_bytes());
    Signature::from_bytes(&bytes)
}

/// One crafted signature: key bytes, message, signature and `verify_strict`'s verdict.
struct Crafted {
    key: [u8; 32],
    msg: Vec<u8>,
    sig: Signature,
    strict: bool,
}

fn strict(key: &[u8; 32], msg: &[u8], sig: &Signature) -> bool {
    VerifyingKey::from_bytes(key)
        .map(|k| k.verify_strict(msg, sig).is_ok())
        .unwrap_or(false)
}

/// `R = [r]B + t_r`, `A = [a]B + t_a`, signed over `msg`.
fn craft(t_r: EdwardsPoint, t_a: EdwardsPoint, msg: Vec<u8>) -> Crafted {
    let (a, r) = (random_scalar(), random_scalar());
    let key = (ED25519_BASEPOINT_POINT * a + t_a).compress().0;
    let big_r = (ED25519_BASEPOINT_POINT * r + t_r).compress().0;
    let sig = sign_raw(&a, &r, big_r, key, &msg);
    Crafted {
        strict: strict(&key, &msg, &sig),
        key,
        msg,
        sig,
    }
}

/// A key with torsion component `t` and a signature `verify_strict` accepts: `R = [r]B + U`
/// with `U = -[h]t`, found by trying the eight torsion points for `U` (each matches with
/// probability 1/8, so some `r` gives one quickly).
fn craft_accepted_with_torsion_key(t: EdwardsPoint, msg: Vec<u8>) -> Option<Crafted> {
    for _ in 0..64 {
        let (a, r) = (random_scalar(), random_scalar());
        let key = (ED25519_BASEPOINT_POINT * a + t).compress().0;
        for u in EIGHT_TORSION {
            let big_r = (ED25519_BASEPOINT_POINT * r + u).compress().0;
            let sig = sign_raw(&a, &r, big_r, key, &msg);
            if strict(&key, &msg, &sig) {
                return Some(Crafted {
                    key,
                    msg,
                    sig,
                    strict: true,
                });
            }
        }
    }
    None
}

/// An honest item of `key` over `msg`.
fn honest<'a>(key: &NodeKeypair, msg: &'a [u8]) -> SignedBytes<'a> {
    SignedBytes {
        signer: key.fingerprint(),
        message: msg,
        signature: Signature::from_bytes(&key.sign(msg)),
        remember: false,
    }
}

fn marker_doc(sender: [u8; 32], i: usize) -> Map<String, Value> {
    let participant = ParticipantId::from_fingerprint(KeyFingerprint::from_bytes(sender));
    let Value::Object(m) = json!({
        "schema/v": 1,
        "message/id": format!("msg:{i}"),
        "protocol/version": "0.1.0",
        "message/kind": "signal-marker-envelope.v1",
        "sender/participant-id": participant.to_string(),
        "created-at": "2026-03-30T14:00:00Z",
        "marker/ref": "signal-marker:x",
    }) else {
        unreachable!()
    };
    m
}

/// The envelope of `doc` carrying `sig`.
fn with_signature(mut doc: Map<String, Value>, sig: &Signature) -> SignalMarkerEnvelope {
    doc.insert("signature".into(), signature_value(&sig.to_bytes()));
    SignalMarkerEnvelope::from_map(doc).unwrap()
}

/// Crafts over an envelope's signing input: the key must be known before the input.
fn craft_envelope(t_r: EdwardsPoint, t_a: EdwardsPoint, i: usize) -> (SignalMarkerEnvelope, bool) {
    let (a, r) = (random_scalar(), random_scalar());
    let key = (ED25519_BASEPOINT_POINT * a + t_a).compress().0;
    let doc = marker_doc(key, i);
    let msg = signing_input(SignalMarkerEnvelope::FAMILY, &["signature"], &doc);
    let big_r = (ED25519_BASEPOINT_POINT * r + t_r).compress().0;
    let sig = sign_raw(&a, &r, big_r, key, &msg);
    let verdict = strict(&key, &msg, &sig);
    (with_signature(doc, &sig), verdict)
}

#[test]
fn mixed_batches_with_torsion_components_match_verify_strict() {
    let (k1, k2) = (NodeKeypair::generate(), NodeKeypair::generate());
    let (m1, m2) = (b"honest one".to_vec(), b"honest two".to_vec());
    let zero = EdwardsPoint::default();
    let mut verdicts = [0usize; 2];
    let mut disagreements = Vec::new();
    for order in [2, 4, 8] {
        let t = torsion(order);
        for trial in 0..TRIALS {
            let msg = format!("order {order} trial {trial}").into_bytes();
            let mut cases = vec![
                ("R + T", craft(t, zero, msg.clone())),
                ("A + T", craft(zero, t, msg.clone())),
                ("R + T, A + T", craft(t, t, msg.clone())),
            ];
            if trial % 8 == 0
                && let Some(c) = craft_accepted_with_torsion_key(t, msg.clone())
            {
                cases.push(("A + T, accepted", c));
            }
            for (case, c) in cases {
                verdicts[usize::from(c.strict)] += 1;
                let bad = SignedBytes {
                    signer: KeyFingerprint::from_bytes(c.key),
                    message: &c.msg,
                    signature: c.sig,
                    // Every other trial through the table of remembered successes: a
                    // remembered verdict must be the same (shape 3 checks it twice).
                    remember: trial % 2 == 1,
                };
                // Alone, first, in the middle, with a second copy: every batch shape.
                let shapes: Vec<Vec<SignedBytes<'_>>> = vec![
                    vec![bad.clone()],
                    vec![bad.clone(), honest(&k1, &m1)],
                    vec![honest(&k1, &m1), bad.clone(), honest(&k2, &m2)],
                    vec![bad.clone(), honest(&k1, &m1), bad.clone()],
                ];
                for (n, items) in shapes.iter().enumerate() {
                    if verify_all_strict(items) != c.strict {
                        disagreements.push(format!(
                            "order {order} {case} shape {n}: strict {}",
                            c.strict
                        ));
                    }
                }
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements with verify_strict, e.g. {:?}",
        disagreements.len(),
        &disagreements[..disagreements.len().min(5)]
    );
    // Both verdicts occurred, so the comparison was not one-sided.
    assert!(verdicts[0] > 100 && verdicts[1] > 5, "{verdicts:?}");
}

#[test]
fn verify_batch_of_artifacts_with_torsion_components_matches_verify_strict() {
    let zero = EdwardsPoint::default();
    let good = |i: usize| {
        let k = NodeKeypair::generate();
        let mut doc = marker_doc(*k.fingerprint().as_bytes(), i);
        doc.remove("signature");
        SignalMarkerEnvelope::sign(doc, &k).unwrap()
    };
    let mut disagreements = Vec::new();
    for order in [2, 4, 8] {
        let t = torsion(order);
        for trial in 0..TRIALS {
            for (case, t_r, t_a) in [("R + T", t, zero), ("A + T", zero, t)] {
                let (bad, verdict) = craft_envelope(t_r, t_a, trial);
                let batch = vec![good(0), bad.clone(), good(1), good(2)];
                let results = verify_batch(&batch);
                let expect = [true, verdict, true, true];
                let got: Vec<bool> = results.iter().map(Result::is_ok).collect();
                if got != expect {
                    disagreements.push(format!("order {order} {case}: {got:?} != {expect:?}"));
                }
                // The per-item verdict is the artifact's own.
                assert_eq!(bad.verify_signature().is_ok(), verdict);
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements with verify_strict, e.g. {:?}",
        disagreements.len(),
        &disagreements[..disagreements.len().min(5)]
    );
}
