//! Signing and verification cost against raw Ed25519 (issue: foundation).
//!
//! `cargo bench -p mesh-core --bench signing` runs criterion for each case, then prints
//! a ratio table measured in the same run with an interleaved timer (see
//! `mesh_testkit::ratio`).
//! `cargo bench -p mesh-core --bench signing -- --ratios-only` skips criterion.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use mesh_core::{Artifact, NodeAdvertisement, NodeKeypair, Timestamp, verify_batch};
use mesh_testkit::ratio::{Ratio, compare, compare_with_setup, print_table};
use mesh_testkit::shared_dir;
use serde_json::{Map, Value};

const BATCH: usize = 64;

struct Fixture {
    json_text: String,
    wire: Vec<u8>,
    unsigned: Map<String, Value>,
    input: Vec<u8>,
    sig: ed25519_dalek::Signature,
    vk: VerifyingKey,
    sk: SigningKey,
    key: NodeKeypair,
    now: Timestamp,
    many: Vec<NodeAdvertisement>,
    many_large: Vec<NodeAdvertisement>,
    cold: Vec<Vec<u8>>,
}

fn fixture() -> Fixture {
    let path = shared_dir().join("orbiplex-schemas/examples/vector-signed.node-advertisement.json");
    let json_text = std::fs::read_to_string(path).unwrap();
    let ad = NodeAdvertisement::from_json_str(&json_text).unwrap();
    let secret = [0x29u8; 32];
    let sk = SigningKey::from_bytes(&secret);
    let key = NodeKeypair::from_secret_bytes(&secret);
    let input = ad.signing_input();
    let sig = sk.sign(&input);
    let mut unsigned = ad.as_map().clone();
    unsigned.remove("signature");
    // Many distinct signers and payloads for the batch comparison.
    let signed = |n: usize| -> Vec<NodeAdvertisement> {
        (0..n)
            .map(|i| {
                let k = NodeKeypair::generate();
                let mut doc = unsigned.clone();
                doc.insert("node/id".into(), k.node_id().to_string().into());
                doc.insert("key/public".into(), k.fingerprint().to_string().into());
                doc.insert("sequence/no".into(), (i as u64).into());
                NodeAdvertisement::sign(doc, &k).unwrap()
            })
            .collect()
    };
    let many = signed(BATCH);
    let many_large = signed(4 * BATCH);
    // More distinct signers than the key cache holds (2 x 4096).
    let cold = signed(10_000).iter().map(Artifact::to_cbor).collect();
    Fixture {
        wire: ad.to_cbor(),
        json_text,
        unsigned,
        vk: sk.verifying_key(),
        input,
        sig,
        sk,
        key,
        now: Timestamp::parse("2026-03-23T18:10:00Z").unwrap(),
        many,
        many_large,
        cold,
    }
}

fn criterion_benches(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("verify");
    g.bench_function("raw verify_strict", |b| {
        b.iter(|| {
            f.vk.verify_strict(black_box(&f.input), black_box(&f.sig))
                .unwrap()
        })
    });
    g.bench_function("advert from CBOR wire", |b| {
        b.iter(|| NodeAdvertisement::verify_cbor(black_box(&f.wire), &f.now).unwrap())
    });
    g.bench_function("advert from JSON text", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_str(black_box(&f.json_text)).unwrap();
            NodeAdvertisement::verify_json(v, &f.now).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("sign");
    g.bench_function("raw sign", |b| b.iter(|| f.sk.sign(black_box(&f.input))));
    g.bench_function("advert sign", |b| {
        b.iter_batched(
            || f.unsigned.clone(),
            |doc| NodeAdvertisement::sign(doc, &f.key).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("one by one (64)", |b| {
        b.iter(|| {
            for a in &f.many {
                a.verify_signature().unwrap();
            }
        })
    });
    g.bench_function("verify_batch (64)", |b| {
        b.iter(|| {
            let r = verify_batch(black_box(&f.many));
            assert!(r.iter().all(Result::is_ok));
        })
    });
    g.finish();
}

fn ratios(f: &Fixture) -> Vec<Ratio> {
    let rounds = 15;
    let round = Duration::from_millis(100);
    let mut rows = Vec::new();
    let mut raw_verify = || {
        f.vk.verify_strict(black_box(&f.input), black_box(&f.sig))
            .unwrap()
    };

    let (b, c) = compare(rounds, round, &mut raw_verify, &mut || {
        NodeAdvertisement::verify_cbor(black_box(&f.wire), &f.now).unwrap();
    });
    rows.push(Ratio {
        name: "verify advert from CBOR wire / raw verify_strict",
        baseline_ns: b,
        candidate_ns: c,
        target: 1.10,
        at_least: false,
    });

    let (b, c) = compare(rounds, round, &mut raw_verify, &mut || {
        let v: Value = serde_json::from_str(black_box(&f.json_text)).unwrap();
        NodeAdvertisement::verify_json(v, &f.now).unwrap();
    });
    rows.push(Ratio {
        name: "verify advert from JSON text / raw verify_strict",
        baseline_ns: b,
        candidate_ns: c,
        target: 1.25,
        at_least: false,
    });

    // The payload map is consumed by `sign`: it is cloned before each call, untimed.
    let (b, c) = compare_with_setup(
        rounds,
        round,
        &mut || {
            black_box(f.sk.sign(black_box(&f.input)));
        },
        &mut || f.unsigned.clone(),
        &mut |doc| {
            black_box(NodeAdvertisement::sign(doc, &f.key).unwrap());
        },
    );
    rows.push(Ratio {
        name: "sign advert (incl. validation) / raw sign",
        baseline_ns: b,
        candidate_ns: c,
        target: 1.10,
        at_least: false,
    });

    // Cold keys: every verification sees a signer it has not cached yet (the verifying
    // key is decompressed each time). `cold` holds more distinct signers than the cache.
    let mut i = 0usize;
    let (b, c) = compare(rounds, round, &mut raw_verify, &mut || {
        i = (i + 1) % f.cold.len();
        NodeAdvertisement::verify_cbor(black_box(&f.cold[i]), &f.now).unwrap();
    });
    rows.push(Ratio {
        name: "  same, every signer new to the key cache (info)",
        baseline_ns: b,
        candidate_ns: c,
        target: f64::INFINITY,
        at_least: false,
    });

    // A session handshake's set: five signatures by one node, about 300-1000 bytes each.
    let five: Vec<Vec<u8>> = (0..5u8)
        .map(|i| vec![i; 300 + 150 * usize::from(i)])
        .collect();
    let five_sigs: Vec<ed25519_dalek::Signature> = five.iter().map(|m| f.sk.sign(m)).collect();
    let five_refs: Vec<&[u8]> = five.iter().map(Vec::as_slice).collect();
    let five_keys = vec![f.vk; 5];
    let items: Vec<mesh_core::artifact::SignedBytes<'_>> = five_refs
        .iter()
        .zip(&five_sigs)
        .map(|(m, s)| mesh_core::artifact::SignedBytes {
            signer: f.key.fingerprint(),
            message: m,
            signature: *s,
            remember: false,
        })
        .collect();
    let (b, c) = compare(
        rounds,
        round,
        &mut || {
            let r = ed25519_dalek::verify_batch(black_box(&five_refs), &five_sigs, &five_keys);
            assert!(r.is_ok());
        },
        &mut || assert!(mesh_core::artifact::verify_all_strict(black_box(&items))),
    );
    rows.push(Ratio {
        name: "5 sigs, one signer: verify_all_strict / dalek verify_batch",
        baseline_ns: b,
        candidate_ns: c,
        target: f64::INFINITY,
        at_least: false,
    });

    // A known peer's handshake set: the handshake artifact is fresh, the other four (its
    // capability advertisement and passports) were verified before and are remembered.
    let known: Vec<_> = items
        .iter()
        .enumerate()
        .map(|(i, it)| mesh_core::artifact::SignedBytes {
            remember: i > 0,
            ..it.clone()
        })
        .collect();
    assert!(mesh_core::artifact::verify_all_strict(&known));
    let (b, c) = compare(
        rounds,
        round,
        &mut || assert!(mesh_core::artifact::verify_all_strict(black_box(&items))),
        &mut || assert!(mesh_core::artifact::verify_all_strict(black_box(&known))),
    );
    rows.push(Ratio {
        name: "5 sigs, 4 remembered (a known peer's set) / all 5 checked",
        baseline_ns: b,
        candidate_ns: c,
        target: f64::INFINITY,
        at_least: false,
    });

    let (one, batch) = compare(
        rounds,
        round,
        &mut || {
            for a in &f.many {
                a.verify_signature().unwrap();
            }
        },
        &mut || {
            let r = verify_batch(black_box(&f.many));
            assert!(r.iter().all(Result::is_ok));
        },
    );
    // Throughput ratio = time one-by-one / time batched. `verify_batch` verifies one by
    // one since the batch equation could not have `verify_strict`'s accept set (see
    // `artifact/batch.rs`), so this is about 1x: information, no target.
    rows.push(Ratio {
        name: "batch verify throughput (64) / one by one",
        baseline_ns: batch,
        candidate_ns: one,
        target: f64::INFINITY,
        at_least: false,
    });

    let (one, batch) = compare(
        rounds,
        round,
        &mut || {
            for a in &f.many_large {
                a.verify_signature().unwrap();
            }
        },
        &mut || {
            let r = verify_batch(black_box(&f.many_large));
            assert!(r.iter().all(Result::is_ok));
        },
    );
    rows.push(Ratio {
        name: "batch verify throughput (256) / one by one",
        baseline_ns: batch,
        candidate_ns: one,
        target: f64::INFINITY,
        at_least: false,
    });
    rows
}

fn main() {
    let f = fixture();
    let ratios_only = std::env::args().any(|a| a == "--ratios-only");
    if !ratios_only {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        criterion_benches(&mut c, &f);
        c.final_summary();
    }
    print_table(
        "signing ratios (same run, interleaved, median of 15 rounds)",
        &ratios(&f),
    );
}
