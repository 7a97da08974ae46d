//! Durable advertisement store (redb in the data dir): verified inserts in batches
//! against the in-memory store, and the reload of 100,000 entries after a restart
//! (issue: durable store).
//!
//! `cargo bench --bench durable_store` runs criterion for each case, then prints the
//! ratio table and the reload figures measured in the same run with an interleaved
//! timer (see `mesh_testkit::ratio`).
//! `cargo bench --bench durable_store -- --ratios-only` skips criterion.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// Shared with mesh-core's benches; this one does not use every helper.
#[allow(dead_code)]
#[path = "../behaviours/advert/benches/support/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use fixtures::verify_and_insert;
use libmesh::advert_store::{DurableStore, FILE_NAME};
use mesh_advert::{AdvertStore, MemoryStore, StoreLimits};
use mesh_core::{Artifact, NodeAdvertisement, RateLimit, Timestamp};
use mesh_testkit::median;
use mesh_testkit::ratio::{Ratio, print_table};

/// Entries of the reload case; the insert cases use a prefix of the same artifacts.
const ENTRIES: usize = 100_000;
/// Distinct signers of the insert cases (more than the key cache holds, 2 x 4096, so
/// every verification decompresses its key, on both sides alike).
const INSERT_N: usize = 10_000;
/// The batch (one redb commit, fsync'd) of the headline case.
const BATCH: usize = 500;
/// The batch sizes of the sensitivity rows.
const SMALL_BATCH: usize = 50;
const LARGE_BATCH: usize = 2_000;
/// Timed rounds of the interleaved insert comparison (after one warm-up round).
const ROUNDS: usize = 7;
/// Timed opens of the reload case.
const OPENS: usize = 3;
/// Inserts of one advertisement each per pass of the single-insert case (what the node
/// loop pays per peer publish).
const SINGLE_N: usize = 1_000;

struct Fixture {
    now: Timestamp,
    adverts: Vec<NodeAdvertisement>,
    wires: Vec<Vec<u8>>,
}

/// `ENTRIES` signed advertisements, each from its own key, built on every core.
fn fixture() -> Fixture {
    let now = Timestamp::parse("2026-03-23T18:10:00Z").unwrap();
    let adverts: Vec<NodeAdvertisement> = fixtures::signed_adverts(ENTRIES, &now, 600)
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let wires = adverts.iter().map(Artifact::to_cbor).collect();
    Fixture {
        now,
        adverts,
        wires,
    }
}

/// Limits that only the rules under test can refuse: room for everything, and a
/// publisher rate limit that never bites.
fn limits() -> StoreLimits {
    StoreLimits {
        max_entries: ENTRIES * 2,
        max_bytes: usize::MAX / 2,
        per_publisher: RateLimit::per_minute(u32::MAX / 2, u32::MAX / 2),
        ..StoreLimits::default()
    }
}

/// The same, durably: verify the batch, then one `insert_batch` (one redb commit with
/// the default `Durability::Immediate`, i.e. fsync) per `batch` advertisements.
fn verify_and_insert_batches(
    store: &mut DurableStore,
    wires: &[Vec<u8>],
    batch: usize,
    now: &Timestamp,
) {
    for chunk in wires.chunks(batch) {
        let ads: Vec<NodeAdvertisement> = chunk
            .iter()
            .map(|w| NodeAdvertisement::verify_cbor(black_box(w), now).unwrap())
            .collect();
        for r in store.insert_batch(ads, now) {
            black_box(r.unwrap());
        }
    }
}

/// A fresh durable store in a fresh temp dir (the dir goes when the guard drops).
fn fresh_durable(now: &Timestamp) -> (tempfile::TempDir, DurableStore) {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = DurableStore::open(dir.path(), limits(), now).unwrap();
    assert_eq!(report.loaded, 0);
    (dir, store)
}

/// One timed pass of all `wires` into a fresh in-memory store (made and dropped
/// untimed).
fn memory_pass(wires: &[Vec<u8>], now: &Timestamp) -> Duration {
    let mut store = MemoryStore::new(limits());
    let start = Instant::now();
    verify_and_insert(&mut store, wires, now);
    let took = start.elapsed();
    assert_eq!(store.len(), wires.len());
    took
}

/// One timed pass of all `wires` into a fresh durable store in a fresh temp dir
/// (created, opened, closed and deleted untimed).
fn durable_pass(wires: &[Vec<u8>], batch: usize, now: &Timestamp) -> Duration {
    let (dir, mut store) = fresh_durable(now);
    let start = Instant::now();
    verify_and_insert_batches(&mut store, wires, batch, now);
    let took = start.elapsed();
    assert_eq!(store.len(), wires.len());
    drop(store);
    drop(dir);
    took
}

/// Median ns per artifact of the in-memory pass and of the durable passes (one per
/// entry of `batches`), interleaved pass by pass over `ROUNDS` rounds after a warm-up
/// round, so machine noise and frequency drift hit every side alike.
fn insert_rounds(f: &Fixture, batches: &[usize]) -> (f64, Vec<f64>) {
    let wires = &f.wires[..INSERT_N];
    let per = |d: Duration| d.as_nanos() as f64 / wires.len() as f64;
    let mut mem = Vec::with_capacity(ROUNDS);
    let mut durable: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); batches.len()];
    for round in 0..=ROUNDS {
        let m = per(memory_pass(wires, &f.now));
        let d: Vec<f64> = batches
            .iter()
            .map(|&b| per(durable_pass(wires, b, &f.now)))
            .collect();
        if round > 0 {
            mem.push(m);
            for (all, one) in durable.iter_mut().zip(d) {
                all.push(one);
            }
        }
    }
    (median(&mem), durable.iter().map(|d| median(d)).collect())
}

/// Median ns per insert of `SINGLE_N` inserts of one advertisement each from a peer's
/// network into a fresh store: fsync'd each (`insert_from`, what the node did) and
/// unsynced with one flush at the end, timed with it (`insert_unsynced_from`, what the
/// node does now), interleaved pass by pass over `ROUNDS` rounds after a warm-up.
fn single_rounds(f: &Fixture) -> (f64, f64) {
    let adverts = &f.adverts[..SINGLE_N];
    let peer = mesh_advert::Source::of_ip("192.0.2.1".parse().unwrap());
    let pass = |unsynced: bool| {
        let (dir, store) = fresh_durable(&f.now);
        let start = Instant::now();
        for a in adverts {
            let r = if unsynced {
                store.insert_unsynced_from(a.clone(), peer, &f.now)
            } else {
                store.insert_from(a.clone(), peer, &f.now)
            };
            r.unwrap();
        }
        store.flush().unwrap();
        let took = start.elapsed();
        assert_eq!(store.len(), SINGLE_N);
        drop(store);
        drop(dir);
        took.as_nanos() as f64 / SINGLE_N as f64
    };
    let (mut synced, mut unsynced) = (Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let s = pass(false);
        let u = pass(true);
        if round > 0 {
            synced.push(s);
            unsynced.push(u);
        }
    }
    (median(&synced), median(&unsynced))
}

/// A durable store in `dir` holding every advertisement of the fixture.
fn fill(dir: &Path, f: &Fixture) {
    let (store, _) = DurableStore::open(dir, limits(), &f.now).unwrap();
    for chunk in f.adverts.chunks(5_000) {
        for r in store.insert_batch(chunk.to_vec(), &f.now) {
            r.unwrap();
        }
    }
    assert_eq!(store.len(), ENTRIES);
}

/// Time of one reopen (the store is closed untimed).
fn timed_open(dir: &Path, now: &Timestamp) -> Duration {
    let start = Instant::now();
    let (store, report) = DurableStore::open(dir, limits(), now).unwrap();
    let took = start.elapsed();
    assert_eq!(report.loaded, ENTRIES);
    assert_eq!(store.len(), ENTRIES);
    drop(store);
    took
}

fn criterion_benches(c: &mut Criterion, f: &Fixture, reload_dir: &Path) {
    let wires = &f.wires[..INSERT_N];
    let mut g = c.benchmark_group("durable insert");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    {
        let mut store = MemoryStore::new(limits());
        let mut at = 0usize;
        g.bench_function(
            "verify + MemoryStore insert_with_wire (500 per iter)",
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if at == 0 {
                            store = MemoryStore::new(limits());
                        }
                        let start = Instant::now();
                        verify_and_insert(&mut store, &wires[at..at + BATCH], &f.now);
                        total += start.elapsed();
                        at = (at + BATCH) % INSERT_N;
                    }
                    total
                })
            },
        );
    }
    {
        let mut durable = fresh_durable(&f.now);
        let mut at = 0usize;
        g.bench_function(
            "verify + DurableStore insert_batch (500, one commit)",
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if at == 0 {
                            durable = fresh_durable(&f.now);
                        }
                        let start = Instant::now();
                        verify_and_insert_batches(
                            &mut durable.1,
                            &wires[at..at + BATCH],
                            BATCH,
                            &f.now,
                        );
                        total += start.elapsed();
                        at = (at + BATCH) % INSERT_N;
                    }
                    total
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("reload");
    g.throughput(Throughput::Elements(ENTRIES as u64));
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(12));
    g.bench_function("DurableStore::open, 100000 entries", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| timed_open(reload_dir, &f.now)).sum())
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

    let reload = tempfile::tempdir().unwrap();
    let started = Instant::now();
    fill(reload.path(), &f);
    eprintln!(
        "filled the reload store ({ENTRIES} entries, batches of 5000) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if !ratios_only {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        criterion_benches(&mut c, &f, reload.path());
        c.final_summary();
    }

    // Throughput ratio = in-memory time / durable time: the Ratio struct divides
    // candidate by baseline, so the two times go in swapped.
    let (mem, durable) = insert_rounds(&f, &[BATCH, SMALL_BATCH, LARGE_BATCH]);
    print_table(
        "insert ratios (same run, interleaved passes of 10000 signers, fresh store each, \
         median of 7; ns per artifact)",
        &[
            Ratio {
                name: "durable thrpt / in-memory, batches of 500 (fsync)",
                baseline_ns: durable[0],
                candidate_ns: mem,
                target: 0.5,
                at_least: true,
            },
            Ratio {
                name: "  same, batches of 50 (info)",
                baseline_ns: durable[1],
                candidate_ns: mem,
                target: f64::INFINITY,
                at_least: true,
            },
            Ratio {
                name: "  same, batches of 2000 (info)",
                baseline_ns: durable[2],
                candidate_ns: mem,
                target: f64::INFINITY,
                at_least: true,
            },
        ],
    );
    println!(
        "(rows: 'baseline' = verify_cbor + DurableStore::insert_batch, 'candidate' = \
         verify_cbor + MemoryStore::insert_with_wire, ratio = memory time / durable time)"
    );
    for (name, ns) in [
        ("in-memory", mem),
        ("durable, batches of 500", durable[0]),
        ("durable, batches of 50", durable[1]),
        ("durable, batches of 2000", durable[2]),
    ] {
        println!("  {name:<26} {:>9.0} inserts/s", 1e9 / ns);
    }

    let (synced, unsynced) = single_rounds(&f);
    println!(
        "\none peer insert at a time ({SINGLE_N} per pass, fresh store, median of {ROUNDS}; \
         no verification)"
    );
    println!(
        "  fsync'd each (insert_from):                 {:>9.1} us per insert",
        synced / 1e3
    );
    println!(
        "  unsynced, one flush (insert_unsynced_from): {:>9.1} us per insert ({:.1}x less)",
        unsynced / 1e3,
        synced / unsynced
    );

    let mut opens: Vec<f64> = (0..OPENS)
        .map(|_| timed_open(reload.path(), &f.now).as_secs_f64())
        .collect();
    opens.sort_by(f64::total_cmp);
    let secs = opens[opens.len() / 2];
    let meta = std::fs::metadata(reload.path().join(FILE_NAME)).unwrap();
    let size = meta.len();
    let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    println!("\nreload after restart ({ENTRIES} entries, median of {OPENS} opens)");
    println!(
        "  DurableStore::open: {:.0} ms total, {:.0} entries/s (opens: {})",
        secs * 1e3,
        ENTRIES as f64 / secs,
        opens
            .iter()
            .map(|s| format!("{:.0} ms", s * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  file size: {:.1} MiB ({size} bytes, {:.0} bytes per entry); allocated on disk: \
         {:.1} MiB",
        size as f64 / (1024.0 * 1024.0),
        size as f64 / ENTRIES as f64,
        allocated as f64 / (1024.0 * 1024.0)
    );
}
