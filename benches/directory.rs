//! The seed directory over loopback HTTP/1.1, with a concurrent pipelining keep-alive
//! load generator (pre-rendered requests, like wrk) in the
//! same process: PUT and GET requests per second, and PUT throughput against raw
//! Ed25519 verification of the same artifacts on 2 cores (issue: seed directory).
//!
//! `cargo bench --bench directory` runs criterion for each case, then prints the ratio
//! table measured in the same run with an interleaved timer (see
//! `mesh_testkit::ratio` for the table).
//! `cargo bench --bench directory -- --ratios-only` skips criterion.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

// Shared with mesh-core's benches; this one only prints with it.
#[allow(dead_code)]
#[path = "../behaviours/advert/benches/support/fixtures.rs"]
mod fixtures;
#[allow(dead_code)]
use std::hint::black_box;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use fixtures::shuffle;
use libmesh::directory::{DirectoryConfig, SharedStore, serve};
use mesh_advert::{AdvertStore, MemoryStore, StoreLimits};
use mesh_core::artifact::read_signature;
use mesh_core::{Artifact, NodeAdvertisement, NodeKeypair, RateLimit, Timestamp};
use mesh_testkit::median;
use mesh_testkit::ratio::{Ratio, print_table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// Distinct publishers, each published once per PUT pass (more than the key cache
/// holds, 2 x 4096, so every PUT decompresses its key).
const N: usize = 20_000;
/// Concurrent keep-alive connections of the client.
const CONNECTIONS: usize = 8;
/// Worker threads of the runtime shared by the directory and the client (= cores).
const WORKERS: usize = 2;
/// Threads of the raw-verify baseline (= cores).
const VERIFY_THREADS: usize = 2;
/// Timed rounds of the interleaved comparison (after one warm-up round).
const ROUNDS: usize = 7;

/// One prepared request: its complete HTTP/1.1 bytes.
type Req = Vec<u8>;

/// The HTTP/1.1 bytes of a request (pre-rendered, so the load generator spends almost
/// nothing per request, like wrk: the bench measures the directory, not a client).
fn render(method: &str, path: &str, host: &str, body: &[u8]) -> Req {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n").into_bytes();
    if !body.is_empty() {
        r.extend_from_slice(
            format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

struct Fixture {
    adverts: Vec<NodeAdvertisement>,
    keys: Vec<NodeKeypair>,
}

/// `N` advertisements, each from its own key, signed now (the directory checks them
/// against the wall clock) and valid for an hour, built on every core.
fn fixture() -> Fixture {
    let now = Timestamp::now();
    let (keys, adverts) = fixtures::signed_adverts(N, &now, 3600).into_iter().unzip();
    Fixture { adverts, keys }
}

/// A store that only the rules under test can refuse.
fn fresh_store() -> MemoryStore {
    MemoryStore::new(StoreLimits {
        max_entries: N * 2,
        max_bytes: usize::MAX / 2,
        per_publisher: RateLimit::per_minute(u32::MAX / 2, u32::MAX / 2),
        ..StoreLimits::default()
    })
}

/// A keep-alive connection to the directory.
async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads `count` pipelined responses from `rd`, checking each status is `expect`.
async fn read_responses(rd: &mut tokio::net::tcp::OwnedReadHalf, count: usize, expect: u16) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut pos = 0;
    let mut seen = 0;
    while seen < count {
        // One complete response at `pos`?
        let complete = buf[pos..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .and_then(|h| {
                let head = std::str::from_utf8(&buf[pos..pos + h]).ok()?;
                let status: u16 = head.get(9..12)?.parse().ok()?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().ok())
                    })
                    .flatten()
                    .unwrap_or(0);
                let end = pos + h + 4 + len;
                (buf.len() >= end).then_some((status, end))
            });
        match complete {
            Some((status, end)) => {
                assert_eq!(
                    status,
                    expect,
                    "{}",
                    String::from_utf8_lossy(&buf[pos..end])
                );
                pos = end;
                seen += 1;
                if pos > 32 * 1024 {
                    buf.drain(..pos);
                    pos = 0;
                }
            }
            None => {
                let n = rd.read(&mut chunk).await.unwrap();
                assert!(n > 0, "server closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The client: `conns.len()` connections, each pipelining its share of `reqs[range]`
/// (strided) and reading the responses concurrently; returns the wall time from the
/// first byte written to the last response read.
struct Client {
    conns: Vec<TcpStream>,
}

impl Client {
    fn run(
        &mut self,
        rt: &Runtime,
        reqs: &Arc<Vec<Req>>,
        range: Range<usize>,
        expect: u16,
    ) -> Duration {
        let n = self.conns.len();
        // Each connection's requests, concatenated before the clock starts.
        let shares: Vec<(Vec<u8>, usize)> = (0..n)
            .map(|c| {
                let mut bytes = Vec::new();
                let mut count = 0;
                for i in range.clone().skip(c).step_by(n) {
                    bytes.extend_from_slice(&reqs[i]);
                    count += 1;
                }
                (bytes, count)
            })
            .collect();
        rt.block_on(async {
            let start = Instant::now();
            let handles: Vec<_> = self
                .conns
                .drain(..)
                .zip(shares)
                .map(|(conn, (bytes, count))| {
                    tokio::spawn(async move {
                        let (mut rd, mut wr) = conn.into_split();
                        let write = async {
                            wr.write_all(&bytes).await.unwrap();
                            wr
                        };
                        let (wr, ()) = tokio::join!(write, read_responses(&mut rd, count, expect));
                        rd.reunite(wr).unwrap()
                    })
                })
                .collect();
            for h in handles {
                self.conns.push(h.await.unwrap());
            }
            start.elapsed()
        })
    }
}

/// Wall time of `verify` over `0..n` split into `VERIFY_THREADS` contiguous parts, one
/// OS thread each.
fn parallel_verify(n: usize, verify: &(dyn Fn(usize) + Sync)) -> Duration {
    let per = n.div_ceil(VERIFY_THREADS);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..VERIFY_THREADS {
            s.spawn(move || {
                for i in t * per..((t + 1) * per).min(n) {
                    verify(black_box(i));
                }
            });
        }
    });
    start.elapsed()
}

fn main() {
    let ratios_only = std::env::args().any(|a| a == "--ratios-only");
    let started = Instant::now();
    let f = fixture();
    eprintln!(
        "built {N} signed advertisements in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The baseline: raw Ed25519 `verify_strict` of the same N artifacts, with everything
    // but the curve arithmetic prepared beforehand and untimed (the decompressed
    // `VerifyingKey` of each signer, the signature decoded by `read_signature`, the
    // signing input built by `Artifact::signing_input`), timed as the wall time of all N
    // verifications split over 2 OS threads (2 cores, nothing else running: the
    // directory's runtime is idle meanwhile). It is the ceiling of a PUT path that did
    // nothing but check the signature on both cores; the PUT path additionally does
    // HTTP parsing, JSON parsing and schema checks, key decompression (N exceeds the key
    // cache), the store insert under its mutex, the response, and it shares the two
    // cores with the client.
    let raw: Vec<_> = f
        .keys
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

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap();
    let mem = Arc::new(Mutex::new(fresh_store()));
    let shared: SharedStore = mem.clone();
    let config = DirectoryConfig {
        per_client: RateLimit::per_minute(u32::MAX / 2, u32::MAX / 2),
        ..DirectoryConfig::default()
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(listener, shared, config, async move {
        let _ = stopped.await;
    }));
    let mut client = Client {
        conns: rt.block_on(async {
            let mut v = Vec::new();
            for _ in 0..CONNECTIONS {
                v.push(connect(addr).await);
            }
            v
        }),
    };
    let host = addr.to_string();

    let puts: Arc<Vec<Req>> = Arc::new(
        f.adverts
            .iter()
            .map(|ad| {
                render(
                    "PUT",
                    &format!("/adv/{}", ad.node_id()),
                    &host,
                    &serde_json::to_vec(&ad.to_json()).unwrap(),
                )
            })
            .collect(),
    );
    let mut ids: Vec<String> = f.adverts.iter().map(|a| a.node_id().to_string()).collect();
    shuffle(&mut ids);
    let gets: Arc<Vec<Req>> = Arc::new(
        ids.iter()
            .map(|id| render("GET", &format!("/adv/{id}"), &host, b""))
            .collect(),
    );
    let reset = || *mem.lock().unwrap() = fresh_store();

    if !ratios_only {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        let mut g = c.benchmark_group("directory");
        g.throughput(Throughput::Elements(1));
        g.sample_size(10);
        let mut at = 0usize;
        reset();
        g.bench_function("PUT /adv/{id}, keep-alive, 8 connections", |b| {
            b.iter_custom(|iters| {
                let mut left = iters as usize;
                let mut total = Duration::ZERO;
                while left > 0 {
                    if at == N {
                        reset();
                        at = 0;
                    }
                    let take = left.min(N - at);
                    total += client.run(&rt, &puts, at..at + take, 201);
                    at += take;
                    left -= take;
                }
                total
            })
        });
        reset();
        {
            let mut store = mem.lock().unwrap();
            let now = Timestamp::now();
            for ad in &f.adverts {
                store.insert(ad.clone(), &now).unwrap();
            }
        }
        let mut at = 0usize;
        g.bench_function("GET /adv/{id}, keep-alive, 8 connections", |b| {
            b.iter_custom(|iters| {
                let mut left = iters as usize;
                let mut total = Duration::ZERO;
                while left > 0 {
                    let take = left.min(N - at);
                    total += client.run(&rt, &gets, at..at + take, 200);
                    at = (at + take) % N;
                    left -= take;
                }
                total
            })
        });
        g.finish();
        c.final_summary();
    }

    // Interleaved rounds: raw verify on 2 threads, then (fresh store, untimed) N PUTs,
    // then N GETs of the stored ids in shuffled order. Round 0 is the warm-up.
    let per = |d: Duration| d.as_nanos() as f64 / N as f64;
    let (mut verify_ns, mut put_ns, mut get_ns) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let v = per(parallel_verify(N, &raw_verify));
        reset();
        let p = per(client.run(&rt, &puts, 0..N, 201));
        assert_eq!(mem.lock().unwrap().len(), N);
        let g = per(client.run(&rt, &gets, 0..N, 200));
        if round > 0 {
            verify_ns.push(v);
            put_ns.push(p);
            get_ns.push(g);
        }
    }
    let (verify_ns, put_ns, get_ns) = (median(&verify_ns), median(&put_ns), median(&get_ns));

    // Throughput ratio = raw verify time / PUT time: the Ratio struct divides candidate
    // by baseline, so the two times go in swapped.
    print_table(
        "directory on loopback (same run, interleaved, median of 7 rounds of 20000 \
         requests; wall ns per request, 8 keep-alive connections, 2 workers)",
        &[Ratio {
            name: "PUT/s / raw verify_strict/s on 2 threads",
            baseline_ns: put_ns,
            candidate_ns: verify_ns,
            target: 0.6,
            at_least: true,
        }],
    );
    println!(
        "(row: 'baseline' = PUT /adv/{{id}} with a signed JSON body, 'candidate' = raw \
         verify_strict of the same artifacts over 2 threads, ratio = verify time / PUT time)"
    );
    println!("  PUT requests/s:             {:>9.0}", 1e9 / put_ns);
    println!("  GET requests/s:             {:>9.0}", 1e9 / get_ns);
    println!("  raw verify_strict/s (2 thr): {:>8.0}", 1e9 / verify_ns);

    let _ = stop.send(());
    drop(client);
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    });
}
