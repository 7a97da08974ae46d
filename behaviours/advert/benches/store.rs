//! In-memory advertisement store: verified insert against raw Ed25519 verification, and
//! lookup rate at 100,000 entries (issue: advertisement store).
//!
//! `cargo bench -p mesh-advert --bench store` runs criterion for each case, then prints
//! the ratio tables measured in the same run with an interleaved timer (see
//! `mesh_testkit::ratio`).
//! `cargo bench -p mesh-advert --bench store -- --ratios-only` skips criterion.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// Shared with mesh-core's benches; this one does not use every helper.
#[allow(dead_code)]
#[path = "support/fixtures.rs"]
mod fixtures;

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use fixtures::{shuffle, verify_and_insert};
use mesh_advert::{AdvertStore, MemoryStore, Source, StoreLimits};
use mesh_core::artifact::read_signature;
use mesh_core::{Artifact, NodeAdvertisement, NodeId, NodeKeypair, RateLimit, Timestamp};
use mesh_testkit::ratio::{Ratio, compare_with_setup, print_table};

/// Entries of the lookup store; the insert cases use a prefix of the same artifacts.
const ENTRIES: usize = 100_000;
/// Distinct signers of the cold insert case: more than the key cache holds (2 x 4096),
/// so every verification decompresses its key.
const COLD: usize = 20_000;
/// Distinct signers of the warm insert case: all cached after the first pass.
const WARM: usize = 2_000;
/// Artifacts per timed iteration of the insert cases.
const CHUNK: usize = 100;
/// The lookup target: 1,000,000 lookups per second.
const LOOKUP_BUDGET_NS: f64 = 1_000.0;

struct Fixture {
    now: Timestamp,
    keys: Vec<NodeKeypair>,
    adverts: Vec<NodeAdvertisement>,
    wires: Vec<Vec<u8>>,
}

/// `ENTRIES` signed advertisements, each from its own key, built on every core.
fn fixture() -> Fixture {
    let now = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
    let (keys, adverts): (Vec<_>, Vec<_>) = fixtures::signed_adverts(ENTRIES, &now, 600)
        .into_iter()
        .unzip();
    let wires = adverts.iter().map(Artifact::to_cbor).collect();
    Fixture {
        now,
        keys,
        adverts,
        wires,
    }
}

/// A store that only the rules under test can refuse: room for everything, and a
/// publisher rate limit that never bites.
fn fresh_store(entries: usize) -> MemoryStore {
    MemoryStore::new(StoreLimits {
        max_entries: entries.max(1024) * 2,
        per_publisher: RateLimit::per_minute(1_000_000, 1_000_000),
        ..StoreLimits::default()
    })
}

/// Median ns per artifact of raw verification and of verify + insert, interleaved, over
/// the first `n` artifacts in chunks of `CHUNK`. Both sides walk the artifacts in the
/// same order; the candidate starts a fresh store (made and dropped untimed) at the
/// start of every pass, since the same advertisement cannot be stored twice.
fn insert_ratio(f: &Fixture, raw_verify: &dyn Fn(usize), n: usize) -> (f64, f64) {
    let wires = &f.wires[..n];
    let mut base_at = 0usize;
    let cand_at = Cell::new(0usize);
    let store = RefCell::new(fresh_store(n));
    let (b, c) = compare_with_setup(
        15,
        Duration::from_millis(150),
        &mut || {
            for i in base_at..base_at + CHUNK {
                raw_verify(black_box(i));
            }
            base_at = (base_at + CHUNK) % n;
        },
        &mut || {
            let at = cand_at.get();
            if at == 0 {
                drop(store.replace(fresh_store(n)));
            }
            cand_at.set((at + CHUNK) % n);
            at
        },
        &mut |at| verify_and_insert(&mut store.borrow_mut(), &wires[at..at + CHUNK], &f.now),
    );
    (b / CHUNK as f64, c / CHUNK as f64)
}

/// Median ns per insert (no verification) of the first `COLD` advertisements into a fresh
/// store: as this node's own (`Source::Local`, no share kept) against as a peer's, from
/// one of 64 networks (its share counted), interleaved, 15 rounds.
fn attributed_ratio(f: &Fixture) -> (f64, f64) {
    let nets: Vec<Source> = (0..64u8)
        .map(|i| Source::of_ip(std::net::IpAddr::from([192, 0, 2, i])))
        .collect();
    let stores = [
        RefCell::new(fresh_store(COLD)),
        RefCell::new(fresh_store(COLD)),
    ];
    let at = [Cell::new(0usize), Cell::new(0usize)];
    let pass = |side: usize| {
        let i = at[side].get();
        if i == 0 {
            drop(stores[side].replace(fresh_store(COLD)));
        }
        at[side].set((i + CHUNK) % COLD);
        let mut store = stores[side].borrow_mut();
        for j in i..i + CHUNK {
            let (ad, wire) = (f.adverts[j].clone(), Arc::from(f.wires[j].as_slice()));
            let r = if side == 0 {
                store.insert_with_wire(ad, wire, &f.now)
            } else {
                store
                    .insert_sweeping(ad, wire, nets[j % nets.len()], &f.now)
                    .0
            };
            black_box(r).unwrap();
        }
    };
    let (b, c) = compare_with_setup(
        15,
        Duration::from_millis(150),
        &mut || pass(0),
        &mut || (),
        &mut |()| pass(1),
    );
    (b / CHUNK as f64, c / CHUNK as f64)
}

/// Median ns per lookup over passes through `ids` (a warm-up pass, then 9 timed); with
/// `decode`, each lookup also decodes the advertisement from its wire form, as a
/// lookup answer does.
fn lookup_ns(store: &MemoryStore, ids: &[NodeId], now: &Timestamp, decode: bool) -> f64 {
    let mut passes = Vec::new();
    for pass in 0..10 {
        let mut hits = 0usize;
        let start = Instant::now();
        for id in ids {
            let got = store.get(black_box(id), now);
            let hit = match (&got, decode) {
                (Some(s), true) => black_box(s.advert()).is_ok(),
                (got, _) => black_box(got).is_some(),
            };
            hits += usize::from(hit);
        }
        let ns = start.elapsed().as_nanos() as f64 / ids.len() as f64;
        assert_eq!(hits, ids.len());
        if pass > 0 {
            passes.push(ns);
        }
    }
    passes.sort_by(f64::total_cmp);
    passes[passes.len() / 2]
}

fn criterion_benches(
    c: &mut Criterion,
    f: &Fixture,
    raw_verify: &dyn Fn(usize),
    lookup: &MemoryStore,
    ids: &[NodeId],
) {
    let mut g = c.benchmark_group("insert");
    g.throughput(Throughput::Elements(CHUNK as u64));
    g.sample_size(10);
    let mut at = 0usize;
    g.bench_function("raw verify_strict (100 per iter)", |b| {
        b.iter(|| {
            for i in at..at + CHUNK {
                raw_verify(black_box(i));
            }
            at = (at + CHUNK) % COLD;
        })
    });
    for (name, n) in [
        (
            "verify + insert (100 per iter), 20000 signers, cold keys",
            COLD,
        ),
        (
            "verify + insert (100 per iter), 2000 signers, warm keys",
            WARM,
        ),
    ] {
        let mut store = fresh_store(n);
        let mut at = 0usize;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if at == 0 {
                        store = fresh_store(n);
                    }
                    let start = Instant::now();
                    verify_and_insert(&mut store, &f.wires[at..at + CHUNK], &f.now);
                    total += start.elapsed();
                    at = (at + CHUNK) % n;
                }
                total
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    let mut at = 0usize;
    g.bench_function("get, 100000 entries, shuffled ids", |b| {
        b.iter(|| {
            let r = lookup.get(black_box(&ids[at]), &f.now);
            at = (at + 1) % ids.len();
            r
        })
    });
    g.finish();
}

fn main() {
    let ratios_only = std::env::args().any(|a| a == "--ratios-only");
    let started = Instant::now();
    let f = fixture();
    eprintln!(
        "built {ENTRIES} signed advertisements in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The baseline's inputs, prepared beforehand: decompressed key, decoded signature
    // and signing input of the same artifacts.
    let raw: Vec<_> = f.keys[..COLD]
        .iter()
        .zip(&f.adverts)
        .map(|(key, ad)| {
            (
                key.verifying_key(),
                read_signature(ad.as_map()).unwrap(),
                ad.signing_input(),
            )
        })
        .collect();
    let raw_verify = |i: usize| {
        let (vk, sig, input) = &raw[i];
        vk.verify_strict(input, sig).unwrap();
    };

    let mut lookup = fresh_store(ENTRIES);
    for (ad, wire) in f.adverts.iter().zip(&f.wires) {
        lookup
            .insert_with_wire(ad.clone(), Arc::from(wire.as_slice()), &f.now)
            .unwrap();
    }
    let mut ids: Vec<NodeId> = f.adverts.iter().map(NodeAdvertisement::node_id).collect();
    shuffle(&mut ids);

    if !ratios_only {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        criterion_benches(&mut c, &f, &raw_verify, &lookup, &ids);
        c.final_summary();
    }

    // Throughput ratio = raw verify time / verify + insert time: the Ratio struct
    // divides candidate by baseline, so the two times go in swapped.
    let (raw_cold, insert_cold) = insert_ratio(&f, &raw_verify, COLD);
    let (raw_warm, insert_warm) = insert_ratio(&f, &raw_verify, WARM);
    print_table(
        "insert ratios (same run, interleaved, median of 15 rounds; ns per artifact)",
        &[
            Ratio {
                name: "verified insert thrpt / raw verify_strict, 20000 cold keys",
                baseline_ns: insert_cold,
                candidate_ns: raw_cold,
                target: 0.85,
                at_least: true,
            },
            Ratio {
                name: "  same, 2000 signers, key cache warm (info)",
                baseline_ns: insert_warm,
                candidate_ns: raw_warm,
                target: f64::INFINITY,
                at_least: true,
            },
        ],
    );
    println!(
        "(throughput rows: 'baseline' = verify_cbor + insert_with_wire, \
         'candidate' = raw verify_strict, ratio = raw time / insert time)"
    );

    let (local, attributed) = attributed_ratio(&f);
    print_table(
        "per-source shares (same run, interleaved, median of 15 rounds; ns per insert, no verification)",
        &[Ratio {
            name: "insert from one of 64 networks / insert as the node's own, 20000 entries",
            baseline_ns: local,
            candidate_ns: attributed,
            target: 1.3,
            at_least: false,
        }],
    );

    let per_lookup = lookup_ns(&lookup, &ids, &f.now, false);
    // Decoding walks the whole document: a tenth of the ids is enough.
    let decoded = lookup_ns(&lookup, &ids[..ids.len() / 10], &f.now, true);
    print_table(
        "lookup (median of 9 passes over 100000 shuffled ids)",
        &[Ratio {
            name: "get, 100000 entries / 1 us budget (1,000,000/s)",
            baseline_ns: LOOKUP_BUDGET_NS,
            candidate_ns: per_lookup,
            target: 1.0,
            at_least: false,
        }],
    );
    println!(
        "get + decode the advertisement from its wire form (a lookup answer; info): {:.2} us",
        decoded / 1000.0
    );
    let rate = 1e9 / per_lookup;
    println!(
        "lookups/s: {rate:.0} (target >= 1000000/s: {})",
        if rate >= 1e6 { "ok" } else { "MISSED" }
    );
}
