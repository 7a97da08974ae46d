//! Session establishment latency and memory per session (issue: sessions).
//!
//! 1. Dial to session established (connection + hello/ack + capabilities) on loopback,
//!    TCP and QUIC, against a bare libp2p dial plus one ping round trip: fresh swarms
//!    (new keys) per sample, built outside the timing, baseline and candidate samples
//!    interleaved, medians compared (target <= 1.5). A third case, for information,
//!    runs the candidate with multistream-select `V1Lazy` on both swarms.
//! 2. 1,000 concurrent sessions to one node over the in-process memory transport
//!    (noise + yamux, no fds): resident memory per session (the session behaviour runs
//!    its own ping) against a bare libp2p connection with identify and ping (target
//!    <= 1.3). Each case runs in a child process of this binary (`--mem-child KIND N`)
//!    so its RSS starts clean.
//!
//! `cargo bench -p mesh-session --bench session` runs criterion for the dial cases, then
//! prints the ratio tables measured in the same run (see
//! `mesh_testkit::ratio`).
//! `cargo bench -p mesh-session --bench session -- --ratios-only` skips criterion;
//! `--dial-only` stops after the dial tables.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use mesh_testkit::ratio::{Ratio, print_table};
use mesh_testkit::{Net, median};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{Multiaddr, identify, ping};
use mesh_core::NodeKeypair;
use mesh_session::governor::GovernorConfig;
use mesh_session::{Behaviour, Config, Event};
use tokio::runtime::Runtime;

/// Timed dial samples per side and transport (after `WARMUP` untimed ones).
const SAMPLES: usize = 100;
const WARMUP: usize = 5;
/// Concurrent sessions of the memory figure.
const SESSIONS: usize = 1000;
/// Child processes per memory case (the median is reported).
const MEM_ROUNDS: usize = 3;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A swarm on loopback TCP (noise + yamux) or QUIC, libp2p's default substream
/// negotiation (multistream-select `V1`).
fn net_swarm<B: NetworkBehaviour>(key: &NodeKeypair, net: Net, behaviour: B) -> Swarm<B> {
    mesh_testkit::net_swarm(&key.to_libp2p(), net, Duration::from_secs(10), behaviour)
}

/// How the dialer of a substream negotiates its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Neg {
    /// libp2p's default: wait for the listener's confirmation before sending data.
    V1,
    /// `V1Lazy`: send the first message with the (single) proposal (not meshd's
    /// setting; see the README, "Substream negotiation").
    Lazy,
}

/// As [`net_swarm`] with the substream negotiation `neg`.
fn neg_swarm<B: NetworkBehaviour>(key: &NodeKeypair, net: Net, neg: Neg, b: B) -> Swarm<B> {
    let idle = Duration::from_secs(10);
    mesh_testkit::net_swarm_with(
        &key.to_libp2p(),
        net,
        |c| {
            let c = c.with_idle_connection_timeout(idle);
            match neg {
                Neg::V1 => c,
                Neg::Lazy => c.with_substream_upgrade_protocol_override(
                    libp2p::core::upgrade::Version::V1Lazy,
                ),
            }
        },
        b,
    )
}

/// A swarm on the in-process memory transport (noise + yamux), connections kept open.
fn memory_swarm<B: NetworkBehaviour>(key: &NodeKeypair, behaviour: B) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key.to_libp2p())
        .with_tokio()
        .with_other_transport(|k| {
            use libp2p::Transport;
            use libp2p::core::upgrade::Version;
            libp2p::core::transport::MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(libp2p::noise::Config::new(k).unwrap())
                .multiplex(libp2p::yamux::Config::default())
                .timeout(Duration::from_secs(60))
                .boxed()
        })
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

fn session(key: &NodeKeypair, max_live: usize) -> Behaviour {
    Behaviour::new(
        key.clone(),
        Config {
            governor: GovernorConfig {
                max_live,
                ..GovernorConfig::default()
            },
            ..Config::default()
        },
    )
}

async fn listening<B: NetworkBehaviour>(s: &mut Swarm<B>, addr: Multiaddr) -> Multiaddr {
    s.listen_on(addr).unwrap();
    loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            return address;
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Dial latency.

/// A dial of `peer` at `addr` (nodes dial node ids; the peer is known before the
/// connection is up).
fn to(peer: libp2p::PeerId, addr: Multiaddr) -> libp2p::swarm::dial_opts::DialOpts {
    libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
        .addresses(vec![addr])
        .build()
}

/// Baseline: dial until the dialer's first successful ping (the ping handler pings as
/// soon as the connection is up). Returns (to the dialer's `ConnectionEstablished`, to
/// the ping).
async fn ping_sample(net: Net) -> (Duration, Duration) {
    let cfg = || ping::Behaviour::new(ping::Config::new());
    let mut l = net_swarm(&NodeKeypair::generate(), net, cfg());
    let mut d = net_swarm(&NodeKeypair::generate(), net, cfg());
    let addr = listening(&mut l, net.listen_addr()).await;
    let peer = *l.local_peer_id();
    let run = async {
        let start = Instant::now();
        d.dial(to(peer, addr)).unwrap();
        let mut conn = Duration::ZERO;
        loop {
            tokio::select! {
                ev = d.select_next_some() => match ev {
                    SwarmEvent::ConnectionEstablished { .. } => conn = start.elapsed(),
                    SwarmEvent::Behaviour(ping::Event { result: Ok(_), .. }) => {
                        return (conn, start.elapsed());
                    }
                    _ => {}
                },
                _ = l.select_next_some() => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("ping sample timed out")
}

/// Candidate: dial until both sides have emitted `SessionEstablished`. Returns (to the
/// dialer's `ConnectionEstablished`, to both sessions).
async fn session_sample(net: Net, neg: Neg) -> (Duration, Duration) {
    let (kl, kd) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut l = neg_swarm(&kl, net, neg, session(&kl, 4));
    let mut d = neg_swarm(&kd, net, neg, session(&kd, 4));
    let addr = listening(&mut l, net.listen_addr()).await;
    let peer = *l.local_peer_id();
    let run = async {
        let start = Instant::now();
        d.dial(to(peer, addr)).unwrap();
        let (mut dialer, mut listener) = (false, false);
        let mut conn = Duration::ZERO;
        while !(dialer && listener) {
            tokio::select! {
                ev = d.select_next_some() => {
                    if let SwarmEvent::ConnectionEstablished { .. } = ev {
                        conn = start.elapsed();
                    }
                    dialer |= matches!(ev, SwarmEvent::Behaviour(Event::SessionEstablished { .. }));
                }
                ev = l.select_next_some() => {
                    listener |= matches!(ev, SwarmEvent::Behaviour(Event::SessionEstablished { .. }));
                }
            }
        }
        (conn, start.elapsed())
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("session sample timed out")
}

/// Drives the listener in its own task (on a runtime worker, so the two sides run on
/// two cores as two processes would); reports the first `hit` event's time.
fn drive_listener<B, F>(
    mut l: Swarm<B>,
    hit: F,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<Instant>,
)
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send,
    F: Fn(&SwarmEvent<B::ToSwarm>) -> bool + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            let ev = l.select_next_some().await;
            if hit(&ev)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Instant::now());
            }
        }
    });
    (task, rx)
}

/// Baseline, two tasks: as [`ping_sample`], with the listener polled by its own task.
async fn ping_sample_split(net: Net) -> (Duration, Duration) {
    let cfg = || ping::Behaviour::new(ping::Config::new());
    let mut l = net_swarm(&NodeKeypair::generate(), net, cfg());
    let mut d = net_swarm(&NodeKeypair::generate(), net, cfg());
    let addr = listening(&mut l, net.listen_addr()).await;
    let peer = *l.local_peer_id();
    let (task, _rx) = drive_listener(l, |_| false);
    let run = async {
        let start = Instant::now();
        d.dial(to(peer, addr)).unwrap();
        let mut conn = Duration::ZERO;
        loop {
            match d.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => conn = start.elapsed(),
                SwarmEvent::Behaviour(ping::Event { result: Ok(_), .. }) => {
                    return (conn, start.elapsed());
                }
                _ => {}
            }
        }
    };
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("ping sample timed out");
    task.abort();
    r
}

/// Candidate, two tasks: dial until both sides have emitted `SessionEstablished`, the
/// listener polled by its own task.
async fn session_sample_split(net: Net, neg: Neg) -> (Duration, Duration) {
    let (kl, kd) = (NodeKeypair::generate(), NodeKeypair::generate());
    let mut l = neg_swarm(&kl, net, neg, session(&kl, 4));
    let mut d = neg_swarm(&kd, net, neg, session(&kd, 4));
    let addr = listening(&mut l, net.listen_addr()).await;
    let peer = *l.local_peer_id();
    let (task, rx) = drive_listener(l, |ev| {
        matches!(ev, SwarmEvent::Behaviour(Event::SessionEstablished { .. }))
    });
    let run = async {
        let start = Instant::now();
        d.dial(to(peer, addr)).unwrap();
        let mut conn = Duration::ZERO;
        loop {
            match d.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => conn = start.elapsed(),
                SwarmEvent::Behaviour(Event::SessionEstablished { .. }) => break,
                _ => {}
            }
        }
        let dialer = Instant::now();
        let listener = rx.await.expect("listener task ended");
        (conn, dialer.max(listener) - start)
    };
    let r = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("session sample timed out");
    task.abort();
    r
}

/// Medians (ns) of interleaved samples (alternating which side goes first).
struct Dial {
    /// Baseline, dial to first ping.
    ping: f64,
    /// Candidate, dial to both sessions established (libp2p's default negotiation).
    session: f64,
    /// The same with lazy negotiation (`V1Lazy`) on both swarms.
    lazy: f64,
    /// Dial to the dialer's `ConnectionEstablished`, over both sides' samples.
    conn: f64,
}

fn dial_ratio(rt: &Runtime, net: Net, split: bool) -> Dial {
    let ping_sample = |net| async move {
        if split {
            ping_sample_split(net).await
        } else {
            ping_sample(net).await
        }
    };
    let session_sample = |net, neg| async move {
        if split {
            session_sample_split(net, neg).await
        } else {
            session_sample(net, neg).await
        }
    };
    for _ in 0..WARMUP {
        rt.block_on(ping_sample(net));
        rt.block_on(session_sample(net, Neg::V1));
        rt.block_on(session_sample(net, Neg::Lazy));
    }
    let ns = |d: Duration| d.as_nanos() as f64;
    let (mut b, mut c, mut z, mut conn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        // The three cases in a rotating order.
        let (mut pb, mut pc, mut pz) = (None, None, None);
        for k in 0..3 {
            match (i + k) % 3 {
                0 => pb = Some(rt.block_on(ping_sample(net))),
                1 => pc = Some(rt.block_on(session_sample(net, Neg::V1))),
                _ => pz = Some(rt.block_on(session_sample(net, Neg::Lazy))),
            }
        }
        let (pb, pc, pz) = (pb.unwrap(), pc.unwrap(), pz.unwrap());
        b.push(ns(pb.1));
        c.push(ns(pc.1));
        z.push(ns(pz.1));
        conn.extend([ns(pb.0), ns(pc.0), ns(pz.0)]);
    }
    Dial {
        ping: median(&b),
        session: median(&c),
        lazy: median(&z),
        conn: median(&conn),
    }
}

fn criterion_benches(c: &mut Criterion, rt: &Runtime) {
    let mut g = c.benchmark_group("dial");
    g.sample_size(10);
    for net in [Net::Tcp, Net::Quic] {
        g.bench_function(format!("{net:?}: dial + first ping (bare libp2p)"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(ping_sample(net)).1).sum())
        });
        g.bench_function(format!("{net:?}: dial to session established"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(session_sample(net, Neg::V1)).1)
                    .sum()
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------
// 2. Memory per session.

#[derive(NetworkBehaviour)]
struct Bare {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn bare(key: &NodeKeypair) -> Bare {
    Bare {
        identify: identify::Behaviour::new(identify::Config::new(
            "/bench/1.0.0".into(),
            key.to_libp2p().public(),
        )),
        ping: ping::Behaviour::new(ping::Config::new()),
    }
}

/// Resident set size, bytes (`/proc/self/statm` resident pages x page size).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * page_size()
}

fn page_size() -> u64 {
    Command::new("getconf")
        .arg("PAGESIZE")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// One server and `n` clients, each its own swarm and task; every swarm reports once
/// when `done` accepts one of its events. Returns (RSS before the clients, RSS after all
/// `2 n` reports and a settle, seconds to get there).
async fn mem_run<B, M, D>(n: usize, make: M, done: D) -> (u64, u64, f64)
where
    B: NetworkBehaviour + Send + 'static,
    M: Fn(&NodeKeypair, bool) -> B,
    D: Fn(&SwarmEvent<B::ToSwarm>) -> bool + Copy + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let ks = NodeKeypair::generate();
    let mut server = memory_swarm(&ks, make(&ks, true));
    let addr = listening(&mut server, "/memory/0".parse().unwrap()).await;
    let stx = tx.clone();
    tokio::spawn(async move {
        let mut closed = 0usize;
        loop {
            let ev = server.select_next_some().await;
            if done(&ev) {
                stx.send(()).unwrap();
            }
            if let SwarmEvent::ConnectionClosed { cause, .. } = &ev {
                closed += 1;
                eprintln!("server: connection closed ({closed}): {cause:?}");
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();
    let start = Instant::now();
    for _ in 0..n {
        let k = NodeKeypair::generate();
        let mut client = memory_swarm(&k, make(&k, false));
        client.dial(addr.clone()).unwrap();
        let ctx = tx.clone();
        tokio::spawn(async move {
            loop {
                let ev = client.select_next_some().await;
                if done(&ev) {
                    ctx.send(()).unwrap();
                }
            }
        });
    }
    let mut reports = 0usize;
    let wait = async {
        while reports < 2 * n {
            rx.recv().await.unwrap();
            reports += 1;
        }
    };
    if tokio::time::timeout(Duration::from_secs(90), wait)
        .await
        .is_err()
    {
        panic!("only {reports} of {} reports after 90 s", 2 * n);
    }
    let elapsed = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    (before, rss_bytes(), elapsed)
}

/// The child process: runs one memory case and prints `before after seconds`.
fn mem_child(kind: &str, n: usize) {
    let rt = runtime();
    let (before, after, secs) = match kind {
        "bare" => rt.block_on(mem_run(
            n,
            |k, _| bare(k),
            |ev| {
                matches!(
                    ev,
                    SwarmEvent::Behaviour(BareEvent::Identify(identify::Event::Received { .. }))
                )
            },
        )),
        "session" => rt.block_on(mem_run(
            n,
            |k, server| session(k, if server { 2 * n } else { 4 }),
            |ev| matches!(ev, SwarmEvent::Behaviour(Event::SessionEstablished { .. })),
        )),
        other => panic!("unknown memory case {other}"),
    };
    println!("{before} {after} {secs}");
    // The swarms' tasks run forever; leave without tearing them down.
    std::process::exit(0);
}

/// Runs `kind` in a child process; returns (bytes per connection, seconds to establish).
fn mem_case(kind: &str, n: usize) -> (f64, f64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--mem-child", kind, &n.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    ((v[1] - v[0]) / n as f64, v[2])
}

fn print_bytes_table(title: &str, rows: &[Ratio]) {
    println!("\n{title}");
    println!(
        "{:<58} {:>12} {:>12} {:>8} {:>10}",
        "benchmark", "baseline", "candidate", "ratio", "target"
    );
    for r in rows {
        let verdict = if r.target.is_infinite() {
            "  (info)".to_owned()
        } else {
            format!(
                " <={:<5} {}",
                r.target,
                if r.met() { "ok" } else { "MISSED" }
            )
        };
        println!(
            "{:<58} {:>10.0} B {:>10.0} B {:>8.3}{verdict}",
            r.name,
            r.baseline_ns,
            r.candidate_ns,
            r.ratio()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--mem-child") {
        return mem_child(&args[i + 1], args[i + 2].parse().unwrap());
    }
    let ratios_only = args.iter().any(|a| a == "--ratios-only");
    let rt = runtime();

    if !ratios_only {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        criterion_benches(&mut c, &rt);
        c.final_summary();
    }

    let started = Instant::now();
    // Primary: both swarms polled by one task (as the figures were always taken);
    // secondary: each side on its own task.
    let tcp = dial_ratio(&rt, Net::Tcp, false);
    let quic = dial_ratio(&rt, Net::Quic, false);
    let tcp1 = dial_ratio(&rt, Net::Tcp, true);
    let quic1 = dial_ratio(&rt, Net::Quic, true);
    drop(rt);
    let rows = |tcp: &Dial, quic: &Dial, target: f64| {
        let row = |name, d: &Dial, candidate_ns, target| Ratio {
            name,
            baseline_ns: d.ping,
            candidate_ns,
            target,
            at_least: false,
        };
        [
            row(
                "TCP: session est. / dial + first ping",
                tcp,
                tcp.session,
                target,
            ),
            row(
                "QUIC: session est. / dial + first ping",
                quic,
                quic.session,
                target,
            ),
            row(
                "TCP, both swarms V1Lazy (info)",
                tcp,
                tcp.lazy,
                f64::INFINITY,
            ),
            row(
                "QUIC, both swarms V1Lazy (info)",
                quic,
                quic.lazy,
                f64::INFINITY,
            ),
        ]
    };
    print_table(
        &format!(
            "dial latency (same run, {SAMPLES} interleaved samples each, fresh swarms, medians; \
             both swarms polled by one task; baseline: bare libp2p, default config)"
        ),
        &rows(&tcp, &quic, 1.5),
    );
    print_table(
        "the same with each side polled by its own task (as two processes would be)",
        &rows(&tcp1, &quic1, f64::INFINITY),
    );
    for (net, d) in [
        ("TCP", &tcp),
        ("QUIC", &quic),
        ("TCP, two tasks", &tcp1),
        ("QUIC, two tasks", &quic1),
    ] {
        println!(
            "({net}: dial to ConnectionEstablished {:.0} us; then first ping +{:.0} us, \
             session +{:.0} us (V1), +{:.0} us (V1Lazy))",
            d.conn / 1e3,
            (d.ping - d.conn) / 1e3,
            (d.session - d.conn) / 1e3,
            (d.lazy - d.conn) / 1e3
        );
    }
    eprintln!("dial samples took {:.1} s", started.elapsed().as_secs_f64());
    if args.iter().any(|a| a == "--dial-only") {
        return;
    }

    // Interleaved child processes: bare, session, bare, ...
    let started = Instant::now();
    let kinds = ["bare", "session"];
    let mut per = [Vec::new(), Vec::new()];
    let mut secs = [Vec::new(), Vec::new()];
    for _ in 0..MEM_ROUNDS {
        for (i, kind) in kinds.iter().enumerate() {
            let (bytes, s) = mem_case(kind, SESSIONS);
            per[i].push(bytes);
            secs[i].push(s);
        }
    }
    let [bare_b, s_b] = per.map(|v| median(&v));
    let [bare_s, s_s] = secs.map(|v| median(&v));
    print_bytes_table(
        &format!(
            "memory per connection ({SESSIONS} to one node, memory transport, RSS delta / \
             {SESSIONS}, median of {MEM_ROUNDS} child processes)"
        ),
        &[Ratio {
            name: "session (with its ping) / identify + ping",
            baseline_ns: bare_b,
            candidate_ns: s_b,
            target: 1.3,
            at_least: false,
        }],
    );
    println!(
        "(time to establish all {SESSIONS}: identify + ping {bare_s:.1} s, session \
         {s_s:.1} s; RSS delta covers the client swarms and both ends of each connection)"
    );
    eprintln!("memory cases took {:.1} s", started.elapsed().as_secs_f64());
}
